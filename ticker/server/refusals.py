"""Every HTTP refusal the server gives, built in one place from the table in ``ticker.core.codes``.

A refusal is a JSON body with the status of its code (``HTTP_REFUSALS``), ``Retry-After``
when the table (or a rate limit) says when to come back, and ``WWW-Authenticate`` on a
401. The handshake, the ops and polls of SSE and long polling, and ``/publish`` all raise
what ``refusal`` returns, so a new refusal is one row in the table and one call here.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import hdrs, web

from ticker.core.codes import HTTP_REFUSALS, Refusal
from ticker.core.publish_gate import retry_after


class Refused(web.HTTPException):
    """An HTTP refusal of any status (aiohttp has a class per status; the table decides)."""

    def __init__(self, status: int, *, text: str, headers: Mapping[str, str]) -> None:
        self.status_code = status
        super().__init__(text=text, content_type="application/json", headers=headers)


def refusal(
    code: Refusal,
    message: str,
    *,
    body: Mapping[str, object] | None = None,
    retry_after_s: float | None = None,
) -> web.HTTPException:
    """The refusal to raise: ``{"type": "error", "code", "message"}`` unless ``body`` is
    given (``/publish`` answers ``{"error": code, ...}``); ``retry_after_s`` overrides the
    table's ``Retry-After``."""
    row = HTTP_REFUSALS[code]
    headers: dict[str, str] = {}
    if code is Refusal.UNAUTHORIZED:
        headers[hdrs.WWW_AUTHENTICATE] = 'Bearer error="invalid_token"'
    wait = row.retry_after_s if retry_after_s is None else retry_after_s
    if wait is not None:
        headers[hdrs.RETRY_AFTER] = retry_after(wait)
    if body is None:
        body = {"type": "error", "code": code.value, "message": message}
    return Refused(row.status, text=orjson.dumps(body).decode(), headers=headers)
