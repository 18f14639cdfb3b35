"""The import graph of the package keeps the shape README "Architecture" describes: no cycles (function-level
imports included: a lazy import must not hide a cycle), ``data/`` depends on nothing above it, ``methods/``
only on the method contract and the shared pieces, and nothing imports the command line.

The graph is read from the source with ``ast`` (nothing is imported); ``if TYPE_CHECKING:`` blocks are skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"hashkit": "hashkit", "methods": "hashkit.methods", "data": "hashkit.data"}

# What data/ may use: the leaf modules below everything else.
LEAF_MODULES = {"hashkit.errors", "hashkit.flags", "hashkit.paths", "hashkit.atomic", "hashkit.registry"}
# What methods/ must never use: the layers above the method contract (it is driven by them, not the reverse).
ABOVE_METHODS = (
    "hashkit.cli", "hashkit.commands", "hashkit.run", "hashkit.trainer", "hashkit.config", "hashkit.report",
    "hashkit.plotting", "hashkit.index", "hashkit.serve", "hashkit.api", "hashkit.pipeline",
    "hashkit.cached_pipeline", "hashkit.distributed", "hashkit.feature_cache",
)  # fmt: skip


def module_name(path: Path, repo: Path = REPO) -> str:
    rel = path.relative_to(repo)
    parts = list(rel.with_suffix("").parts[1:])
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([ROOTS[rel.parts[0]], *parts])


def package_modules(repo: Path = REPO) -> dict[str, Path]:
    return {module_name(p, repo): p for top in ROOTS for p in (repo / top).rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [f"{module}.{alias.name}" for alias in node.names]
            found.update(names)
            if not all(name in known for name in names):  # `from pkg import submodule` needs pkg loaded anyway
                found.add(module)

    Visitor().visit(tree)
    resolved = set()
    for module in found:
        while module and module not in known:
            module = module.rpartition(".")[0]
        if module and module != name:
            resolved.add(module)
    return resolved


def import_graph(repo: Path = REPO) -> dict[str, set[str]]:
    modules = package_modules(repo)
    return {name: imports_of(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), plus self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_checker_sees_cycles_and_imports(tmp_path: Path) -> None:
    """The checker itself: a planted function-level cycle and a relative import are found."""
    for top in ROOTS:
        (tmp_path / top).mkdir()
        (tmp_path / top / "__init__.py").write_text("")
    (tmp_path / "hashkit" / "a.py").write_text("from hashkit import b\n")
    (tmp_path / "hashkit" / "b.py").write_text("def f():\n    from .a import thing\n")
    (tmp_path / "data" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hashkit import a\n")
    planted = import_graph(tmp_path)
    assert planted["hashkit.b"] == {"hashkit.a"} and planted["hashkit.data.c"] == set()
    assert cycles(planted) == [["hashkit.a", "hashkit.b"]]


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


def test_data_depends_on_nothing_above_it(graph: dict[str, set[str]]) -> None:
    for name, targets in graph.items():
        if name.startswith("hashkit.data"):
            above = {t for t in targets if not t.startswith("hashkit.data") and t not in LEAF_MODULES}
            assert not above, f"{name} imports {sorted(above)}; data/ may import only {sorted(LEAF_MODULES)}"


def test_methods_use_only_the_contract_and_shared_pieces(graph: dict[str, set[str]]) -> None:
    for name, targets in graph.items():
        if name.startswith("hashkit.methods"):
            bad = {t for t in targets if t.startswith(ABOVE_METHODS)}
            assert not bad, f"{name} imports {sorted(bad)}: a method holds its loss and scheme only"


def test_nothing_imports_the_command_line(graph: dict[str, set[str]]) -> None:
    for name, targets in graph.items():
        if not name.startswith(("hashkit.cli", "hashkit.commands", "hashkit.__main__")):
            bad = {t for t in targets if t.startswith(("hashkit.cli", "hashkit.commands"))}
            assert not bad, f"{name} imports {sorted(bad)}: the CLI sits on top, nothing imports it"
