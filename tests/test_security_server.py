"""Auth, entitlements, delayed data, origins, limits and TLS over real sockets."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import SYMBOLS, StartServer, frame, next_of, tls_files
from tests.test_http_transports import sse_events
from tests.test_replay_on_demand import write
from ticker.core.admission import ConnectionLimits
from ticker.core.codes import CloseCode
from ticker.core.tokens import TokenVerifier, mint
from ticker.server.app import create_app
from ticker.server.node import Node
from ticker.server.replays import ReplayPump
from ticker.server.settings import Settings
from ticker.server.tls import server_context

SECRET = "integration-secret-" * 3
UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def token(sub: str = "alice", symbols: tuple[str, ...] = ("AAPL", "M*"), **kw: Any) -> str:
    return mint(SECRET.encode(), sub=sub, symbols=list(symbols), ttl_s=kw.pop("ttl_s", 60), **kw)


def rejections(node: Node, reason: str) -> float:
    value = node.metrics.registry.get_sample_value(
        "ticker_handshake_rejections_total", {"transport": "ws", "reason": reason}
    )
    assert value is not None
    return value


async def start_auth(start_server: StartServer, **kw: Any) -> tuple[Node, Any]:
    return await start_server(auth=TokenVerifier.from_secret(SECRET), heartbeat_s=0.4, **kw)


async def test_missing_bad_and_expired_tokens_get_401_json_and_no_upgrade(
    start_server: StartServer,
) -> None:
    node, server = await start_auth(start_server)
    url = server.make_url("/ws")
    expired = mint(SECRET.encode(), sub="a", symbols=["*"], ttl_s=1, now=time.time() - 10)
    forged = mint(b"not-the-secret-" * 3, sub="a", symbols=["*"], ttl_s=60)
    async with aiohttp.ClientSession() as http:
        for headers, why in [
            ({}, "a token is required"),
            ({"Authorization": f"Bearer {forged}"}, "bad signature"),
            ({"Authorization": f"Bearer {expired}"}, "token expired"),
        ]:
            async with http.get(url, headers={**UPGRADE, **headers}) as resp:
                assert resp.status == 401 and "Upgrade" not in resp.headers
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                body = await resp.json()
                assert body["code"] == "unauthorized" and why in body["message"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await http.ws_connect(url.with_query(token=forged))
        assert caught.value.status == 401
    assert rejections(node, "unauthorized") == 4
    assert not node.connections


async def test_a_token_by_header_query_or_subprotocol_opens_the_session(
    start_server: StartServer,
) -> None:
    _, server = await start_auth(start_server)
    url = server.make_url("/ws")
    tok = token()
    async with aiohttp.ClientSession() as http:
        for kw in (
            {"headers": {"Authorization": f"Bearer {tok}"}},
            {"params": {"token": tok}},
            {"protocols": ("bearer", tok)},
        ):
            async with http.ws_connect(url, **kw) as ws:
                welcome = await frame(ws)
                assert welcome["auth"]["sub"] == "alice"
                assert welcome["auth"]["symbols"] == ["AAPL", "M*"]
                if "protocols" in kw:
                    assert ws.protocol == "bearer"  # the token is not echoed


async def test_entitlements_hold_end_to_end(start_server: StartServer) -> None:
    node, server = await start_auth(start_server)
    bus = node.bus
    bus.publish([{"s": s, "p": 1.0} for s in SYMBOLS])
    url = server.make_url("/ws").with_query(token=token())
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await frame(ws)
        await ws.send_json({"op": "list", "id": 1})
        assert (await frame(ws))["symbols"] == ["AAPL", "MSFT"]
        await ws.send_json({"op": "subscribe", "symbols": ["GOOGL", "AAPL", "NVDA"], "id": 2})
        error = await frame(ws)
        assert (error["code"], error["symbols"]) == ("not_entitled", ["GOOGL", "NVDA"])
        assert (await frame(ws))["symbols"] == ["AAPL"]
        assert [t["s"] for t in (await frame(ws))["ticks"]] == ["AAPL"]
        await ws.send_json({"op": "subscribe", "symbols": ["*"], "id": 3})
        assert (await frame(ws))["symbols"] == ["AAPL", "MSFT"]
        bus.publish([{"s": s, "p": 2.0} for s in SYMBOLS])
        ticks = (await next_of(ws, "ticks"))["ticks"]
        assert sorted(t["s"] for t in ticks) == ["AAPL", "MSFT"]


async def test_expiry_closes_with_1008_unless_refreshed_in_band(start_server: StartServer) -> None:
    _, server = await start_auth(start_server)
    url = server.make_url("/ws")
    short = token(ttl_s=2)
    async with aiohttp.ClientSession() as http:
        lapsing = await http.ws_connect(url.with_query(token=short))
        refreshed = await http.ws_connect(url.with_query(token=short))
        exp = (await frame(lapsing))["auth"]["exp"]
        await frame(refreshed)
        await refreshed.send_json({"op": "auth", "token": token(ttl_s=60), "id": 1})
        reply = await next_of(refreshed, "authenticated")
        assert reply["exp"] > exp
        async with asyncio.timeout(5):
            msg = await lapsing.receive()
            while msg.type is aiohttp.WSMsgType.TEXT:  # heartbeats until then
                msg = await lapsing.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert (msg.data, msg.extra) == (CloseCode.POLICY, "token expired")
        assert time.time() >= exp
        await refreshed.send_json({"op": "ping", "id": 2})
        assert (await next_of(refreshed, "pong"))["id"] == 2  # still served
        await refreshed.close()
        await lapsing.close()


async def test_a_delayed_client_never_sees_a_tick_before_t_plus_d(
    start_server: StartServer,
) -> None:
    node, server = await start_auth(start_server)
    delay = 0.4
    url = server.make_url("/ws").with_query(token=token(delay_s=delay), mode="all", symbols="AAPL")
    node.bus.publish([{"s": "AAPL", "p": 0.0}])  # before the delay line exists: never seen
    got: list[tuple[int, dict]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        assert (await frame(ws))["auth"]["delay"] == delay
        assert (await frame(ws))["type"] == "subscribed"
        for i in range(1, 11):
            node.bus.publish([{"s": "AAPL", "p": float(i)}])
            await asyncio.sleep(0.03)
        while len(got) < 10:
            msg = await next_of(ws, "ticks")
            now = time.time_ns() // 1000
            got += [(now, t) for t in msg["ticks"]]
    assert [t["p"] for _, t in got] == [float(i) for i in range(1, 11)]  # all, in order
    assert all(seen >= t["t"] + delay * 1_000_000 for seen, t in got)
    assert [t["q"] for _, t in got] == list(range(2, 12))  # the live stream's own q


async def test_foreign_origins_get_403_own_and_allowed_ones_pass(
    start_server: StartServer,
) -> None:
    node, server = await start_server(allowed_origins=("https://app.example.com",))
    url = server.make_url("/ws")
    own = f"http://127.0.0.1:{server.port}"
    async with aiohttp.ClientSession() as http:
        for origin in (None, own, "https://app.example.com"):
            headers = {} if origin is None else {"Origin": origin}
            async with http.ws_connect(url, headers=headers) as ws:
                assert (await frame(ws))["type"] == "welcome"
        for origin in ("https://evil.example", "null", f"http://127.0.0.1:{server.port + 1}"):
            async with http.get(url, headers={**UPGRADE, "Origin": origin}) as resp:
                assert resp.status == 403
                assert (await resp.json())["code"] == "forbidden_origin"
    assert rejections(node, "forbidden_origin") == 3


async def test_connection_limits_refuse_at_the_handshake_and_are_counted(
    start_server: StartServer,
) -> None:
    limits = ConnectionLimits(max_connections=3, max_connections_per_ip=0)
    node, server = await start_auth(start_server, connection_limits=limits)
    url = server.make_url("/ws")
    async with aiohttp.ClientSession() as http:
        one = await http.ws_connect(url.with_query(token=token(sub="bob", max_conns=1)))
        assert (await frame(one))["limits"]["max_connections"] == 3
        with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
            await http.ws_connect(url.with_query(token=token(sub="bob", max_conns=1)))
        assert caught.value.status == 429
        others = [await http.ws_connect(url.with_query(token=token(sub=f"u{i}"))) for i in (1, 2)]
        async with http.get(url.with_query(token=token(sub="u3")), headers=UPGRADE) as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "5"
            assert (await resp.json())["code"] == "too_many_connections"
        await one.close()
        for ws in others:
            await ws.close()
    assert rejections(node, "too_many_for_subject") == 1
    assert rejections(node, "too_many_connections") == 1
    async with asyncio.timeout(3):
        while node.admission.total:  # slots are given back as the handlers end
            await asyncio.sleep(0.01)


async def test_per_ip_limit_is_429(start_server: StartServer) -> None:
    node, server = await start_server(connection_limits=ConnectionLimits(max_connections_per_ip=1))
    url = server.make_url("/ws")
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await frame(ws)
        async with http.get(url, headers=UPGRADE) as resp:
            assert resp.status == 429 and (await resp.json())["code"] == "too_many_for_ip"
    assert rejections(node, "too_many_for_ip") == 1


async def test_replays_serve_only_entitled_symbols(aiohttp_server: Any, tmp_path: Path) -> None:
    write(tmp_path / "day.jsonl", 20, 1000, symbols=("AAPL", "GOOGL"))
    node = Node(Settings(auth=TokenVerifier.from_secret(SECRET)))
    node.bus.add_symbols(SYMBOLS)
    app = create_app(node)
    node.replays = pump = ReplayPump(tmp_path)
    pump.attach(app)
    server = await aiohttp_server(app)
    url = server.make_url("/ws").with_query(token=token(), mode="all")
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await frame(ws)
        await ws.send_json({"op": "replay", "source": "day.jsonl", "symbols": ["GOOGL"], "id": 1})
        error = await frame(ws)
        assert (error["code"], error["symbols"]) == ("not_entitled", ["GOOGL"])
        await ws.send_json({"op": "replay", "source": "day.jsonl", "speed": 0, "id": 2})
        started = await next_of(ws, "replay")
        assert started["symbols"] == ["AAPL"] and started["ticks"] == 10
        got: list[dict] = []
        while len(got) < 10:
            got += (await next_of(ws, "ticks"))["ticks"]
        assert {t["s"] for t in got} == {"AAPL"}


async def test_tls_serves_wss_with_verification_on(tmp_path: Path) -> None:
    cert_file, key_file, trusting = tls_files(tmp_path)
    node = Node(Settings())
    node.bus.add_symbols(SYMBOLS)
    runner = web.AppRunner(create_app(node))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert_file, key_file))
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(f"wss://127.0.0.1:{port}/ws", ssl=trusting) as ws:
                assert (await frame(ws))["type"] == "welcome"
            async with http.get(f"https://localhost:{port}/healthz", ssl=trusting) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.ws_connect(f"wss://127.0.0.1:{port}/ws")  # an unknown CA: refused
    finally:
        await runner.cleanup()


async def test_no_compression_is_negotiated_even_when_the_client_offers_it(
    start_server: StartServer,
) -> None:
    _, server = await start_server()
    url = server.make_url("/ws")
    async with aiohttp.ClientSession() as http, http.ws_connect(url, compress=15) as ws:
        assert (await frame(ws))["type"] == "welcome"
        assert ws.compress == 0  # no permessage-deflate: no decompression bomb to defuse


async def test_sse_and_poll_pass_the_same_gate_and_keep_sessions_to_their_subject(
    start_server: StartServer,
) -> None:
    """The rules hold on every transport: no token, no stream; entitlements in the session;
    and a request on an open session (an op, the next poll) needs its subject's token."""
    node, server = await start_auth(start_server, poll_hold_s=0.1)
    alice = {"Authorization": f"Bearer {token('alice')}"}
    mallory = {"Authorization": f"Bearer {token('mallory', ('*',))}"}
    async with aiohttp.ClientSession() as http:
        for path in ("/sse?symbols=AAPL", "/poll?symbols=AAPL"):
            async with http.get(server.make_url(path)) as resp:
                assert resp.status == 401 and (await resp.json())["code"] == "unauthorized"
        async with http.get(
            server.make_url("/sse"), headers={**alice, "Origin": "http://evil.example"}
        ) as resp:
            assert resp.status == 403
        async with http.get(server.make_url("/sse"), headers=alice) as stream:
            (welcome,) = await sse_events(stream, "welcome")
            session = welcome["data"]["session"]
            url = server.make_url(f"/sse/{session}/subscribe")
            for headers, status in [({}, 401), (mallory, 403)]:
                async with http.post(url, data=b'{"symbols":["GOOGL"]}', headers=headers) as r:
                    assert r.status == status
            async with http.post(url, data=b'{"symbols":["AAPL","GOOGL"]}', headers=alice) as r:
                assert r.status == 202
            events = await sse_events(stream, "subscribed")
            refused = [e["data"] for e in events if e["event"] == "error"]
            assert refused[0]["code"] == "not_entitled" and refused[0]["symbols"] == ["GOOGL"]
            assert events[-1]["data"]["symbols"] == ["AAPL"]
        async with http.get(server.make_url("/poll?symbols=AAPL"), headers=alice) as resp:
            cursor = (await resp.json())["cursor"]
        next_poll = server.make_url("/poll").with_query(cursor=cursor)
        async with http.get(next_poll, headers=mallory) as resp:
            assert resp.status == 403
        async with http.get(next_poll, headers=alice) as resp:
            assert resp.status == 200
    sse_refusals = node.metrics.registry.get_sample_value(
        "ticker_handshake_rejections_total", {"transport": "sse", "reason": "unauthorized"}
    )
    assert sse_refusals == 3  # the stream without a token and the two foreign ops
