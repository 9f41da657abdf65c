"""The topic bus: routes each published tick to the mailboxes of its subscribers.

Topics are symbols. A tick is encoded once, here, and the same bytes object goes to every
subscriber; the bus also keeps the last value of each symbol, the source of snapshots.
It is synchronous and knows nothing of sockets: a publish returns when every mailbox has
the tick, and nothing (no task, future or callback) is created per tick.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable

import orjson

from ticker.core.history import Ring, missed
from ticker.core.mailbox import Delivery, Subscriber
from ticker.core.status import StatusBoard
from ticker.core.ticks import MAX_SYMBOL_LENGTH, MicrosClock, Tick, TickBatch, now_us

WILDCARD = "*"

InterestHook = Callable[[str, bool], None]
"""Called with (topic, True) when a topic ("*" included) gains its first subscriber and
(topic, False) when it loses its last: a relay follows upstream only what is wanted."""

PublishTap = Callable[[dict[str, bytes], dict[str, int], dict[str, bytes]], None]
"""Called once per published batch with what the mailboxes get (each symbol's segment of
comma-joined ticks, its tick count, its last tick, all stamped and compact): a relay
forwards them without encoding again."""


def _compact(data: bytes) -> bytes:
    return memoryview(data).tobytes()


class Topic:
    """One symbol: its sequence counter, last encoded tick, history and subscribers."""

    __slots__ = ("last", "q", "ring", "subscribers", "symbol")

    def __init__(self, symbol: str, ring: Ring | None = None) -> None:
        self.symbol = symbol
        self.q = 0
        self.last: bytes | None = None
        self.ring = ring
        """The last ticks of the symbol (``--history``); None: no history kept."""
        self.subscribers: set[Subscriber] = set()


def new_epoch(clock: MicrosClock = now_us) -> str:
    """A stream id that differs across restarts: start time plus randomness."""
    return f"{clock() // 1_000_000:x}-{secrets.token_hex(4)}"


class Bus:
    """In-process pub/sub of ticks with a last-value cache.

    ``epoch`` names the stream: ``q`` counts up per symbol within an epoch and restarts only
    with a new one. ``history`` ticks of each symbol are kept for resume (0: none).
    """

    def __init__(
        self, *, clock: MicrosClock = now_us, epoch: str | None = None, history: int = 0
    ) -> None:
        if history < 0:
            raise ValueError("history must not be negative")
        self._clock = clock
        self.epoch = epoch or new_epoch(clock)
        self.history = history
        self._topics: dict[str, Topic] = {}
        self._wildcard: set[Subscriber] = set()
        self.published = 0
        """Ticks published since start (a counter for metrics and readiness)."""
        self.on_interest: InterestHook | None = None
        self.on_publish: PublishTap | None = None
        self.status = StatusBoard(clock)
        """Which symbols are not live, and why: sessions tell their clients."""

    # -- the universe -----------------------------------------------------------------

    def add_symbols(self, symbols: Iterable[str]) -> None:
        """Declare symbols a feed will publish, so clients can list and subscribe to them."""
        for symbol in symbols:
            self._topic(symbol)

    def symbols(self) -> list[str]:
        """Every symbol a feed declared, sorted: what ``list_symbols`` answers."""
        return sorted(self._topics)

    def known(self, symbol: str) -> bool:
        """Whether a feed declared the symbol: an unknown one is refused, not followed."""
        return symbol in self._topics

    def symbol_count(self) -> int:
        """How many symbols the universe holds (what ``--max-universe`` bounds)."""
        return len(self._topics)

    def _topic(self, symbol: str) -> Topic:
        topic = self._topics.get(symbol)
        if topic is None:
            if not symbol or len(symbol) > MAX_SYMBOL_LENGTH or symbol == WILDCARD:
                raise ValueError(f"invalid symbol {symbol!r}")
            ring = Ring(self.history) if self.history else None
            topic = self._topics[symbol] = Topic(symbol, ring)
        return topic

    # -- publish ----------------------------------------------------------------------

    def publish(self, batch: TickBatch) -> dict[str, int]:
        """Stamp, encode once and route a batch of ticks; returns each symbol's last q.

        Ticks keep ``q`` and ``t`` when they bring them and get them here otherwise (the
        dicts are completed in place). Each symbol's ticks are encoded together, as one
        segment of comma-joined ticks (one ``orjson.dumps`` per symbol, not per tick),
        and every mailbox that follows any of the batch's symbols is offered the batch
        once: routing costs a lookup per mailbox, plus a pass over the symbols per
        distinct subscription set, never work per tick and client. Per-symbol publish
        order holds; across symbols it need not.
        """
        if not batch:
            return {}
        now = self._clock()
        oldest, newest = now, now
        dumps = orjson.dumps
        topics = self._topics
        runs: dict[str, list[Tick]] = {}
        for tick in batch:
            run = runs.get(symbol := tick["s"])
            if run is None:
                runs[symbol] = [tick]
            else:
                run.append(tick)
        latest: dict[str, bytes] = {}
        firsts: dict[str, int] = {}  # the q of each symbol's first tick of the batch
        last_q: dict[str, int] = {}
        offered: set[Subscriber] = set(self._wildcard)
        for symbol, run in runs.items():
            topic = topics.get(symbol) or self._topic(symbol)
            q = topic.q
            for tick in run:
                if "q" in tick:
                    q = tick["q"]
                else:
                    q = tick["q"] = q + 1
                t = tick.setdefault("t", now)
                if t < oldest:
                    oldest = t
                elif t > newest:
                    newest = t
            topic.q = last_q[symbol] = q
            firsts[symbol] = run[0]["q"]  # the tick's own int: a ring keeps no second copy
            # What outlives this call (last values, segments in lagging queues) must be
            # compact: orjson's result sits in a ~4 KiB allocation whatever its length,
            # so what is kept is a copy of its exact size (slicing copies anyway).
            topic.last = latest[symbol] = _compact(dumps(run[-1]))
            offered |= topic.subscribers
        self.published += len(batch)
        tap = self.on_publish
        if not (offered or self.history or tap is not None):
            return last_q
        segments = {s: latest[s] if len(run) == 1 else dumps(run)[1:-1] for s, run in runs.items()}
        counts = {symbol: len(run) for symbol, run in runs.items()}
        if self.history:  # the rings keep the segments the mailboxes get
            for symbol, segment in segments.items():
                topic = topics[symbol]
                if (ring := topic.ring) is not None:
                    ring.add(firsts[symbol], topic.q, counts[symbol], segment)
        if tap is not None:
            tap(segments, counts, latest)
        if offered:
            delivery = Delivery(segments, counts, latest, oldest, newest, last_q)
            for mailbox in offered:
                mailbox.offer(delivery)
            delivery.release()  # a lagging client must keep only its own share alive
        return last_q

    def forward(self, delivery: Delivery, *, numbered: bool = False) -> None:
        """Route a batch another bus encoded and stamped (a delay line's): last values,
        then every subscriber of its symbols. ``numbered``: the other bus is this stream's
        numbering one (a worker's feed process): ``q`` and history follow it too, so
        snapshots and resume work here as they do there."""
        offered: set[Subscriber] = set(self._wildcard)
        last_q, counts, segments = delivery.last_q, delivery.counts, delivery.segments
        for symbol, last in delivery.latest.items():
            topic = self._topic(symbol)
            topic.last = last
            offered |= topic.subscribers
            if numbered:
                q = topic.q = last_q[symbol]
                if (ring := topic.ring) is not None:  # a run's q are consecutive at its bus
                    count = counts[symbol]
                    ring.add(q - count + 1, q, count, segments[symbol])
        for mailbox in offered:
            mailbox.offer(delivery)
        delivery.release()

    # -- subscriptions ----------------------------------------------------------------

    def subscribe(self, mailbox: Subscriber, symbols: Iterable[str]) -> None:
        """Route these topics ("*" for every symbol, present and future) to ``mailbox``.

        Take the snapshot right after, before returning to the loop: nothing can be
        published in between, so the first tick the mailbox gets of a symbol has
        q = snapshot q + 1.
        """
        symbols = list(symbols)
        named = [s for s in symbols if s != WILDCARD]
        hook = self.on_interest
        for symbol in named:
            subscribers = self._topic(symbol).subscribers
            if mailbox not in subscribers:
                subscribers.add(mailbox)
                if hook is not None and len(subscribers) == 1:
                    hook(symbol, True)
        if WILDCARD in symbols:
            if mailbox not in self._wildcard:
                self._wildcard.add(mailbox)
                if hook is not None and len(self._wildcard) == 1:
                    hook(WILDCARD, True)
            mailbox.follows = None
        elif mailbox.follows is not None:
            mailbox.follows = mailbox.follows.union(named)

    def snapshot(self, symbols: Iterable[str]) -> list[bytes]:
        """The last encoded tick of each of these symbols that has one."""
        topics = self._topics
        return [t.last for s in symbols if (t := topics.get(s)) is not None and t.last is not None]

    def missed(self, symbol: str, last_q: int) -> list[bytes] | None:
        """The ticks of ``symbol`` after ``last_q`` if the history still has every one of
        them, else None (see ``history.missed``). Call it where a snapshot would be taken:
        the next tick published is then the one after these."""
        topic = self._topics.get(symbol)
        if topic is None or topic.ring is None:
            return None
        return missed(topic.ring, last_q, topic.q)

    def catch_up(self) -> Delivery:
        """Everything this bus keeps, as one batch: each symbol's history joined into one
        run (without history, its last tick alone). A copy of this bus that forwards it
        (``numbered``) serves the same snapshots and resumes: a worker joining its feed
        process (``--workers``). One run costs the copy a cut on its first resumes, the
        only re-encoding, and may hold up to twice the depth until the run ages out."""
        segments: dict[str, bytes] = {}
        counts: dict[str, int] = {}
        latest: dict[str, bytes] = {}
        last_q: dict[str, int] = {}
        for symbol, topic in self._topics.items():
            if (last := topic.last) is None:
                continue
            ring = topic.ring
            if ring is None or not ring.ticks:
                segments[symbol], counts[symbol] = last, 1
            else:
                segments[symbol], counts[symbol] = b",".join(ring.segments), ring.ticks
            latest[symbol], last_q[symbol] = last, topic.q
        return Delivery(segments, counts, latest, 0, 0, last_q)

    def forget(self, symbols: Iterable[str]) -> None:
        """Drop the last values of these symbols: a relay that stops following them can
        no longer vouch for them, and a stale snapshot is worse than none."""
        topics = self._topics
        for symbol in symbols:
            if (topic := topics.get(symbol)) is not None:
                topic.last = None

    def unsubscribe(self, mailbox: Subscriber, symbols: Iterable[str]) -> None:
        """Stop routing these topics to ``mailbox``; the last to leave tells the relay."""
        symbols = list(symbols)
        named = [s for s in symbols if s != WILDCARD]
        hook = self.on_interest
        for symbol in named:
            if (topic := self._topics.get(symbol)) is not None and mailbox in topic.subscribers:
                topic.subscribers.discard(mailbox)
                if hook is not None and not topic.subscribers:
                    hook(symbol, False)
        if WILDCARD in symbols:
            if mailbox in self._wildcard:
                self._wildcard.discard(mailbox)
                if hook is not None and not self._wildcard:
                    hook(WILDCARD, False)
            # Rare (leaving "*"): what it still follows by name is what the topics say.
            mailbox.follows = frozenset(
                s for s, t in self._topics.items() if mailbox in t.subscribers
            )
        elif mailbox.follows is not None:
            mailbox.follows = mailbox.follows.difference(named)

    def subscriber_count(self) -> int:
        """Subscriptions across all topics, "*" included (for metrics)."""
        return len(self._wildcard) + sum(len(t.subscribers) for t in self._topics.values())

    def wildcard_count(self) -> int:
        """Mailboxes subscribed to "*" (for metrics)."""
        return len(self._wildcard)

    def followed_count(self) -> int:
        """Symbols that at least one mailbox follows by name (for metrics)."""
        return sum(1 for t in self._topics.values() if t.subscribers)
