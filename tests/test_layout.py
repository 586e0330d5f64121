"""The dependency rules of DESIGN.md that import-linter cannot express on its own."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "src" / "maxage" / "core"


def absolute_imports(package: Path) -> Iterator[tuple[Path, str]]:
    """(file, imported module) for every absolute import below ``package``."""
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                yield from ((path, a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.module


def test_core_imports_only_the_standard_library_and_itself() -> None:
    offenders = []
    for path, name in absolute_imports(CORE):
        top = name.split(".")[0]
        if name.startswith("maxage.core") or top == "__future__":
            continue
        if top not in sys.stdlib_module_names:
            offenders.append(f"{path.name}: {name}")
    assert offenders == []


CLIENT = Path(__file__).resolve().parents[1] / "client" / "src" / "maxage_client"


def test_the_client_imports_only_the_standard_library_httpx_and_itself() -> None:
    """maxage-client installs without the server (docs/adr/0008-client-distribution.md)."""
    offenders = [
        f"{path.name}: {name}"
        for path, name in absolute_imports(CLIENT)
        if name.split(".")[0] not in ("maxage_client", "httpx", "__future__")
        and name.split(".")[0] not in sys.stdlib_module_names
    ]
    assert offenders == []
