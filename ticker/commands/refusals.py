"""What a server refused, said the way the commands say a user's mistake: one line that
names the thing and what to do (exit status 2). Shared by ``tail`` and ``record``."""

from __future__ import annotations

from collections.abc import Iterable

WILDCARD = "*"
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


class Refused:
    """The symbols of the first subscription the server refused (``unknown_symbol``,
    ``not_entitled``), to tell when nothing asked for is left: then there is nothing to
    wait for."""

    def __init__(self, asked: Iterable[str]) -> None:
        self.asked = set(asked)
        self.symbols: set[str] = set()
        self.messages: list[str] = []

    def add(self, message: str, symbols: Iterable[str]) -> bool:
        """One error frame; True when every symbol asked for has been refused (an error
        that names no symbols refuses none)."""
        symbols = list(symbols)
        if not symbols:
            return False
        self.messages.append(message)
        self.symbols.update(symbols)
        return WILDCARD not in self.asked and self.asked <= self.symbols

    def line(self, command: str) -> str:
        """The one line for nothing left: the server's words and what to do."""
        return (
            f"ticker {command}: error: {'; '.join(self.messages)}: nothing to {command} "
            f"(check the names; '{WILDCARD}' = every symbol)"
        )
