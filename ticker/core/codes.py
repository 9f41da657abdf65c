"""Close codes and error codes of protocol v1, with the reconnect rule written down once.

docs/protocol.md is checked against these tables by the tests.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY = 1008
    TOO_BIG = 1009
    SERVER_ERROR = 1011
    SLOW_CONSUMER = 4008
    RATE_LIMITED = 4029


RECONNECT: dict[CloseCode, str] = {
    CloseCode.NORMAL: "no: the client or the server ended the session on purpose",
    CloseCode.GOING_AWAY: "yes: the server is restarting or shutting down",
    CloseCode.POLICY: "no: a policy refused it (token expired, idle); only with a fresh token",
    CloseCode.TOO_BIG: "no: the client sent a message over the size limit",
    CloseCode.SERVER_ERROR: "yes: an unexpected server error",
    CloseCode.SLOW_CONSUMER: "yes, and resume: the client fell behind its queue limit",
    CloseCode.RATE_LIMITED: "yes, with backoff: the client sent too many operations",
}


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNKNOWN_OP = "unknown_op"
    UNKNOWN_SYMBOL = "unknown_symbol"
    NOT_ENTITLED = "not_entitled"
    TOO_MANY_SYMBOLS = "too_many_symbols"
    RATE_LIMITED = "rate_limited"
    UNKNOWN_SOURCE = "unknown_source"
    BAD_SOURCE = "bad_source"
    NO_REPLAY = "no_replay"
    BAD_TOKEN = "bad_token"
    UNKNOWN_SESSION = "unknown_session"
