"""``EnvParser``: the one ArgumentParser of every subcommand, so each option also reads
``TICKER_<OPTION>`` and every mistake is one line that names it (issue 19)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable
from typing import Any, NoReturn, TypeAlias

from ticker.commands.argtypes import env_name

Check = Callable[[argparse.Namespace, "EnvParser"], str | None]
"""Judges the parsed flags together: the problem as one line, or None."""


def _switch(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("use 1 or 0 (true/false, yes/no, on/off)")


class EnvParser(argparse.ArgumentParser):
    """An ArgumentParser whose options also read ``TICKER_<OPTION>`` from the environment.

    A mistake is one line on stderr, not the usage (``serve``'s is forty lines that bury
    it). ``refuse_extras``: unknown arguments are this parser's error, so the line names
    ``ticker serve``, not ``ticker``. ``checks`` judge the flags together once parsed.
    """

    def __init__(self, *args: Any, refuse_extras: bool = False, **kw: Any) -> None:
        self.refuse_extras = refuse_extras
        self.checks: list[Check] = []
        self._stock: dict[str, tuple[str, Any]] = {}
        super().__init__(*args, **kw)

    # typeshed overloads parse_known_args on the namespace's type; this override serves
    # every overload the same way, which mypy cannot see through.
    def parse_known_args(  # type: ignore[override]
        self, args: Iterable[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse, then run ``checks``: the first problem one finds is the error."""
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and self.refuse_extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        for check in self.checks:
            problem = check(parsed, self)
            if problem:
                self.error(problem)
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        """One line, not the usage block: the usage is a ``--help`` away."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _bad_variable(self, problem: str) -> None:
        """Said when this command runs: every command's parser is built for any one."""
        self.checks.insert(0, lambda args, parser: problem)

    def flag(self, dest: str) -> str:
        """The flag that sets ``dest`` (``start`` is ``--from``)."""
        return str(self._stock[dest][0])

    def given(self, args: argparse.Namespace, dest: str) -> str | None:
        """The flag of ``dest`` (and its variable, if set) when it was set, by either, to
        something other than its built-in default; None when it was not."""
        flag, stock = self._stock[dest]
        if getattr(args, dest) == stock:
            return None
        env = env_name(flag)
        return f"{flag} (or {env})" if env in os.environ else flag

    def add_option(
        self,
        flag: str,
        *,
        type: Callable[[str], Any] = str,
        default: Any = None,
        env_type: Callable[[str], Any] | None = None,
        **kw: Any,
    ) -> None:
        """An option and its variable; ``action="store_true"`` makes a switch (env 1 or 0).
        ``env_type`` reads the variable when it differs from one flag's value (a list)."""
        env = env_name(flag)
        switch = kw.get("action") == "store_true"
        if switch:
            type, default = _switch, bool(default)
        stock = default
        raw = os.environ.get(env)
        if raw is not None:
            try:
                default = (env_type or type)(raw)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                self._bad_variable(f"environment variable {env}={raw!r} is invalid: {exc}")
            if kw.get("choices") and default not in kw["choices"]:
                self._bad_variable(
                    f"environment variable {env}={raw!r}: choose from {kw['choices']}"
                )
        help_text = kw.pop("help", "")
        kw["help"] = f"{help_text} [env {env}; default: %(default)s]"
        if switch:
            action = self.add_argument(flag, default=default, **kw)
        else:
            action = self.add_argument(flag, type=type, default=default, **kw)
        self._stock[action.dest] = (flag, stock)

    def add_flag(self, flag: str, *, help: str) -> None:
        """An on/off option; ``TICKER_<OPTION>`` set to 1, true or yes turns it on."""
        env = env_name(flag)
        raw = os.environ.get(env, "")
        if raw.lower() not in ("", "0", "false", "no", "1", "true", "yes"):
            self._bad_variable(f"environment variable {env}={raw!r}: use 1/true/yes or 0/false/no")
        default = raw.lower() in ("1", "true", "yes")
        action = self.add_argument(
            flag, action="store_true", default=default, help=f"{help} [env {env}]"
        )
        self._stock[action.dest] = (flag, False)


Commands: TypeAlias = "argparse._SubParsersAction[EnvParser]"  # not generic at run time
"""What each subcommand's ``add_parser`` adds itself to."""
