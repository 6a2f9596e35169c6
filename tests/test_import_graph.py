"""The import graph of the product packages: no cycle, no dev kit in the product.

Read statically with ``ast`` from the source files (nothing is imported):
every ``import``, at module level, inside functions and under
``TYPE_CHECKING`` alike. An edge also runs to each package a target sits in
that the importer is not inside (importing ``a.b.c`` runs ``a/b/__init__.py``).
The only imports left out are the deliberate lazy ones for start-up speed,
listed in ``LAZY_OK``. ``python -m tests.test_import_graph`` prints the summary.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cups_backend", "proxy", "billing")
# Function-level imports kept on purpose: each CLI command loads only what it
# runs, and the PaperCut user source (one process per lookup) starts fast.
LAZY_OK = frozenset(
    {
        "proxy.cli",
        "proxy.cli_admin",
        "proxy.cli_jobs",
        "proxy.cli_officernd",
        "proxy.cli_rights",
        "proxy.usersource",
        "proxy.web.cli",
    }
)
DEVKIT = "proxy.devkit"
# The only product modules that may use the dev kit: the demo runs the simulators.
DEVKIT_USERS = frozenset({"proxy.demo"})
FACTORY = "proxy.app"
# Who may import the app factory: the CLI (``serve``); keys come from proxy.keys.
FACTORY_USERS = frozenset({"proxy.cli"})


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    lazy: bool  # inside a function


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)

    def edges(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for imp in self.imports:
            if imp.lazy and imp.source in LAZY_OK:
                continue
            for target in _with_packages(imp.target, imp.source):
                if target != imp.source and target in self.modules:
                    out[imp.source].add(target)
        return out


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _with_packages(target: str, source: str) -> Iterator[str]:
    """``target`` and the packages above it that ``source`` is not inside."""
    parts = target.split(".")
    for i in range(1, len(parts)):
        package = ".".join(parts[:i])
        if not (source == package or source.startswith(package + ".")):
            yield package
    yield target


def _imports(name: str, path: Path, modules: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text("utf-8"), str(path))
    is_package = path.name == "__init__.py"
    lazy_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            lazy_nodes.update(id(inner) for inner in ast.walk(node) if inner is not node)
    for node in ast.walk(tree):
        lazy = id(node) in lazy_nodes
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, node.lineno, lazy)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                child = f"{module}.{alias.name}"
                # ``from pkg import mod`` imports the module pkg.mod.
                yield Import(name, child if child in modules else module, node.lineno, lazy)


@functools.cache  # one walk for every check
def build() -> Graph:
    graph = Graph()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            graph.modules[_module_name(path)] = path
    for name, path in graph.modules.items():
        graph.imports.extend(
            imp
            for imp in _imports(name, path, graph.modules)
            if imp.target.split(".")[0] in PACKAGES
        )
    return graph


def components(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), each sorted, largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found, key=lambda c: (-len(c), c))


def cycle_in(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One import cycle through the component's first module (shortest, by BFS)."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(edges[node] & members):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    return component


def summary(graph: Graph) -> str:
    edges = graph.edges()
    largest = components(edges)[0]
    return (
        f"import graph of {', '.join(PACKAGES)}: {len(graph.modules)} modules, "
        f"{sum(len(t) for t in edges.values())} edges, largest strongly connected "
        f"component: {len(largest)} module(s)"
    )


def _where(graph: Graph, imp: Import) -> str:
    path = graph.modules[imp.source].relative_to(ROOT)
    return f"{path}:{imp.line} imports {imp.target}"


# --- the checks ---------------------------------------------------------------------


def test_the_walk_sees_every_kind_of_import() -> None:
    graph = build()
    assert len(graph.modules) > 100
    seen = {(i.source, i.target, i.lazy) for i in graph.imports}
    # relative, absolute, ``from pkg import module``, and lazy (the CLI's) imports
    assert ("proxy.app", "proxy.keys", False) in seen
    assert ("proxy.api.jobs", "proxy.keys", False) in seen
    assert ("proxy.devkit.stack", "proxy.nfc_admin", False) in seen
    assert ("proxy.cli", "proxy.app", True) in seen
    # A package on the way to the target is an edge; the importer's own package is not.
    assert "proxy.pipeline" in graph.edges()["proxy.keys"]
    assert "proxy.pipeline" not in graph.edges()["proxy.pipeline.dispatch"]


def test_components_and_cycles_are_found() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert components(edges) == [["a", "b", "c"], ["d"]]
    assert cycle_in(["a", "b", "c"], edges) == ["a", "b", "c", "a"]


def test_no_import_cycle_among_product_modules() -> None:
    graph = build()
    edges = graph.edges()
    print(summary(graph))
    cycles = [c for c in components(edges) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(
        f"  {len(c)} modules: {' -> '.join(cycle_in(c, edges))}" for c in cycles
    )


def test_no_function_level_import_of_our_modules_outside_the_cli() -> None:
    graph = build()
    lazy = sorted({_where(graph, i) for i in graph.imports if i.lazy and i.source not in LAZY_OK})
    assert not lazy, "function-level imports (import at the top instead):\n" + "\n".join(lazy)


def test_product_modules_never_import_the_devkit() -> None:
    graph = build()
    bad = sorted(
        _where(graph, i)
        for i in graph.imports
        if (i.target == DEVKIT or i.target.startswith(DEVKIT + "."))
        and not (i.source == DEVKIT or i.source.startswith(DEVKIT + "."))
        and i.source not in DEVKIT_USERS
    )
    assert not bad, "the dev kit is for tests, benchmarks and the demo:\n" + "\n".join(bad)


def test_only_the_cli_and_devkit_import_the_factory() -> None:
    graph = build()
    bad = [
        _where(graph, i)
        for i in graph.imports
        if i.target == FACTORY
        and i.source not in FACTORY_USERS
        and not i.source.startswith(DEVKIT + ".")
    ]
    assert not bad, "import AppKeys from proxy.keys, not the factory:\n" + "\n".join(bad)


if __name__ == "__main__":
    print(summary(build()))
