"""In: which channels a node follows, and what it makes of the messages on them.

Pure (no Redis client): the bus's interest hooks count, per channel, the remote symbols
local clients want; messages are decoded, checked against ``Continuity`` and turned into
the ticks to publish locally, and the channels and symbols to read from the hash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ticker.cluster.continuity import Continuity
from ticker.cluster.stats import RedisStats
from ticker.cluster.wire import BadMessage, Keys, decode_message, valid_tick
from ticker.core.ticks import Tick

log = logging.getLogger("ticker.cluster")


class Inbox:
    """The inbound half of the relay: interest, subscriptions, and what is left to sync."""

    __slots__ = (
        "_channel",
        "_interest",
        "_own",
        "_stats",
        "_wildcard",
        "continuity",
        "subscribed",
        "to_heal",
        "to_sync",
    )

    def __init__(
        self, own: bytes, channel: Callable[[str], str], stats: RedisStats, continuity: Continuity
    ) -> None:
        self._own = own
        self._channel = channel
        self._stats = stats
        self.continuity = continuity
        self._interest: dict[str, int] = {}  # channel -> remote symbols wanted on it
        self._wildcard = False
        self.subscribed: set[str] = set()
        """Tick channels subscribed on the link now (a new link starts with none)."""
        self.to_sync: set[str] = set()
        """Channels whose symbols to read from the hash."""
        self.to_heal: set[str] = set()
        """Symbols with a gap, to read from the hash."""

    def follow(self, topic: str, wanted: bool) -> None:
        """A remote topic gained its first local subscriber (or lost its last)."""
        channel = self._channel(topic)
        count = self._interest.get(channel, 0) + (1 if wanted else -1)
        if count > 0:
            self._interest[channel] = count
        else:
            self._interest.pop(channel, None)

    def follow_all(self, wanted: bool) -> None:
        """A local client subscribed to (or left) the wildcard: every remote channel."""
        self._wildcard = wanted

    def desired(self, keys: Keys, remote: Callable[[], Iterable[str]]) -> set[str]:
        """The channels to be subscribed to; ``remote`` lists the remote symbols known."""
        if self._wildcard:
            return keys.all_channels(list(remote()))
        return set(self._interest)

    def confirmed(self, channel: str) -> None:
        """A subscription is confirmed: from now on nothing published there is missed, so
        what the hash says is the baseline."""
        self.continuity.forget_channel(channel)
        self.to_sync.add(channel)

    def receive(self, channel: str, data: bytes) -> tuple[list[Tick], bool]:
        """A message: the ticks to publish locally, and whether the hash must be read."""
        if channel not in self.subscribed or data.startswith(self._own):
            return [], False  # no longer followed, or our own message coming back
        stats = self._stats
        stats.messages_received += 1
        try:
            origin, number, ticks = decode_message(data)
        except BadMessage as exc:
            stats.bad_messages += 1
            log.debug("skipped a message on %s: %s", channel, exc)
            return [], False
        sync = self.continuity.message(origin, channel, number)
        if sync:
            self.to_sync.add(channel)
        valid = [t for t in ticks if valid_tick(t)]
        if len(valid) < len(ticks):
            stats.bad_messages += 1
        stats.ticks_received += len(valid)
        fresh, gapped = self.continuity.admit(valid)
        if gapped:
            self.to_heal.update(gapped)
            sync = True
        return fresh, sync

    def take_sync(self) -> tuple[set[str], set[str]]:
        """The subscribed channels to re-read and the symbols to heal, now cleared."""
        channels, self.to_sync = self.to_sync & self.subscribed, set()
        heal, self.to_heal = self.to_heal, set()
        return channels, heal
