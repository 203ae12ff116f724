"""A :class:`casty.serialization.Serializer` that speaks casty 0.21's ``JsonSerializer`` format.

0.21 writes ``json.dumps`` of a tagged tree: a dataclass is ``{"_type": name, <field>:
<value>, ...}``, an actor ref ``{"__ref__": uri}``, a tuple ``{"__tuple__": [...]}``, a
dict ``{"__dict__": [[k, v], ...]}``, a frozenset ``{"__frozenset__": [...]}``; str, int,
float, bool, None and lists are themselves.  This covers those, for the classes it is
given by name (0.21 would import any class a peer names; this builds only those), and
nothing else (no Enum, no bytes, which 0.21's JSON cannot carry either).  Every failure is
a :class:`SerializationError`, so the inbound handler drops the frame and counts it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from casty.address import ActorAddress
from casty.ref import ActorRef
from casty.serialization import Payload, RefFactory, SerializationError

__all__ = ["Json021Serializer"]

#: nesting refused past this depth, both ways (a peer's payload must not exhaust the stack)
MAX_DEPTH = 64


class Json021Serializer:
    """Encode and decode the casty 0.21 JSON wire format for the classes in ``names``.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Greet:
    ...     who: str
    >>> s = Json021Serializer({Greet: "demo.Greet"})
    >>> s.serialize((Greet("ann"), 1))
    b'{"__tuple__": [{"_type": "demo.Greet", "who": "ann"}, 1]}'
    >>> s.deserialize(b'{"_type": "demo.Greet", "who": "bob"}')
    Greet(who='bob')
    """

    def __init__(self, names: Mapping[type, str]) -> None:
        for cls in names:
            if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
                raise TypeError(f"Json021Serializer: {cls!r} is not a dataclass class")
        self._names = dict(names)
        self._classes = {name: cls for cls, name in names.items()}
        if len(self._classes) != len(self._names):
            raise ValueError(f"Json021Serializer: two classes share a name in {sorted(names.values())}")

    def serialize(self, obj: Any) -> bytes:
        """``obj`` as 0.21 writes it: ``json.dumps`` (default separators) of the tagged tree."""
        return json.dumps(self._to(obj, 0)).encode("utf-8")

    def _to(self, value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise SerializationError(f"value nested deeper than {MAX_DEPTH}")
        cls = type(value)
        if value is None or cls in (str, int, float, bool):
            return value
        if isinstance(value, ActorRef):
            return {"__ref__": value.address.to_uri()}
        depth += 1
        if cls is list:
            return [self._to(v, depth) for v in value]
        if cls is tuple:
            return {"__tuple__": [self._to(v, depth) for v in value]}
        if cls is frozenset:
            return {"__frozenset__": [self._to(v, depth) for v in value]}
        if cls is dict:
            return {"__dict__": [[self._to(k, depth), self._to(v, depth)] for k, v in value.items()]}
        name = self._names.get(cls)
        if name is None:
            raise SerializationError(f"cannot serialize object of type {cls.__qualname__!r} for casty 0.21")
        out: dict[str, Any] = {"_type": name}
        for f in dataclasses.fields(value):
            out[f.name] = self._to(getattr(value, f.name), depth)
        return out

    def deserialize(self, data: Payload, *, ref_factory: RefFactory | None = None) -> Any:
        """Decode a 0.21 JSON payload; refs are rebuilt through ``ref_factory``."""
        try:
            tree = json.loads(bytes(data).decode("utf-8"))
        except (ValueError, RecursionError) as exc:
            raise SerializationError(f"not a casty 0.21 JSON payload: {exc}") from None
        return self._from(tree, ref_factory, 0)

    def _from(self, value: Any, ref_factory: RefFactory | None, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise SerializationError(f"payload nested deeper than {MAX_DEPTH}")
        depth += 1
        if isinstance(value, list):
            return [self._from(v, ref_factory, depth) for v in value]
        if not isinstance(value, dict):
            return value
        if "__ref__" in value:
            uri = value["__ref__"]
            if not isinstance(uri, str) or ref_factory is None:
                raise SerializationError("an actor ref needs a str URI and a ref_factory")
            return ref_factory(ActorAddress.from_uri(uri))  # ValueError names a bad URI
        items = self._items(value, ref_factory, depth)
        if items is not None:
            return items
        if "_type" in value:
            return self._build(value, ref_factory, depth)
        return value  # 0.21 passes a plain dict through as it is

    def _items(self, value: dict[str, Any], ref_factory: RefFactory | None, depth: int) -> Any:
        for tag in ("__tuple__", "__frozenset__", "__dict__"):
            seq = value.get(tag)
            if seq is None:
                continue
            if not isinstance(seq, list):
                raise SerializationError(f"{tag} must hold a list")
            items = [self._from(v, ref_factory, depth) for v in seq]
            try:
                if tag == "__tuple__":
                    return tuple(items)
                if tag == "__frozenset__":
                    return frozenset(items)
                return {k: v for k, v in items}
            except (TypeError, ValueError) as exc:  # unhashable member, a pair that is not two
                raise SerializationError(f"bad {tag}: {exc}") from None
        return None

    def _build(self, value: dict[str, Any], ref_factory: RefFactory | None, depth: int) -> Any:
        name = value["_type"]
        cls = self._classes.get(name) if isinstance(name, str) else None
        if cls is None:
            raise SerializationError(f"unknown type {str(name)[:100]!r} in a casty 0.21 payload")
        kwargs = {
            f.name: self._from(value[f.name], ref_factory, depth)
            for f in dataclasses.fields(cls)
            if f.name in value
        }
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a field missing
            raise SerializationError(f"cannot build {name}: {exc}") from None
