"""Order books in recordings: the importers checked against their sources after every
message (LOBSTER's orderbook rows, the Coinbase messages rebuilt apart), tardis resets,
``--record`` then replay giving the same books, ``ticker record --book``, and ``ticker
convert`` on the files, with its errors."""

from __future__ import annotations

import asyncio
import csv
import gzip
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

from feeds.replay.adapter import ReplayFeed
from tests.books_ref import RefBook
from tests.conftest import StartServer, next_of
from tests.test_replay_feed import FakeTime
from ticker.cli import main
from ticker.commands.record import Recording, book_topics, stream_url
from ticker.core.books import Book
from ticker.core.bus import Bus
from ticker.recording.book_lines import BookLog, BookRow
from ticker.recording.formats import load, open_writer
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.rotating import RotatingRecorder
from ticker.recording.schedule import ReplayOptions
from ticker.recording.table import TickTable
from ticker.server import recorder as recorder_module
from ticker.server.app import create_app
from ticker.server.books import BookService
from ticker.server.node import Node
from ticker.server.recorder import BusRecorder
from ticker.server.replays import ReplayPump
from ticker.server.settings import Settings

DATA = Path(__file__).parent / "data"
LOBSTER = DATA / "lobster_book" / "AAPL_2012-06-21_34200000_57600000_message_10.csv"
ORDERBOOK = DATA / "lobster_book" / "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"
COINBASE = DATA / "COINBASE.ws.28.0"
TARDIS = DATA / "tardis_book_L2.csv"
EMPTY = 9_999_999_999
CUT = 2500
"""Coinbase level2 messages checked frame by frame (of 9 729; all 10 snapshots are in
them): the whole file would take the test past seconds."""


def books_of(path: Path) -> tuple[int, BookLog]:
    log = BookLog()
    table = load([path], Problems(), books=log)
    return len(table), log


def lines_of(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in gzip.decompress(path.read_bytes()).splitlines()]


async def subscribe(ws: aiohttp.ClientWebSocketResponse, topics: list[str]) -> list[RefBook]:
    await next_of(ws, "welcome")
    await ws.send_json({"op": "subscribe", "symbols": topics, "id": 1})
    await next_of(ws, "subscribed")
    return [RefBook(await next_of(ws, "book")) for _ in topics]


def lobster_truth() -> list[tuple[list[list[float]], list[list[float]]]]:
    """Each orderbook row as (bids, asks) best first, read here apart from the importer."""
    out = []
    with ORDERBOOK.open() as f:
        for row in csv.reader(f):
            n = list(map(int, row))
            asks = [[n[j] / 10000, float(n[j + 1])] for j in range(0, 40, 4) if n[j] < EMPTY]
            bids = [[n[j] / 10000, float(n[j + 1])] for j in range(2, 40, 4) if n[j] > -EMPTY]
            out.append((bids, asks))
    return out


async def test_lobster_client_top_10_is_the_orderbook_row_after_every_message(
    start_server: StartServer,
) -> None:
    ticks, log = books_of(LOBSTER)
    assert ticks == 159 and log.rows[0].reset and not any(r.reset for r in log.rows[1:])
    truth = lobster_truth()
    row_at = dict(zip(log.lines, log.rows, strict=True))  # message line -> its book row
    node, server = await start_server(book_interval_s=3600)
    books = node.books
    assert books is not None
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        (ref,) = await subscribe(ws, ["AAPL@book10"])
        for line, (bids, asks) in enumerate(truth, 1):  # message k <-> orderbook row k
            row = row_at.get(line)
            if row is not None:
                books.submit(row.s, row.bids, row.asks, row.reset)
                books.pump()
                ref.apply(await next_of(ws, "book"))  # pu chains, cs checked by RefBook
            assert ref.top(10) == (bids, asks), f"after message {line}"
    assert ref.frames == len(log) + 1 and len(truth) == 999


def coinbase_level2() -> list[dict]:
    """The raw file's level2 messages, read here apart from the importer."""
    out = []
    for line in COINBASE.read_text().splitlines():
        if line and not line.startswith("wss://"):
            msg = orjson.loads(line.split(": ", 1)[1])
            if msg["type"] in ("snapshot", "l2update"):
                out.append(msg)
    return out


def levels(pairs: list) -> list[tuple[float, float]]:
    return [(float(p), float(s)) for p, s in pairs]


async def test_coinbase_client_book_equals_the_raw_messages_after_every_frame(
    start_server: StartServer,
) -> None:
    ticks, log = books_of(COINBASE)
    assert ticks == 97 and len(log) == 9729 and sum(r.reset for r in log.rows) == 10
    messages = coinbase_level2()
    reference = {m["product_id"]: Book(m["product_id"]) for m in messages}
    node, server = await start_server(symbols=sorted(reference), book_interval_s=3600)
    books = node.books
    assert books is not None
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        topics = [f"{p}@book" for p in sorted(reference)]
        refs = {r.symbol: r for r in await subscribe(ws, topics)}
        assert len(messages) == len(log) and sum(r.reset for r in log.rows[:CUT]) == 10
        for row, msg in zip(log.rows[:CUT], messages[:CUT], strict=True):
            book = reference[msg["product_id"]]  # the engine's book, from the raw message
            if msg["type"] == "snapshot":
                book.reset(levels(msg["bids"]), levels(msg["asks"]))
            for side, p, size in msg.get("changes", []):
                change = levels([[p, size]])
                book.apply(change, []) if side == "buy" else book.apply([], change)
            before = books.books.book(row.s).u
            books.submit(row.s, row.bids, row.asks, row.reset)
            books.pump()
            ref = refs[row.s]
            if books.books.book(row.s).u != before:  # a change that changed nothing: no frame
                ref.apply(await next_of(ws, "book"))
            assert ref.bids == book.bids.levels and ref.asks == book.asks.levels
    assert sum(r.frames for r in refs.values()) > CUT * 0.9


def test_tardis_snapshot_after_updates_is_a_reset() -> None:
    ticks, log = books_of(TARDIS)
    assert ticks == 0
    btc = [r for r in log.rows if r.s == "BTCUSDT"]
    assert [r.reset for r in btc] == [True, False, False, False, True, False]
    assert btc[1].bids == [(9681.0, 3.0)]  # the snapshot going on at the next local_timestamp
    service = BookService(interval_s=3600)
    for row in log.rows:
        service.submit(row.s, row.bids, row.asks, row.reset)
        service.pump()
        if row is btc[3]:
            book = service.books.book("BTCUSDT")
            assert book.bids.levels == {9682.5: 1.5, 9682.0: 0.75, 9681.0: 3.0}
            assert book.asks.levels == {9683.0: 0.25, 9684.0: 0.5}
    book = service.books.book("BTCUSDT")
    assert book.bids.levels == {9688.5: 1.0} and book.asks.levels == {9690.0: 4.0}
    assert service.books.book("ETHUSDT").bids.levels == {265.1: 10.0}
    assert log.rows[0].t == 1582329600100000  # local_timestamp: the file's own order


def test_a_bad_book_line_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    lines = [
        '{"s":"AAPL","p":1.0,"t":1}',
        '{"type":"book","s":"AAPL","t":2,"bids":[[1.0,"x"]],"asks":[]}',
        '{"type":"book","s":"AAPL","t":3,"bids":[[1.0,2.0]],"asks":[],"reset":true}',
    ]
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordingError) as stop:
        load([src], Problems(flag="--on-error"), books=BookLog())
    assert "in.jsonl:2: bad book row: bids[0]: the size must be a number" in str(stop.value)
    log = BookLog()
    problems = Problems("skip")
    load([src], problems, books=log)
    assert problems.skipped == 1 and [r.t for r in log.rows] == [3]


async def replay_into(paths: list[Path]) -> BookService:
    """A second node's books, fed by a replay of ``paths``, one pass per recorded row (as
    the first node had them)."""
    second = BookService(interval_s=3600)
    feed = ReplayFeed.from_paths(paths, ReplayOptions(speed=0), Problems())

    def sink(symbol: str, bids: list, asks: list, reset: bool = False) -> None:
        second.submit(symbol, bids, asks, reset)
        second.pump()

    feed.bind_books(sink)
    async for _ in feed.stream():
        pass
    return second


async def test_record_then_replay_gives_the_same_books_u_and_cs(
    start_server: StartServer, tmp_path: Path
) -> None:
    node, _ = await start_server(book_interval_s=3600)
    books = node.books
    assert books is not None
    recorder = BusRecorder(node.bus, tmp_path / "rec", max_bytes=1500, books=books)
    recorder.start()
    changes: list[tuple[str, list, list, bool]] = [
        ("AAPL", [(100.0, 5.0), (99.0, 1.0)], [(101.0, 2.0)], True),
        ("MSFT", [(50.0, 1.0)], [(51.0, 1.0)], True),
    ]
    for i in range(60):
        changes.append(("AAPL", [(99.0 - i % 7, float(i % 3))], [(101.0 + i % 5, 1.0 + i)], False))
        changes.append(("MSFT", [(50.0 - i % 4 * 0.5, 2.0 + i)], [], False))
    changes.append(("AAPL", [(98.0, 3.0)], [(102.0, 4.0)], True))  # a resync
    for symbol, bids, asks, reset in changes:
        written = recorder.log.book_rows
        books.submit(symbol, bids, asks, reset)
        books.pump()
        node.bus.publish([{"s": symbol, "p": 1.0}])
        async with asyncio.timeout(5):
            while recorder.log.book_rows == written:  # a write per row: rotation is exact
                await asyncio.sleep(0.001)
    await recorder.close()
    files = sorted((tmp_path / "rec").iterdir())
    assert len(files) > 2  # rotated by size

    second = await replay_into(files)
    for symbol in ("AAPL", "MSFT"):
        first, again = books.books.book(symbol), second.books.book(symbol)
        assert (again.u, again.cs) == (first.u, first.cs)
        assert again.bids.levels == first.bids.levels and again.asks.levels == first.asks.levels
    last = await replay_into(files[-1:])  # a later file alone: it begins with each book whole
    for symbol in ("AAPL", "MSFT"):
        assert last.books.book(symbol).cs == books.books.book(symbol).cs
    first_rows = lines_of(files[1])
    assert [r.get("reset") for r in first_rows if r.get("type") == "book"][:2] == [True, True]


async def test_ticker_record_book_writes_snapshot_then_deltas(
    start_server: StartServer, tmp_path: Path
) -> None:
    node, server = await start_server(book_interval_s=3600)
    books = node.books
    assert books is not None
    books.submit("AAPL", [(100.0, 5.0)], [(101.0, 1.0)], reset=True)
    books.pump()
    out = tmp_path / "rec.jsonl"
    writer = open_writer(out)
    url = stream_url(str(server.make_url("/ws")), book_topics("AAPL", ["AAPL"]))
    recording = Recording(url, writer)
    task = asyncio.create_task(recording.run(duration=5))
    while not any(c.session.subscriptions for c in node.connections):
        await asyncio.sleep(0.01)
    books.submit("AAPL", [(100.0, 0.0), (99.5, 2.0)], [])
    books.pump()
    node.bus.publish([{"s": "AAPL", "p": 100.5}])
    while writer.books < 2 or writer.ticks < 1:
        await asyncio.sleep(0.01)
    recording.stop()
    await task
    writer.close()
    log = BookLog()
    assert len(load([out], Problems(), books=log)) == 1
    assert [r.reset for r in log.rows] == [True, False]
    rebuilt = Book("AAPL")
    for r in log.rows:
        (rebuilt.reset if r.reset else rebuilt.apply)(r.bids, r.asks)
    assert rebuilt.cs == books.books.book("AAPL").cs
    with pytest.raises(ValueError, match="one book topic per symbol"):
        book_topics("AAPL@book10", ["AAPL"])


def test_record_book_into_a_column_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rec.npz"
    assert main(["record", "ws://127.0.0.1:1/ws", "--out", str(out), "--book", "AAPL"]) == 2
    assert "order books need a .jsonl or .jsonl.gz --out" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("src", [LOBSTER, COINBASE, TARDIS], ids=["lobster", "coinbase", "tardis"])
def test_convert_cli_writes_books_and_ticks_in_time_order(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jsonl.gz"
    assert main(["convert", str(src), str(out)]) == 0
    ticks, log = books_of(src)
    assert f"book rows to {out}" in capsys.readouterr().err
    lines = lines_of(out)
    times = [x["t"] for x in lines]
    assert times == sorted(times)  # books and ticks together, in time order
    again = BookLog()
    assert len(load([out], Problems(), books=again)) == ticks
    assert again.rows == log.rows
    feed = ReplayFeed.from_paths([out], ReplayOptions(speed=0), Problems())
    assert len(feed.books) == len(log) and feed.span()[0] == min(times)
    refused = tmp_path / "out.npz"
    assert main(["convert", str(src), str(refused)]) == 2
    err = capsys.readouterr().err
    assert f"{refused}: " in err and "column files (.npz, .ticks) hold ticks only" in err
    assert not refused.exists()


def test_a_window_of_a_recording_begins_each_book_whole() -> None:
    _, log = books_of(COINBASE)
    start = log.rows[len(log) // 2].t
    window = log.select(["SKL-BTC"], start, None)
    assert window.rows[0].reset and window.rows[0].t >= start
    full, part = Book("X"), Book("X")
    for r in log.rows:
        if r.s == "SKL-BTC":
            (full.reset if r.reset else full.apply)(r.bids, r.asks)
    for r in window.rows:
        (part.reset if r.reset else part.apply)(r.bids, r.asks)
    assert part.cs == full.cs and part.bids.levels == full.bids.levels


async def test_replay_hands_books_and_ticks_in_time_order_at_its_speed() -> None:
    fake = FakeTime(jitter_s=0.0)
    t0 = 1_700_000_000_000_000
    table = TickTable.build(
        ["A"],
        t=np.array([t0, t0 + 100_000, t0 + 200_000]),
        sym=np.zeros(3, np.int32),
        p=np.array([1.0, 2.0, 3.0]),
    )
    log = BookLog()
    for dt, reset in ((-50_000, False), (50_000, False), (150_000, True), (300_000, False)):
        log.add(BookRow(t0 + dt, "A", [(1.0, 1.0 + dt / 1e6)], [], reset))
    feed = ReplayFeed(
        table, ReplayOptions(speed=2, loop=True), clock=fake.clock, sleep=fake.sleep, books=log
    )
    events: list[tuple[str, float, bool]] = []
    feed.bind_books(lambda s, b, a, reset=False: events.append(("book", fake.now, reset)))
    async for batch in feed.stream():
        events += [("tick", fake.now, False)] * len(batch)
        if len(events) >= 14:
            break
    start = events[0][1]
    got = [(kind, round((now - start) * 1e6), reset) for kind, now, reset in events]
    one = [  # at speed 2: recording gaps halved; the first row of a pass resets its book
        ("book", 0, True),
        ("tick", 25_000, False),
        ("book", 50_000, False),
        ("tick", 75_000, False),
        ("book", 100_000, True),
        ("tick", 125_000, False),
        ("book", 175_000, False),
    ]
    again = [(k, us + 175_000, r) for k, us, r in one]  # the next pass, where this one ended
    assert got[:14] == one + again


async def test_record_to_column_files_refuses_books_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = BookService(interval_s=3600)
    recorder = BusRecorder(Bus(), tmp_path / "rec", suffix=".ticks", books=service)
    recorder.start()
    service.submit("A", [(1.0, 1.0)], [], reset=True)
    service.pump()
    await recorder.close()
    assert "order books are not recorded: .ticks files hold ticks only" in caplog.text
    assert recorder.log.book_rows == 0 and service.on_applied == []


async def test_a_recorder_behind_on_books_writes_resets_that_keep_the_file_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorder_module, "MAX_BOOK_LEVELS", 5)
    service = BookService(interval_s=3600)
    recorder = BusRecorder(Bus(), tmp_path / "rec", books=service)
    recorder.start()
    for i in range(20):  # no await: the writer gets no turn, the queue overflows
        service.submit("A", [(100.0 - i, 1.0 + i)], [(101.0 + i, 2.0)], reset=i == 0)
        service.pump()
    await recorder.close()
    log = BookLog()
    load(sorted((tmp_path / "rec").iterdir()), Problems(), books=log)
    assert len(log) < 20 and log.rows[-1].reset
    rebuilt = Book("A")
    for r in log.rows:
        (rebuilt.reset if r.reset else rebuilt.apply)(r.bids, r.asks)
    assert rebuilt.cs == service.books.book("A").cs


async def replayed_book(ws: aiohttp.ClientWebSocketResponse) -> dict:
    """The next book frame of the replay (``"r": 1``), past live ones."""
    while True:
        got = await next_of(ws, "book")
        if got.get("r") == 1:
            return got


async def test_an_on_demand_replay_sends_its_books_to_the_client_topics(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    root = tmp_path / "replays"
    root.mkdir()
    assert main(["convert", str(LOBSTER), str(root / "aapl.jsonl")]) == 0
    _, log = books_of(root / "aapl.jsonl")
    truth = lobster_truth()
    node = Node(Settings(book_interval_s=3600))
    node.bus.add_symbols(["AAPL"])
    app = create_app(node)
    pump = ReplayPump(root)
    node.replays = pump
    pump.attach(app)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await subscribe(ws, ["AAPL@book10"])  # the node's own book: empty
        await ws.send_json({"op": "replay", "source": "aapl.jsonl", "speed": 0, "id": 2})
        ref = RefBook(await replayed_book(ws))  # the replay's own snapshot, then its deltas
        assert ref.u == 0 and not ref.bids
        while ref.top(10) != truth[-1]:
            ref.apply(await replayed_book(ws))
        assert (await next_of(ws, "replay_state"))["state"] == "ended"
        assert node.books is not None and node.books.books.book("AAPL").u == 0  # untouched
        seek_to = log.rows[500].t + 1
        await ws.send_json({"op": "replay", "source": "aapl.jsonl", "speed": 1, "id": 3})
        ref = RefBook(await replayed_book(ws))
        await ws.send_json({"op": "replay_control", "action": "pause", "id": 4})
        await ws.send_json({"op": "replay_control", "action": "seek", "to": seek_to, "id": 5})
        expected = Book("AAPL")
        for row in log.rows:
            if row.t < seek_to:
                (expected.reset if row.reset else expected.apply)(row.bids, row.asks)
        while ref.bids != dict(expected.bids.top(10)) or ref.asks != dict(expected.asks.top(10)):
            ref.apply(await replayed_book(ws))  # the seek: one delta to the book there


def test_a_new_day_file_begins_with_every_book_whole(tmp_path: Path) -> None:
    midnight = 20_000 * 86_400_000_000
    log = RotatingRecorder(tmp_path)
    log.write(
        [{"s": "A", "p": 1.0, "t": midnight - 2}],
        [
            BookRow(midnight - 2, "A", [(1.0, 1.0), (0.9, 2.0)], [(1.1, 1.0)], reset=True),
            BookRow(midnight - 1, "B", [(5.0, 1.0)], []),  # first seen: written whole
            BookRow(midnight + 1, "A", [(0.9, 0.0)], []),
        ],
    )
    log.close()
    first, second = (lines_of(p) for p in log.files)
    assert [(r.get("type"), r["s"], r.get("reset")) for r in first] == [
        (None, "A", None),
        ("book", "A", True),
        ("book", "B", True),
    ]
    assert [(r["s"], r["t"], r.get("reset"), r["bids"]) for r in second] == [
        ("A", midnight + 1, True, [[1.0, 1.0], [0.9, 2.0]]),  # each book as it stood
        ("B", midnight + 1, True, [[5.0, 1.0]]),
        ("A", midnight + 1, None, [[0.9, 0.0]]),
    ]
