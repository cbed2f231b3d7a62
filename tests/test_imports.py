"""The import graph of the package, read from its source with ``ast`` (no import is run): no circle anywhere, and no
import upward across the layers of CONTRIBUTING.md. Module-level and function-level imports count alike (a function
that imports its caller's module is a circle deferred, not removed); ``if TYPE_CHECKING:`` imports do not (they
never run)."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import whisperopt

ROOT = Path(whisperopt.__file__).parent
PACKAGE = "whisperopt"

# CONTRIBUTING.md's layers, top to bottom, by top-level folder or module: a module may import its own layer and the
# ones below it, never one above
LAYERS = {
    "cli": 0, "__main__": 0,
    "export": 1, "serve": 1, "report": 1,
    "bench": 2, "transcribe": 2,
    "recipes": 3,
    "data": 4, "models": 4,
    "metrics": 5,
    "constants": 6, "errors": 6, "files": 6, "cache": 6, "cluster": 6, "": 6,  # "": the package's __init__
}


def _modules() -> dict[str, Path]:
    """{dotted module name: file} of every module of the package (a package is its ``__init__``)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST):
    """Every Import / ImportFrom in ``node``, at any depth, except in the body of ``if TYPE_CHECKING:``."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    elif isinstance(node, ast.If) and _type_checking(node):
        for stmt in node.orelse:
            yield from _import_nodes(stmt)
    else:
        for child in ast.iter_child_nodes(node):
            yield from _import_nodes(child)


def _own(name: str, modules: dict) -> str | None:
    """The package's module ``name`` is, or lies in (``a.b.func`` -> ``a.b``); None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name if name.split(".")[0] == PACKAGE else None


def _targets(module: str, node: ast.AST, modules: dict) -> list[str]:
    """The package's modules one import statement of ``module`` imports (relative ones resolved; ``from p import m``
    names module p.m when m is one, else p itself)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if modules[module].name == "__init__.py" else module.rpartition(".")[0]
            parts = package.split(".")
            parts = parts[:len(parts) - (node.level - 1)]
            base = ".".join(parts + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    return sorted({t for t in (_own(n, modules) for n in names) if t and t != module})


@functools.cache
def import_graph() -> dict[str, dict[str, int]]:
    """{module: {imported module: line of its first import}} over the whole package."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            for target in _targets(module, node, modules):
                edges.setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan), as a path a -> b -> ... -> a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the package's module count
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle(graph, set(c)) for c in components]


def _circle(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                return paths[v] + [start]
            if w in component and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no circle through {start}")  # unreachable for a strongly connected component


def _layer(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else ""
    return LAYERS.get(top)


def _describe(graph, circle: list[str]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(circle, circle[1:])) + f" -> {circle[-1]}"


def test_no_import_circle():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import circle(s):\n" + "\n".join(_describe(graph, c) for c in found)


def test_every_module_has_a_layer():
    unplaced = sorted({m for m in import_graph() if _layer(m) is None})
    assert not unplaced, f"modules outside CONTRIBUTING.md's layers (add them to LAYERS and to the picture): {unplaced}"


def test_layers_import_only_downward():
    graph = import_graph()
    upward = [f"{m} (line {line}) imports {t}"
              for m, edges in sorted(graph.items()) for t, line in sorted(edges.items())
              if _layer(m) is not None and _layer(t) is not None and _layer(t) < _layer(m)]
    assert not upward, "imports upward across the layers:\n" + "\n".join(upward)


def test_the_checks_see_what_they_must():
    """The reader itself: function-level and relative imports count, TYPE_CHECKING ones do not, a circle is named."""
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import X\nelse:\n    pass\n"
                     "def f():\n    from ..c import d\n    import whisperopt.e\n")
    modules = {"whisperopt": ROOT, "whisperopt.p.a": ROOT, "whisperopt.p.b": ROOT, "whisperopt.c": ROOT,
               "whisperopt.c.d": ROOT, "whisperopt.e": ROOT}
    found = sorted({t for n in _import_nodes(tree) for t in _targets("whisperopt.p.a", n, modules)})
    assert found == ["whisperopt.c.d", "whisperopt.e"]
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert _describe(graph, ["a", "b", "c", "a"]) == "a (line 1) -> b (line 2) -> c (line 3) -> a"
    assert cycles({"a": {"b": 1}, "b": {}}) == []
