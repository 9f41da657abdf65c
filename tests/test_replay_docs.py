"""docs/replay.md agrees with the code: every format, flag and command it should name."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from ticker.cli import build_parser, main
from ticker.recording.formats import READ_FORMATS, WRITE_SUFFIXES
from ticker.recording.rotating import SUFFIXES

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
TEXT = (ROOT / "docs" / "replay.md").read_text()


def test_every_format_is_documented() -> None:
    for suffix in (*WRITE_SUFFIXES, *SUFFIXES):
        assert f"`*{suffix}" in TEXT or f"`{suffix}`" in TEXT, suffix
    assert f"--format {'|'.join(READ_FORMATS)}" in TEXT


def test_every_replay_and_record_flag_is_documented() -> None:
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    serve = subcommands["serve"]
    flags = [
        option
        for action in serve._actions
        for option in action.option_strings
        if option.startswith("--")
        and action.dest
        in (
            "speed",
            "loop",
            "keep_time",
            "start",
            "end",
            "sort",
            "on_error",
            "format",
            "columns",
            "time_unit",
            "record",
            "record_format",
            "record_max_bytes",
            "replay_dir",
        )
    ]
    assert len(flags) == 14
    for flag in flags:
        assert flag in TEXT, flag
    for command in ("convert", "record"):
        assert command in subcommands
        assert f"### `ticker {command}" in TEXT


PLACEHOLDERS = {"what is wrong": ".+", "...": ".*", "FILE": r"\S+", "OUT": r"\S+", "DIR": r"\S+"}
PLACEHOLDERS |= {"LINE": r"\d+", "N": r"\d+"}


def bad_files_quotes() -> list[str]:
    """The messages quoted in the "what you get" column of the Bad files table."""
    section = TEXT.split("## Bad files", 1)[1].split("\n\n", 2)[1]
    rows = [line.split(" | ", 1)[1] for line in section.splitlines() if line.startswith("| ")]
    quotes = [quote for row in rows[2:] for quote in re.findall(r"`([^`]+)`", row)]
    return [quote for quote in quotes if not quote.startswith("--")]  # flags, not messages


def pattern(quote: str) -> re.Pattern[str]:
    """A quote with its placeholders (FILE, LINE, N, ...) as what they stand for."""
    keys = sorted(PLACEHOLDERS, key=len, reverse=True)
    words = "|".join(rf"\b{re.escape(k)}\b" if k.isalpha() else re.escape(k) for k in keys)
    parts = re.split(f"({words})", quote)
    return re.compile("".join(PLACEHOLDERS.get(p, re.escape(p)) for p in parts))


def bad_files(root: Path) -> list[list[str | Path]]:
    """One ``ticker convert`` per case of the table, each in its own directory."""
    lobster = DATA / "AAPL_2012-06-21_34200000_57600000_message_10.csv"
    tardis = (DATA / "tardis_trades.csv").read_text().splitlines(keepends=True)
    jsonl = '{"s":"X","p":1,"t":1}\n{"s":"X","p":2,"t":2}\n'
    gz = gzip.compress("".join(f'{{"s":"X","p":{i % 7},"t":{i}}}\n' for i in range(9999)).encode())
    rows = lobster.read_text().split("\n")
    fields = rows[35].split(",")
    rows[35] = ",".join([*fields[:4], fields[4][:5] + "x" + fields[4][6:], *fields[5:]])
    cases: dict[str, tuple[str, str | bytes]] = {
        "price": ("aapl.csv", "\n".join(rows)),  # line 36: 5857400 -> 58574x0
        "number": ("rec.jsonl", jsonl + '{"s":"X","p":"a","t":3}\n'),
        "fields": ("trades.csv", "".join(tardis[:4]) + "a,b,c\n"),
        "back": ("back.jsonl", jsonl[::-1].strip()[::-1] + '\n{"s":"X","p":1,"t":0}\n'),
        "torn": ("torn.jsonl.gz", gz[:-20]),
        "corrupt": ("corrupt.jsonl.gz", gz[:2000] + bytes(b ^ 0xFF for b in gz[2000:2100])),
        "notgz": ("bad.jsonl.gz", "nope\n"),
        "empty": ("empty.jsonl", ""),
        "object": ("rec.jsonl", "[1]\n"),
        "unknown": ("notes.txt", "hello\n"),
        "npz": ("bad.npz", b"PK junk"),
        "renamed": ("aapl.csv", lobster.read_bytes()),
    }
    runs: list[list[str | Path]] = []
    for name, (file, content) in cases.items():
        (root / name).mkdir()
        path = root / name / file
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        runs.append([path, root / name / "out.jsonl"])
    lobster_flags = ["--symbol", "AAPL", "--date", "2012-06-21"]
    runs[0] += lobster_flags
    runs.append([runs[2][0], root / "fields" / "skipped.jsonl", "--on-error", "skip"])
    runs.append([runs[-2][0], root / "renamed" / "x.jsonl", "--format", "lobster"])
    runs.append([root / "missing.jsonl", root / "out.jsonl"])
    runs.append([runs[1][0], runs[1][0]])  # an existing output
    runs.append([runs[1][0], root / "no" / "such" / "out.jsonl"])
    return runs


def test_the_bad_files_table_quotes_what_the_tool_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process (``ticker.cli.main``) for speed: tests/test_cli_errors.py runs the
    command as a process for exit status and tracebacks."""
    printed: list[str] = []
    for argv in bad_files(tmp_path):
        main(["convert", *map(str, argv)])
        printed += capsys.readouterr().err.splitlines()
    quotes = bad_files_quotes()
    assert len(quotes) >= 15, quotes
    missing = [q for q in quotes if not any(pattern(q).search(line) for line in printed)]
    assert not missing, "\n".join(["not printed:", *missing, "printed:", *printed])
