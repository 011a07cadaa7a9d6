"""Import cycles between modelfusion's modules, counting the imports inside functions too.

An import inside a function still ties two modules together; hiding a cycle there is how
they grow. Importing ``a.b.c`` runs the ``__init__`` of ``a`` and ``a.b`` first, so each
import also counts as importing those packages. This reads every module's imports (module level and in functions; not those under
``if TYPE_CHECKING:``), builds the graph and prints each cycle (a strongly connected
component of more than one module). Exit code 1 when there is one.

``python scripts/import_cycles.py [--list-local]``; ``--list-local`` also lists the
imports that sit inside functions (optional dependencies, and the CLI's lazy commands).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "modelfusion"


def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of the package."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports(path: Path, modules: dict[str, Path], importer: str) -> list[tuple[str, bool, int]]:
    """``(imported module, at module level, line)`` for each import of another modelfusion module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(n)
        for b in tree.body
        if isinstance(b, ast.If) and "TYPE_CHECKING" in ast.unparse(b.test)
        for n in ast.walk(b)
    }
    top = {
        id(n)
        for b in tree.body
        for n in ast.walk(b)
        if not isinstance(b, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.ImportFrom):
            if node.module is None or node.level:
                continue
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            names = subs if len(subs) == len(node.names) else [node.module, *subs]
        else:
            names = [a.name for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("modelfusion"):
                found.append((name, id(node) in top, node.lineno))
            # importing a.b.c runs the __init__ of a.b first, unless the importer is inside a.b
            # (then a.b is already being initialised: the usual package layout, not a cycle)
            parent = name.rpartition(".")[0]
            while parent.startswith("modelfusion") and not importer.startswith(parent + "."):
                found.append((parent, id(node) in top, node.lineno))
                parent = parent.rpartition(".")[0]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    modules = module_files()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    local = []
    for name, path in sorted(modules.items()):
        for target, at_top, line in imports(path, modules, name):
            if target != name:
                graph[name].add(target)
                if not at_top:
                    local.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {target}")
    found = cycles(graph)
    print(
        f"{len(modules)} modules, {sum(map(len, graph.values()))} import edges, {len(local)} imports inside functions"
    )
    if "--list-local" in sys.argv:
        print("\n".join(local))
    for component in found:
        print("cycle:", " <-> ".join(component))
    if not found:
        print("no import cycle")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
