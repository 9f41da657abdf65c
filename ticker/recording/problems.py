"""What went wrong in a file, said as ``file:line: what``, and what to do about it.

Readers never raise a bare parse exception at a user: a bad line becomes a
``RecordingError`` naming the file and line (``--on-error stop``, the default), or is
skipped and counted (``--on-error skip``). A torn tail (a writer killed mid-record) is a
warning, not an error: the complete ticks before it are good data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ON_ERROR = ("stop", "skip")

MAX_EXAMPLES = 5
"""Skipped lines quoted in the final report; the rest are only counted."""


class RecordingError(Exception):
    """A file that cannot be read as asked: the message names the file (and line)."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.message = message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass(slots=True)
class Problems:
    """Collects what readers found: bad lines (raised or skipped) and warnings."""

    on_error: str = "stop"
    flag: str | None = None
    """The command-line option that sets ``on_error``: a stop names it, so the user
    learns the way past a bad line (None where no option exists)."""
    skipped: int = 0
    examples: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}")

    def bad(self, path: str | Path, line: int, message: str) -> None:
        """A malformed line: raise (stop) or count it (skip)."""
        if self.on_error == "stop":
            hint = f"; pass {self.flag} skip to skip bad lines" if self.flag else ""
            raise RecordingError(path, message + hint, line)
        error = RecordingError(path, message, line)
        self.skipped += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(str(error))

    def warn(self, path: str | Path, message: str) -> None:
        """Something read fine but worth saying (a torn tail, a sort): in the summary."""
        self.warnings.append(f"{path}: {message}")

    def summary(self) -> list[str]:
        """Lines for the end-of-run report (empty when all was well)."""
        lines = [f"warning: {w}" for w in self.warnings]
        if self.skipped:
            lines.append(f"skipped {self.skipped} bad line(s); the first:")
            lines += [f"  {e}" for e in self.examples]
        return lines
