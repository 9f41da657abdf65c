"""Server settings: one frozen object built by the CLI (or a test) and read everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ticker.core.admission import ConnectionLimits
from ticker.core.candles import DEFAULT_HISTORY as CANDLE_HISTORY
from ticker.core.delay import DEFAULT_MAX_BYTES
from ticker.core.history import DEFAULT_DEPTH
from ticker.core.publish import PublishLimits
from ticker.core.session import Limits

if TYPE_CHECKING:
    from ticker.core.tokens import TokenVerifier


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a node is configured with: built once, read everywhere, never changed."""

    host: str = "127.0.0.1"
    port: int = 8080
    heartbeat_s: float = 20.0
    """Application heartbeat frame after this long without sending anything."""
    ping_interval_s: float = 20.0
    """WebSocket ping after this long without hearing from the peer; pong due in half."""
    close_grace_s: float = 2.0
    """How long a closing client may take to take its close frame before it is aborted."""
    feed_backoff_s: float = 0.5
    """First delay before restarting a failed feed; doubles per failure up to the max."""
    feed_backoff_max_s: float = 30.0
    metrics: bool = True
    """Count latency and event-loop lag and serve ``/metrics``; off only to measure their cost."""
    metrics_port: int | None = None
    """Serve ``/metrics`` on this port instead of the main one (so it need not be public)."""
    metrics_host: str | None = None
    """Address of the metrics port; ``None``: the same as ``host``."""
    loop_lag_interval_s: float = 0.1
    """How often the event-loop lag probe wakes up."""
    limits: Limits = field(default_factory=Limits)
    auth: TokenVerifier | None = None
    """Verifies the clients' tokens (``--auth-secret``/``--auth-public-key``); None: auth off."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins besides the server's own that may connect (lower case; "*": any)."""
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    delay_max_bytes: int = DEFAULT_MAX_BYTES
    """Bytes each delay line may hold (``ticker/core/delay.py``)."""
    history: int = DEFAULT_DEPTH
    """Ticks of each symbol kept for resume (``since``, SSE ``Last-Event-ID``); 0: none."""
    poll_hold_s: float = 25.0
    """How long a long poll waits for something to answer before it answers empty."""
    poll_session_s: float = 60.0
    """How long a long-polling session lives without a poll (its mailbox fills meanwhile)."""
    max_http_sessions: int = 10_000
    """SSE streams and long-polling sessions open at once (a poll session has no socket
    of its own to bound it)."""
    publish: PublishLimits | None = None
    """Accept ticks from publishers (``--publish``) within these limits; None: off."""
    session_prefix: str = ""
    """Starts every session id: a worker's index and ``-`` (``--workers``), so that any
    worker can tell whose an SSE or long-polling session is (``ticker/server/owners.py``)."""
    candle_history: int = CANDLE_HISTORY
    """Closed bars kept per symbol and interval (``--candle-history``); 0: no candles."""
    candle_update_s: float = 0.25
    """The open bar of a candle topic is sent at most this often (``--candle-update-ms``)."""
    book_interval_s: float = 0.05
    """Book topics are updated once per this (``--book-interval-ms``); 0: no book topics."""
    record_dir: Path | None = None
    """Where ``--record`` writes; at start the candles rebuild today's bars from it."""


def url_host(host: str) -> str:
    """``host`` as it stands in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host
