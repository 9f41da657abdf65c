"""``ticker convert``: exit codes, messages, skip mode, sorting, progress."""

from __future__ import annotations

import io
import itertools
import shutil
from pathlib import Path

import pytest

from tests.conftest import TtyBuffer
from ticker.cli import main
from ticker.progress import Progress
from ticker.recording.formats import load
from ticker.recording.problems import Problems

DATA = Path(__file__).parent / "data"
TARDIS = DATA / "tardis_trades.csv"
LOBSTER = DATA / "AAPL_2012-06-21_34200000_57600000_message_10.csv"


def test_convert_round_trips_through_every_format(tmp_path: Path) -> None:
    chain = [LOBSTER, *(tmp_path / f"aapl{s}" for s in (".npz", ".ticks", ".jsonl.gz", ".jsonl"))]
    for src, dst in itertools.pairwise(chain):
        assert main(["convert", str(src), str(dst)]) == 0
    assert load([chain[-1]], Problems()).equals(load([LOBSTER], Problems()))
    assert not list(tmp_path.glob(".partial-*"))


def test_bad_line_stops_with_exit_2_and_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "rec.jsonl"
    src.write_text('{"s":"X","p":1,"t":1}\n{"s":"X","p":2,"t":2}\n{"s":"X","p":oops}\n')
    out = tmp_path / "out.npz"
    assert main(["convert", str(src), str(out)]) == 2
    assert capsys.readouterr().err == (
        f"ticker convert: error: {src}:3: not valid JSON; pass --on-error skip to skip bad lines\n"
    )
    assert not out.exists() and not list(tmp_path.glob(".partial-*"))  # nothing half-written


def test_skip_mode_counts_and_reports_at_the_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "rec.jsonl"
    src.write_text('{"s":"X","p":1,"t":1}\nnope\n{"s":"X","p":2,"t":2}\n{"s":"X","t":3}\n')
    out = tmp_path / "out.jsonl"
    assert main(["convert", "--on-error", "skip", str(src), str(out)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "skipped 2 bad line(s); the first:",
        f"  {src}:2: not valid JSON",
        f'  {src}:4: no price ("p")',
        f"wrote 2 ticks to {out}",
    ]
    assert out.read_text() == '{"s":"X","p":1.0,"t":1}\n{"s":"X","p":2.0,"t":2}\n'


def test_out_of_order_needs_sort(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "rec.jsonl"
    src.write_text('{"s":"X","p":1,"t":5}\n{"s":"X","p":2,"t":3}\n')
    out = tmp_path / "out.jsonl"
    assert main(["convert", str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ticker convert: error: {src}:2: timestamps go backwards at line 2")
    assert "--sort" in err
    assert main(["convert", "--sort", str(src), str(out)]) == 0
    assert load([out], Problems()).t.tolist() == [3, 5]


def test_plain_csv_needs_its_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "px.csv"
    src.write_text("ts,px\n1000,1.5\n2000,1.6\n")
    out = tmp_path / "px.jsonl"
    assert main(["convert", str(src), str(out)]) == 2
    assert "needs a column mapping" in capsys.readouterr().err
    assert main(["convert", "--columns", "t=ts,p=px", str(src), str(out)]) == 2
    assert "needs t, p and s" in capsys.readouterr().err
    args = ["convert", "--columns", "t=ts,p=px,s=:EURUSD", "--time-unit", "ms", str(src), str(out)]
    assert main(args) == 0
    assert load([out], Problems()).ticks()[0] == {"s": "EURUSD", "p": 1.5, "t": 1_000_000}


def test_a_directory_of_inputs_merges(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(TARDIS, folder)
    shutil.copy(LOBSTER, folder)
    out = tmp_path / "all.npz"
    assert main(["convert", str(folder), str(out)]) == 0
    table = load([out], Problems())
    assert len(table) == 9999 + 159 and sorted(table.symbols) == ["AAPL", "BTCUSDT"]
    assert table.first_disorder() is None


def test_progress_on_a_terminal_shows_count_rate_and_eta() -> None:
    now = [0.0]
    stream = TtyBuffer()
    progress = Progress("convert", total=1000, stream=stream, clock=lambda: now[0])
    now[0] = 0.1
    progress.advance(100)  # too soon to redraw
    assert stream.getvalue() == ""
    now[0] = 1.0
    progress.advance(150)
    assert stream.getvalue().endswith("convert: 250 ticks  250/s  25% ETA 3s")
    now[0] = 4.0
    progress.advance(750)
    progress.done()
    assert stream.getvalue().endswith("convert: 1,000 ticks  250/s  100%\n")


def test_progress_is_quiet_when_piped() -> None:
    now = [0.0]
    stream = io.StringIO()
    progress = Progress("convert", stream=stream, clock=lambda: now[0])
    now[0] = 5.0
    progress.advance(10)
    progress.done()
    assert stream.getvalue() == ""
