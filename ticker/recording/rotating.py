"""A log of everything broadcast, kdb+tick style: one file per UTC day, the date in its
name, and a new file when one grows past a size.

Files are ``ticks-YYYY-MM-DD-NNN.<suffix>`` (NNN counts from 000 within a day), so a
name sort is a time sort and a whole day replays with ``--feed replay:DIR``. A restart
never appends to an existing file (it could end in a torn tail): it takes the next number.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ticker.core.ticks import TickBatch
from ticker.recording.formats import TickWriter, open_writer

SUFFIXES = (".jsonl", ".jsonl.gz", ".ticks")
DAY_US = 86_400_000_000


def day_of(t_us: int) -> str:
    """The UTC date of a tick time: recordings are cut at UTC midnight, whatever the local zone."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t_us)).date().isoformat()


class RotatingRecorder:
    """Writes batches of stamped ticks (each with ``t``) into the day's current file."""

    def __init__(self, directory: Path, *, suffix: str = ".jsonl.gz", max_bytes: int = 1 << 30):
        if suffix not in SUFFIXES:
            raise ValueError(f"suffix must be one of {', '.join(SUFFIXES)}")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.suffix = suffix
        self.max_bytes = max_bytes
        self._writer: TickWriter | None = None
        self._day_end = 0
        self.files: list[Path] = []
        self.ticks = 0

    def write(self, ticks: TickBatch) -> None:
        """Append a batch, starting a new file at midnight UTC or past
        ``max_bytes``, so no file grows without bound."""
        while ticks:
            if self._writer is None or ticks[0]["t"] >= self._day_end:
                self._open(ticks[0]["t"])
            assert self._writer is not None
            if ticks[-1]["t"] < self._day_end:
                part, ticks = ticks, []
            else:  # the batch crosses midnight (rare): split it
                cut = next(i for i, t in enumerate(ticks) if t["t"] >= self._day_end)
                part, ticks = ticks[:cut], ticks[cut:]
            self._writer.write_ticks(part)
            self.ticks += len(part)
            if self._writer.bytes >= self.max_bytes:
                self._close_current()

    def _open(self, t_us: int) -> None:
        self._close_current()
        day = day_of(t_us)
        pattern = re.compile(rf"ticks-{day}-(\d{{3,}})\.")
        taken = [int(m[1]) for p in self.directory.iterdir() if (m := pattern.match(p.name))]
        number = max(taken, default=-1) + 1
        path = self.directory / f"ticks-{day}-{number:03d}{self.suffix}"
        self._writer = open_writer(path)
        self.files.append(path)
        self._day_end = (t_us // DAY_US + 1) * DAY_US

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        """Close the current file, leaving every file complete."""
        self._close_current()
