"""What SSE and long polling add to the shared protocol: event ids and Last-Event-ID,
cursors, held polls, sessions between polls, ops over POST, and slow clients bounded."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import orjson

from tests.conftest import StartServer
from tests.scrape import scrape, value
from ticker.core.history import parse_position


async def sse_events(resp: aiohttp.ClientResponse, until: str, timeout: float = 5.0) -> list[dict]:
    """Events (``event``, ``id``, ``data`` parsed) up to the first of type ``until``."""
    events: list[dict[str, Any]] = []
    event: dict[str, Any] = {}
    async with asyncio.timeout(timeout):
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                events.append(event)
                if event["event"] == until:
                    return events
                event = {}
                continue
            field, _, text = line.partition(": ")
            event[field] = orjson.loads(text) if field == "data" else text
    raise AssertionError(f"the stream ended before a {until} event: {events}")


async def test_sse_events_carry_type_and_position_and_last_event_id_resumes(
    start_server: StartServer,
) -> None:
    node, server = await start_server()
    bus = node.bus
    async with aiohttp.ClientSession() as http:
        resp = await http.get(server.make_url("/sse?symbols=AAPL,MSFT&mode=all"))
        assert resp.headers["Content-Type"] == "text/event-stream"
        events = await sse_events(resp, "subscribed")
        assert [e["event"] for e in events] == ["welcome", "subscribed"]
        assert all(e["data"]["type"] == e["event"] for e in events)
        bus.publish([{"s": s, "p": 1.0} for _ in range(3) for s in ("AAPL", "MSFT")])
        (ticks,) = await sse_events(resp, "ticks")
        assert parse_position(ticks["id"]) == (bus.epoch, {"AAPL": 3, "MSFT": 3})
        resp.close()
        async with asyncio.timeout(5):
            while node.connections:
                await asyncio.sleep(0.01)
        bus.publish([{"s": "AAPL", "p": 2.0} for _ in range(4)])
        headers = {"Last-Event-ID": ticks["id"]}
        url = server.make_url("/sse?symbols=AAPL,MSFT&mode=all")
        async with http.get(url, headers=headers) as resp:
            events = await sse_events(resp, "ticks")
            subscribed, replay = events[1]["data"], events[2]
            assert subscribed["recovered"] == {"AAPL": True, "MSFT": True}
            assert [t["q"] for t in replay["data"]["ticks"]] == [4, 5, 6, 7]
            assert parse_position(replay["id"])[1] == {"AAPL": 7, "MSFT": 3}


async def test_sse_ops_by_post_and_their_errors(start_server: StartServer) -> None:
    _, server = await start_server(limits={"max_message_bytes": 100})
    async with aiohttp.ClientSession() as http, http.get(server.make_url("/sse")) as stream:
        (welcome,) = await sse_events(stream, "welcome")
        session = welcome["data"]["session"]
        url = server.make_url(f"/sse/{session}/subscribe")
        async with http.post(url, data=b'{"symbols":["AAPL"],"id":7}') as resp:
            assert resp.status == 202
        (subscribed,) = await sse_events(stream, "subscribed")
        assert subscribed["data"] == {"type": "subscribed", "id": 7, "symbols": ["AAPL"]}
        async with http.post(url, data=b"x" * 101) as resp:
            assert resp.status == 413 and (await resp.json())["code"] == "too_large"
        async with http.post(url, data=b"not json") as resp:
            assert resp.status == 202  # the session answers on the stream
        (error,) = await sse_events(stream, "error")
        assert error["data"]["code"] == "bad_json"
        for bad in ("/sse/nope/subscribe", f"/poll/{session}/subscribe"):
            async with http.post(server.make_url(bad), data=b"{}") as resp:
                body = await resp.json()
                assert resp.status == 404 and body["code"] == "unknown_session"


async def poll(http: aiohttp.ClientSession, url: Any) -> dict[str, Any]:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_poll_holds_answers_resends_a_lost_answer_and_expires(
    start_server: StartServer,
) -> None:
    node, server = await start_server(poll_hold_s=0.3, poll_session_s=0.6)
    url = server.make_url
    async with aiohttp.ClientSession() as http:
        first = await poll(http, url("/poll?symbols=AAPL&mode=all"))
        assert [m["type"] for m in first["messages"]] == ["welcome", "subscribed"]
        cursor = first["cursor"]
        answer = await poll(http, url(f"/poll?cursor={cursor}"))
        assert answer["messages"] == [] and answer["cursor"] != cursor  # held, then empty
        async with http.get(url(f"/poll?cursor={first['cursor'][:-1]}9")) as resp:
            assert resp.status == 400 and "stale cursor" in (await resp.json())["message"]
        async with http.get(url(f"/poll?cursor={first['cursor']}{'9' * 5000}")) as resp:
            assert resp.status == 404  # not a cursor of this session (nor a crash)
        waiting = asyncio.create_task(poll(http, url(f"/poll?cursor={answer['cursor']}")))
        await asyncio.sleep(0.05)
        node.bus.publish([{"s": "AAPL", "p": 1.0}, {"s": "AAPL", "p": 2.0}])
        got = await waiting
        assert [t["q"] for t in got["messages"][0]["ticks"]] == [1, 2]
        again = await poll(http, url(f"/poll?cursor={answer['cursor']}"))
        assert again == got  # the answer was lost: it comes again
        await asyncio.sleep(0.8)  # no poll within poll_session_s: the session ends
        async with http.get(url(f"/poll?cursor={got['cursor']}")) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == "unknown_session"
        assert not node.connections
        _, samples = await scrape(url("/metrics"))
        poll_label = {"transport": "poll"}
        assert value(samples, "ticker_connections_opened_total", **poll_label) == 1
        assert value(samples, "ticker_connections_closed_total", code="1001", **poll_label) == 1
        assert value(samples, "ticker_ticks_delivered_total", **poll_label) == 2


async def test_a_poll_client_that_stops_polling_is_bounded(start_server: StartServer) -> None:
    node, server = await start_server(limits={"queue_bytes": 4096})
    async with aiohttp.ClientSession() as http:
        everything = await poll(http, server.make_url("/poll?symbols=*&mode=all"))
        latest = await poll(http, server.make_url("/poll?symbols=*"))
        for i in range(100):
            node.bus.publish([{"s": s, "p": float(i)} for s in ("AAPL", "MSFT")])
        (conflating,) = [c for c in node.connections if c.session.mode == "conflate"]
        assert len(conflating.session.mailbox) == 2  # one pending tick per symbol
        answer = await poll(http, server.make_url(f"/poll?cursor={everything['cursor']}"))
        assert answer == {"cursor": None, "messages": [answer["messages"][0]]}
        close = answer["messages"][0]
        assert close["type"] == "close" and close["code"] == 4008
        answer = await poll(http, server.make_url(f"/poll?cursor={latest['cursor']}"))
        assert sorted(t["p"] for t in answer["messages"][0]["ticks"]) == [99.0, 99.0]
        _, samples = await scrape(server.make_url("/metrics"))
        assert (
            value(samples, "ticker_slow_consumer_closes_total", transport="poll", mode="all") == 1
        )


async def test_a_slow_sse_client_is_closed_and_others_flow(start_server: StartServer) -> None:
    node, server = await start_server(limits={"queue_bytes": 64 * 1024})
    _reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"GET /sse?symbols=*&mode=all HTTP/1.1\r\nHost: x\r\n\r\n")  # then reads nothing
    await writer.drain()
    async with aiohttp.ClientSession() as http:
        healthy = await http.get(server.make_url("/sse?symbols=*&mode=all"))
        welcome, _ = await sse_events(healthy, "subscribed")
        async with asyncio.timeout(5):
            while len(node.connections) < 2:
                await asyncio.sleep(0.01)
        (slow,) = [c for c in node.connections if c.session.id != welcome["data"]["session"]]
        assert slow.transport is not None  # a congested path: a small send buffer
        slow.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
        )
        pad = "x" * 400
        for i in range(1000):  # 1 MB: past the socket buffers and the 64 KiB queue
            node.bus.publish([{"s": s, "p": float(i), "pad": pad} for s in ("AAPL", "MSFT")])
            if i % 10 == 0:
                await asyncio.sleep(0.001)
        received = 0
        async with asyncio.timeout(10):
            while received < 2000:  # the healthy client gets every tick
                events = await sse_events(healthy, "ticks")
                received += len(events[-1]["data"]["ticks"])
            while slow in node.connections:
                await asyncio.sleep(0.01)
        assert received == 2000 and slow.session.close_request.code == 4008
        healthy.close()
    writer.close()
    _, samples = await scrape(server.make_url("/metrics"))
    assert value(samples, "ticker_slow_consumer_closes_total", transport="sse", mode="all") == 1


async def test_sessions_are_bounded(start_server: StartServer) -> None:
    _, server = await start_server(max_http_sessions=1, poll_hold_s=0.1)
    async with aiohttp.ClientSession() as http:
        first = await poll(http, server.make_url("/poll"))
        for path in ("/poll", "/sse"):
            async with http.get(server.make_url(path)) as resp:
                assert resp.status == 503 and (await resp.json())["code"] == "too_many_sessions"
        assert (await poll(http, server.make_url(f"/poll?cursor={first['cursor']}")))["cursor"]
        _, samples = await scrape(server.make_url("/metrics"))
        for transport in ("poll", "sse"):
            labels = {"transport": transport, "reason": "too_many_sessions"}
            assert value(samples, "ticker_handshake_rejections_total", **labels) == 1


async def test_every_transport_refuses_a_handshake_while_shutting_down(
    start_server: StartServer,
) -> None:
    node, server = await start_server()
    node.gate.closing = True  # what Node.shutdown does first
    async with aiohttp.ClientSession() as http:
        for path in ("/ws", "/sse", "/poll"):
            async with http.get(server.make_url(path)) as resp:
                body = await resp.json()
                assert resp.status == 503 and body["code"] == "shutting_down", path
