"""Issue 19: a user's mistake gets one line on stderr that names the thing and says what to
do, exit status 2, never a traceback. Each case runs ``python -m ticker`` as a process;
the tail and record cases against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import StartServer
from ticker.client.state import Refusals, ServerError, SubscriptionRefused
from ticker.commands.refusals import nothing_left_line
from ticker.core.tokens import TokenVerifier, mint
from ticker.recording.formats import load
from ticker.recording.problems import Problems

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
LOBSTER = DATA / "AAPL_2012-06-21_34200000_57600000_message_10.csv"
TARDIS = DATA / "tardis_trades.csv"
SECRET = "issue-19-secret-" * 3


def ticker(
    *args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``ticker ARGS`` as a process, with no TICKER_* variables from the caller (``env``
    adds some)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TICKER_")}
    return subprocess.run(
        [sys.executable, "-m", "ticker", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=60,
        check=False,
    )


async def aticker(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The same from a test whose server runs in this event loop (it must keep running)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TICKER_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ticker",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_mistake(code: int, err: str, *named: str) -> str:
    """Exit 2 and a single stderr line, naming each of ``named``; the line."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, lines
    for thing in named:
        assert thing in lines[0], (thing, lines[0])
    return lines[0]


def test_token_refuses_a_secret_the_server_would_refuse_and_names_its_default_ttl() -> None:
    short = "s" * 31
    with pytest.raises(ValueError, match="at least 32"):
        TokenVerifier.from_secret(short)  # the server's rule, the same as below
    done = ticker("token", "--secret", short, "--sub", "a", "--symbols", "*")
    one_mistake(done.returncode, done.stderr, "--secret", "at least 32", "--auth-secret")
    assert done.stdout == ""
    done = ticker("token", "--secret", "s" * 32, "--sub", "a", "--symbols", "*")
    assert done.returncode == 0 and TokenVerifier.from_secret("s" * 32).verify(done.stdout.strip())
    assert "3600" in ticker("token", "--help").stdout


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--delay", "90000"], "delay must be 0 to 86400"),
        (["--max-conns", "0"], "max_conns must be a positive integer"),
        (["--sub", "x" * 300], "sub must be a string of 1 to 256"),
    ],
)
def test_token_refuses_claims_the_server_would_refuse(flags: list[str], named: str) -> None:
    done = ticker("token", "--secret", SECRET, "--sub", "a", "--symbols", "AAPL", *flags)
    one_mistake(done.returncode, done.stderr, "the server would refuse this token", named)
    assert done.stdout == ""


def test_token_names_a_private_key_it_cannot_read(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.pem", DATA / "SOURCES.md"):
        done = ticker("token", "--private-key", path, "--sub", "a", "--symbols", "*")
        one_mistake(done.returncode, done.stderr, f"--private-key {path}")


@pytest.mark.parametrize("name", ["out.jsonl", "out.ticks"])
def test_convert_refuses_an_existing_output_unless_forced(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    assert ticker("convert", TARDIS, out).returncode == 0
    done = ticker("convert", LOBSTER, out)
    one_mistake(done.returncode, done.stderr, str(out), "already exists", "--force")
    assert load([out], Problems()).symbols == ["BTCUSDT"]  # untouched
    done = ticker("convert", LOBSTER, out, "--force")
    assert done.returncode == 0, done.stderr
    assert load([out], Problems()).symbols == ["AAPL"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no partial left


def test_a_csv_cut_mid_line_names_the_line_and_on_error_skip(tmp_path: Path) -> None:
    cut = tmp_path / "trades.csv"
    text = TARDIS.read_text()
    cut.write_text(text[: text.index("\n", 20000) + 25])  # the last row cut short
    line = text[: text.index("\n", 20000)].count("\n") + 2
    done = ticker("convert", cut, tmp_path / "out.npz")
    one_mistake(done.returncode, done.stderr, f"{cut}:{line}:", "--on-error skip")
    feed = ticker("serve", "--feed", f"replay:{cut}", "--port", "1")  # fails before binding
    one_mistake(feed.returncode, feed.stderr, f"{cut}:{line}:", "--on-error skip")
    done = ticker("convert", cut, tmp_path / "out.npz", "--on-error", "skip")
    assert done.returncode == 0 and "skipped 1 bad line(s)" in done.stderr


def test_a_renamed_lobster_file_takes_its_symbol_and_date_by_hand(tmp_path: Path) -> None:
    renamed = tmp_path / "aapl.csv"
    renamed.write_bytes(LOBSTER.read_bytes())
    done = ticker("convert", renamed, tmp_path / "x.jsonl", "--symbol", "AAPL")
    one_mistake(done.returncode, done.stderr, str(renamed), "--date")
    done = ticker("convert", renamed, tmp_path / "x.jsonl", "--format", "lobster")
    one_mistake(done.returncode, done.stderr, "--symbol and --date")
    done = ticker("convert", renamed, tmp_path / "x.jsonl", "--symbol", "AAPL", "--date", "06/21")
    one_mistake(done.returncode, done.stderr, "--date", "06/21")
    out = tmp_path / "out.jsonl"
    done = ticker("convert", renamed, out, "--symbol", "AAPL", "--date", "2012-06-21")
    assert done.returncode == 0, done.stderr
    assert (load([out], Problems()).t == load([LOBSTER], Problems()).t).all()
    feed = ticker("serve", "--feed", f"replay:{renamed}", "--port", "1")
    one_mistake(feed.returncode, feed.stderr, "ticker serve: error:", "--symbol and --date")
    feed = ticker("serve", "--feed", f"replay:{renamed}", "--symbol", "AAPL", "--port", "1")
    one_mistake(feed.returncode, feed.stderr, "ticker serve: error:", "pass --date")


def test_refused_symbols_add_up_until_nothing_asked_is_left() -> None:
    refusals = Refusals(["A", "B", "C"])
    assert not refusals.add(ServerError("not_entitled", "not entitled to: A", ("A",)))
    assert refusals.add(ServerError("unknown_symbol", "unknown symbol(s): B, C", ("B", "C")))
    refused = SubscriptionRefused(refusals.errors)
    assert refused.symbols == ("A", "B", "C")
    assert nothing_left_line("tail", refused) == (
        "ticker tail: error: not entitled to: A; unknown symbol(s): B, C: nothing to tail "
        "(check the names; '*' = every symbol)"
    )
    assert not Refusals(["*", "NOPE"]).add(ServerError("unknown_symbol", "-", ("NOPE",)))
    too_many = ServerError("too_many_symbols", "at most 2 symbols per connection; ...")
    assert Refusals(["A", "B", "C"]).add(too_many)  # the request as a whole
    assert nothing_left_line("record", SubscriptionRefused([too_many])) == (
        "ticker record: error: at most 2 symbols per connection; ...: nothing to record"
    )


async def _auth_server(start_server: StartServer) -> str:
    _, server = await start_server(auth=TokenVerifier.from_secret(SECRET))
    return f"{server.host}:{server.port}"


@pytest.mark.parametrize("url", ["ws://{}/ws", "http://{}/sse", "http://{}/poll"])
async def test_tail_without_a_token_says_the_servers_reason_once(
    start_server: StartServer, url: str
) -> None:
    url = url.format(await _auth_server(start_server))
    code, out, err = await aticker("tail", url, "AAPL")
    one_mistake(code, err, url, "HTTP 401", "a token is required", "--token")
    assert out == ""
    code, _, err = await aticker("tail", url, "AAPL", "--token", "not-a-jwt")
    one_mistake(code, err, "HTTP 401", "invalid token", "--token")


async def test_record_takes_a_token_and_says_the_servers_reason(
    start_server: StartServer, tmp_path: Path
) -> None:
    url = f"ws://{await _auth_server(start_server)}/ws"
    out = tmp_path / "rec.jsonl"
    code, _, err = await aticker("record", url, "--out", out)
    one_mistake(code, err, url, "HTTP 401", "a token is required", "--token")
    assert not out.exists()  # nothing recorded: nothing left in the way of the next try
    token = mint(SECRET, sub="rec", symbols=["AAPL"], ttl_s=600)
    code, _, err = await aticker("record", url, "--out", out, "--duration", "0.2", "--token", token)
    assert code == 0 and "recorded 0 ticks" in err, err
    out.unlink()
    env = {"TICKER_TOKEN": token}
    code, _, err = await aticker("record", url, "--out", out, "--symbols", "MSFT", env=env)
    one_mistake(code, err, "not entitled to: MSFT", "nothing to record")
    assert not out.exists()


async def test_tail_and_record_of_unknown_symbols_only_say_so(
    start_server: StartServer, tmp_path: Path
) -> None:
    _, server = await start_server()
    url = f"ws://{server.host}:{server.port}/ws"
    code, out, err = await aticker("tail", url, "NOPE")
    one_mistake(code, err, "unknown symbol(s): NOPE", "nothing to tail")
    assert out == ""
    code, _, err = await aticker("tail", f"http://{server.host}:{server.port}/sse", "NOPE", "ZZZ")
    one_mistake(code, err, "NOPE, ZZZ")
    out_file = tmp_path / "rec.ticks"
    code, _, err = await aticker("record", url, "--out", out_file, "--symbols", "NOPE")
    one_mistake(code, err, "unknown symbol(s): NOPE", "nothing to record")
    assert not out_file.exists()


async def test_tail_and_record_of_a_url_that_is_no_ticker_endpoint(
    start_server: StartServer, tmp_path: Path
) -> None:
    _, server = await start_server()
    base = f"{server.host}:{server.port}"
    for url, said in [
        (f"ws://{base}/", "HTTP 200: answered without an upgrade: not a WebSocket endpoint"),
        (f"ws://{base}/nope", "HTTP 404: Not Found"),
        (f"http://{base}/nope/sse", "HTTP 404: Not Found"),
    ]:
        code, _, err = await aticker("tail", url, "AAPL")
        one_mistake(code, err, url, said, "ws(s)://HOST/ws")
    out = tmp_path / "rec.jsonl"
    code, _, err = await aticker("record", f"ws://{base}/nope", "--out", out)
    one_mistake(code, err, "HTTP 404: Not Found", "ws(s)://HOST/ws")
    assert not out.exists()


# Siblings: every subcommand, with a wrong path, a bad URL, nothing listening, a bad variable.


def test_a_bad_variable_of_one_command_is_that_commands_mistake(tmp_path: Path) -> None:
    """Every parser reads its variables when the CLI is built: serve's must not stop convert."""
    out = tmp_path / "btc.jsonl"
    done = ticker("convert", TARDIS, out, env={"TICKER_RATE": "fast"})
    assert done.returncode == 0 and out.exists(), done.stderr
    done = ticker("serve", env={"TICKER_RATE": "fast"})
    one_mistake(done.returncode, done.stderr, "ticker serve: error:", "TICKER_RATE='fast'")
    done = ticker("convert", TARDIS, tmp_path / "x.jsonl", env={"TICKER_TIME_UNIT": "parsecs"})
    one_mistake(done.returncode, done.stderr, "ticker convert: error:", "TICKER_TIME_UNIT")
    done = ticker("tail", "AAPL", env={"TICKER_MAX_HZ": "lots"})
    one_mistake(done.returncode, done.stderr, "ticker tail: error:", "TICKER_MAX_HZ='lots'")
    done = ticker("publish", "http://127.0.0.1:1", "-", env={"TICKER_BATCH": "many"})
    one_mistake(done.returncode, done.stderr, "ticker publish: error:", "TICKER_BATCH='many'")
    done = ticker("token", "--help", env={"TICKER_NO_METRICS": "maybe"})
    assert done.returncode == 0, done.stderr


def test_an_output_in_a_directory_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    argvs: list[list[str | Path]] = [
        ["convert", TARDIS, missing / "out.jsonl"],
        ["record", "ws://127.0.0.1:1/ws", "--out", missing / "rec.jsonl"],
    ]
    for argv in argvs:
        done = ticker(*argv)
        one_mistake(done.returncode, done.stderr, f"no directory {missing}", "create it first")
    assert not (tmp_path / "no").exists()


def test_record_with_nothing_listening_says_so_and_leaves_no_file(tmp_path: Path) -> None:
    for name in ("rec.jsonl", "rec.npz", "rec.ticks"):
        out = tmp_path / name
        done = ticker("record", "ws://127.0.0.1:1/ws", "--out", out)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith("ticker record: cannot connect to ws://127.0.0.1:1/ws: ")
        assert not out.exists()  # the next try must not find it "already exists"


def test_publish_refuses_a_directory_and_says_at_once_when_nothing_listens(
    tmp_path: Path,
) -> None:
    done = ticker("publish", "http://127.0.0.1:1", tmp_path)
    one_mistake(done.returncode, done.stderr, str(tmp_path), "a directory")
    ticks = tmp_path / "t.ndjson"
    ticks.write_text('{"s": "AAPL", "p": 1.5}\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticker", "publish", "http://127.0.0.1:1", str(ticks)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # long before its 60 s of retries end
        assert line.startswith("ticker publish: cannot connect to ws://127.0.0.1:1/publish ")
        assert "retrying for up to 60 s" in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
