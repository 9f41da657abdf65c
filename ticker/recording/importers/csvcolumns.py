"""Delimited text to typed numpy columns, vectorised, with errors that name the line.

The fast path parses the whole file with numpy (``np.loadtxt`` to strings, then one
vectorised conversion per column). Only when that fails does a per-row pass run, to find
each bad row and say what is wrong with it: raised, or skipped and counted (``Problems``).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ticker.recording.problems import Problems, RecordingError

_DECIMAL = re.compile(r"\d+(\.\d*)?")


def decimal_seconds_to_ns(values: np.ndarray) -> np.ndarray:
    """``"34200.004241176"`` -> 34_200_004_241_176: exact, no float on the way."""
    whole, _, frac = np.char.partition(values, ".").T
    frac = np.char.ljust(frac.astype("<U9"), 9, "0")
    ns: np.ndarray = whole.astype(np.int64) * 1_000_000_000 + frac.astype(np.int64)
    return ns


def _is_decimal(text: str) -> bool:
    return _DECIMAL.fullmatch(text) is not None


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _is_iso(text: str) -> bool:
    try:
        np.datetime64(text.removesuffix("Z"), "us")
    except ValueError:
        return False
    return True


KINDS: dict[str, tuple[Callable[[str], bool], str]] = {
    "int": (_is_int, "an integer"),
    "float": (_is_float, "a finite number"),
    "decimal": (_is_decimal, "a non-negative decimal number"),
    "iso": (_is_iso, "an ISO-8601 time"),
    "str": (bool, "a non-empty value"),
}


@dataclass(frozen=True, slots=True)
class Column:
    """One column to read: where it is, what it is called, and the kind it converts to
    (int, float, decimal, iso or str), so each importer states its file's shape as data."""

    index: int
    name: str
    kind: str


def _convert(values: np.ndarray, kind: str) -> np.ndarray:
    if kind == "int":
        return values.astype(np.int64)
    if kind == "float":
        out = values.astype(np.float64)
        if not np.isfinite(out).all():
            raise ValueError("not finite")
        return out
    if kind == "decimal":
        return decimal_seconds_to_ns(values)
    if kind == "iso":
        return np.char.rstrip(values, "Z").astype("datetime64[us]").astype(np.int64)
    if not np.char.str_len(values).all():
        raise ValueError("empty")
    return values


def read_columns(
    path: Path,
    lines: Sequence[str],
    first_line: int,
    columns: Sequence[Column],
    problems: Problems,
    delimiter: str = ",",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Typed columns of ``lines`` (the file's lines from ``first_line``), and each row's
    line number. Blank lines are skipped."""
    numbers = np.array([i for i, text in enumerate(lines, first_line) if text.strip()], np.int64)
    rows = [text for text in lines if text.strip()]
    if not rows:
        return {c.name: np.empty(0) for c in columns}, numbers
    try:
        return _fast(rows, columns, delimiter), numbers
    except ValueError:
        pass
    keep = _check_rows(path, rows, numbers, columns, problems, delimiter)
    rows = [rows[i] for i in keep]
    if not rows:
        return {c.name: np.empty(0) for c in columns}, numbers[:0]
    return _fast(rows, columns, delimiter), numbers[keep]


def _fast(rows: list[str], columns: Sequence[Column], delimiter: str) -> dict[str, np.ndarray]:
    width = max(c.index for c in columns) + 1
    table = np.loadtxt(
        rows,
        dtype=str,
        delimiter=delimiter,
        quotechar='"',
        usecols=range(width),
        ndmin=2,
        comments=None,
    )
    return {c.name: _convert(table[:, c.index], c.kind) for c in columns}


def _check_rows(
    path: Path,
    rows: list[str],
    numbers: np.ndarray,
    columns: Sequence[Column],
    problems: Problems,
    delimiter: str,
) -> list[int]:
    """Indices of the good rows; each bad one goes to ``problems`` (which may raise)."""
    width = max(c.index for c in columns) + 1
    keep: list[int] = []
    for i, fields in enumerate(csv.reader(rows, delimiter=delimiter)):
        line = int(numbers[i])
        if len(fields) < width:
            problems.bad(path, line, f"{len(fields)} field(s), expected at least {width}")
            continue
        for column in columns:
            check, what = KINDS[column.kind]
            value = fields[column.index]
            if not check(value):
                problems.bad(path, line, f"{column.name} must be {what}, got {value[:40]!r}")
                break
        else:
            keep.append(i)
    if len(keep) == len(rows):  # numpy refused what each row accepts: say so, not loop
        raise RecordingError(path, "rows that numpy cannot parse (quoting or encoding?)")
    return keep


def read_text_lines(path: Path) -> list[str]:
    """The file's lines; a missing final newline is fine, undecodable bytes are not."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecordingError(path, f"not a text file (byte {exc.start} is not UTF-8)") from None
    if not text.strip():
        raise RecordingError(path, "empty file: no rows in it")
    return text.splitlines()
