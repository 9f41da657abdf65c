"""Text lines to ticks for publishing: NDJSON, or CSV with a header naming tick fields.

``ticker publish`` reads a file or a pipe line by line (``tail -f quotes.csv | ticker
publish URL -``), so the format is decided by the first line that is not blank: a JSON
object makes it NDJSON, anything else is a CSV header such as ``s,p,v``. An NDJSON line
may also be a book change set (``{"book": {...}}``); CSV carries ticks only. Decoding
only turns text into objects; the checks are ``ticker.core.publish``'s, the same the
server applies, so a bad line is reported with its number before anything is sent.
"""

from __future__ import annotations

from typing import Any

import orjson

from ticker.core.publish import TICK_FIELDS

CSV_FIELDS = ("s", "p", "b", "a", "v", "et")
_NUMBER_FIELDS = frozenset({"p", "b", "a", "v"})


class LineError(ValueError):
    """A line that is not a tick; the message names the line."""


class LineDecoder:
    """Decodes one line at a time, remembering the format (and CSV header) from the first."""

    def __init__(self) -> None:
        self.number = 0
        self.header: list[str] | None = None
        self.ndjson: bool | None = None

    def decode(self, line: str | bytes) -> Any | None:
        """The tick object of one line, None for a blank line or the CSV header."""
        self.number += 1
        text = line.decode() if isinstance(line, bytes) else line
        text = text.strip()
        if not text:
            return None
        if self.ndjson is None:
            self.ndjson = text.startswith("{")
            if not self.ndjson:
                self.header = self._header(text)
                return None
        if self.ndjson:
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise LineError(f"line {self.number}: not valid JSON: {exc}") from None
        return self._row(text)

    def _header(self, text: str) -> list[str]:
        names = [name.strip() for name in text.split(",")]
        unknown = [name for name in names if name not in CSV_FIELDS]
        if unknown or len(set(names)) != len(names) or not {"s", "p"} <= set(names):
            raise LineError(
                f"line {self.number}: a CSV header names tick fields ({TICK_FIELDS}),"
                f" each once, s and p at least; got {text!r}"
            )
        return names

    def _row(self, text: str) -> dict[str, Any]:
        assert self.header is not None
        cells = [cell.strip() for cell in text.split(",")]
        if len(cells) != len(self.header):
            raise LineError(
                f"line {self.number}: {len(cells)} field(s), the header has {len(self.header)}"
            )
        tick: dict[str, Any] = {}
        for name, cell in zip(self.header, cells, strict=True):
            if not cell:
                continue  # an optional field left empty
            if name == "s":
                tick[name] = cell
                continue
            try:
                tick[name] = float(cell) if name in _NUMBER_FIELDS else int(cell)
            except ValueError:
                raise LineError(f"line {self.number}: {name}={cell!r} is not a number") from None
        return tick
