"""Value types for the command line's options: one parser per kind of number, named so
that argparse says what was wanted ("invalid positive int value: '0'")."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

Parse = Callable[[str], Any]


def _named(parse: Parse, name: str) -> Parse:
    parse.__name__ = name
    return parse


def positive(kind: Callable[[str], Any], name: str | None = None) -> Parse:
    """An argparse type for a number above 0 (NaN refused), named in its error."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:  # NaN too
            raise ValueError("must be positive")
        return value

    return _named(parse, name or f"positive {kind.__name__}")


def non_negative(kind: Callable[[str], Any], name: str | None = None, *, zero: str = "") -> Parse:
    """``zero`` says what 0 means (``"0 = off"``), for the error message."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not value >= 0:  # NaN too
            raise ValueError(f"must not be negative ({zero})" if zero else "must not be negative")
        return value

    return _named(parse, name or f"non-negative {kind.__name__}")


def env_name(flag: str) -> str:
    """The environment variable that sets ``flag``: ``--queue-bytes`` is TICKER_QUEUE_BYTES."""
    return "TICKER_" + flag.lstrip("-").replace("-", "_").upper()


def readable_file(text: str) -> Path:
    """A file that is there and readable, checked when the flags are read: the message
    names the file (``open`` deep in ``ssl`` would not)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: not readable (permission denied)")
    return path


def port(text: str) -> int:
    """A TCP port to listen on, 1 to 65535."""
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError("must be a TCP port, 1 to 65535")
    return value
