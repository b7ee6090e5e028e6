"""The package's layers import only downwards: the folder listing is the architecture."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "watchdog"
# Each layer and the layers it may import (its own included). The core knows nothing else; the
# wire formats know the core; the I/O edges know both; sinks deliver through the edges; the
# application wires everything.
ALLOWED = {
    "core": {"core"},
    "opencode": {"core", "opencode"},
    "io": {"core", "opencode", "io"},
    "sinks": {"core", "io", "sinks"},
    "app": {"core", "opencode", "io", "sinks", "app"},
}


def imports_of(path: Path) -> set[str]:
    """Every ``watchdog.<layer>`` a module imports, at any depth (function-level imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "watchdog" and len(parts) > 1 and parts[1] in ALLOWED:
                found.add(parts[1])
    return found


def modules() -> list[tuple[str, Path]]:
    return [
        (path.relative_to(PACKAGE).parts[0], path)
        for path in sorted(PACKAGE.rglob("*.py"))
        if len(path.relative_to(PACKAGE).parts) > 1
    ]


def test_every_module_lives_in_a_layer() -> None:
    """Nothing but the package's entry points sits at the top level."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py"]
    assert {layer for layer, _ in modules()} == set(ALLOWED)


def test_layers_import_only_downwards() -> None:
    """A module imports only its own layer and the layers below it."""
    illegal = {
        str(path.relative_to(PACKAGE)): sorted(imports_of(path) - ALLOWED[layer])
        for layer, path in modules()
        if imports_of(path) - ALLOWED[layer]
    }
    assert illegal == {}


def test_the_core_does_no_io() -> None:
    """The core imports no network, file, clock-reading or concurrency library."""
    forbidden = {"anyio", "httpx", "httpx_sse", "socket", "asyncio", "structlog", "time", "os"}
    for path in (PACKAGE / "core").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & forbidden, f"{path.name} imports {sorted(roots & forbidden)}"
