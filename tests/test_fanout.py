"""The feed process's fan-out without processes: a worker that stops reading is cut off
(never buffered on), and publishes are numbered once, retries answered from memory."""

from __future__ import annotations

import asyncio

import orjson
from prometheus_client import CollectorRegistry

from ticker.core.bus import Bus
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
