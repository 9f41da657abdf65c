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
from ticker.core.symbols import symbol_problem

GROUP = "ticker.feeds"
EXCHANGES = ("coinbase", "binance", "kraken")
"""Live exchange feeds (``feeds/exchanges/``), built from ``--feed NAME:PRODUCTS``."""
BUILTIN_FEEDS = ("sim", "replay", "none", *EXCHANGES)
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


TAKES_FLAGS = {"sim": " (--symbols, --rate, --skew, --seed and --sim-books set it)", "none": ""}


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def installed_plugins() -> list[str]:
    """The names of the feeds installed distributions declare, sorted."""
    return sorted(_entry_points())


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
    if head in EXCHANGES and not rest:
        raise FeedPluginError(f"feed {head!r} needs its products: {head}:PRODUCT[,PRODUCT...]")
    if head in ("sim", "none") and rest:
        raise FeedPluginError(f"feed {head!r} takes no :ARGS, not {text!r}{TAKES_FLAGS[head]}")
    if head in BUILTIN_FEEDS or head in _entry_points():
        return FeedSpec(head, rest)
    plugins = installed_plugins()
    installed = (
        f", {', '.join(plugins)} (installed plugins)"
        if plugins
        else f" (no plugin is installed in the entry point group {GROUP})"
    )
    raise FeedPluginError(
        f"unknown feed {head!r}: use sim, replay:PATH[,PATH...], none,"
        f" coinbase|binance|kraken:PRODUCTS{installed}"
        " or package.module:factory[:ARGS]"
    )


def _why(exc: BaseException) -> str:
    """An exception as part of one line: an ImportError says enough, the rest their type."""
    text = " ".join(str(exc).split())
    return text if isinstance(exc, ImportError) else f"{type(exc).__name__}: {text}"


def _factory(spec: FeedSpec) -> Any:
    if ":" in spec.name:
        module_name, attr = spec.name.split(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # importing runs the plugin's code: a SyntaxError too
            raise FeedPluginError(
                f"feed {spec.name!r}: cannot import {module_name}: {_why(exc)}"
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
    except Exception as exc:  # loading imports the plugin's code
        raise FeedPluginError(
            f"feed {spec.name!r}: its entry point {found.value} does not load: {_why(exc)}"
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
        raise FeedPluginError(f"feed {spec}: {_why(exc)}") from None
    if not _is_feed(feed):
        raise FeedPluginError(
            f"feed {spec.name!r} returned {type(feed).__name__}, not a FeedAdapter"
            " (it needs name, symbols() and stream())"
        )
    _check_symbols(spec, feed)
    result: FeedAdapter = feed
    return result


def _check_symbols(spec: FeedSpec, feed: Any) -> None:
    """A plugin's universe is read before anything starts: a bad one is a startup error,
    not a stream of refused ticks (names follow the rule of ``ticker.core.symbols``)."""
    try:
        symbols = feed.symbols()
    except Exception as exc:
        raise FeedPluginError(f"feed {spec}: symbols() raised {_why(exc)}") from None
    if not isinstance(symbols, list):
        raise FeedPluginError(
            f"feed {spec}: symbols() returned {type(symbols).__name__}, not a list of names"
        )
    for symbol in symbols:
        if problem := symbol_problem(symbol):
            raise FeedPluginError(f"feed {spec}: symbols(): {problem}")


def check_names(feeds: Iterable[tuple[FeedSpec, FeedAdapter]]) -> None:
    """A feed's name labels its log lines, its metric series and its /readyz entry, so
    two feeds of one process may not share one."""
    first: dict[str, FeedSpec] = {}
    for spec, feed in feeds:
        other = first.setdefault(feed.name, spec)
        if other is not spec:
            raise FeedPluginError(
                f"--feed {other} and --feed {spec} both make a feed named {feed.name!r}"
                " (names label logs and metrics): give one of them all the symbols"
            )


MAX_NAMED = 5
"""Symbols a claimed-twice error lists before it counts the rest."""


def check_disjoint(feeds: Iterable[FeedAdapter]) -> None:
    """Two feeds may not claim one symbol: whose ticks would the clients see?"""
    owner: dict[str, FeedAdapter] = {}
    for feed in feeds:
        clashes: dict[str, list[str]] = {}
        for symbol in feed.symbols():
            other = owner.setdefault(symbol, feed)
            if other is not feed:
                clashes.setdefault(other.name, []).append(symbol)
        for name, symbols in clashes.items():
            listed = ", ".join(repr(s) for s in symbols[:MAX_NAMED])
            more = f" and {len(symbols) - MAX_NAMED} more" if len(symbols) > MAX_NAMED else ""
            which = f"symbol {listed} is" if len(symbols) == 1 else f"symbols {listed}{more} are"
            raise FeedPluginError(
                f"{which} claimed by two feeds, {name} and {feed.name}:"
                " give each feed its own symbols"
            )
