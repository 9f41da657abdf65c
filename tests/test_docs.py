"""The docs that client authors rely on agree with the code."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from tests.conftest import StartServer

ROOT = Path(__file__).resolve().parent.parent


def test_readme_links_the_docs_and_names_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make run" in text and "make test" in text
    assert "docs/protocol.md" in text


PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOC_URL = "ws://127.0.0.1:8080/ws"


def python_block(doc: str, containing: str) -> str:
    """The one ```python block of ``doc`` that contains ``containing``, as quoted."""
    text = (ROOT / doc).read_text()
    blocks: list[str] = [b for b in PYTHON_BLOCK.findall(text) if containing in b]
    assert len(blocks) == 1, f"{doc}: {len(blocks)} python blocks with {containing!r}"
    return blocks[0]


@pytest.mark.parametrize(
    ("doc", "containing"),
    [
        ("README.md", "ticker.client.connect"),
        ("docs/python-client.md", "ticker.client.connect"),
        ("docs/protocol.md", "async def stream"),
    ],
)
async def test_a_quoted_client_ends_quietly_on_ctrl_c(
    start_server: StartServer, doc: str, containing: str
) -> None:
    """The example as quoted, against a real server: it prints ticks, and SIGINT ends it
    with status 0 and nothing on stderr (no chained tracebacks)."""
    node, server = await start_server()
    node.bus.publish([{"s": "AAPL", "p": 1.5}, {"s": "MSFT", "p": 2.5}])
    source = python_block(doc, containing)
    assert source.count(DOC_URL) == 1
    source = source.replace(DOC_URL, f"ws://{server.host}:{server.port}/ws")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        source,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(20):
            first = await child.stdout.readline()
        assert first.startswith((b"AAPL 1.5", b"MSFT 2.5")), first
        child.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            _, err = await child.communicate()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert b"Traceback" not in err and err == b"", err.decode()
    assert child.returncode == 0
