"""What a server refused, said the way the commands say a user's mistake: one line that
names the thing and what to do (exit status 2). Shared by ``tail`` and ``record``."""

from __future__ import annotations

from ticker.client.state import SubscriptionRefused
from ticker.core.bus import WILDCARD

TOKEN_HINT = "pass --token (or set TICKER_TOKEN) with a token this server accepts"
ENDPOINTS_HINT = (
    "a ticker server's URLs are ws(s)://HOST/ws, http(s)://HOST/sse, http(s)://HOST/poll"
)


def is_mistake(status: int) -> bool:
    """A handshake the user must fix (not a WebSocket endpoint, bad request, no token),
    not one refused for a while (429 too many, 5xx)."""
    return status < 500 and status != 429


def refused_line(command: str, url: str, reason: str, status: int) -> str:
    """``reason``: the server's, e.g. ``HTTP 401: a token is required (...)``."""
    hint = TOKEN_HINT if status == 401 else ENDPOINTS_HINT if status < 400 or status == 404 else ""
    return f"ticker {command}: error: {url}: {reason}" + (f"; {hint}" if hint else "")


def nothing_left_line(command: str, refused: SubscriptionRefused) -> str:
    """The one line for a subscription refused in full: the server's words and what to do."""
    hint = f" (check the names; '{WILDCARD}' = every symbol)" if refused.symbols else ""
    return f"ticker {command}: error: {refused}: nothing to {command}{hint}"
