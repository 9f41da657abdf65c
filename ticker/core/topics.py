"""Derived topics: ``BASE@SUFFIX``, a stream the server computes from a symbol's ticks.

Candles (``AAPL@1m``) are the first kind, order books (``AAPL@book10``) the next; each
kind is a ``TopicKind`` that says which suffixes it takes, and ``TopicKinds`` parses a
topic name against all of them. The base symbol decides everything a symbol decides
(entitlement, whether it exists), so a token for ``AAPL`` may see ``AAPL@1m``. The
symbol rule (``symbols.py``) forbids ``@`` in a symbol, so the split is unambiguous.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

SEPARATOR = "@"


class TopicError(ValueError):
    """A topic name no kind takes; the message lists what would have been valid."""


@dataclass(frozen=True, slots=True)
class DerivedTopic:
    """One parsed derived topic: ``name`` is what the client wrote (``AAPL@1m``)."""

    name: str
    base: str
    kind: str
    """The ``TopicKind`` that took the suffix (``candles``)."""
    suffix: str


@dataclass(frozen=True, slots=True)
class TopicKind:
    """A family of derived topics: its name, its suffix grammar and how to say it."""

    name: str
    accepts: Callable[[str], bool]
    """Whether a suffix belongs to this kind (``1m`` for candles)."""
    valid: str
    """The valid suffixes as an error message lists them (``1s 5s ... 1d``)."""


def base_of(topic: str) -> str:
    """The symbol a topic is about: itself for a plain symbol, ``AAPL`` for ``AAPL@1m``."""
    return topic.partition(SEPARATOR)[0]


def is_derived(topic: str) -> bool:
    """Whether a topic name is ``BASE@SUFFIX`` rather than a symbol."""
    return SEPARATOR in topic


class TopicKinds:
    """The registry of derived kinds a server serves; parses names against all of them."""

    __slots__ = ("_kinds",)

    def __init__(self, kinds: Iterable[TopicKind]) -> None:
        self._kinds = {kind.name: kind for kind in kinds}

    def names(self) -> list[str]:
        """The kinds registered, in registration order."""
        return list(self._kinds)

    def parse(self, topic: str) -> DerivedTopic:
        """The derived topic ``topic`` names, or ``TopicError`` saying what is valid."""
        base, _, suffix = topic.partition(SEPARATOR)
        if not base or not suffix:
            raise TopicError(f"{topic[:40]!r} is not a topic: write SYMBOL{SEPARATOR}SUFFIX")
        for kind in self._kinds.values():
            if kind.accepts(suffix):
                return DerivedTopic(topic, base, kind.name, suffix)
        valid = "; ".join(f"{k.name}: {k.valid}" for k in self._kinds.values()) or "none"
        raise TopicError(f"unknown suffix {suffix[:16]!r} in {topic[:40]!r}; valid: {valid}")
