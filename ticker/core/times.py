"""Times as the formats and the protocol give them, to integer µs since the Unix epoch UTC."""

from __future__ import annotations

from datetime import UTC, datetime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME_TEXT = 64


def micros(moment: datetime) -> int:
    """Exact: integer arithmetic on the timedelta, no float seconds on the way."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_time(text: str) -> int:
    """Integer µs since the epoch (digits), or ISO-8601 (UTC unless it says otherwise)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        return micros(datetime.fromisoformat(text[:MAX_TIME_TEXT]))
    except ValueError:
        raise ValueError(f"{text!r} is neither ISO-8601 nor microseconds since 1970") from None


parse_time.__name__ = "time"  # how argparse names the type in its error messages
