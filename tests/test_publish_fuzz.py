"""Hypothesis against ``/publish`` on a live server: whatever a publisher sends, the
server answers (200 or a JSON refusal, never a 500), keeps serving, and publishes all of
an accepted batch and nothing of a refused one.

One server and one mode-``all`` ``*`` watcher live for the whole module on one event
loop. The watcher's last q per symbol is the ledger: after each example a marker tick is
published and the watcher read up to it, and its ledger must equal what the answers
said (each accepted batch advances its symbols' q by exactly its ticks; a refused or a
replayed one by nothing), with every q it saw consecutive. Bounded, derandomized
searches: a few seconds in all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import SYMBOLS
from ticker.core.publish import JSON, NDJSON, PublishLimits
from ticker.core.symbols import symbol_problem
from ticker.server.app import create_app
from ticker.server.node import Node
from ticker.server.settings import Settings

LIMITS = PublishLimits(max_ticks=40, max_bytes=16_384, ticks_per_s=1e12)
MARK = "ZZ:MARK"
REFUSALS = {
    "bad_request", "bad_json", "too_large", "unsupported_media_type",
    "idempotency_key_reused", "universe_full", "unknown_op",
}  # fmt: skip
FUZZ = settings(
    derandomize=True,
    deadline=None,  # bounded by the read timeouts instead
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Live:
    loop: asyncio.AbstractEventLoop
    node: Node
    base: str
    http: aiohttp.ClientSession
    watcher: aiohttp.ClientWebSocketResponse
    seen: dict[str, int] = field(default_factory=dict)
    """The last q the watcher got for each symbol."""
    marks: int = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    loop = asyncio.new_event_loop()
    node = Node(Settings(publish=LIMITS))
    node.bus.add_symbols([*SYMBOLS, MARK])

    async def start() -> tuple[web.AppRunner, Live]:
        runner = web.AppRunner(create_app(node))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        http = aiohttp.ClientSession()
        watcher = await http.ws_connect(f"{base}/ws?mode=all")
        await watcher.send_json({"op": "subscribe", "symbols": ["*"], "id": "w"})
        async with asyncio.timeout(5):
            while orjson.loads((await watcher.receive()).data)["type"] != "subscribed":
                pass
        return runner, Live(loop, node, base, http, watcher)

    runner, harness = loop.run_until_complete(start())
    yield harness

    async def stop() -> None:
        await harness.watcher.close()
        await harness.http.close()
        await runner.cleanup()

    loop.run_until_complete(stop())
    loop.close()


# -- what publishers send ----------------------------------------------------------------------


class Raw(str):
    """JSON text put into a body as it is (numbers JSON cannot hold, lone surrogates)."""


def dump(value: object) -> str:
    """JSON text of ``value``, with ``Raw`` pieces verbatim and NaN/Infinity as Python
    writes them (not JSON: the server must refuse them, not choke)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


raw_numbers = st.sampled_from(
    ["1e400", "-1e400", "NaN", "Infinity", "-0", "0.0e0", "18446744073709551616", "1" * 400]
).map(Raw)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | raw_numbers
    | st.just(Raw('"\\ud800"')),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
symbols = st.sampled_from(SYMBOLS) | st.from_regex(
    r"[A-Za-z0-9._\-:/^=+#$&!%~]{1,32}", fullmatch=True
)
prices = st.floats(-1e300, 1e300, allow_nan=False) | st.integers(-(2**53), 2**53)


@st.composite
def good_ticks(draw: st.DrawFn) -> dict[str, Any]:
    tick: dict[str, Any] = {"s": draw(symbols), "p": draw(prices)}
    if draw(st.booleans()):
        b, a = sorted([draw(prices), draw(prices)])
        tick["b"], tick["a"] = b, a
    if draw(st.booleans()):
        tick["v"] = draw(st.integers(0, 10**9) | st.floats(0, 1e12))
    if draw(st.booleans()):
        tick["et"] = draw(st.integers(0, 2**53))
    return tick


bad_symbols = st.sampled_from(
    ["A B", "A,B", "AAPL@1m", "A*", "\u00e9t\u00e9", "A\x00", "x" * 33, "", "\u202eLPAA"]
) | st.text(max_size=40).filter(lambda s: symbol_problem(s) is not None)


@st.composite
def bad_ticks(draw: st.DrawFn) -> object:
    """A good tick with one thing wrong with it (or not a tick at all)."""
    tick: dict[str, Any] = draw(good_ticks())
    how = draw(st.integers(0, 9))
    if how == 0:
        del tick[draw(st.sampled_from(["s", "p"]))]
    elif how == 1:
        tick["s"] = draw(bad_symbols | json_values.filter(lambda v: type(v) is not str))
    elif how == 2:
        tick[draw(st.sampled_from(["p", "b", "a", "v", "et"]))] = draw(json_values)
    elif how == 3:
        tick[draw(st.sampled_from(["p", "v"]))] = draw(
            st.booleans() | st.sampled_from([float("nan"), float("inf"), 2**53 + 1, -1])
        )
    elif how == 4:
        tick[draw(st.sampled_from(["q", "t", "x", "S", "", "price"]))] = draw(json_values)
    elif how == 5:
        tick["b"], tick["a"] = 2.0, 1.0
    elif how == 6:
        tick["p"] = draw(raw_numbers)
    elif how == 7:
        tick["et"] = draw(st.sampled_from([-1, 1.5, 2**53 + 1, "1733500000000000", True]))
    else:
        return draw(json_values)
    return tick


@dataclass(frozen=True)
class Request:
    content_type: str | None
    body: bytes
    key: str | None
    """``FRESH``: a key of this example's own; others are shared by every example."""
    retry: bool
    """Sent twice, as a publisher that timed out would."""
    must_accept: bool
    """Only good ticks, within the limits, in a well-formed body: it has to be a 200."""


FRESH = "fresh"


def envelope(ticks: list[Any], ndjson: bool) -> bytes:
    if ndjson:
        return "".join(dump(t) + "\n" for t in ticks).encode()
    return dump({"ticks": ticks}).encode()


@st.composite
def requests(draw: st.DrawFn) -> Request:
    ndjson = draw(st.booleans())
    key = draw(st.sampled_from([None, None, None, FRESH, FRESH, "shared", "k" * 300]))
    good = draw(st.lists(good_ticks(), max_size=45))
    kind = draw(st.integers(0, 7))
    if kind <= 2:  # good ticks, maybe a few bad among them
        ticks: list[Any] = list(good)
        for _ in range(draw(st.integers(0, 2)) if kind else 0):
            ticks.insert(draw(st.integers(0, len(ticks))), draw(bad_ticks()))
        body = envelope(ticks, ndjson)
        ok = kind == 0 and len(good) <= LIMITS.max_ticks
    elif kind == 3:  # cut short anywhere
        whole = envelope(good, ndjson)
        body, ok = whole[: draw(st.integers(0, max(0, len(whole) - 1)))], False
    elif kind == 4:  # another envelope
        other = draw(
            st.sampled_from([[], {}, {"ticks": {}}, {"ticks": None}, {"ticks": [], "x": 1}])
            | json_values
        )
        body, ok = dump(other).encode(), False
    elif kind == 5:  # deep nesting, padding past the byte limit
        n = draw(st.integers(1, 3000))
        body = draw(
            st.sampled_from(
                [
                    b'{"ticks":[' + b"[" * n + b"]" * n + b"]}",
                    b'{"ticks":[{"s":"AAPL","p":1}]' + b" " * LIMITS.max_bytes + b"}",
                    b'{"s":"AAPL","p":1}\n' * n,
                ]
            )
        )
        ok = False
    elif kind == 6:  # not JSON at all
        body, ok = draw(st.binary(max_size=200) | st.text(max_size=200).map(str.encode)), False
    else:  # lines that are fine alone, broken together (or the other way round)
        lines = [dump(t) for t in good] + draw(st.lists(st.sampled_from(["", " ", "{", "]"])))
        body, ok = "\n".join(draw(st.permutations(lines))).encode(), False
    media = NDJSON if ndjson else JSON
    content_type = draw(
        st.sampled_from(
            [media] * 8 + [f"{media}; charset=utf-8", media.upper(), None, ""]
            + ["text/csv", "application/ndjson", "text/plain"]
        )
    )  # fmt: skip
    ok = ok and key in (None, FRESH) and content_type in (media, f"{media}; charset=utf-8")
    retry = draw(st.booleans())
    return Request(content_type, body, key, retry, ok and len(body) <= LIMITS.max_bytes)


# -- checks --------------------------------------------------------------------------------------


def refusal(status: int, body: bytes, content_type: str) -> dict[str, Any]:
    """A refusal as docs/publishing.md has it: JSON, a known code, a message, problems."""
    assert 400 <= status < 500 and content_type == "application/json", (status, body)
    answer = orjson.loads(body)
    assert isinstance(answer, dict) and answer["error"] in REFUSALS, answer
    assert isinstance(answer["message"], str) and answer["message"]
    problems = answer.get("problems", [])
    assert len(problems) <= 100
    for problem in problems:
        assert isinstance(problem["message"], str) and isinstance(problem.get("index", 0), int)
    return answer


def advance(expected: dict[str, int], answer: dict[str, Any]) -> None:
    """An accepted batch moves each of its symbols' q on by that symbol's ticks in it."""
    counted = 0
    for symbol, q in answer["q"].items():
        gained = q - expected.get(symbol, 0)
        assert gained >= 1, (symbol, q, expected.get(symbol))
        counted += gained
        expected[symbol] = q
    assert counted == answer["accepted"], answer


async def post(live: Live, request: Request) -> tuple[int, bytes, Any]:
    headers = {} if request.content_type is None else {"Content-Type": request.content_type}
    if request.key is not None:
        headers["Idempotency-Key"] = f"k-{live.marks}" if request.key == FRESH else request.key
    skip = () if request.content_type is None else ("Content-Type",)
    async with live.http.post(
        f"{live.base}/publish", data=request.body, headers=headers, skip_auto_headers=skip
    ) as resp:
        return resp.status, await resp.read(), resp.headers


async def settle(live: Live, expected: dict[str, int]) -> None:
    """A marker through, the watcher read up to it: its ledger must be ``expected``."""
    live.marks += 1
    mark = Request(JSON, orjson.dumps({"ticks": [{"s": MARK, "p": live.marks}]}), None, False, True)
    status, body, _ = await post(live, mark)
    assert status == 200, body
    advance(expected, orjson.loads(body))
    async with asyncio.timeout(5):
        while True:
            msg = await live.watcher.receive()
            assert msg.type is WSMsgType.TEXT, msg
            frame = orjson.loads(msg.data)
            if frame["type"] != "ticks":
                assert frame["type"] in ("heartbeat", "snapshot"), frame
                continue
            for tick in frame["ticks"]:
                symbol = tick["s"]
                assert tick["q"] == live.seen.get(symbol, 0) + 1, (tick, live.seen.get(symbol))
                live.seen[symbol] = tick["q"]
            if live.seen.get(MARK) == expected[MARK]:
                break
    assert live.seen == expected


async def http_example(live: Live, request: Request) -> None:
    expected = dict(live.seen)
    first: tuple[int, bytes] | None = None
    for _ in range(1 + request.retry):
        status, body, headers = await post(live, request)
        replayed = headers.get("Idempotent-Replayed") == "true"
        if status == 200:
            assert headers["Content-Type"] == "application/json", headers
            if not replayed:
                advance(expected, orjson.loads(body))
        else:
            assert not request.must_accept, (status, body)
            refusal(status, body, headers["Content-Type"].split(";")[0])
        if first is not None and first[0] == 200 and request.key == FRESH:
            assert replayed and (status, body) == first  # the first answer, nothing published
        first = (status, body)
    await settle(live, expected)


@settings(FUZZ, max_examples=150)
@given(request=requests())
def test_post_answers_every_body_and_publishes_all_or_nothing(live: Live, request: Request) -> None:
    live.run(http_example(live, request))


# -- the publisher WebSocket -------------------------------------------------------------------


AGAIN = (WSMsgType.TEXT, b"again")
"""Resend the last text frame as it was (a publisher resending after a reconnect)."""
batch_ids = st.one_of(
    st.just(FRESH), st.just(FRESH), st.sampled_from(["a", 1]), st.text(max_size=70), json_values
)


@st.composite
def frames(draw: st.DrawFn) -> tuple[WSMsgType, bytes | dict[str, Any]]:
    """A frame to send; a ``publish`` op is still a dict, its ``FRESH`` id not yet made."""
    kind = draw(st.integers(0, 6))
    if kind <= 2:
        ticks = draw(st.lists(good_ticks() if kind < 2 else bad_ticks() | good_ticks(), max_size=8))
        op: dict[str, Any] = {"op": "publish", "id": draw(batch_ids), "ticks": ticks}
        if kind == 2 and draw(st.booleans()):
            op[draw(st.sampled_from(["op", "ticks", "id"]))] = draw(json_values)
        return WSMsgType.TEXT, op
    if kind == 3:
        return AGAIN
    if kind == 4:
        return WSMsgType.TEXT, draw(st.binary(max_size=100) | st.text(max_size=100).map(str.encode))
    if kind == 5:
        return WSMsgType.BINARY, draw(st.binary(max_size=100))
    return WSMsgType.TEXT, b'{"op":"publish","id":"big","ticks":[' + b" " * LIMITS.max_bytes + b"]}"


async def ws_example(live: Live, sent: list[tuple[WSMsgType, bytes | dict[str, Any]]]) -> None:
    expected = dict(live.seen)
    last: tuple[bytes, dict[str, Any]] | None = None
    async with live.http.ws_connect(f"{live.base}/publish") as pub:
        for n, (opcode, payload) in enumerate(sent):
            if isinstance(payload, dict):
                fresh = payload["id"] == FRESH
                data = dump({**payload, "id": f"b-{live.marks}-{n}"} if fresh else payload).encode()
            elif (opcode, payload) == AGAIN:
                if last is None:
                    continue
                data = last[0]
            else:
                data = payload
            await pub.send_frame(data, opcode)
            async with asyncio.timeout(5):
                msg = await pub.receive()
            if len(data) > LIMITS.max_bytes:  # aiohttp closes past max_msg_size
                assert msg.type is WSMsgType.CLOSE and pub.close_code == 1009, msg
                break
            assert msg.type is WSMsgType.TEXT, msg
            reply = orjson.loads(msg.data)
            with contextlib.suppress(orjson.JSONDecodeError):
                op = orjson.loads(data)
                if reply.get("id") is not None:
                    assert isinstance(op, dict) and reply["id"] == op["id"], (reply, op)
            if reply["type"] == "ack":
                if not reply.get("replayed"):
                    advance(expected, reply)
            else:
                assert reply["type"] == "error" and reply["code"] in REFUSALS, reply
                assert isinstance(reply["message"], str)
            if last is not None and data == last[0] and last[1]["type"] == "ack":
                assert reply == {**last[1], "replayed": True}, (reply, last[1])
            if opcode is WSMsgType.TEXT:
                last = (data, reply)
    await settle(live, expected)


@settings(FUZZ, max_examples=60)
@given(sent=st.lists(frames(), min_size=1, max_size=6))
def test_publisher_websocket_answers_every_frame_and_publishes_all_or_nothing(
    live: Live, sent: list[tuple[WSMsgType, bytes | dict[str, Any]]]
) -> None:
    live.run(ws_example(live, sent))
    live.run(publishers_gone(live))


async def publishers_gone(live: Live) -> None:
    """``ticker_publishers`` back to 0 once the example's socket is closed (never leaks)."""
    async with asyncio.timeout(5):
        while True:
            async with live.http.get(f"{live.base}/metrics") as resp:
                lines = (await resp.text()).splitlines()
            if "ticker_publishers 0.0" in lines:
                return
            await asyncio.sleep(0.01)
