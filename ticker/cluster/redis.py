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

Parts: ``Outbox`` (out) and ``Inbox`` (in) hold the state and decisions, pure and
unit-tested; ``RedisConfig`` and ``RedisStats`` need no Redis client; this module is the
link: connecting, the handshake, the three tasks of a session, and reconnecting.

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
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ticker.cluster.book_wire import BookHost
from ticker.cluster.broker import RestartClients
from ticker.cluster.config import RedisConfig, redacted
from ticker.cluster.continuity import Continuity
from ticker.cluster.inbox import Inbox
from ticker.cluster.metrics import RedisCollector
from ticker.cluster.outbox import ROUND_SCRIPT, Outbox
from ticker.cluster.sequencer import (
    SEQUENCE_SCRIPT,
    EpochMoved,
    Idempotency,
    Sequenced,
    sequence_call,
    sequenced,
    unavailable,
)
from ticker.cluster.stats import RedisStats
from ticker.cluster.status import StatusRelay
from ticker.cluster.wire import Keys, decode_tick, origin_prefix, valid_symbol
from ticker.core.backoff import Backoff
from ticker.core.bus import WILDCARD, Bus
from ticker.core.ticks import Tick, TickBatch, now_us

log = logging.getLogger("ticker.cluster")


async def until_first_ends(*coros: Coroutine[Any, Any, None]) -> None:
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


async def finish(task: asyncio.Task[None], grace_s: float = 2.0) -> bool:
    """Let a link's task send what is pending within ``grace_s``, then cancel it (again
    and again: see ``until_first_ends``, for at most a second); whether it is gone."""
    try:
        async with asyncio.timeout(grace_s):
            await asyncio.shield(task)
    except TimeoutError:
        for _ in range(20):
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=0.05)
            if done:
                return True
        return False
    return True


def link_client(config: RedisConfig) -> Redis:
    """A client for one session of a link: redis-py retries nothing, since reconnecting
    is the link's to do, with backoff."""
    return Redis.from_url(
        config.url,
        socket_connect_timeout=config.timeout,
        socket_timeout=config.timeout,
        retry=Retry(NoBackoff(), 0),
    )


async def write_rounds(
    ready: asyncio.Event,
    flush: Callable[[], Awaitable[None]],
    stopping: Callable[[], bool],
    empty: Callable[[], bool],
) -> None:
    """A link's writer: flush a round each time ``ready`` is set; once ``stopping``,
    flush without waiting until nothing is left (the feeds stopped first)."""
    while True:
        if not stopping():
            await ready.wait()
            ready.clear()
        await flush()
        if stopping() and empty():
            return


def _text(value: bytes | str) -> str:
    """A reply as text: bytes here (no ``decode_responses``), whatever the stubs allow."""
    return value if isinstance(value, str) else value.decode(errors="replace")


class RedisBroker:
    """A ``Broker`` that relays through Redis pub/sub, with a hash of last values."""

    name = "redis"

    def __init__(
        self, config: RedisConfig, *, origin: str | None = None, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self.keys = Keys(config.prefix, config.shards)
        self.origin = origin or secrets.token_hex(6)
        own = origin_prefix(self.origin)
        self.stats = RedisStats()
        self.continuity = Continuity()
        self._bus = Bus()
        self._restart_clients: RestartClients = lambda: None
        self._channels: dict[str, str] = {}
        self._out = Outbox(own, self._channel, config.max_pending_bytes, self.stats)
        self._in = Inbox(own, self._channel, self.stats, self.continuity)
        self._status = StatusRelay(self.keys, self.origin, self.stats)
        self._relaying = False
        self._publishing = False  # publishers may send batches through this node
        self._sequence: AsyncScript | None = None  # SEQUENCE_SCRIPT on the link, while up
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
        self._backoff = Backoff(config.backoff_initial, config.backoff_max, rng)

    # -- Broker -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """The Redis link is up: what ``/readyz`` asks of a node in a cluster."""
        return self.stats.link_up

    def take_publishes(self) -> RedisBroker:
        """Publishers' batches go to Redis, which numbers them (``__call__``); like an
        origin, the node then sets the cluster's epoch if Redis has none."""
        self._publishing = True
        return self

    async def __call__(self, batch: TickBatch, idempotency: Idempotency | None) -> Sequenced:
        """Publish a checked batch to the cluster in one script call (``sequencer.py``).

        Refused with 503 while the link is down: nothing is queued, the publisher retries.
        A call that failed on the way may still have been run: a retry with the same
        idempotency key is then answered, not published again.
        """
        script = self._sequence
        if script is None or not self.stats.link_up:
            raise unavailable("redis is unreachable: nothing was published; retry")
        call = sequence_call(
            self.keys,
            self._bus.epoch,
            batch,
            now_us(),
            self._channel,
            self.continuity.last,
            idempotency,
        )
        try:
            reply = await script(keys=call.keys, args=call.args)
            return sequenced(reply, call.symbols)
        except EpochMoved:
            self._refresh = True  # join the cluster's epoch, then publishers may retry
            self._work.set()
            raise unavailable("this node is joining the cluster's epoch: retry") from None
        except (RedisError, OSError) as exc:
            raise unavailable(
                f"redis did not answer ({type(exc).__name__}): the batch may or may not have"
                " been published; retry with the same Idempotency-Key or batch id"
            ) from None

    def bind_books(self, books: BookHost) -> None:
        """Books travel through their own relay, which the node starts
        (``book_relay.py``)."""

    @property
    def subscribed(self) -> frozenset[str]:
        """The tick channels this node follows now."""
        return frozenset(self._in.subscribed)

    async def start(
        self, bus: Bus, local_symbols: Iterable[str], restart_clients: RestartClients
    ) -> None:
        """Attach, and wait for the first connection attempt (at most ``timeout``): an
        origin first continues the cluster's ``q`` from the hash, then its feed starts."""
        self._bus = bus
        self._restart_clients = restart_clients
        self._out.declare(list(local_symbols))
        bus.on_publish = self._forward
        bus.on_interest = self._follow
        self._status.attach(bus.status)
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
        self._status.detach()
        self._stopping = True
        self._stop.set()
        self._outgoing_ready.set()
        if not await finish(task):
            log.warning("the redis relay did not stop within 3 s; leaving it")

    def health(self) -> dict[str, Any]:
        """The link's state for ``/readyz`` (URL redacted), down time included."""
        stats = self.stats
        link = "up" if stats.link_up else ("down" if self._ever_up else "connecting")
        detail: dict[str, Any] = {
            "link": link,
            "url": redacted(self.config.url),
            "epoch": self._bus.epoch,
            "channels": len(self._in.subscribed),
        }
        if self._down_since is not None:
            detail["down_for_s"] = round(time.monotonic() - self._down_since, 1)
        return {"redis": detail}

    def register(self, registry: CollectorRegistry) -> None:
        """The ``ticker_redis_*`` metrics, read from the relay's counters at scrape."""
        registry.register(
            RedisCollector(self.stats, self.continuity, lambda: len(self._in.subscribed))
        )

    async def exposition(self, local: Callable[[], bytes]) -> bytes:
        """A node is scraped by itself: each node of a cluster is a target of its own."""
        return local()

    # -- the bus's hooks (synchronous, inside a publish or a subscribe) -----------------

    def _channel(self, symbol: str) -> str:
        channel = self._channels.get(symbol)
        if channel is None:
            channel = self._channels[symbol] = self.keys.channel(symbol)
        return channel

    def _forward(
        self, segments: dict[str, bytes], counts: dict[str, int], lasts: dict[str, bytes]
    ) -> None:
        """A local batch: into the outbox (from the handshake on: queued, then sent once it
        is done); ticks relayed from elsewhere are not sent back out."""
        if self._relaying:
            return
        self._out.add(segments, counts, lasts, self._connected)
        if self._connected:
            self._outgoing_ready.set()

    def _follow(self, topic: str, wanted: bool) -> None:
        """A topic gained its first local subscriber (or lost its last)."""
        if topic == WILDCARD:
            self._in.follow_all(wanted)
        elif topic in self._out.local:
            return  # served by the local feed
        else:
            self._in.follow(topic, wanted)
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
            delay = self._backoff.delay()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()

    async def _session(self) -> None:
        config = self.config
        client = link_client(config)
        pubsub = client.pubsub()
        try:
            await client.ping()
            self._connected = True
            await self._handshake(client)
            await pubsub.subscribe(self.keys.control, self._status.channel)
            self._status.link_up()
            self._sequence = client.register_script(SEQUENCE_SCRIPT)
            self._link_up()
            self._work.set()  # subscribe what local clients want
            self._outgoing_ready.set()
            await until_first_ends(
                self._read(pubsub),
                self._write(client),
                self._maintain(client, pubsub),
                self._status.run(client),
            )
        finally:
            self._connected = False
            self._sequence = None
            if self._stopping:
                self.stats.link_up = False
            self._in.subscribed = set()  # a new link starts with no subscription
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
        self._backoff.reset()  # it worked: forget past failures
        self._first_attempt.set()

    def _link_lost(self, exc: BaseException | None) -> None:
        """One log line per outage (and per failure to connect at start), then debug."""
        why = f"{type(exc).__name__}: {exc}" if exc else "closed"
        self._out.drop_pending()
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
        keys, out = self.keys, self._out
        local = out.local
        if local or self._publishing:
            await client.set(keys.epoch, self._bus.epoch, nx=True)
        await self._read_epoch(client)
        if local:
            await self._continue_sequences(client)
            pipe = client.pipeline(transaction=False)
            pipe.sadd(keys.symbols, *local)
            pipe.sadd(keys.fed, *local)
            if out.latest:
                pipe.hset(keys.last, mapping=dict(out.latest.items()))
            pipe.publish(keys.control, b"hello")
            await pipe.execute()
            out.synced()
        await self._read_universe(client)

    async def _read_epoch(self, client: Redis) -> None:
        raw = await client.get(self.keys.epoch)
        if raw is None:
            return
        epoch = _text(raw)
        bus = self._bus
        if epoch == bus.epoch:
            return
        if self._out.latest:
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
            bus.forget(self._remote())
            self.continuity.reset()
            self._in.to_sync.update(self._in.subscribed)

    async def _continue_sequences(self, client: Redis) -> None:
        """Local symbols not published yet take their last cluster value, so ``q`` goes on."""
        out = self._out
        fresh = [s for s in out.local if s not in out.latest]
        if not fresh:
            return
        self._relay(await self._read_last(client, fresh))

    async def _read_last(self, client: Redis, symbols: list[str]) -> list[Tick]:
        """The latest tick of each of these symbols that the hash holds (valid ones)."""
        values = await client.hmget(self.keys.last, symbols)
        return [
            tick
            for symbol, value in zip(symbols, values, strict=True)
            if isinstance(value, bytes)
            and (tick := decode_tick(value)) is not None
            and tick["s"] == symbol
        ]

    async def _read_universe(self, client: Redis) -> None:
        bus = self._bus
        members = await client.smembers(self.keys.symbols)
        names = [_text(m) for m in members]
        new = [n for n in names if valid_symbol(n) and not bus.known(n)]
        if new:
            bus.add_symbols(new)
            self._work.set()

    # -- the three tasks of a link ------------------------------------------------------

    async def _write(self, client: Redis) -> None:
        await write_rounds(
            self._outgoing_ready,
            lambda: self._flush(client),
            lambda: self._stopping,
            lambda: self._out.empty,
        )

    async def _flush(self, client: Redis) -> None:
        out, keys = self._out, self.keys
        if out.empty:
            return
        taken = out.take()
        pipe = client.pipeline(transaction=False)
        if taken.undeclared:
            pipe.sadd(keys.symbols, *taken.undeclared)
            pipe.sadd(keys.fed, *taken.undeclared)
        if taken.script_args is not None:
            pipe.eval(ROUND_SCRIPT, 1, keys.last, *taken.script_args)
        if taken.undeclared:
            pipe.publish(keys.control, b"symbols")
        try:
            await pipe.execute()
        except BaseException:
            out.failed(taken)
            raise
        out.sent(taken)

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
            if channel == self._status.channel:
                self._status.pubsub(kind, message["data"])
            elif kind == "message":
                if channel == control:
                    self._refresh = True
                    self._work.set()
                else:
                    fresh, sync = self._in.receive(channel, message["data"])
                    if sync:
                        self._work.set()
                    self._relay(fresh)
            elif kind == "subscribe" and channel != control:
                self._in.confirmed(channel)
                self._work.set()

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
            inbox = self._in
            desired = inbox.desired(self.keys, self._remote)
            drop = inbox.subscribed - desired
            add = desired - inbox.subscribed
            if drop:
                inbox.subscribed -= drop
                self._unfollow(drop)  # now, not after the await: a subscribe may come between
                await pubsub.unsubscribe(*drop)
            if add:
                inbox.subscribed |= add
                await pubsub.subscribe(*add)
            if inbox.to_sync or inbox.to_heal:
                await self._sync(client, pubsub)

    def _remote(self) -> list[str]:
        """The symbols the bus knows that no local feed serves."""
        local = self._out.local
        return [s for s in self._bus.symbols() if s not in local]

    def _remote_on(self, channels: set[str]) -> list[str]:
        return [s for s in self._remote() if self._channel(s) in channels]

    def _unfollow(self, channels: set[str]) -> None:
        """No longer followed: their last values would go stale, so forget them."""
        symbols = self._remote_on(channels)
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
        channels, heal = self._in.take_sync()
        if channels:
            heal.update(self._remote_on(channels))
        symbols = sorted(heal)
        if not symbols:
            return
        ticks = await self._read_last(client, symbols)
        await self._catch_up(pubsub)
        subscribed = self._in.subscribed  # it may have changed while we waited
        fresh, _ = self.continuity.admit(t for t in ticks if self._channel(t["s"]) in subscribed)
        self.stats.ticks_from_hash += len(fresh)
        self._relay(fresh)
