"""The one table of codes (ticker.core.codes) against its copies: docs/protocol.md and
ticker-client.js. Each failure names the code and the place that drifted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ticker.core.codes import (
    ABNORMAL,
    BACKOFF,
    HTTP_REFUSALS,
    RECONNECT,
    CloseCode,
    ErrorCode,
    HttpRefusal,
    Refusal,
    Retry,
    reconnect_rule,
)

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text()
CLIENT_JS = (ROOT / "ticker" / "static" / "ticker-client.js").read_text()


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a markdown text."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/protocol.md has no section '## {title}'"
    return match.group(1)


def table(body: str) -> dict[str, list[str]]:
    """The first markdown table of ``body``: first cell (backticks stripped) -> the others."""
    rows = [line for line in body.splitlines() if line.startswith("|")][2:]
    cells = [[c.strip() for c in row.strip().strip("|").split(" | ")] for row in rows]
    return {c[0].strip("`"): c[1:] for c in cells}


def never() -> set[int]:
    return {int(c) for c, rule in RECONNECT.items() if rule.retry is Retry.NEVER}


def test_rule_of_a_code_the_table_does_not_name_is_backoff() -> None:
    assert reconnect_rule(ABNORMAL).retry is Retry.BACKOFF
    assert reconnect_rule(4999).retry is Retry.BACKOFF
    assert reconnect_rule(1009) is RECONNECT[CloseCode.TOO_BIG]


def test_backoff_doubles_is_capped_and_jittered() -> None:
    assert BACKOFF.delay_s(Retry.NEVER, 0, 0.5) is None
    assert [BACKOFF.delay_s(Retry.BACKOFF, n, 0.5) for n in range(8)] == [
        0.5,
        1,
        2,
        4,
        8,
        16,
        30,
        30,
    ]
    assert BACKOFF.delay_s(Retry.LONG_BACKOFF, 0, 0.0) == pytest.approx(4.0)
    assert BACKOFF.delay_s(Retry.BACKOFF, 10_000, 1.0) == pytest.approx(36.0)


def test_protocol_doc_close_code_table_matches() -> None:
    rows = table(section(PROTOCOL, "Close codes"))
    assert set(rows) == {str(int(c)) for c in CloseCode}, "close codes in docs/protocol.md"
    for code, rule in RECONNECT.items():
        assert rows[str(int(code))][-1] == rule.prose, f"docs/protocol.md: reconnect? of {code}"


def test_protocol_doc_error_code_table_matches() -> None:
    rows = table(section(PROTOCOL, "Error codes"))
    assert set(rows) == {c.value for c in ErrorCode}, "error codes in docs/protocol.md"


def retry_prose(row: HttpRefusal) -> str:
    """The docs' "retry?" cell of an HTTP refusal."""
    if row.retry is Retry.NEVER:
        return "no"
    if row.retry is Retry.LONG_BACKOFF:
        return "after `Retry-After`"
    if row.retry_after_s is not None:
        return f"after `Retry-After` ({row.retry_after_s:g} s)"
    return "with backoff"


def test_every_refusal_has_a_row_and_the_protocol_doc_matches() -> None:
    assert set(HTTP_REFUSALS) == set(Refusal)
    rows = table(section(PROTOCOL, "HTTP refusals"))
    assert set(rows) == {c.value for c in Refusal}, "HTTP refusals in docs/protocol.md"
    for code, row in HTTP_REFUSALS.items():
        status, _, retry = rows[code.value]
        assert int(status) == row.status, f"docs/protocol.md: status of {code}"
        assert retry == retry_prose(row), f"docs/protocol.md: retry? of {code}"


def test_publishing_doc_statuses_match() -> None:
    text = (ROOT / "docs" / "publishing.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 4") or line.startswith("| 5")]
    for line in rows:
        status, code = (c.strip().strip("`") for c in line.strip("|").split(" | ")[:2])
        assert HTTP_REFUSALS[Refusal(code)].status == int(status), f"publishing.md: {code}"


def test_protocol_doc_reconnecting_section_matches() -> None:
    body = section(PROTOCOL, "Reconnecting")
    bullets = {
        head: {int(c) for c in re.findall(r"\b\d{4}\b", f"{head} {listed}")}
        for head, listed in re.findall(r"^\* \*\*(.+?)\*\*(?: \(([\d, ]+)\))?", body, re.M)
    }
    assert bullets["no"] == never(), "docs/protocol.md, Reconnecting: the 'no' codes"
    assert ABNORMAL in bullets["yes"]
    for code in bullets["yes"]:
        assert reconnect_rule(code).retry is Retry.BACKOFF, f"Reconnecting: {code} is no 'yes'"
    for code, rule in RECONNECT.items():
        heads = [head for head, codes in bullets.items() if head.startswith(str(int(code)))]
        if rule.retry is Retry.LONG_BACKOFF or rule.resume:
            assert heads, f"docs/protocol.md, Reconnecting: no bullet of its own for {code}"
        assert ("resume" in "".join(heads)) == rule.resume, f"Reconnecting: resume of {code}"
    for words in (
        f"{BACKOFF.initial_s:g} s, doubling, capped at {BACKOFF.max_s:g} s",
        f"±{BACKOFF.jitter:.0%}".replace("%", " %"),
        f"starting at {BACKOFF.rate_limited_s:g} s",
    ):
        assert words in " ".join(body.split()), f"docs/protocol.md, Reconnecting: '{words}'"


def js_constant(name: str) -> str:
    match = re.search(rf"^(?:export )?const {name} = (.+);$", CLIENT_JS, re.M)
    assert match, f"ticker-client.js defines no {name}"
    return match.group(1)


def test_js_client_constants_match() -> None:
    no_reconnect = re.fullmatch(r"Object\.freeze\(\[([\d, ]+)\]\)", js_constant("NO_RECONNECT"))
    assert no_reconnect, "ticker-client.js: NO_RECONNECT is not a frozen list of numbers"
    assert {int(c) for c in no_reconnect.group(1).split(",")} == never(), "JS NO_RECONNECT"
    long_codes = [int(c) for c, r in RECONNECT.items() if r.retry is Retry.LONG_BACKOFF]
    assert [int(js_constant("RATE_LIMITED"))] == long_codes, "JS RATE_LIMITED"
    backoff = re.fullmatch(r"Object\.freeze\(\{(.+)\}\)", js_constant("BACKOFF"))
    assert backoff, "ticker-client.js: BACKOFF is not a frozen object"
    fields = dict(f.split(": ") for f in backoff.group(1).strip().split(", "))
    assert {k: float(v) for k, v in fields.items()} == {
        "initialMs": BACKOFF.initial_s * 1000,
        "rateLimitedMs": BACKOFF.rate_limited_s * 1000,
        "maxMs": BACKOFF.max_s * 1000,
        "jitter": BACKOFF.jitter,
    }, "JS BACKOFF"


def test_protocol_doc_examples_stop_on_the_same_codes() -> None:
    examples = re.findall(r"NO_RECONNECT = (?:new Set\(\[|\{)([\d, ]+)[\]}]", PROTOCOL)
    assert len(examples) == 2, "the JavaScript and Python examples of docs/protocol.md"
    for listed in examples:
        assert {int(c) for c in listed.split(",")} == never(), "an example's NO_RECONNECT"
