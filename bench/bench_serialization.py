"""MsgpackSerializer against JsonSerializer on the same messages, and hostile payloads.

The first table compares two serializers, not a Cython/pure twin pair: it puts msgpack
in the first figure column and JSON in the second, and says so in its header.
Messages: ``Ping(seq, text)``, a small frozen dataclass, and a ~1 KiB nested batch of
dataclasses with tuples, lists, dicts, floats, bytes and an enum.

The second table is the worst case known for decoding time (issue 20): a ~400 KB set
or map of ints whose hashes collide, which took seconds to build before keys had to be
hash-safe and is now refused after one linear pass, against an ordinary payload of the
same size; the key checks come from the Cython twin or the pure one.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from itertools import repeat
from typing import Any

import msgpack  # type: ignore[import-untyped]

from bench._harness import Table, rate
from casty import serialization
from casty.serialization import (
    JsonSerializer,
    MsgpackSerializer,
    SerializationError,
    Serializer,
    TypeRegistry,
)


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
    return [table, collect_hostile(quick)]


# --- hostile payloads ----------------------------------------------------------------------

_M61 = 2**61 - 1  # hash(k * _M61) == 0 for every int k
_TARGET = 400_000  # bytes: the red team's frame held 415 KB
_CODEC_NAMES = ("decode_plain", "dict_from_pairs", "keys_safe_within", "safe_members")


@contextlib.contextmanager
def _codec_twin(module: str) -> Iterator[None]:
    """The serializers use the plain codec functions of ``module`` for a while."""
    mod = importlib.import_module(module)
    real = {name: getattr(serialization, name) for name in _CODEC_NAMES}
    for name in _CODEC_NAMES:
        setattr(serialization, name, getattr(mod, name))
    try:
        yield
    finally:
        for name, fn in real.items():
            setattr(serialization, name, fn)


def _sized(make: Callable[[int], bytes]) -> bytes:
    """``make(n)`` for the n that brings it nearest _TARGET bytes (it grows linearly in n)."""
    per_item = len(make(1000)) / 1000
    return make(int(_TARGET / per_item))


def _msgpack_set(ints: Callable[[int], list[int]]) -> Callable[[int], bytes]:
    def make(n: int) -> bytes:
        big = msgpack.packb(ints(n), default=lambda v: msgpack.ExtType(
            7, v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True)))
        return bytes(msgpack.packb(msgpack.ExtType(4, big)))
    return make


def _msgpack_map(ints: Callable[[int], list[int]]) -> Callable[[int], bytes]:
    def make(n: int) -> bytes:
        return bytes(msgpack.packb(dict.fromkeys(ints(n), 0), default=lambda v: msgpack.ExtType(
            7, v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True))))
    return make


def _json_set(ints: Callable[[int], list[int]]) -> Callable[[int], bytes]:
    def make(n: int) -> bytes:  # past 64 bits as the encoder writes them: 'i' tags
        items = [v if v < 2**63 else {"__t": "i", "v": hex(v)} for v in ints(n)]
        return json.dumps({"__t": "s", "v": items}).encode()
    return make


def _colliding(n: int) -> list[int]:
    return [k * _M61 for k in range(1, n + 1)]  # mostly past 64 bits: ext 7, JSON 'i' tags


def _ordinary(n: int) -> list[int]:
    return [2**59 + 7919 * k for k in range(n)]  # hash-safe, the same size on the wire


def _decode_time(deserialize: Callable[[bytes], Any], data: bytes, runs: int) -> float:
    """Best µs to decode (or refuse) ``data``."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        try:
            deserialize(data)
        except SerializationError:
            pass
        best = min(best, time.perf_counter() - t0)
    return best * 1e6


def collect_hostile(quick: bool) -> Table:
    runs = 2 if quick else 5
    mp, js = MsgpackSerializer(), JsonSerializer()
    table = Table("decoding in linear time: ~400 KB of colliding ints (refused) vs ordinary ints",
                  unit="µs")
    cases = [
        ("msgpack set", mp, _msgpack_set), ("msgpack map keys", mp, _msgpack_map),
        ("json set", js, _json_set),
    ]
    for label, ser, form in cases:
        for kind, ints in (("colliding, refused", _colliding), ("ordinary", _ordinary)):
            data = _sized(form(ints))
            figures = []
            for module in ("casty._fast.plain_codec", "casty.plain_codec"):
                with _codec_twin(module):
                    figures.append(_decode_time(ser.deserialize, data, runs))
            table.add(f"{label} {len(data) // 1000} KB, {kind}", *figures, unit="µs")
    n = 2000
    t0 = time.perf_counter()
    set(_colliding(n))  # what decoding did before the rule, on a set 20x smaller
    took = time.perf_counter() - t0
    table.notes.append(f"before the rule: set() of {n} colliding ints took {took * 1e3:.0f} ms "
                       f"(quadratic: ~{took * (_TARGET / 13 / n) ** 2:.0f} s at 400 KB)")
    table.notes.append("colliding ints lie past 64 bits (ext 7 / 'i' tags, a hook call each), "
                       "ordinary ones are native: both are one linear pass")
    table.notes.append("figures: µs to decode or refuse one payload, best of "
                       f"{runs}; key checks from the Cython | pure twin")
    return table


if __name__ == "__main__":
    for t in collect(quick=False):
        print(t.render())
