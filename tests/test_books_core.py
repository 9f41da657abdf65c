"""The book engine without I/O: levels, ``u``, the checksum formula, top-N deltas, and a
follower that merges what a slow client missed so its book is always right."""

from __future__ import annotations

import random
import zlib
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ticker.core import books
from ticker.core.books import Book, BookFollower, Books, canonical, checksum, checksum_text


def independent_canonical(text: str) -> str:
    """The documented number form, from a number's JSON text (as a client would)."""
    d = Decimal(repr(float(text)))
    out = format(d, "f")
    return out.rstrip("0").rstrip(".") if "." in out else out


def independent_checksum(bids: list[list[float]], asks: list[list[float]]) -> int:
    def side(levels: list[list[float]]) -> str:
        return ",".join(
            f"{independent_canonical(str(p))}:{independent_canonical(str(s))}"
            for p, s in levels[:10]
        )

    return zlib.crc32(f"{side(bids)}|{side(asks)}".encode())


class Client:
    """What a client does with the frames of one topic: keep a book, check the chain."""

    def __init__(self, snapshot: bytes) -> None:
        frame = orjson.loads(snapshot)
        assert frame["snapshot"] is True
        self.u = frame["u"]
        self.bids = {p: s for p, s in frame["bids"]}
        self.asks = {p: s for p, s in frame["asks"]}
        self.frames = 1
        self.check(frame)

    def apply(self, data: bytes) -> None:
        frame = orjson.loads(data)
        assert frame["pu"] == self.u, "pu must chain to the last frame this client got"
        assert frame["u"] > self.u
        self.u = frame["u"]
        for levels, side in ((frame["bids"], self.bids), (frame["asks"], self.asks)):
            for p, s in levels:
                if s:
                    side[p] = s
                else:
                    side.pop(p, None)
        self.frames += 1
        self.check(frame)

    def top(self) -> tuple[list[list[float]], list[list[float]]]:
        bids = [[p, self.bids[p]] for p in sorted(self.bids, reverse=True)]
        asks = [[p, self.asks[p]] for p in sorted(self.asks)]
        return bids, asks

    def check(self, frame: dict[str, object]) -> None:
        bids, asks = self.top()
        assert frame["cs"] == independent_checksum(bids, asks)


def test_numbers_are_written_as_documented() -> None:
    assert canonical(100.0) == "100"
    assert canonical(1.305e-05) == "0.00001305"
    assert canonical(189.10) == "189.1"
    assert canonical(0.1 + 0.2) == "0.30000000000000004"
    assert canonical(1e21) == "1000000000000000000000"
    assert canonical(7) == "7"


def test_the_worked_example_of_the_docs() -> None:
    text = books.checksum_text([(189.12, 300), (189.11, 100.5)], [(189.13, 200)])
    assert text == "189.12:300,189.11:100.5|189.13:200"
    assert checksum([(189.12, 300), (189.11, 100.5)], [(189.13, 200)]) == zlib.crc32(
        b"189.12:300,189.11:100.5|189.13:200"
    )


def test_levels_u_and_removal() -> None:
    book = Book("BTC-USD")
    assert book.apply([(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.5)]) is not None
    assert book.u == 1
    assert book.apply([(98.0, 0)], []) is None  # removing an unknown level changes nothing
    assert book.apply([(100.0, 1.0)], []) is None  # nor does the same size again
    change = book.apply([(100.0, 0)], [(101.0, 3.0)])
    assert change is not None and (change.bids, change.asks) == ({100.0: 0}, {101.0: 3.0})
    assert book.u == 2 and book.bids.top(None) == [[99.0, 2.0]]
    snap = orjson.loads(book.snapshot(10))
    assert snap == {
        "type": "book", "s": "BTC-USD", "depth": 10, "u": 2, "snapshot": True,
        "bids": [[99.0, 2.0]], "asks": [[101.0, 3.0]], "cs": independent_checksum(
            [[99.0, 2.0]], [[101.0, 3.0]]
        ),
    }  # fmt: skip
    assert "depth" not in orjson.loads(book.snapshot(None))


def test_a_crossed_book_is_flagged_until_the_source_resets_it() -> None:
    book = Book("X")
    book.apply([(100.0, 1.0)], [(101.0, 1.0)])
    assert not book.crossed
    book.apply([(101.5, 1.0)], [])
    assert book.crossed
    book.reset([(100.0, 1.0)], [(101.0, 2.0)])
    assert not book.crossed and book.bids.top(None) == [[100.0, 1.0]]


def test_top_10_deltas_carry_levels_entering_and_leaving() -> None:
    reg = Books()
    bids = [(100.0 - i, 1.0) for i in range(12)]
    reg.apply("X", bids, [(101.0, 1.0)], [10])
    client = Client(reg.book("X").snapshot(10))
    assert len(client.bids) == 10
    (delta,) = reg.apply("X", [(100.0, 0)], [], [10])  # the best leaves: the 11th enters
    assert (delta.bids, delta.asks) == ({100.0: 0.0, 90.0: 1.0}, {})
    client.apply(delta.data)
    assert client.top()[0] == reg.book("X").bids.top(10)
    assert reg.apply("X", [(50.0, 3.0)], [], [10]) == []  # far from the top: no frame


def test_a_slow_follower_gets_one_merged_delta_that_chains() -> None:
    reg = Books()
    reg.apply("X", [(100.0, 1.0)], [(101.0, 1.0)], [10])
    book = reg.book("X")
    follower = BookFollower("X", 10, book.u)
    client = Client(book.snapshot(10))
    for i in range(200):
        for delta in reg.apply("X", [(100.0, 1.0 + i)], [(101.0 + i % 3, 1.0)], [10]):
            follower.offer(delta)
    assert len(follower._pending) <= books.MAX_PENDING
    (frame,) = follower.take()
    client.apply(frame)
    assert client.top() == (book.bids.top(10), book.asks.top(10))
    assert follower.take() == [] and not follower


def test_an_in_step_follower_gets_the_shared_bytes() -> None:
    reg = Books()
    reg.apply("X", [(100.0, 1.0)], [(101.0, 1.0)], [None])
    follower = BookFollower("X", None, reg.book("X").u)
    (delta,) = reg.apply("X", [(100.0, 2.0)], [], [None])
    follower.offer(delta)
    (frame,) = follower.take()
    assert frame is delta.data  # encoded once, for everyone in step


def test_a_book_is_bounded_and_the_drop_is_a_removal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(books, "MAX_LEVELS", 5)
    book = Book("X")
    change = book.apply([(100.0 - i, 1.0) for i in range(8)], [])
    assert change is not None and len(book.bids) == 5
    assert book.bids.best(None) == [100.0, 99.0, 98.0, 97.0, 96.0]
    assert all(change.bids[p] == 0 for p in (95.0, 94.0, 93.0))


prices = st.integers(min_value=1, max_value=60).map(lambda i: round(100 + (i - 30) * 0.05, 2))
sizes = st.sampled_from([0, 0, 0.5, 1.0, 2.25, 1.305e-05, 300])
change_sets = st.lists(
    st.tuples(st.lists(st.tuples(prices, sizes), max_size=6), st.booleans()),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(sets=change_sets, depth=st.sampled_from([10, 50, None]), seed=st.integers(0, 99))
def test_any_changes_any_read_pattern_the_client_book_is_the_top_n(
    sets: list[tuple[list[tuple[float, float]], bool]], depth: int | None, seed: int
) -> None:
    rnd = random.Random(seed)
    reg = Books()
    reg.apply("X", [(90.0, 1.0)], [(110.0, 1.0)], [depth])
    book = reg.book("X")
    follower = BookFollower("X", depth, book.u)
    client = Client(book.snapshot(depth))
    for levels, is_reset in sets:
        # each side of the touch: low prices are bids, high prices asks (never crossed)
        bids = [(p, s) for p, s in levels if p < 100]
        asks = [(p, s) for p, s in levels if p >= 100]
        for delta in reg.apply("X", bids, asks, [depth], reset=is_reset and bool(levels)):
            follower.offer(delta)
        if rnd.random() < 0.3:  # the client reads now and then
            for frame in follower.take():
                client.apply(frame)
            assert client.top() == (book.bids.top(depth), book.asks.top(depth))
    for frame in follower.take():
        client.apply(frame)
    assert client.top() == (book.bids.top(depth), book.asks.top(depth))
    assert client.u == book.u or not follower


def test_the_protocol_docs_worked_checksum_example_is_what_the_server_computes() -> None:
    import re
    from pathlib import Path

    import orjson

    from tests.books_ref import RefBook, ref_checksum

    doc = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    section = doc[doc.index("## Order books") : doc.index("## Ticks")]
    frames = [orjson.loads(x) for x in re.findall(r'^(\{"type": "book".*\})$', section, re.M)]
    ref = RefBook(frames[0])  # checks cs itself
    ref.apply(frames[1])
    book = Book("BTC-USD")
    book.apply([(100.0, 1.5), (99.5, 2.0), (99.0, 0.00001305)], [(100.5, 3.0), (101.25, 1e-7)])
    text = "100:1.5,99.5:2,99:0.00001305|100.5:3,101.25:0.0000001"
    assert text in section and checksum_text(book.bids.top(10), book.asks.top(10)) == text
    assert f"is `{book.cs}`" in section
    book.apply([(99.5, 0.0), (100.25, 4.0)], [])
    assert f"`cs` is `{book.cs}`" in section
    assert book.cs == ref_checksum(dict(book.bids.top(10)), dict(book.asks.top(10)))
