"""Idempotent publishing: a retried request is answered from memory, not published again.

A publisher that timed out cannot know whether its request went through; with an
``Idempotency-Key`` (HTTP) or a batch ``id`` (WebSocket) it resends and the server
answers what it answered the first time. Keys are scoped by the publisher's subject
(two publishers may use the same key), remembered for ``ttl_s`` and bounded twice: by
count and by the bytes of the answers kept. Past either bound the oldest keys go
first, so the guarantee holds for at least the last ``max_keys`` requests within the
TTL; docs/publishing.md says so.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
"""Monotonic seconds (injectable for tests)."""


@dataclass(frozen=True, slots=True)
class Remembered:
    """The first answer given to a key, and a digest of the body it answered."""

    digest: bytes
    status: int
    answer: bytes
    expires: float


class KeyReused(Exception):
    """The key was used before with another body: a client bug, never a retry."""


def digest(body: bytes) -> bytes:
    """What identifies a body: equal bodies, equal digests (a retry must resend the same bytes)."""
    return hashlib.blake2b(body, digest_size=16).digest()


class IdempotencyCache:
    """Answers kept per (subject, key) for ``ttl_s``, oldest evicted first past the bounds."""

    def __init__(
        self,
        clock: Clock,
        *,
        ttl_s: float = 600.0,
        max_keys: int = 100_000,
        max_bytes: int = 64 << 20,
    ) -> None:
        self._clock = clock
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evicted = 0
        """Keys dropped by a bound before their TTL ran out (a metric: raise the bounds)."""
        self._kept: OrderedDict[tuple[str, str], Remembered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._kept)

    def lookup(self, subject: str, key: str, body_digest: bytes) -> Remembered | None:
        """The first answer for a retry, None for a new key; ``KeyReused`` for another body."""
        self._expire()
        found = self._kept.get((subject, key))
        if found is None:
            return None
        if found.digest != body_digest:
            raise KeyReused(key)
        return found

    def remember(
        self, subject: str, key: str, body_digest: bytes, status: int, answer: bytes
    ) -> None:
        """Keeps the answer just given, so the next retry of ``key`` gets it too."""
        entry = Remembered(body_digest, status, answer, self._clock() + self.ttl_s)
        old = self._kept.pop((subject, key), None)
        if old is not None:
            self.bytes -= len(old.answer)
        self._kept[(subject, key)] = entry
        self.bytes += len(answer)
        while self._kept and (len(self._kept) > self.max_keys or self.bytes > self.max_bytes):
            self._drop_oldest()
            self.evicted += 1

    def _expire(self) -> None:
        now = self._clock()
        kept = self._kept
        while kept and next(iter(kept.values())).expires <= now:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _, entry = self._kept.popitem(last=False)
        self.bytes -= len(entry.answer)
