"""The command line: flags, their TICKER_* environment twins, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ticker.cli import build_parser, settings_from


def test_flags_reach_the_settings() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--port",
            "9001",
            "--heartbeat",
            "5",
            "--max-symbols",
            "7",
            "--queue-bytes",
            "4096",
            "--ops-per-s",
            "3",
            "--rate",
            "50",
            "--skew",
            "1.2",
        ]
    )
    settings = settings_from(args)
    assert settings.port == 9001 and settings.heartbeat_s == 5.0
    assert settings.limits.max_symbols == 7 and settings.limits.queue_bytes == 4096
    assert settings.limits.ops_per_s == 3
    assert args.rate == 50.0 and args.skew == 1.2


def test_environment_variables_are_defaults_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKER_PORT", "9100")
    monkeypatch.setenv("TICKER_QUEUE_BYTES", "2048")
    monkeypatch.setenv("TICKER_LOG_LEVEL", "debug")
    args = build_parser().parse_args(["serve", "--port", "9200"])
    assert args.port == 9200  # the flag wins
    assert args.queue_bytes == 2048 and args.log_level == "debug"


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["serve", "--rate", "-5"], {}, "--rate"),
        (["serve", "--feed", "nasdaq"], {}, "--feed"),
        (["serve"], {"TICKER_PORT": "eighty"}, "TICKER_PORT='eighty'"),
        (["serve"], {"TICKER_LOG_LEVEL": "loud"}, "TICKER_LOG_LEVEL='loud'"),
        (["serve"], {"TICKER_SYMBOLS": "0"}, "TICKER_SYMBOLS='0'"),
        (["serve", "--metrics-port", "70000"], {}, "--metrics-port"),
        (["serve", "--port", "70000"], {}, "--port"),
        (["serve", "--speed", "nan"], {}, "--speed"),
        (["serve", "--record-max-bytes", "0"], {}, "--record-max-bytes"),
        (["serve", "--max-connections", "-1"], {}, "--max-connections"),
        (["serve"], {"TICKER_NO_METRICS": "maybe"}, "TICKER_NO_METRICS='maybe'"),
    ],
)
def test_bad_values_exit_2_with_a_clear_message(
    argv: list[str], env: dict[str, str], needle: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ticker", *argv],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_explains_every_flag() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ticker", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0
    for flag in (
        "--host",
        "--port",
        "--feed",
        "--symbols",
        "--rate",
        "--skew",
        "--seed",
        "--heartbeat",
        "--max-symbols",
        "--queue-bytes",
        "--ops-per-s",
        "--candle-history",
        "--candle-update-ms",
        "--metrics-port",
        "--metrics-host",
        "--no-metrics",
        "--log-level",
    ):
        assert flag in proc.stdout
        env = "TICKER_" + flag[2:].replace("-", "_").upper()
        assert env in proc.stdout


def test_metrics_flags_and_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    default = settings_from(build_parser().parse_args(["serve"]))
    assert default.metrics and default.metrics_port is None and default.metrics_host is None
    args = ["serve", "--metrics-port", "9108", "--metrics-host", "10.0.0.5"]
    settings = settings_from(build_parser().parse_args(args))
    assert settings.metrics_port == 9108 and settings.metrics_host == "10.0.0.5"
    assert not settings_from(build_parser().parse_args(["serve", "--no-metrics"])).metrics
    monkeypatch.setenv("TICKER_METRICS_PORT", "9200")
    assert settings_from(build_parser().parse_args(["serve"])).metrics_port == 9200
    monkeypatch.delenv("TICKER_METRICS_PORT")
    monkeypatch.setenv("TICKER_NO_METRICS", "1")
    assert not settings_from(build_parser().parse_args(["serve"])).metrics
    monkeypatch.setenv("TICKER_NO_METRICS", "0")
    assert settings_from(build_parser().parse_args(["serve"])).metrics


def test_history_and_polling_flags_and_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    default = settings_from(build_parser().parse_args(["serve"]))
    assert (default.history, default.poll_hold_s, default.poll_session_s) == (1000, 25.0, 60.0)
    args = ["serve", "--history", "0", "--poll-hold", "2.5", "--poll-session", "30"]
    settings = settings_from(build_parser().parse_args(args))
    assert (settings.history, settings.poll_hold_s, settings.poll_session_s) == (0, 2.5, 30.0)
    monkeypatch.setenv("TICKER_HISTORY", "50")
    assert settings_from(build_parser().parse_args(["serve"])).history == 50
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--poll-hold", "0"])
