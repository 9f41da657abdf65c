"""The docs that client authors rely on agree with the code."""

from __future__ import annotations

from pathlib import Path

from ticker.core.codes import RECONNECT, CloseCode, ErrorCode

ROOT = Path(__file__).resolve().parent.parent


def test_protocol_doc_lists_every_close_code_with_its_reconnect_rule() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    for code in CloseCode:
        rows = [
            line for line in text.splitlines() if line.startswith("|") and str(int(code)) in line
        ]
        assert rows, f"close code {int(code)} is missing from docs/protocol.md"
        assert any(RECONNECT[code].prose in row for row in rows), f"reconnect rule of {int(code)}"


def test_protocol_doc_lists_every_error_code() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    for code in ErrorCode:
        assert f"`{code.value}`" in text, f"error code {code.value} is missing"


def test_readme_links_the_docs_and_names_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
    assert "docs/protocol.md" in text
