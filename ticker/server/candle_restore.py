"""A restart keeps the chart: today's bars rebuilt from the ``--record`` directory.

Before the node takes its first tick (and so before it serves a client), the day's
recording files (``ticks-YYYY-MM-DD-NNN.*``, today on UTC) are read in a worker thread,
in order, and handed to ``Candles`` in chunks, each file's progress in the log. A file
that cannot be read is logged and skipped: a short chart beats a server that will not
start. Without ``--record`` the bars start empty.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ticker.core.candles import Candles
from ticker.core.tape import Columns
from ticker.core.ticks import now_us
from ticker.recording.formats import load
from ticker.recording.problems import Problems, RecordingError
from ticker.recording.rotating import SUFFIXES, day_of
from ticker.recording.table import TickTable

log = logging.getLogger("ticker.candles")

CHUNK = 1_000_000
"""Ticks handed to the aggregation at once (memory stays a few tens of MB)."""


def todays_files(directory: Path, now: int) -> list[Path]:
    """The recording files of the UTC day of ``now`` (µs), in the order they were written."""
    prefix = f"ticks-{day_of(now)}-"
    return sorted(
        p for p in directory.glob(prefix + "*") if p.name.endswith(SUFFIXES) and p.is_file()
    )


def columns(table: TickTable, start: int, stop: int) -> Columns:
    """Rows ``start:stop`` of a table, grouped by symbol in time order (what ``add`` takes)."""
    sym = table.sym[start:stop]
    order = np.argsort(sym, kind="stable")
    present = np.unique(sym)
    counts = np.bincount(sym, minlength=len(table.symbols))[present]
    v = table.v[start:stop][order]
    return Columns(
        [table.symbols[i] for i in present.tolist()],
        counts.tolist(),
        table.t[start:stop][order],
        table.p[start:stop][order],
        np.where(np.isnan(v), 0.0, v),
    )


def restore(candles: Candles, directory: Path, now: int | None = None) -> int:
    """Rebuild today's bars from ``directory``; returns the ticks read (runs in a thread)."""
    started = time.monotonic()
    files = todays_files(directory, now_us() if now is None else now)
    if not files:
        log.info("candles: no recording of today in %s: the bars start empty", directory)
        return 0
    log.info("candles: rebuilding today's bars from %d file(s) in %s", len(files), directory)
    total = 0
    for number, path in enumerate(files, 1):
        try:
            table = load([path], Problems(on_error="skip"))
        except (OSError, RecordingError, ValueError) as exc:
            log.warning("candles: %s skipped: %s", path.name, exc)
            continue
        for start in range(0, len(table), CHUNK):
            candles.add(columns(table, start, min(start + CHUNK, len(table))))
        total += len(table)
        log.info("candles: %s: %d ticks (file %d of %d)", path.name, len(table), number, len(files))
    log.info(
        "candles: rebuilt %d series from %d ticks in %.1f s",
        candles.series(),
        total,
        time.monotonic() - started,
    )
    return total
