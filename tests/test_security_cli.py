"""``ticker token`` mints what the server accepts; tokens never reach the logs; the
security flags are checked before the server starts."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import frame, tls_files
from tests.net import free_port
from ticker.cli import build_parser, main, settings_from
from ticker.core.tokens import TokenVerifier
from ticker.server.redact import REDACTED, RedactTokens

SECRET = "cli-secret-" * 4


def test_ticker_token_mints_a_token_the_server_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["token", "--secret", SECRET, "--sub", "carol", "--symbols", "AAPL, FX:*"]
    assert main([*argv, "--delay", "900", "--ttl", "120", "--max-conns", "2"]) == 0
    principal = TokenVerifier.from_secret(SECRET).verify(capsys.readouterr().out.strip())
    assert (principal.sub, principal.delay_s, principal.max_conns) == ("carol", 900.0, 2)
    assert principal.entitlements.patterns == ("AAPL", "FX:*")


def test_ticker_token_mints_a_publisher_token(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--secret", SECRET, "--sub", "feeder", "--publish", "AAPL,FX:*"]) == 0
    principal = TokenVerifier.from_secret(SECRET).verify(capsys.readouterr().out.strip())
    assert principal.publish is not None and principal.publish.patterns == ("AAPL", "FX:*")
    assert principal.entitlements.patterns == ()  # it may publish, not watch
    assert main(["token", "--secret", SECRET, "--sub", "x", "--symbols", "*"]) == 0
    assert TokenVerifier.from_secret(SECRET).verify(capsys.readouterr().out.strip()).publish is None


def test_ticker_token_refuses_what_the_server_would() -> None:
    def token(*argv: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "ticker", "token", "--sub", "a", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)

    short = token("--secret", "short", "--symbols", "*")
    assert (short.returncode, short.stdout) == (2, "")
    assert short.stderr.splitlines() == [
        "ticker token: error: --secret: the HS256 secret must be at least 32 characters"
        " (this one has 5); use the server's --auth-secret"
    ]
    nothing = token("--secret", SECRET)
    assert nothing.returncode == 2 and "give --symbols" in nothing.stderr
    assert "Traceback" not in short.stderr + nothing.stderr
    help_text = token("--help").stdout
    assert "seconds until it expires (default: 3600, one hour)" in " ".join(help_text.split())


def test_ticker_token_with_an_ec_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "key.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert main(["token", "--private-key", str(path), "--sub", "d", "--symbols", "*"]) == 0
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert TokenVerifier.from_public_key(pem).verify(capsys.readouterr().out.strip()).sub == "d"
    assert main(["token", "--sub", "d", "--symbols", "*"]) == 2  # no key: an error, no token
    assert "give --secret or --private-key" in capsys.readouterr().err


def test_serve_flags_become_settings() -> None:
    args = build_parser().parse_args(
        ["serve", "--auth-secret", SECRET, "--allowed-origin", "https://A.example/",
         "--allowed-origin", "http://b:8000,http://c", "--max-connections-per-ip", "7",
         "--idle-timeout", "30", "--max-message-bytes", "1000"]
    )  # fmt: skip
    settings = settings_from(args)
    assert settings.auth is not None and settings.auth.algorithms == ["HS256"]
    assert settings.allowed_origins == ("https://a.example", "http://b:8000", "http://c")
    assert settings.connection_limits.max_connections_per_ip == 7
    assert (settings.limits.idle_s, settings.limits.max_message_bytes) == (30.0, 1000)


def test_serve_refuses_bad_security_flags_before_starting() -> None:
    env = {**os.environ, "TICKER_AUTH_SECRET": "short"}
    cmd = [sys.executable, "-m", "ticker", "serve", "--port", "1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "at least 32 characters" in done.stderr
    lone = [*cmd, "--tls-cert", __file__]  # a file that is there: the pairing is what is wrong
    done = subprocess.run(lone, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--tls-cert and --tls-key go together" in done.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "ticker", "serve", "--help"],
        env={**os.environ, "TICKER_AUTH_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    assert "TICKER_AUTH_SECRET" in help_text and SECRET not in help_text


def test_tokens_are_masked_in_log_records() -> None:
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
    record = logging.LogRecord(
        "aiohttp.access", logging.INFO, __file__, 1,
        '%s "GET /ws?mode=all&token=%s HTTP/1.1" Authorization: Bearer %s, raw %s',
        ("127.0.0.1", "abc.def.ghi", "xyz", jwt_like), None,
    )  # fmt: skip
    assert RedactTokens().filter(record)
    message = record.getMessage()
    assert "abc.def.ghi" not in message and "xyz" not in message and jwt_like not in message
    assert message.count(REDACTED) == 3 and "mode=all&token=" in message


def test_serve_with_tls_flags_serves_wss(tmp_path: Path) -> None:
    cert_file, key_file, trusting = tls_files(tmp_path)
    port = free_port()
    cmd = [sys.executable, "-m", "ticker", "serve", "--port", str(port), "--symbols", "5"]
    proc = subprocess.Popen(
        [*cmd, "--tls-cert", str(cert_file), "--tls-key", str(key_file)],
        env={**os.environ, "TICKER_LOG_LEVEL": "warning"},
    )

    async def client() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 20
            while True:
                try:
                    async with http.ws_connect(f"wss://127.0.0.1:{port}/ws", ssl=trusting) as ws:
                        return await frame(ws)
                except aiohttp.ClientConnectorError:
                    assert proc.poll() is None and time.monotonic() < deadline
                    await asyncio.sleep(0.1)

    try:
        assert asyncio.run(client())["type"] == "welcome"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
