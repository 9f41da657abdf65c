"""Publish requests: decode the body, check every tick, hand the bus all of it or none.

Pure and synchronous: the HTTP and WebSocket publish handlers give it the bytes they
read and their limits, and get back a batch ready for ``Bus.publish`` or a
``PublishRefused`` carrying every problem found (at most ``MAX_PROBLEMS`` listed). No
tick of a refused request is published, so a publisher can fix and resend the whole
request without working out which part went through. Book items among the ticks are
checked by ``ticker/core/publish_books.py``, which uses these checks for the ticks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from math import isfinite
from operator import is_not, itemgetter, le
from typing import Any

import orjson

from ticker.core.symbols import symbol_problem
from ticker.core.ticks import TickBatch

JSON = "application/json"
NDJSON = "application/x-ndjson"
MAX_PROBLEMS = 100
MAX_EXACT_INT = 2**53
"""Beyond this an integer is not exact in a double (JavaScript clients read doubles)."""

TICK_FIELDS = "s, p and optionally b, a, v, et"


@dataclass(frozen=True, slots=True)
class PublishLimits:
    """Every bound a publisher meets; each is a ``ticker serve`` flag of the same name."""

    max_ticks: int = 10_000
    """Ticks in one request (``--max-publish-ticks``): more is 413."""
    max_bytes: int = 1 << 20
    """Bytes of one request body (``--max-publish-bytes``): more is 413."""
    ticks_per_s: float = 200_000.0
    """Ticks each publisher may publish per second, over a burst of one full request."""
    max_universe: int = 100_000
    """Symbols the node may know in all; a publish that would add more is refused."""
    idempotency_ttl_s: float = 600.0
    """How long an ``Idempotency-Key`` (or a batch id) is remembered."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a request; ``index`` is the tick's, None for the body itself."""

    index: int | None
    field: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        """The problem as the refusal lists it: only the keys that apply."""
        out: dict[str, Any] = {}
        if self.index is not None:
            out["index"] = self.index
        if self.field is not None:
            out["field"] = self.field
        out["message"] = self.message
        return out


@dataclass(slots=True)
class PublishRefused(Exception):
    """A request refused as a whole, with the HTTP status and code the handlers answer."""

    status: int
    code: str
    message: str
    problems: list[Problem] = field(default_factory=list)
    found: int = 0
    """How many problems there were in all (``problems`` keeps the first ``MAX_PROBLEMS``)."""
    symbols: list[str] = field(default_factory=list)
    """The symbols a ``not_entitled`` refusal is about."""
    retry_after_s: float | None = None
    """For ``rate_limited``: when the same request would be accepted."""

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        """The refusal body: ``error`` and ``message``, and the problems when there are any."""
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.symbols:
            out["symbols"] = self.symbols
        if self.problems:
            out["problems"] = [p.to_json() for p in self.problems]
            if self.found > len(self.problems):
                out["more_problems"] = self.found - len(self.problems)
        return out


class Problems:
    """Collects a request's problems, keeping the first ``MAX_PROBLEMS`` and counting the rest."""

    __slots__ = ("found", "kept")

    def __init__(self) -> None:
        self.kept: list[Problem] = []
        self.found = 0

    def add(self, index: int | None, name: str | None, message: str) -> None:
        """One more problem (kept while fewer than ``MAX_PROBLEMS`` are)."""
        self.found += 1
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append(Problem(index, name, message))


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_body(content_type: str | None, body: bytes, limits: PublishLimits) -> list[Any]:
    """The request's tick objects, still unchecked; refuses the envelope, size and type."""
    if len(body) > limits.max_bytes:
        raise PublishRefused(
            413,
            "too_large",
            f"the body is {len(body)} bytes, over the limit of {limits.max_bytes}"
            " (--max-publish-bytes)",
        )
    kind = media_type(content_type)
    if kind == JSON:
        items = _json_ticks(body)
    elif kind == NDJSON:
        items = _ndjson_ticks(body)
    else:
        raise PublishRefused(
            415,
            "unsupported_media_type",
            f"Content-Type {kind or '(none)'!r} is not accepted: send {JSON} or {NDJSON}",
        )
    if len(items) > limits.max_ticks:
        raise PublishRefused(
            413,
            "too_large",
            f"{len(items)} ticks in one request, over the limit of {limits.max_ticks}"
            " (--max-publish-ticks): split it",
        )
    return items


def _json_ticks(body: bytes) -> list[Any]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PublishRefused(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if type(obj) is not dict or type(obj.get("ticks")) is not list:
        raise PublishRefused(
            400, "bad_request", 'the body must be {"ticks": [tick or book item, ...]}'
        )
    extra = sorted(k for k in obj if k != "ticks")
    if extra:
        raise PublishRefused(
            400, "bad_request", f"unknown key(s) {', '.join(map(repr, extra))}: only 'ticks'"
        )
    ticks: list[Any] = obj["ticks"]
    return ticks


def _ndjson_ticks(body: bytes) -> list[Any]:
    items: list[Any] = []
    problems = Problems()
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            problems.add(len(items), None, f"line {number} is not valid JSON")
            items.append(None)  # keeps the indexes of the later lines right
    if problems.found:
        raise bad_request(problems)
    return items


def bad_request(problems: Problems) -> PublishRefused:
    """The refusal of a request with these problems: nothing of it is published."""
    return PublishRefused(
        400,
        "bad_request",
        f"{problems.found} problem(s); nothing was published",
        problems.kept,
        problems.found,
    )


_NUMBERS = frozenset({"p", "b", "a", "v"})


def number_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot be field ``name``; the types are exact, as JSON decodes them."""
    kind = type(value)
    if kind is float:
        if value - value != 0.0:  # type: ignore[operator]  # NaN and infinities only
            return "must be a finite number"
    elif kind is int:
        if not -MAX_EXACT_INT <= value <= MAX_EXACT_INT:  # type: ignore[operator]
            return "must be at most 2^53 in size"
    else:
        return "must be a number"  # booleans too: True is not a price
    if name == "v" and value < 0:  # type: ignore[operator]
        return "must not be negative"
    return None


def check_tick(index: int, item: object, problems: Problems) -> None:
    """Every problem of one tick, in one pass over its fields (the hot path of a publish)."""
    if type(item) is not dict:
        problems.add(index, None, "a tick (or a book item) must be a JSON object")
        return
    if "s" not in item:
        problems.add(index, "s", "missing: every tick needs a symbol")
    else:
        why = symbol_problem(item["s"])
        if why is not None:
            problems.add(index, "s", why)
    if "p" not in item:
        problems.add(index, "p", "missing: every tick needs a price")
    bid = ask = None
    for name, value in item.items():
        if name in _NUMBERS:
            why = number_problem(name, value)
            if why is not None:
                problems.add(index, name, why)
            elif name == "b":
                bid = value
            elif name == "a":
                ask = value
        elif name == "s":
            continue
        elif name == "et":
            if type(value) is not int or not 0 <= value <= MAX_EXACT_INT:
                problems.add(index, name, "must be the source's event time in Unix microseconds")
        elif name in ("q", "t"):
            problems.add(index, name, "is the server's to assign: leave it out")
        else:
            problems.add(index, str(name), f"unknown field: a tick has {TICK_FIELDS}")
    if bid is not None and ask is not None and bid > ask:
        problems.add(index, "b", f"the bid {bid} is above the ask {ask}")


_FIELDS = _NUMBERS | {"s", "et"}
"""Every field ``_check`` accepts: a tick with any other goes to it to be named."""
_NUMBER_TYPES = frozenset({float, int})
_ABSENT = object()
_present = partial(filter, partial(is_not, _ABSENT))
"""The values of a column that ticks have (an explicit null stays: it is a problem)."""


def _column(items: list[Any], name: str) -> list[Any]:
    return list(map(dict.get, items, repeat(name), repeat(_ABSENT)))


def _numbers_plainly_good(values: list[Any]) -> bool:
    """Finite, exact numbers (no booleans) and small enough to need no closer look."""
    return not values or (
        set(map(type, values)) <= _NUMBER_TYPES
        and all(map(isfinite, values))
        and max(map(abs, values)) <= MAX_EXACT_INT
    )


def plainly_good(items: list[Any]) -> bool:
    """True when every tick is certainly valid, found in passes over the batch that run
    in C (a publish's hot path: ~10x cheaper than a tick at a time); False sends the
    batch to the per-tick check, which finds and names every problem."""
    try:
        if set(map(type, items)) != {dict} or not all(map(_FIELDS.issuperset, items)):
            return False
        symbols = set(map(itemgetter("s"), items))
        if any(symbol_problem(symbol) is not None for symbol in symbols):
            return False
        if not _numbers_plainly_good(list(map(itemgetter("p"), items))):
            return False
        bids, asks = _column(items, "b"), _column(items, "a")
        sizes = list(_present(_column(items, "v")))
        if not (
            _numbers_plainly_good(list(_present(bids)))
            and _numbers_plainly_good(list(_present(asks)))
            and _numbers_plainly_good(sizes)
            and min(sizes, default=0) >= 0
        ):
            return False
        if _ABSENT in bids or _ABSENT in asks:
            pairs = [
                (b, a)
                for b, a in zip(bids, asks, strict=True)
                if b is not _ABSENT and a is not _ABSENT
            ]
            if not all(b <= a for b, a in pairs):
                return False
        elif not all(map(le, bids, asks)):
            return False
        times = list(_present(_column(items, "et")))
        return not times or (
            set(map(type, times)) == {int} and min(times) >= 0 and max(times) <= MAX_EXACT_INT
        )
    except (TypeError, KeyError, OverflowError):  # an unhashable symbol, a missing field...
        return False


def _every_problem(items: list[Any]) -> Problems:
    problems = Problems()
    for index, item in enumerate(items):
        check_tick(index, item, problems)
    return problems


def check_ticks(items: list[Any]) -> TickBatch:
    """Every item checked; the batch when all pass, else every problem, nothing kept."""
    if not plainly_good(items):
        problems = _every_problem(items)
        if problems.found:
            raise bad_request(problems)
    batch: TickBatch = items  # each item is a tick the bus may stamp
    return batch
