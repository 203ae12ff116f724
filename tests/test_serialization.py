"""MsgpackSerializer and JsonSerializer: round trips, TypeRegistry, refusal of hostile payloads."""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import math
import sys
from collections import OrderedDict
from dataclasses import InitVar, dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casty import serialization
from casty.address import ActorAddress
from casty.ref import LocalActorRef, RemoteActorRef, _TransportRef
from casty.serialization import (
    MAX_INT_BYTES,
    MAX_NESTING,
    JsonSerializer,
    MsgpackSerializer,
    SerializationError,
    Serializer,
    TypeRegistry,
    UnsafeKeyError,
    type_hint,
)
from casty.transport.messages import SendToNode  # a dataclass from another module

MOD = __name__  # "tests.test_serialization" or "test_serialization", per rootdir

# --- message types ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ping:
    seq: int
    text: str = ""


@dataclass
class Mutable:
    items: list[Any]
    meta: dict[Any, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Nested:
    ping: Ping
    pair: tuple[int, str]
    children: tuple[Nested, ...] = ()
    color: Color | None = None


@dataclass(frozen=True, slots=True)
class Slotted:
    a: int
    b: bytes


@dataclass(frozen=True)
class Empty:
    pass


@dataclass(frozen=True, kw_only=True)
class KwOnly:
    a: int
    b: str = "x"


@dataclass
class Derived:
    base: int
    double: int = field(init=False)

    def __post_init__(self) -> None:
        self.double = self.base * 2


@dataclass
class WithInitVar:
    value: int
    scale: InitVar[int] = 1

    def __post_init__(self, scale: int) -> None:
        self.value *= scale


@dataclass(init=False)
class HandInit:
    a: int
    b: int

    def __init__(self, total: int) -> None:
        self.a, self.b = total, 0


@dataclass(frozen=True)
class Positive:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")


@dataclass(frozen=True)
class Box:
    """Holds any value, for the recursive strategy."""

    value: Any


@dataclass(frozen=True)
class WithRef:
    text: str
    reply_to: Any


class Color(enum.Enum):
    RED = "red"
    GREEN = (0, 255, 0)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


class Mood(enum.StrEnum):
    HAPPY = "happy"


class Bits(enum.Flag, boundary=enum.KEEP):
    """Any int is a member; those with only unknown bits are nameless, and hash alike."""

    A = 1


class Mask(enum.IntFlag):
    A = 1


REGISTERED = (
    Ping, Mutable, Nested, Slotted, Empty, KwOnly, Derived, WithInitVar, HandInit, Positive,
    Box, WithRef, Color, Level, Perm, Mood, Bits, Mask,
)

# Not registered: only travel through allow_module, or not at all.


@dataclass(frozen=True)
class Unregistered:
    x: int


@dataclass(frozen=True)
class AllowedOnly:
    x: int


class Outer:
    @dataclass(frozen=True)
    class Inner:
        y: str


class NotADataclass:
    calls: list[Any] = []

    def __init__(self, *args: Any) -> None:
        NotADataclass.calls.append(args)


CALLS: list[Any] = []


def record_call(*args: Any) -> None:
    CALLS.append(args)


def _local_dataclass() -> Any:
    @dataclass(frozen=True)
    class Local:
        x: int

    return Local


# --- fixtures and helpers -----------------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.delivered: list[tuple[ActorAddress, Any]] = []

    def deliver(self, address: ActorAddress, msg: Any) -> None:
        self.delivered.append((address, msg))


def make_registry() -> TypeRegistry:
    reg = TypeRegistry()
    for cls in REGISTERED:
        reg.register(cls)
    return reg


KINDS = ["msgpack", "json"]


def make(kind: str, registry: TypeRegistry | None = None) -> Serializer:
    reg = registry if registry is not None else make_registry()
    return MsgpackSerializer(reg) if kind == "msgpack" else JsonSerializer(reg)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ser(kind: str) -> Serializer:
    return make(kind)


def typed(x: Any) -> Any:
    """A hashable picture of ``x`` that also tells 1, 1.0, True and (1,) vs [1] apart."""
    t = type(x)
    if t is list or t is tuple:
        return (t, tuple(typed(i) for i in x))
    if t is set or t is frozenset:
        return (t, frozenset(typed(i) for i in x))
    if t is dict:
        return (t, frozenset((typed(k), typed(v)) for k, v in x.items()))
    if isinstance(x, enum.Enum):
        return (t, x.value)
    if isinstance(x, _TransportRef):
        return (t, x.address)
    if dataclasses.is_dataclass(x):
        return (t, tuple(typed(getattr(x, f.name)) for f in dataclasses.fields(x)))
    return (t, x)


def round_trip(ser: Serializer, value: Any, **kw: Any) -> Any:
    data = ser.serialize(value)
    assert type(data) is bytes
    return ser.deserialize(data, **kw)


def assert_round_trip(ser: Serializer, value: Any, **kw: Any) -> None:
    out = round_trip(ser, value, **kw)
    assert out == value
    assert typed(out) == typed(value)


def hostile_object(kind: str, name: Any, values: list[Any], *, enum_: bool = False) -> bytes:
    """A payload asking for the type ``name`` built from ``values``, hand-made."""
    if kind == "msgpack":
        body = msgpack.packb([name, *values])
        return msgpack.packb(msgpack.ExtType(2 if enum_ else 1, body))
    if enum_:
        return json.dumps({"__t": "e", "n": name, "v": values[0]}).encode()
    return json.dumps({"__t": "dc", "n": name, "f": values}).encode()


# --- round trips --------------------------------------------------------------------------

SCALARS = [
    None, True, False, 0, 1, -1, 2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1,
    2**200, -(2**200) + 3, 1.5, -0.0, 1e308, math.inf, -math.inf, "", "héllo ✓ \x00",
    b"", b"\x00\xff" * 3,
]

CONTAINERS = [
    [], [1, [2, [3]]], (), (1,), (1, (2, (3, "x"))), [(1, 2), [1, 2]], ([],),
    {}, {"a": 1, "b": [1.5, None]}, {3: "int", None: 0, b"k": 1.0, "t": (1, 2)},
    {True: False, -1: {"x"}, -2: (), 2**60 - 1: 2.5, -(2**60) + 1: "s", "s": b"b"},
    {"__t": "dc", "n": "os.system", "f": ["echo pwned"]},  # a user dict that looks like a tag
    {"__t": 1}, {"v": {"__t": "t", "v": []}},
    set(), {1, 2, 3}, {"a", -1, -2, b"c", None}, frozenset(), frozenset({2**60 - 1, "a"}),
    [set(), frozenset(), (), [], {}],
]

MESSAGES = [
    Ping(1, "x"), Ping(-5), Mutable([1, (2, 3), {4}], {1: [b"z"]}), Slotted(1, b"\x00"),
    Empty(), KwOnly(a=3, b="y"), Derived(21), WithInitVar(5, 3), Positive(0),
    Nested(Ping(1), (2, "two"), (Nested(Ping(3), (4, "four"), color=Color.GREEN),), Color.RED),
    Color.RED, Color.GREEN, Level.HIGH, Perm.R | Perm.W, Perm.X, Mood.HAPPY,
    [Level.LOW, Ping(2)], {Color.RED: Level.LOW, Level.HIGH: Empty(), Mood.HAPPY: 1, Perm.R | Perm.W: 2},
    frozenset({Level.LOW, Color.RED, Perm.X}),
    ActorAddress("sys", "/user/a", "10.0.0.1", 25520), Box(Box(Box((1, [2], {3: {4}})))),
]


@pytest.mark.parametrize("value", SCALARS + CONTAINERS + MESSAGES, ids=repr)
def test_round_trip_gives_equal_value_of_the_same_types(ser: Serializer, value: Any) -> None:
    assert_round_trip(ser, value)


def test_tuples_and_lists_stay_apart(ser: Serializer) -> None:
    out = round_trip(ser, {"t": (1, [2, (3,)]), "l": [1, (2, [3])]})
    assert type(out["t"]) is tuple and type(out["t"][1]) is list and type(out["t"][1][1]) is tuple
    assert type(out["l"]) is list and type(out["l"][1]) is tuple and type(out["l"][1][1]) is list


def test_bytes_and_str_stay_apart(ser: Serializer) -> None:
    out = round_trip(ser, ["ab", b"ab", {"k": b"v", b"k": "v"}])
    assert out == ["ab", b"ab", {"k": b"v", b"k": "v"}]
    assert [type(x) for x in out[:2]] == [str, bytes]


def test_bytearray_and_memoryview_travel_as_bytes(ser: Serializer) -> None:
    assert round_trip(ser, [bytearray(b"ab"), memoryview(b"cd")]) == [b"ab", b"cd"]


def test_enum_members_come_back_identical(ser: Serializer) -> None:
    out = round_trip(ser, [Color.GREEN, Level.HIGH, Mood.HAPPY, Perm.R | Perm.X])
    assert out[0] is Color.GREEN and out[1] is Level.HIGH and out[2] is Mood.HAPPY
    assert out[3] == Perm.R | Perm.X and type(out[3]) is Perm


def test_dataclass_with_hand_written_init_is_restored_field_by_field(ser: Serializer) -> None:
    obj = HandInit(7)
    obj.b = 3
    out = round_trip(ser, obj)
    assert (type(out), out.a, out.b) == (HandInit, 7, 3)


def test_init_false_field_keeps_its_sent_value(ser: Serializer) -> None:
    obj = Derived(2)
    obj.double = 99
    out = round_trip(ser, obj)
    assert (out.base, out.double) == (2, 99)


def test_deserialize_accepts_bytearray_and_memoryview(ser: Serializer) -> None:
    data = ser.serialize(Ping(3, "m"))
    assert ser.deserialize(bytearray(data)) == Ping(3, "m")
    assert ser.deserialize(memoryview(b"xx" + data)[2:]) == Ping(3, "m")


def test_serializers_satisfy_the_protocol(ser: Serializer) -> None:
    assert isinstance(ser, Serializer)
    assert not isinstance(object(), Serializer)


def test_type_hint_is_the_fully_qualified_type_name() -> None:
    assert type_hint(7) == "builtins.int"
    assert type_hint(Ping(1)) == f"{MOD}.Ping"
    assert type_hint(Outer.Inner("a")) == f"{MOD}.Outer.Inner"


def test_wire_format_is_stable() -> None:
    reg = TypeRegistry()
    reg.register(Ping, "t.Ping")
    msg = MsgpackSerializer(reg).serialize(Ping(7, "hi"))
    assert msg == bytes.fromhex("c70c01") + msgpack.packb(["t.Ping", 7, "hi"])
    assert JsonSerializer(reg).serialize(Ping(7, "hi")) == b'{"__t":"dc","n":"t.Ping","f":[7,"hi"]}'
    big = b"\xc7\x09\x07" + b"\x01" + b"\x00" * 8  # ext 7: 2**64, big-endian signed
    assert MsgpackSerializer(reg).serialize((1, 2**64)) == b"\xc7\x0e\x03\x92\x01" + big


# --- actor refs ---------------------------------------------------------------------------


def test_refs_travel_as_uri_and_are_rebuilt_through_the_factory(ser: Serializer) -> None:
    sender_side = FakeTransport()
    receiver_side = FakeTransport()
    address = ActorAddress("sys", "/user/a", "10.0.0.2", 25520)
    ref = RemoteActorRef(address, sender_side)
    seen: list[ActorAddress] = []

    def factory(addr: ActorAddress) -> RemoteActorRef[Any]:
        seen.append(addr)
        return RemoteActorRef(addr, receiver_side)

    out = round_trip(ser, WithRef("hi", ref), ref_factory=factory)
    assert seen == [address]
    assert out.reply_to.address == address and out == WithRef("hi", ref)
    out.reply_to.tell("pong")
    assert receiver_side.delivered == [(address, "pong")]
    assert sender_side.delivered == []


def test_local_refs_travel_too(ser: Serializer) -> None:
    transport = FakeTransport()
    ref = LocalActorRef(ActorAddress("sys", "/user/b"), transport)
    out = round_trip(ser, [ref, (ref,)], ref_factory=lambda a: LocalActorRef(a, transport))
    assert out == [ref, (ref,)] and out[0].address == ActorAddress("sys", "/user/b")


def test_ref_without_factory_is_refused_saying_so(ser: Serializer) -> None:
    data = ser.serialize(WithRef("x", RemoteActorRef(ActorAddress("s", "/a"), FakeTransport())))
    with pytest.raises(SerializationError, match="ref_factory"):
        ser.deserialize(data)


def test_bad_ref_uri_is_refused(kind: str, ser: Serializer) -> None:
    data = (
        msgpack.packb(msgpack.ExtType(6, b"http://evil/"))
        if kind == "msgpack"
        else b'{"__t":"r","v":"http://evil/"}'
    )
    with pytest.raises(SerializationError, match="actor ref"):
        ser.deserialize(data, ref_factory=lambda a: RemoteActorRef(a, FakeTransport()))


# --- refusal on encode --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (Unregistered(1), f"{MOD}.Unregistered"),
        ([1, {"k": (Unregistered(2),)}], f"{MOD}.Unregistered"),
        (Ping(1, Unregistered(3)), f"{MOD}.Unregistered"),  # type: ignore[arg-type]
        (NotADataclass, "builtins.type"),
        (record_call, "builtins.function"),
        (object(), "builtins.object"),
        (OrderedDict(a=1), "collections.OrderedDict"),
        (complex(1, 2), "builtins.complex"),
        (AllowedOnly(1), f"{MOD}.AllowedOnly"),
        (Outer.Inner("x"), f"{MOD}.Outer.Inner"),
        (SendToNode("h", 1, b""), "casty.transport.messages.SendToNode"),
    ],
    ids=repr,
)
def test_unsupported_values_are_refused_naming_their_type(
    ser: Serializer, value: Any, name: str
) -> None:
    with pytest.raises(SerializationError) as info:
        ser.serialize(value)
    text = str(info.value)
    # A dataclass or Enum is registered; any other class takes a codec.
    cls = next(type(v) for v in _leaves(value) if type_hint(v) == name)
    short = cls.__qualname__
    how = (f'registry.register({short}, "<name>")' if dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum)
           else f"registry.register_codec({short}, encode, decode)")
    assert text == (
        f"cannot serialize object of type {name!r}: not registered and not a supported type; "
        f"register it in the TypeRegistry of both nodes ({how}), in a module both import"
    )


def _leaves(value: Any) -> list[Any]:
    """``value`` and what it holds, through lists, dicts, tuples and dataclass fields."""
    out, stack = [], [value]
    while stack:
        v = stack.pop()
        out.append(v)
        if type(v) in (list, tuple):
            stack.extend(v)
        elif type(v) is dict:
            stack.extend(v.values())
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            stack.extend(getattr(v, f.name) for f in dataclasses.fields(v))
    return out


def test_a_class_of_main_is_refused_with_where_to_move_it(ser: Serializer) -> None:
    cls = type("Job", (), {"__module__": "__main__"})
    with pytest.raises(SerializationError, match=r"defined in __main__, which is another module on the "
                                                 r"other node: move it"):
        ser.serialize(cls())


def test_subclasses_of_builtins_are_not_silently_flattened(ser: Serializer) -> None:
    class MyStr(str):
        pass

    class MyInt(int):
        pass

    for value in (MyStr("a"), MyInt(3), [MyInt(2**70)]):
        with pytest.raises(SerializationError, match=r"MyStr|MyInt"):
            ser.serialize(value)


def test_unregistered_enum_is_refused(ser: Serializer) -> None:
    class Loose(enum.IntEnum):
        A = 1

    with pytest.raises(SerializationError, match="Loose"):
        ser.serialize(Loose.A)


def test_serializer_works_after_a_failed_encode(ser: Serializer) -> None:
    for _ in range(3):
        with pytest.raises(SerializationError):
            ser.serialize([Ping(1), (Box(Unregistered(1)),)])
        assert_round_trip(ser, [Ping(1), (Box((1,)),)])


def test_cycles_are_refused(ser: Serializer) -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(SerializationError):
        ser.serialize(loop)
    assert_round_trip(ser, [1, [2]])


def test_registry_added_after_a_refusal_is_honoured(kind: str) -> None:
    reg = TypeRegistry()
    s = make(kind, reg)
    with pytest.raises(SerializationError):
        s.serialize(Unregistered(1))
    reg.register(Unregistered)
    assert round_trip(s, Unregistered(1)) == Unregistered(1)


# --- refusal on decode --------------------------------------------------------------------

HOSTILE_NAMES = [
    ("os.system", ["echo pwned"]),
    ("subprocess.Popen", [["echo", "pwned"]]),
    ("builtins.eval", ["1+1"]),
    (f"{MOD}.Unregistered", [1]),  # a real dataclass, module not allowed
    (f"{MOD}.record_call", [1]),
    ("casty.transport.messages.SendToNode", ["h", 1, ""]),
    ("", []),
    ("Ping", [1, ""]),
]


@pytest.mark.parametrize(("name", "values"), HOSTILE_NAMES, ids=repr)
@pytest.mark.parametrize("as_enum", [False, True], ids=["dataclass", "enum"])
def test_unknown_type_names_are_refused_and_nothing_is_called(
    kind: str, ser: Serializer, name: str, values: list[Any], as_enum: bool
) -> None:
    payload = hostile_object(kind, name, values or [0], enum_=as_enum)
    with pytest.raises(SerializationError, match="unknown type name"):
        ser.deserialize(payload)
    assert CALLS == []


@pytest.mark.parametrize("module", ["imaplib", "tabnanny", "casty_no_such_module_9f3"])
def test_decoding_never_imports_a_module(kind: str, module: str) -> None:
    if module in sys.modules:
        pytest.skip(f"{module} was imported by something else")
    reg = make_registry()
    reg.allow_module(module)  # even an allowed module is looked up, never imported
    s = make(kind, reg)
    for name in (f"{module}.IMAP4", f"{module}.NannyNag", f"{module}.Foo"):
        with pytest.raises(SerializationError, match="unknown type name"):
            s.deserialize(hostile_object(kind, name, ["localhost"]))
    assert module not in sys.modules


def test_non_str_type_names_are_refused(kind: str, ser: Serializer) -> None:
    for name in (None, 7, ["os.system"], {"n": f"{MOD}.Ping"}):
        with pytest.raises(SerializationError):
            ser.deserialize(hostile_object(kind, name, [1, ""]))


@pytest.mark.parametrize(
    "values", [[], [1], [1, "a", "extra"], [1, "a", "b", "c", "d"]], ids=repr
)
def test_dataclass_with_wrong_field_count_is_refused(
    kind: str, ser: Serializer, values: list[Any]
) -> None:
    with pytest.raises(SerializationError, match=r"Ping'? .*2 value|fields"):
        ser.deserialize(hostile_object(kind, f"{MOD}.Ping", values))


def test_dataclass_rejecting_its_values_gives_serialization_error(
    kind: str, ser: Serializer
) -> None:
    with pytest.raises(SerializationError, match=r"Positive.*n must be >= 0"):
        ser.deserialize(hostile_object(kind, f"{MOD}.Positive", [-1]))
    with pytest.raises(SerializationError, match="KwOnly"):
        ser.deserialize(hostile_object(kind, f"{MOD}.KwOnly", ["a"]))


def test_enum_payload_errors(kind: str, ser: Serializer) -> None:
    with pytest.raises(SerializationError, match="Color"):
        ser.deserialize(hostile_object(kind, f"{MOD}.Color", ["blue"], enum_=True))
    with pytest.raises(SerializationError, match="Enum"):  # an Enum sent as a dataclass
        ser.deserialize(hostile_object(kind, f"{MOD}.Color", ["red"]))
    with pytest.raises(SerializationError, match="dataclass"):  # and the other way round
        ser.deserialize(hostile_object(kind, f"{MOD}.Ping", [1], enum_=True))


MALFORMED_MSGPACK = [
    b"",
    b"\xc1",  # never used
    b"\x92\x01",  # truncated array
    b"\x01\x02",  # extra data
    b"\xa3ab",  # truncated str
    b"\xa2\xff\xfe",  # invalid UTF-8
    b"\x81\x91\x01\x02",  # map with an array (unhashable) key
    msgpack.packb(msgpack.ExtType(99, b"")),  # unknown ext code
    msgpack.packb(msgpack.ExtType(0, b"\x90")),
    b"\xd4\xfb\x90",  # negative (reserved) ext code
    msgpack.packb(msgpack.ExtType(3, b"\x01")),  # tuple ext whose body is not an array
    msgpack.packb(msgpack.ExtType(3, b"\x92\x01")),  # truncated body
    msgpack.packb(msgpack.ExtType(3, b"\x90\x90")),  # body with extra bytes
    msgpack.packb(msgpack.ExtType(4, msgpack.packb([[1]]))),  # unhashable set member
    msgpack.packb(msgpack.ExtType(5, msgpack.packb([{}]))),
    msgpack.packb(msgpack.ExtType(1, b"")),  # dataclass ext with an empty body
    msgpack.packb(msgpack.ExtType(1, b"\x90")),  # ... with no name
    msgpack.packb(msgpack.ExtType(1, msgpack.packb({"n": "x"}))),
    msgpack.packb(msgpack.ExtType(2, b"\x91\xa1x")),
    msgpack.packb(msgpack.ExtType(7, b"")),  # empty big int
    msgpack.packb(msgpack.ExtType(6, b"\xff")),  # ref URI not UTF-8
    msgpack.packb(msgpack.ExtType(6, b"casty://s@h:99999/a")),  # port out of range
    b"\xdd\xff\xff\xff\xff",  # array claiming 4G items
    b"\xc6\xff\xff\xff\xff",  # bin claiming 4 GiB
]

MALFORMED_JSON = [
    b"", b"{", b"[1,", b"\xff\xfe", b"NaN", b"[Infinity]", b"1 2", b'"\\ud800"x',
    b'{"__t":"zz","v":1}', b'{"__t":null,"v":1}', b'{"__t":["t"],"v":[]}',
    b'{"__t":"t"}', b'{"__t":"t","v":1}', b'{"__t":"t","v":[],"x":1}',
    b'{"__t":"s","v":[[1]]}', b'{"__t":"fs","v":[{}]}', b'{"__t":"b","v":"***"}',
    b'{"__t":"b","v":5}', b'{"__t":"m","v":[[1]]}', b'{"__t":"m","v":[[[1],2]]}',
    b'{"__t":"m","v":{"a":1}}', b'{"__t":"i","v":"zz"}', b'{"__t":"i","v":12}',
    b'{"__t":"f","v":"1.5"}', b'{"__t":"r","v":7}', b'{"__t":"dc","n":"x"}',
    b'{"__t":"dc","n":f"{MOD}.Ping","f":{"seq":1}}',
    b'{"__t":"e","n":f"{MOD}.Color"}',
    b"1" * 5000,  # an int beyond Python's digit limit
]


def test_malformed_msgpack_payloads_raise_serialization_error() -> None:
    s = make("msgpack")
    for data in MALFORMED_MSGPACK:
        with pytest.raises(SerializationError):
            s.deserialize(data, ref_factory=lambda a: RemoteActorRef(a, FakeTransport()))
    assert_round_trip(s, (Ping(1), {2}))  # still works afterwards


def test_malformed_json_payloads_raise_serialization_error() -> None:
    s = make("json")
    for data in MALFORMED_JSON:
        with pytest.raises(SerializationError):
            s.deserialize(data, ref_factory=lambda a: RemoteActorRef(a, FakeTransport()))


def test_wrong_argument_types_raise_serialization_error(ser: Serializer) -> None:
    for data in ("not bytes", None, 5, [1]):
        with pytest.raises(SerializationError):
            ser.deserialize(data)  # type: ignore[arg-type]


# --- hash-safe keys and bounded ints: decoding stays linear in the payload ----------------

# hash(n) == n % (2**61 - 1) for ints: these all hash to 0, and a set of them takes O(n**2).
COLLIDING_INTS = [k * (2**61 - 1) for k in range(1, 9)]  # within msgpack's native uint64
# hash(x) == hash(x * 2**61) for floats, and a float equal to an int hashes like it.
COLLIDING_FLOATS = [2.0 ** (61 * k) for k in range(5)]
SAFE_KEYS = [
    None, True, False, "", "k", b"", b"k", 0, 2**60 - 1, -(2**60) + 1, -1, -2,
    Color.RED, Level.HIGH, Mood.HAPPY, Perm.R | Perm.W, Mask.A,
]
UNSAFE_KEYS = [
    2**60, -(2**60), 2**64 - 1, 2**80, 1.5, 0.0, math.inf, (1,), (), frozenset(), frozenset({1}),
    Ping(1), Empty(), ActorAddress("s", "/a"), Bits(2), Mask(2**60),
]


def packed_set(items: list[Any], code: int = 4) -> bytes:
    """A msgpack set (ext 4) or frozenset (ext 5) of ``items``, made by hand."""
    return msgpack.packb(msgpack.ExtType(code, msgpack.packb(items)))


def test_colliding_ints_really_collide() -> None:
    assert len({hash(n) for n in COLLIDING_INTS}) == 1
    assert len({hash(x) for x in COLLIDING_FLOATS}) == 1
    assert hash(-1) == hash(-2)  # the one pair inside the safe range: harmless


@pytest.mark.parametrize("code", [4, 5])
def test_msgpack_colliding_set_members_are_refused(code: int) -> None:
    s = make("msgpack")
    for items in (COLLIDING_INTS, COLLIDING_FLOATS):
        with pytest.raises(UnsafeKeyError, match=r"set member of type 'builtins\.(int|float)'"):
            s.deserialize(packed_set(items, code))


def test_msgpack_colliding_dict_keys_are_refused() -> None:
    s = make("msgpack")
    for keys in (COLLIDING_INTS, COLLIDING_FLOATS):
        data = msgpack.packb(dict.fromkeys(keys, 1))
        with pytest.raises(UnsafeKeyError, match="dict key of type"):
            s.deserialize(data)
        nested = msgpack.packb(msgpack.ExtType(3, msgpack.packb([[{"ok": dict.fromkeys(keys)}]])))
        with pytest.raises(UnsafeKeyError, match="dict key"):
            s.deserialize(nested)  # inside a tuple, a list and a dict: the hook sees every map


def test_json_colliding_set_members_and_dict_keys_are_refused() -> None:
    s = make("json")
    for tag in ("s", "fs"):
        with pytest.raises(UnsafeKeyError, match=r"set member of type 'builtins\.int'"):
            s.deserialize(json.dumps({"__t": tag, "v": COLLIDING_INTS}).encode())
    pairs = [[k, 1] for k in COLLIDING_INTS]
    with pytest.raises(UnsafeKeyError, match=r"dict key of type 'builtins\.int'"):
        s.deserialize(json.dumps({"__t": "m", "v": pairs}).encode())
    with pytest.raises(UnsafeKeyError, match=r"dict key of type 'builtins\.float'"):
        s.deserialize(json.dumps({"__t": "m", "v": [[x, 1] for x in COLLIDING_FLOATS]}).encode())


@pytest.mark.parametrize("key", SAFE_KEYS, ids=repr)
def test_safe_keys_and_members_travel(ser: Serializer, key: Any) -> None:
    assert_round_trip(ser, {key: [key], "x": 1})
    assert_round_trip(ser, {key, "x"})
    assert_round_trip(ser, Mutable([frozenset({key})], {key: {key}}))


def test_minus_one_and_minus_two_share_a_hash_and_still_travel(ser: Serializer) -> None:
    assert_round_trip(ser, {-1: "a", -2: "b"})
    assert_round_trip(ser, frozenset({-1, -2}))


@pytest.mark.parametrize("key", UNSAFE_KEYS, ids=repr)
def test_unsafe_keys_are_refused_on_encode(ser: Serializer, key: Any) -> None:
    for value in ({key: 1}, {key}, frozenset({key}), [{"a": [{key: 1}]}], Box({key: 2}),
                  (1, {"x": {key}})):
        with pytest.raises(UnsafeKeyError, match=rf"of type '{type_hint(key)}' .* is not hash-safe"):
            ser.serialize(value)


@pytest.mark.parametrize("key", UNSAFE_KEYS, ids=repr)
def test_unsafe_keys_are_refused_on_decode(kind: str, key: Any) -> None:
    s = make(kind)
    # Encoded as if the key were allowed: the bytes a peer could send.
    real = serialization.keys_safe_within, serialization.safe_members
    serialization.keys_safe_within = serialization.safe_members = lambda *a: True
    try:
        payloads = [s.serialize({key: 1}), s.serialize({key, "x"}), s.serialize(Box(frozenset({key})))]
    finally:
        serialization.keys_safe_within, serialization.safe_members = real
    for data in payloads:
        with pytest.raises(UnsafeKeyError, match=rf"of type '{type_hint(key)}' .* is not hash-safe"):
            s.deserialize(data)


def test_unsafe_key_error_is_a_serialization_error_naming_the_value(ser: Serializer) -> None:
    with pytest.raises(SerializationError) as info:
        ser.serialize({"a": 1, 2**70: 2})
    assert isinstance(info.value, UnsafeKeyError)
    assert str(info.value).startswith(f"dict key of type 'builtins.int' ({2**70}) is not hash-safe")
    with pytest.raises(UnsafeKeyError, match=r"\(an int of 8000 bits\)"):
        ser.serialize({2**7999: 1})  # too long to repr: described


def test_ints_travel_up_to_max_int_bytes(ser: Serializer) -> None:
    top = 2 ** (8 * MAX_INT_BYTES - 1)
    for n in (top - 1, -top, 2**64, -(2**63) - 1):
        assert_round_trip(ser, n)
    for n in (top, -top - 1, 10**5000):
        with pytest.raises(SerializationError, match="too large: ints travel up to 1024 bytes"):
            ser.serialize([n])


def test_msgpack_big_int_ext_is_capped_on_decode() -> None:
    s = make("msgpack")
    ok = msgpack.packb(msgpack.ExtType(7, b"\x7f" + b"\xff" * (MAX_INT_BYTES - 1)))
    assert s.deserialize(ok) == 2 ** (8 * MAX_INT_BYTES - 1) - 1
    for body in (b"\x00" * (MAX_INT_BYTES + 1), b"\x01" * 400_000):
        with pytest.raises(SerializationError, match=r"big int ext of \d+ bytes is too large"):
            s.deserialize(msgpack.packb(msgpack.ExtType(7, body)))


def test_json_numbers_and_int_tags_are_capped_on_decode() -> None:
    s = make("json")
    assert s.deserialize(b"[18446744073709551615,-9223372036854775808]") == [2**64 - 1, -(2**63)]
    assert s.deserialize(b"99999999999999999999") == 10**20 - 1  # 20 digits
    for text in (b"100000000000000000000", b"-100000000000000000000", b"[" + b"7" * 4000 + b"]"):
        with pytest.raises(SerializationError, match=r"JSON number of \d+ digits is too long"):
            s.deserialize(text)
    top = 2 ** (8 * MAX_INT_BYTES - 1)
    assert s.deserialize(json.dumps({"__t": "i", "v": hex(-top)}).encode()) == -top
    for n in (top, -top - 1):
        with pytest.raises(SerializationError, match="too large: ints travel up to"):
            s.deserialize(json.dumps({"__t": "i", "v": hex(n)}).encode())


# --- nesting ------------------------------------------------------------------------------


def _nested_tuple(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = (value,)
    return value


def test_msgpack_nesting_limit_holds_both_ways() -> None:
    s = make("msgpack")
    deepest = _nested_tuple(MAX_NESTING)
    assert s.deserialize(s.serialize(deepest)) == deepest
    with pytest.raises(SerializationError, match="nested deeper"):
        s.serialize((deepest,))
    assert s.deserialize(s.serialize(deepest)) == deepest


def test_msgpack_ext_bomb_is_refused_without_crashing() -> None:
    data = msgpack.packb([1])
    for _ in range(5_000):
        data = msgpack.packb(msgpack.ExtType(3, b"\x91" + data))  # (((...[1]...),),)
    with pytest.raises(SerializationError, match="nested deeper"):
        make("msgpack").deserialize(data)


def test_deeply_nested_arrays_are_refused(ser: Serializer, kind: str) -> None:
    depth = 200_000
    data = b"\x91" * depth + b"\x01" if kind == "msgpack" else b"[" * depth + b"]" * depth
    with pytest.raises(SerializationError):
        ser.deserialize(data)


def test_json_deep_tags_are_refused() -> None:
    data = b'{"__t":"t","v":[' * 50_000 + b"1" + b"]}" * 50_000
    with pytest.raises(SerializationError):
        make("json").deserialize(data)


# --- TypeRegistry -------------------------------------------------------------------------


def test_register_defaults_to_the_qualified_name_and_resolves_back() -> None:
    reg = TypeRegistry()
    assert reg.register(Ping) is Ping
    assert reg.name_of(Ping) == f"{MOD}.Ping"
    assert reg.resolve(f"{MOD}.Ping") is Ping
    assert reg.register(Color, "colors.Color") is Color
    assert reg.name_of(Color) == "colors.Color" and reg.resolve("colors.Color") is Color
    assert reg.register(Ping) is Ping  # again, same name: fine


def test_actor_address_is_registered_from_the_start() -> None:
    assert TypeRegistry().name_of(ActorAddress) == "casty.address.ActorAddress"


def test_register_conflicts_are_value_errors() -> None:
    reg = TypeRegistry()
    reg.register(Ping, "shared")
    with pytest.raises(ValueError, match="'shared' is already taken"):
        reg.register(Mutable, "shared")
    with pytest.raises(ValueError, match="already registered as 'shared'"):
        reg.register(Ping, "other")
    assert reg.resolve("shared") is Ping


def test_register_refuses_what_cannot_travel() -> None:
    reg = TypeRegistry()
    for bad in (NotADataclass, record_call, Ping(1), int, Color.RED):
        with pytest.raises(TypeError):
            reg.register(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        reg.register(Ping, "")


def test_name_of_and_resolve_refuse_the_unknown() -> None:
    reg = TypeRegistry()
    with pytest.raises(SerializationError, match="Unregistered"):
        reg.name_of(Unregistered)
    with pytest.raises(SerializationError, match=r"unknown type name 'os\.system'"):
        reg.resolve("os.system")


def test_allow_module_permits_its_dataclasses_and_enums(kind: str) -> None:
    reg = TypeRegistry()
    reg.allow_module(MOD)
    s = make(kind, reg)
    value = [AllowedOnly(1), Outer.Inner("in"), Unregistered(2), Ping(3), Color.GREEN, Level.LOW]
    assert_round_trip(s, value)
    assert reg.name_of(Outer.Inner) == f"{MOD}.Outer.Inner"
    assert reg.resolve(f"{MOD}.AllowedOnly") is AllowedOnly


def test_allow_module_refuses_functions_plain_classes_and_imported_names(kind: str) -> None:
    reg = TypeRegistry()
    reg.allow_module(MOD)
    s = make(kind, reg)
    for name, values in [
        (f"{MOD}.record_call", [1]),
        (f"{MOD}.NotADataclass", [1]),
        (f"{MOD}.SendToNode", ["h", 1, ""]),  # defined elsewhere, imported here
        (f"{MOD}.msgpack.ExtType", [1, ""]),  # never steps into another module
        (f"{MOD}.sys.modules", []),
        (f"{MOD}.Outer", []),
        (f"{MOD}.Outer.Inner.__init__", ["x"]),
        (f"{MOD}.Ping.__class__", [1, ""]),
        (f"{MOD}._local_dataclass.<locals>.Local", [1]),
        (f"{MOD}", []),
        (f"{MOD}.", []),
        (f"{MOD}..Ping", [1, ""]),
    ]:
        with pytest.raises(SerializationError, match="unknown type name"):
            s.deserialize(hostile_object(kind, name, values or [0]))
    assert CALLS == [] and NotADataclass.calls == []
    with pytest.raises(SerializationError, match="Local"):
        s.serialize(_local_dataclass()(1))  # could never be found back: refused up front
    with pytest.raises(SerializationError, match="SendToNode"):
        s.serialize(SendToNode("h", 1, b""))


def test_allow_module_covers_exactly_that_module(kind: str) -> None:
    reg = TypeRegistry()
    reg.allow_module("tests")
    s = make(kind, reg)
    with pytest.raises(SerializationError):
        s.serialize(Unregistered(1))
    with pytest.raises(SerializationError, match="unknown type name"):
        s.deserialize(hostile_object(kind, f"{MOD}.Unregistered", [1]))


# --- hypothesis ---------------------------------------------------------------------------

_FAKE = FakeTransport()


def _factory(address: ActorAddress) -> RemoteActorRef[Any]:
    return RemoteActorRef(address, _FAKE)


_refs = st.builds(
    lambda path, port: RemoteActorRef(ActorAddress("sys", f"/user/{path}", "h", port), _FAKE),
    st.text("abc-_", min_size=1, max_size=5),
    st.integers(0, 65535),
)
# What may be a dict key or set member on the wire (see casty.plain_codec: hash-safe).
_safe_keys = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60) + 1, max_value=2**60 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.sampled_from([*Color, *Level, *Mood, Perm.R | Perm.W, Perm.X])
    | _refs
)
_hashable_scalars = (
    _safe_keys
    | st.integers()
    | st.integers(min_value=-(2**130), max_value=2**130)
    | st.floats(allow_nan=False)
)
_hashable = st.recursive(
    _hashable_scalars,
    lambda inner: st.lists(inner, max_size=3).map(tuple)
    | st.frozensets(_safe_keys, max_size=3)
    | st.builds(Ping, st.integers(), st.text(max_size=5))
    | st.builds(Box, inner),
    max_leaves=6,
)
_values = st.recursive(
    _hashable,
    lambda inner: st.lists(inner, max_size=4)
    | st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(_safe_keys, inner, max_size=4)
    | st.dictionaries(st.text(max_size=4) | st.just("__t"), inner, max_size=4)
    | st.sets(_safe_keys, max_size=4)
    | st.builds(Mutable, st.lists(inner, max_size=3), st.dictionaries(_safe_keys, inner, max_size=2))
    | st.builds(Box, inner),
    max_leaves=20,
)


@pytest.mark.parametrize("kind_", KINDS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values)
def test_hypothesis_round_trip(kind_: str, value: Any) -> None:
    s = _SERIALIZERS[kind_]
    out = round_trip(s, value, ref_factory=_factory)
    assert typed(out) == typed(value)


_SERIALIZERS = {k: make(k) for k in KINDS}


@pytest.mark.parametrize("kind_", KINDS)
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=256))
def test_hypothesis_random_bytes_give_a_value_or_serialization_error(
    kind_: str, data: bytes
) -> None:
    try:
        _SERIALIZERS[kind_].deserialize(data, ref_factory=_factory)
    except SerializationError:
        pass


@pytest.mark.parametrize("kind_", KINDS)
@settings(max_examples=300, deadline=None)
@given(
    value=_values,
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 10_000),
)
def test_hypothesis_corrupted_payloads_give_a_value_or_serialization_error(
    kind_: str, value: Any, edits: list[tuple[int, int]], cut: int
) -> None:
    s = _SERIALIZERS[kind_]
    data = bytearray(s.serialize(value))
    for pos, byte in edits:
        data[pos % len(data)] = byte
    try:
        s.deserialize(bytes(data[: max(1, cut % (len(data) + 1))]), ref_factory=_factory)
    except SerializationError:
        pass


def test_json_tags_are_what_the_docs_say() -> None:
    s = make("json")
    wire = json.loads(s.serialize([(1,), {2}, frozenset({3}), b"\x01", 2**70, math.inf, {1: 2}]))
    assert wire == [
        {"__t": "t", "v": [1]}, {"__t": "s", "v": [2]}, {"__t": "fs", "v": [3]},
        {"__t": "b", "v": base64.b64encode(b"\x01").decode()}, {"__t": "i", "v": hex(2**70)},
        {"__t": "f", "v": "inf"}, {"__t": "m", "v": [[1, 2]]},
    ]


# -- the top-level dataclass shortcut writes and reads exactly what the packer does ----

@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    seq=st.integers(min_value=-(2**63), max_value=2**64 - 1),
    text=st.text(max_size=300),
    blob=st.binary(max_size=70_000),
)
def test_msgpack_dataclass_shortcut_matches_the_packer(seq: int, text: str, blob: bytes) -> None:
    s = MsgpackSerializer(make_registry())
    for obj in (Ping(seq, text), Slotted(seq, blob), Empty(), Nested(Ping(seq), (seq, text))):
        fast = s.serialize(obj)
        assert fast == s._pack(obj)  # the generic path: Packer + _default
        assert s.deserialize(fast) == obj
        via_unpackb = msgpack.unpackb(fast, ext_hook=s._hook, raw=False, strict_map_key=False)
        assert via_unpackb == obj


@given(data=st.binary(max_size=64))
@settings(max_examples=300)
def test_msgpack_dataclass_shortcut_decodes_like_unpackb(data: bytes) -> None:
    s = MsgpackSerializer(make_registry())
    payload = bytes([0xC7, len(data), 1]) + data  # a dataclass ext around arbitrary bytes
    for candidate in (payload, payload + b"\x00", payload[:-1], b"\xd4\x01" + data[:1]):
        try:
            expected: Any = ("ok", msgpack.unpackb(candidate, ext_hook=s._hook, raw=False,
                                                  strict_map_key=False))
        except SerializationError as exc:
            expected = ("error", str(exc))
        except Exception as exc:
            expected = ("error", f"cannot deserialize msgpack payload: {exc}")
        try:
            got: Any = ("ok", s.deserialize(candidate))
        except SerializationError as exc:
            got = ("error", str(exc))
        assert got == expected
