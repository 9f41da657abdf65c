"""Protocol v1 over a real WebSocket: the round trip and every bad input."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from tests.conftest import StartServer, frame, next_of
from tests.rawws import RawWebSocket


async def test_full_round_trip(start_server: StartServer) -> None:
    node, server = await start_server()
    bus = node.bus
    bus.publish([{"s": "AAPL", "p": 189.12, "b": 189.11, "a": 189.13, "v": 100}])
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        welcome = await frame(ws)
        assert welcome["type"] == "welcome" and welcome["protocol"] == 1
        assert welcome["epoch"] == bus.epoch and welcome["mode"] == "conflate"
        assert welcome["limits"]["max_symbols"] == 1000
        assert isinstance(welcome["server_time"], int) and welcome["session"]

        await ws.send_json({"op": "list", "id": 4})
        assert await frame(ws) == {
            "type": "symbols",
            "id": 4,
            "symbols": ["AAPL", "AMZN", "GOOGL", "MSFT", "NVDA"],
        }

        await ws.send_json({"op": "subscribe", "symbols": ["AAPL", "MSFT"], "id": 1})
        assert await frame(ws) == {"type": "subscribed", "id": 1, "symbols": ["AAPL", "MSFT"]}
        snapshot = await frame(ws)
        assert snapshot["type"] == "snapshot"
        (snap,) = snapshot["ticks"]
        assert {k: snap[k] for k in "spbav"} == {
            "s": "AAPL",
            "p": 189.12,
            "b": 189.11,
            "a": 189.13,
            "v": 100,
        }
        assert snap["q"] == 1 and isinstance(snap["t"], int)

        bus.publish([{"s": "GOOGL", "p": 1.0}, {"s": "MSFT", "p": 2.0}, {"s": "AAPL", "p": 3.0}])
        ticks = (await next_of(ws, "ticks"))["ticks"]
        assert sorted((t["s"], t["q"]) for t in ticks) == [("AAPL", 2), ("MSFT", 1)]

        await ws.send_json({"op": "unsubscribe", "symbols": ["AAPL"], "id": "u"})
        assert await frame(ws) == {"type": "unsubscribed", "id": "u", "symbols": ["MSFT"]}
        bus.publish([{"s": "AAPL", "p": 4.0}, {"s": "MSFT", "p": 5.0}])
        ticks = (await next_of(ws, "ticks"))["ticks"]
        assert [(t["s"], t["p"]) for t in ticks] == [("MSFT", 5.0)]

        await ws.send_json({"op": "subscribe", "symbols": ["*"], "id": 2})
        assert (await frame(ws))["symbols"] == ["*", "MSFT"]
        snapshot = await next_of(ws, "snapshot")
        assert sorted(t["s"] for t in snapshot["ticks"]) == ["AAPL", "GOOGL"]  # MSFT streams on
        bus.publish([{"s": "NVDA", "p": 6.0}])
        assert [t["s"] for t in (await next_of(ws, "ticks"))["ticks"]] == ["NVDA"]

        await ws.send_json({"op": "ping", "id": 3})
        pong = await next_of(ws, "pong")
        assert pong["id"] == 3 and isinstance(pong["server_time"], int)


async def test_connect_time_query_subscribes(start_server: StartServer) -> None:
    node, server = await start_server()
    node.bus.publish([{"s": "MSFT", "p": 2.0}])
    url = server.make_url("/ws?symbols=AAPL,MSFT&mode=all")
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        assert (await frame(ws))["mode"] == "all"
        assert (await frame(ws))["symbols"] == ["AAPL", "MSFT"]
        assert [t["s"] for t in (await frame(ws))["ticks"]] == ["MSFT"]


async def test_bad_handshake_parameters_get_400_json(start_server: StartServer) -> None:
    _, server = await start_server()
    async with aiohttp.ClientSession() as http:
        for query in ("mode=fast", "max_hz=abc", "max_hz=0", "max_hz=-1"):
            try:
                async with http.ws_connect(server.make_url(f"/ws?{query}")):
                    raise AssertionError(f"{query} was accepted")
            except aiohttp.WSServerHandshakeError as exc:
                assert exc.status == 400, query
        async with http.get(server.make_url("/ws?mode=fast")) as resp:
            body = await resp.json()
            assert (
                resp.status == 400 and body["code"] == "bad_request" and "mode" in body["message"]
            )


async def test_heartbeat_frame_when_idle(start_server: StartServer) -> None:
    _, server = await start_server(heartbeat_s=0.3)
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await frame(ws)  # welcome
        loop = asyncio.get_running_loop()
        start = loop.time()
        beat = await frame(ws, timeout=2)
        assert beat["type"] == "heartbeat" and isinstance(beat["server_time"], int)
        assert 0.2 <= loop.time() - start <= 1.5


async def test_every_bad_input_gets_a_clear_error_and_the_connection_stays_usable(
    start_server: StartServer,
) -> None:
    node, server = await start_server(limits={"max_symbols": 3})
    async with aiohttp.ClientSession() as http:
        bystander = await http.ws_connect(server.make_url("/ws?symbols=AAPL"))
        await next_of(bystander, "subscribed")
        async with http.ws_connect(server.make_url("/ws")) as ws:
            await frame(ws)
            cases = [
                ("not json", "bad_json", None),
                ("[1,2,3]", "bad_request", None),
                ('{"id":5}', "bad_request", 5),
                ('{"op":"subscribe","symbols":"AAPL","id":6}', "bad_request", 6),
                ('{"op":"teleport","id":7}', "unknown_op", 7),
                (
                    '{"op":"subscribe","symbols":["AAPL","MSFT","GOOGL","AMZN"],"id":8}',
                    "too_many_symbols",
                    8,
                ),
            ]
            for text, code, rid in cases:
                await ws.send_str(text)
                error = await frame(ws)
                assert error["type"] == "error" and error["code"] == code, text
                assert error.get("id") == rid and error["message"], text
                assert "Traceback" not in error["message"]
            await ws.send_bytes(b"\x00\x01")
            error = await frame(ws)
            assert error["code"] == "bad_request" and "binary" in error["message"]

            await ws.send_json({"op": "subscribe", "symbols": ["AAPL", "NOPE"], "id": 9})
            error = await frame(ws)
            assert error["code"] == "unknown_symbol" and error["symbols"] == ["NOPE"]
            assert await frame(ws) == {"type": "subscribed", "id": 9, "symbols": ["AAPL"]}
            await ws.send_json({"op": "ping", "id": 10})
            assert (await next_of(ws, "pong"))["id"] == 10
        # the bystander never noticed
        node.bus.publish([{"s": "AAPL", "p": 1.0}])
        assert (await next_of(bystander, "ticks"))["ticks"][0]["s"] == "AAPL"
        await bystander.close()


async def test_oversized_message_closes_1009(start_server: StartServer) -> None:
    _, server = await start_server()
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await frame(ws)
        await ws.send_str(orjson.dumps({"op": "ping", "pad": "x" * 70_000}).decode())
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert msg.data == 1009
        assert msg.extra == "message over max_message_bytes (65536 bytes)"


async def test_1009_reason_names_the_configured_limit(start_server: StartServer) -> None:
    _, server = await start_server(limits={"max_message_bytes": 1000})
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await frame(ws)
        await ws.send_str(orjson.dumps({"op": "ping", "pad": "x" * 900}).decode())
        assert (await frame(ws))["type"] == "pong"  # under the limit: served
        await ws.send_str(orjson.dumps({"op": "ping", "pad": "x" * 1000}).decode())
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1009)
        assert msg.extra == "message over max_message_bytes (1000 bytes)"


async def test_rate_limited_then_closed_4029(start_server: StartServer) -> None:
    node, server = await start_server(limits={"ops_per_s": 5})
    async with aiohttp.ClientSession() as http, http.ws_connect(server.make_url("/ws")) as ws:
        await frame(ws)
        for _ in range(7):
            await ws.send_json({"op": "ping"})
        kinds = [(await frame(ws))["type"] for _ in range(7)]
        assert kinds.count("pong") == 5
        errors = [k for k in kinds if k == "error"]
        assert len(errors) == 2
        for _ in range(20):
            await ws.send_json({"op": "ping"})
        async with asyncio.timeout(5):
            while (msg := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
                assert msg.json()["type"] in ("pong", "error")
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4029
    assert node.stats.errors["rate_limited"] >= 2


async def test_peer_that_does_not_answer_pings_is_closed(start_server: StartServer) -> None:
    node, server = await start_server(ping_interval_s=0.2)
    async with aiohttp.ClientSession() as http:
        # autoping off: this client never answers the server's pings
        ws = await http.ws_connect(server.make_url("/ws"), autoping=False)
        await frame(ws)
        answering = await http.ws_connect(server.make_url("/ws"))
        await frame(answering)
        reader = asyncio.create_task(answering.receive())  # aiohttp pongs inside receive()
        async with asyncio.timeout(5):
            while (msg := await ws.receive()).type is aiohttp.WSMsgType.PING:
                pass
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        async with asyncio.timeout(5):
            while len(node.connections) > 1:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # the answering client outlives several ping rounds
        assert not answering.closed and len(node.connections) == 1
        reader.cancel()
        await answering.close()


async def test_invalid_utf8_is_bad_json_and_close_codes_are_echoed_validly(
    start_server: StartServer,
) -> None:
    _, server = await start_server()
    raw = await RawWebSocket.connect(server.host, server.port, "/ws")
    await raw.json()  # welcome
    raw.send(b'{"op":"ping","x":"\xff\xfe"}')
    error = await raw.json()
    assert error["code"] == "bad_json"
    raw.send(b'{"op":"ping","id":1}')
    assert (await raw.json())["type"] == "pong"  # still usable
    raw.send(b"", opcode=8)  # a close frame without a code, as browsers send
    async with asyncio.timeout(5):
        while raw.close_code is None:
            await raw.frame()
    assert raw.close_code == 1000  # never 0 or 1005 on the wire
    raw.close()
