"""Feed plugins: found by entry point (real distribution metadata) or import path."""

from __future__ import annotations

import asyncio
import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from feeds.plugins import (
    FeedPluginError,
    FeedSpec,
    check_disjoint,
    check_names,
    installed_plugins,
    load_feed,
    parse_feed_spec,
)
from feeds.sim.adapter import SimulatedFeed
from feeds.sim.symbols import symbol_names
from tests.plugin_dist import EXAMPLE, install


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield tmp_path
    ours = ("ticker_walk_feed", "myfeeds", "pkg")
    for name in [m for m in sys.modules if m.split(".")[0] in ours]:
        del sys.modules[name]


def first_batch(feed: object) -> list[dict[str, object]]:
    async def one() -> list[dict[str, object]]:
        stream = feed.stream()  # type: ignore[attr-defined]
        try:
            return await anext(stream)
        finally:
            await stream.aclose()

    return asyncio.run(one())


def test_the_example_plugin_is_found_through_its_entry_point(site: Path) -> None:
    assert "walk" not in installed_plugins()
    install(EXAMPLE, site)
    assert "walk" in installed_plugins()
    spec = parse_feed_spec("walk:AAPL=190,MSFT=420")
    assert spec == FeedSpec("walk", "AAPL=190,MSFT=420") and not spec.builtin
    feed = load_feed(spec)
    assert feed.symbols() == ["AAPL", "MSFT"]
    batch = first_batch(feed)
    assert [t["s"] for t in batch] == ["AAPL", "MSFT"]
    assert abs(batch[0]["p"] - 190) < 1  # type: ignore[operator]


def test_a_plugins_own_argument_error_is_one_line_naming_the_feed(site: Path) -> None:
    install(EXAMPLE, site)
    with pytest.raises(FeedPluginError) as caught:
        load_feed(parse_feed_spec("walk:AAPL"))
    assert str(caught.value) == "feed walk:AAPL: ValueError: 'AAPL': expected SYMBOL=PRICE"


def test_an_import_path_names_a_factory(site: Path) -> None:
    (site / "myfeeds").mkdir()
    (site / "myfeeds" / "__init__.py").write_text("")
    (site / "myfeeds" / "vendor.py").write_text(
        textwrap.dedent(
            """
            from feeds.sim.adapter import SimulatedFeed

            def make(args):
                return SimulatedFeed(int(args or 3), name="mine")
            """
        )
    )
    spec = parse_feed_spec("myfeeds.vendor:make:5")
    assert spec == FeedSpec("myfeeds.vendor:make", "5")
    feed = load_feed(spec)
    assert (feed.name, len(feed.symbols())) == ("mine", 5)
    # A dotless module is read as a feed name: the import path needs a dot in the module.
    with pytest.raises(FeedPluginError, match="unknown feed 'myfeeds'"):
        parse_feed_spec("myfeeds")


@pytest.mark.parametrize(
    ("source", "spec", "message"),
    [
        ("", "nothere.mod:make", "feed 'nothere.mod:make': cannot import nothere.mod: No module"),
        (
            "",
            "pkg.myfeeds:absent",
            "feed 'pkg.myfeeds:absent': pkg.myfeeds has no attribute 'absent'",
        ),
        ("make = 42", "pkg.myfeeds:make", "feed 'pkg.myfeeds:make': 42 is not callable"),
        (
            "def make(args): return object()",
            "pkg.myfeeds:make",
            "feed 'pkg.myfeeds:make' returned object, not a FeedAdapter",
        ),
        (
            "def make(args): raise RuntimeError('no vendor key')",
            "pkg.myfeeds:make:x",
            "feed pkg.myfeeds:make:x: RuntimeError: no vendor key",
        ),
        ("def make(args) return 1", "pkg.myfeeds:make", "feed 'pkg.myfeeds:make': cannot import"),
        ("raise KeyError('VENDOR_KEY')", "pkg.myfeeds:make", "feed 'pkg.myfeeds:make': cannot"),
        (
            "from feeds.sim.adapter import SimulatedFeed\n"
            "def make(args):\n"
            "    feed = SimulatedFeed(2)\n"
            "    feed.symbols = lambda: ['AAPL', 'BRK A']\n"
            "    return feed",
            "pkg.myfeeds:make",
            "feed pkg.myfeeds:make: symbols(): 'BRK A' is not a valid symbol",
        ),
        (
            "from feeds.sim.adapter import SimulatedFeed\n"
            "def make(args):\n"
            "    feed = SimulatedFeed(2)\n"
            "    feed.symbols = lambda: 1 / 0\n"
            "    return feed",
            "pkg.myfeeds:make",
            "feed pkg.myfeeds:make: symbols() raised ZeroDivisionError: division by zero",
        ),
    ],
)
def test_every_broken_plugin_is_one_clear_error(
    site: Path, source: str, spec: str, message: str
) -> None:
    (site / "pkg").mkdir()
    (site / "pkg" / "__init__.py").write_text("")
    (site / "pkg" / "myfeeds.py").write_text(source + "\n")
    with pytest.raises(FeedPluginError) as caught:
        load_feed(parse_feed_spec(spec))
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_built_in_names_and_bad_specs() -> None:
    assert parse_feed_spec("sim").builtin
    assert parse_feed_spec("replay:a.jsonl,b.jsonl") == FeedSpec("replay", "a.jsonl,b.jsonl")
    with pytest.raises(FeedPluginError, match=r"feed 'replay' needs its files"):
        parse_feed_spec("replay")
    with pytest.raises(FeedPluginError) as caught:
        parse_feed_spec("bogus")
    assert str(caught.value).startswith(
        "unknown feed 'bogus': use sim, replay:PATH[,PATH...], none,"
        " coinbase|binance|kraken:PRODUCTS (no plugin is installed"
    )
    with pytest.raises(FeedPluginError, match=r"package\.module:factory"):
        parse_feed_spec("pkg.mod:not-an-identifier")
    with pytest.raises(FeedPluginError, match=r"feed 'sim' takes no :ARGS, not 'sim:5' \(--symb"):
        parse_feed_spec("sim:5")


class Fixed:
    def __init__(self, name: str, symbols: list[str]) -> None:
        self.name, self._symbols = name, symbols

    def symbols(self) -> list[str]:
        return self._symbols


def test_two_feeds_may_not_claim_one_symbol() -> None:
    check_disjoint([Fixed("a", ["X", "Y"]), Fixed("b", ["Z"])])  # type: ignore[list-item]
    with pytest.raises(FeedPluginError) as caught:
        check_disjoint([Fixed("a", ["X", "Y"]), Fixed("b", ["Z", "Y"])])  # type: ignore[list-item]
    assert str(caught.value).startswith("symbol 'Y' is claimed by two feeds, a and b")
    with pytest.raises(FeedPluginError) as caught:
        check_disjoint([SimulatedFeed(3, name="sim"), SimulatedFeed(2, name="sim")])
    assert "are claimed by two feeds, sim and sim" in str(caught.value)

    with pytest.raises(FeedPluginError) as caught:
        check_disjoint([SimulatedFeed(8, name="sim"), Fixed("b", ["Z", *symbol_names(7)])])  # type: ignore[list-item]
    assert str(caught.value).startswith(
        "symbols 'AAPL', 'MSFT', 'GOOGL', 'AMZN', 'NVDA' and 2 more are claimed by two feeds,"
        " sim and b"
    )


def test_two_feeds_may_not_share_a_name() -> None:
    """The name labels metrics and /readyz: the error names both --feed values."""
    a, b = parse_feed_spec("sim"), parse_feed_spec("replay:x.jsonl")
    check_names([(a, Fixed("sim", ["X"])), (b, Fixed("replay", ["Y"]))])  # type: ignore[list-item]
    with pytest.raises(FeedPluginError) as caught:
        check_names([(a, Fixed("sim", ["X"])), (b, Fixed("sim", ["Y"]))])  # type: ignore[list-item]
    assert str(caught.value).startswith(
        "--feed sim and --feed replay:x.jsonl both make a feed named 'sim'"
    )
