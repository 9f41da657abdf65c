"""The cluster's closed bars in Redis, so a node that starts late serves a whole chart.

Every node with candles writes each bar it closes to a sorted set per series,
``PREFIX:bars:SYMBOL@INTERVAL`` (score: the bar's ``ts``; member: its 56 bytes), capped
at ``--candle-history`` bars. Any node may write: closed bars are the same on every node
(same q-ordered stream, same ``t``), and ``BARS_SCRIPT`` adds a bar only if its ``ts`` is
not there yet, so the first writer wins and a second write costs one ``ZCOUNT``. No lock,
no elected writer: the bars survive whichever nodes come and go.

A node that joins reads every series once at start (``load``, before it takes clients,
progress logged, bounded by ``LOAD_TIMEOUT_S``), and keeps the bars before its own first
whole bucket. The bucket it joined in (left out, it was partial) and the bars closed while
it was loading are read once more, ``GRACE_S`` after that bucket ended on its clock
(``Candles.dropped``). Redis down: bars closed meanwhile stay on this node only (logged
once); a node that fails to load serves a short chart rather than not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ticker.cluster.config import RedisConfig
from ticker.core.candles import BAR, BAR_BYTES, INTERVALS, Candles, Key

log = logging.getLogger("ticker.candles")

BARS_SCRIPT = """
local depth = tonumber(ARGV[1])
local a = 2
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[a])
  for j = 1, n do
    local ts = ARGV[a + 2 * j - 1]
    if redis.call('ZCOUNT', key, ts, ts) == 0 then
      redis.call('ZADD', key, ts, ARGV[a + 2 * j])
    end
  end
  a = a + 1 + 2 * n
  redis.call('ZREMRANGEBYRANK', key, 0, -depth - 1)
end
return a
"""
"""KEYS: series; ARGV: depth, then per series its bar count and (ts, bar) pairs."""

SERIES_PER_CALL = 256
"""Series written or read per round trip."""
MAX_PENDING = 100_000
"""Closed bars waiting to be written; past this (Redis too slow or away) they are dropped."""
LOAD_TIMEOUT_S = 10.0
"""A join waits at most this long for the bars; then it serves what it has."""
GRACE_S = 1.0
"""After its bucket ends, how long a peer may take to write its bar (a pass, a call)."""


def series_key(prefix: str, key: Key) -> str:
    """The sorted set of one (symbol, interval)."""
    return f"{prefix}:bars:{key[0]}@{key[1]}"


def parse_series(prefix: str, name: bytes) -> Key | None:
    """The (symbol, interval) of a sorted set's name; None for a name that is not one."""
    symbol, _, interval = name.decode(errors="replace")[len(prefix) + 6 :].rpartition("@")
    return (symbol, interval) if symbol and interval in INTERVALS else None


def decode_bars(members: list[bytes]) -> np.ndarray | None:
    """Bars as Redis gives them back (oldest first); None if one is not a bar."""
    if any(len(m) != BAR_BYTES for m in members):
        return None
    return np.frombuffer(b"".join(members), BAR).copy()


class CandleStore:
    """Writes this node's closed bars to Redis and fills its history from there."""

    def __init__(self, config: RedisConfig, candles: Candles) -> None:
        self.config = config
        self.candles = candles
        self.client = Redis.from_url(
            config.url,
            socket_connect_timeout=config.timeout,
            socket_timeout=config.timeout,
        )
        self._script = self.client.register_script(BARS_SCRIPT)
        self._pending: dict[Key, list[np.ndarray]] = {}
        self._pending_bars = 0
        self.dropped_bars = 0
        """Closed bars not written (Redis too slow or away): peers joining later miss them."""
        self._ended: dict[Key, float] = {}
        """When this node saw a left-out bucket end (monotonic s): read it ``GRACE_S`` on."""
        self._wake = asyncio.Event()
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    def keep(self, closed: list[tuple[Key, np.ndarray]]) -> None:
        """Queue closed bars for Redis (``CandleService.on_closed``)."""
        for key, rows in closed:
            if self._pending_bars + len(rows) > MAX_PENDING:
                self.dropped_bars += len(rows)
                continue
            self._pending.setdefault(key, []).append(rows)
            self._pending_bars += len(rows)
        self._wake.set()

    async def load(self) -> int:
        """Read every series' bars (at most ``depth`` each) into ``candles``; returns the
        bars taken. Bounded by ``LOAD_TIMEOUT_S``; a failure leaves a short chart."""
        started = time.monotonic()
        prefix = self.config.prefix
        taken = series = 0
        log.info("candles: reading the cluster's bars from redis")
        try:
            async with asyncio.timeout(LOAD_TIMEOUT_S):
                names = [n async for n in self.client.scan_iter(f"{prefix}:bars:*", 1000)]
                keys = [k for k in (parse_series(prefix, n) for n in names) if k is not None]
                for first in range(0, len(keys), SERIES_PER_CALL):
                    chunk = keys[first : first + SERIES_PER_CALL]
                    taken += await self._fill(chunk, None)
                    series += len(chunk)
                    log.info("candles: %d of %d series read", series, len(keys))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("candles: reading bars from redis failed (%r): a short chart", exc)
        log.info(
            "candles: %d bars of %d series from redis in %.1f s",
            taken,
            series,
            time.monotonic() - started,
        )
        return taken

    async def _fill(self, keys: list[Key], upto: dict[Key, int] | None) -> int:
        """Backfill these series from Redis: all their bars, or those up to a ``ts``."""
        depth = self.candles.depth
        prefix = self.config.prefix
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            name = series_key(prefix, key)
            if upto is None:
                pipe.zrange(name, -depth, -1)
            else:
                pipe.zrevrangebyscore(name, upto[key], "-inf", start=0, num=depth)
        taken = 0
        for key, members in zip(keys, await pipe.execute(), strict=True):
            rows = decode_bars(members if upto is None else members[::-1])
            if rows is None:
                log.warning("candles: %s in redis holds something else than bars", key)
                continue
            taken += self.candles.backfill(key, rows)
        return taken

    def start(self) -> None:
        """Start writing bars and filling the buckets this node joined in."""
        self._task = asyncio.create_task(self._run(), name="candle-store")

    async def stop(self) -> None:
        """Write what is pending (within the timeout), then close the link."""
        task, self._task = self._task, None
        if task is not None:
            while not task.done():  # repeated: redis-py can swallow a cancel (see redis.py)
                task.cancel()
                await asyncio.wait([task], timeout=0.05)
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self.config.timeout):
                    await self._write()
        await self.client.aclose()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._write()
                await self._fill_joined()
            except Exception as exc:  # Redis away (or a bug): log once, go on, retry
                if not self._failing:
                    log.warning(
                        "candles: writing bars to redis failed (%r): kept on this node",
                        exc,
                        exc_info=not isinstance(exc, RedisError | OSError | TimeoutError),
                    )
                self._failing = True
            else:
                if self._failing:
                    log.info("candles: writing bars to redis again")
                self._failing = False

    async def _write(self) -> None:
        """One call per ``SERIES_PER_CALL`` series with bars pending."""
        pending, self._pending = self._pending, {}
        unwritten, self._pending_bars = self._pending_bars, 0
        items = [(key, np.concatenate(parts)) for key, parts in pending.items()]
        prefix = self.config.prefix
        try:
            for first in range(0, len(items), SERIES_PER_CALL):
                chunk = items[first : first + SERIES_PER_CALL]
                args: list[int | bytes] = [self.candles.depth]
                for _, rows in chunk:
                    args.append(len(rows))
                    for ts, row in zip(rows["ts"].tolist(), rows, strict=True):
                        args += [ts, row.tobytes()]
                await self._script(keys=[series_key(prefix, k) for k, _ in chunk], args=args)
                unwritten -= sum(len(rows) for _, rows in chunk)
        finally:
            self.dropped_bars += unwritten

    async def _fill_joined(self) -> None:
        """The buckets this node left out, ``GRACE_S`` after it saw them end."""
        now = self.candles.stream_now()
        if now is None:
            return
        dropped, noticed = self.candles.dropped, self._ended
        clock = time.monotonic()
        for key, ts in dropped.items():
            if key not in noticed and ts + INTERVALS[key[1]] <= now:
                noticed[key] = clock
        keys = [k for k, at in noticed.items() if at + GRACE_S <= clock][:SERIES_PER_CALL]
        if keys:
            await self._fill(keys, {k: dropped[k] for k in keys})
            for key in keys:
                del dropped[key], noticed[key]
