"""Published ticks in a cluster: ``q`` assigned in Redis, one script call per batch.

Two nodes may take publishes for one symbol at the same moment, so no node can number
them itself. ``SEQUENCE_SCRIPT`` runs atomically in Redis: it checks the batch (the
cluster's epoch, symbols a feed serves, a reused idempotency key) before it writes
anything, then adds each symbol's tick count to its counter in one hash, stamps the
ticks, PUBLISHes each channel's share as one message and saves the latest ticks in the
last-values hash, all in the order Redis runs the calls. Every node, the one that took
the publish included, gets the ticks from the channel like any origin's: the same
(s, q, p), in q order, gap-free.

Pure (no Redis client): the node encodes each tick once, up to its ``q``
(``{"s":"AAPL","p":1.5,"q":``); the script appends the number and the batch's
``,"t":...}``, so the bytes are what the node's bus would have encoded itself. This
module builds the call and reads the reply; ``RedisBroker.publish`` sends it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ticker.cluster.wire import Keys, origin_prefix
from ticker.core.publish import PublishRefused
from ticker.core.publish_gate import key_reused
from ticker.core.ticks import TickBatch

PUBLISHED_ORIGIN = "publish"
"""The origin of every published message, whichever node took it: its message numbers
per channel come from Redis too, so they are gap-free across the cluster. (Origins of
feeds are random hex, never this.)"""

MAX_NAMED = 100
"""Symbols a ``fed_symbol`` refusal lists at most."""

SEQUENCE_SCRIPT = """
local epoch = redis.call('GET', KEYS[1])
if epoch and epoch ~= ARGV[1] then return {'epoch', epoch} end
local digest, idem = ARGV[2], ARGV[3]
if digest ~= '' then
  local kept = redis.call('GET', idem)
  if kept then
    local sep = string.find(kept, ':', 1, true)
    if string.sub(kept, 1, sep - 1) ~= digest then return {'reused'} end
    return {'replayed', string.sub(kept, sep + 1)}
  end
end
local nsym, nch = tonumber(ARGV[7]), tonumber(ARGV[8])
local first = 9 + nch
local fed, j = {'fed'}, first
for s = 1, nsym do
  if #fed <= MAX_NAMED and redis.call('SISMEMBER', KEYS[5], ARGV[j]) == 1 then
    fed[#fed + 1] = ARGV[j]
  end
  j = j + 4 + tonumber(ARGV[j + 2])
end
if #fed > 1 then return fed end
if not epoch then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('PUBLISH', KEYS[6], 'hello')
end
local suffix, parts, lasts, new = ARGV[5], {}, {}, 0
j = first
for s = 1, nsym do
  local sym, ch, n = ARGV[j], tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
  local floor = tonumber(ARGV[j + 3 + n])
  local q = redis.call('HINCRBY', KEYS[2], sym, n)
  if q == n and floor > 0 then q = redis.call('HINCRBY', KEYS[2], sym, floor) end
  local part = parts[ch]
  if not part then part = {}; parts[ch] = part end
  local tick
  for k = 1, n do
    tick = ARGV[j + 2 + k] .. string.format('%d', q - n + k) .. suffix
    part[#part + 1] = tick
  end
  redis.call('HSET', KEYS[3], sym, tick)
  new = new + redis.call('SADD', KEYS[4], sym)
  lasts[s] = string.format('%d', q)
  j = j + 4 + n
end
for ch = 1, nch do
  local channel = ARGV[8 + ch]
  local number = redis.call('HINCRBY', KEYS[7], channel, 1)
  redis.call('PUBLISH', channel,
    ARGV[6] .. string.format('%d', number) .. ',"k":[' .. table.concat(parts[ch], ',') .. ']}')
end
if new > 0 then redis.call('PUBLISH', KEYS[6], 'symbols') end
local qs = table.concat(lasts, ',')
if digest ~= '' then redis.call('SET', idem, digest .. ':' .. qs, 'PX', ARGV[4]) end
return {'ok', qs}
""".replace("MAX_NAMED", str(MAX_NAMED))
"""KEYS: epoch, counters, last values, universe, fed symbols, control, message numbers.
ARGV: the node's epoch, the body digest ('' without a key), the idempotency key, its TTL
in ms, the batch's suffix, the message prefix, the symbol and channel counts, the
channels, then per symbol: name, channel index, tick count, each tick's head and the
floor (the highest q the node has seen of it: where a counter Redis lost restarts)."""


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A publisher's retry key, remembered in Redis so that a retry on any node is answered."""

    who: str
    key: str
    digest: bytes
    ttl_s: float

    def redis_key(self, prefix: str) -> str:
        """Hashed: subjects and keys are any printable text, of any length up to the bounds."""
        scoped = hashlib.blake2b(f"{self.who}\0{self.key}".encode(), digest_size=16).hexdigest()
        return f"{prefix}:idem:{scoped}"


@dataclass(frozen=True, slots=True)
class Sequenced:
    """The cluster took the batch: each symbol's last q; ``replayed``: an earlier call did."""

    q: dict[str, int]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Call:
    """One script call: its keys and arguments, and the batch's symbols in their order."""

    keys: list[str]
    args: list[str | bytes | int]
    symbols: list[str]


def sequence_call(
    keys: Keys,
    epoch: str,
    batch: TickBatch,
    t: int,
    channel: Callable[[str], str],
    floor: Callable[[str], int],
    idempotency: Idempotency | None,
) -> Call:
    """The script's arguments for a checked batch: ticks grouped by symbol, in order."""
    heads: dict[str, list[bytes]] = {}
    dumps = orjson.dumps
    for tick in batch:
        run = heads.get(tick["s"])
        head = dumps(tick)[:-1] + b',"q":'
        if run is None:
            heads[tick["s"]] = [head]
        else:
            run.append(head)
    channels: dict[str, int] = {}
    records: list[str | bytes | int] = []
    for symbol, run in heads.items():
        index = channels.setdefault(channel(symbol), len(channels) + 1)
        records += (symbol, index, len(run), *run, floor(symbol))
    if idempotency is None:
        idem: list[str | bytes | int] = ["", "", 0]
    else:
        idem = [
            idempotency.digest.hex(),
            idempotency.redis_key(keys.prefix),
            max(1, round(idempotency.ttl_s * 1000)),
        ]
    args: list[str | bytes | int] = [
        epoch,
        *idem,
        b',"t":' + str(t).encode() + b"}",
        origin_prefix(PUBLISHED_ORIGIN) + b'"n":',
        len(heads),
        len(channels),
        *channels,
        *records,
    ]
    keys_ = [keys.epoch, keys.counters, keys.last, keys.symbols, keys.fed, keys.control]
    return Call([*keys_, keys.numbers], args, list(heads))


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


RETRY_AFTER_S = 1.0
"""What a publisher refused for a Redis outage is told to wait (``Retry-After``)."""


def unavailable(message: str) -> PublishRefused:
    """The cluster cannot take a batch now: 503, never queued; the publisher retries."""
    return PublishRefused(503, "cluster_unavailable", message, retry_after_s=RETRY_AFTER_S)


class EpochMoved(Exception):
    """Redis holds another epoch than the node's: the node must join it before publishing."""


def sequenced(reply: Any, symbols: list[str]) -> Sequenced:
    """What the script answered, or the refusal it means (``EpochMoved`` for the epoch)."""
    kind = _text(reply[0])
    if kind in ("ok", "replayed"):
        qs = [int(q) for q in _text(reply[1]).split(",")]
        return Sequenced(dict(zip(symbols, qs, strict=True)), replayed=kind == "replayed")
    if kind == "fed":
        named = [_text(s) for s in reply[1:]]
        raise PublishRefused(
            409,
            "fed_symbol",
            f"a feed of the cluster serves {', '.join(named)}: its q is that feed's to give,"
            " so it cannot be published",
            symbols=named,
        )
    if kind == "reused":
        raise key_reused("Idempotency-Key (or batch id)")
    if kind == "epoch":
        raise EpochMoved(_text(reply[1]))
    raise ValueError(f"unexpected reply from the sequence script: {reply!r}")
