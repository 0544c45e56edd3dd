"""Imports point one way, and no module of ours imports itself through others.

The layers, bottom up: `base` (errors, keys, sources, files, settings: what every layer needs)
imports only `base`; `stages` imports `stages` and `base`, never the compiler; `compiler`
imports all three. Every import statement counts, at module level or inside a function
(the lazy ones run too), relative ones resolved; `from pkg import name` is an edge to the
module `pkg.name` when there is one, else to `pkg`. A failure names file:line and the edge.
"""

from __future__ import annotations

import ast
from itertools import pairwise
from pathlib import Path

from tests.conftest import REPO

ALLOWED = {"base": {"base"}, "stages": {"base", "stages"}, "compiler": {"base", "stages", "compiler"}}
OURS = {p.name for p in REPO.iterdir() if p.is_dir() and any(p.glob("*.py"))}  # tests, bench: nobody's import


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def read_sources(root: Path, packages) -> dict[str, tuple[Path, str]]:
    """Module name -> (file, source) for every .py under `packages`."""
    return {module_name(path, root): (path, path.read_text(encoding="utf-8"))
            for package in packages for path in sorted((root / package).rglob("*.py"))}


def imports(sources: dict[str, tuple[Path, str]], ours: set[str]) -> list[tuple[str, str, Path, int]]:
    """(importer, imported module, file, line) for every import of ours in `sources`."""
    edges = []
    for name, (path, source) in sources.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in sources else base
                           for alias in node.names]
            else:
                continue
            edges += [(name, target, path, node.lineno) for target in dict.fromkeys(targets)
                      if target.split(".")[0] in ours]
    return edges


def resolved(target: str, sources) -> str | None:
    """The module `target` runs: itself, or the longest prefix that is a module (`import a.b.c`
    where c is a name); None when none of it exists."""
    parts = target.split(".")
    return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in sources), None)


def direction_problems(sources, ours: set[str], root: Path) -> list[str]:
    problems = []
    for importer, target, path, line in imports(sources, ours):
        layer, wanted = importer.split(".")[0], target.split(".")[0]
        where = f"{path.relative_to(root)}:{line}"
        if wanted not in ALLOWED.get(layer, set()):
            problems.append(f"{where}: {importer} imports {target}; {layer} may import only "
                            f"{', '.join(sorted(ALLOWED.get(layer, ())))}")
        elif resolved(target, sources) is None:
            problems.append(f"{where}: {importer} imports {target}, which does not exist")
    return problems


def cycles(sources, ours: set[str], root: Path) -> list[str]:
    """One cycle per strongly connected component of the module graph, each edge with its file:line."""
    graph: dict[str, dict[str, str]] = {name: {} for name in sources}
    for importer, target, path, line in imports(sources, ours):
        module = resolved(target, sources)
        if module is not None and module != importer:
            graph[importer].setdefault(module, f"{path.relative_to(root)}:{line}")
    found = []
    for component in components(graph):
        start = min(component)
        cycle = shortest_cycle(graph, start, component) + [start]
        found.append("import cycle: " + " -> ".join(
            f"{a} ({graph[a][b]})" for a, b in pairwise(cycle)) + f" -> {start}")
    return found


def components(graph: dict[str, dict[str, str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def shortest_cycle(graph, start: str, component: set[str]) -> list[str]:
    """start, ..., the module that imports start again: breadth first inside `component`."""
    previous = {start: None}
    queue = [start]
    for node in queue:
        for child in sorted(graph[node]):
            if child == start:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return path[::-1]
            if child in component and child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in no cycle")


def test_imports_point_one_way():
    problems = direction_problems(read_sources(REPO, ALLOWED), OURS, REPO)
    assert not problems, "imports against the direction base <- stages <- compiler:\n" + "\n".join(problems)


def test_no_import_cycles():
    found = cycles(read_sources(REPO, ALLOWED), OURS, REPO)
    assert not found, "\n".join(found)


def test_the_checks_see_lazy_relative_and_from_imports(tmp_path):
    """The checks on a planted project: an upward import inside a function, a relative import
    that closes a cycle, and `from pkg import module` as an edge to the module."""
    files = {
        "base/__init__.py": "",
        "base/keys.py": "def key():\n    from stages import run\n",
        "stages/__init__.py": "",
        "stages/run.py": "from stages import pool\n",
        "stages/pool.py": "def start():\n    from .run import main\n",
        "stages/fine.py": "from base import keys\nfrom stages import missing_name\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    sources = read_sources(tmp_path, ALLOWED)
    assert direction_problems(sources, {"base", "stages"}, tmp_path) == [
        "base/keys.py:2: base.keys imports stages.run; base may import only base"]
    assert cycles(sources, {"base", "stages"}, tmp_path) == [
        "import cycle: stages.pool (stages/pool.py:2) -> stages.run (stages/run.py:1) -> stages.pool"]
