"""Close codes, error codes and HTTP refusals of protocol v1, with the reconnect rule, as data.

The Python client decides by these and the server answers by them; docs/protocol.md and
ticker-client.js keep copies that tests/test_codes.py checks against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    """Close codes this server sends (docs/protocol.md, Close codes)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY = 1008
    TOO_BIG = 1009
    SERVER_ERROR = 1011
    SLOW_CONSUMER = 4008
    RATE_LIMITED = 4029


ABNORMAL = 1006
"""Not sent by the server: what a client's WebSocket stack reports for a connection that
ended without a close frame. Clients treat it like any code the table does not name."""


class Retry(StrEnum):
    """Whether a client reconnects after a close, and how long the first wait is."""

    NEVER = "never"
    BACKOFF = "backoff"
    """Exponential backoff from ``Backoff.initial_s``."""
    LONG_BACKOFF = "long_backoff"
    """Exponential backoff from ``Backoff.rate_limited_s``: the client must send less."""


@dataclass(frozen=True, slots=True)
class ReconnectRule:
    """What a client does after one close code; ``prose`` is the docs' reconnect column."""

    retry: Retry
    resume: bool
    """Reconnect with ``since``/``epoch`` to have what was missed replayed."""
    prose: str


@dataclass(frozen=True, slots=True)
class Backoff:
    """The reconnect delays every client of this repository uses (both must agree)."""

    initial_s: float = 0.5
    rate_limited_s: float = 5.0
    max_s: float = 30.0
    jitter: float = 0.2
    """Each delay is multiplied by a factor in 1 ± ``jitter``."""

    def delay_s(self, retry: Retry, attempt: int, unit: float) -> float | None:
        """Seconds before attempt ``attempt`` (0 = the first), None for ``Retry.NEVER``.

        ``unit`` in [0, 1] picks the jitter (0: shortest, 1: longest), so the rule stays
        pure and a caller's random source or a test's constant decides it.
        """
        if retry is Retry.NEVER:
            return None
        base = self.rate_limited_s if retry is Retry.LONG_BACKOFF else self.initial_s
        delay = min(self.max_s, base * 2.0 ** min(attempt, 32))
        return delay * (1 - self.jitter + 2 * self.jitter * unit)


BACKOFF = Backoff()

RECONNECT: dict[CloseCode, ReconnectRule] = {
    CloseCode.NORMAL: ReconnectRule(
        Retry.NEVER, False, "no: the client or the server ended the session on purpose"
    ),
    CloseCode.GOING_AWAY: ReconnectRule(
        Retry.BACKOFF, False, "yes: the server is restarting or shutting down"
    ),
    CloseCode.POLICY: ReconnectRule(
        Retry.NEVER,
        False,
        "no: a policy refused it (token expired, idle); only with a fresh token",
    ),
    CloseCode.TOO_BIG: ReconnectRule(
        Retry.NEVER, False, "no: the client sent a message over the size limit"
    ),
    CloseCode.SERVER_ERROR: ReconnectRule(Retry.BACKOFF, False, "yes: an unexpected server error"),
    CloseCode.SLOW_CONSUMER: ReconnectRule(
        Retry.BACKOFF, True, "yes, and resume: the client fell behind its queue limit"
    ),
    CloseCode.RATE_LIMITED: ReconnectRule(
        Retry.LONG_BACKOFF, False, "yes, with backoff: the client sent too many operations"
    ),
}

OTHER_CLOSE = ReconnectRule(
    Retry.BACKOFF, False, "yes: the connection failed (1006, or a code not listed)"
)
"""The rule for a code the table does not name (1006 above all)."""


def reconnect_rule(code: int) -> ReconnectRule:
    """The rule a client follows after ``code``, whether or not this server sends it."""
    try:
        return RECONNECT[CloseCode(code)]
    except ValueError:
        return OTHER_CLOSE


class ErrorCode(StrEnum):
    """The ``code`` of an ``error`` message (docs/protocol.md, Error codes)."""

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


class Refusal(StrEnum):
    """The ``code`` of an HTTP refusal: of a handshake, an op, a poll or a publish request."""

    BAD_REQUEST = "bad_request"
    BAD_JSON = "bad_json"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    NOT_ENTITLED = "not_entitled"
    UNKNOWN_SESSION = "unknown_session"
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    UNIVERSE_FULL = "universe_full"
    RATE_LIMITED = "rate_limited"
    SHUTTING_DOWN = "shutting_down"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    TOO_MANY_FOR_SUBJECT = "too_many_for_subject"
    TOO_MANY_FOR_IP = "too_many_for_ip"
    TOO_MANY_HANDSHAKES = "too_many_handshakes"
    TOO_MANY_DELAYS = "too_many_delays"
    TOO_MANY_SESSIONS = "too_many_sessions"
    FED_SYMBOL = "fed_symbol"
    CLUSTER_UNAVAILABLE = "cluster_unavailable"


@dataclass(frozen=True, slots=True)
class HttpRefusal:
    """How the server answers one refusal, and whether the client should try again."""

    status: int
    retry: Retry
    """``NEVER``: the same request is refused again; fix it (or the token) first."""
    retry_after_s: float | None = None
    """The ``Retry-After`` sent with it; a rate limit computes its own instead."""


_BUSY = HttpRefusal(503, Retry.BACKOFF, 5.0)
_HELD = HttpRefusal(429, Retry.BACKOFF, 5.0)

HTTP_REFUSALS: dict[Refusal, HttpRefusal] = {
    Refusal.BAD_REQUEST: HttpRefusal(400, Retry.NEVER),
    Refusal.BAD_JSON: HttpRefusal(400, Retry.NEVER),
    Refusal.UNIVERSE_FULL: HttpRefusal(400, Retry.NEVER),
    Refusal.UNAUTHORIZED: HttpRefusal(401, Retry.NEVER),
    Refusal.FORBIDDEN: HttpRefusal(403, Retry.NEVER),
    Refusal.FORBIDDEN_ORIGIN: HttpRefusal(403, Retry.NEVER),
    Refusal.NOT_ENTITLED: HttpRefusal(403, Retry.NEVER),
    Refusal.UNKNOWN_SESSION: HttpRefusal(404, Retry.NEVER),
    Refusal.TOO_LARGE: HttpRefusal(413, Retry.NEVER),
    Refusal.UNSUPPORTED_MEDIA_TYPE: HttpRefusal(415, Retry.NEVER),
    Refusal.FED_SYMBOL: HttpRefusal(409, Retry.NEVER),
    Refusal.IDEMPOTENCY_KEY_REUSED: HttpRefusal(422, Retry.NEVER),
    Refusal.RATE_LIMITED: HttpRefusal(429, Retry.LONG_BACKOFF),
    Refusal.TOO_MANY_FOR_SUBJECT: _HELD,
    Refusal.TOO_MANY_FOR_IP: _HELD,
    Refusal.SHUTTING_DOWN: HttpRefusal(503, Retry.BACKOFF),
    Refusal.TOO_MANY_CONNECTIONS: _BUSY,
    Refusal.TOO_MANY_HANDSHAKES: _BUSY,
    Refusal.TOO_MANY_DELAYS: HttpRefusal(503, Retry.BACKOFF),
    Refusal.TOO_MANY_SESSIONS: HttpRefusal(503, Retry.BACKOFF),
    Refusal.CLUSTER_UNAVAILABLE: HttpRefusal(503, Retry.BACKOFF, 1.0),
}
"""Status, retry advice and ``Retry-After`` of every HTTP refusal (docs/protocol.md,
docs/publishing.md)."""
