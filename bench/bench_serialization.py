"""MsgpackSerializer against JsonSerializer on the same messages.

This module compares two serializers, not a Cython/pure twin pair: its table puts
msgpack in the first figure column and JSON in the second, and says so in its header.
Messages: ``Ping(seq, text)``, a small frozen dataclass, and a ~1 KiB nested batch of
dataclasses with tuples, lists, dicts, floats, bytes and an enum.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from itertools import repeat
from typing import Any

from bench._harness import Table, rate
from casty.serialization import JsonSerializer, MsgpackSerializer, Serializer, TypeRegistry


@dataclass(frozen=True)
class Ping:
    seq: int
    text: str


class Kind(Enum):
    METRIC = "metric"
    EVENT = "event"


@dataclass(frozen=True)
class Item:
    id: int
    name: str
    kind: Kind
    tags: tuple[str, ...]
    scores: list[float]
    meta: dict[str, Any]


@dataclass(frozen=True)
class Batch:
    source: str
    seq: int
    items: tuple[Item, ...]
    blob: bytes


def _batch() -> Batch:
    items = tuple(
        Item(
            id=1000 + i,
            name=f"sensor-{i:03d}",
            kind=Kind.METRIC if i % 3 else Kind.EVENT,
            tags=("eu-west", f"rack-{i % 4}"),
            scores=[i * 0.5, i * 1.25, -i / 3],
            meta={"unit": "ms", "ok": i % 2 == 0, "n": i},
        )
        for i in range(9)
    )
    return Batch(source="casty://bench@10.0.0.1:25520/user/collector", seq=42, items=items,
                 blob=bytes(range(64)))


def _ops(s: Serializer, msg: Any) -> dict[str, Callable[[int], None]]:
    data = s.serialize(msg)
    assert s.deserialize(data) == msg
    serialize, deserialize = s.serialize, s.deserialize

    def encode(n: int) -> None:
        for _ in repeat(None, n):
            serialize(msg)

    def decode(n: int) -> None:
        for _ in repeat(None, n):
            deserialize(data)

    def round_trip(n: int) -> None:
        for _ in repeat(None, n):
            deserialize(serialize(msg))

    return {"serialize": encode, "deserialize": decode, "round trip": round_trip}


def _measure(fn: Callable[[int], None], budget: float) -> float:
    """ops/s of ``fn``, with n chosen so one repeat takes about ``budget`` seconds."""
    n = 200
    while True:
        t0 = time.perf_counter()
        fn(n)
        took = time.perf_counter() - t0
        if took >= budget / 4 or n >= 10_000_000:
            break
        n *= 4
    return rate(fn, max(1, int(n * budget / took)), repeat=5)


def collect(quick: bool) -> list[Table]:
    budget = 0.02 if quick else 0.12
    registry = TypeRegistry()
    for cls in (Ping, Kind, Item, Batch):
        registry.register(cls, f"bench.{cls.__qualname__}")
    mp, js = MsgpackSerializer(registry), JsonSerializer(registry)
    table = Table("serializers (msgpack | json)", columns=("msgpack", "json"))
    sizes = {}
    for label, msg in (("Ping", Ping(7, "hello")), ("1 KiB batch", _batch())):
        sizes[label] = (len(mp.serialize(msg)), len(js.serialize(msg)))
        mp_ops, js_ops = _ops(mp, msg), _ops(js, msg)
        for op, fn in mp_ops.items():
            table.add(f"{op} {label}", _measure(fn, budget), _measure(js_ops[op], budget))
    for case, mp_rate, _ in table.rows:
        if case.startswith("round trip"):
            table.notes.append(f"msgpack {case}: {1e6 / mp_rate:.2f} us")
    for label, (mp_len, js_len) in sizes.items():
        table.notes.append(f"{label}: {mp_len} bytes as msgpack, {js_len} bytes as JSON")
    table.notes.append("columns: msgpack | json (not Cython | pure); ratio = msgpack/json")
    return [table]


if __name__ == "__main__":
    for t in collect(quick=False):
        print(t.render())
