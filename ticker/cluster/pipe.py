"""Frames between the feed process and its workers (``ticker serve --workers N``).

Pure and synchronous (no sockets here), so it is unit-tested with plain calls. A frame is
a 4-byte length, a kind byte and a payload. The hot one is ``BATCH``: one published
batch as the feed process's bus built it, each symbol's segment of encoded ticks, its
last tick, its tick count and last ``q``, copied byte for byte, so a worker routes it
without decoding or encoding a tick (``Bus.forward(..., numbered=True)``). The others
are rare and small JSON: the hello, feed readiness, status changes, publishes and their
answers, scrapes, and the change sets of books (one per book per pass at most).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from enum import IntEnum
from typing import Any

import orjson

from ticker.core.mailbox import Delivery
from ticker.core.status import SymbolStatus, statuses_from_json

HEAD = struct.Struct("<IB")
"""Every frame: the length of kind and payload, then the kind."""
BATCH_HEAD = struct.Struct("<qqI")
"""A batch: its oldest and newest tick time (µs), its symbol count."""
RUN = struct.Struct("<HIIIq")
"""One symbol's run: the lengths of its name, segment and last tick (0: the segment is
the one tick), its tick count, its last ``q``."""
ASKED = struct.Struct("<I")
"""The request number at the head of a request or its answer."""


class Kind(IntEnum):
    """What a frame holds; the comment says who sends it."""

    HELLO = 1  # feed process: the epoch, the universe, feed readiness (JSON)
    BATCH = 2  # feed process: a published batch, as encoded by its bus
    FEEDS = 3  # feed process: the feeds' readiness changed (JSON)
    PUBLISH = 4  # worker: a checked batch a publisher sent it (request number, JSON)
    ACK = 5  # feed process: the q values it gave the batch, or the refusal (JSON)
    SCRAPE = 6  # feed process: render your metrics (request number)
    METRICS = 7  # worker: its metrics, in the text format (request number, text)
    GATHER = 8  # worker: the whole node's metrics, please (request number)
    GATHERED = 9  # feed process: the whole node's metrics (request number, text)
    STATUS = 10  # either: symbols' status changes, ``since`` kept (JSON)
    BOOK = 11  # feed process: a change set its books applied, numbered (``book_wire`` entry)


def status_frame(changes: dict[str, SymbolStatus]) -> bytes:
    """A ``STATUS`` frame: symbol -> status, reason, since."""
    return json_frame(Kind.STATUS, {s: st.to_json() for s, st in changes.items()})


def decode_status(payload: bytes) -> dict[str, SymbolStatus]:
    """The changes a ``STATUS`` frame holds; ``BadFrame`` if it holds something else."""
    try:
        return statuses_from_json(orjson.loads(payload))
    except ValueError as exc:
        raise BadFrame(f"bad status frame: {exc}") from None


class BadFrame(ValueError):
    """The other end sent something that is not a frame of this format (a bug: the link
    is dropped, and the worker restarted)."""


def frame(kind: Kind, payload: bytes = b"") -> bytes:
    """One frame, ready to write."""
    return HEAD.pack(len(payload) + 1, kind) + payload


def asked(kind: Kind, number: int, payload: bytes = b"") -> bytes:
    """A request or an answer: its number first, so the answer finds its caller."""
    return frame(kind, ASKED.pack(number) + payload)


def json_frame(kind: Kind, value: Any) -> bytes:
    """A rare frame's JSON payload."""
    return frame(kind, orjson.dumps(value))


def encode_batch(delivery: Delivery) -> bytes:
    """A ``BATCH`` frame: per batch and symbol, never per tick or per worker (the same
    bytes go to every worker)."""
    parts = [b"", BATCH_HEAD.pack(delivery.t, delivery.newest, len(delivery.segments))]
    latest, counts, last_q = delivery.latest, delivery.counts, delivery.last_q
    pack = RUN.pack
    for symbol, segment in delivery.segments.items():
        name = symbol.encode()
        last = latest[symbol]
        tail = b"" if last is segment else last
        parts += (pack(len(name), len(segment), len(tail), counts[symbol], last_q[symbol]), name)
        parts += (segment, tail)
    parts[0] = HEAD.pack(sum(map(len, parts)) + 1, Kind.BATCH)
    return b"".join(parts)


def decode_batch(payload: bytes) -> Delivery:
    """The ``Delivery`` a ``BATCH`` payload holds; ``BadFrame`` if it does not add up."""
    try:
        t, newest, n = BATCH_HEAD.unpack_from(payload)
        at = BATCH_HEAD.size
        segments: dict[str, bytes] = {}
        counts: dict[str, int] = {}
        latest: dict[str, bytes] = {}
        last_q: dict[str, int] = {}
        unpack, size = RUN.unpack_from, RUN.size
        for _ in range(n):
            name_len, seg_len, tail_len, count, q = unpack(payload, at)
            at += size
            symbol = str(payload[at : at + name_len], "utf-8")
            at += name_len
            segment = segments[symbol] = payload[at : at + seg_len]
            at += seg_len
            latest[symbol] = payload[at : at + tail_len] if tail_len else segment
            at += tail_len
            counts[symbol] = count
            last_q[symbol] = q
    except (struct.error, UnicodeDecodeError) as exc:
        raise BadFrame(f"bad batch frame: {exc}") from None
    if at != len(payload):
        raise BadFrame("bad batch frame: its length does not match its runs")
    return Delivery(segments, counts, latest, t, newest, last_q)


def split_asked(payload: bytes) -> tuple[int, bytes]:
    """(request number, the rest) of a request or an answer."""
    if len(payload) < ASKED.size:
        raise BadFrame("a request frame without its number")
    return ASKED.unpack_from(payload)[0], payload[ASKED.size :]


class FrameReader:
    """Cuts the bytes a link receives into frames, whatever the chunks (bounded: a frame
    over ``max_frame`` bytes is a ``BadFrame``, never buffered)."""

    __slots__ = ("_buffer", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[Kind, bytes]]:
        """The whole frames received so far, in order; a partial one waits for the rest."""
        buffer = self._buffer
        buffer += data
        at, end = 0, len(buffer)
        try:
            while end - at >= HEAD.size:
                length, kind = HEAD.unpack_from(buffer, at)
                if not 0 < length <= self.max_frame:
                    raise BadFrame(f"a frame of {length} bytes (at most {self.max_frame})")
                if end - at - 4 < length:
                    break
                try:
                    which = Kind(kind)
                except ValueError:
                    raise BadFrame(f"unknown frame kind {kind}") from None
                yield which, bytes(buffer[at + HEAD.size : at + 4 + length])
                at += 4 + length
        finally:
            del buffer[:at]
