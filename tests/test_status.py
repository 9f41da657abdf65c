"""Per-symbol status: the board, the session's frames, the supervisor's reports for
feeds that do not report their own, and the frame over every transport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import ANY

import aiohttp
import pytest

from feeds.supervisor import FeedSupervisor
from tests.conftest import StartServer, next_of
from tests.test_http_transports import poll, sse_events
from tests.test_publish_http import post
from tests.test_session import frames, make
from ticker.client import Connected, Status, connect
from ticker.core.publish import PublishLimits
from ticker.core.status import CLOSED, HALTED, LIVE, STALE, StatusBoard, SymbolStatus
from ticker.core.ticks import TickBatch


class Heard:
    def __init__(self) -> None:
        self.changes: list[dict[str, SymbolStatus]] = []

    def status_changed(self, changes: dict[str, SymbolStatus]) -> None:
        self.changes.append(changes)


def test_the_board_tells_changes_only() -> None:
    board, heard = StatusBoard(clock=lambda: 7), Heard()
    board.listen(heard)
    board.set(["A", "B"], LIVE)  # live already: no change
    board.set(["A", "B"], STALE, "reconnecting")
    board.set(["A"], STALE, "reconnecting")  # the same again: no change
    board.set(["A"], LIVE)
    assert heard.changes == [
        {"A": SymbolStatus(STALE, "reconnecting", 7), "B": SymbolStatus(STALE, "reconnecting", 7)},
        {"A": SymbolStatus(LIVE, "", 7)},
    ]
    assert board.not_live(["A", "B", "C"]) == {"B": SymbolStatus(STALE, "reconnecting", 7)}
    assert board.counts() == {"live": 1, "stale": 1, "halted": 0, "closed": 0}
    with pytest.raises(ValueError, match="status must be one of"):
        board.set(["A"], "sleepy")
    board.leave(heard)
    board.set(["A"], CLOSED)
    assert len(heard.changes) == 2


def test_a_subscriber_gets_the_status_after_its_snapshot_then_every_change() -> None:
    bus, session, _ = make()
    bus.status.set(["MSFT"], STALE, "reconnecting")
    bus.publish([{"s": "MSFT", "p": 1.0}])
    session.start(20, ["AAPL", "MSFT"])
    kinds = frames(session)
    assert [f["type"] for f in kinds] == ["welcome", "subscribed", "snapshot", "status"]
    assert kinds[-1]["symbols"] == {
        "MSFT": {"status": "stale", "reason": "reconnecting", "since": 1_000}
    }
    bus.status.set(["MSFT", "IBM"], LIVE)  # IBM is not subscribed: not told
    assert frames(session) == [
        {"type": "status", "symbols": {"MSFT": {"status": "live", "reason": "", "since": 1_000}}}
    ]
    session.end()
    bus.status.set(["MSFT"], STALE)
    assert frames(session) == []


class Failing:
    """A feed that yields once, then fails once, then ends."""

    name = "flaky"

    def __init__(self) -> None:
        self.calls = 0

    def symbols(self) -> list[str]:
        return ["F1"]

    async def stream(self) -> AsyncIterator[TickBatch]:
        self.calls += 1
        yield [{"s": "F1", "p": 1.0}]
        if self.calls == 1:
            raise ConnectionError("boom")


async def test_the_supervisor_reports_for_feeds_that_do_not() -> None:
    seen: list[tuple[list[str], str, str]] = []

    async def no_sleep(_: float) -> None:
        pass

    sup = FeedSupervisor(
        Failing(),
        lambda batch: None,
        sleep=no_sleep,
        status=lambda symbols, status, reason: seen.append((list(symbols), status, reason)),
    )
    await sup.run()
    assert [(s, st) for s, st, _ in seen] == [(["F1"], STALE), (["F1"], LIVE), (["F1"], CLOSED)]


async def test_every_transport_carries_status_frames(start_server: StartServer) -> None:
    node, server = await start_server(poll_hold_s=0.2)
    node.bus.status.set(["MSFT"], STALE, "connecting to coinbase")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/ws?symbols=AAPL,MSFT")) as ws:
            first = await next_of(ws, "status")
            assert first["symbols"]["MSFT"]["reason"] == "connecting to coinbase"
            node.bus.status.set(["AAPL", "MSFT"], CLOSED, "the feed ended")
            second = await next_of(ws, "status")
            assert {s: v["status"] for s, v in second["symbols"].items()} == {
                "AAPL": "closed",
                "MSFT": "closed",
            }
        async with http.get(server.make_url("/sse?symbols=MSFT")) as resp:
            events = await sse_events(resp, "status")
            assert events[-1]["data"]["symbols"]["MSFT"]["status"] == "closed"
        answer = await poll(http, server.make_url("/poll?symbols=MSFT"))
        kinds: list[Any] = [m["type"] for m in answer["messages"]]
        assert kinds[-1] == "status", kinds


async def test_the_python_client_reports_status_events(start_server: StartServer) -> None:
    node, server = await start_server()
    node.bus.status.set(["MSFT"], HALTED, "the exchange halted it")
    async with connect(f"ws://127.0.0.1:{server.port}/ws", ["AAPL", "MSFT"]) as feed:
        events = feed.events()
        assert isinstance(await anext(events), Connected)
        assert await anext(events) == Status("MSFT", HALTED, "the exchange halted it", ANY)
        node.bus.status.set(["MSFT"], LIVE)
        assert (await anext(events)).status == LIVE  # type: ignore[union-attr]


async def test_a_publisher_sets_the_status_of_symbols_it_may_publish(
    start_server: StartServer,
) -> None:
    _, server = await start_server(publish=PublishLimits())
    url = server.make_url("/publish/status")
    halt = {"symbols": {"AAPL": {"status": "halted", "reason": "news pending"}}}
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.make_url("/ws?symbols=AAPL")) as ws:
            assert (await post(http, url, halt))[:2] == (200, {"accepted": 1})
            told = await next_of(ws, "status")
            assert told["symbols"]["AAPL"]["status"] == "halted"
            assert told["symbols"]["AAPL"]["reason"] == "news pending"
        status, body, _ = await post(http, url, {"symbols": {"AAPL": {"status": "asleep"}}})
        assert status == 400 and "status must be one of" in body["message"]
        status, body, _ = await post(http, url, {"symbols": {"NOPE": {"status": "live"}}})
        assert status == 403 and body["symbols"] == ["NOPE"]
