"""A trivial WebSocket blaster: measures the load generator's own ceiling, not a server.

It accepts connections, answers the handshake and writes the same pre-built ticks frame
(``--ticks-per-frame`` ticks of ticker's shape) to every connection as fast as the sockets
take it. No parsing, no per-tick work: whatever rate the load generator then counts while
at 100 % of its core is the most it can count. The frame is rebuilt every 10 ms with a
fresh ``t`` (so latency shows buffering); ``q`` repeats, so run the load generator in mode
``conflate`` (no sequence check).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import selectors
import socket
import sys
import time

import orjson

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"


def frame(n_ticks: int, q0: int) -> bytes:
    t = time.time_ns() // 1000
    ticks = [
        {"s": "AAPL", "p": 103.87, "b": 103.86, "a": 103.9, "v": 200, "q": q0 + k, "t": t}
        for k in range(n_ticks)
    ]
    payload = orjson.dumps({"type": "ticks", "ticks": ticks})
    n = len(payload)
    if n < 126:
        head = bytes([0x81, n])
    elif n < 65536:
        head = bytes([0x81, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 127]) + n.to_bytes(8, "big")
    return head + payload


class Client:
    __slots__ = ("out", "request", "sock", "upgraded")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.request = b""
        self.upgraded = False
        self.out = memoryview(b"")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="WebSocket blaster (load generator ceiling)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ticks-per-frame", type=int, default=100)
    args = p.parse_args(argv)

    sel = selectors.DefaultSelector()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.host, args.port))
    lsock.listen(1024)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ)
    data = frame(args.ticks_per_frame, 1)
    built = time.monotonic()
    q = 1

    while True:
        if time.monotonic() - built > 0.01:
            q += args.ticks_per_frame
            data = frame(args.ticks_per_frame, q)
            built = time.monotonic()
        for key, _ in sel.select(0.01):
            if key.fileobj is lsock:
                try:
                    while True:
                        sock, _ = lsock.accept()
                        sock.setblocking(False)
                        sel.register(sock, selectors.EVENT_READ, Client(sock))
                except BlockingIOError:
                    pass
                continue
            c: Client = key.data
            if not c.upgraded:
                try:
                    chunk = c.sock.recv(4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(c.sock)
                    c.sock.close()
                    continue
                c.request += chunk
                if b"\r\n\r\n" not in c.request:
                    continue
                key_line = [
                    ln
                    for ln in c.request.split(b"\r\n")
                    if ln.lower().startswith(b"sec-websocket-key:")
                ]
                accept = base64.b64encode(
                    hashlib.sha1(key_line[0].split(b":", 1)[1].strip() + GUID).digest()
                )
                c.sock.send(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                c.upgraded = True
                sel.modify(c.sock, selectors.EVENT_WRITE, c)
                continue
            try:  # about 64 KiB per socket per round, so accepting never waits long
                budget = 65536
                while budget > 0:
                    if not c.out:
                        c.out = memoryview(data)
                    sent = c.sock.send(c.out)
                    c.out = c.out[sent:]
                    budget -= sent
                    if c.out:
                        break
            except BlockingIOError:
                pass
            except OSError:
                sel.unregister(c.sock)
                c.sock.close()


if __name__ == "__main__":
    sys.exit(main())
