"""The feed process's fan-out without processes: a worker that stops reading is cut off
(never buffered on), publishes are numbered once, retries answered from memory, and
status changes reach every worker, a joining one too."""

from __future__ import annotations

import asyncio
import socket

import orjson
from prometheus_client import CollectorRegistry

from ticker.cluster.pipe import FrameReader, Kind, decode_status, status_frame
from ticker.cluster.workers import MAX_FRAME
from ticker.core.bus import Bus
from ticker.core.status import SymbolStatus
from ticker.server.fanout import FanOut, WorkerLink


class StuckTransport(asyncio.Transport):
    """A socket whose reader never reads: everything written stays buffered."""

    def __init__(self, link: WorkerLink) -> None:
        super().__init__()
        self.link = link
        self.buffered = 0
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.buffered += len(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        self.aborted = True
        self.link.connection_lost(None)


async def test_a_worker_that_stops_reading_is_cut_off() -> None:
    bus = Bus()
    out = FanOut(bus, [], CollectorRegistry(), 60.0)
    link = WorkerLink(out, 0)
    transport = StuckTransport(link)
    link.connection_made(transport)
    link.allowance = 10_000
    out.links.add(link)
    for _ in range(200):
        bus.publish([{"s": "AAPL", "p": 1.5}, {"s": "MSFT", "p": 2.5}])
    assert link.cut and transport.aborted and link.lost.done()
    assert out.links == set()  # no more batches for it
    assert transport.buffered <= 10_000 + 200  # at most one frame past the allowance


async def test_publishes_are_numbered_once_and_retries_answered() -> None:
    bus = Bus()
    out = FanOut(bus, [], CollectorRegistry(), 60.0)

    def publish(p: float, key: str | None) -> dict:
        idem = None if key is None else ["ip:127.0.0.1", key, "ab" * 16 if p < 5 else "cd" * 16, 60]
        request = orjson.dumps({"b": [{"s": "PUB", "p": p}], "i": idem})
        return orjson.loads(out.publish(request))

    assert publish(1.0, None) == {"r": False, "q": {"PUB": 1}}
    assert publish(2.0, "k") == {"r": False, "q": {"PUB": 2}}
    assert publish(2.0, "k") == {"r": True, "q": {"PUB": 2}}  # not published again
    assert publish(9.0, "k")["e"]["code"] == "idempotency_key_reused"
    assert bus.publish([{"s": "PUB", "p": 3.0}]) == {"PUB": 3}


class Recording(asyncio.Transport):
    """A socket that keeps what was written to it, as frames."""

    def __init__(self) -> None:
        super().__init__()
        self.reader = FrameReader(MAX_FRAME)
        self.frames: list[tuple[Kind, bytes]] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.frames += self.reader.feed(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def statuses(self) -> list[dict[str, SymbolStatus]]:
        return [decode_status(p) for k, p in self.frames if k is Kind.STATUS]


async def test_every_status_change_reaches_every_worker_and_a_joining_one_the_not_live() -> None:
    bus = Bus(clock=lambda: 7)
    bus.add_symbols(["AAPL", "MSFT"])
    out = FanOut(bus, [], CollectorRegistry(), 60.0)
    links = []
    for index in range(2):
        link = WorkerLink(out, index)
        link.connection_made(transport := Recording())
        out.links.add(link)
        links.append(transport)
    bus.status.set(["AAPL"], "stale", "reconnecting")  # as a feed's supervisor does
    stale = {"AAPL": SymbolStatus("stale", "reconnecting", 7)}
    assert [t.statuses() for t in links] == [[stale], [stale]]

    # A worker's publisher sets a status: the feed process's board, then every worker.
    halted = {"MSFT": SymbolStatus("halted", "news pending", 5)}
    next(iter(out.links)).data_received(status_frame(halted))
    assert bus.status.get("MSFT") == halted["MSFT"]
    assert [t.statuses() for t in links] == [[stale, halted], [stale, halted]]

    # A worker (re)started now learns both before its hello.
    left, right = socket.socketpair()
    with left, right:
        await out.join(left, 2)
        right.setblocking(False)
        await asyncio.sleep(0.05)
        kinds = list(FrameReader(MAX_FRAME).feed(right.recv(1 << 20)))
    assert [k for k, _ in kinds] == [Kind.BATCH, Kind.STATUS, Kind.HELLO]
    assert decode_status(kinds[1][1]) == {**stale, **halted}
