"""Load for the ``books`` bench: many WebSocket clients following book topics.

Each client subscribes to every topic given and counts the bytes it receives; with
1 000 clients x 10 topics a Python client could not parse every frame on one core, so
only ``--check`` of them parse theirs and verify each (``pu`` chains, ``cs`` matches the
book they rebuilt): the others read and count. Prints one JSON line at the end.

    python -m bench.book_clients --port P --clients 1000 --topics B0@book10,... --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import struct
import sys
import time

import orjson

from ticker.core.books import checksum


def client_frame(payload: bytes) -> bytes:
    """A masked text frame (clients must mask), mask of zeros: the payload unchanged."""
    n = len(payload)
    head = bytes([0x81]) + (
        bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    )
    return head + b"\x00\x00\x00\x00" + payload


class Book:
    """One topic as a checking client keeps it."""

    def __init__(self) -> None:
        self.u = -1
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def take(self, frame: dict) -> str | None:
        if frame.get("snapshot"):
            self.bids = {p: s for p, s in frame["bids"]}
            self.asks = {p: s for p, s in frame["asks"]}
        else:
            if frame["pu"] != self.u:
                return f"pu {frame['pu']} after {self.u}"
            for side, levels in ((self.bids, frame["bids"]), (self.asks, frame["asks"])):
                for p, s in levels:
                    if s:
                        side[p] = s
                    else:
                        side.pop(p, None)
        self.u = frame["u"]
        bids = sorted(self.bids.items(), reverse=True)[:10]
        asks = sorted(self.asks.items())[:10]
        if checksum(bids, asks) != frame["cs"]:
            return f"cs mismatch at u={self.u}"
        return None


class Client(asyncio.Protocol):
    def __init__(self, topics: list[str], check: bool, ready: asyncio.Future[None]) -> None:
        self.topics = topics
        self.check = check
        self.ready = ready
        self.bytes = 0
        self.frames = 0
        self.merged = 0
        self.errors: list[str] = []
        self._head = True
        self._buf = b""
        self._books: dict[str, Book] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        if self._head:
            self._buf += data
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self._head = False
            data, self._buf = self._buf[end + 4 :], b""
            sub = {"op": "subscribe", "symbols": self.topics}
            assert self.transport is not None
            self.transport.write(client_frame(orjson.dumps(sub)))
            if not self.ready.done():
                self.ready.set_result(None)
        if self.check:
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        buf = self._buf + data
        i = 0
        while len(buf) - i >= 2:
            n = buf[i + 1] & 0x7F
            start = i + 2
            if n == 126:
                if len(buf) - i < 4:
                    break
                n, start = struct.unpack_from("!H", buf, i + 2)[0], i + 4
            elif n == 127:
                if len(buf) - i < 10:
                    break
                n, start = struct.unpack_from("!Q", buf, i + 2)[0], i + 10
            if len(buf) < start + n:
                break
            opcode, payload = buf[i] & 0x0F, buf[start : start + n]
            i = start + n
            if opcode != 1:  # a ping (heartbeats go as pings and frames), not a text frame
                continue
            frame = orjson.loads(payload)
            if frame.get("type") == "book":
                self.frames += 1
                book = self._books.setdefault(frame["s"] + str(frame.get("depth")), Book())
                problem = book.take(frame)
                if problem:
                    self.errors.append(problem)
        self._buf = buf[i:]


async def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--topics", required=True)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--check", type=int, default=5)
    args = ap.parse_args(argv)
    loop = asyncio.get_running_loop()
    topics = args.topics.split(",")
    clients: list[Client] = []
    for i in range(args.clients):
        ready: asyncio.Future[None] = loop.create_future()
        client = Client(topics, i < args.check, ready)
        await loop.create_connection(lambda c=client: c, "127.0.0.1", args.port)
        await ready
        clients.append(client)
    await asyncio.sleep(1.0)  # snapshots in
    before = sum(c.bytes for c in clients)
    checked_before = sum(c.frames for c in clients)
    started = time.perf_counter()
    await asyncio.sleep(args.seconds)
    elapsed = time.perf_counter() - started
    received = sum(c.bytes for c in clients) - before
    frames = sum(c.frames for c in clients) - checked_before
    errors = [e for c in clients for e in c.errors]
    quiet = sum(1 for c in clients if c.bytes == 0)
    out = {
        "clients": len(clients),
        "topics": len(topics),
        "seconds": elapsed,
        "bytes_per_s": received / elapsed,
        "checked_frames_per_s_per_topic": frames / elapsed / max(1, args.check) / len(topics),
        "errors": errors[:5],
        "error_count": len(errors),
        "quiet_clients": quiet,
    }
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    for c in clients:
        if c.transport is not None:
            c.transport.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
