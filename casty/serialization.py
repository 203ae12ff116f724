"""Message serializers: the :class:`Serializer` protocol, :class:`TypeRegistry`, and the
msgpack (default) and JSON encodings of one value model.

Values: None, bool, int (any size), float, str, bytes, list, tuple, dict (any supported
keys), set, frozenset, ``datetime.datetime``, ``datetime.date``, ``decimal.Decimal``,
``uuid.UUID``, dataclasses and Enum members whose classes are registered (or live in an
allowed module), values of classes given a codec (:meth:`TypeRegistry.register_codec`),
and actor refs, which travel as their URI and are rebuilt on the receiving side through a
``ref_factory``.  Each comes back as the same type, equal to what was sent.

Datetimes: an *aware* datetime travels as its instant (msgpack's Timestamp extension)
and arrives in UTC (``tzinfo=datetime.timezone.utc``): equal to the one sent, the same
instant, but the sender's offset or zone is not carried (call ``astimezone()`` to show
local time).  A *naive* datetime travels as its wall-clock fields and arrives naive,
never read as UTC or local time.  Both keep microseconds; ``fold`` is not carried.  A
Decimal travels as ``str(d)`` (exact: NaN, sNaN, infinities, -0 and the exponent
kept), up to :data:`MAX_DECIMAL_CHARS` characters.

Decoding is safe against hostile payloads: it never imports a module or calls anything a
peer names except registered classes (or dataclass/Enum classes of allowed modules that
are already imported), and every failure is a :class:`SerializationError`.

Decoding takes time linear in the payload, so a peer cannot choose values whose hashes
collide.  Dict keys and set/frozenset members must be hash-safe: ``None``, ``str``,
``bytes``, an ``int`` (``bool``, ``IntEnum``/``IntFlag`` members too) with
``-2**60 < n < 2**60``, an Enum member (a Flag's only with the default STRICT boundary),
or an actor ref (the rule and why: ``casty.plain_codec``).  Anything else there (a float, a larger int, a tuple, a
frozenset, a dataclass) is refused both ways with :class:`UnsafeKeyError`, so what
encodes also decodes.  Ints travel up to :data:`MAX_INT_BYTES` of two's complement
(``-2**8191 <= n < 2**8191``); JSON numbers up to 20 digits (larger ints use the ``i``
tag).

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Move:
...     x: int
...     path: tuple[str, ...]
>>> registry = TypeRegistry()
>>> _ = registry.register(Move, "demo.Move")
>>> s = MsgpackSerializer(registry)
>>> s.deserialize(s.serialize({"move": Move(3, ("a", "b"))}))
{'move': Move(x=3, path=('a', 'b'))}
>>> try:
...     MsgpackSerializer().serialize(Move(1, ()))
... except SerializationError as exc:
...     print(str(exc).replace(__name__, "mod").replace("; ", ";\\n"))
cannot serialize object of type 'mod.Move': not registered and not a supported type;
register it in the TypeRegistry of both nodes (registry.register(Move, "<name>")), in a module both import
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import inspect
import json
import math
import operator
import sys
import uuid
from collections.abc import Callable
from enum import Enum
from typing import Any, Final, NamedTuple, Protocol, runtime_checkable

from msgpack import ExtType, Packer, Timestamp, Unpacker, unpackb  # type: ignore[import-untyped]

from casty._impl import decode_plain, dict_from_pairs, encode_plain, keys_safe_within, safe_members
from casty.address import ActorAddress
from casty.errors import SerializationError, UnsafeKeyError
from casty.msgpack_ext import dataclass_ext_body, ext_header
from casty.ref import ActorRef, LocalActorRef, RemoteActorRef, _TransportRef
from casty.transport.envelope_codec import type_hint
from casty.wire import (
    EXT_BIGINT,
    EXT_CODEC,
    EXT_DATACLASS,
    EXT_DATE,
    EXT_DECIMAL,
    EXT_ENUM,
    EXT_FROZENSET,
    EXT_NAIVE_DATETIME,
    EXT_REF,
    EXT_SET,
    EXT_TIMESTAMP,
    EXT_TUPLE,
    EXT_UUID,
    MAX_DECIMAL_CHARS,
)

__all__ = [
    "MAX_DECIMAL_CHARS",
    "MAX_INT_BYTES",
    "Codec",
    "EncodeSpec",
    "FastPath",
    "JsonSerializer",
    "MsgpackSerializer",
    "Plan",
    "RefFactory",
    "SerializationError",
    "Serializer",
    "TypeRegistry",
    "UnsafeKeyError",
    "type_hint",
]

RefFactory = Callable[[ActorAddress], ActorRef[Any]]
"""Rebuilds an actor ref from the address carried in a payload."""

Payload = bytes | bytearray | memoryview

# Ext nesting (dataclass in tuple in dataclass ...) deeper than this is refused both ways,
# so everything we write can be read back and a hostile payload cannot exhaust the stack.
MAX_NESTING: Final = 256
# msgpack's unpackb keeps a ~40 KiB parse stack on the C stack; past this many nested
# levels, decode through Unpacker objects, which keep theirs on the heap.
_C_STACK_LEVELS: Final = 4

_INT_MIN: Final = -(2**63)  # msgpack's native int range: int64 min .. uint64 max
_INT_END: Final = 2**64
#: the largest int that travels, in bytes of two's complement: -2**8191 <= n < 2**8191.
#: Its decimal form (2466 digits) stays within Python's int/str limit of 4300 digits.
MAX_INT_BYTES: Final = 1024
_BIG_INT_MIN: Final = -(2 ** (8 * MAX_INT_BYTES - 1))
_BIG_INT_END: Final = 2 ** (8 * MAX_INT_BYTES - 1)
# The longest JSON number that is an int: what the encoder writes is int64/uint64 (20 digits).
_JSON_INT_DIGITS: Final = 20


def _unsafe_key(items: Any, what: str) -> UnsafeKeyError:
    """The error naming the first item of ``items`` that is not a hash-safe key."""
    bad = next((item for item in items if not safe_members((item,))), None)
    return UnsafeKeyError(
        f"{what} of type {type_hint(bad)!r} ({_show_value(bad)}) is not hash-safe: dict keys "
        "and set members must be None, str, bytes, an int with -2**60 < n < 2**60, an Enum "
        "member (a Flag's only if its boundary is STRICT), or an actor ref"
    )


def _unsafe_nested_key(value: Any) -> UnsafeKeyError:
    """The error for the first unsafe key in a dict reached from ``value`` (lists and dicts)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            if not safe_members(item):
                return _unsafe_key(item, "dict key")
            stack.extend(reversed(list(item.values())))
        elif type(item) is list:
            stack.extend(reversed(item))
    return UnsafeKeyError("a dict key is not hash-safe")  # unreachable: keys_safe_within said so


def _int_too_large(n: int) -> SerializationError:
    return SerializationError(
        f"int of {n.bit_length()} bits is too large: ints travel up to {MAX_INT_BYTES} bytes "
        f"(-2**{8 * MAX_INT_BYTES - 1} <= n < 2**{8 * MAX_INT_BYTES - 1})"
    )


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _unsupported(obj: object) -> SerializationError:
    cls = type(obj)
    how = (
        f"registry.register({cls.__qualname__}, \"<name>\")" if _is_message_class(cls)
        else f"registry.register_codec({cls.__qualname__}, encode, decode)"
    )
    hint = f"; register it in the TypeRegistry of both nodes ({how}), in a module both import"
    if cls.__module__ == "__main__":
        hint += " (it is defined in __main__, which is another module on the other node: move it)"
    return SerializationError(
        f"cannot serialize object of type {type_hint(obj)!r}: not registered and not a "
        f"supported type{hint}"
    )


def _show(value: object, limit: int = 120) -> str:
    """``repr(value)`` cut short: names in payloads come from peers."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _cut(text: str, limit: int = 200) -> str:
    """``text`` cut short (an error's text may quote what a peer sent)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _show_value(value: object) -> str:
    """:func:`_show`, but an int too long for ``repr``, an object with the default repr (its
    address means nothing to a reader, and differs run to run) or a repr that fails is described.

    >>> _show_value(object())
    'an object of type builtins.object'
    """
    if type(value) is int and value.bit_length() > 256:
        return f"an int of {value.bit_length()} bits"
    if type(value).__repr__ is object.__repr__:
        return f"an object of type {type_hint(value)}"
    try:
        return _show(value)
    except Exception:
        return f"a {type_hint(value)} whose repr fails"


# --- the standard library values (datetime, date, Decimal, UUID) ----------------------

_UTC: Final = datetime.UTC
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_NAIVE_EPOCH: Final = datetime.datetime(1970, 1, 1)
_EPOCH_DAY: Final = _NAIVE_EPOCH.toordinal()
_DAY_SECONDS: Final = 86400
# The longest ISO text a JSON datetime/date tag holds (what isoformat() writes is 32).
_ISO_CHARS: Final = 40


def _timestamp_body(delta: datetime.timedelta) -> bytes:
    """The msgpack Timestamp body (4, 8 or 12 bytes) of ``delta`` since the epoch."""
    return bytes(Timestamp(delta.days * _DAY_SECONDS + delta.seconds, delta.microseconds * 1000).to_bytes())


def _naive_from_body(data: bytes) -> datetime.datetime:
    """The naive datetime an EXT_NAIVE_DATETIME body holds (nanoseconds cut to micro)."""
    try:
        ts = Timestamp.from_bytes(data)
        return _NAIVE_EPOCH + datetime.timedelta(seconds=ts.seconds, microseconds=ts.nanoseconds // 1000)
    except (ValueError, OverflowError) as exc:
        raise SerializationError(f"malformed naive datetime ext ({len(data)} bytes): {exc}") from None


def _date_body(d: datetime.date) -> bytes:
    return (d.toordinal() - _EPOCH_DAY).to_bytes(4, "big", signed=True)


def _date_from_body(data: bytes) -> datetime.date:
    if len(data) != 4:
        raise SerializationError(f"malformed date ext: {len(data)} bytes, expected 4")
    days = int.from_bytes(data, "big", signed=True)
    try:
        return datetime.date.fromordinal(days + _EPOCH_DAY)
    except (ValueError, OverflowError):
        raise SerializationError(
            f"date ext holds day {days} after 1970-01-01, outside the years 1..9999"
        ) from None


def _decimal_text(d: decimal.Decimal) -> str:
    text = str(d)
    if len(text) > MAX_DECIMAL_CHARS:
        raise SerializationError(
            f"Decimal of {len(text)} characters is too long: Decimals travel up to "
            f"{MAX_DECIMAL_CHARS} characters of str(d)"
        )
    return text


def _decimal_from_text(text: object) -> decimal.Decimal:
    """The Decimal ``text`` stands for; it must be exactly what ``str(d)`` writes."""
    if type(text) is not str:
        raise SerializationError(f"a Decimal must travel as a string, got {_show(text)}")
    if len(text) > MAX_DECIMAL_CHARS:
        raise SerializationError(
            f"Decimal text of {len(text)} characters is too long (up to {MAX_DECIMAL_CHARS})"
        )
    try:
        value = decimal.Decimal(text)
    except (decimal.InvalidOperation, ValueError):
        value = None
    if value is None or str(value) != text:  # one form per value: no spaces, "_", "inf"...
        raise SerializationError(f"malformed Decimal {_show(text)}: not what str(Decimal) writes")
    return value


def _uuid_from_body(data: bytes) -> uuid.UUID:
    if len(data) != 16:
        raise SerializationError(f"malformed UUID ext: {len(data)} bytes, expected 16")
    return uuid.UUID(bytes=data)


def _from_iso(text: object, tag: str, aware: bool) -> datetime.datetime:
    """A JSON ``dt`` (aware, in UTC) or ``ndt`` (naive) tag's datetime."""
    text = _str(text, tag)
    value = None
    if len(text) <= _ISO_CHARS:
        try:
            value = datetime.datetime.fromisoformat(text)
        except ValueError:
            pass
    if value is None or value.isoformat() != text or value.tzinfo is not (_UTC if aware else None):
        want = "an ISO datetime in UTC (+00:00)" if aware else "a naive ISO datetime"
        raise SerializationError(f"malformed {tag!r} tag: {_show(text)} is not {want}")
    return value


def _date_from_iso(text: object) -> datetime.date:
    text = _str(text, "d")
    try:
        value = datetime.date.fromisoformat(text) if len(text) <= _ISO_CHARS else None
    except ValueError:
        value = None
    if value is None or value.isoformat() != text:
        raise SerializationError(f"malformed 'd' tag: {_show(text)} is not an ISO date (YYYY-MM-DD)")
    return value


def _uuid_from_text(text: object) -> uuid.UUID:
    text = _str(text, "u")
    try:
        value = uuid.UUID(text) if len(text) == 36 else None
    except ValueError:
        value = None
    if value is None or str(value) != text:
        raise SerializationError(f"malformed 'u' tag: {_show(text)} is not a UUID as str(uuid) writes it")
    return value


# --- codecs ----------------------------------------------------------------------------


class Codec(NamedTuple):
    """How values of one class travel: see :meth:`TypeRegistry.register_codec`."""

    cls: type
    #: the wire name
    name: str
    #: ``encode(obj)``: a value the serializers take (it may hold other codec values)
    encode: Callable[[Any], Any]
    #: ``decode(value)``: the object back; it must be an instance of ``cls``
    decode: Callable[[Any], Any]


#: what travels without a codec; registering one for these is a TypeError
_NATIVE_TYPES: Final = frozenset({
    type(None), bool, int, float, str, bytes, bytearray, memoryview, list, tuple, dict, set,
    frozenset, datetime.datetime, datetime.date, decimal.Decimal, uuid.UUID, LocalActorRef,
    RemoteActorRef,
})


def _codec_encode(codec: Codec, obj: Any) -> Any:
    try:
        return codec.encode(obj)
    except Exception as exc:
        raise SerializationError(
            f"the encoder registered for {_type_name(codec.cls)!r} (as {codec.name!r}) failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _codec_decode(registry: TypeRegistry, name: object, value: Any) -> Any:
    """The object a codec value ``[name, value]`` stands for; SerializationError otherwise."""
    if type(name) is not str:
        raise SerializationError(f"a codec name must be a str, got {_show(name)}")
    codec = registry._codecs_by_name.get(name)
    if codec is None:
        raise SerializationError(
            f"unknown codec name {_show(name)}: nothing was registered under it with "
            "TypeRegistry.register_codec"
        )
    try:
        obj = codec.decode(value)
    except Exception as exc:
        raise SerializationError(
            f"the decoder registered for {_type_name(codec.cls)!r} (as {codec.name!r}) failed: "
            f"{type(exc).__name__}: {_cut(str(exc))}"
        ) from exc
    if not isinstance(obj, codec.cls):
        raise SerializationError(
            f"the decoder registered for {_type_name(codec.cls)!r} (as {codec.name!r}) returned "
            f"{type_hint(obj)!r}, not {_type_name(codec.cls)!r}"
        )
    return obj


@runtime_checkable
class Serializer(Protocol):
    """Turns messages into bytes and back; actor refs are rebuilt through ``ref_factory``."""

    def serialize(self, obj: Any) -> bytes:
        """Encode ``obj``; SerializationError when it holds an unsupported value."""
        ...

    def deserialize(self, data: Payload, *, ref_factory: RefFactory | None = None) -> Any:
        """Decode ``data``; SerializationError when it is malformed or names an unknown type."""
        ...


class Plan:
    """How one registered class travels: its wire name, and how to take it apart and rebuild it.

    Made by :class:`TypeRegistry`; its fields are read by the fast paths too (see
    :class:`FastPath`), so they are part of that contract: ``cls``, ``name`` (the wire
    name), ``is_enum``, ``fields`` (a dataclass's field names, in order), ``get(obj)``
    (their values, as a tuple), ``build(*values)``, ``direct`` and ``size``.

    ``build(*values)`` makes the object: the class itself in the common case of a dataclass
    whose ``__init__`` takes every field positionally (or of an Enum, from its value).
    """

    __slots__ = ("build", "cls", "direct", "fields", "get", "is_enum", "name", "size")

    def __init__(self, cls: type, name: str) -> None:
        self.cls = cls
        self.name = name
        self.is_enum = issubclass(cls, Enum)
        self.build: Callable[..., Any] = cls
        self.fields: tuple[str, ...] = ()
        self.get: Callable[[Any], tuple[Any, ...]] = _no_fields
        #: ``build`` may be replaced by setting each field with ``object.__setattr__``
        self.direct = False
        if not self.is_enum:
            self.fields = tuple(f.name for f in dataclasses.fields(cls))
            self.get = _getter(self.fields)
            self.build = _builder(cls, self.fields)
            self.direct = self.build is cls and _init_only_stores(cls)
        self.size = 1 + (1 if self.is_enum else len(self.fields))  # of [name, *values]


def _no_fields(obj: object) -> tuple[()]:
    return ()


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(names) >= 2:
        return operator.attrgetter(*names)  # a C call returning a tuple
    if len(names) == 1:
        get_one = operator.attrgetter(names[0])
        return lambda obj: (get_one(obj),)
    return _no_fields


def _builder(cls: type, names: tuple[str, ...]) -> Callable[..., Any]:
    """The cheapest faithful way to rebuild ``cls`` from its field values in order."""
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    init_names = tuple(n for n in names if by_name[n].init)
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        params = None
    if params is not None and tuple(p.name for p in params) == init_names:
        if len(init_names) == len(names) and all(
            p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params
        ):
            return cls
        if all(p.kind is not inspect.Parameter.POSITIONAL_ONLY for p in params):
            # kw_only fields, or init=False fields set after __init__ (validation still runs).
            def build_by_keyword(*values: Any) -> Any:
                obj = cls(**{n: v for n, v in zip(names, values, strict=True) if by_name[n].init})
                for n, v in zip(names, values, strict=True):
                    if not by_name[n].init:
                        object.__setattr__(obj, n, v)
                return obj

            return build_by_keyword

    # A hand-written __init__ or InitVars: __init__ cannot take the stored fields back, so
    # restore them as they were, like copy.copy does.
    def build_raw(*values: Any) -> Any:
        obj: Any = object.__new__(cls)
        for n, v in zip(names, values, strict=True):
            object.__setattr__(obj, n, v)
        return obj

    return build_raw


def _init_only_stores(cls: type) -> bool:
    """True when ``cls(*values)`` does nothing but ``object.__setattr__`` each field in order.

    That holds for a dataclass whose ``__init__`` the decorator generated (it is compiled
    from source text, hence the ``<string>`` file name), with no ``__post_init__``, no
    custom ``__new__``, and either frozen or with the default ``__setattr__``.
    """
    init = cls.__dict__.get("__init__")
    code = getattr(init, "__code__", None)
    params = getattr(cls, "__dataclass_params__", None)
    new: object = cls.__new__
    setattr_: object = cls.__setattr__
    return (
        code is not None
        and code.co_filename == "<string>"
        and not hasattr(cls, "__post_init__")
        and new is object.__new__
        and params is not None
        and (params.frozen or setattr_ is object.__setattr__)
    )


def _is_message_class(obj: object) -> bool:
    return isinstance(obj, type) and (
        issubclass(obj, Enum) or dataclasses.is_dataclass(obj)
    )


class TypeRegistry:
    """Which dataclass and Enum types may travel, and under which names; and the codecs
    of other classes (:meth:`register_codec`).

    A class is sent under the name it was registered with (by default
    ``module.QualName``).  ``allow_module`` lets every dataclass/Enum class of an already
    imported module travel under its default name without registering each one.
    ``casty.address.ActorAddress`` is registered from the start.  Both nodes need the
    same registrations.

    >>> import enum
    >>> class Color(enum.Enum):
    ...     RED = 1
    >>> reg = TypeRegistry()
    >>> reg.register(Color, "demo.Color") is Color
    True
    >>> reg.name_of(Color), reg.resolve("demo.Color") is Color
    ('demo.Color', True)
    >>> reg.resolve("os.system")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    casty.errors.SerializationError: unknown type name 'os.system': not registered ...
    """

    def __init__(self) -> None:
        self._by_name: dict[str, type] = {}
        self._by_class: dict[type, str] = {}
        self._modules: set[str] = set()
        # Plans cache hits only: a miss may become a hit once a module is imported or a
        # class registered, and caching misses would let a peer grow the cache.
        self._class_plans: dict[type, Plan] = {}
        self._name_plans: dict[str, Plan] = {}
        self._codecs: dict[type, Codec] = {}
        self._codecs_by_name: dict[str, Codec] = {}
        self.register(ActorAddress)

    def register(self, cls: type, name: str | None = None) -> type:
        """Let ``cls`` (a dataclass or Enum subclass) travel as ``name``; returns ``cls``.

        Registering another class under a taken name, or ``cls`` again under another
        name, is a ValueError.
        """
        if not _is_message_class(cls):
            raise TypeError(f"only dataclasses and Enum subclasses can be registered, got {cls!r}")
        if name is None:
            name = _type_name(cls)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a registered type name must be a non-empty str, got {name!r}")
        taken = self._taker(name)
        if taken is not None and taken is not cls:
            raise ValueError(
                f"type name {name!r} is already taken by {taken!r}, cannot give it to {cls!r}"
            )
        if cls in self._codecs:
            raise ValueError(f"{cls!r} already travels through the codec {self._codecs[cls].name!r}")
        old = self._by_class.get(cls)
        if old is not None and old != name:
            raise ValueError(f"{cls!r} is already registered as {old!r}, not {name!r}")
        self._by_name[name] = cls
        self._by_class[cls] = name
        self._class_plans.pop(cls, None)  # it may have travelled under its allowed-module name
        return cls

    def _taker(self, name: str) -> type | None:
        """The class that travels under ``name`` (registered, planned or a codec's), or None."""
        taken = self._by_name.get(name)
        if taken is None and name in self._name_plans:
            taken = self._name_plans[name].cls
        if taken is None and name in self._codecs_by_name:
            taken = self._codecs_by_name[name].cls
        return taken

    def register_codec(
        self,
        cls: type,
        encode: Callable[[Any], Any],
        decode: Callable[[Any], Any],
        name: str | None = None,
    ) -> type:
        """Let values of ``cls`` travel as ``encode(obj)`` under ``name``; returns ``cls``.

        ``encode(obj)`` gives a value the serializers take (it may hold other registered
        values, codec values too); the receiver calls ``decode(that value)``, which must
        return an instance of ``cls``.  ``name`` defaults to ``module.QualName``.  A
        payload can reach only the codecs registered here, by name; an encoder or decoder
        that raises, or a decoder returning another type, gives a SerializationError that
        names the class.  Register the same codecs on both nodes, before first use.

        >>> from fractions import Fraction
        >>> reg = TypeRegistry()
        >>> reg.register_codec(Fraction, lambda f: (f.numerator, f.denominator),
        ...                    lambda pair: Fraction(*pair), "demo.Fraction") is Fraction
        True
        >>> s = MsgpackSerializer(reg)
        >>> s.deserialize(s.serialize({"share": Fraction(1, 3)}))
        {'share': Fraction(1, 3)}
        >>> JsonSerializer(reg).serialize(Fraction(1, 3))
        b'{"__t":"c","n":"demo.Fraction","v":{"__t":"t","v":[1,3]}}'

        TypeError for a ``cls`` that is not a class or already travels natively (int,
        datetime, ...), or an ``encode``/``decode`` that is not callable; ValueError when
        ``cls`` already travels (registered, with a codec, or already sent) or ``name`` is
        taken.
        """
        if not isinstance(cls, type):
            raise TypeError(f"register_codec takes a class, got {_show(cls)}")
        if cls in _NATIVE_TYPES:
            raise TypeError(f"{_type_name(cls)} travels natively; it cannot take a codec")
        for role, fn in (("encode", encode), ("decode", decode)):
            if not callable(fn):
                raise TypeError(f"the {role} function for {_type_name(cls)} must be callable, got {_show(fn)}")
        if name is None:
            name = _type_name(cls)
        if not isinstance(name, str) or not name:
            raise TypeError(f"a codec name must be a non-empty str, got {name!r}")
        if cls in self._codecs:
            raise ValueError(f"{cls!r} already has a codec, registered as {self._codecs[cls].name!r}")
        old = self._by_class.get(cls)
        if old is None and cls in self._class_plans:
            old = self._class_plans[cls].name
        if old is not None:
            raise ValueError(f"{cls!r} already travels as the dataclass/Enum {old!r}; it cannot take a codec")
        taken = self._taker(name)
        if taken is not None:
            raise ValueError(f"type name {name!r} is already taken by {taken!r}, cannot give it to {cls!r}")
        codec = Codec(cls, name, encode, decode)
        self._codecs[cls] = codec
        self._codecs_by_name[name] = codec
        return cls

    def allow_module(self, module_name: str) -> None:
        """Let dataclass/Enum classes defined in ``module_name`` travel unregistered.

        Decoding looks them up only if the module is already imported: it never imports.
        """
        if not isinstance(module_name, str) or not module_name:
            raise TypeError(f"a module name must be a non-empty str, got {module_name!r}")
        self._modules.add(module_name)

    def name_of(self, cls: type) -> str:
        """The name ``cls`` travels under; SerializationError when it may not travel."""
        plan = self._plan_for_class(cls)
        if plan is None:
            raise SerializationError(
                f"type {_type_name(cls)!r} is not registered and not from an allowed module"
            )
        return plan.name

    def resolve(self, name: str) -> type:
        """The class a payload's type ``name`` stands for; SerializationError if unknown."""
        return self._plan_for_name(name).cls

    def _plan_for_class(self, cls: type) -> Plan | None:
        plan = self._class_plans.get(cls)
        if plan is not None:
            return plan
        name = self._by_class.get(cls)
        if name is None:
            name = _type_name(cls)
            if cls.__module__ not in self._modules or cls in self._codecs or self._find(name) is not cls:
                return None  # e.g. a class defined in a function: it could not be found back
        plan = self._name_plans.get(name)
        if plan is None or plan.cls is not cls:
            plan = Plan(cls, name)
            self._name_plans[name] = plan
        self._class_plans[cls] = plan
        return plan

    def _plan_for_name(self, name: object) -> Plan:
        if type(name) is not str:
            raise SerializationError(f"a type name must be a str, got {_show(name)}")
        plan = self._name_plans.get(name)
        if plan is not None:
            return plan
        cls = self._by_name.get(name)
        if cls is None:
            cls = self._find(name)
            if cls is None or cls in self._codecs:
                raise SerializationError(
                    f"unknown type name {_show(name)}: not registered and not in an allowed module"
                )
        plan = self._class_plans.get(cls)
        if plan is None or plan.name != name:
            plan = Plan(cls, name)
        self._name_plans[name] = plan
        return plan

    def _find(self, name: str) -> type | None:
        """A dataclass/Enum class named ``module.QualName`` in an allowed, imported module.

        Only plain ``__dict__`` lookups: no import, no ``__getattr__``, no descriptor, and
        the class found must carry exactly that module and qualname.
        """
        for module_name in self._modules:
            if not name.startswith(f"{module_name}."):
                continue
            module = sys.modules.get(module_name)
            if module is None:
                continue
            qualname = name[len(module_name) + 1 :]
            first, *rest = qualname.split(".")
            obj = vars(module).get(first)
            for part in rest:  # into nested classes only, never into another module
                obj = vars(obj).get(part) if isinstance(obj, type) else None
            if (
                isinstance(obj, type)
                and _is_message_class(obj)
                and obj.__module__ == module_name
                and obj.__qualname__ == qualname
            ):
                return obj
        return None


# --- msgpack -------------------------------------------------------------------------------

class EncodeSpec(NamedTuple):
    """How :class:`MsgpackSerializer` packs the values of one class as an ext type."""

    #: the ext type code (``casty.wire``: EXT_DATACLASS, EXT_ENUM, ...)
    code: int
    #: the wire name of a dataclass or Enum class; "" for the others
    name: str
    #: a dataclass's field values, in order, as a tuple (``()`` for the others)
    get: Callable[[Any], tuple[Any, ...]]


_BUILTIN_SPECS: dict[type, EncodeSpec] = {
    tuple: EncodeSpec(EXT_TUPLE, "", _no_fields),
    set: EncodeSpec(EXT_SET, "", _no_fields),
    frozenset: EncodeSpec(EXT_FROZENSET, "", _no_fields),
    int: EncodeSpec(EXT_BIGINT, "", _no_fields),
    # aware: EXT_TIMESTAMP; naive: EXT_NAIVE_DATETIME (decided per value in _default)
    datetime.datetime: EncodeSpec(EXT_TIMESTAMP, "", _no_fields),
    datetime.date: EncodeSpec(EXT_DATE, "", _no_fields),
    decimal.Decimal: EncodeSpec(EXT_DECIMAL, "", _no_fields),
    uuid.UUID: EncodeSpec(EXT_UUID, "", _no_fields),
    LocalActorRef: EncodeSpec(EXT_REF, "", _no_fields),
    RemoteActorRef: EncodeSpec(EXT_REF, "", _no_fields),
}


class FastPath:
    """What a serializer shows the Cython fast paths: ``MsgpackSerializer.fast_path``.

    ``casty._fast.outbound`` packs a plain message (see ``casty.plain_codec``) straight
    after its envelope header, and ``casty._fast.inbound`` decodes one straight out of
    a frame, writing and reading exactly the bytes the serializer would; this object
    is all they read of it.  The dicts are the serializer's and registry's own, live:
    entries appear as classes are first used.

    ``specs``: class -> :class:`EncodeSpec`, for the classes packed so far.
    ``class_plans``: class -> :class:`Plan`, and ``plans``: wire name -> :class:`Plan`,
    the registry's plans for the classes that may travel.
    ``depth``: how deep the serializer is inside its own packing right now (it keeps
    this count here); a fast path packs a message itself only at 0, as ``serialize``
    does, so nested calls keep the nesting limits.
    """

    __slots__ = ("class_plans", "depth", "plans", "specs")

    def __init__(
        self,
        specs: dict[type, EncodeSpec],
        class_plans: dict[type, Plan],
        plans: dict[str, Plan],
    ) -> None:
        self.specs = specs
        self.class_plans = class_plans
        self.plans = plans
        self.depth = 0


#: msgpack's unpackers decode ext -1 (Timestamp) themselves: as an aware UTC datetime
_TIMESTAMP_AS_DATETIME: Final = 3

# ExtType's own __new__ re-checks its arguments in Python (about as slow as packing a
# small message); ours are right by construction, so build the namedtuple directly.
_new_ext: Final = tuple.__new__


def _encode_error(obj: Any, exc: Exception) -> SerializationError:
    """What either serializer raises when encoding ``obj`` failed inside msgpack or json."""
    return SerializationError(f"cannot serialize object of type {type_hint(obj)!r}: {exc}")


def _int_to_bytes(n: int) -> bytes:
    """The shortest big-endian two's complement of ``n`` (-2**8191 fits 1024 bytes)."""
    return n.to_bytes(((n if n >= 0 else ~n).bit_length() + 8) // 8, "big", signed=True)


class MsgpackSerializer:
    """The default serializer: msgpack, with ext types for what msgpack lacks.

    Tuples, sets, frozensets, ints beyond 64 bits, actor refs, dataclasses
    (``[name, *field values]``), Enum members (``[name, value]``), datetimes, dates,
    Decimals, UUIDs and codec values (``[name, encoded]``) are msgpack ext types (codes
    and layouts: ``casty.wire`` and ``docs/architecture.md``); an aware datetime is
    msgpack's standard Timestamp (ext -1).  ``bytes`` and ``str`` stay distinct.  An instance reuses its packers and
    decoding state between calls, so it belongs to one thread (the event loop); calls
    nested inside one another (a ``__post_init__`` that serializes) are fine.

    >>> s = MsgpackSerializer()
    >>> s.deserialize(s.serialize({1: frozenset({b"x"}), "n": (2**80, 1.5)}))
    {1: frozenset({b'x'}), 'n': (1208925819614629174706176, 1.5)}
    >>> s.serialize({(1, 2): "a tuple key"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    casty.errors.UnsafeKeyError: dict key of type 'builtins.tuple' ((1, 2)) is not hash-safe: ...
    """

    __slots__ = (
        "_decode_depth", "_fast", "_hook", "_name_plans", "_packers", "_ref_factory",
        "_registry", "_specs",
    )

    def __init__(self, registry: TypeRegistry | None = None) -> None:
        self._registry = registry if registry is not None else TypeRegistry()
        self._name_plans = self._registry._name_plans
        self._specs: dict[type, EncodeSpec] = dict(_BUILTIN_SPECS)
        # Also where the packing depth is kept (fast.depth), for the fast paths to see.
        self._fast = FastPath(self._specs, self._registry._class_plans, self._name_plans)
        # One packer per nesting level in use: an ext's body is packed while the packer
        # of the enclosing value is mid-way through its own buffer.
        self._packers: list[Packer] = [self._new_packer()]
        self._hook = self._ext_hook  # bound once, not per call
        self._decode_depth = 0
        self._ref_factory: RefFactory | None = None

    @property
    def registry(self) -> TypeRegistry:
        """The registry deciding which classes may travel."""
        return self._registry

    @property
    def fast_path(self) -> FastPath | None:
        """What the Cython fast paths may read (see :class:`FastPath`); None for a
        subclass, whose ``serialize``/``deserialize`` may not write what they would."""
        return self._fast if type(self) is MsgpackSerializer else None

    def _new_packer(self) -> Packer:
        # strict_types: tuples, subclasses of int/str (IntEnum) etc. must reach _default.
        return Packer(default=self._default, use_bin_type=True, strict_types=True, autoreset=True)

    def serialize(self, obj: Any) -> bytes:
        """Encode ``obj`` as msgpack; SerializationError names an unsupported type."""
        try:
            spec = self._specs.get(type(obj))
            fast = self._fast
            if spec is not None and spec[0] == EXT_DATACLASS and fast.depth == 0:
                # The usual message, a dataclass: the same bytes the packer would write for
                # its ext, without the packer calling back into _default for it.
                values = spec[2](obj)
                plain = encode_plain(spec[1], values)
                if plain is not None:
                    return plain
                fast.depth = 1  # as if inside the outer pack, so nesting limits match
                try:
                    body = self._pack([spec[1], *values])
                finally:
                    fast.depth = 0
                return ext_header(EXT_DATACLASS, len(body)) + body
            return self._pack(obj)
        except SerializationError:
            raise
        except Exception as exc:
            raise _encode_error(obj, exc) from exc

    def _pack(self, value: Any) -> bytes:
        fast = self._fast
        depth = fast.depth
        if depth > MAX_NESTING:
            raise SerializationError(f"value nested deeper than {MAX_NESTING} levels")
        if not keys_safe_within(value):  # what msgpack packs natively, it packs unchecked
            raise _unsafe_nested_key(value)
        packers = self._packers
        if depth == len(packers):
            packers.append(self._new_packer())
        fast.depth = depth + 1
        try:
            data: bytes = packers[depth].pack(value)
        finally:
            fast.depth = depth
        return data

    def _default(self, obj: Any) -> ExtType:
        spec = self._specs.get(type(obj))
        if spec is None:
            spec = self._spec_for(obj)
        code, name, get = spec
        if code == EXT_DATACLASS:
            data = self._pack([name, *get(obj)])
        elif code == EXT_ENUM:
            data = self._pack([name, obj.value])
        elif code == EXT_REF:
            data = obj.address.to_uri().encode()
        elif code == EXT_BIGINT:  # msgpack hands over only the ints it cannot hold
            data = _int_to_bytes(obj)
            if len(data) > MAX_INT_BYTES:
                raise _int_too_large(obj)
        elif code == EXT_TUPLE:
            data = self._pack(list(obj))
        elif code == EXT_CODEC:
            data = self._pack([name, _codec_encode(self._registry._codecs[type(obj)], obj)])
        elif code == EXT_TIMESTAMP:
            if obj.utcoffset() is None:
                code = EXT_NAIVE_DATETIME
                data = _timestamp_body(obj.replace(tzinfo=None) - _NAIVE_EPOCH)
            else:
                data = _timestamp_body(obj - _EPOCH)
        elif code == EXT_DATE:
            data = _date_body(obj)
        elif code == EXT_DECIMAL:
            data = _decimal_text(obj).encode("ascii")
        elif code == EXT_UUID:
            data = obj.bytes
        else:  # set, frozenset
            if not safe_members(obj):
                raise _unsafe_key(obj, "set member")
            data = self._pack(list(obj))
        return _new_ext(ExtType, (code, data))

    def _spec_for(self, obj: Any) -> EncodeSpec:
        cls = type(obj)
        codec = self._registry._codecs.get(cls)
        if codec is not None:
            spec = EncodeSpec(EXT_CODEC, codec.name, _no_fields)
        elif isinstance(obj, _TransportRef):
            spec = EncodeSpec(EXT_REF, "", _no_fields)
        else:
            plan = self._registry._plan_for_class(cls)
            if plan is None:
                raise _unsupported(obj)
            code = EXT_ENUM if plan.is_enum else EXT_DATACLASS
            spec = EncodeSpec(code, plan.name, plan.get)
        self._specs[cls] = spec
        return spec

    def deserialize(self, data: Payload, *, ref_factory: RefFactory | None = None) -> Any:
        """Decode msgpack ``data``; every failure is a SerializationError."""
        outer_factory = self._ref_factory
        self._ref_factory = ref_factory
        try:
            if type(data) is bytes:
                obj = decode_plain(data, self._name_plans, ref_factory)
                if obj is not None:
                    return obj
                body = dataclass_ext_body(data)
                if body is not None:  # the whole payload is one dataclass ext: skip unpackb
                    return self._ext_hook(EXT_DATACLASS, body)
            return unpackb(
                data, ext_hook=self._hook, object_pairs_hook=_dict_hook, raw=False,
                strict_map_key=False, timestamp=_TIMESTAMP_AS_DATETIME,
            )
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"cannot deserialize msgpack payload: {exc}") from exc
        finally:
            self._ref_factory = outer_factory

    def _unpack_deep(self, data: bytes) -> Any:
        """Unpack an ext body through a heap-allocated Unpacker (see _C_STACK_LEVELS)."""
        if not data:
            raise SerializationError("empty ext body")
        unpacker = Unpacker(
            None, ext_hook=self._hook, object_pairs_hook=_dict_hook, raw=False,
            strict_map_key=False, max_buffer_size=len(data), timestamp=_TIMESTAMP_AS_DATETIME,
        )
        unpacker.feed(data)
        value = unpacker.unpack()
        if unpacker.tell() != len(data):
            raise SerializationError("extra bytes after an ext body")
        return value

    def _ext_hook(self, code: int, data: bytes) -> Any:
        depth = self._decode_depth
        if depth >= MAX_NESTING:
            raise SerializationError(f"payload nested deeper than {MAX_NESTING} levels")
        self._decode_depth = depth + 1
        try:
            if EXT_DATACLASS <= code <= EXT_FROZENSET or code == EXT_CODEC:  # a msgpack body
                if depth < _C_STACK_LEVELS:
                    items = unpackb(
                        data, ext_hook=self._hook, object_pairs_hook=_dict_hook, raw=False,
                        strict_map_key=False, timestamp=_TIMESTAMP_AS_DATETIME,
                    )
                else:
                    items = self._unpack_deep(data)
                if type(items) is not list:
                    raise SerializationError(f"malformed msgpack ext {code}: body is not an array")
                if code == EXT_CODEC:
                    if len(items) != 2:
                        raise SerializationError(
                            f"malformed codec ext: [name, value] expected, got {len(items)} item(s)"
                        )
                    return _codec_decode(self._registry, items[0], items[1])
                if code == EXT_TUPLE:
                    return tuple(items)
                if code == EXT_SET or code == EXT_FROZENSET:
                    if not safe_members(items):  # checked before anything is hashed
                        raise _unsafe_key(items, "set member")
                    return set(items) if code == EXT_SET else frozenset(items)
                is_enum = code == EXT_ENUM
                plan = self._name_plans.get(items[0]) if items and type(items[0]) is str else None
                if plan is not None and plan.is_enum is is_enum and len(items) == plan.size:
                    try:  # the common case, inline; _build says what is wrong otherwise
                        return plan.build(*items[1:])
                    except Exception as exc:
                        raise _rebuild_error(plan, exc) from exc
                return _build(self._registry, items, dataclass=not is_enum)
            if code == EXT_REF:
                return _make_ref(data.decode("utf-8"), self._ref_factory)
            if code == EXT_BIGINT:
                if not data:
                    raise SerializationError("empty big int ext")
                if len(data) > MAX_INT_BYTES:
                    raise SerializationError(
                        f"big int ext of {len(data)} bytes is too large: ints travel up to "
                        f"{MAX_INT_BYTES} bytes"
                    )
                return int.from_bytes(data, "big", signed=True)
            if code == EXT_NAIVE_DATETIME:
                return _naive_from_body(data)
            if code == EXT_DATE:
                return _date_from_body(data)
            if code == EXT_DECIMAL:
                try:
                    text = data.decode("ascii")
                except UnicodeDecodeError:
                    raise SerializationError("malformed Decimal ext: not ASCII") from None
                return _decimal_from_text(text)
            if code == EXT_UUID:
                return _uuid_from_body(data)
            raise SerializationError(f"unknown msgpack ext type code {code}")
        finally:
            self._decode_depth = depth


def _dict_hook(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """msgpack's ``object_pairs_hook``: a map becomes a dict only if its keys are hash-safe."""
    result = dict_from_pairs(pairs)
    if result is None:
        raise _unsafe_key([pair[0] for pair in pairs], "dict key")
    return result


def _kind_mismatch(plan: Plan) -> SerializationError:
    kind, other = ("an Enum", "a dataclass") if plan.is_enum else ("a dataclass", "an Enum")
    return SerializationError(f"type {plan.name!r} is {kind}, but the payload sends {other}")


def _build(registry: TypeRegistry, items: list[Any], *, dataclass: bool) -> Any:
    """The object ``[name, *values]`` stands for; SerializationError saying what is wrong."""
    if not items:
        raise SerializationError("malformed dataclass/enum: empty, no type name")
    plan = registry._plan_for_name(items[0])
    if plan.is_enum == dataclass:
        raise _kind_mismatch(plan)
    if len(items) != plan.size:
        what = "enum" if plan.is_enum else "dataclass"
        raise SerializationError(
            f"{what} {plan.name!r} takes {plan.size - 1} value(s), payload has {len(items) - 1}"
        )
    try:
        return plan.build(*items[1:])
    except Exception as exc:
        raise _rebuild_error(plan, exc) from exc


def _rebuild_error(plan: Plan, exc: Exception) -> SerializationError:
    return SerializationError(f"cannot rebuild {plan.name!r} from payload: {exc}")


def _make_ref(uri: object, ref_factory: RefFactory | None) -> Any:
    if ref_factory is None:
        raise SerializationError(
            f"payload carries an actor ref ({_show(uri)}) but no ref_factory was given to "
            "rebuild it"
        )
    if type(uri) is not str:
        raise SerializationError(f"an actor ref must travel as a URI string, got {_show(uri)}")
    try:
        address = ActorAddress.from_uri(uri)
    except ValueError as exc:
        raise SerializationError(f"bad actor ref in payload: {exc}") from exc
    return ref_factory(address)


# --- JSON ----------------------------------------------------------------------------------

_TAG: Final = "__t"
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _reject_constant(name: str) -> Any:
    raise SerializationError(f"non-standard JSON constant {name}")


# A run of more digits than a JSON int may have: without one, no number needs _parse_int.
# Found by mapping every digit to "0" and anything else to "." (both at C speed).
_DIGITS_TO_ZERO: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E for b in range(256))
_LONG_DIGITS: Final = b"0" * (_JSON_INT_DIGITS + 1)


def _parse_int(text: str) -> int:
    # int() of n decimal digits takes O(n**2): bound n, since the encoder never writes more.
    digits = len(text) - (text[0] == "-")
    if digits > _JSON_INT_DIGITS:
        raise SerializationError(
            f"JSON number of {digits} digits is too long: integers up to {_JSON_INT_DIGITS} "
            "digits travel as numbers, larger ones as an 'i' tag"
        )
    return int(text)


class JsonSerializer:
    """The same value model as JSON text (UTF-8, compact separators).

    What JSON lacks travels as a tagged object ``{"__t": tag, ...}``: ``t`` tuple,
    ``s`` set, ``fs`` frozenset, ``b`` bytes (base64), ``i`` int beyond 64 bits (hex),
    ``f`` non-finite float, ``m`` dict whose keys are not all str or include ``"__t"``
    (pairs), ``dc`` dataclass (``n`` name, ``f`` field values), ``e`` Enum member
    (``n``, ``v`` value), ``r`` actor ref (``v`` URI), ``dt`` aware datetime (ISO 8601 in
    UTC, ``+00:00``), ``ndt`` naive datetime (ISO 8601, no offset), ``d`` date
    (``YYYY-MM-DD``), ``dec`` Decimal (``str(d)``), ``u`` UUID (``str(u)``), ``c`` codec
    value (``n`` name, ``v`` encoded value).  Each text must be exactly what that
    ``isoformat()``/``str()`` writes.  A user dict with a ``"__t"`` key
    always goes as ``m``, so no user dict can pass for a tag.

    >>> s = JsonSerializer()
    >>> s.serialize({"k": (1, b"\\x00"), "__t": None})
    b'{"__t":"m","v":[["k",{"__t":"t","v":[1,{"__t":"b","v":"AA=="}]}],["__t",null]]}'
    >>> s.deserialize(s.serialize({"k": (1, b"\\x00"), "__t": None}))
    {'k': (1, b'\\x00'), '__t': None}
    """

    __slots__ = ("_class_plans", "_dumps", "_registry")

    def __init__(self, registry: TypeRegistry | None = None) -> None:
        self._registry = registry if registry is not None else TypeRegistry()
        self._class_plans: dict[type, Plan] = {}
        self._dumps = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
        ).encode

    @property
    def registry(self) -> TypeRegistry:
        """The registry deciding which classes may travel."""
        return self._registry

    def serialize(self, obj: Any) -> bytes:
        """Encode ``obj`` as UTF-8 JSON; SerializationError names an unsupported type."""
        try:
            return self._dumps(self._encode(obj)).encode("utf-8")
        except SerializationError:
            raise
        except Exception as exc:
            raise _encode_error(obj, exc) from exc

    def _encode(self, obj: Any) -> Any:
        cls = type(obj)
        if cls is str or cls is bool or obj is None:
            return obj
        if cls is int:
            if _INT_MIN <= obj < _INT_END:
                return obj
            if not _BIG_INT_MIN <= obj < _BIG_INT_END:
                raise _int_too_large(obj)
            return {_TAG: "i", "v": hex(obj)}
        if cls is float:
            return obj if math.isfinite(obj) else {_TAG: "f", "v": repr(obj)}
        enc = self._encode
        if cls is list:
            return [enc(x) for x in obj]
        if cls is dict:
            if _TAG not in obj and all(type(k) is str for k in obj):
                return {k: enc(v) for k, v in obj.items()}
            if not safe_members(obj):
                raise _unsafe_key(obj, "dict key")
            return {_TAG: "m", "v": [[enc(k), enc(v)] for k, v in obj.items()]}
        if cls is tuple:
            return {_TAG: "t", "v": [enc(x) for x in obj]}
        if cls is set or cls is frozenset:
            if not safe_members(obj):
                raise _unsafe_key(obj, "set member")
            return {_TAG: "s" if cls is set else "fs", "v": [enc(x) for x in obj]}
        if cls is bytes or cls is bytearray or cls is memoryview:
            return {_TAG: "b", "v": base64.b64encode(obj).decode("ascii")}
        if cls is datetime.datetime:
            if obj.utcoffset() is None:
                return {_TAG: "ndt", "v": obj.replace(tzinfo=None).isoformat()}
            return {_TAG: "dt", "v": obj.astimezone(_UTC).isoformat()}
        if cls is datetime.date:
            return {_TAG: "d", "v": obj.isoformat()}
        if cls is decimal.Decimal:
            return {_TAG: "dec", "v": _decimal_text(obj)}
        if cls is uuid.UUID:
            return {_TAG: "u", "v": str(obj)}
        if isinstance(obj, _TransportRef):
            return {_TAG: "r", "v": obj.address.to_uri()}
        codec = self._registry._codecs.get(cls)
        if codec is not None:
            return {_TAG: "c", "n": codec.name, "v": enc(_codec_encode(codec, obj))}
        plan = self._class_plans.get(cls)
        if plan is None:
            plan = self._registry._plan_for_class(cls)
            if plan is None:
                raise _unsupported(obj)
            self._class_plans[cls] = plan
        if plan.is_enum:
            return {_TAG: "e", "n": plan.name, "v": enc(obj.value)}
        return {_TAG: "dc", "n": plan.name, "f": [enc(x) for x in plan.get(obj)]}

    def deserialize(self, data: Payload, *, ref_factory: RefFactory | None = None) -> Any:
        """Decode UTF-8 JSON ``data``; every failure is a SerializationError."""
        try:
            raw = data if type(data) is bytes else bytes(data)
            text = str(raw, "utf-8")
            # The hook costs a Python call per int: only when a number may be too long.
            long_run = _LONG_DIGITS in raw.translate(_DIGITS_TO_ZERO)
            return json.loads(
                text, object_hook=self._object_hook(ref_factory), parse_constant=_reject_constant,
                parse_int=_parse_int if long_run else None,
            )
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"cannot deserialize JSON payload: {exc}") from exc

    def _object_hook(self, ref_factory: RefFactory | None) -> Callable[[dict[str, Any]], Any]:
        registry = self._registry

        # json calls this innermost object first, so a tag's contents are already decoded.
        def hook(obj: dict[str, Any]) -> Any:
            if _TAG not in obj:
                return obj
            tag = obj[_TAG]
            if tag == "dc" or tag == "e":
                if tag == "e":
                    _check_keys(obj, ("n", "v"))
                    return _build(registry, [obj["n"], obj["v"]], dataclass=False)
                _check_keys(obj, ("n", "f"))
                return _build(registry, [obj["n"], *_list(obj["f"], tag)], dataclass=True)
            if tag == "c":
                _check_keys(obj, ("n", "v"))
                return _codec_decode(registry, obj["n"], obj["v"])
            _check_keys(obj, ("v",))
            value = obj["v"]
            if tag == "t":
                return tuple(_list(value, tag))
            if tag == "s" or tag == "fs":
                if not safe_members(_list(value, tag)):  # checked before anything is hashed
                    raise _unsafe_key(value, "set member")
                return set(value) if tag == "s" else frozenset(value)
            if tag == "b":
                return base64.b64decode(_str(value, tag), validate=True)
            if tag == "m":
                pairs = _list(value, tag)
                for pair in pairs:
                    if type(pair) is not list or len(pair) != 2:
                        raise SerializationError("malformed 'm' tag: pairs must be [key, value]")
                keys = [pair[0] for pair in pairs]
                if not safe_members(keys):
                    raise _unsafe_key(keys, "dict key")
                return {key: pair[1] for key, pair in zip(keys, pairs, strict=True)}
            if tag == "r":
                return _make_ref(value, ref_factory)
            if tag == "i":
                n = int(_str(value, tag), 16)  # linear: a power-of-two base
                if not _BIG_INT_MIN <= n < _BIG_INT_END:
                    raise _int_too_large(n)
                return n
            if tag == "f":
                f = _NON_FINITE.get(_str(value, tag))
                if f is None:
                    raise SerializationError(f"'f' tag holds {_show(value)}, not nan/inf/-inf")
                return f
            if tag == "dt" or tag == "ndt":
                return _from_iso(value, tag, aware=tag == "dt")
            if tag == "d":
                return _date_from_iso(value)
            if tag == "dec":
                return _decimal_from_text(value)
            if tag == "u":
                return _uuid_from_text(value)
            raise SerializationError(f"unknown JSON tag {_show(tag)}")

        return hook


def _check_keys(obj: dict[str, Any], keys: tuple[str, ...]) -> None:
    if len(obj) != len(keys) + 1 or not all(k in obj for k in keys):
        raise SerializationError(
            f"malformed {_show(obj[_TAG])} tag: keys {_show(sorted(obj))}, expected "
            f"{sorted((_TAG, *keys))!r}"
        )


def _list(value: object, tag: str) -> list[Any]:
    if type(value) is not list:
        raise SerializationError(f"malformed {tag!r} tag: expected an array, got {_show(value)}")
    return value


def _str(value: object, tag: str) -> str:
    if type(value) is not str:
        raise SerializationError(f"malformed {tag!r} tag: expected a string, got {_show(value)}")
    return value
