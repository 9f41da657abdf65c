"""Every public name of ``ticker/`` and ``feeds/`` says why it exists, read with ``ast``.

Public: a module-level function or class whose name does not start with ``_``, and such a
method of a public class (properties included; ``@overload`` stubs are not definitions).
The source is parsed, never imported, so a module that needs Redis is checked all the same.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGES = ("ticker", "feeds")

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _is_overload(node: Definition) -> bool:
    return any(
        (isinstance(d, ast.Name) and d.id == "overload")
        or (isinstance(d, ast.Attribute) and d.attr == "overload")
        for d in node.decorator_list
    )


def public_definitions(tree: ast.Module) -> Iterator[tuple[str, Definition]]:
    """(qualified name, node) of each public name the module defines."""
    for node in tree.body:
        if not isinstance(node, Definition) or node.name.startswith("_"):
            continue
        yield node.name, node
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if (
                    isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef)
                    and not member.name.startswith("_")
                    and not _is_overload(member)
                ):
                    yield f"{node.name}.{member.name}", member


def undocumented(tree: ast.Module) -> list[str]:
    """The public names of a module that have no docstring."""
    return [name for name, node in public_definitions(tree) if not ast.get_docstring(node)]


def sources() -> Iterator[tuple[str, str]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text()


def test_every_public_name_has_a_docstring() -> None:
    missing = [
        f"{where}: {name}"
        for where, source in sources()
        for name in undocumented(ast.parse(source))
    ]
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)


def test_what_counts_as_public() -> None:
    tree = ast.parse(
        "def f(): pass\n"
        "def _g(): pass\n"
        "class A:\n"
        "    '''Why A.'''\n"
        "    def m(self): pass\n"
        "    def _n(self): pass\n"
        "    def __len__(self): return 0\n"
        "    @overload\n"
        "    def o(self, x: int) -> int: ...\n"
        "    def o(self, x): '''Why o.'''\n"
        "class _B:\n"
        "    def m(self): pass\n"
    )
    assert undocumented(tree) == ["f", "A.m"]
