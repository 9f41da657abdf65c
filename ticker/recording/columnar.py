"""The columnar format: one ``.npy`` file per column plus a symbol table, for speed.

Two containers of the same arrays (``t``, ``sym``, ``p``, ``b``, ``a``, ``v``, ``q``; see
``table.py``):

* a directory (``NAME.ticks/``): ``<column>.npy`` and ``symbols.txt`` (one name per line,
  a tick's ``sym`` is its line index). Loaded with memory mapping: opening a recording of
  any size costs nothing until the rows are read. The writer appends per batch, so it can
  record a live stream: new symbol names are flushed before the ticks that use them, each
  column is flushed after every batch, and the ``.npy`` headers get their final row count
  at ``close()``. A file a killed writer left behind still reads: the rows are counted
  from the file sizes, and columns of unequal length (a torn tail) are cut to the rows
  that every column holds completely, with a warning.
* an ``.npz`` (uncompressed zip of the same ``.npy`` files, ``symbols.npy`` being the
  table): one file to pass around; numpy cannot memory-map inside a zip, so it loads whole.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np

from ticker.core.ticks import TickBatch
from ticker.recording.book_lines import BookRow
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.table import COLUMNS, DTYPES, TickTable

HEADER_BYTES = 128
"""Fixed header length of the columns the writer makes: room for any row count, so the
header can be rewritten in place at close."""

SYMBOLS_FILE = "symbols.txt"


def is_columnar_dir(path: Path) -> bool:
    """A column directory is recognised by its time column, whatever else it holds."""
    return path.is_dir() and (path / "t.npy").exists()


def _header(dtype: np.dtype, rows: int) -> bytes:
    text = repr({"descr": dtype.str, "fortran_order": False, "shape": (rows,)})
    body_len = HEADER_BYTES - 10
    body = text.encode("latin1").ljust(body_len - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + body


def refuse_books(path: Path, books: Sequence[BookRow]) -> None:
    """Column files hold ticks only: book rows are an error, never dropped in silence."""
    if books:
        raise RecordingError(
            path,
            f"{len(books)} order-book row(s) to write, but column files (.npz, .ticks) hold "
            "ticks only: write .jsonl or .jsonl.gz to keep the books",
        )


class ColumnarDirWriter:
    """Appends tables to a column directory; crash-safe per ``write`` (see module doc)."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=False)
        self.path = path
        self._symbols: dict[str, int] = {}
        self._symbols_flushed = 0
        self._symbol_file = (path / SYMBOLS_FILE).open("x", encoding="utf-8")
        self._files: dict[str, IO[bytes]] = {}
        for name in COLUMNS:
            f = (path / f"{name}.npy").open("xb")
            f.write(_header(DTYPES[name], 0))
            self._files[name] = f
        self.ticks = 0
        self.bytes = 0
        self.books = 0

    def write_ticks(self, ticks: TickBatch, books: Sequence[BookRow] = ()) -> None:
        """Append protocol ticks, numbering new symbols as they come (no books)."""
        refuse_books(self.path, books)
        if ticks:
            self._append(TickTable.from_ticks(ticks, self._symbols), self._symbols)

    def write_table(self, table: TickTable, books: Sequence[BookRow] = ()) -> None:
        """Append a table, its symbols renumbered into this file's (no books)."""
        refuse_books(self.path, books)
        if not len(table):
            return
        index = self._symbols
        remap = np.array([index.setdefault(s, len(index)) for s in table.symbols] + [0], "<i4")
        table = TickTable(list(index), table.t, remap[table.sym], *_rest(table))
        self._append(table, index)

    def _append(self, table: TickTable, index: dict[str, int]) -> None:
        known = self._symbols_flushed
        if len(index) > known:
            self._symbol_file.write("".join(f"{s}\n" for s in list(index)[known:]))
            self._symbol_file.flush()
            self._symbols_flushed = len(index)
        for name, f in self._files.items():
            data = np.ascontiguousarray(table.column(name), DTYPES[name])
            f.write(data.tobytes())
            f.flush()
            self.bytes += data.nbytes
        self.ticks += len(table)

    @property
    def symbols(self) -> list[str]:
        """The symbol table so far, index order."""
        return list(self._symbols)

    def close(self) -> None:
        """Write the final row count into each header: until then a reader
        sees a killed writer's file up to its last complete tick."""
        self._symbol_file.close()
        for name, f in self._files.items():
            f.seek(0)
            f.write(_header(DTYPES[name], self.ticks))
            f.close()


def _rest(table: TickTable) -> tuple[np.ndarray, ...]:
    return table.p, table.b, table.a, table.v, table.q


class NpzWriter:
    """Writes a column directory beside the target, then zips it into place at close."""

    def __init__(self, path: Path) -> None:
        if path.exists():
            raise FileExistsError(path)
        self.path = path
        self._staging = path.with_name(f".{path.name}.partial")
        shutil.rmtree(self._staging, ignore_errors=True)
        self._dir = ColumnarDirWriter(self._staging)

    @property
    def ticks(self) -> int:
        """Ticks written so far."""
        return self._dir.ticks

    @property
    def bytes(self) -> int:
        """Bytes written so far (of the staged columns)."""
        return self._dir.bytes

    books = 0
    """An archive holds no books (``refuse_books``)."""

    def write_ticks(self, ticks: TickBatch, books: Sequence[BookRow] = ()) -> None:
        """Stage protocol ticks as columns; the archive is made at ``close``."""
        refuse_books(self.path, books)
        self._dir.write_ticks(ticks)

    def write_table(self, table: TickTable, books: Sequence[BookRow] = ()) -> None:
        """Stage a table's columns; the archive is made at ``close``."""
        refuse_books(self.path, books)
        self._dir.write_table(table)

    def close(self) -> None:
        """Zip the staged columns into the ``.npz`` and move it in place atomically."""
        self._dir.close()
        symbols = self._dir.symbols
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for name in COLUMNS:
                z.write(self._staging / f"{name}.npy", f"{name}.npy")
            with z.open("symbols.npy", "w") as f:
                np.save(f, np.array(symbols, dtype=f"<U{max(map(len, symbols), default=1)}"))
        os.replace(tmp, self.path)
        shutil.rmtree(self._staging)


# -- reading ------------------------------------------------------------------------------


def read_columnar_dir(path: Path, problems: Problems) -> TickTable:
    """Memory-maps the columns, so a day-long recording opens without reading it all."""
    symbols_path = path / SYMBOLS_FILE
    if not symbols_path.exists():
        raise RecordingError(path, f"not a column directory: no {SYMBOLS_FILE}")
    symbols = symbols_path.read_text(encoding="utf-8").split("\n")
    if symbols[-1]:
        problems.warn(symbols_path, "torn tail: the last symbol name is unfinished")
    symbols = symbols[:-1]
    columns: dict[str, np.ndarray] = {}
    declared: dict[str, int] = {}
    for name in COLUMNS:
        file = path / f"{name}.npy"
        if not file.exists():
            raise RecordingError(path, f"not a column directory: no {name}.npy")
        with file.open("rb") as f:
            try:
                fmt = np.lib.format
                version = fmt.read_magic(f)
                read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, fortran, dtype = read(f)
            except (ValueError, SyntaxError) as exc:
                raise RecordingError(file, f"not a .npy file: {exc}") from None
            offset = f.tell()
        if dtype != DTYPES[name] or fortran or len(shape) != 1:
            raise RecordingError(file, f"expected a 1-D {DTYPES[name]} column, found {dtype}")
        available = (file.stat().st_size - offset) // dtype.itemsize
        declared[name] = shape[0]
        columns[name] = (
            np.memmap(file, dtype, "r", offset, (available,)) if available else np.empty(0, dtype)
        )
    rows = min(len(c) for c in columns.values())
    longest = max(len(c) for c in columns.values())
    full = min(declared.values())
    if longest != rows:
        problems.warn(
            path,
            f"torn tail: columns hold {rows} to {longest} rows; kept {rows} complete ticks",
        )
    elif rows != full:
        problems.warn(path, f"unfinished recording (not closed): recovered {rows} ticks")
    table = TickTable(symbols, *(columns[c][:rows] for c in COLUMNS))
    return _check_symbols(path, table, problems)


def read_npz(path: Path, problems: Problems) -> TickTable:
    """The same columns in one ``np.savez`` file; pickles refused, so a file cannot run code."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [c for c in (*COLUMNS, "symbols") if f"{c}.npy" not in z.zip.namelist()]
            if missing:
                raise RecordingError(path, f"not a tick .npz: no {', '.join(missing)}")
            arrays = {c: z[c] for c in COLUMNS}
            symbols = z["symbols"].tolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise RecordingError(path, f"unreadable .npz (truncated or not an npz): {exc}") from None
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) != 1:
        raise RecordingError(path, "columns of different lengths")
    for c in COLUMNS:
        if arrays[c].dtype != DTYPES[c]:
            raise RecordingError(path, f"column {c} is {arrays[c].dtype}, expected {DTYPES[c]}")
    return _check_symbols(path, TickTable(symbols, *(arrays[c] for c in COLUMNS)), problems)


def _check_symbols(path: Path, table: TickTable, problems: Problems) -> TickTable:
    if not len(table):
        raise RecordingError(path, "empty recording: no ticks in it")
    bad = np.flatnonzero((table.sym < 0) | (table.sym >= len(table.symbols)))
    if len(bad):
        problems.warn(path, f"torn tail: ticks from #{bad[0] + 1} name no known symbol; cut")
        table = table.take(slice(0, int(bad[0])))
    return table
