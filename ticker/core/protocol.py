"""Protocol v1, sans I/O: parse what a client sends, build what the server sends.

Parsing turns raw bytes into a typed ``Op`` or raises ``ProtocolError`` carrying the error
code and the request id (so the error frame can echo it). Building returns bytes ready to
be written as one text frame; tick frames are joined from pre-encoded ticks, never
re-encoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ticker.core.codes import ErrorCode
from ticker.core.ticks import MAX_SYMBOL_LENGTH
from ticker.core.times import parse_time

PROTOCOL_VERSION = 1
MAX_ID_LENGTH = 64

RequestId = int | str | None

OPS = (
    "subscribe",
    "unsubscribe",
    "ping",
    "list",
    "replay",
    "replay_control",
    "list_replays",
    "auth",
)
REPLAY_ACTIONS = ("pause", "resume", "seek", "speed")
MAX_SOURCE_LENGTH = 256
MAX_REPLAY_SPEED = 10_000.0
MAX_TOKEN_LENGTH = 8192


class ProtocolError(Exception):
    """A client request that cannot be served; becomes an ``error`` frame."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        id: RequestId = None,
        symbols: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.symbols = symbols

    def frame(self) -> bytes:
        """The error frame the client gets instead of an exception."""
        return error(self.code, self.message, id=self.id, symbols=self.symbols)


@dataclass(frozen=True, slots=True)
class Op:
    """One parsed client operation."""

    op: str
    id: RequestId = None
    symbols: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)
    """Further validated parameters (the replay ops)."""


def _request_id(obj: dict[str, Any]) -> RequestId:
    rid = obj.get("id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "id must be an integer or a string")
    if isinstance(rid, str) and len(rid) > MAX_ID_LENGTH:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"id must be at most {MAX_ID_LENGTH} characters")
    if isinstance(rid, int) and abs(rid) > 2**53:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "id must fit in 53 bits")
    return rid


def _symbols(obj: dict[str, Any], rid: RequestId) -> list[str]:
    symbols = obj.get("symbols")
    if not isinstance(symbols, list) or not symbols:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "symbols must be a non-empty list of strings", id=rid
        )
    for symbol in symbols:
        if not isinstance(symbol, str) or not symbol or len(symbol) > MAX_SYMBOL_LENGTH:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"each symbol must be a string of 1 to {MAX_SYMBOL_LENGTH} characters",
                id=rid,
            )
    return list(dict.fromkeys(symbols))  # de-duplicated, order kept


def parse(data: bytes | str, op_name: str | None = None) -> Op:
    """Parse one text frame from a client; ``op_name``, when given, is its ``op`` (an op
    over HTTP names it in the path, the body holds the rest)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.BAD_JSON, "the message is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the message must be a JSON object")
    if op_name is not None:
        obj["op"] = op_name
    rid = _request_id(obj)
    op = obj.get("op")
    if not isinstance(op, str):
        raise ProtocolError(ErrorCode.BAD_REQUEST, '"op" must be a string', id=rid)
    if op not in OPS:
        raise ProtocolError(
            ErrorCode.UNKNOWN_OP,
            f"unknown op {op[:MAX_ID_LENGTH]!r}; known: {', '.join(OPS)}",
            id=rid,
        )
    if op == "subscribe":
        symbols = _symbols(obj, rid)
        args = _resume_args(obj, symbols, rid) if "since" in obj or "epoch" in obj else {}
        if "history" in obj:
            args["history"] = _history(obj["history"], rid)
        return Op(op, rid, symbols, args)
    if op == "unsubscribe":
        return Op(op, rid, _symbols(obj, rid))
    if op == "replay":
        symbols = _symbols(obj, rid) if "symbols" in obj else []
        return Op(op, rid, symbols, _replay_args(obj, rid))
    if op == "replay_control":
        return Op(op, rid, args=_control_args(obj, rid))
    if op == "auth":
        token = obj.get("token")
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
            raise _bad(f"token must be a string of 1 to {MAX_TOKEN_LENGTH} characters", rid)
        return Op(op, rid, args={"token": token})
    return Op(op, rid)


def _bad(message: str, rid: RequestId) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, message, id=rid)


def _speed(obj: dict[str, Any], rid: RequestId, default: float | None) -> float | None:
    speed = obj.get("speed", default)
    if speed is None:
        return None
    if isinstance(speed, bool) or not isinstance(speed, int | float):
        raise _bad("speed must be a number", rid)
    if not 0 <= speed <= MAX_REPLAY_SPEED:
        raise _bad(f"speed must be from 0 to {MAX_REPLAY_SPEED:g} (0 = as fast as you read)", rid)
    return float(speed)


def _time(obj: dict[str, Any], key: str, rid: RequestId) -> int | None:
    """µs since the epoch as an integer, or an ISO-8601 string."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**53:
        return value
    if isinstance(value, str) and len(value) <= MAX_ID_LENGTH:
        try:
            return parse_time(value)
        except ValueError:
            pass
    raise _bad(f"{key} must be microseconds since 1970 or an ISO-8601 time", rid)


def _flag(obj: dict[str, Any], key: str, rid: RequestId) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise _bad(f"{key} must be true or false", rid)
    return value


def _replay_args(obj: dict[str, Any], rid: RequestId) -> dict[str, Any]:
    source = obj.get("source")
    if not isinstance(source, str) or not 0 < len(source) <= MAX_SOURCE_LENGTH:
        raise _bad(f"source must be a string of 1 to {MAX_SOURCE_LENGTH} characters", rid)
    return {
        "source": source,
        "speed": _speed(obj, rid, 1.0),
        "from": _time(obj, "from", rid),
        "to": _time(obj, "to", rid),
        "loop": _flag(obj, "loop", rid),
        "keep_time": _flag(obj, "keep_time", rid),
    }


def _history(value: object, rid: RequestId) -> int:
    """How many closed bars a derived topic's first frame should hold (its bound is the
    server's, checked by the session)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31:
        raise _bad("history must be a whole number of bars (0 or more)", rid)
    return value


def _resume_args(obj: dict[str, Any], symbols: list[str], rid: RequestId) -> dict[str, Any]:
    """``since`` (symbol -> last q seen) and the ``epoch`` those q belong to."""
    since, epoch = obj.get("since"), obj.get("epoch")
    if not isinstance(since, dict):
        raise _bad("since must be an object of symbol: last q seen", rid)
    if not isinstance(epoch, str) or not 0 < len(epoch) <= MAX_ID_LENGTH:
        raise _bad(f"since needs the epoch it counts in (a string of 1 to {MAX_ID_LENGTH})", rid)
    if "*" not in symbols and (stray := [s for s in since if s not in symbols]):
        raise _bad(f"since names symbols the request does not subscribe: {stray[:5]}", rid)
    for q in since.values():
        if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= 2**53:
            raise _bad("each since value must be a q: a whole number from 0 to 2^53", rid)
    return {"since": since, "epoch": epoch}


def _control_args(obj: dict[str, Any], rid: RequestId) -> dict[str, Any]:
    action = obj.get("action")
    if action not in REPLAY_ACTIONS:
        raise _bad(f"action must be one of {', '.join(REPLAY_ACTIONS)}", rid)
    args = {"action": action, "to": _time(obj, "to", rid), "speed": _speed(obj, rid, None)}
    if action == "seek" and args["to"] is None:
        raise _bad("seek needs to", rid)
    if action == "speed" and args["speed"] is None:
        raise _bad("action speed needs speed", rid)
    return args


# -- server frames --------------------------------------------------------------------


def _dumps(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


def _with_id(frame: dict[str, Any], rid: RequestId) -> dict[str, Any]:
    if rid is not None:
        frame["id"] = rid
    return frame


def welcome(
    *,
    session: str,
    epoch: str,
    mode: str,
    heartbeat_s: float,
    server_time: int,
    limits: dict[str, float],
    auth: dict[str, Any] | None = None,
) -> bytes:
    """The first frame: the session, the epoch ``q`` counts in, and the limits in force."""
    frame = {
        "type": "welcome",
        "protocol": PROTOCOL_VERSION,
        "session": session,
        "epoch": epoch,
        "mode": mode,
        "heartbeat_s": heartbeat_s,
        "server_time": server_time,
        "limits": limits,
    }
    if auth is not None:
        frame["auth"] = auth
    return _dumps(frame)


def authenticated(auth: dict[str, Any], rid: RequestId = None) -> bytes:
    """Reply to ``auth``: the refreshed token's subject, expiry, patterns and delay."""
    return _dumps(_with_id({"type": "authenticated", **auth}, rid))


def subscription(
    kind: str,
    symbols: list[str],
    rid: RequestId = None,
    recovered: dict[str, bool] | None = None,
) -> bytes:
    """``subscribed`` or ``unsubscribed``, always with the full current set; a resume
    (``since``) says per symbol whether its missed ticks follow (``recovered``)."""
    frame = _with_id({"type": kind, "symbols": symbols}, rid)
    if recovered is not None:
        frame["recovered"] = recovered
    return _dumps(frame)


def symbols_list(symbols: list[str], rid: RequestId = None) -> bytes:
    """The answer to ``list_symbols``."""
    return _dumps(_with_id({"type": "symbols", "symbols": symbols}, rid))


def pong(server_time: int, rid: RequestId = None) -> bytes:
    """The answer to ``ping``, with the server's clock for the client's offset."""
    return _dumps(_with_id({"type": "pong", "server_time": server_time}, rid))


def heartbeat(server_time: int) -> bytes:
    """Sent after a silence: browsers cannot see WebSocket pings."""
    return _dumps({"type": "heartbeat", "server_time": server_time})


def status(symbols: dict[str, dict[str, object]]) -> bytes:
    """Per-symbol status (``ticker/core/status.py``): each symbol named, with its status,
    the reason and since when (µs)."""
    return _dumps({"type": "status", "symbols": symbols})


def close(code: int, reason: str) -> bytes:
    """The last message of an SSE stream or a long-polling session: what a WebSocket
    says in its close frame."""
    return _dumps({"type": "close", "code": code, "reason": reason})


def error(
    code: ErrorCode,
    message: str,
    *,
    id: RequestId = None,
    symbols: list[str] | None = None,
) -> bytes:
    """An error frame; ``symbols`` names the symbols a subscribe refused."""
    frame = _with_id({"type": "error", "code": str(code), "message": message}, id)
    if symbols is not None:
        frame["symbols"] = symbols
    return _dumps(frame)


_TICKS_HEAD = b'{"type":"ticks","ticks":['
_SNAPSHOT_HEAD = b'{"type":"snapshot","ticks":['
_TAIL = b"]}"


def ticks(encoded: list[bytes]) -> bytes:
    """A ``ticks`` frame from ticks the bus already encoded: a join, not an encode."""
    return b"".join((_TICKS_HEAD, b",".join(encoded), _TAIL))


def snapshot(encoded: list[bytes]) -> bytes:
    """The last ticks of the symbols just subscribed, as encoded when published."""
    return b"".join((_SNAPSHOT_HEAD, b",".join(encoded), _TAIL))


_CANDLES_HEAD = b'{"type":"candles","candles":['


def candles(encoded: list[bytes]) -> bytes:
    """A ``candles`` frame from bars encoded once (``ticker/core/candles.py``)."""
    return b"".join((_CANDLES_HEAD, b",".join(encoded), _TAIL))


# -- replays on demand --------------------------------------------------------------------


def replays(sources: list[dict[str, Any]], rid: RequestId = None) -> bytes:
    """Reply to ``list_replays``: each source's ``name`` and size in ``bytes``."""
    return _dumps(_with_id({"type": "replays", "sources": sources}, rid))


def replay_started(
    *,
    source: str,
    ticks: int,
    symbols: list[str],
    start: int,
    end: int,
    speed: float,
    rid: RequestId = None,
) -> bytes:
    """The answer to ``replay``: what will be replayed, from when, how fast."""
    frame = {
        "type": "replay",
        "source": source,
        "ticks": ticks,
        "symbols": symbols,
        "from": start,
        "to": end,
        "speed": speed,
    }
    return _dumps(_with_id(frame, rid))


def replay_state(
    state: str, *, source: str, position: int, speed: float, sent: int, rid: RequestId = None
) -> bytes:
    """``playing``, ``paused`` or ``ended``; ``position`` is a time of the recording."""
    frame = {
        "type": "replay_state",
        "state": state,
        "source": source,
        "position": position,
        "speed": speed,
        "sent": sent,
    }
    return _dumps(_with_id(frame, rid))
