"""The simulator's order books: the seeded model (consistent with the ticks, never crossed,
bounded, minimal absolute changes), the feed handing them to a sink, ``--sim-books``, and
a node serving them: a WebSocket client's rebuilt book equals the node's after every pass."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import aiohttp
import orjson
import pytest

from feeds.sim import SimulatedFeed
from feeds.sim.book import MAX_SIZE_LOTS, WINDOW, SimBooks
from feeds.sim.model import LOT, MarketModel
from tests.books_ref import RefBook
from tests.conftest import StartServer, next_of
from ticker.cli import build_parser
from ticker.commands import feeds as feed_commands
from ticker.core.books import Level
from ticker.core.ticks import Tick, TickBatch

N_SYMBOLS = 8
NAMES = [f"S{i}" for i in range(N_SYMBOLS)]


def model_batches(seed: int, sizes: list[int]) -> tuple[MarketModel, list[TickBatch]]:
    """Batches of the market model's ticks, ``sizes`` ticks each (several per symbol in the
    big ones), as the feed makes them."""
    model = MarketModel(N_SYMBOLS, seed=seed)
    batches: list[TickBatch] = []
    for n in sizes:
        idx, price, bid, ask, size = model.step(n, 0.002 * max(n, 1))
        batches.append(
            [
                {"s": NAMES[i], "p": p, "b": b, "a": a, "v": v}
                for i, p, b, a, v in zip(
                    idx.tolist(),
                    price.tolist(),
                    bid.tolist(),
                    ask.tolist(),
                    size.tolist(),
                    strict=True,
                )
            ]
        )
    return model, batches


def new_books(model: MarketModel, seed: int, symbols: int = N_SYMBOLS) -> SimBooks:
    starts = model.start_ticks.tolist()[:symbols]
    return SimBooks(dict(zip(NAMES[:symbols], starts, strict=True)), model.grid, seed=seed)


SIZES = [1, 2, 3, 0, 40, 5, 2, 200, 1, 7] * 30


def test_same_seed_same_books_and_changes() -> None:
    runs = []
    for _ in range(2):
        model, batches = model_batches(5, SIZES)
        books = new_books(model, seed=9)
        changes = [books.update(batch, 0.01) for batch in batches]
        runs.append((changes, [books.snapshot(s) for s in NAMES]))
    assert runs[0] == runs[1]
    model, batches = model_batches(5, SIZES)
    other = new_books(model, seed=10)
    assert [other.update(batch, 0.01) for batch in batches] != runs[0][0]


def test_after_every_batch_the_touch_is_the_tick_and_changes_are_minimal() -> None:
    model, batches = model_batches(3, SIZES)
    books = new_books(model, seed=3)
    # A client's copy, built from the start snapshot and the changes alone.
    copy: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
    for symbol in NAMES:
        bids, asks = books.snapshot(symbol)
        copy[symbol] = dict(bids), dict(asks)
        assert is_ordered(bids, asks)
    latest: dict[str, Tick] = {}
    updates = changed = 0
    for batch in batches:
        out = books.update(batch, 0.05)  # quiet books change too: 0.8 a batch
        latest.update({t["s"]: t for t in batch})
        for symbol, bids, asks in out:
            updates += 1
            changed += len(bids) + len(asks)
            for side, levels in zip(copy[symbol], (bids, asks), strict=True):
                prices = [p for p, _ in levels]
                assert len(prices) == len(set(prices))  # one change per level
                for price, size in levels:
                    assert side.get(price, 0.0) != size  # minimal: each one changes it
                    if size:
                        side[price] = size
                    else:
                        del side[price]  # absolute: a removal is of a level there
        for symbol, tick in latest.items():
            bids, asks = books.snapshot(symbol)
            assert (dict(bids), dict(asks)) == copy[symbol]
            assert (bids[0][0], asks[0][0]) == (tick["b"], tick["a"])  # exactly, as floats
            assert books.best(symbol) == (tick["b"], tick["a"])
            assert is_ordered(bids, asks)
            assert len(bids) <= WINDOW and len(asks) <= WINDOW
            spread = model.tick_size * (WINDOW - 0.5)
            assert bids[-1][0] > tick["b"] - spread and asks[-1][0] < tick["a"] + spread
            for _, size in bids + asks:
                assert size % LOT == 0 and LOT <= size <= LOT * MAX_SIZE_LOTS
    assert changed / updates < 12  # a handful of levels per symbol per batch


def is_ordered(bids: list[Level], asks: list[Level]) -> bool:
    """Bids high to low, asks low to high, the best bid below the best ask."""
    bid_prices, ask_prices = [p for p, _ in bids], [p for p, _ in asks]
    return (
        bid_prices == sorted(bid_prices, reverse=True)
        and ask_prices == sorted(ask_prices)
        and bid_prices[0] < ask_prices[0]
    )


def test_the_book_has_depth_and_moves_at_every_kind_of_event() -> None:
    model, batches = model_batches(4, SIZES)
    books = new_books(model, seed=4)
    start = {s: books.snapshot(s) for s in NAMES}
    assert all(len(b) >= WINDOW // 2 and len(a) >= WINDOW // 2 for b, a in start.values())
    seen = {"add": 0, "remove": 0, "grow": 0, "shrink": 0}
    for batch in batches:
        before = {s: tuple(map(dict, books.snapshot(s))) for s in NAMES}
        for symbol, bids, asks in books.update(batch, 0.05):
            for side, levels in zip(before[symbol], (bids, asks), strict=True):
                for price, size in levels:
                    old = side.get(price, 0.0)
                    kind = (
                        "remove"
                        if not size
                        else "add"
                        if not old
                        else "grow"
                        if size > old
                        else "shrink"
                    )
                    seen[kind] += 1
    assert all(count > 100 for count in seen.values()), seen


def test_quiet_books_change_behind_the_touch() -> None:
    model = MarketModel(N_SYMBOLS, seed=6)
    books = new_books(model, seed=6)
    assert books.update([], 0.0) == []  # no time, no change
    before = {s: books.snapshot(s) for s in NAMES}
    changed: set[str] = set()
    for _ in range(50):
        for symbol, bids, asks in books.update([], 0.01):  # 0.16 books a step
            changed.add(symbol)
            for price, size in bids + asks:
                assert size or price not in books.best(symbol)
    assert len(changed) >= N_SYMBOLS // 2
    for symbol, (bids, asks) in before.items():
        assert books.best(symbol) == (bids[0][0], asks[0][0])  # the quote stays
    out = books.update([], 100.0)  # a stall: each book changes once, not 1 600 times
    assert sorted(s for s, _, _ in out) == sorted(NAMES)


def test_a_jump_past_the_window_rebuilds_the_side_and_bad_ticks_are_refused() -> None:
    model = MarketModel(1, seed=1)
    books = new_books(model, seed=1, symbols=1)
    bid, _ = books.best("S0")
    old_bids, old_asks = books.snapshot("S0")
    far = model.grid.price(model.grid.ticks(bid) + 3 * WINDOW)
    far_ask = model.grid.price(model.grid.ticks(far) + 2)
    ((_, bids, asks),) = books.update([{"s": "S0", "p": far, "b": far, "a": far_ask, "v": 100}])
    assert {p for p, s in bids if not s} == {p for p, _ in old_bids}  # all of it gone
    assert {p for p, s in asks if not s} == {p for p, _ in old_asks}
    new_bids, new_asks = books.snapshot("S0")
    assert new_bids[0][0] == far and new_asks[0][0] == far_ask
    assert len(new_bids) >= WINDOW // 2 and len(new_asks) >= WINDOW // 2
    assert all(p > far - WINDOW * model.tick_size for p, _ in new_bids)
    assert books.update([{"s": "NOT-BOOKED", "p": 1.0}]) == []
    with pytest.raises(ValueError, match="S0: a tick without a bid and an ask"):
        books.update([{"s": "S0", "p": far}])
    with pytest.raises(ValueError, match="not below ask"):
        books.update([{"s": "S0", "p": far, "b": far_ask, "a": far}])
    with pytest.raises(ValueError, match="window must be >= 1"):
        SimBooks({}, model.grid, seed=1, window=0)


class FakeClock:
    """Time that moves only when the feed sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += delay


Call = tuple[str, list[Level], list[Level], bool]


def recording_feed(books: int, seed: int = 2) -> tuple[SimulatedFeed, list[Call]]:
    clock = FakeClock()
    feed = SimulatedFeed(20, 5000, seed=seed, clock=clock, sleep=clock.sleep, books=books)
    calls: list[Call] = []

    def sink(symbol: str, bids: Any, asks: Any, reset: bool = False) -> None:
        calls.append((symbol, list(bids), list(asks), reset))

    feed.bind_books(sink)
    return feed, calls


async def take(feed: SimulatedFeed, n: int) -> list[TickBatch]:
    out = []
    async with aclosing(feed.stream()) as stream:
        async for batch in stream:
            out.append(batch)
            if len(out) == n:
                break
    return out


async def test_the_feed_resets_each_book_then_hands_on_each_batchs_changes() -> None:
    feed, calls = recording_feed(books=5)
    batches = await take(feed, 50)
    booked = feed.symbols()[:5]
    resets = calls[:5]
    assert [c[0] for c in resets] == booked and all(c[3] for c in resets)
    assert all(len(c[1]) >= WINDOW // 2 for c in resets)
    assert calls[5:] and not any(c[3] for c in calls[5:])
    assert {c[0] for c in calls[5:]} <= set(booked)
    last = {t["s"]: t for batch in batches for t in batch}
    for symbol in booked:
        assert feed.books.best(symbol) == (last[symbol]["b"], last[symbol]["a"])
    # A restart begins with each book whole, as it is now.
    now = [feed.books.snapshot(s) for s in booked]
    calls.clear()
    await take(feed, 1)
    assert [c[0] for c in calls[:5]] == booked and all(c[3] for c in calls[:5])
    assert [(c[1], c[2]) for c in calls[:5]] == now


async def test_books_do_not_change_the_ticks_and_can_be_turned_off() -> None:
    with_books, calls = recording_feed(books=20)
    without, no_calls = recording_feed(books=0)
    plain = SimulatedFeed(20, 5000, seed=2, clock=(c := FakeClock()), sleep=c.sleep)
    ticks = [await take(feed, 30) for feed in (with_books, without, plain)]
    assert ticks[0] == ticks[1] == ticks[2]  # the books draw from their own generator
    assert calls and no_calls == []
    assert len(with_books.books) == 20 and len(without.books) == 0
    assert len(SimulatedFeed(3, books=100).books) == 3
    with pytest.raises(ValueError, match="books must be >= 0"):
        SimulatedFeed(3, books=-1)


def test_sim_books_flag() -> None:
    args = build_parser().parse_args(["serve", "--symbols", "30", "--sim-books", "7"])
    ((_, feed),) = feed_commands.build(args)
    assert isinstance(feed, SimulatedFeed)
    assert feed.books.symbols() == feed.symbols()[:7]
    (_, default), *_ = feed_commands.build(build_parser().parse_args(["serve"]))
    assert isinstance(default, SimulatedFeed) and len(default.books) == 100


def test_sim_books_without_the_sim_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["serve", "--feed", "coinbase:BTC-USD", "--sim-books", "3"])
    assert stop.value.code == 2
    assert "--sim-books is for --feed sim" in capsys.readouterr().err


class Gate:
    """A clock for a feed run by a node: the feed sleeps until the test lets it take
    ``run(n)`` more steps, and ``run`` returns when it sleeps again (its batches are out)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._budget = 0
        self._idle = asyncio.Event()
        self._more = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        while self._budget == 0:
            self._idle.set()
            self._more.clear()
            await self._more.wait()
        self._budget -= 1
        self.now += delay

    async def run(self, n: int) -> None:
        self._idle.clear()
        self._budget += n
        self._more.set()
        await asyncio.wait_for(self._idle.wait(), 5)


async def read_until(
    ws: aiohttp.ClientWebSocketResponse, refs: dict[Any, RefBook], done: Any
) -> None:
    """Apply book frames to their RefBook (which checks ``pu`` and ``cs`` on each) until
    ``done()``."""
    async with asyncio.timeout(5):
        while not done():
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
            frame = msg.json()
            if frame["type"] == "book":
                refs[frame.get("depth")].apply(frame)


async def test_a_client_rebuilds_the_sims_books_after_every_pass(
    start_server: StartServer,
) -> None:
    gate = Gate()
    feed = SimulatedFeed(5, 2000, seed=11, clock=gate, sleep=gate.sleep, books=2)
    symbol = feed.symbols()[0]
    node, server = await start_server((feed,), feed.symbols(), book_interval_s=3600)
    books = node.books
    assert books is not None
    await gate.run(0)  # the stream started: its resets are pending
    books.pump()
    book = books.books.book(symbol)
    assert book.u == 1 and len(book.bids) >= WINDOW // 2
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await next_of(ws, "welcome")
        await ws.send_json({"op": "subscribe", "symbols": [f"{symbol}@book10", f"{symbol}@book"]})
        await next_of(ws, "subscribed")
        refs = {}
        for _ in range(2):
            snap = await next_of(ws, "book")
            refs[snap.get("depth")] = RefBook(snap)
        full, top = refs[None], refs[10]

        def in_step() -> bool:
            bids, asks = book.bids.top(None), book.asks.top(None)
            return (
                full.u == book.u
                and full.top() == (bids, asks)
                and top.top()
                == (
                    bids[:10],
                    asks[:10],
                )
            )

        ticked = 0
        for n in [1, 3, 1, 7, 2, 1, 12, 4] * 3:
            await gate.run(n)
            books.pump()
            await read_until(ws, refs, in_step)
            assert not book.crossed
            for last in node.bus.snapshot([symbol]):  # once the symbol has ticked
                tick = orjson.loads(last)
                assert (book.bids.best(1), book.asks.best(1)) == ([tick["b"]], [tick["a"]])
                ticked += 1
        assert ticked > 20 and full.frames > 10 and top.frames > 5
    assert books.crossed == 0
