"""The pure parts of publishing: body decoding, tick checks, the symbol rule, idempotency."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ticker.client.lines import LineDecoder, LineError
from ticker.core.bus import Bus
from ticker.core.entitlements import Entitlements
from ticker.core.idempotency import IdempotencyCache, KeyReused, digest
from ticker.core.publish import (
    JSON,
    MAX_PROBLEMS,
    NDJSON,
    PublishLimits,
    PublishRefused,
    _every_problem,
    check_ticks,
    decode_body,
    plainly_good,
)
from ticker.core.publish_books import check_items
from ticker.core.publish_gate import PublishGate
from ticker.core.symbols import symbol_problem
from ticker.core.ticks import TickBatch

LIMITS = PublishLimits(max_ticks=5, max_bytes=2000)


def parse_publish(content_type: str | None, body: bytes, limits: PublishLimits) -> TickBatch:
    """A request as the server reads it: decoded, then every tick checked."""
    return check_ticks(decode_body(content_type, body, limits))


def refused(
    content_type: str | None, body: bytes, limits: PublishLimits = LIMITS
) -> PublishRefused:
    with pytest.raises(PublishRefused) as caught:
        parse_publish(content_type, body, limits)
    return caught.value


def problems_of(*ticks: object) -> list[dict[str, object]]:
    err = refused(JSON, orjson.dumps({"ticks": list(ticks)}))
    assert (err.status, err.code) == (400, "bad_request")
    body = err.to_json()
    assert "nothing was published" in body["message"]
    return body["problems"]


def test_a_json_body_gives_its_ticks_in_order() -> None:
    body = {"ticks": [{"s": "AAPL", "p": 189.12, "b": 189.11, "a": 189.13, "v": 100, "et": 5}]}
    batch = parse_publish("application/json; charset=utf-8", orjson.dumps(body), LIMITS)
    assert batch == body["ticks"]


def test_ndjson_skips_blank_lines_and_numbers_bad_ones() -> None:
    body = b'{"s": "A", "p": 1}\n\n{"s": "B", "p": 2}\r\n'
    assert [t["s"] for t in parse_publish(NDJSON, body, LIMITS)] == ["A", "B"]
    err = refused(NDJSON, b'{"s": "A", "p": 1}\n{"s": \n')
    assert err.to_json()["problems"] == [{"index": 1, "message": "line 2 is not valid JSON"}]


@pytest.mark.parametrize(
    ("tick", "field", "words"),
    [
        ({"p": 1.0}, "s", "missing"),
        ({"s": "A"}, "p", "missing"),
        ({"s": "A", "p": True}, "p", "must be a number"),
        ({"s": "A", "p": "1.5"}, "p", "must be a number"),
        ({"s": "A", "p": 2**60}, "p", "2^53"),
        ({"s": "A", "p": 1, "v": -1}, "v", "negative"),
        ({"s": "A", "p": 1, "b": 2, "a": 1}, "b", "above the ask"),
        ({"s": "A", "p": 1, "q": 7}, "q", "server's to assign"),
        ({"s": "A", "p": 1, "t": 7}, "t", "server's to assign"),
        ({"s": "A", "p": 1, "et": -3}, "et", "Unix microseconds"),
        ({"s": "A", "p": 1, "et": 1.5}, "et", "Unix microseconds"),
        ({"s": "A", "p": 1, "colour": "red"}, "colour", "unknown field"),
        ({"s": "A,B", "p": 1}, "s", "not a valid symbol"),
        ({"s": 7, "p": 1}, "s", "must be a string"),
    ],
)
def test_each_rule_names_the_field(tick: dict[str, object], field: str, words: str) -> None:
    [problem] = problems_of({"s": "OK", "p": 1}, tick)
    assert problem["index"] == 1
    assert problem["field"] == field
    assert words in str(problem["message"])


def test_non_finite_numbers_are_refused() -> None:
    # JSON has no NaN; a tick checked after another decoder (the WebSocket op) still may.
    from ticker.core.publish import check_ticks

    with pytest.raises(PublishRefused) as caught:
        check_ticks([{"s": "A", "p": float("nan")}, {"s": "A", "p": 1, "b": float("inf")}])
    fields = [(p.index, p.field) for p in caught.value.problems]
    assert fields == [(0, "p"), (1, "b")]


def test_every_problem_is_listed_up_to_the_cap() -> None:
    many = [{"s": "A", "p": "x"}] * (MAX_PROBLEMS + 7)
    err = refused(
        JSON, orjson.dumps({"ticks": many}), PublishLimits(max_ticks=1000, max_bytes=1 << 20)
    )
    body = err.to_json()
    assert len(body["problems"]) == MAX_PROBLEMS
    assert body["more_problems"] == 7


def test_envelope_size_count_and_type_are_refused_before_the_ticks() -> None:
    assert refused(JSON, b"[1, 2]").code == "bad_request"
    assert refused(JSON, b'{"ticks": [], "x": 1}').message.startswith("unknown key(s) 'x'")
    assert refused(JSON, b"{nope").code == "bad_json"
    err = refused(JSON, orjson.dumps({"ticks": [{"s": "A", "p": 1}] * 6}))
    assert (err.status, err.code) == (413, "too_large")
    assert "--max-publish-ticks" in err.message
    err = refused(JSON, b" " * 2001)
    assert (err.status, "--max-publish-bytes" in err.message) == (413, True)
    err = refused("text/csv", b"s,p\nA,1\n")
    assert (err.status, err.code) == (415, "unsupported_media_type")
    assert refused(None, b"{}").status == 415


def test_the_answer_gives_each_symbols_last_q() -> None:
    gate = PublishGate(Bus(), PublishLimits())
    batch = [{"s": "A", "p": 1}, {"s": "B", "p": 2}, {"s": "A", "p": 3}]
    answer = gate.publish("me", Entitlements(["*"]), check_items(batch))
    assert answer == {"accepted": 3, "q": {"A": 2, "B": 1}}


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**54), max_value=2**54),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
)
_ticks = st.dictionaries(
    st.sampled_from(["s", "p", "b", "a", "v", "et", "q", "x"]),
    st.one_of(_values, st.sampled_from(["AAPL", "BTC-USD", "a b"])),
)


@given(st.lists(st.one_of(_ticks, st.none()), max_size=5))
def test_the_fast_check_never_passes_what_the_full_check_refuses(items: list[object]) -> None:
    if plainly_good(items):
        assert _every_problem(items).found == 0


@pytest.mark.parametrize(
    "name", ["AAPL", "BTC-USD", "BTC/USD", "BRK.B", "^GSPC", "ES=F", "BIN:btcusdt", "X" * 32]
)
def test_real_names_are_symbols(name: str) -> None:
    assert symbol_problem(name) is None


@pytest.mark.parametrize(
    "name", ["", "X" * 33, "A B", "A,B", "AAPL@1m", "FX:*", "A\x00", "A\t", "É", "A?"]
)
def test_names_that_would_be_ambiguous_are_not(name: str) -> None:
    assert symbol_problem(name) is not None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_retry_gets_the_first_answer_until_the_ttl_ends() -> None:
    clock = FakeClock()
    cache = IdempotencyCache(clock, ttl_s=10)
    d = digest(b"body")
    assert cache.lookup("alice", "k1", d) is None
    cache.remember("alice", "k1", d, 200, b'{"accepted": 1}')
    clock.now = 9.9
    found = cache.lookup("alice", "k1", d)
    assert found is not None and (found.status, found.answer) == (200, b'{"accepted": 1}')
    assert cache.lookup("bob", "k1", d) is None  # keys are per publisher
    with pytest.raises(KeyReused):
        cache.lookup("alice", "k1", digest(b"another body"))
    clock.now = 10.0
    assert cache.lookup("alice", "k1", d) is None
    assert (len(cache), cache.bytes) == (0, 0)


def test_the_cache_is_bounded_by_keys_and_bytes_oldest_first() -> None:
    clock = FakeClock()
    cache = IdempotencyCache(clock, max_keys=3, max_bytes=10)
    for i in range(5):
        cache.remember("s", f"k{i}", b"d", 200, b"xx")
    assert [cache.lookup("s", f"k{i}", b"d") is not None for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]
    cache.remember("s", "big", b"d", 200, b"x" * 9)
    assert len(cache) == 1 and cache.bytes == 9
    assert cache.evicted == 5


def decode_all(*lines: str) -> list[object]:
    decoder = LineDecoder()
    return [tick for line in lines if (tick := decoder.decode(line)) is not None]


def test_csv_lines_become_ticks_by_their_header() -> None:
    ticks = decode_all("s,p,v,et\n", "AAPL,189.5,100,17\n", "\n", "MSFT,420,,18\n")
    assert ticks == [
        {"s": "AAPL", "p": 189.5, "v": 100.0, "et": 17},
        {"s": "MSFT", "p": 420.0, "et": 18},
    ]


def test_ndjson_lines_are_decided_by_the_first_line() -> None:
    assert decode_all("", '{"s": "A", "p": 1}', b'{"s": "B", "p": 2}') == [
        {"s": "A", "p": 1},
        {"s": "B", "p": 2},
    ]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["s,price"], "line 1: a CSV header names tick fields"),
        (["s,p,s"], "line 1: a CSV header names tick fields"),
        (["v,et"], "line 1: a CSV header names tick fields"),
        (["s,p", "A"], "line 2: 1 field(s), the header has 2"),
        (["s,p", "", "A,x"], "line 3: p='x' is not a number"),
        (['{"s": "A", "p": 1}', "{nope"], "line 2: not valid JSON"),
    ],
)
def test_a_bad_line_is_named(lines: list[str], message: str) -> None:
    decoder = LineDecoder()
    with pytest.raises(LineError) as caught:
        for line in lines:
            decoder.decode(line)
    assert str(caught.value).startswith(message)
