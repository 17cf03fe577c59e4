"""Every tfos module imports on its own, first, in a fresh interpreter; and no two modules import each other.

An import cycle between two modules often works by luck of order: it breaks only when the "wrong" one of the two
is the first tfos module a process imports (a TF process imports ``tfos._node.child`` first, an executor a
pickled function's module). Each module here is the first import of its own process, which must not import
TensorFlow either (only main_fun does). The module graph, counting imports inside functions too, has no cycle:
a lazy import that closes a cycle hides it from the first test, not from a reader.
"""

from __future__ import annotations

import ast
import concurrent.futures
import pathlib
import pkgutil
import subprocess
import sys

import pytest

import tfos

# Importing it runs the command line (``python -m tfos``) and exits.
_NOT_IMPORTABLE = {"tfos.__main__"}
_PACKAGE = pathlib.Path(tfos.__file__).parent
_IMPORT_AND_REPORT = "import sys, {0}; print('tensorflow' in sys.modules)"


def _all_modules() -> list[str]:
    found = pkgutil.walk_packages(tfos.__path__, prefix="tfos.")
    return ["tfos", *sorted(info.name for info in found if info.name not in _NOT_IMPORTABLE)]


def _import_alone(module: str) -> tuple[str, int, str, str]:
    proc = subprocess.run([sys.executable, "-c", _IMPORT_AND_REPORT.format(module)], capture_output=True,
                          text=True, timeout=120)
    return module, proc.returncode, proc.stdout.strip(), proc.stderr[-2000:]


def test_module_list_is_complete():
    modules = _all_modules()
    assert {"tfos._node.child", "tfos._connect.parallel", "tfos.TFParallel", "tfos.cluster"} <= set(modules)
    assert len(modules) == len(set(modules)) == len(list(_PACKAGE.rglob("*.py"))) - len(_NOT_IMPORTABLE)


@pytest.mark.timeout(300)
def test_every_module_imports_first_in_a_fresh_process_without_tensorflow():
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_import_alone, _all_modules()))
    assert {module: stderr for module, code, _, stderr in results if code != 0} == {}
    assert [module for module, _, tensorflow, _ in results if tensorflow != "False"] == []


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(_PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The tfos modules one import statement names (``from . import x`` names module ``x`` when it is one)."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names} & known
    if node.level:
        package = module.split(".")[: len(module.split(".")) - (node.level - 1 if is_package else node.level)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    return {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names} & known


def _import_graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in _PACKAGE.rglob("*.py")}
    graph = {}
    for module, path in paths.items():
        nodes = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))]
        is_package = path.name == "__init__.py"
        graph[module] = set().union(*(_imported(module, is_package, n, set(paths)) for n in nodes)) - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, edges = work[-1]
            child = next((c for c in edges if c not in index or c in stack), None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = stack[stack.index(node):]
                    del stack[stack.index(node):]
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child in index:
                low[node] = min(low[node], index[child])
            else:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(sorted(graph[child]))))
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_even_through_imports_inside_functions():
    graph = _import_graph()
    assert "tfos._connect.parallel" in graph["tfos.TFParallel"]  # the graph sees imports inside functions
    assert _cycles(graph) == []
