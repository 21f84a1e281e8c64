"""DESIGN.md's arrows: the core reaches plug-ins only through their registries, in one place."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "monitord"
PLUGINS = ("probes", "rules", "alerts", "reports")
# probes/ is itself a registry (probes.PROBES); the other plug-ins are reached through
# monitord/plugins.py.
ALLOWED = {"probes"}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_the_core_imports_plug_ins_only_through_registries() -> None:
    wrong = [
        f"{path.relative_to(CORE.parent)}:{line}: {name}"
        for path in sorted(CORE.rglob("*.py"))
        if path.name != "plugins.py" and "migrations" not in path.parts
        for line, name in _imports(path)
        if name.split(".")[0] in PLUGINS and name not in ALLOWED
    ]
    assert wrong == []
