"""The package's floors and its import graph, read from the source with ``ast``.

Every import counts: at the top, inside a function, under ``TYPE_CHECKING``. A circle
that closes only for the type checker is still a circle a reader has to hold in mind,
and a core module that names a type from above still needs the floor above it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import ticker

PACKAGE = Path(ticker.__file__).parent

FLOORS: dict[str, int] = {
    "ticker": 0,  # the package itself: every import of a submodule runs it, so it imports nothing
    "ticker.core": 0,
    "ticker.recording": 1,
    "ticker.cluster": 1,
    "ticker.client": 1,
    "ticker.progress": 1,
    "ticker.server": 2,
    "ticker.commands": 3,
    "ticker.cli": 4,
    "ticker.__main__": 5,
}
"""A part of the package may import its own modules and those of lower floors only."""

KNOWN_CYCLES: list[frozenset[str]] = []
"""Circles the graph is allowed to keep: none. Each entry must be exactly one circle the
graph still has."""


Graph = Mapping[str, set[str]]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``ticker/core/bus.py`` -> ``ticker.core.bus``; a package is its ``__init__``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The modules of ``known`` that ``source`` imports, wherever the import stands.

    ``from a.b import c`` names the module ``a.b.c`` if there is one, else ``a.b``; a
    relative import is resolved against ``module``. Imports of a module's own name and of
    anything outside ``known`` are left out.
    """
    modules = set(known)
    here = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def package_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Each module under ``root`` and the package modules it imports."""
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    return {
        module: imports_of(path.read_text(), module, path.name == "__init__.py", paths)
        for module, path in paths.items()
    }


def part(module: str) -> str:
    """The floor a module stands on is its part's: ``ticker.core.bus`` -> ``ticker.core``."""
    return ".".join(module.split(".")[:2])


def circles(graph: Graph) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def a_path_round(graph: Graph, component: frozenset[str]) -> list[str]:
    """One circle through ``component``, first module again at the end, for the message."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for child in sorted(graph[node] & component):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child not in came_from:
                came_from[child] = node
                frontier.append(child)
    raise AssertionError(f"{sorted(component)} is not a circle")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return package_graph()


def test_the_reader_sees_every_kind_of_import() -> None:
    known = {"ticker", "ticker.core", "ticker.core.bus", "ticker.core.session", "ticker.server"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import orjson\n"
        "from . import bus\n"
        "if TYPE_CHECKING:\n"
        "    from ticker.server.node import Node\n"
        "def later():\n"
        "    import ticker.core.session as s\n"
    )
    found = imports_of(source, "ticker.core.mailbox", False, known)
    assert found == {"ticker.core.bus", "ticker.server", "ticker.core.session"}
    assert imports_of("from .. import server", "ticker.core", True, known) == {"ticker.server"}


def test_the_graph_is_the_package(graph: dict[str, set[str]]) -> None:
    assert "ticker.core.session" in graph["ticker.server.replays"]
    assert "ticker.server.client_replay" in graph["ticker.server.replays"]
    assert graph["ticker.__main__"] == {"ticker.cli"}


def test_the_core_imports_only_the_core(graph: dict[str, set[str]]) -> None:
    """``ticker/core`` is the floor: pure, and testable with nothing of the package above it."""
    upward = {
        module: sorted(target for target in targets if part(target) != "ticker.core")
        for module, targets in graph.items()
        if part(module) == "ticker.core"
    }
    assert {module: targets for module, targets in upward.items() if targets} == {}


def test_every_part_imports_only_its_floor_and_below(graph: dict[str, set[str]]) -> None:
    unplaced = sorted({part(module) for module in graph} - FLOORS.keys())
    assert unplaced == [], "give these parts a floor in FLOORS"
    upward = sorted(
        f"{module} (floor {FLOORS[part(module)]}) imports {target} (floor {FLOORS[part(target)]})"
        for module, targets in graph.items()
        for target in targets
        if part(target) != part(module) and FLOORS[part(target)] >= FLOORS[part(module)]
    )
    assert upward == []


def test_the_circle_finder_finds_circles() -> None:
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert circles(toy) == [frozenset({"a", "b", "c"})]
    assert a_path_round(toy, frozenset({"a", "b", "c"})) == ["a", "b", "c", "a"]


def test_no_import_circles(graph: dict[str, set[str]]) -> None:
    found = circles(graph)
    new = [
        " -> ".join(a_path_round(graph, circle)) for circle in found if circle not in KNOWN_CYCLES
    ]
    assert new == [], "import circles"
    gone = [sorted(circle) for circle in KNOWN_CYCLES if circle not in found]
    assert gone == [], "no longer a circle: take it out of KNOWN_CYCLES"
