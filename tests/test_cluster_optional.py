"""``redis`` is an optional extra: without it ticker imports and ``--redis`` says so in one line.

The package is made unimportable for a real subprocess by a ``redis`` package earlier on
``PYTHONPATH`` that raises ``ImportError`` as a missing module does; nothing is mocked.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ticker

MESSAGE = "ticker: --redis needs the redis package: pip install 'ticker[redis]'"
NOT_IMPORTED = {
    "ticker.cluster.redis",
    "ticker.cluster.candle_store",
    "ticker.cluster.book_relay",
    "ticker.__main__",
}
"""The modules that import the redis client (the relays and the store of bars; everything
else reaches them lazily), and the entry point (importing it runs the command line)."""


@pytest.fixture
def no_redis(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import redis`` fails."""
    fake = tmp_path / "redis"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        'raise ImportError("No module named \'redis\' (hidden by the test)", name="redis")\n'
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_hidden_package_really_fails_to_import(no_redis: dict[str, str]) -> None:
    done = run(no_redis, "-c", "import ticker.cluster.redis")
    assert done.returncode == 1
    assert "hidden by the test" in done.stderr


def test_every_other_module_imports_without_redis(no_redis: dict[str, str]) -> None:
    names = [
        m.name
        for m in pkgutil.walk_packages(ticker.__path__, "ticker.")
        if m.name not in NOT_IMPORTED
    ]
    assert "ticker.cli" in names and "ticker.cluster.loader" in names
    done = run(no_redis, "-c", f"import importlib\nfor n in {names!r}: importlib.import_module(n)")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", ["serve", "feed"])
def test_redis_flag_without_the_package_is_one_line_and_exit_2(
    no_redis: dict[str, str], command: str
) -> None:
    done = run(no_redis, "-m", "ticker.cli", command, "--redis", "redis://127.0.0.1:9/0")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [MESSAGE]
    assert done.stdout == ""


def test_serve_help_works_without_redis(no_redis: dict[str, str]) -> None:
    done = run(no_redis, "-m", "ticker.cli", "serve", "--help")
    assert done.returncode == 0, done.stderr
    assert "--redis" in done.stdout


def test_with_the_package_the_loader_builds_the_relay() -> None:
    from ticker.cluster.config import RedisConfig
    from ticker.cluster.loader import redis_broker
    from ticker.cluster.redis import RedisBroker

    broker = redis_broker(RedisConfig("redis://127.0.0.1:9/0", shards=3))
    assert isinstance(broker, RedisBroker) and broker.keys.shards == 3
