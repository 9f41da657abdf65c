"""The load generator: thousands of WebSocket clients in one thread, on one core.

It must never be the bottleneck, so most connections are counted, not parsed: in a
ticks frame the only lowercase ``q`` is the ``"q"`` key, once per tick, so counting that
one byte counts deliveries (numpy, ~8 GB/s, for big reads; ``bytes.count`` for small
ones). The count is checked against full parsing on the sampled connections. Those (2-3 %)
are parsed in full (orjson) for latency and the per-symbol sequence check. Raw
non-blocking sockets and one epoll loop: no asyncio and no aiohttp, whose per-connection
cost would swamp what is being measured. Counted connections are read in bulk passes
(every 100 ms), sampled ones as soon as data arrives.

Its own CPU use is reported, so a saturated load generator is visible in the results.
In: command-line options. Out: one JSON object on stdout; progress lines on stderr.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import gc
import os
import select
import socket
import sys
import time
from array import array
from typing import Any

import numpy as np
import orjson

from bench import procfs

CHUNK = 256 * 1024
TICK_BYTE = ord("q")
"""Symbols are uppercase, numbers are digits and the other keys are other letters: one
``q`` per tick. (The welcome's "queue_bytes" adds one per connection, before measuring.)"""
NUMPY_MIN = 4096
"""Below this a numpy call costs more than ``bytes.count``."""
TEXT_FRAME = b"\x81"
"""FIN + text: the first byte of every data frame. The payload is ASCII JSON, so counting
this byte counts frames, give or take a rare extended-length byte that happens to equal it."""
CLOSE_OP = 0x88
PING = b"\x89"
CLOSE_TAIL = 130
"""A close frame is at most 2 + 125 bytes and is the last thing a server sends."""
ZERO_MASK = b"\0\0\0\0"
"""Client frames must be masked; a zero key is a valid key and leaves the payload as is."""
PONG = bytes([0x8A, 0x80]) + ZERO_MASK

CONNECTING, HANDSHAKE, OPEN, STALLED, CLOSED = range(5)
HEALTHY, SLOW = 0, 1
GROUPS = ("healthy", "slow")
TCP_STATES = {
    1: "established",
    2: "syn_sent",
    3: "syn_recv",
    4: "fin_wait1",
    5: "fin_wait2",
    6: "time_wait",
    7: "closed",
    8: "close_wait",
    9: "last_ack",
    10: "listen",
    11: "closing",
}


def log(msg: str) -> None:
    print(f"  [loadgen] {msg}", file=sys.stderr, flush=True)


def close_frame(code: int) -> bytes:
    return bytes([0x88, 0x82]) + ZERO_MASK + code.to_bytes(2, "big")


def close_code_at_end(tail: bytes) -> int | None:
    """The code of a complete close frame that ends ``tail``, if there is one."""
    start = max(0, len(tail) - CLOSE_TAIL)
    i = tail.rfind(b"\x88", start)
    while i >= 0:
        if i + 1 < len(tail):
            n = tail[i + 1]
            if n < 126 and i + 2 + n == len(tail):
                return int.from_bytes(tail[i + 2 : i + 4], "big") if n >= 2 else 1005
        i = tail.rfind(b"\x88", start, i)
    return None


def plan(n_conns: int, per_conn: int, universe: list[str]) -> list[list[str]]:
    """Connection i takes ``per_conn`` consecutive symbols from (i * per_conn) mod U.

    When ``n_conns * per_conn`` is a multiple of U every symbol has the same number of
    subscribers, so the expected delivery count does not depend on which symbols tick.
    """
    u = len(universe)
    if per_conn <= 0 or per_conn >= u:
        return [["*"] for _ in range(n_conns)]
    return [[universe[(i * per_conn + k) % u] for k in range(per_conn)] for i in range(n_conns)]


class Conn:
    __slots__ = (
        "close_pending",
        "closed_at",
        "fd",
        "group",
        "hbuf",
        "idx",
        "lastq",
        "mode",
        "outcome",
        "path",
        "rbuf",
        "sampled",
        "sock",
        "state",
        "symbols",
        "tail",
        "ticks",
    )

    def __init__(self, idx: int, symbols: list[str], group: int, mode: str, sampled: bool) -> None:
        self.idx = idx
        self.symbols = symbols
        self.group = group
        self.mode = mode
        self.sampled = sampled
        self.path = f"/ws?symbols={','.join(symbols)}&mode={mode}"
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = CONNECTING
        self.hbuf = b""
        self.tail = b""
        self.close_pending = False
        self.rbuf = bytearray()
        self.lastq: dict[str, int] = {}
        self.ticks = 0
        self.outcome: str | None = None
        self.closed_at: float | None = None


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.addr = (args.host, args.port)
        self.ep = select.epoll()
        self.bulk = select.epoll()
        self.bulk_interval = args.bulk_interval
        self.next_bulk = 0.0
        self.conns: dict[int, Conn] = {}
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)
        self.np_buf = np.frombuffer(self.buf, dtype=np.uint8)
        self.np_hits = np.empty(CHUNK, dtype=bool)
        self.check_fast = self.check_exact = 0
        """On sampled connections in the window: the fast count vs the parsed count."""
        self.ticks = [0, 0]
        self.frames = 0
        self.exact_frames = 0
        self.pending = 0
        self.connect_errors: dict[str, int] = {}
        self.closes: list[dict[str, int]] = [{}, {}]
        self.in_window = False
        self.window_start = 0.0
        self.latency = array("q")
        self.checked = self.gaps = self.gap_events = self.dups = self.reorders = 0
        self.heartbeats = 0
        self.error_frames = 0
        self.server_pid: int | None = args.server_pid
        self.cores: dict[str, int] = {}
        if args.server_core is not None:
            self.cores["server"] = args.server_core
        if args.own_core is not None:
            self.cores["loadgen"] = args.own_core

    # -- connecting ---------------------------------------------------------------------

    def open(self, c: Conn, rcvbuf: int = 0, mss: int = 0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if mss:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        err = sock.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._count_error(errno.errorcode.get(err, str(err)))
            c.state = CLOSED
            return
        c.sock, c.fd, c.state = sock, sock.fileno(), CONNECTING
        self.conns[c.fd] = c
        self.ep.register(c.fd, select.EPOLLOUT)
        self.pending += 1

    def _count_error(self, reason: str) -> None:
        self.connect_errors[reason] = self.connect_errors.get(reason, 0) + 1

    def _fail_connect(self, c: Conn, reason: str) -> None:
        self._count_error(reason)
        self.pending -= 1
        self._drop(c)

    def _drop(self, c: Conn) -> None:
        if c.sock is not None:
            if c.fd in self.conns:
                del self.conns[c.fd]
                for ep in (self.ep, self.bulk):  # it is in one of them (or none: stalled)
                    with contextlib.suppress(OSError, ValueError):
                        ep.unregister(c.fd)
            c.sock.close()
            c.sock = None
        c.state = CLOSED

    def _on_connected(self, c: Conn) -> None:
        assert c.sock is not None
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail_connect(c, errno.errorcode.get(err, str(err)))
            return
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {c.path} HTTP/1.1\r\nHost: {self.addr[0]}:{self.addr[1]}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        try:
            c.sock.send(request)  # a few hundred bytes into an empty buffer: sent whole
        except OSError as exc:
            self._fail_connect(c, errno.errorcode.get(exc.errno or 0, "send"))
            return
        c.state = HANDSHAKE
        self.ep.modify(c.fd, select.EPOLLIN)

    def _on_handshake(self, c: Conn) -> None:
        assert c.sock is not None
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail_connect(c, errno.errorcode.get(exc.errno or 0, "recv"))
            return
        if not data:
            self._fail_connect(c, "eof in handshake")
            return
        c.hbuf += data
        end = c.hbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(c.hbuf) > 16384:
                self._fail_connect(c, "bad handshake")
            return
        head, rest = c.hbuf[:end], c.hbuf[end + 4 :]
        c.hbuf = b""
        if not head.startswith(b"HTTP/1.1 101"):
            self._fail_connect(c, "http " + head.split(b"\r\n", 1)[0].decode(errors="replace"))
            return
        self.pending -= 1
        if c.group == SLOW:
            # Connected and subscribed: from now on it never reads again.
            c.state = STALLED
            self.ep.unregister(c.fd)
            return
        c.state = OPEN
        if not c.sampled:
            self.ep.unregister(c.fd)
            self.bulk.register(c.fd, select.EPOLLIN)
        if rest:
            if c.sampled:
                self._parse(c, rest, time.time_ns() // 1000)
            else:
                self.buf[: len(rest)] = rest
                self._count(c, len(rest))

    # -- reading ------------------------------------------------------------------------

    def _read_fast(self, c: Conn) -> None:
        """Count ticks and frames in one read without parsing anything."""
        try:
            n = c.sock.recv_into(self.view, CHUNK)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(c, errno.errorcode.get(exc.errno or 0, "error").lower())
            return
        if n == 0:
            self._lost(c, "eof")
            return
        self._count(c, n)

    def _count(self, c: Conn, end: int) -> None:
        buf = self.buf
        if end >= NUMPY_MIN:
            data, hits = self.np_buf[:end], self.np_hits[:end]
            np.equal(data, TICK_BYTE, out=hits)
            k = int(np.count_nonzero(hits))
            np.equal(data, 0x81, out=hits)
            self.frames += int(np.count_nonzero(hits))
        else:
            k = buf.count(b"q", 0, end)
            self.frames += buf.count(TEXT_FRAME, 0, end)
        if k:
            c.ticks += k
            self.ticks[c.group] += k
        if buf.find(PING, 0, end) >= 0:
            self._send(c, PONG)  # maybe a false alarm: an unsolicited pong is allowed
        if c.close_pending or buf.find(b"\x88", max(0, end - CLOSE_TAIL), end) >= 0:
            tail = (c.tail if c.close_pending else b"") + bytes(buf[max(0, end - 256) : end])
            tail = tail[-256:]
            code = close_code_at_end(tail)
            if code is not None:
                self._closed_by_server(c, code)
                return
            c.tail = tail
            c.close_pending = tail.find(b"\x88", max(0, len(tail) - CLOSE_TAIL)) >= 0

    def _read_sampled(self, c: Conn) -> None:
        try:
            data = c.sock.recv(CHUNK)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(c, errno.errorcode.get(exc.errno or 0, "error").lower())
            return
        if not data:
            self._lost(c, "eof")
            return
        if self.in_window:
            self.check_fast += data.count(b"q")
        self._parse(c, data, time.time_ns() // 1000)

    def _parse(self, c: Conn, data: bytes, now_us: int) -> None:
        """Walk whole frames: latency and sequence checks on every tick of this connection."""
        rbuf = c.rbuf
        rbuf += data
        size = len(rbuf)
        pos = 0
        while size - pos >= 2:
            b0, b1 = rbuf[pos], rbuf[pos + 1]
            n, h = b1 & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, h = int.from_bytes(rbuf[pos + 2 : pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, h = int.from_bytes(rbuf[pos + 2 : pos + 10], "big"), 10
            if size - pos < h + n:
                break
            payload = bytes(rbuf[pos + h : pos + h + n])
            pos += h + n
            op = b0 & 0x0F
            if op == 1:
                self._on_text(c, payload, now_us)
            elif op == 8:
                del rbuf[:pos]
                self._closed_by_server(c, int.from_bytes(payload[:2], "big") if n >= 2 else 1005)
                return
            elif op == 9:
                self._send(c, bytes([0x8A, 0x80 | n]) + ZERO_MASK + payload)
        del rbuf[:pos]

    def _on_text(self, c: Conn, payload: bytes, now_us: int) -> None:
        self.frames += 1
        self.exact_frames += 1
        msg = orjson.loads(payload)
        kind = msg.get("type")
        if kind == "ticks" or kind == "snapshot":
            ticks = msg["ticks"]
            c.ticks += len(ticks)
            self.ticks[c.group] += len(ticks)
            if self.in_window:
                self.check_exact += len(ticks)
            lastq = c.lastq
            if kind == "snapshot":
                for tick in ticks:
                    lastq[tick["s"]] = tick["q"]
                return
            if c.mode == "all":
                self.checked += len(ticks)
                for tick in ticks:
                    s, q = tick["s"], tick["q"]
                    prev = lastq.get(s)
                    if prev is None:
                        lastq[s] = q
                        continue
                    d = q - prev
                    if d == 1:
                        lastq[s] = q
                    elif d > 1:
                        self.gaps += d - 1
                        self.gap_events += 1
                        lastq[s] = q
                    elif d == 0:
                        self.dups += 1
                    else:
                        self.reorders += 1
            if self.in_window:
                append, field = self.latency.append, self.args.latency_field
                for tick in ticks:
                    append(now_us - tick[field])
        elif kind == "heartbeat":
            self.heartbeats += 1
        elif kind == "error":
            self.error_frames += 1

    def _send(self, c: Conn, frame: bytes) -> None:
        # A full send buffer loses the reply; the read side tells the rest.
        with contextlib.suppress(OSError):
            c.sock.send(frame)  # type: ignore[union-attr]

    def _record_close(self, c: Conn, what: str) -> None:
        closes = self.closes[c.group]
        closes[what] = closes.get(what, 0) + 1
        c.outcome = what
        c.closed_at = time.monotonic() - self.window_start if self.in_window else None

    def _closed_by_server(self, c: Conn, code: int) -> None:
        self._record_close(c, str(code))
        self._send(c, close_frame(code))
        self._drop(c)

    def _lost(self, c: Conn, reason: str) -> None:
        """EOF or error without a close frame read (or with one at the very end)."""
        code = close_code_at_end(c.tail) if c.close_pending else None
        self._record_close(c, str(code) if code is not None else reason)
        self._drop(c)

    # -- the loop -----------------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        """Handshakes and sampled connections: served as soon as data arrives."""
        conns = self.conns
        for fd, _ in self.ep.poll(timeout, 4096):
            c = conns.get(fd)
            if c is None:
                continue
            state = c.state
            if state == OPEN:
                self._read_sampled(c)
            elif state == CONNECTING:
                self._on_connected(c)
            elif state == HANDSHAKE:
                self._on_handshake(c)

    def bulk_pass(self) -> None:
        """Counted connections: one read each of whatever piled up since the last pass.

        A read costs ~10 us here whatever its size (loopback TCP work is charged to the
        reader), so reading every ``--bulk-interval`` instead of on every frame is what
        keeps the load generator off its ceiling. Sampled connections are served every
        32 reads, so a long pass adds little to their latency.
        """
        conns = self.conns
        for k, (fd, _) in enumerate(self.bulk.poll(0, len(conns) + 1)):
            c = conns.get(fd)
            if c is not None and c.state == OPEN:
                self._read_fast(c)
            if k & 31 == 31:
                self.poll(0)
        self.next_bulk = time.monotonic() + self.bulk_interval

    def serve_until(self, deadline: float) -> None:
        now = time.monotonic()
        while now < deadline:
            if now >= self.next_bulk:
                self.bulk_pass()
                now = time.monotonic()
            self.poll(max(0.0, min(deadline, self.next_bulk) - now))
            now = time.monotonic()

    def run_for(self, seconds: float, tick: float = 0.0, on_tick: Any = None) -> None:
        """Serve every socket for ``seconds``; call ``on_tick()`` every ``tick`` seconds.
        Ends with a bulk pass, so counts are fresh when the caller reads them."""
        now = time.monotonic()
        end = now + seconds
        next_tick = now + tick if tick else end + 1
        while now < end:
            self.serve_until(min(end, next_tick))
            now = time.monotonic()
            if now >= next_tick:
                on_tick()
                next_tick += tick
        self.bulk_pass()

    def ramp(self, conns: list[Conn], rcvbuf: int = 0, mss: int = 0) -> dict[str, Any]:
        """Open connections with at most ``--ramp-concurrency`` handshakes in flight, so
        a listen backlog of 128 never overflows into SYN retransmits.

        A saturated server can take minutes to accept everyone; after ``--ramp-budget``
        seconds the ramp ends with whoever is connected (the rest count as failed).
        """
        limit, timeout = self.args.ramp_concurrency, self.args.connect_timeout
        t0 = time.monotonic()
        budget_end = t0 + self.args.ramp_budget
        deadline = t0 + timeout
        it = iter(conns)
        done_opening = False
        while True:
            while not done_opening and self.pending < limit:
                c = next(it, None)
                if c is None:
                    done_opening = True
                    break
                self.open(c, rcvbuf, mss)
                deadline = time.monotonic() + timeout  # progress pushes the deadline
            now = time.monotonic()
            if done_opening and self.pending == 0:
                break
            if now > deadline or now > budget_end:
                break
            if now >= self.next_bulk:
                self.bulk_pass()
            self.poll(max(0.0, min(0.05, self.next_bulk - time.monotonic())))
        for c in conns:
            if c.sock is not None and c.state in (CONNECTING, HANDSHAKE):
                self._fail_connect(c, "timeout")
        never = sum(1 for c in conns if c.sock is None and c.state == CONNECTING)
        if never:
            self.connect_errors["not attempted (ramp budget)"] = never
        ok = sum(1 for c in conns if c.state in (OPEN, STALLED))
        return {"planned": len(conns), "connected": ok, "seconds": time.monotonic() - t0}

    # -- measuring ----------------------------------------------------------------------

    def server_cpu(self) -> float | None:
        return procfs.tree_cpu_seconds(self.server_pid) if self.server_pid else None

    def server_rss(self) -> int | None:
        return procfs.rss_kb(self.server_pid) if self.server_pid else None


def tcp_state(sock: socket.socket) -> str:
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except OSError:
        return "unknown"
    return TCP_STATES.get(info[0], str(info[0]))


def latency_stats(samples: array) -> dict[str, float | int | None]:
    if not samples:
        return {"n": 0, "p50": None, "p99": None, "p999": None, "max": None, "mean": None}
    import numpy as np

    a = np.frombuffer(samples, dtype=np.int64)
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {
        "n": len(a),
        "p50": float(p50),
        "p99": float(p99),
        "p999": float(p999),
        "max": int(a.max()),
        "mean": float(a.mean()),
    }


def cpu_now() -> float:
    t = os.times()
    return t.user + t.system


def drain_stalled(lg: LoadGen, slow: list[Conn], per_conn_s: float = 0.3) -> None:
    """Read what each stalled connection was sent: a close frame at the end of it, a
    reset, an EOF, or data still flowing (it is open)."""
    for c in slow:
        if c.sock is None:
            continue
        state = tcp_state(c.sock)
        tail = b""
        outcome = "open" if state == "established" else state
        c.sock.setblocking(True)
        c.sock.settimeout(0.05)
        end = time.monotonic() + per_conn_s
        while time.monotonic() < end:
            try:
                data = c.sock.recv(CHUNK)
            except TimeoutError:
                break  # quiet: whatever state said
            except OSError as exc:
                code = close_code_at_end(tail)
                outcome = str(code) if code is not None else errno.errorcode.get(exc.errno or 0)
                break
            if not data:
                code = close_code_at_end(tail)
                outcome = str(code) if code is not None else "eof"
                break
            tail = (tail + data)[-256:]
        c.outcome = str(outcome).lower()
        lg.closes[SLOW][c.outcome] = lg.closes[SLOW].get(c.outcome, 0) + 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=1000, help="healthy connections")
    p.add_argument("--symbols-per-conn", type=int, default=10, help="0 or >= universe: '*'")
    p.add_argument("--symbol-names", required=True, help="the server's symbols, comma-separated")
    p.add_argument("--mode", default="all", choices=("all", "conflate"))
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    p.add_argument(
        "--sample-every", type=int, default=0, help="parse 1 conn in K (0: auto, -1: none)"
    )
    p.add_argument(
        "--latency-field",
        default="t",
        help="the tick's time (Unix us) latency counts from: t (the bus stamped it), or et"
        " (a publisher's send time: publish -> subscriber)",
    )
    p.add_argument("--slow", type=int, default=0, help="connections that stop reading")
    p.add_argument("--slow-symbols", default="*", help="what they subscribe to")
    p.add_argument("--slow-mode", default="all", choices=("all", "conflate"))
    p.add_argument("--slow-rcvbuf", type=int, default=4096, help="their SO_RCVBUF")
    p.add_argument("--bulk-interval", type=float, default=0.1, help="seconds between counted reads")
    p.add_argument(
        "--slow-mss",
        type=int,
        default=1448,
        help="their TCP_MAXSEG: with loopback's 64 KiB MSS the server's kernel would "
        "absorb ~4 MB per stalled socket, which a real network path does not (0: off)",
    )
    p.add_argument("--ramp-budget", type=float, default=40.0, help="max seconds to connect")
    p.add_argument("--ramp-concurrency", type=int, default=200, help="handshakes in flight")
    p.add_argument("--connect-timeout", type=float, default=15.0, help="per handshake")
    p.add_argument("--server-pid", type=int, default=None, help="sample its CPU and RSS")
    p.add_argument("--server-core", type=int, help="the server's core: its busy time too")
    p.add_argument("--own-core", type=int, help="this process's core: its busy time too")
    p.add_argument("--rss-every", type=float, default=1.0, help="RSS sampling period (s)")
    args = p.parse_args(argv)

    gc.disable()  # no collector pauses inside the measurement; nothing here makes cycles
    universe = args.symbol_names.split(",")
    sample_every = args.sample_every or max(1, min(50, args.conns // 20))
    healthy = [
        Conn(i, syms, HEALTHY, args.mode, sample_every > 0 and i % sample_every == 0)
        for i, syms in enumerate(plan(args.conns, args.symbols_per_conn, universe))
    ]
    slow_syms = args.slow_symbols.split(",")
    slow = [Conn(i, slow_syms, SLOW, args.slow_mode, False) for i in range(args.slow)]
    per_tick = sum(1.0 if c.symbols == ["*"] else len(c.symbols) / len(universe) for c in healthy)

    lg = LoadGen(args)
    out: dict[str, Any] = {"deliveries_per_tick": round(per_tick, 6), "sampled_conns": 0}
    server: dict[str, Any] = {"pid": args.server_pid, "rss_kb_idle": lg.server_rss()}
    cpu_run0, wall_run0 = cpu_now(), time.monotonic()

    log(f"connecting {len(healthy)} connections to :{args.port}")
    out["connect"] = lg.ramp(healthy)
    out["connect"]["errors"] = dict(lg.connect_errors)
    log(
        f"{out['connect']['connected']}/{len(healthy)} connected in "
        f"{out['connect']['seconds']:.1f}s; warming up {args.warmup:g}s"
    )
    out["sampled_conns"] = sum(1 for c in healthy if c.sampled and c.state == OPEN)
    lg.run_for(args.warmup)

    # -- the measured window --------------------------------------------------------------
    rss_samples: list[tuple[float, int | None]] = []
    slow_states: dict[int, list[str]] = {}
    lg.bulk_pass()  # counts fresh at both edges of the window
    lg.in_window = True
    lg.window_start = t0 = time.monotonic()
    ticks0, frames0 = list(lg.ticks), lg.frames
    cpu0, scpu0 = cpu_now(), lg.server_cpu()
    cores0 = {role: procfs.core_jiffies(n) for role, n in lg.cores.items()}
    server["rss_kb_start"] = lg.server_rss()
    rss_samples.append((0.0, server["rss_kb_start"]))
    if slow:
        log(f"opening {len(slow)} connections that stop reading")
        out["slow_connect"] = lg.ramp(slow, args.slow_rcvbuf, args.slow_mss)

    def sample() -> None:
        rss_samples.append((round(time.monotonic() - t0, 2), lg.server_rss()))
        for c in slow:
            if c.sock is not None:
                slow_states.setdefault(c.idx, []).append(tcp_state(c.sock))

    remaining = args.duration - (time.monotonic() - t0)
    lg.run_for(max(0.0, remaining), args.rss_every, sample)
    t1 = time.monotonic()
    cpu1, scpu1 = cpu_now(), lg.server_cpu()
    cores1 = {role: procfs.core_jiffies(n) for role, n in lg.cores.items()}
    lg.in_window = False
    window = t1 - t0
    server["rss_kb_end"] = lg.server_rss()
    rss_samples.append((round(window, 2), server["rss_kb_end"]))
    log(f"window done ({window:.1f}s)")

    out["window_s"] = window
    out["delivered"] = {g: lg.ticks[i] - ticks0[i] for i, g in enumerate(GROUPS)}
    out["frames"] = lg.frames - frames0
    out["latency_us"] = latency_stats(lg.latency)
    out["order"] = {
        "checked": lg.checked,
        "gaps": lg.gaps,
        "gap_events": lg.gap_events,
        "dups": lg.dups,
        "reorders": lg.reorders,
    }
    out["count_check"] = {"parsed": lg.check_exact, "fast": lg.check_fast}
    out["heartbeats"] = lg.heartbeats
    out["error_frames"] = lg.error_frames
    out["loadgen_cpu"] = {"window": (cpu1 - cpu0) / window if window else None}
    if scpu0 is not None and scpu1 is not None:
        server["cpu_s"] = scpu1 - scpu0
        server["cpu_frac"] = (scpu1 - scpu0) / window if window else None
    server["rss_kb_samples"] = rss_samples
    out["server"] = server
    out["cores"] = {}
    for role in lg.cores:
        a, b = cores0[role], cores1[role]
        if a and b and b[2] > a[2]:
            total = b[2] - a[2]
            out["cores"][role] = {"busy": (b[0] - a[0]) / total, "steal": (b[1] - a[1]) / total}
    out["open_at_end"] = sum(1 for c in healthy if c.state == OPEN)

    if slow:
        # How each stalled connection ended: first what TCP said during the window, then
        # what reading its backlog now shows (a close frame, a reset, or still open).
        first_closed: dict[int, float] = {}
        for idx, states in slow_states.items():
            for k, st in enumerate(states):
                if st != "established":
                    first_closed[idx] = (k + 1) * args.rss_every
                    break
        drain_stalled(lg, slow)
        out["slow"] = [
            {
                "outcome": c.outcome,
                "tcp_not_established_after_s": first_closed.get(c.idx),
            }
            for c in slow
        ]
    out["closes"] = {g: lg.closes[i] for i, g in enumerate(GROUPS)}
    out["loadgen_cpu"]["run"] = (cpu_now() - cpu_run0) / (time.monotonic() - wall_run0)

    for c in [*healthy, *slow]:
        if c.sock is not None:
            c.sock.close()
    sys.stdout.write(orjson.dumps(out).decode() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
