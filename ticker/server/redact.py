"""Tokens never reach the logs: a filter on the log handlers that masks them.

Our own log lines never include a query string or a header, and ``ticker serve`` keeps
aiohttp's access log off; this is the net under that (a library's error that quotes a
URL, an access log turned on by someone else).
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"
_PATTERNS = (
    re.compile(r"(?i)(token=)[^&\s\"']+"),
    re.compile(r"(?i)(bearer[ ,]+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"()eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),  # any JWT
)


def redact(text: str) -> str:
    """Masks every token shape we know of (query, bearer header, bare JWT) in any text."""
    for pattern in _PATTERNS:
        text = pattern.sub(rf"\g<1>{REDACTED}", text)
    return text


class RedactTokens(logging.Filter):
    """Masks tokens in a record's formatted message (and its exception text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a record (and its traceback) with tokens masked; never drops it."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def install() -> None:
    """On every handler of the root logger (filters on loggers miss propagated records)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactTokens())
