"""The docs and the tool cannot drift apart: every subcommand's ``--help`` works (walked from
the parser itself, so a new subcommand is covered), and every console session quoted in
docs/*.md (a fenced block with ``$ `` lines) prints what it says when run (the convention
is in docs/cli.md)."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ticker.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXIT_MISTAKE = 2
BUSY_PORT = 8089
"""Held busy on 127.0.0.1 while a block runs: what a port in use prints can be shown."""


@dataclass
class Shown:
    """One ``$ command`` of a console block and the lines the docs say it prints."""

    command: str
    lines: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        """What the convention expects: a mistake (an ``error:`` line) exits 2."""
        return EXIT_MISTAKE if any("error:" in line for line in self.lines) else 0


@dataclass
class Block:
    where: str
    commands: list[Shown]


def console_blocks(text: str, name: str) -> list[Block]:
    """The console blocks of one document (fenced blocks with ``$ `` lines), each command
    with the output quoted after it."""
    blocks = []
    for match in FENCE.finditer(text):
        if not any(line.startswith("$ ") for line in match.group(1).splitlines()):
            continue  # code, not a console session
        line_no = text.count("\n", 0, match.start()) + 1
        commands: list[Shown] = []
        for line in match.group(1).splitlines():
            if line.startswith("$ "):
                commands.append(Shown(line[2:]))
            elif line.strip():
                assert commands, f"{name}:{line_no}: output before any '$ ' command"
                commands[-1].lines.append(line)
        blocks.append(Block(f"{name}:{line_no}", commands))
    return blocks


def mismatches(shown: Shown, status: int, output: str) -> list[str]:
    """What differs between the docs and a run: each quoted line must be an output line
    (or the start of one when it ends with ``...``), and the exit status must match."""
    got = output.splitlines()
    problems = [f"exit status {status}, the docs imply {shown.status}"] * (status != shown.status)
    for line in shown.lines:
        if line.endswith("..."):
            found = any(out.startswith(line[:-3]) for out in got)
        else:
            found = line in got
        if not found:
            problems.append(f"not printed: {line!r}")
    return problems


def _shim(bin_dir: Path) -> None:
    """``ticker`` on PATH is this checkout's, run by this interpreter."""
    path = bin_dir / "ticker"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ticker "$@"\n')
    path.chmod(0o755)


def run_block(block: Block, scratch: Path) -> list[str]:
    """Run a block's commands in order in ``scratch``; every mismatch, named."""
    bin_dir = scratch / ".bin"
    bin_dir.mkdir()
    _shim(bin_dir)
    shutil.copytree(ROOT / "tests" / "data", scratch / "tests" / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKER_")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT))
    problems = []
    with _busy(BUSY_PORT):
        for shown in block.commands:
            problems += _run(block, shown, scratch, env)
    return problems


@contextlib.contextmanager
def _busy(port: int) -> Iterator[None]:
    """``port`` taken while the block runs (if something else has it, it is busy too)."""
    with socket.socket() as sock:
        with contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            sock.listen()
        yield


def _run(block: Block, shown: Shown, scratch: Path, env: dict[str, str]) -> list[str]:
    """One command of a block: what differs from the docs, each line naming the place."""
    done = subprocess.run(
        ["bash", "-c", shown.command],
        capture_output=True,
        text=True,
        cwd=scratch,
        env=env,
        timeout=120,  # a safety net for a command that would not end, not a measure
        check=False,
    )
    assert "Traceback" not in done.stderr, f"{block.where}: $ {shown.command}\n{done.stderr}"
    found = mismatches(shown, done.returncode, done.stdout + done.stderr)
    return [f"{block.where}: $ {shown.command}: {p}" for p in found]


BLOCKS = [block for doc in DOCS for block in console_blocks(doc.read_text(), doc.name)]


def test_the_convention_is_written_down_and_followed() -> None:
    assert "```console" in (ROOT / "docs" / "cli.md").read_text()
    assert BLOCKS and all(block.commands for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_documented_output_is_what_the_tool_prints(block: Block, tmp_path: Path) -> None:
    problems = run_block(block, tmp_path)
    assert not problems, "\n".join(problems)


def test_a_drifted_quote_is_caught() -> None:
    [block] = console_blocks(
        "```console\n$ ticker token\nticker token: error: old words\nmore...\n```\n", "x.md"
    )
    [shown] = block.commands
    assert shown.status == EXIT_MISTAKE
    output = "ticker token: error: new words\nmore and more\n"
    assert mismatches(shown, 2, output) == ["not printed: 'ticker token: error: old words'"]
    assert mismatches(shown, 0, "ticker token: error: old words\nmore\n") == [
        "exit status 0, the docs imply 2"
    ]


def _subcommands() -> list[str]:
    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(commands.choices)


@pytest.mark.parametrize("command", ["", *_subcommands()])
def test_every_subcommand_has_help(command: str) -> None:
    argv = [command, "--help"] if command else ["--help"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKER_")}
    done = subprocess.run(
        [sys.executable, "-m", "ticker", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: ticker {command}".rstrip()) and done.stderr == ""
