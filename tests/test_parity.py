"""The twins have the same interface: for every pair in casty._impl's table (read through
tests/conftest.py), the same ``__all__``, the same public classes with the same public
methods and properties, and a ``.pyi`` for the Cython twin that says the same; and
``casty/_fast/wire.pxd`` holds the values of ``casty.wire``.

Behaviour is compared by the rest of the suite, which runs once per twin.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import TWINS, _fast_importable

ROOT = Path(__file__).resolve().parent.parent
PAIRS = sorted(set(TWINS.values()))

needs_fast = pytest.mark.skipif(not _fast_importable(), reason="the Cython twins are not built")


def _pyi_path(fast: str) -> Path:
    return ROOT.joinpath(*fast.split(".")).with_suffix(".pyi")


def _own_classes(cls: type) -> list[type]:
    """``cls`` and its bases that casty defines (not object, asyncio.Protocol, ...)."""
    return [c for c in cls.__mro__ if c.__module__.startswith("casty.")]


def _methods(cls: type) -> set[str]:
    """Public methods (plain, static, class, async) of ``cls`` and its casty bases."""
    names = set()
    for c in _own_classes(cls):
        for name, value in vars(c).items():
            if name.startswith("_"):
                continue
            if isinstance(value, (staticmethod, classmethod)) or inspect.isroutine(value):
                names.add(name)
    return names


def _properties(cls: type) -> set[str]:
    """Public properties (a dataclass's fields too) of a pure class; a Cython class's
    look like its attributes, so only the pure side is listed."""
    names = {
        name
        for c in _own_classes(cls)
        for name, value in vars(c).items()
        if not name.startswith("_") and isinstance(value, property)
    }
    if dataclasses.is_dataclass(cls):
        names |= {f.name for f in dataclasses.fields(cls)}
    return names


def _public_classes(module: ModuleType) -> dict[str, type]:
    return {name: obj for name in module.__all__ if isinstance(obj := getattr(module, name), type)}


@needs_fast
@pytest.mark.parametrize(("pure", "fast"), PAIRS)
def test_same_all(pure: str, fast: str) -> None:
    p, f = importlib.import_module(pure), importlib.import_module(fast)
    assert sorted(f.__all__) == sorted(p.__all__), f"{fast}.__all__ differs from {pure}.__all__"


@needs_fast
@pytest.mark.parametrize(("pure", "fast"), PAIRS)
def test_same_public_names_and_values(pure: str, fast: str) -> None:
    p, f = importlib.import_module(pure), importlib.import_module(fast)
    for name in p.__all__:
        assert hasattr(f, name), f"{fast} has no {name!r}, which {pure} exports"
        mine, theirs = getattr(p, name), getattr(f, name)
        if isinstance(mine, type) or callable(mine):
            assert type(theirs) is type or callable(theirs), f"{fast}.{name} is not callable"
            continue
        assert theirs == mine, f"{fast}.{name} = {theirs!r}, {pure}.{name} = {mine!r}"


@needs_fast
@pytest.mark.parametrize(("pure", "fast"), PAIRS)
def test_same_public_methods(pure: str, fast: str) -> None:
    p, f = importlib.import_module(pure), importlib.import_module(fast)
    for name, cls in _public_classes(p).items():
        other = getattr(f, name, None)
        if other is None or other is cls:
            continue  # a missing name is test_same_all's; a re-export is the same class
        assert _methods(other) == _methods(cls), f"{name}: methods of {fast} vs {pure}"
        missing = {prop for prop in _properties(cls) if not hasattr(other, prop)}
        assert not missing, f"{fast}.{name} lacks the properties {sorted(missing)}"


def _decorated_property(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)


def _pyi(fast: str) -> tuple[list[str] | None, set[str], dict[str, ast.ClassDef]]:
    """The ``.pyi``'s ``__all__`` (None without one), its public top-level names, its classes."""
    tree = ast.parse(_pyi_path(fast).read_text())
    all_: list[str] | None = None
    names: set[str] = set()
    classes: dict[str, ast.ClassDef] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            all_ = list(ast.literal_eval(node.value))
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = node
            names.add(node.name)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname for a in node.names if a.asname is not None and a.asname == a.name)
    return all_, names, classes


def _pyi_members(classes: dict[str, ast.ClassDef], name: str) -> tuple[set[str], set[str]]:
    """(methods, properties) the ``.pyi`` gives class ``name``, its bases in the file included."""
    methods: set[str] = set()
    properties: set[str] = set()
    node = classes[name]
    for base in node.bases:
        if isinstance(base, ast.Name) and base.id in classes:
            more = _pyi_members(classes, base.id)
            methods |= more[0]
            properties |= more[1]
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_"):
            (properties if _decorated_property(item) else methods).add(item.name)
    return methods, properties


@pytest.mark.parametrize(("pure", "fast"), PAIRS)
def test_pyi_matches_the_pure_twin(pure: str, fast: str) -> None:
    p = importlib.import_module(pure)
    all_, names, classes = _pyi(fast)
    if all_ is not None:
        assert sorted(all_) == sorted(p.__all__), f"{fast}.pyi __all__ differs from {pure}.__all__"
    missing = set(p.__all__) - names
    assert not missing, f"{fast}.pyi does not declare {sorted(missing)}"
    for name, cls in _public_classes(p).items():
        if name not in classes:
            continue  # re-exported from the pure module: the same class
        methods, properties = _pyi_members(classes, name)
        assert methods == _methods(cls), f"{fast}.pyi {name}: methods differ from {pure}"
        assert properties == _properties(cls), f"{fast}.pyi {name}: properties differ from {pure}"


@needs_fast
def test_impl_table_names_each_chosen_twin() -> None:
    impl: Any = importlib.import_module("casty._impl")
    kind = 1 if impl.EXTENSIONS_ACTIVE else 0
    for name, modules in TWINS.items():
        assert getattr(impl, name) is getattr(importlib.import_module(modules[kind]), name), name
    assert set(TWINS) <= set(impl.__all__)


def _pxd_values() -> dict[str, int]:
    text = (ROOT / "casty" / "_fast" / "wire.pxd").read_text()
    values = {m[1]: int(m[2], 0) for m in re.finditer(r"^    (\w+) = (0x[0-9A-Fa-f]+|\d+)$", text, re.M)}
    for m in re.finditer(r'^    unsigned long long (\w+) "(0x[0-9A-Fa-f]+)ULL"$', text, re.M):
        values[m[1]] = int(m[2], 0)
    return values


def test_wire_pxd_mirrors_casty_wire() -> None:
    import casty.wire as wire

    values = _pxd_values()
    assert len(values) >= 12  # the parse found the enum and the extern constant
    for name, value in values.items():
        assert getattr(wire, name) == value, f"wire.pxd {name} = {value}, casty.wire says {getattr(wire, name)}"
