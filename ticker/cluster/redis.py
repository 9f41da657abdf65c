"""The Redis relay: local ticks go out to the cluster; the ticks local clients want come in.

Out (an origin: a node with a local feed, or ``ticker feed``): the bus hands over each
batch already stamped and encoded; one writer task sends what accumulated as one command
per round (``ROUND_SCRIPT``): a PUBLISH per channel (that channel's ticks of the round, in
one message), then one HSET of the symbols' latest ticks, the cluster-wide snapshots.
Under load rounds grow, so the cost per tick falls; nothing is created per tick.

In (every node): the bus says when a topic gains its first subscriber or loses its last;
the relay subscribes to a channel while a local client wants a symbol on it and reads the
channel's symbols from the hash once the subscription is confirmed, so what it serves is
never older than the hash. Ticks keep the origin's ``q`` and ``t``; a jump in ``q`` or in
an origin's message numbers is a gap: counted, marked on the next tick (``g``) and healed
by re-reading the hash.

Faults: every Redis error ends the link; local feeds keep serving local clients; the relay
logs once, counts it, reconnects with capped jittered backoff, re-subscribes and re-syncs
(the hash from the origin's latest ticks, then the followed symbols from the hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ticker.cluster.broker import RestartClients
from ticker.cluster.continuity import Continuity
from ticker.cluster.wire import (
    DEFAULT_SHARDS,
    BadMessage,
    Keys,
    decode_message,
    decode_tick,
    encode_message,
    origin_prefix,
    valid_symbol,
    valid_tick,
)
from ticker.core.bus import WILDCARD, Bus
from ticker.core.ticks import Tick

log = logging.getLogger("ticker.cluster")

ROUND_SCRIPT = """
local n = tonumber(ARGV[1])
for i = 1, n do
  redis.call('PUBLISH', ARGV[2 * i], ARGV[2 * i + 1])
end
for i = 2 * n + 2, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return n
"""
"""One round of an origin: a PUBLISH per channel (ARGV: n, then channel and message
pairs), then an HSET of the latest ticks (the field and value pairs after them, in
chunks that Lua's unpack takes). One command instead of one per channel: the Redis
client's cost per command, not Redis's, dominated the publisher's CPU (about 45 µs per
command). Atomic too: the hash is never ahead of, or behind, what was published."""

JITTER = 0.2
"""Each reconnect delay is shortened by up to this fraction at random (as for feeds)."""


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str
    shards: int = DEFAULT_SHARDS
    """Channels symbols are hashed onto; 0 = one channel per symbol (see docs/scaling.md)."""
    prefix: str = "ticker"
    """Namespace of every key and channel: several clusters can share one Redis."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    timeout: float = 5.0
    """Connecting, and any command (a Redis that stops answering is a lost link)."""
    ping_interval: float = 5.0
    """An idle link is checked this often."""
    max_pending_bytes: int = 8 * 1024 * 1024
    """Ticks waiting to be published; past this (Redis too slow) they are dropped."""


@dataclass(slots=True)
class RedisStats:
    """Plain counters for metrics and ``/readyz``; gaps are in ``Continuity``."""

    link_up: bool = False
    link_losses: int = 0
    reconnects: int = 0
    messages_published: int = 0
    ticks_published: int = 0
    ticks_dropped: int = 0
    """Local ticks never published: the link was down or Redis too slow."""
    messages_received: int = 0
    ticks_received: int = 0
    ticks_from_hash: int = 0
    """Ticks taken from the last-values hash (newly followed symbols and healed gaps)."""
    bad_messages: int = 0


def redacted(url: str) -> str:
    """The URL without its password, for logs and ``/readyz``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def _until_first_ends(*coros: Coroutine[Any, Any, None]) -> None:
    """Run these together; when one returns or fails, cancel the others (and re-raise).

    The cancel is repeated until they are gone: redis-py (8.1) can swallow a cancel that
    lands inside a command, and the task would then go on as if nothing happened.
    """
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        pending = set(tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.05)
    for task in done:
        task.result()


class RedisBroker:
    """A ``Broker`` that relays through Redis pub/sub, with a hash of last values."""

    name = "redis"

    def __init__(
        self, config: RedisConfig, *, origin: str | None = None, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self.keys = Keys(config.prefix, config.shards)
        self.origin = origin or secrets.token_hex(6)
        self._own = origin_prefix(self.origin)
        self.stats = RedisStats()
        self.continuity = Continuity()
        self._rng = rng or random.Random()
        self._bus = Bus()
        self._restart_clients: RestartClients = lambda: None
        self._channels: dict[str, str] = {}
        # Out: what this process originates.
        self._local: set[str] = set()
        self._latest: dict[str, bytes] = {}  # symbol -> latest local tick (re-synced on return)
        self._unsaved: dict[str, bytes] = {}  # latest local ticks not in the hash yet
        self._undeclared: set[str] = set()  # local symbols not in the universe set yet
        self._outgoing: dict[str, list[bytes]] = {}  # channel -> segments to publish
        self._outgoing_bytes = 0
        self._outgoing_ticks = 0
        self._numbers: dict[str, int] = {}  # channel -> number of our last message on it
        self._relaying = False
        # In: what local clients want.
        self._interest: dict[str, int] = {}  # channel -> remote symbols wanted on it
        self._wildcard = False
        self._subscribed: set[str] = set()  # tick channels subscribed on the link now
        self._to_sync: set[str] = set()  # channels whose symbols to read from the hash
        self._to_heal: set[str] = set()  # symbols with a gap, to read from the hash
        self._refresh = False  # an origin announced itself: re-read epoch and universe
        # Lifecycle.
        self._outgoing_ready = asyncio.Event()
        self._work = asyncio.Event()
        self._stop = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._connected = False
        self._ever_up = False
        self._warned = False
        self._epoch_warned = False
        self._down_since: float | None = None
        self._backoff = config.backoff_initial

    # -- Broker -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.stats.link_up

    @property
    def subscribed(self) -> frozenset[str]:
        """The tick channels this node follows now."""
        return frozenset(self._subscribed)

    async def start(
        self, bus: Bus, local_symbols: Iterable[str], restart_clients: RestartClients
    ) -> None:
        """Attach, and wait for the first connection attempt (at most ``timeout``): an
        origin first continues the cluster's ``q`` from the hash, then its feed starts."""
        self._bus = bus
        self._restart_clients = restart_clients
        self._local.update(local_symbols)
        self._undeclared.update(self._local)
        bus.on_publish = self._forward
        bus.on_interest = self._follow
        self._task = asyncio.create_task(self._run(), name="redis")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.timeout + 1.0):
                await self._first_attempt.wait()

    async def stop(self) -> None:
        """Publish what is pending (within 2 s), then close the link."""
        task, self._task = self._task, None
        if task is None:
            return
        self._bus.on_publish = None
        self._bus.on_interest = None
        self._stopping = True
        self._stop.set()
        self._outgoing_ready.set()
        try:
            async with asyncio.timeout(2.0):
                await asyncio.shield(task)
        except TimeoutError:
            for _ in range(20):  # repeated: a cancel can be swallowed (see _until_first_ends)
                task.cancel()
                done, _ = await asyncio.wait([task], timeout=0.05)
                if done:
                    break
            else:
                log.warning("the redis relay did not stop within 3 s; leaving it")

    def health(self) -> dict[str, Any]:
        stats = self.stats
        link = "up" if stats.link_up else ("down" if self._ever_up else "connecting")
        detail: dict[str, Any] = {
            "link": link,
            "url": redacted(self.config.url),
            "epoch": self._bus.epoch,
            "channels": len(self._subscribed),
        }
        if self._down_since is not None:
            detail["down_for_s"] = round(time.monotonic() - self._down_since, 1)
        return {"redis": detail}

    def register(self, registry: CollectorRegistry) -> None:
        from ticker.cluster.metrics import RedisCollector

        registry.register(RedisCollector(self))

    # -- the bus's hooks (synchronous, inside a publish or a subscribe) -----------------

    def _channel(self, symbol: str) -> str:
        channel = self._channels.get(symbol)
        if channel is None:
            channel = self._channels[symbol] = self.keys.channel(symbol)
        return channel

    def _forward(
        self, segments: dict[str, bytes], counts: dict[str, int], lasts: dict[str, bytes]
    ) -> None:
        """A local batch (as the bus built it for the mailboxes): queue each channel's
        share and each symbol's latest tick."""
        if self._relaying:
            return
        local, latest, unsaved, outgoing = self._local, self._latest, self._unsaved, self._outgoing
        up = self._connected  # from the handshake on: queued, then sent once it is done
        added = ticks = 0
        for symbol, segment in segments.items():
            if symbol not in local:
                local.add(symbol)
                self._undeclared.add(symbol)
            last = latest[symbol] = lasts[symbol]
            if not up:
                self.stats.ticks_dropped += counts[symbol]
                continue
            unsaved[symbol] = last
            channel = self._channel(symbol)
            pending = outgoing.get(channel)
            if pending is None:
                outgoing[channel] = [segment]
            else:
                pending.append(segment)
            added += len(segment)
            ticks += counts[symbol]
        if not up:
            return
        self._outgoing_bytes += added
        self._outgoing_ticks += ticks
        if self._outgoing_bytes > self.config.max_pending_bytes:
            log.warning(
                "redis is not keeping up: %d ticks dropped (receivers heal from the hash)",
                self._outgoing_ticks,
            )
            self.stats.ticks_dropped += self._outgoing_ticks
            outgoing.clear()
            self._outgoing_bytes = self._outgoing_ticks = 0
        self._outgoing_ready.set()

    def _follow(self, topic: str, wanted: bool) -> None:
        """A topic gained its first local subscriber (or lost its last)."""
        if topic == WILDCARD:
            self._wildcard = wanted
        elif topic in self._local:
            return  # served by the local feed
        else:
            channel = self._channel(topic)
            count = self._interest.get(channel, 0) + (1 if wanted else -1)
            if count > 0:
                self._interest[channel] = count
            else:
                self._interest.pop(channel, None)
        self._work.set()

    # -- the link ---------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._session()
            except (RedisError, OSError) as exc:
                self._link_lost(exc)
            except Exception as exc:  # a bug must not end the relay: log it, start over
                log.error("redis relay failed unexpectedly", exc_info=True)
                self._link_lost(exc)
            finally:
                self._first_attempt.set()
            if self._stopping:
                return
            if self.stats.link_up:
                self._link_lost(None)
            delay = self._backoff * (1.0 - JITTER * self._rng.random())
            self._backoff = min(self._backoff * 2.0, self.config.backoff_max)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()

    async def _session(self) -> None:
        config = self.config
        client = Redis.from_url(
            config.url,
            socket_connect_timeout=config.timeout,
            socket_timeout=config.timeout,
            retry=Retry(NoBackoff(), 0),  # reconnecting is ours to do, with backoff
        )
        pubsub = client.pubsub()
        try:
            await client.ping()
            self._connected = True
            await self._handshake(client)
            await pubsub.subscribe(self.keys.control)
            self._link_up()
            self._work.set()  # subscribe what local clients want
            self._outgoing_ready.set()
            await _until_first_ends(
                self._read(pubsub), self._write(client), self._maintain(client, pubsub)
            )
        finally:
            self._connected = False
            if self._stopping:
                self.stats.link_up = False
            self._subscribed = set()  # a new link starts with no subscription
            with contextlib.suppress(Exception):
                await pubsub.aclose()
            with contextlib.suppress(Exception):
                await client.aclose()

    def _link_up(self) -> None:
        if self._down_since is not None:
            self.stats.reconnects += 1
            log.warning(
                "redis link restored after %.1f s: resubscribing and re-syncing snapshots",
                time.monotonic() - self._down_since,
            )
        else:
            log.info(
                "redis link up: %s, epoch %s, origin %s",
                redacted(self.config.url),
                self._bus.epoch,
                self.origin,
            )
        self.stats.link_up = True
        self._ever_up = True
        self._warned = False
        self._down_since = None
        self._backoff = self.config.backoff_initial  # it worked: forget past failures
        self._first_attempt.set()

    def _link_lost(self, exc: BaseException | None) -> None:
        """One log line per outage (and per failure to connect at start), then debug."""
        why = f"{type(exc).__name__}: {exc}" if exc else "closed"
        self.stats.ticks_dropped += self._outgoing_ticks
        self._outgoing.clear()
        self._outgoing_bytes = self._outgoing_ticks = 0
        if self.stats.link_up:
            self.stats.link_up = False
            self.stats.link_losses += 1
            self._down_since = time.monotonic()
            self._warned = True
            log.error(
                "redis link lost (%s): local feeds keep serving local clients; "
                "reconnecting with backoff up to %g s",
                why,
                self.config.backoff_max,
            )
        elif not self._warned:
            self._warned = True
            log.error(
                "redis at %s unreachable (%s); retrying with backoff up to %g s",
                redacted(self.config.url),
                why,
                self.config.backoff_max,
            )
        else:
            log.debug("redis still unreachable: %s", why)

    async def _handshake(self, client: Redis) -> None:
        """Join the cluster's epoch; an origin continues ``q`` from the hash and re-syncs it."""
        keys, local = self.keys, self._local
        if local:
            await client.set(keys.epoch, self._bus.epoch, nx=True)
        await self._read_epoch(client)
        if local:
            await self._continue_sequences(client)
            pipe = client.pipeline(transaction=False)
            pipe.sadd(keys.symbols, *local)
            if self._latest:
                pipe.hset(keys.last, mapping=self._latest)
            pipe.publish(keys.control, b"hello")
            await pipe.execute()
            self._undeclared.clear()
            self._unsaved.clear()
        await self._read_universe(client)

    async def _read_epoch(self, client: Redis) -> None:
        raw = await client.get(self.keys.epoch)
        if raw is None:
            return
        epoch = raw.decode(errors="replace")
        bus = self._bus
        if epoch == bus.epoch:
            return
        if self._latest:
            if self._epoch_warned:
                return
            self._epoch_warned = True
            log.warning(
                "the cluster's epoch is %s but this process already published under %s "
                "(it started while Redis was away): its q values do not continue the "
                "cluster's; restart it to rejoin",
                epoch,
                bus.epoch,
            )
            return
        log.info("joining the cluster's epoch %s", epoch)
        bus.epoch = epoch
        # Clients welcomed under the old epoch (an edge node that started before any
        # origin, or a stream restarted under them) reconnect to learn the new one.
        self._restart_clients()
        if self.stats.ticks_received or self.stats.ticks_from_hash:
            remote = [s for s in bus.symbols() if s not in self._local]
            bus.forget(remote)
            self.continuity.reset()
            self._to_sync.update(self._subscribed)

    async def _continue_sequences(self, client: Redis) -> None:
        """Local symbols not published yet take their last cluster value, so ``q`` goes on."""
        fresh = [s for s in self._local if s not in self._latest]
        if not fresh:
            return
        self._relay(await self._read_last(client, fresh))

    async def _read_last(self, client: Redis, symbols: list[str]) -> list[Tick]:
        """The latest tick of each of these symbols that the hash holds (valid ones)."""
        values = await client.hmget(self.keys.last, symbols)
        return [
            tick
            for symbol, value in zip(symbols, values, strict=True)
            if value is not None
            and (tick := decode_tick(value)) is not None
            and tick["s"] == symbol
        ]

    async def _read_universe(self, client: Redis) -> None:
        bus = self._bus
        members = await client.smembers(self.keys.symbols)
        names = [m.decode(errors="replace") for m in members]
        new = [n for n in names if valid_symbol(n) and not bus.known(n)]
        if new:
            bus.add_symbols(new)
            self._work.set()

    # -- the three tasks of a link ------------------------------------------------------

    async def _write(self, client: Redis) -> None:
        """Flush rounds; when stopping, flush until nothing is left (feeds stopped first)."""
        while True:
            if not self._stopping:
                await self._outgoing_ready.wait()
                self._outgoing_ready.clear()
            await self._flush(client)
            if self._stopping and not (self._outgoing or self._unsaved or self._undeclared):
                return

    async def _flush(self, client: Redis) -> None:
        keys = self.keys
        outgoing, self._outgoing = self._outgoing, {}
        ticks, self._outgoing_ticks = self._outgoing_ticks, 0
        self._outgoing_bytes = 0
        unsaved, self._unsaved = self._unsaved, {}
        undeclared, self._undeclared = self._undeclared, set()
        if not (outgoing or unsaved or undeclared):
            return
        pipe = client.pipeline(transaction=False)
        if undeclared:
            pipe.sadd(keys.symbols, *undeclared)
        if outgoing or unsaved:
            args: list[str | bytes | int] = [len(outgoing)]
            numbers = self._numbers
            for channel, segments in outgoing.items():
                number = numbers[channel] = numbers.get(channel, 0) + 1
                args += (channel, encode_message(self._own, number, segments))
            for symbol, last in unsaved.items():
                args += (symbol, last)
            pipe.eval(ROUND_SCRIPT, 1, keys.last, *args)
        if undeclared:
            pipe.publish(keys.control, b"symbols")
        try:
            await pipe.execute()
        except BaseException:
            self._undeclared |= undeclared
            self.stats.ticks_dropped += ticks
            raise
        self.stats.messages_published += len(outgoing)
        self.stats.ticks_published += ticks

    async def _read(self, pubsub: PubSub) -> None:
        control = self.keys.control
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is None:
                continue
            kind = message["type"]
            if kind == "pong":
                self._caught_up.set()
                continue
            channel = message["channel"].decode(errors="replace")
            if kind == "message":
                if channel == control:
                    self._refresh = True
                    self._work.set()
                else:
                    self._receive(channel, message["data"])
            elif kind == "subscribe" and channel != control:
                # Confirmed: from now on nothing published there is missed, so what the
                # hash says is the baseline.
                self.continuity.forget_channel(channel)
                self._to_sync.add(channel)
                self._work.set()

    def _receive(self, channel: str, data: bytes) -> None:
        if channel not in self._subscribed or data.startswith(self._own):
            return  # no longer followed, or our own message coming back
        stats = self.stats
        stats.messages_received += 1
        try:
            origin, number, ticks = decode_message(data)
        except BadMessage as exc:
            stats.bad_messages += 1
            log.debug("skipped a message on %s: %s", channel, exc)
            return
        if self.continuity.message(origin, channel, number):
            self._to_sync.add(channel)
            self._work.set()
        valid = [t for t in ticks if valid_tick(t)]
        if len(valid) < len(ticks):
            stats.bad_messages += 1
        stats.ticks_received += len(valid)
        fresh, gapped = self.continuity.admit(valid)
        if gapped:
            self._to_heal.update(gapped)
            self._work.set()
        self._relay(fresh)

    def _relay(self, ticks: list[Tick]) -> None:
        """Publish ticks from elsewhere into the local bus (not forwarded back out)."""
        if not ticks:
            return
        self._relaying = True
        try:
            self._bus.publish(ticks)
        finally:
            self._relaying = False

    async def _maintain(self, client: Redis, pubsub: PubSub) -> None:
        """Follow the channels local clients need; sync from the hash; ping an idle link."""
        while True:
            try:
                # asyncio.timeout rather than wait_for, which in 3.11 can lose a cancel
                # that lands just as the event is set.
                async with asyncio.timeout(self.config.ping_interval):
                    await self._work.wait()
            except TimeoutError:
                await client.ping()
                continue
            self._work.clear()
            if self._refresh:
                self._refresh = False
                await self._read_epoch(client)
                await self._read_universe(client)
            desired = self._desired()
            drop = self._subscribed - desired
            add = desired - self._subscribed
            if drop:
                self._subscribed -= drop
                self._unfollow(drop)  # now, not after the await: a subscribe may come between
                await pubsub.unsubscribe(*drop)
            if add:
                self._subscribed |= add
                await pubsub.subscribe(*add)
            if self._to_sync or self._to_heal:
                await self._sync(client, pubsub)

    def _desired(self) -> set[str]:
        if self._wildcard:
            local = self._local
            return self.keys.all_channels([s for s in self._bus.symbols() if s not in local])
        return set(self._interest)

    def _remote_symbols(self, channels: set[str]) -> list[str]:
        local = self._local
        return [s for s in self._bus.symbols() if s not in local and self._channel(s) in channels]

    def _unfollow(self, channels: set[str]) -> None:
        """No longer followed: their last values would go stale, so forget them."""
        symbols = self._remote_symbols(channels)
        self._bus.forget(symbols)
        self.continuity.forget(symbols)
        for channel in channels:
            self.continuity.forget_channel(channel)

    async def _catch_up(self, pubsub: PubSub) -> None:
        """Wait until every message published before now has been read.

        A PING on the pub/sub connection is answered after the messages already queued
        for it. Without this, a value read from the hash could overtake messages still in
        flight: those would then look old and be dropped, and the value would look like a
        gap.
        """
        self._caught_up.clear()
        await pubsub.ping()
        async with asyncio.timeout(self.config.timeout):
            await self._caught_up.wait()

    async def _sync(self, client: Redis, pubsub: PubSub) -> None:
        """Read from the hash the symbols of newly confirmed channels and those with a gap;
        apply what is newer than the stream once the stream has caught up."""
        channels, self._to_sync = self._to_sync & self._subscribed, set()
        heal, self._to_heal = self._to_heal, set()
        symbols = sorted(heal.union(self._remote_symbols(channels)) if channels else heal)
        if not symbols:
            return
        ticks = await self._read_last(client, symbols)
        await self._catch_up(pubsub)
        subscribed = self._subscribed  # it may have changed while we waited
        fresh, _ = self.continuity.admit(t for t in ticks if self._channel(t["s"]) in subscribed)
        self.stats.ticks_from_hash += len(fresh)
        self._relay(fresh)
