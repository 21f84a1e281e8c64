"""DESIGN.md's arrows: one-way layers inside monitord, plug-ins reached through registries, and
an import graph without a circle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ("probes", "rules", "alerts", "reports")
HELPERS = {
    "monitord",
    *(
        f"monitord.{name}"
        for name in ("types", "errors", "aio", "files", "redact", "regex", "textable")
    ),
    "monitord.names",
    *(f"monitord.{name}" for name in ("timeutil", "workcalendar", "netguard")),
}
STAGES = (
    "catalogue",
    "probing",
    "accesslog",
    "scans",
    "incidents",
    "evidence",
    "compliance",
    "cluster",
)
# What each layer may import of monitord (its own package always).
MAY_IMPORT = {
    "helpers": {"helpers"},
    "config": {"helpers"},
    "store": {"helpers", "config"},
    **{f"stage:{stage}": {"helpers", "config", "store"} for stage in STAGES},
    "runtime": {"helpers", "config", "store", *(f"stage:{s}" for s in STAGES)},
    "cli": {"helpers", "config", "store", "runtime", "demo", *(f"stage:{s}" for s in STAGES)},
    "demo": {"helpers", "config", "store", "runtime", *(f"stage:{s}" for s in STAGES)},
}
REGISTRIES = {"probes", "rules"}
"""The plug-ins' registries (probes.PROBES, the rules' functions): what a stage may import."""


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def layer(module: str) -> str:
    if module in HELPERS or not module.startswith("monitord."):
        return "helpers" if module in HELPERS else module.split(".")[0]
    part = module.split(".")[1]
    return f"stage:{part}" if part in STAGES else part


def sources() -> Iterator[Path]:
    for top in ("monitord", *PLUGINS):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of each absolute import, those inside functions included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            package = ROOT / Path(*node.module.split("."))
            for alias in node.names:
                if (package / f"{alias.name}.py").exists() or (package / alias.name).is_dir():
                    yield node.lineno, f"{node.module}.{alias.name}"  # a module of a package
                else:
                    yield node.lineno, node.module


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for path in sources():
        name = module_name(path)
        if not name.startswith("monitord"):
            continue
        mine = layer(name)
        for line, imported in imports(path):
            top = imported.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line}: {mine} imports {imported}"
            if top in PLUGINS:
                if imported not in REGISTRIES and mine not in ("runtime", "cli", "demo"):
                    wrong.append(where)
                continue
            if top != "monitord" or imported.split(".")[:2] == name.split(".")[:2]:
                continue
            theirs = layer(imported)
            if theirs != mine and theirs not in MAY_IMPORT[mine]:
                wrong.append(where)
    assert wrong == []


@pytest.mark.parametrize(
    ("plugin", "may_import"),
    [
        ("probes", {"helpers"}),
        ("alerts", {"helpers", "config", "store"}),
        ("rules", {"helpers", "config", "stage:accesslog"}),
        ("reports", {"helpers", "config", "store"}),  # the runtime hands it the stages' results
    ],
)
def test_plug_ins_import_only_what_they_are_handed(plugin: str, may_import: set[str]) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {imported}"
        for path in sources()
        if module_name(path).split(".")[0] == plugin
        for line, imported in imports(path)
        if imported.split(".")[0] == "monitord" and layer(imported) not in may_import
    ]
    assert wrong == []


def test_nothing_imports_the_cli_or_the_demo_but_the_cli() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {imported}"
        for path in sources()
        if layer(module_name(path)) not in ("cli", "demo")
        or not module_name(path).startswith("monitord")
        for line, imported in imports(path)
        if imported.startswith(("monitord.cli", "monitord.demo"))
    ]
    assert wrong == []


def test_the_import_graph_has_no_circle() -> None:
    graph: dict[str, set[str]] = {}
    for path in sources():
        name = module_name(path)
        graph[name] = {
            imported
            for _line, imported in imports(path)
            if imported.split(".")[0] in ("monitord", *PLUGINS) and imported != name
        }
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if node in trail:
            return [*trail[trail.index(node) :], node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            circle = visit(nxt, [*trail, node])
            if circle:
                return circle
        done.add(node)
        return None

    circles = [" -> ".join(c) for c in (visit(n, []) for n in sorted(graph)) if c]
    assert circles == []
