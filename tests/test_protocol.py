"""Protocol v1 parsing and frame building, without sockets."""

from __future__ import annotations

import orjson
import pytest

from ticker.core import protocol
from ticker.core.codes import ErrorCode
from ticker.core.protocol import Op, ProtocolError


@pytest.mark.parametrize(
    ("raw", "op"),
    [
        (
            b'{"op":"subscribe","symbols":["AAPL","MSFT","AAPL"],"id":1}',
            Op("subscribe", 1, ["AAPL", "MSFT"]),
        ),
        ('{"op":"unsubscribe","symbols":["*"],"id":"x"}', Op("unsubscribe", "x", ["*"])),
        (b'{"op":"ping"}', Op("ping")),
        (b'{"op":"list","id":4,"extra":true}', Op("list", 4)),
    ],
)
def test_parse_valid(raw: bytes | str, op: Op) -> None:
    assert protocol.parse(raw) == op


@pytest.mark.parametrize(
    ("raw", "code", "rid"),
    [
        (b"not json", ErrorCode.BAD_JSON, None),
        (b'{"op":', ErrorCode.BAD_JSON, None),
        (b"\xff\xfe", ErrorCode.BAD_JSON, None),
        (b"[1,2]", ErrorCode.BAD_REQUEST, None),
        (b'"ping"', ErrorCode.BAD_REQUEST, None),
        (b"{}", ErrorCode.BAD_REQUEST, None),
        (b'{"op":5,"id":7}', ErrorCode.BAD_REQUEST, 7),
        (b'{"op":"ping","id":true}', ErrorCode.BAD_REQUEST, None),
        (b'{"op":"ping","id":[1]}', ErrorCode.BAD_REQUEST, None),
        (b'{"op":"ping","id":"' + b"x" * 65 + b'"}', ErrorCode.BAD_REQUEST, None),
        (b'{"op":"ping","id":9007199254740993}', ErrorCode.BAD_REQUEST, None),
        (b'{"op":"subscribe","id":2}', ErrorCode.BAD_REQUEST, 2),
        (b'{"op":"subscribe","symbols":"AAPL","id":2}', ErrorCode.BAD_REQUEST, 2),
        (b'{"op":"subscribe","symbols":[],"id":2}', ErrorCode.BAD_REQUEST, 2),
        (b'{"op":"subscribe","symbols":[1],"id":2}', ErrorCode.BAD_REQUEST, 2),
        (b'{"op":"subscribe","symbols":[""],"id":2}', ErrorCode.BAD_REQUEST, 2),
        (b'{"op":"subscribe","symbols":["' + b"A" * 33 + b'"]}', ErrorCode.BAD_REQUEST, None),
        (b'{"op":"fly","id":3}', ErrorCode.UNKNOWN_OP, 3),
    ],
)
def test_parse_errors_carry_code_and_id(raw: bytes, code: ErrorCode, rid: object) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.parse(raw)
    assert info.value.code == code
    assert info.value.id == rid
    frame = orjson.loads(info.value.frame())
    assert frame["type"] == "error" and frame["code"] == code.value
    assert frame.get("id") == rid
    assert frame["message"]


def test_tick_frames_are_joined_not_reencoded() -> None:
    ticks = [
        orjson.dumps({"s": "AAPL", "p": 1.5, "q": 1}),
        orjson.dumps({"s": "X", "p": 2, "q": 9}),
    ]
    frame = protocol.ticks(ticks)
    assert frame == b'{"type":"ticks","ticks":[' + ticks[0] + b"," + ticks[1] + b"]}"
    assert orjson.loads(frame)["ticks"][1] == {"s": "X", "p": 2, "q": 9}
    assert orjson.loads(protocol.snapshot(ticks))["type"] == "snapshot"


def test_replies_echo_ids_only_when_given() -> None:
    assert orjson.loads(protocol.pong(5, 3)) == {"type": "pong", "id": 3, "server_time": 5}
    assert "id" not in orjson.loads(protocol.pong(5))
    assert orjson.loads(protocol.subscription("subscribed", ["AAPL"], "a")) == {
        "type": "subscribed",
        "id": "a",
        "symbols": ["AAPL"],
    }
