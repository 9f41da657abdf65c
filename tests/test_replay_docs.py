"""docs/replay.md agrees with the code: every format, flag and command it should name."""

from __future__ import annotations

from pathlib import Path

from ticker.cli import build_parser
from ticker.recording.formats import READ_FORMATS, WRITE_SUFFIXES
from ticker.recording.rotating import SUFFIXES

TEXT = (Path(__file__).resolve().parent.parent / "docs" / "replay.md").read_text()


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
