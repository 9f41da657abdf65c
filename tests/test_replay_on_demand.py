"""Replays on demand over the protocol: listing, a private stream marked "r":1, steering,
and sources that cannot be trusted."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import SYMBOLS, frame, next_of
from ticker.core.protocol import ProtocolError, parse
from ticker.recording.formats import open_writer
from ticker.server.app import create_app
from ticker.server.node import Node
from ticker.server.replays import ReplayPump, resolve_source
from ticker.server.settings import Settings

T0 = 1_600_000_000_000_000


def write(path: Path, n: int, gap_us: int, symbols: tuple[str, ...] = ("AAPL", "ZZZ")) -> list:
    ticks = [
        {"s": symbols[i % len(symbols)], "p": 100.0 + i, "t": T0 + i * gap_us, "q": i // 2 + 1}
        for i in range(n)
    ]
    writer = open_writer(path)
    writer.write_ticks([dict(t) for t in ticks])
    writer.close()
    return ticks


@pytest.fixture
async def replay_server(aiohttp_server: Any, tmp_path: Path) -> tuple[Node, Any, Path]:
    root = tmp_path / "replays"
    (root / "day").mkdir(parents=True)
    node = Node(Settings())
    node.bus.add_symbols(SYMBOLS)
    app = create_app(node)
    pump = ReplayPump(root)
    node.replays = pump
    pump.attach(app)
    return node, await aiohttp_server(app), root


async def connect(http: aiohttp.ClientSession, server: Any, **query: str) -> Any:
    ws = await http.ws_connect(server.make_url("/ws").with_query(query))
    assert (await frame(ws))["type"] == "welcome"
    return ws


async def replayed_ticks(ws: Any, count: int) -> list[dict]:
    got: list[dict] = []
    while len(got) < count:
        got += (await next_of(ws, "ticks"))["ticks"]
    return got


async def test_list_then_replay_a_private_stream_marked_r(
    replay_server: tuple[Node, Any, Path],
) -> None:
    node, server, root = replay_server
    ticks = write(root / "day" / "session.jsonl.gz", 500, 1000)
    (root / ".hidden.jsonl").write_text("")
    async with aiohttp.ClientSession() as http:
        ws = await connect(http, server, mode="all")
        other = await connect(http, server, mode="all", symbols="*")
        await ws.send_json({"op": "list_replays", "id": 1})
        listing = await frame(ws)
        assert listing == {
            "type": "replays",
            "id": 1,
            "sources": [
                {
                    "name": "day/session.jsonl.gz",
                    "bytes": (root / "day/session.jsonl.gz").stat().st_size,
                }
            ],
        }
        await ws.send_json({"op": "replay", "source": "day/session.jsonl.gz", "speed": 0, "id": 2})
        started = await frame(ws)
        assert started == {
            "type": "replay",
            "id": 2,
            "source": "day/session.jsonl.gz",
            "ticks": 500,
            "symbols": ["AAPL", "ZZZ"],
            "from": T0,
            "to": T0 + 499_000,
            "speed": 0.0,
        }
        got = await replayed_ticks(ws, 500)
        assert all(t["r"] == 1 for t in got)
        by_symbol = {s: [(t["p"], t["q"]) for t in got if t["s"] == s] for s in ("AAPL", "ZZZ")}
        assert by_symbol == {
            s: [(t["p"], t["q"]) for t in ticks if t["s"] == s] for s in ("AAPL", "ZZZ")
        }
        ended = await next_of(ws, "replay_state")
        assert ended["state"] == "ended" and ended["sent"] == 500
        assert ended["position"] == T0 + 499_000  # the last tick's time
        # nothing of the replay reached the bus or the other client
        assert node.bus.published == 0 and "ZZZ" not in node.bus.symbols()
        await other.send_json({"op": "ping", "id": 9})
        assert (await frame(other))["type"] in ("subscribed", "snapshot", "pong")
        await ws.close()
        await other.close()


async def test_pause_seek_resume_and_speed(replay_server: tuple[Node, Any, Path]) -> None:
    _, server, root = replay_server
    write(root / "slow.jsonl", 100, 100_000)  # 10 s of ticks, one per 100 ms
    async with aiohttp.ClientSession() as http:
        ws = await connect(http, server, mode="all")
        await ws.send_json({"op": "replay", "source": "slow.jsonl", "speed": 1})
        await next_of(ws, "replay")
        first = await replayed_ticks(ws, 1)
        assert first[0]["p"] == 100.0
        await ws.send_json({"op": "replay_control", "action": "pause", "id": "p"})
        paused = await next_of(ws, "replay_state")
        assert paused["state"] == "paused" and paused["id"] == "p"
        position = paused["position"]
        with pytest.raises(TimeoutError):  # nothing while paused
            await next_of(ws, "ticks", timeout=0.4)
        seek_to = T0 + 80 * 100_000
        await ws.send_json({"op": "replay_control", "action": "seek", "to": seek_to})
        sought = await next_of(ws, "replay_state")
        assert sought["state"] == "paused" and sought["position"] == seek_to > position
        await ws.send_json({"op": "replay_control", "action": "resume", "speed": 100})
        resumed = await next_of(ws, "replay_state")
        assert resumed["state"] == "playing" and resumed["speed"] == 100
        rest = await replayed_ticks(ws, 20)  # 2 s of recording at 100x: 20 ms
        assert sorted(t["p"] for t in rest) == [100.0 + i for i in range(80, 100)]
        assert (await next_of(ws, "replay_state"))["state"] == "ended"
        await ws.send_json({"op": "replay_control", "action": "speed", "speed": 2, "id": 3})
        error = await next_of(ws, "error")
        assert (error["code"], error["id"]) == ("no_replay", 3)
        await ws.close()


async def test_live_and_replayed_ticks_of_one_symbol_stay_apart(
    replay_server: tuple[Node, Any, Path],
) -> None:
    node, server, root = replay_server
    write(root / "aapl.jsonl", 50, 1000, symbols=("AAPL",))
    async with aiohttp.ClientSession() as http:
        ws = await connect(http, server, symbols="AAPL")  # mode conflate
        await next_of(ws, "subscribed")
        await ws.send_json({"op": "replay", "source": "aapl.jsonl", "speed": 0})
        await next_of(ws, "replay")
        node.bus.publish([{"s": "AAPL", "p": 1.0}])
        live = replayed = 0
        async with asyncio.timeout(5):
            while not (live and replayed):
                for tick in (await next_of(ws, "ticks"))["ticks"]:
                    if tick.get("r") == 1:
                        replayed += 1
                        assert tick["p"] >= 100.0
                    else:
                        live += 1
                        assert tick["p"] == 1.0
        await ws.close()


@pytest.mark.parametrize(
    "source",
    ["../secret.jsonl", "/etc/passwd", "day/../../x", ".hidden.jsonl", "a\\b", "none.jsonl"],
)
async def test_untrusted_or_unknown_sources_are_refused(
    replay_server: tuple[Node, Any, Path], source: str
) -> None:
    _, server, root = replay_server
    write(root.parent / "secret.jsonl", 3, 1)
    (root / ".hidden.jsonl").write_text("")
    async with aiohttp.ClientSession() as http:
        ws = await connect(http, server)
        await ws.send_json({"op": "replay", "source": source, "id": 1})
        error = await frame(ws)
        assert (error["type"], error["code"], error["id"]) == ("error", "unknown_source", 1)
        await ws.close()


async def test_a_bad_recording_is_a_bad_source_naming_the_line(
    replay_server: tuple[Node, Any, Path],
) -> None:
    _, server, root = replay_server
    (root / "broken.jsonl").write_text('{"s":"A","p":1,"t":1}\n{"s":"A","p":"x","t":2}\n')
    async with aiohttp.ClientSession() as http:
        ws = await connect(http, server)
        await ws.send_json({"op": "replay", "source": "broken.jsonl", "id": 4})
        error = await frame(ws)
        assert error["code"] == "bad_source" and error["id"] == 4
        assert error["message"].endswith('broken.jsonl:2: "p" must be a number')
        await ws.close()


async def test_without_a_replay_dir_replays_are_not_enabled(start_server: Any) -> None:
    _, server = await start_server()
    async with aiohttp.ClientSession() as http:
        ws = await connect(http, server)
        await ws.send_json({"op": "list_replays", "id": 1})
        error = await frame(ws)
        assert error["code"] == "unknown_source" and "not enabled" in error["message"]
        await ws.close()


def test_resolve_source_refuses_escapes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "ok.jsonl").write_text("")
    (root / "link.jsonl").symlink_to(tmp_path / "outside.jsonl")
    (tmp_path / "outside.jsonl").write_text("")
    assert resolve_source(root, "ok.jsonl") == root / "ok.jsonl"
    assert resolve_source(root, "./ok.jsonl") == root / "ok.jsonl"  # normalised, inside
    for name in ("link.jsonl", "", "ok.jsonl\x00", "C:\\x", "..", "a/.."):
        with pytest.raises(ProtocolError):
            resolve_source(root, name)


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ({"op": "replay"}, "source must be a string"),
        ({"op": "replay", "source": "x", "speed": -1}, "speed must be from 0"),
        ({"op": "replay", "source": "x", "speed": True}, "speed must be a number"),
        ({"op": "replay", "source": "x", "from": "soon"}, "from must be microseconds"),
        ({"op": "replay", "source": "x", "loop": 1}, "loop must be true or false"),
        ({"op": "replay", "source": "x", "symbols": []}, "symbols must be a non-empty list"),
        ({"op": "replay_control", "action": "rewind"}, "action must be one of"),
        ({"op": "replay_control", "action": "seek"}, "seek needs to"),
        ({"op": "replay_control", "action": "speed"}, "action speed needs speed"),
    ],
)
def test_replay_ops_are_validated(message: dict, needle: str) -> None:
    import orjson

    with pytest.raises(ProtocolError, match=needle) as err:
        parse(orjson.dumps(message))
    assert err.value.code == "bad_request"


def test_replay_op_parses_times_both_ways() -> None:
    op = parse(
        b'{"op":"replay","source":"a.jsonl","from":"2020-09-13T12:26:40","to":1600000001000000,'
        b'"symbols":["A"]}'
    )
    assert op.args["from"] == T0 and op.args["to"] == T0 + 1_000_000 and op.symbols == ["A"]
    assert op.args["speed"] == 1.0 and op.args["loop"] is False
