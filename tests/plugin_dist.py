"""What an installer leaves behind for a plugin, written by hand: found through real
distribution metadata (``importlib.metadata``), with no network and no build backend."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "feed-plugin"


def install(project: Path, site: Path) -> None:
    """The project's packages and a ``.dist-info`` with its entry points, into ``site``."""
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    for package in project.iterdir():
        if (package / "__init__.py").exists():
            shutil.copytree(package, site / package.name)
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
    )
    lines = []
    for group, points in meta["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
