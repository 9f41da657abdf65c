"""``ticker serve`` at startup (issue 19): a mistake is one line on stderr that names the
thing, exit status 2 and no traceback; a start that works says what it serves."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.net import free_port
from ticker.cli import REPLAY_ONLY, SIM_ONLY, build_parser

DATA = Path(__file__).parent / "data"
TARDIS = DATA / "tardis_trades.csv"
SECRET = "s" * 32
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("TICKER_")}


def serve(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``ticker serve`` to its end (every case here ends before it listens)."""
    return subprocess.run(
        [sys.executable, "-m", "ticker", "serve", *argv],
        env={**CLEAN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def assert_one_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("ticker serve: error: ")
    for needle in needles:
        assert needle in line
    return line


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on, as a second ``make run`` finds 8080."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_port_in_use_is_named_with_what_to_do(taken_port: int) -> None:
    assert_one_line(
        serve("--port", str(taken_port)),
        f"--port: 127.0.0.1:{taken_port} is in use",
        "is another ticker running? use --port or TICKER_PORT",
    )


def test_a_port_in_use_is_named_with_workers_too(taken_port: int) -> None:
    """Their sockets share the port (SO_REUSEPORT) only among themselves."""
    assert_one_line(
        serve("--port", str(taken_port), "--workers", "2"),
        f"--port: 127.0.0.1:{taken_port} is in use",
    )


def test_a_metrics_port_in_use_is_named(taken_port: int) -> None:
    line = assert_one_line(
        serve("--port", str(free_port()), "--metrics-port", str(taken_port)),
        f"--metrics-port: 127.0.0.1:{taken_port} is in use",
        "TICKER_METRICS_PORT",
    )
    assert "metrics on" not in line  # nothing started, nothing logged


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["--host", "999.1.1.1"], ["--host 999.1.1.1: not an address or a host name"]),
        (["--host", "192.0.2.1"], ["--host: cannot listen on 192.0.2.1:", "not an address of"]),
        (["--metrics-port", "{port}"], ["--metrics-port {port} is --port too", "its own"]),
        (["--feed", "bogus"], ["unknown feed 'bogus'", "sim", "none", "replay:PATH", "module:"]),
        (["--tls-cert", "/nope.pem", "--tls-key", __file__], ["--tls-cert: /nope.pem: no such"]),
        (["--tls-cert", __file__, "--tls-key", "/nope.key"], ["--tls-key: /nope.key: no such"]),
        (["--tls-cert", __file__, "--tls-key", __file__], [f"--tls-cert {__file__}", "not a PEM"]),
        (["--auth-public-key", "/nope.pub"], ["--auth-public-key: /nope.pub: no such file"]),
        (["--auth-public-key", __file__], [f"--auth-public-key {__file__}: not an RSA or EC"]),
        (["--auth-public-key", str(DATA)], [f"--auth-public-key: {DATA}: not a file"]),
        (["--feed", "replay:/nope.jsonl"], ["/nope.jsonl: no such file"]),
        (["--replay-dir", "/nope"], ["--replay-dir: /nope is not a directory"]),
        (["--record", __file__], [f"--record {__file__}: not a directory"]),
        (["--speed", "2"], ["--speed is for --feed replay:PATH, not --feed sim"]),
        (["--feed", f"replay:{TARDIS}", "--rate", "5"], ["--rate is for --feed sim"]),
        (["--feed", "none"], ["--feed none", "needs --redis"]),
        (["--metrics-host", "127.0.0.1"], ["--metrics-host goes with --metrics-port"]),
        (["--record-format", "ticks"], ["--record-format goes with --record"]),
        (["--no-metrics", "--metrics-port", "9108"], ["--metrics-port", "--no-metrics"]),
        (["--bogus"], ["unrecognized arguments: --bogus", "ticker serve --help"]),
        (["--event-loop", "trio"], ["--event-loop", "'trio'", "auto", "uvloop", "asyncio"]),
        (["--port", "eighty"], ["--port", "'eighty'"]),
        (["--allowed-origin", "foo"], ["--allowed-origin: 'foo' is not an origin like https://"]),
        (["--symbols", "0"], ["--symbols: '0': the number of symbols must be positive"]),
        (["--workers", "0"], ["--workers: invalid number of workers (1 or more) value: '0'"]),
        (["--workers", "two"], ["--workers: invalid number of workers", "'two'"]),
        (
            ["--workers", "2", "--redis", "redis://127.0.0.1:1/0"],
            ["above 1 cannot go with --redis"],
        ),
        (["--workers", "3", "--record", str(DATA)], ["--workers above 1 cannot go with --record"]),
        (["--feed", f"replay:{TARDIS}", "--columns", "zzz"], ["--columns zzz: 'zzz': expected"]),
    ],
)
def test_a_mistake_is_one_line_naming_it(argv: list[str], needles: list[str]) -> None:
    port = str(free_port())
    argv = [a.replace("{port}", port) for a in argv]
    assert_one_line(serve("--port", port, *argv), *(n.replace("{port}", port) for n in needles))


def test_an_environment_variable_the_feed_ignores_is_named() -> None:
    assert_one_line(serve(env={"TICKER_SPEED": "2"}), "--speed (or TICKER_SPEED) is for")


def test_a_bad_environment_variable_is_one_line() -> None:
    assert_one_line(serve(env={"TICKER_FEED": "bogus"}), "TICKER_FEED='bogus'", "unknown feed")
    assert_one_line(serve(env={"TICKER_WORKERS": "0"}), "TICKER_WORKERS='0' is invalid")
    line = assert_one_line(serve(env={"TICKER_AUTH_SECRET": "short"}), "--auth-secret (TICKER_")
    assert "short" not in line  # a secret is never printed, not even a bad one


def flag(dest: str) -> str:
    return {"start": "--from", "end": "--to"}.get(dest, "--" + dest.replace("_", "-"))


VALUES = {"start": "2020-01-01", "end": "2020-01-02", "format": "jsonl", "columns": "t=t"}
VALUES |= {"time_unit": "ms", "on_error": "skip", "speed": "2", "rate": "5", "skew": "1"}
VALUES |= {"seed": "7", "symbols": "3", "sim_books": "5"}


def given(dest: str) -> list[str]:
    """``dest``'s flag set to something other than its default."""
    return [flag(dest)] + ([VALUES[dest]] if dest in VALUES else [])


@pytest.mark.parametrize(
    ("feed", "dest"),
    [("sim", d) for d in REPLAY_ONLY]
    + [(f"replay:{TARDIS}", d) for d in SIM_ONLY]
    + [("none", d) for d in ("symbols", *SIM_ONLY, *REPLAY_ONLY)],
)
def test_every_flag_the_feed_ignores_is_refused(
    feed: str, dest: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--feed", feed, "--redis", "redis://127.0.0.1:1/0", *given(dest)]
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{flag(dest)} is for --feed " in line and f"not --feed {feed}" in line


def test_the_flags_of_the_chosen_feed_are_taken() -> None:
    """The refusal is not of the flags themselves: each feed takes its own."""
    replay_argv = [a for d in REPLAY_ONLY for a in given(d)]
    args = build_parser().parse_args(["serve", "--feed", f"replay:{TARDIS}", *replay_argv])
    assert args.speed == 2.0 and args.loop and args.on_error == "skip"
    sim_argv = [a for d in SIM_ONLY for a in given(d)]
    assert build_parser().parse_args(["serve", "--feed", "sim", *sim_argv]).seed == 7


class Server:
    """A ``ticker serve`` subprocess whose log is read line by line as it comes."""

    def __init__(self, *argv: str, env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "ticker", "serve", "--log-level", "info", *argv]
        self.proc = subprocess.Popen(cmd, env={**CLEAN_ENV, **(env or {})}, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        self._partial = b""

    def read_until(self, needle: str, timeout: float = 30.0) -> str:
        """The first log line with ``needle`` (all lines read are kept in ``lines``)."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while True:
            for line in self.lines:
                if needle in line:
                    return line
            ready, _, _ = select.select([fd], [], [], timeout)
            assert ready, f"no {needle!r} in the log: {self.lines}"
            chunk = os.read(fd, 65536)
            assert chunk, f"the server exited without {needle!r}: {self.lines}"
            *done, self._partial = (self._partial + chunk).split(b"\n")
            self.lines += [line.decode() for line in done]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


def test_the_startup_log_says_what_is_served(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    server = Server(
        *("--port", str(port), "--metrics-port", str(metrics_port), "--record", str(tmp_path)),
        env={"TICKER_AUTH_SECRET": SECRET},
    )
    try:
        listening = server.read_until("listening on")
        assert f"dashboard at http://127.0.0.1:{port}/" in listening
        assert f"ws://127.0.0.1:{port}/ws" in listening
        server.read_until("auth on: clients need HS256 tokens signed with --auth-secret")
        server.read_until(f"recording every tick into {tmp_path} (jsonl.gz files")
        server.read_until(f"metrics on http://127.0.0.1:{metrics_port}/metrics")
        server.read_until("feed sim: 100 symbols")
        server.read_until("event loop: uvloop")  # auto: uvloop, a default dependency here
        assert all("Traceback" not in line for line in server.lines)
    finally:
        server.stop()


def test_a_publish_only_server_needs_no_redis_and_says_what_it_serves() -> None:
    port = free_port()
    server = Server("--port", str(port), "--feed", "none", "--publish")
    try:
        server.read_until("no local feed: serving what publishers send to /publish")
        server.read_until("listening on")
        body = json.dumps({"ticks": [{"s": "AAPL", "p": 189.12}]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/publish",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.load(answer) == {"accepted": 1, "q": {"AAPL": 1}}
        assert all("Redis" not in line for line in server.lines)
    finally:
        server.stop()


def test_a_replay_logs_its_files_window_speed_and_its_end(tmp_path: Path) -> None:
    key = tmp_path / "ec.pub"
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    key.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    window = ("--from", "2020-02-22T00:00:02", "--to", "2020-02-22T00:00:03")
    server = Server(
        *("--port", str(free_port()), "--feed", f"replay:{TARDIS}", "--speed", "0", *window),
        *("--auth-public-key", str(key)),
    )
    try:
        line = server.read_until("feed replay: ")
        assert f"from {TARDIS}, 2020-02-22T00:00:02.111000+00:00 to 2020-02-22T00:00:02" in line
        assert "at speed 0 (flat out); once: it ends with the recording" in line
        server.read_until(f"auth on: clients need ES256 tokens signed by the private half of {key}")
        ticks = int(line.split("feed replay: ")[1].split()[0])
        ended = server.read_until("feed replay ended")
        assert f"{ticks} tick(s) published" in ended
    finally:
        server.stop()


def test_ticker_feed_refuses_the_same_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """``ticker feed`` has the same feed flags, so the same refusal."""
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["feed", "--redis", "redis://127.0.0.1:1/0", "--speed", "3"])
    assert stop.value.code == 2
    assert "--speed is for --feed replay:PATH, not --feed sim" in capsys.readouterr().err
