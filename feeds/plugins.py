"""Feeds from outside the package: ``--feed NAME[:ARGS]`` resolved to a ``FeedAdapter``.

NAME is a built-in feed, an entry point in the group ``ticker.feeds`` (what an installed
distribution declares), or an import path written with a dot, ``package.module:attr``.
Either way the plugin is a factory called with the ARGS text (``""`` when there is none)
that returns a ``FeedAdapter``. Every way this can go wrong (a missing module, a missing
attribute, a factory that raises or returns something else) is a ``FeedPluginError``
with one line that names the feed, which the CLI prints before exiting with status 2.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from feeds.base import FeedAdapter

GROUP = "ticker.feeds"
BUILTIN_FEEDS = ("sim", "replay", "none")
FeedFactory = Callable[[str], FeedAdapter]


class FeedPluginError(ValueError):
    """A feed that cannot be found or built; the message is the one line the user sees."""


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One ``--feed`` value, split: which feed, and the argument text it is given."""

    name: str
    """``sim``, ``replay``, ``none``, an entry point's name, or ``package.module:attr``."""
    args: str

    @property
    def builtin(self) -> bool:
        """Built-in feeds are built by the CLI from its own flags, not by a factory."""
        return self.name in BUILTIN_FEEDS

    def __str__(self) -> str:
        return f"{self.name}:{self.args}" if self.args else self.name


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def known_feeds() -> list[str]:
    """What ``--feed`` accepts by name: the built-ins, then the installed plugins."""
    return [*BUILTIN_FEEDS, *sorted(_entry_points())]


def parse_feed_spec(text: str) -> FeedSpec:
    """Splits and checks a ``--feed`` value without importing anything (argparse's type)."""
    head, _, rest = text.partition(":")
    if "." in head:
        attr, _, args = rest.partition(":")
        if not attr.isidentifier():
            raise FeedPluginError(f"feed {text!r}: an import path is package.module:factory[:ARGS]")
        return FeedSpec(f"{head}:{attr}", args)
    if head == "replay" and not rest:
        raise FeedPluginError("feed 'replay' needs its files: replay:PATH[,PATH...]")
    if head in BUILTIN_FEEDS or head in _entry_points():
        return FeedSpec(head, rest)
    raise FeedPluginError(
        f"unknown feed {head!r}: use one of {', '.join(known_feeds())},"
        " or package.module:factory[:ARGS]"
    )


def _factory(spec: FeedSpec) -> Any:
    if ":" in spec.name:
        module_name, attr = spec.name.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise FeedPluginError(
                f"feed {spec.name!r}: cannot import {module_name}: {exc}"
            ) from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise FeedPluginError(
                f"feed {spec.name!r}: {module_name} has no attribute {attr!r}"
            ) from None
    found = _entry_points().get(spec.name)
    if found is None:
        raise FeedPluginError(f"unknown feed {spec.name!r}: it is no longer installed")
    try:
        return found.load()
    except (ImportError, AttributeError) as exc:
        raise FeedPluginError(
            f"feed {spec.name!r}: its entry point {found.value} does not load: {exc}"
        ) from None


def _is_feed(obj: object) -> bool:
    return (
        isinstance(getattr(obj, "name", None), str)
        and callable(getattr(obj, "symbols", None))
        and callable(getattr(obj, "stream", None))
    )


def load_feed(spec: FeedSpec) -> FeedAdapter:
    """The plugin's ``FeedAdapter``, built from its ARGS text."""
    factory = _factory(spec)
    if not callable(factory):
        raise FeedPluginError(f"feed {spec.name!r}: {factory!r} is not callable")
    try:
        feed = factory(spec.args)
    except Exception as exc:  # user code: one line, whatever it raised
        raise FeedPluginError(f"feed {spec}: {type(exc).__name__}: {exc}") from None
    if not _is_feed(feed):
        raise FeedPluginError(
            f"feed {spec.name!r} returned {type(feed).__name__}, not a FeedAdapter"
            " (it needs name, symbols() and stream())"
        )
    result: FeedAdapter = feed
    return result


def check_disjoint(feeds: Iterable[FeedAdapter]) -> None:
    """Two feeds may not claim one symbol: whose ticks would the clients see?"""
    owner: dict[str, tuple[int, str]] = {}
    for index, feed in enumerate(feeds):
        for symbol in feed.symbols():
            other, name = owner.setdefault(symbol, (index, feed.name))
            if other != index:
                raise FeedPluginError(
                    f"symbol {symbol!r} is claimed by two feeds, {name} and {feed.name}:"
                    " give each feed its own symbols"
                )
