"""The msgpack fast path for the usual message: one dataclass whose fields are plain scalars.

A *plain* message is a registered dataclass sent at top level whose field values are
all ``None``, ``bool``, ``int`` (64-bit), ``float``, ``str``, ``bytes`` or actor refs
(exact types, no subclasses): the shape of most messages, asks' ``reply_to`` included.
One such value sent by itself is plain too (ask replies often are one int or str).
:func:`encode_plain` writes the very bytes :class:`MsgpackSerializer`'s
generic path writes for it; :func:`decode_plain` reads them back.  Both answer ``None``
for anything else (nested values, other ext types, malformed input), and the caller
falls back to the generic path, which also owns every error message: the fast path
never raises for bad input, it declines.

Hash-safe keys.  A peer must not be able to choose values whose hashes collide: a
set or dict of n such values takes O(n**2) to build.  Dict keys and set/frozenset
members that travel must therefore be *hash-safe*: ``None``, ``str``, ``bytes``
(their hashes are randomised per process), an ``int`` (``bool``, ``IntEnum`` and
``IntFlag`` members included) with ``-2**60 < n < 2**60`` (its hash is itself: distinct
values, distinct hashes, but for -1 and -2), an Enum member (a class has a fixed
number of them; a Flag only with the default ``STRICT`` boundary, as others accept any
bits, and a member with unknown bits has no name to hash), or an actor ref (its
address is strings and a port below 65536).  Floats, other ints, tuples, frozensets
and dataclasses are not: their hashes can be made to collide.  :func:`safe_members`,
:func:`dict_from_pairs` and :func:`keys_safe_within` check the rule; the serializers
report what they refuse.  The fast path itself builds no dict or set (its unpacking
keeps msgpack's default of str/bytes map keys).

This module is the pure twin of ``casty._fast.plain_codec``; the serializer uses
whichever ``casty._impl`` picked.

>>> from dataclasses import dataclass
>>> from casty.serialization import TypeRegistry
>>> @dataclass(frozen=True)
... class Tick:
...     seq: int
...     text: str
>>> reg = TypeRegistry()
>>> _ = reg.register(Tick, "demo.Tick")
>>> _ = reg.resolve("demo.Tick")  # plans are made on first use
>>> data = encode_plain("demo.Tick", (1, "hi"))
>>> data
b'\\xc7\\x0f\\x01\\x93\\xa9demo.Tick\\x01\\xa2hi'
>>> decode_plain(data, reg._name_plans)
Tick(seq=1, text='hi')
>>> encode_plain("demo.Tick", (1, ["not", "plain"])) is None
True
>>> safe_members([None, "a", b"b", 2**60 - 1, -(2**60) + 1]), safe_members([2**60]), safe_members([1.5])
(True, False, False)
>>> dict_from_pairs([("a", 1), (2, 3)]), dict_from_pairs([((1, 2), 3)]) is None
({'a': 1, 2: 3}, True)
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Mapping
from enum import STRICT, Enum, Flag
from typing import Any, Final

from msgpack import ExtType, Packer, unpackb  # type: ignore[import-untyped]

from casty.address import ActorAddress
from casty.msgpack_ext import PLAIN_TYPES, REF_TYPES, dataclass_ext_body, ext_header
from casty.wire import EXT_DATACLASS, EXT_REF, KEY_INT_LIMIT, KEYS_DEPTH

__all__ = [
    "KEY_INT_LIMIT",
    "PLAIN_TYPES",
    "REF_TYPES",
    "decode_plain",
    "dict_from_pairs",
    "encode_plain",
    "keys_safe_within",
    "safe_members",
]

_INT_MIN: Final = -(2**63)
_UINT_MAX: Final = 2**64 - 1

# One packer for the module: packing is synchronous and never re-enters here.
_packer: Final = Packer(use_bin_type=True, strict_types=True, autoreset=True)


def _is_plain(value: object) -> bool:
    kind = type(value)
    if kind is int:
        return _INT_MIN <= value <= _UINT_MAX  # type: ignore[operator]
    return kind in PLAIN_TYPES


def encode_plain(name: str, values: tuple[Any, ...]) -> bytes | None:
    """``ext(1, [name, *values])`` as msgpack bytes, or None when a value is not plain."""
    if type(name) is not str or type(values) is not tuple:
        return None
    items: list[Any] = [name]
    try:
        for value in values:
            if type(value) in REF_TYPES:
                value = ExtType(EXT_REF, value.address.to_uri().encode())
            elif not _is_plain(value):
                return None
            items.append(value)
        body: bytes = _packer.pack(items)
    except UnicodeEncodeError:
        return None  # a lone surrogate: the generic path reports it
    return ext_header(EXT_DATACLASS, len(body)) + body


def decode_plain(
    data: bytes, plans: Mapping[str, Any], ref_factory: Callable[[ActorAddress], Any] | None = None
) -> Any:
    """The message a plain payload stands for, or None (use the generic path).

    ``plans`` maps wire names to the registry's plans; only a registered dataclass
    whose field count matches is built, and only when building it cannot fail.  A
    plain field value sent by itself (a scalar or an actor ref, as ask replies often
    are) is plain too, except None, which would read as "declined".  Actor refs are
    rebuilt through ``ref_factory``; without one, the generic path reports the ref it
    cannot rebuild.
    """
    if type(data) is not bytes:
        return None
    body = dataclass_ext_body(data)
    if body is None:
        return _decode_plain_value(data, ref_factory)
    try:
        items = unpackb(body, raw=False)
    except Exception:
        return None
    if type(items) is not list or not items or type(items[0]) is not str:
        return None
    plan = plans.get(items[0])
    if plan is None or plan.is_enum or len(items) != plan.size:
        return None
    for i in range(1, len(items)):
        value = _plain_value(items[i], ref_factory)
        if value is _DECLINE:
            return None
        items[i] = value
    if plan.direct:
        obj = object.__new__(plan.cls)
        for field_name, value in zip(plan.fields, items[1:], strict=True):
            object.__setattr__(obj, field_name, value)
        return obj
    try:
        return plan.build(*items[1:])
    except Exception:
        return None  # the generic path rebuilds it again and reports why it fails


_DECLINE: Final = object()
# First bytes of msgpack arrays and maps: never a plain value, so not worth unpacking.
_CONTAINERS: Final = frozenset(range(0x80, 0xA0)) | {0xDC, 0xDD, 0xDE, 0xDF}


def _plain_value(value: Any, ref_factory: Callable[[ActorAddress], Any] | None) -> Any:
    """``value`` as unpacked, with an actor ref rebuilt; _DECLINE when it is not plain."""
    if type(value) is ExtType:
        if value.code != EXT_REF or ref_factory is None:
            return _DECLINE
        try:
            return ref_factory(ActorAddress.from_uri(value.data.decode("utf-8")))
        except Exception:
            return _DECLINE  # the generic path says what is wrong with it
    return value if _is_plain(value) else _DECLINE


def _decode_plain_value(data: bytes, ref_factory: Callable[[ActorAddress], Any] | None) -> Any:
    """A plain value sent by itself, or None."""
    if not data or data[0] in _CONTAINERS:
        return None
    try:
        value = unpackb(data, raw=False)
    except Exception:
        return None
    value = _plain_value(value, ref_factory)
    return None if value is _DECLINE else value


# -- hash-safe keys -------------------------------------------------------------------

_SAFE_KEY_TYPES: Final = frozenset({type(None), bool, str, bytes}) | REF_TYPES
_SAFE_OR_INT: Final = _SAFE_KEY_TYPES | {int}
_first: Final = operator.itemgetter(0)


def _safe_key(key: object) -> bool:
    """Whether ``key`` may be a dict key or set member that travels (see the module doc)."""
    kind = type(key)
    if kind in _SAFE_KEY_TYPES:
        return True
    if isinstance(key, int):  # int.__index__: the value itself, whatever a subclass overrides
        return -KEY_INT_LIMIT < int.__index__(key) < KEY_INT_LIMIT
    # A Flag with another boundary takes any bits, and hashes a member's name: None for some.
    return isinstance(key, Enum) and (not isinstance(key, Flag) or getattr(kind, "_boundary_", None) is STRICT)


def safe_members(items: Collection[Any]) -> bool:
    """True when every item of ``items`` (a list, set or dict: its keys) is a hash-safe key."""
    kinds = set(map(type, items))  # at C speed; the usual case ends here
    if kinds <= _SAFE_KEY_TYPES:
        return True
    if kinds <= _SAFE_OR_INT:  # exact ints among them: their range, at C speed
        ints = items if len(kinds) == 1 else [x for x in items if type(x) is int]
        return -KEY_INT_LIMIT < min(ints) and max(ints) < KEY_INT_LIMIT
    return all(map(_safe_key, items))


def dict_from_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any] | None:
    """``dict(pairs)`` when every key is hash-safe, else None (the caller names the key).

    ``pairs`` is what msgpack's ``object_pairs_hook`` receives: a list of 2-tuples.
    """
    if not safe_members(list(map(_first, pairs))):
        return None
    return dict(pairs)


def keys_safe_within(value: object, depth: int = 0) -> bool:
    """False when a dict reached from ``value`` through lists and dicts (exact types, what
    msgpack packs natively) has a key that is not hash-safe.

    Other containers are left out: the serializer packs each through its own call.  Past
    KEYS_DEPTH levels it stops looking (and answers True): the packer refuses that nesting.
    """
    kind = type(value)
    if kind is dict:
        if not safe_members(value):  # type: ignore[arg-type]
            return False
        children: Collection[Any] = value.values()  # type: ignore[attr-defined]
    elif kind is list:
        children = value  # type: ignore[assignment]
    else:
        return True
    if depth >= KEYS_DEPTH:
        return True
    if len(children) > 8:  # one scan of the types at C speed may spare the loop
        kinds = set(map(type, children))
        if list not in kinds and dict not in kinds:
            return True
    for item in children:
        kind = type(item)
        if (kind is list or kind is dict) and not keys_safe_within(item, depth + 1):
            return False
    return True
