"""Which event loop ``ticker serve`` runs on (``--event-loop``)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from ticker.server import loops


def test_auto_means_uvloop_where_it_is_installed() -> None:
    assert loops.uvloop_available()
    assert loops.resolve("auto") == "uvloop"
    assert loops.resolve("asyncio") == "asyncio"


def test_each_choice_makes_its_own_kind_of_loop() -> None:
    for name, kind in (("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)):
        loop = loops.new_loop(name)
        try:
            assert isinstance(loop, kind)
            assert name != "asyncio" or not isinstance(loop, uvloop.Loop)
        finally:
            loop.close()


def test_a_choice_that_cannot_be_had_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="--event-loop trio: choose from auto, uvloop, asyncio"):
        loops.resolve("trio")
    monkeypatch.setattr(loops, "uvloop_available", lambda: False)
    assert loops.resolve("auto") == "asyncio"
    with pytest.raises(ValueError, match="uvloop is not installed"):
        loops.resolve("uvloop")
