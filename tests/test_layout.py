"""The package's layout holds: no import cycle runs at import time, the neutral layer
imports no twin, each kind of twin imports only neutral modules and its own kind, the
Cython twins read no other module's private attributes, and nothing cites a file the
repository does not have (see docs/architecture.md, "Twins")."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from tests.conftest import TWINS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "casty"

#: modules both twins may import and that import neither
NEUTRAL = frozenset({
    "casty.address",
    "casty.eager",
    "casty.errors",
    "casty.msgpack_ext",
    "casty.ref",
    "casty.transport.compact_codec",
    "casty.transport.envelope_codec",
    "casty.transport.fragment_rules",
    "casty.transport.frame_codec",
    "casty.transport.handshake",
    "casty.transport.inbound_rules",
    "casty.transport.mailbox_rules",
    "casty.wire",
})
PURE = frozenset(pure for pure, _ in TWINS.values())
FAST = frozenset(fast for _, fast in TWINS.values())
#: Cython twins that still import their pure twin for shared helpers (drop reasons, log
#: helpers): to be moved to the neutral layer
KNOWN_PURE_IMPORTS = {
    "casty._fast.local": {"casty.transport.local"},
}


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_cycles", ROOT / "tools" / "import_cycles.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycle_at_import_time() -> None:
    cycles = _tool().find_cycles(PACKAGE)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom pkg import b\nif TYPE_CHECKING:\n    from pkg import c\n"
    )
    (pkg / "b.py").write_text("import pkg.a\n")
    (pkg / "c.py").write_text("from pkg.a import x\n")  # only under TYPE_CHECKING in a: no cycle
    (pkg / "d.pyx").write_text("from pkg cimport a\nfrom pkg.d2 import y\n")
    (pkg / "d2.py").write_text("def f():\n    import pkg.d\n")  # inside a function: no cycle
    assert _tool().find_cycles(pkg) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_layers_import_only_what_they_may() -> None:
    graph = _tool().import_graph(PACKAGE)
    twins = PURE | FAST
    for module in NEUTRAL:
        reached, todo = set(), [module]
        while todo:
            for dep in graph[todo.pop()]:
                if dep not in reached:
                    reached.add(dep)
                    todo.append(dep)
        assert not reached & twins, f"neutral {module} imports the twins {sorted(reached & twins)}"
    for module in PURE:
        bad = graph[module] - NEUTRAL - PURE - {"casty.transport"}
        assert not bad, f"pure twin {module} imports {sorted(bad)}"
    for module in FAST:
        bad = graph[module] - NEUTRAL - FAST - KNOWN_PURE_IMPORTS.get(module, set())
        assert not bad, f"Cython twin {module} imports {sorted(bad)}"
    for module, deps in graph.items():
        if module != "casty._impl":
            assert not (deps & PURE and deps & FAST), f"{module} imports both kinds of twin"


def _code(text: str) -> str:
    """``text`` of a .pyx/.pxd without its triple-quoted strings and comments (lines kept)."""
    text = re.sub(r'"""[\s\S]*?"""', lambda m: "\n" * m[0].count("\n"), text)
    return re.sub(r"#[^\n]*", "", text)


#: (file, receiver.attribute) pairs allowed: asyncio's own C-speed running-loop lookup
PRIVATE_ALLOWED = {("local.pyx", "events._get_running_loop")}


def test_fast_modules_read_no_private_attributes() -> None:
    found = []
    for path in sorted((PACKAGE / "_fast").glob("*.p[yx][xd]")):
        code = _code(path.read_text())
        own = set(re.findall(r"^(?:cdef )?class (\w+)", code, re.M))
        for lineno, line in enumerate(code.splitlines(), 1):
            imported = re.match(r"\s*from\s+\S+\s+c?import\s+(.*)", line)
            if imported:  # a private name imported from another module
                names = re.findall(r"(?:^|[\s,(])(_\w+)", imported[1].split(" as ")[0])
                found += [f"{path.name}:{lineno}: imports {n}" for n in names]
                continue
            for receiver, attr in re.findall(r"((?<![\w.])[A-Za-z_][\w.]*)\.(_[a-z]\w*)", line):
                if receiver == "self" or receiver in own:
                    continue
                if (path.name, f"{receiver}.{attr}") not in PRIVATE_ALLOWED:
                    found.append(f"{path.name}:{lineno}: {receiver}.{attr}")
    assert found == []


def test_private_scan_sees_what_it_must() -> None:
    code = _code('x = serializer._specs\n"""doc: a._b"""\ny = self._msgpack._depth  # c._d\n')
    hits = re.findall(r"((?<![\w.])[A-Za-z_][\w.]*)\.(_[a-z]\w*)", code)
    assert hits == [("serializer", "_specs"), ("self._msgpack", "_depth")]


_CITED = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w.-]+\.(?:md|rst))\b")


def test_cited_files_exist() -> None:
    """Every ``something.md`` (or .rst) named in casty/, tests/ and bench/ is a
    file of the repository: docs cite docs/architecture.md, not a file outside it."""
    missing = []
    for folder in ("casty", "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in {".py", ".pyx", ".pxd", ".pyi"} or path == Path(__file__):
                continue
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                for cited in _CITED.findall(line):
                    if "/" not in cited and cited != Path(cited).name:
                        continue
                    here = [ROOT / cited, path.parent / cited]
                    by_name = "/" not in cited and any(ROOT.rglob(cited))
                    if not any(p.exists() for p in here) and not by_name:
                        missing.append(f"{path.relative_to(ROOT)}:{lineno}: {cited}")
    assert missing == []
