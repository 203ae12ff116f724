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
>>> decode_plain(data, reg._named)
Tick(seq=1, text='hi')
>>> encode_plain("demo.Tick", (1, ["not", "plain"])) is None
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from msgpack import ExtType, Packer, unpackb  # type: ignore[import-untyped]

from casty.address import ActorAddress
from casty.ref import LocalActorRef, RemoteActorRef

__all__ = ["PLAIN_TYPES", "REF_TYPES", "decode_plain", "encode_plain"]

#: exact types a plain message's fields may hold, besides the actor refs
PLAIN_TYPES: Final = frozenset({type(None), bool, int, float, str, bytes})
#: actor refs travel as ext 6 holding their URI, as the generic path writes them
REF_TYPES: Final = frozenset({LocalActorRef, RemoteActorRef})

_EXT_DATACLASS: Final = 1
_EXT_REF: Final = 6
_INT_MIN: Final = -(2**63)
_UINT_MAX: Final = 2**64 - 1
_FIXEXT: Final = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
_FIXEXT_SIZE: Final = {v: k for k, v in _FIXEXT.items()}

# One packer for the module: packing is synchronous and never re-enters here.
_packer: Final = Packer(use_bin_type=True, strict_types=True, autoreset=True)


def _is_plain(value: object) -> bool:
    kind = type(value)
    if kind is int:
        return _INT_MIN <= value <= _UINT_MAX  # type: ignore[operator]
    return kind in PLAIN_TYPES


def ext_header(code: int, size: int) -> bytes:
    """The msgpack ext header for a body of ``size`` bytes, as msgpack's packer writes it."""
    fixed = _FIXEXT.get(size)
    if fixed is not None:
        return bytes((fixed, code))
    if size < 0x100:
        return bytes((0xC7, size, code))
    if size < 0x10000:
        return b"\xc8" + size.to_bytes(2, "big") + bytes((code,))
    return b"\xc9" + size.to_bytes(4, "big") + bytes((code,))


def encode_plain(name: str, values: tuple[Any, ...]) -> bytes | None:
    """``ext(1, [name, *values])`` as msgpack bytes, or None when a value is not plain."""
    if type(name) is not str or type(values) is not tuple:
        return None
    items: list[Any] = [name]
    try:
        for value in values:
            if type(value) in REF_TYPES:
                value = ExtType(_EXT_REF, value.address.to_uri().encode())
            elif not _is_plain(value):
                return None
            items.append(value)
        body: bytes = _packer.pack(items)
    except UnicodeEncodeError:
        return None  # a lone surrogate: the generic path reports it
    return ext_header(_EXT_DATACLASS, len(body)) + body


def dataclass_ext_body(data: bytes) -> bytes | None:
    """The body when ``data`` is exactly one dataclass ext; None for anything else."""
    n = len(data)
    if n < 2:
        return None
    first = data[0]
    size = _FIXEXT_SIZE.get(first)
    if size is not None:
        start = 2
    elif first == 0xC7 and n >= 3:
        size, start = data[1], 3
    elif first == 0xC8 and n >= 4:
        size, start = int.from_bytes(data[1:3], "big"), 4
    elif first == 0xC9 and n >= 6:
        size, start = int.from_bytes(data[1:5], "big"), 6
    else:
        return None
    if data[start - 1] != _EXT_DATACLASS or n != start + size:
        return None
    return data[start:]


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
        if value.code != _EXT_REF or ref_factory is None:
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
