"""Import cycles that run at import time inside a package: ``python tools/import_cycles.py casty``.

Only module-level imports count (not those under ``if TYPE_CHECKING:`` nor inside
functions, which do not run at import time); a ``.pyx`` module's Python-level imports
are read with a regular expression (its ``cimport`` lines are compile-time only).
Prints each cycle as ``a -> b -> a`` and the count; exits 1 when there is one.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

_PYX_IMPORT = re.compile(r"^(?:from\s+([\w.]+)\s+import(?!\s*\*)\s|import\s+([\w.]+))", re.M)


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` and ``.pyx`` under ``root``."""
    mods: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")) + sorted(root.rglob("*.pyx")):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _pyx_imports(source: str) -> set[str]:
    return {m[1] or m[2] for m in _PYX_IMPORT.finditer(source)}


def _py_imports(source: str) -> set[str]:
    out: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        # Imports in try/if blocks at module level run at import time too.
        nodes = list(ast.walk(node)) if isinstance(node, (ast.Try, ast.If)) else [node]
        for n in nodes:
            if isinstance(n, ast.Import):
                out.update(a.name for a in n.names)
            elif isinstance(n, ast.ImportFrom) and n.module:
                out.add(n.module)
                out.update(f"{n.module}.{a.name}" for a in n.names)  # a submodule, maybe
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports at import time."""
    mods = module_files(root)
    graph = {}
    for name, path in mods.items():
        source = path.read_text()
        found = _pyx_imports(source) if path.suffix == ".pyx" else _py_imports(source)
        graph[name] = {m for m in found if m in mods and m != name}
    return graph


def find_cycles(root: Path) -> list[list[str]]:
    """Every elementary cycle, each listed once, from its smallest module name."""
    graph = import_graph(root)
    cycles: list[list[str]] = []

    def walk(start: str, node: str, path: list[str], seen: set[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                cycles.append([*path, nxt])
            elif nxt not in seen and nxt > start:
                seen.add(nxt)
                walk(start, nxt, [*path, nxt], seen)

    for module in sorted(graph):
        walk(module, module, [module], {module})
    return cycles


def main(argv: list[str]) -> int:
    cycles = find_cycles(Path(argv[1] if len(argv) > 1 else "casty").resolve())
    for cycle in cycles:
        print(" -> ".join(cycle))
    print(len(cycles), "cycles")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
