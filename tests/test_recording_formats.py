"""The native formats: lossless round trips, crash safety, and every bad-file case."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from ticker.recording.formats import load, open_writer
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.table import TickTable, concat

DATA = Path(__file__).parent / "data"
SAMPLES = [
    DATA / "AAPL_2012-06-21_34200000_57600000_message_10.csv",
    DATA / "tardis_trades.csv",
    DATA / "COINBASE.ws.28.0",
]
TICKS = [
    {"s": "AAPL", "p": 189.5, "b": 189.49, "a": 189.51, "v": 100.0, "t": 1_000_000, "q": 1},
    {"s": "MSFT", "p": 410.25, "t": 1_000_500, "q": 1},
    {"s": "AAPL", "p": 189.52, "v": 5.0, "t": 1_002_000, "q": 2},
]


def _write(path: Path, ticks: list[dict], batches: int = 1) -> None:
    writer = open_writer(path)
    step = max(1, len(ticks) // batches)
    for i in range(0, len(ticks), step):
        writer.write_ticks([dict(t) for t in ticks[i : i + step]])
    writer.close()


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".npz", ".ticks"])
def test_protocol_ticks_round_trip_exactly(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rec{suffix}"
    _write(path, TICKS, batches=3)
    table = load([path], Problems())
    assert table.ticks() == TICKS  # absent fields stay absent


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name[:8])
def test_each_sample_converts_losslessly_through_every_format(tmp_path: Path, sample: Path) -> None:
    original = load([sample], Problems())
    current = original
    for i, suffix in enumerate([".jsonl", ".npz", ".ticks", ".jsonl.gz", ".npz"]):
        path = tmp_path / f"step{i}{suffix}"
        writer = open_writer(path)
        writer.write_table(current)
        writer.close()
        current = load([path], Problems())
        assert current.equals(original), suffix
    assert current.ticks() == original.ticks()


def test_column_directory_is_memory_mapped(tmp_path: Path) -> None:
    path = tmp_path / "rec.ticks"
    _write(path, TICKS)
    table = load([path], Problems())
    assert isinstance(table.t, np.memmap) or isinstance(table.t.base, np.memmap)
    assert np.load(path / "p.npy").tolist() == [189.5, 410.25, 189.52]  # plain .npy files


def test_writers_never_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text("")
    with pytest.raises(RecordingError, match="already exists"):
        open_writer(path)
    with pytest.raises(RecordingError, match="must end with one of"):
        open_writer(tmp_path / "rec.txt")


# -- crash safety: what a killed writer leaves behind ------------------------------------


def test_killed_gzip_writer_leaves_a_readable_file_with_a_reported_torn_tail(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rec.jsonl.gz"
    writer = open_writer(path)
    writer.write_ticks([dict(t) for t in TICKS[:2]])
    writer.write_ticks([dict(TICKS[2])])
    # no close(): as after kill -9, the gzip stream has no end marker
    problems = Problems()
    table = load([path], problems)
    assert table.ticks() == TICKS
    assert len(problems.warnings) == 1 and "torn tail" in problems.warnings[0]
    assert "without its end marker" in problems.warnings[0]


def test_truncated_gzip_keeps_complete_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    lines = b"".join(b'{"s":"X","p":%d,"t":%d}\n' % (i, i) for i in range(1, 5001))
    data = gzip.compress(lines)
    path.write_bytes(data[: len(data) // 2])
    problems = Problems()
    table = load([path], problems)
    assert 0 < len(table) < 5000
    assert table.p.tolist() == list(range(1, len(table) + 1))  # no half line read as a tick
    assert "torn tail" in problems.warnings[0]


def test_corrupt_gzip_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    data = bytearray(gzip.compress(b'{"s":"X","p":1,"t":1}\n' * 100))
    data[12:20] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match="corrupt gzip data"):
        load([path], Problems())
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text('{"s":"X","p":1,"t":1}\n')
    with pytest.raises(RecordingError, match="not a gzip file"):
        load([plain], Problems())


def test_unfinished_last_line_is_a_torn_tail_not_data(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text('{"s":"X","p":1,"t":1}\n{"s":"X","p":2,"t":2}\n{"s":"X","p":3')
    problems = Problems()
    assert load([path], problems).p.tolist() == [1, 2]
    assert problems.warnings == [f"{path}: torn tail: line 3 is an unfinished record"]


def test_killed_column_writer_reads_up_to_the_last_complete_tick(tmp_path: Path) -> None:
    path = tmp_path / "rec.ticks"
    writer = open_writer(path)
    writer.write_ticks([dict(t) for t in TICKS])
    # no close(): the headers still say 0 rows; then the last column write was cut short
    with (path / "q.npy").open("r+b") as f:
        f.truncate(f.seek(0, 2) - 3)
    problems = Problems()
    table = load([path], problems)
    assert table.ticks() == TICKS[:2]
    assert problems.warnings == [
        f"{path}: torn tail: columns hold 2 to 3 rows; kept 2 complete ticks"
    ]
    (path / "p.npy").unlink()
    with pytest.raises(RecordingError, match=r"no p\.npy"):
        load([path], Problems())


def test_unclosed_column_writer_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "rec.ticks"
    writer = open_writer(path)
    writer.write_ticks([dict(t) for t in TICKS])
    problems = Problems()
    assert len(load([path], problems)) == 3
    assert problems.warnings == [f"{path}: unfinished recording (not closed): recovered 3 ticks"]


# -- bad lines and wrong formats -------------------------------------------------------------


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text(
        '{"s":"X","p":1,"t":1}\n{"s":"X","p":2,"t":2\n{"s":"X","p":"3","t":3}\n{"s":"X","p":4,"t":4}\n'
    )
    with pytest.raises(RecordingError) as err:
        load([path], Problems())
    assert str(err.value) == f"{path}:2: not valid JSON"
    problems = Problems("skip")
    assert load([path], problems).p.tolist() == [1, 4]
    assert problems.summary() == [
        "skipped 2 bad line(s); the first:",
        f"  {path}:2: not valid JSON",
        f'  {path}:3: "p" must be a number',
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"p":1,"t":1}', '"s" must be a symbol'),
        ('{"s":"X","t":1}', 'no price ("p")'),
        ('{"s":"X","p":1}', '"t" must be a timestamp'),
        ('{"s":"X","p":1,"t":1.5}', '"t" must be a timestamp'),
        ('{"s":"X","p":1,"t":1,"q":0}', '"q" must be a positive integer'),
        ("[1,2]", "not a JSON object"),
    ],
)
def test_each_bad_tick_field_is_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_text('{"s":"X","p":1,"t":1}\n' + line + "\n")
    with pytest.raises(RecordingError, match=re.escape(f":2: {message}")):
        load([path], Problems())


def test_wrong_format_and_empty_files(tmp_path: Path) -> None:
    csv = tmp_path / "rec.jsonl"
    csv.write_text("exchange,symbol,timestamp\nx,y,1\n")
    with pytest.raises(RecordingError, match=r"rec.jsonl:1: not a JSON Lines tick file"):
        load([csv], Problems("skip"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(RecordingError, match="empty file: no ticks in it"):
        load([empty], Problems())
    npz = tmp_path / "rec.npz"
    npz.write_text("not a zip")
    with pytest.raises(RecordingError, match=r"unreadable \.npz"):
        load([npz], Problems())
    other = tmp_path / "other.npz"
    np.savez(other, x=np.arange(3))
    with pytest.raises(RecordingError, match=r"not a tick \.npz: no t, sym"):
        load([other], Problems())
    truncated = tmp_path / "cut.npz"
    _write(tmp_path / "whole.npz", TICKS)
    truncated.write_bytes((tmp_path / "whole.npz").read_bytes()[:-40])
    with pytest.raises(RecordingError, match=r"unreadable \.npz"):
        load([truncated], Problems())


def test_a_directory_of_files_is_merged_by_time(tmp_path: Path) -> None:
    folder = tmp_path / "day"
    folder.mkdir()
    _write(folder / "a.jsonl", [TICKS[0], TICKS[2]])
    _write(folder / "b.npz", [TICKS[1]])
    assert load([folder], Problems()).ticks() == TICKS
    assert TickTable.empty().first_disorder() is None


def test_concat_merges_symbol_tables_and_keeps_source_lines_only_if_all_have_them() -> None:
    first, second = TickTable.from_ticks(TICKS[:2]), TickTable.from_ticks(TICKS[2:])
    first.lines = np.array([3, 4])
    joined = concat([first, second])
    assert joined.ticks() == TICKS and joined.lines is None
    second.lines = np.array([9])
    assert concat([first, second]).lines.tolist() == [3, 4, 9]
    assert concat([first, second]).take(np.array([2, 0])).ticks() == [TICKS[2], TICKS[0]]
