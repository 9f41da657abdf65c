"""Loopback helpers for tests (and benchmarks) that start servers in other processes."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server started in a subprocess)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(
    http: aiohttp.ClientSession, port: int, proc: Any, timeout: float = 30.0
) -> None:
    """Until the node on ``port`` answers ``/readyz`` with 200; fails if ``proc`` exits."""
    async with asyncio.timeout(timeout):
        while True:
            assert proc.returncode is None, "the server exited early"
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
