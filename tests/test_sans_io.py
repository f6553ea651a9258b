"""The core at the package root is sans-IO: no Twisted, no socket, no clock, no global random."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "bareosproto"
CORE = sorted(PACKAGE.glob("*.py"))
FORBIDDEN = {"twisted", "socket", "time", "random", "asyncio", "select", "selectors", "threading", "datetime", "logging"}


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_module_imports_nothing_forbidden(path: pathlib.Path) -> None:
    """No core module imports Twisted, sockets, clocks, threads, logging or the global random."""
    assert imported_modules(path) & FORBIDDEN == set()


def test_importing_the_core_loads_no_twisted() -> None:
    """Importing every core module in a fresh interpreter loads no Twisted module.

    (``ssl`` itself imports ``socket``; the TLS engine only uses ``MemoryBIO``, so the
    source-level check above is the one that keeps sockets out.)
    """
    names = [f"bareosproto.{p.stem}" for p in CORE if p.stem != "__init__"]
    code = (
        "import sys\n"
        + "".join(f"import {n}\n" for n in names)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'twisted')\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
