"""POST /publish over a real socket: all or nothing, who may publish, idempotent retries."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import StartServer, frame, next_of
from ticker.core.publish import PublishLimits
from ticker.core.tokens import TokenVerifier, mint

SECRET = "s" * 32
LIMITS = PublishLimits(max_ticks=100, max_bytes=20_000, max_universe=8)


async def post(
    http: aiohttp.ClientSession,
    url: Any,
    body: object,
    *,
    content_type: str = "application/json",
    **headers: str,
) -> tuple[int, Any, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(url, data=data, headers={"Content-Type": content_type, **headers}) as r:
        return r.status, await r.json(), r.headers


async def watcher(http: aiohttp.ClientSession, server: Any) -> aiohttp.ClientWebSocketResponse:
    """A mode-all "*" subscriber, past its welcome and first snapshot."""
    ws = await http.ws_connect(server.make_url("/ws?mode=all"))
    assert (await frame(ws))["type"] == "welcome"
    await ws.send_json({"op": "subscribe", "symbols": ["*"], "id": 1})
    assert (await frame(ws))["type"] == "subscribed"
    return ws


async def drain(ws: aiohttp.ClientWebSocketResponse, quiet_s: float = 0.2) -> list[dict[str, Any]]:
    """Every tick that arrives until the socket has been quiet for a while."""
    ticks: list[dict[str, Any]] = []
    while True:
        try:
            msg = await ws.receive(timeout=quiet_s)
        except TimeoutError:
            return ticks
        kind = orjson.loads(msg.data)
        if kind["type"] in ("ticks", "snapshot"):
            ticks += kind["ticks"]


async def test_accepted_ticks_reach_subscribers_with_q_per_symbol(
    start_server: StartServer,
) -> None:
    _, server = await start_server(publish=LIMITS)
    async with aiohttp.ClientSession() as http:
        ws = await watcher(http, server)
        body = {
            "ticks": [
                {
                    "s": "AAPL",
                    "p": 189.12,
                    "b": 189.11,
                    "a": 189.13,
                    "v": 100,
                    "et": 1733500000000000,
                },
                {"s": "MSFT", "p": 420.5},
                {"s": "AAPL", "p": 189.13, "v": 5},
            ]
        }
        status, answer, _ = await post(http, server.make_url("/publish"), body)
        assert status == 200
        assert answer == {"accepted": 3, "q": {"AAPL": 2, "MSFT": 1}}
        got = (await next_of(ws, "ticks"))["ticks"]
        assert [(t["s"], t["q"], t["p"]) for t in got] == [
            ("AAPL", 1, 189.12),
            ("AAPL", 2, 189.13),
            ("MSFT", 1, 420.5),
        ]
        assert got[0]["et"] == 1733500000000000 and isinstance(got[0]["t"], int)
        ndjson = b'{"s": "MSFT", "p": 421}\n{"s": "MSFT", "p": 422}\n'
        status, answer, _ = await post(
            http, server.make_url("/publish"), ndjson, content_type="application/x-ndjson"
        )
        assert (status, answer["q"]) == (200, {"MSFT": 3})
        await ws.close()


async def test_a_bad_batch_publishes_nothing_and_lists_every_problem(
    start_server: StartServer,
) -> None:
    node, server = await start_server(publish=LIMITS)
    async with aiohttp.ClientSession() as http:
        ws = await watcher(http, server)
        body = {
            "ticks": [{"s": "AAPL", "p": 1}, {"s": "AAPL", "p": True}, {"s": "A B", "p": 1, "x": 2}]
        }
        status, answer, _ = await post(http, server.make_url("/publish"), body)
        assert status == 400 and answer["error"] == "bad_request"
        assert [(p["index"], p["field"]) for p in answer["problems"]] == [
            (1, "p"),
            (2, "s"),
            (2, "x"),
        ]
        assert await drain(ws) == []
        assert node.bus.known("AAPL") and node.bus.symbol_count() == 5  # nothing joined
        await ws.close()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        ({"ticks": [{"s": "A", "p": 1}] * 101}, "application/json", 413, "too_large"),
        (b"x" * 20_001, "application/json", 413, "too_large"),
        (b"s,p\nA,1\n", "text/csv", 415, "unsupported_media_type"),
        (b"{nope", "application/json", 400, "bad_json"),
        (
            {"ticks": [{"s": f"NEW{i}", "p": 1} for i in range(4)]},
            "application/json",
            400,
            "universe_full",
        ),
    ],
)
async def test_bounds_are_refused_with_their_status(
    start_server: StartServer, body: object, content_type: str, status: int, error: str
) -> None:
    node, server = await start_server(publish=LIMITS)
    async with aiohttp.ClientSession() as http:
        got, answer, _ = await post(
            http, server.make_url("/publish"), body, content_type=content_type
        )
    assert (got, answer["error"]) == (status, error)
    assert node.bus.published == 0


async def test_a_retry_with_the_same_key_publishes_once(start_server: StartServer) -> None:
    node, server = await start_server(publish=LIMITS)
    url = server.make_url("/publish")
    body = {"ticks": [{"s": "AAPL", "p": 1}, {"s": "AAPL", "p": 2}]}
    async with aiohttp.ClientSession() as http:
        first = await post(http, url, body, **{"Idempotency-Key": "batch-7"})
        again = await post(http, url, body, **{"Idempotency-Key": "batch-7"})
        other = await post(
            http, url, {"ticks": [{"s": "AAPL", "p": 3}]}, **{"Idempotency-Key": "batch-7"}
        )
        async with http.get(server.make_url("/metrics")) as r:
            metrics = await r.text()
    assert first[:2] == again[:2] == (200, {"accepted": 2, "q": {"AAPL": 2}})
    assert "Idempotent-Replayed" not in first[2] and again[2]["Idempotent-Replayed"] == "true"
    assert (other[0], other[1]["error"]) == (422, "idempotency_key_reused")
    assert node.bus.published == 2
    for line in (
        'ticker_publish_requests_total{result="accepted",transport="http"} 1.0',
        'ticker_publish_requests_total{result="replayed",transport="http"} 1.0',
        'ticker_publish_requests_total{result="idempotency_key_reused",transport="http"} 1.0',
        "ticker_publish_ticks_total 2.0",
        "ticker_publish_idempotency_keys 1.0",
    ):
        assert line in metrics.splitlines()


async def test_the_rate_limit_says_when_to_retry(start_server: StartServer) -> None:
    limits = PublishLimits(max_ticks=10, ticks_per_s=10)
    node, server = await start_server(publish=limits)
    ten = {"ticks": [{"s": "AAPL", "p": 1}] * 10}
    async with aiohttp.ClientSession() as http:
        assert (await post(http, server.make_url("/publish"), ten))[0] == 200
        status, answer, headers = await post(http, server.make_url("/publish"), ten)
    assert (status, answer["error"]) == (429, "rate_limited")
    assert int(headers["Retry-After"]) >= 1
    assert node.bus.published == 10


def token(**claims: Any) -> str:
    return mint(
        SECRET, sub=claims.pop("sub", "feeder"), symbols=[], ttl_s=claims.pop("ttl_s", 60), **claims
    )


async def test_who_may_publish_with_auth_on(start_server: StartServer) -> None:
    node, server = await start_server(publish=LIMITS, auth=TokenVerifier.from_secret(SECRET))
    url = server.make_url("/publish")
    body = {"ticks": [{"s": "AAPL", "p": 1}, {"s": "FX:EURUSD", "p": 1.1}]}
    async with aiohttp.ClientSession() as http:
        none = await post(http, url, body)
        subscriber = await post(http, url, body, Authorization=f"Bearer {token()}")
        narrow = await post(http, url, body, Authorization=f"Bearer {token(publish=['FX:*'])}")
        expired = await post(
            http, url, body, Authorization=f"Bearer {token(publish=['*'], ttl_s=-120)}"
        )
        assert node.bus.published == 0
        ok = await post(http, url, body, Authorization=f"Bearer {token(publish=['AAPL', 'FX:*'])}")
    assert (none[0], none[1]["error"]) == (401, "unauthorized")
    assert none[2]["WWW-Authenticate"].startswith("Bearer")
    assert (subscriber[0], subscriber[1]["error"]) == (403, "not_entitled")
    assert (narrow[0], narrow[1]["error"], narrow[1]["symbols"]) == (403, "not_entitled", ["AAPL"])
    assert (expired[0], expired[1]["message"]) == (401, "token expired")
    assert ok[0] == 200 and node.bus.published == 2


async def test_publishing_is_off_unless_asked(start_server: StartServer) -> None:
    _, server = await start_server()
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.make_url("/publish"), json={"ticks": []}) as r,
    ):
        assert r.status in (404, 405)


async def test_a_new_symbol_joins_the_universe(start_server: StartServer) -> None:
    _, server = await start_server(publish=LIMITS)
    async with aiohttp.ClientSession() as http:
        ws = await watcher(http, server)
        await post(http, server.make_url("/publish"), {"ticks": [{"s": "BTC-USD", "p": 97000.5}]})
        got = (await next_of(ws, "ticks"))["ticks"]
        assert [(t["s"], t["q"]) for t in got] == [("BTC-USD", 1)]
        await ws.send_json({"op": "list", "id": 2})
        listed = await next_of(ws, "symbols")
        assert "BTC-USD" in listed["symbols"]
        await ws.close()


async def test_a_publisher_websocket_acks_each_batch_and_replays_a_resent_one(
    start_server: StartServer,
) -> None:
    node, server = await start_server(publish=LIMITS)
    async with aiohttp.ClientSession() as http:
        ws = await watcher(http, server)
        pub = await http.ws_connect(server.make_url("/publish"))
        batch = {
            "op": "publish",
            "id": "b1",
            "ticks": [{"s": "AAPL", "p": 1}, {"s": "AAPL", "p": 2}],
        }
        await pub.send_str(orjson.dumps(batch).decode())
        assert orjson.loads((await pub.receive()).data) == {
            "type": "ack",
            "id": "b1",
            "accepted": 2,
            "q": {"AAPL": 2},
        }
        await pub.send_str(orjson.dumps(batch).decode())  # resent, as after a reconnect
        assert orjson.loads((await pub.receive()).data) == {
            "type": "ack",
            "id": "b1",
            "replayed": True,
            "accepted": 2,
            "q": {"AAPL": 2},
        }
        bad = {"op": "publish", "id": 7, "ticks": [{"s": "AAPL", "p": 3}, {"s": "AAPL"}]}
        await pub.send_str(orjson.dumps(bad).decode())
        error = orjson.loads((await pub.receive()).data)
        assert (error["type"], error["id"], error["code"]) == ("error", 7, "bad_request")
        assert error["problems"] == [
            {"index": 1, "field": "p", "message": "missing: every tick needs a price"}
        ]
        await pub.send_str('{"op": "publish", "id": "x", "ticks": "no"}')
        assert orjson.loads((await pub.receive()).data)["code"] == "bad_request"
        await pub.send_str("{nope")
        assert orjson.loads((await pub.receive()).data)["code"] == "bad_json"
        assert not pub.closed  # errors never close a publisher
        got = await drain(ws)
        assert [(t["s"], t["q"], t["p"]) for t in got] == [("AAPL", 1, 1), ("AAPL", 2, 2)]
        assert node.bus.published == 2
        await pub.close()
        await ws.close()


async def test_a_publisher_websocket_is_gated_like_post(start_server: StartServer) -> None:
    _, server = await start_server(publish=LIMITS, auth=TokenVerifier.from_secret(SECRET))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await http.ws_connect(server.make_url("/publish"))
        assert caught.value.status == 401
        url = server.make_url("/publish").with_query(token=token(publish=["FX:*"]))
        async with http.ws_connect(url) as pub:
            await pub.send_json({"op": "publish", "id": 1, "ticks": [{"s": "AAPL", "p": 1}]})
            error = await pub.receive_json()
            assert (error["code"], error["symbols"]) == ("not_entitled", ["AAPL"])
        evil = {"Origin": "https://evil.example"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await http.ws_connect(url, headers=evil)
        assert caught.value.status == 403
