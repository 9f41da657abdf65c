"""Scenario 6, counted: the instructions metrics add to the hot path, under valgrind.

The end-to-end runs compare a server with ``--no-metrics`` and another with metrics on,
minutes apart; on a shared machine the difference between two such runs can be several
times the effect. Instruction counts do not move with the neighbours: this module pushes
one second of the fan-out load (100 batches of 200 ticks = 20 000 ticks, to 1 000 clients
x 10 of 100 symbols, mode ``all``) through the real ``Bus.publish``, ``Flusher`` and
``Connection.flush`` into transports that swallow the bytes, with metrics off or on (on:
``/metrics`` rendered once, as a scraper every second would), and the parent runs it under
``valgrind --tool=cachegrind`` three times: setup only, off, on. Metrics' cost is
(on - off) / (off - setup). Leaving out the kernel's share of each write makes a frame
cheaper than in a real server, so the share comes out higher here: an upper bound.

    python -m bench.metrics_cost                  # the three counts and the cost, as JSON
    python -m bench.metrics_cost --workload on    # one workload (what valgrind runs)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
from typing import Any

N_SYMBOLS = 100
N_CLIENTS = 1000
PER_CLIENT = 10
BATCH = 200  # ticks per feed batch: 100 batches/s at the scenario's 20 000 ticks/s
BATCHES = 100  # one second of feed
WORKLOADS = ("setup", "off", "on")


class SwallowingTransport:
    """What ``Connection.flush`` needs of an asyncio transport; the bytes go nowhere."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        pass


class Request:
    """Just enough of an aiohttp request for a connection that writes nowhere."""

    remote = "bench"

    def __init__(self) -> None:
        self.transport = SwallowingTransport()
        self.protocol = type("Protocol", (), {"writing_paused": False})()


class Socket:
    """A socket that never closes, in place of the unprepared one (its ``closed`` is a
    property: the figures of earlier versions were measured without it)."""

    closed = False


async def workload(kind: str) -> None:
    """One measured run: connections, ticks published and flushed, a scrape when on."""
    from prometheus_client import generate_latest

    from ticker.core.entitlements import ANONYMOUS
    from ticker.server.auth import Admitted
    from ticker.server.handshake import ConnectParams
    from ticker.server.node import Node
    from ticker.server.settings import Settings
    from ticker.server.websocket import TRANSPORT, Connection

    node = Node(Settings(metrics=kind == "on"))
    names = [f"S{i:03d}" for i in range(N_SYMBOLS)]
    node.bus.add_symbols(names)
    node.clients.traffic(TRANSPORT)
    params = ConnectParams("all", None, [])
    for c in range(N_CLIENTS):
        admitted = Admitted(ANONYMOUS, node.bus, lambda: None)
        conn = Connection(node.clients, Request(), params, admitted)  # type: ignore[arg-type]
        conn.ws = Socket()  # type: ignore[assignment]
        conn.session.start(
            20.0, [names[(c * PER_CLIENT + k) % N_SYMBOLS] for k in range(PER_CLIENT)]
        )
        node.connections.add(conn)
    node.flusher.flush()  # welcomes and replies out of the way
    rng = random.Random(1)
    feed = [
        [{"s": rng.choice(names), "p": 100.0 + i, "b": 99.99, "a": 100.01} for i in range(BATCH)]
        for _ in range(BATCHES)
    ]
    if kind == "setup":
        return
    for i, batch in enumerate(feed):
        node.bus.publish(batch)  # type: ignore[arg-type]
        node.flusher.flush()
        if kind == "on" and i == BATCHES // 2:
            generate_latest(node.metrics.registry)
        await asyncio.sleep(0)  # the loop runs what the flusher scheduled


def count(kind: str) -> int:
    """Instructions of one workload's process, as cachegrind counts them."""
    argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    argv += [sys.executable, "-m", "bench.metrics_cost", "--workload", kind]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in every run
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode or not found:
        raise RuntimeError(f"valgrind exited {done.returncode}: {done.stderr[-300:]}")
    return int(found.group(1).replace(",", ""))


def main() -> dict[str, Any]:
    """Instructions per workload under cachegrind, and the cost of the metrics."""
    if shutil.which("valgrind") is None:
        return {"skipped": "valgrind is not installed (apt install valgrind)"}
    counts = {kind: count(kind) for kind in WORKLOADS}
    work = counts["off"] - counts["setup"]
    return {
        "clients": N_CLIENTS,
        "ticks": BATCH * BATCHES,
        "deliveries": BATCH * BATCHES * N_CLIENTS * PER_CLIENT // N_SYMBOLS,
        "instructions": counts,
        "per_delivery_off": work / (BATCH * BATCHES * N_CLIENTS * PER_CLIENT / N_SYMBOLS),
        "cost": (counts["on"] - counts["off"]) / work,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=WORKLOADS)
    args = parser.parse_args()
    if args.workload:
        asyncio.run(workload(args.workload))
    else:
        print(json.dumps(main()))
