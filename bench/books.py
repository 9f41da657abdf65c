"""Scenario ``books``: order books on one core (issue 20's Measure).

1. A node pinned to one core with ``bench.book_source`` (10 books, change sets of 5
   levels as fast as the loop takes them), run twice in the same run: with 1 000
   WebSocket clients following the 10 books at depth 10 (``bench.book_clients`` on the
   other core; a few of them verify every frame's ``pu`` and ``cs``) and with none.
   Level changes/s taken in is the node's ``ticker_book_level_changes_total`` over the
   window (target >= 300 k/s with the clients); what the passes applied after merging
   each pass's changes per level is ``ticker_book_levels_applied_total``. Bytes per book
   per client is what the clients received over the window / (clients x books x s).
   Then once more with the clients and the changes spread over 5 000 levels a side, so
   that merging saves little: there the applied rate is the one to hold to the target.
2. In-process, no merging possible (every change set a new set of levels, one
   ``Book.apply`` each): the engine's own level changes/s, the floor of (1).
3. Snapshot cost at full depth (5 000 levels a side): time and size of ``@book``'s frame.
"""

from __future__ import annotations

import contextlib
import json
import random
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from ticker.core.books import DEPTHS, MAX_LEVELS, Book

TARGET = 300_000
BOOKS = 10
CLIENTS = 1000
WINDOW_S = 6.0


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("ticker_book_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@contextlib.contextmanager
def node(ctx: Any, label: str, wide: bool) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    from bench import run as harness

    port = harness.free_port()
    argv = [harness.PY, "-m", "ticker", "serve", "--host", harness.HOST, "--port", str(port)]
    source = f"bench.book_source:make:{BOOKS},5{',1' if wide else ''}"
    argv += ["--feed", source, "--log-level", "warning"]
    log = open(ctx.logdir / f"books-{label}.log", "ab")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [*ctx.pins.server, *argv, *ctx.plan.ticker_args],
        cwd=harness.ROOT,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        harness.wait_listening(proc, port)
        yield proc, port
    finally:
        harness.stop(proc)
        log.close()


def one_run(ctx: Any, clients: int, wide: bool = False) -> dict[str, Any]:
    """Level changes/s in and applied over the window, with ``clients`` following;
    ``wide``: changes spread over 5 000 levels a side (little to merge)."""
    from bench import procfs
    from bench import run as harness

    label = f"{clients}-clients{'-wide' if wide else ''}"
    with node(ctx, label, wide) as (proc, port):
        load = None
        if clients:
            topics = ",".join(f"B{i}@book10" for i in range(BOOKS))
            argv = [harness.PY, "-m", "bench.book_clients", "--port", str(port)]
            argv += ["--clients", str(clients), "--topics", topics]
            argv += ["--seconds", str(WINDOW_S + 2)]
            load = subprocess.Popen(
                [*ctx.pins.loadgen, *argv], cwd=harness.ROOT, stdout=subprocess.PIPE
            )
            time.sleep(4.0 + clients / 500)  # connected and snapshots in
        else:
            time.sleep(2.0)
        before, cpu0, t0 = scrape(port), procfs.cpu_seconds(proc.pid), time.perf_counter()
        time.sleep(WINDOW_S)
        after, cpu1, t1 = scrape(port), procfs.cpu_seconds(proc.pid), time.perf_counter()
        seconds = t1 - t0
        out: dict[str, Any] = {"clients": clients}
        for key, name in (
            ("in_per_s", "ticker_book_level_changes_total"),
            ("applied_per_s", "ticker_book_levels_applied_total"),
            ("passes_per_s", "ticker_book_passes_total"),
        ):
            out[key] = (after.get(name, 0) - before.get(name, 0)) / seconds
        if cpu0 is not None and cpu1 is not None:
            out["server_cpu"] = (cpu1 - cpu0) / seconds
        if load is not None:
            stdout, _ = load.communicate(timeout=60 + clients / 50)
            got = json.loads(stdout.decode().strip().splitlines()[-1])
            out["load"] = got
            out["bytes_per_book_per_client_per_s"] = got["bytes_per_s"] / clients / BOOKS
        harness.progress(f"books: {label}: {out}")
        return out


def engine_rate(
    changes: int = 200_000, per_set: int = 5, depths: tuple[int, ...] = (10,)
) -> dict[str, Any]:
    """One ``Book.apply`` per change set (nothing to merge) and its delta for each of
    ``depths``, the followed depths (the node's clients follow depth 10)."""
    rng = random.Random(1)
    book = Book("B")
    book.reset(
        [(100 - i * 0.01, 1.0) for i in range(500)], [(100.01 + i * 0.01, 1) for i in range(500)]
    )
    sets = []
    for _ in range(changes // per_set):
        side = [
            (round(100 - 0.01 * (1 + int(rng.expovariate(1 / 30))), 2), float(rng.randint(0, 9)))
            for _ in range(per_set // 2)
        ]
        other = [
            (round(100.01 + 0.01 * int(rng.expovariate(1 / 30)), 2), float(rng.randint(0, 9)))
            for _ in range(per_set - len(side))
        ]
        sets.append((side, other))
    started = time.perf_counter()
    for bids, asks in sets:
        change = book.apply(bids, asks, depths)
        if change is not None:
            for depth in depths:
                book.delta(change, depth, 0)
    seconds = time.perf_counter() - started
    return {"levels_per_s": changes / seconds, "per_set": per_set, "depths": list(depths)}


def snapshot_cost(reps: int = 20) -> dict[str, Any]:
    """Median time and size of a full-depth (``@book``) snapshot of a 5 000-level side."""
    book = Book("B")
    book.reset(
        [(round(100 - 0.01 * (1 + i), 2), 1.0 + i % 7) for i in range(MAX_LEVELS)],
        [(round(100 + 0.01 * (1 + i), 2), 1.0 + i % 5) for i in range(MAX_LEVELS)],
    )
    times, frame = [], b""
    for _ in range(reps):
        started = time.perf_counter()
        frame = book.snapshot(None)
        times.append(time.perf_counter() - started)
    return {"levels": 2 * MAX_LEVELS, "ms": statistics.median(times) * 1e3, "bytes": len(frame)}


def run(ctx: Any) -> dict[str, Any]:
    from bench import run as harness

    out: dict[str, Any] = {}
    harness.progress("books: 1 000 clients x 10 books at depth 10")
    out["with"] = one_run(ctx, CLIENTS)
    harness.progress("books: the same node, no clients")
    out["without"] = one_run(ctx, 0)
    harness.progress("books: 1 000 clients, changes spread over 5 000 levels a side")
    out["wide"] = one_run(ctx, CLIENTS, wide=True)
    out["engine"] = engine_rate()
    out["engine_10_50"] = engine_rate(depths=DEPTHS)
    out["snapshot"] = snapshot_cost()
    harness.progress(f"books: engine {out['engine']}, snapshot {out['snapshot']}")
    return out


def render(data: dict[str, Any]) -> list[str]:
    from bench import run as harness

    with_, without, wide = data["with"], data["without"], data["wide"]
    wide_load = wide.get("load", {})
    load = with_.get("load", {})
    engine, snap = data["engine"], data["snapshot"]
    rows = [
        [
            "level changes/s in, 1 000 clients x 10 books depth 10",
            f">= {TARGET:,}",
            harness.fmt_num(with_["in_per_s"], 0),
            harness.meets(with_["in_per_s"], TARGET, True),
        ],
        ["  the same node, no clients", "", harness.fmt_num(without["in_per_s"], 0), ""],
        [
            "  with / without clients",
            "",
            harness.fmt_ratio(with_["in_per_s"], without["in_per_s"]),
            "",
        ],
        [
            "  applied after merging per level and pass",
            "",
            harness.fmt_num(with_["applied_per_s"], 0),
            "",
        ],
        [
            "applied/s, changes spread over 5 000 levels a side (little merges), 1 000 clients",
            f">= {TARGET:,}",
            harness.fmt_num(wide["applied_per_s"], 0),
            harness.meets(wide["applied_per_s"], TARGET, True),
        ],
        [
            "  of level changes/s in; passes/s; frames/s per topic, pu/cs errors at a checker",
            "0 errors",
            f"{harness.fmt_num(wide['in_per_s'], 0)}; {harness.fmt_num(wide['passes_per_s'], 1)};"
            f" {harness.fmt_num(wide_load.get('checked_frames_per_s_per_topic'), 1)},"
            f" {wide_load.get('error_count')}",
            "yes" if wide_load.get("error_count") == 0 else "NO",
        ],
        [
            "  passes/s (one frame per topic per client each)",
            "",
            harness.fmt_num(with_["passes_per_s"], 1),
            "",
        ],
        ["  server CPU (cores)", "", harness.fmt_num(with_.get("server_cpu")), ""],
        [
            "frames/s per topic per checking client; pu/cs errors",
            "0 errors",
            f"{harness.fmt_num(load.get('checked_frames_per_s_per_topic'), 1)};"
            f" {load.get('error_count')}",
            "yes" if load.get("error_count") == 0 else "NO",
        ],
        [
            "bytes per book per client",
            "",
            f"{harness.fmt_num(with_.get('bytes_per_book_per_client_per_s'), 0)} B/s",
            "",
        ],
        [
            f"engine alone, nothing to merge ({engine['per_set']} levels a set), depth 10",
            "",
            harness.fmt_num(engine["levels_per_s"], 0),
            "",
        ],
        [
            "  the same, depths 10 and 50 followed",
            "",
            harness.fmt_num(data["engine_10_50"]["levels_per_s"], 0),
            "",
        ],
        [
            f"snapshot @book, {snap['levels']:,} levels",
            "",
            f"{snap['ms']:.2f} ms, {snap['bytes']:,} B",
            "",
        ],
    ]
    lines = [f"## {harness.TITLES['books']}", ""]
    lines += [harness.table(["figure", "target", "ticker", "ok"], rows), ""]
    lines += [
        "Level changes/s in: every change a source handed the node, each in the book by the"
        " next pass (50 ms); a pass applies them merged per level, so a source faster than"
        " the clients costs them nothing more. The engine row is the same work with nothing"
        " to merge, one change set at a time.",
        "",
    ]
    return lines
