"""The standard-library values users send (datetime, date, Decimal, UUID, frozenset), codecs
for any other class (TypeRegistry.register_codec), their golden bytes, and the
serialize-messages test mode that puts local tells through the serializer."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import uuid
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import msgpack
import pytest

import casty
from casty import ActorSystem, Behaviors, RemoteActorSystem
from casty.ask_deadlines import AskFailed
from casty.serialization import (
    MAX_DECIMAL_CHARS,
    JsonSerializer,
    MsgpackSerializer,
    SerializationError,
    Serializer,
    TypeRegistry,
)
from casty.system import SERIALIZE_MESSAGES_ENV
from casty.wire import (
    EXT_CODEC,
    EXT_DATE,
    EXT_DECIMAL,
    EXT_NAIVE_DATETIME,
    EXT_TIMESTAMP,
    EXT_UUID,
)

UTC = datetime.UTC
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))
D = decimal.Decimal
U = uuid.UUID("12345678-9abc-def0-1234-56789abcdef0")


@dataclass(frozen=True)
class Order:
    at: datetime.datetime
    day: datetime.date
    price: decimal.Decimal
    id: uuid.UUID
    tags: frozenset[str]


class Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.currency) == (other.cents, other.currency)

    __hash__ = None  # type: ignore[assignment]


class NotMine:
    pass


@dataclass(frozen=True)
class Stamp:
    n: int


def money_registry() -> TypeRegistry:
    reg = TypeRegistry()
    reg.register(Order, "t.Order")
    reg.register_codec(Money, lambda m: (m.cents, m.currency), lambda v: Money(*v), "t.Money")
    reg.register_codec(Fraction, lambda f: [f.numerator, f.denominator], lambda v: Fraction(*v), "t.Fraction")
    return reg


KINDS = ["msgpack", "json"]


@pytest.fixture(params=KINDS)
def ser(request: pytest.FixtureRequest) -> Serializer:
    reg = money_registry()
    return MsgpackSerializer(reg) if request.param == "msgpack" else JsonSerializer(reg)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type; Decimals by their text (NaN is not equal to itself)."""
    if type(a) is not type(b):
        return False
    if type(a) is D:
        return str(a) == str(b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


# --- round trips ----------------------------------------------------------------------------

VALUES = [
    datetime.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC),
    datetime.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # before the epoch
    datetime.datetime.min.replace(tzinfo=UTC), datetime.datetime.max.replace(tzinfo=UTC),
    datetime.datetime(2106, 2, 7, 6, 28, 16, tzinfo=UTC),  # past 32-bit seconds: the 64-bit form
    datetime.datetime(2514, 5, 30, 1, 53, 4, tzinfo=UTC),  # past 34-bit seconds: the 96-bit form
    datetime.datetime(2024, 5, 1, 12, 30), datetime.datetime(2024, 5, 1, 12, 30, 0, 1),
    datetime.datetime.min, datetime.datetime.max, datetime.datetime(1900, 1, 1),
    datetime.date(2024, 2, 29), datetime.date.min, datetime.date.max, datetime.date(1969, 12, 31),
    D("1.10"), D("-0"), D("0E-7"), D("1E+5"), D("NaN"), D("-NaN123"), D("sNaN"), D("Infinity"), D("-Infinity"),
    D("3.14159265358979323846264338327950288419716939937510"), D("9" * MAX_DECIMAL_CHARS),
    U, uuid.UUID(int=0), uuid.UUID(int=2**128 - 1),
    frozenset(), frozenset({1, "a", b"b", None}), [frozenset({1}), (frozenset(),)],
    Money(1999, "EUR"), [Money(1, "USD"), {"f": Fraction(1, 3)}], Fraction(-7, 2),
    Order(datetime.datetime(2024, 1, 1, tzinfo=UTC), datetime.date(2024, 1, 2), D("9.99"), U,
          frozenset({"x", "y"})),
    {"when": datetime.date(2000, 1, 1), "ids": (U, uuid.UUID(int=1))},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_values_round_trip_equal_and_of_the_same_type(ser: Serializer, value: Any) -> None:
    assert same(ser.deserialize(ser.serialize(value)), value)


@pytest.mark.parametrize("offset", [PLUS2, datetime.timezone(-datetime.timedelta(hours=9, minutes=30))])
def test_an_aware_datetime_arrives_as_the_same_instant_in_utc(ser: Serializer, offset: datetime.tzinfo) -> None:
    sent = datetime.datetime(2024, 5, 1, 12, 30, 0, 250, tzinfo=offset)
    got = ser.deserialize(ser.serialize(sent))
    assert got == sent and got.tzinfo is UTC
    assert got.utcoffset() == datetime.timedelta(0)
    assert got.astimezone(offset).replace(tzinfo=None) == sent.replace(tzinfo=None)


def test_a_naive_datetime_stays_naive_with_its_wall_clock(ser: Serializer) -> None:
    sent = datetime.datetime(2024, 5, 1, 12, 30, 0, 7)
    got = ser.deserialize(ser.serialize(sent))
    assert got.tzinfo is None and (got.hour, got.minute, got.microsecond) == (12, 30, 7)


def test_decimal_keeps_its_exponent_and_sign(ser: Serializer) -> None:
    for text in ("1.10", "-0", "0E-7", "-NaN123", "sNaN"):
        assert str(ser.deserialize(ser.serialize(D(text)))) == text


def test_decimal_too_long_is_refused_on_encode(ser: Serializer) -> None:
    with pytest.raises(SerializationError, match=rf"^Decimal of 4097 characters is too long: Decimals travel "
                                                 rf"up to {MAX_DECIMAL_CHARS} characters of str\(d\)$"):
        ser.serialize([D("9" * 4097)])


def test_subclasses_of_the_new_types_are_not_flattened(ser: Serializer) -> None:
    class MyDate(datetime.date):
        pass

    with pytest.raises(SerializationError, match="MyDate': not registered and not a supported type"):
        ser.serialize(MyDate(2024, 1, 1))


def test_new_values_are_not_hash_safe_keys(ser: Serializer) -> None:
    for key in (U, D(1), datetime.date(2024, 1, 1)):
        with pytest.raises(SerializationError, match="is not hash-safe"):
            ser.serialize({key: 1})


# --- golden bytes ----------------------------------------------------------------------------

MSGPACK_VECTORS = [
    # ext -1, Timestamp 32: seconds since the epoch, big-endian unsigned
    (datetime.datetime(2024, 5, 1, tzinfo=UTC), "d6ff" "66318600"),
    # Timestamp 64: nanoseconds (30 bits) << 34 | seconds (34 bits)
    (datetime.datetime(2024, 5, 1, 0, 0, 0, 1, tzinfo=UTC), "d7ff" "00000fa0" "66318600"),
    # Timestamp 96: nanoseconds (4 bytes), then signed seconds (8 bytes)
    (datetime.datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), "c70cff" "00000000" "ffffffffffffffff"),
    # ext 8: the same layouts, of the wall-clock fields
    (datetime.datetime(2024, 5, 1), "d608" "66318600"),
    (datetime.datetime(1, 1, 1), "c70c08" "00000000" "fffffff1886e0900"),
    # ext 9: days since 1970-01-01, 4 bytes big-endian signed
    (datetime.date(2024, 5, 1), "d609" "00004d84"),
    (datetime.date(1969, 12, 31), "d609" "ffffffff"),
    # ext 10: str(d) in ASCII
    (D("1.10"), "d60a" + b"1.10".hex()),
    (D("-Infinity"), "c7090a" + b"-Infinity".hex()),
    # ext 11: UUID.bytes
    (U, "d80b" + U.bytes.hex()),
    # ext 5: a msgpack array of the members
    (frozenset({7}), "d505" "9107"),
    # ext 12: [name, encoded] (here the tuple is ext 3)
    (Money(5, "EUR"), "c7120c" "92" "a7" + b"t.Money".hex() + "c70603" "9205a3" + b"EUR".hex()),
]


@pytest.mark.parametrize(("value", "hexed"), MSGPACK_VECTORS, ids=repr)
def test_msgpack_vectors(value: Any, hexed: str) -> None:
    s = MsgpackSerializer(money_registry())
    assert s.serialize(value).hex() == hexed
    assert same(s.deserialize(bytes.fromhex(hexed)), value)


def test_ext_codes_are_the_documented_ones() -> None:
    assert (EXT_TIMESTAMP, EXT_NAIVE_DATETIME, EXT_DATE, EXT_DECIMAL, EXT_UUID, EXT_CODEC) == (-1, 8, 9, 10, 11, 12)


def test_aware_datetimes_are_msgpacks_own_timestamp() -> None:
    """Another msgpack reader sees the standard Timestamp; and what it writes, casty reads."""
    sent = datetime.datetime(2024, 5, 1, 0, 0, 0, 1, tzinfo=PLUS2)
    data = MsgpackSerializer().serialize(sent)
    assert msgpack.unpackb(data) == msgpack.Timestamp.from_datetime(sent)
    assert MsgpackSerializer().deserialize(msgpack.packb(sent, datetime=True)) == sent


JSON_VECTORS = [
    (datetime.datetime(2024, 5, 1, 14, tzinfo=PLUS2), '{"__t":"dt","v":"2024-05-01T12:00:00+00:00"}'),
    (datetime.datetime(2024, 5, 1, 12, 0, 0, 5), '{"__t":"ndt","v":"2024-05-01T12:00:00.000005"}'),
    (datetime.date(2024, 5, 1), '{"__t":"d","v":"2024-05-01"}'),
    (D("-1.50"), '{"__t":"dec","v":"-1.50"}'),
    (U, '{"__t":"u","v":"12345678-9abc-def0-1234-56789abcdef0"}'),
    (frozenset({7}), '{"__t":"fs","v":[7]}'),
    (Money(5, "EUR"), '{"__t":"c","n":"t.Money","v":{"__t":"t","v":[5,"EUR"]}}'),
]


@pytest.mark.parametrize(("value", "text"), JSON_VECTORS, ids=repr)
def test_json_vectors(value: Any, text: str) -> None:
    s = JsonSerializer(money_registry())
    assert s.serialize(value) == text.encode()
    got = s.deserialize(text.encode())
    assert same(got, value)


# --- malformed input ---------------------------------------------------------------------------


def ext(code: int, body: bytes) -> bytes:
    return msgpack.packb(tuple.__new__(msgpack.ExtType, (code, body)))


MSGPACK_BAD = [
    (ext(-1, b"\x00" * 5), r"^cannot deserialize msgpack payload: .*length 5"),
    (ext(-1, b"\xff" * 8), r"^cannot deserialize msgpack payload: nanoseconds must be"),
    (ext(-1, b"\x00" * 4 + b"\x7f" + b"\xff" * 7), r"^cannot deserialize msgpack payload: .*too large"),
    (ext(8, b"\x00" * 5), r"^malformed naive datetime ext \(5 bytes\): Timestamp type can only be created from 32, "),
    (ext(8, b"\x00" * 4 + b"\x7f" + b"\xff" * 7), r"^malformed naive datetime ext \(12 bytes\): "),
    (ext(9, b"\x00" * 3), r"^malformed date ext: 3 bytes, expected 4$"),
    (ext(9, b"\x7f\xff\xff\xff"), r"^date ext holds day 2147483647 after 1970-01-01, outside the years 1..9999$"),
    (ext(10, b" 1"), r"^malformed Decimal ' 1': not what str\(Decimal\) writes$"),
    (ext(10, b"1_0"), r"^malformed Decimal '1_0'"),
    (ext(10, b"inf"), r"^malformed Decimal 'inf'"),
    (ext(10, b"1e5"), r"^malformed Decimal '1e5'"),
    (ext(10, b""), r"^malformed Decimal ''"),
    (ext(10, "\u0661".encode()), r"^malformed Decimal ext: not ASCII$"),
    (ext(10, b"1" * 4097), r"^Decimal text of 4097 characters is too long \(up to 4096\)$"),
    (ext(11, b"\x00" * 15), r"^malformed UUID ext: 15 bytes, expected 16$"),
    (ext(12, msgpack.packb(["t.Money"])), r"^malformed codec ext: \[name, value\] expected, got 1 item\(s\)$"),
    (ext(12, msgpack.packb(1)), r"^malformed msgpack ext 12: body is not an array$"),
    (ext(12, msgpack.packb([1, 2])), r"^a codec name must be a str, got 1$"),
    (ext(12, msgpack.packb(["os.system", "x"])), r"^unknown codec name 'os.system': nothing was registered under"),
    (ext(12, msgpack.packb(["t.Order", []])), r"^unknown codec name 't.Order'"),
    (ext(12, msgpack.packb(["t.Money", [1]])),
     r"^the decoder registered for 'test_values.Money' \(as 't.Money'\) failed: TypeError: "),
    (ext(13, b""), r"^unknown msgpack ext type code 13$"),
]


@pytest.mark.parametrize(("data", "message"), MSGPACK_BAD, ids=repr)
def test_malformed_msgpack_values_are_refused_saying_what(data: bytes, message: str) -> None:
    with pytest.raises(SerializationError, match=message.replace("test_values.", r"(tests\.)?test_values\.")):
        MsgpackSerializer(money_registry()).deserialize(data)


JSON_BAD = [
    ({"__t": "dt", "v": "2024-05-01T12:00:00+02:00"}, r"'2024-05-01T12:00:00\+02:00' is not an ISO datetime in UTC"),
    ({"__t": "dt", "v": "2024-05-01T12:00:00"}, r"is not an ISO datetime in UTC \(\+00:00\)$"),
    ({"__t": "dt", "v": "2024-05-01T12:00:00Z"}, r"is not an ISO datetime in UTC"),
    ({"__t": "ndt", "v": "2024-05-01T12:00:00+00:00"}, r"^malformed 'ndt' tag: .* is not a naive ISO datetime$"),
    ({"__t": "ndt", "v": "2024-05-01 12:00:00"}, r"is not a naive ISO datetime$"),
    ({"__t": "ndt", "v": 5}, r"^malformed 'ndt' tag: expected a string, got 5$"),
    ({"__t": "d", "v": "20240501"}, r"^malformed 'd' tag: '20240501' is not an ISO date \(YYYY-MM-DD\)$"),
    ({"__t": "d", "v": "2024-02-30"}, r"is not an ISO date"),
    ({"__t": "dec", "v": "1e5"}, r"^malformed Decimal '1e5': not what str\(Decimal\) writes$"),
    ({"__t": "dec", "v": 1.5}, r"^a Decimal must travel as a string, got 1.5$"),
    ({"__t": "u", "v": U.hex}, r"^malformed 'u' tag: '12345678.*' is not a UUID as str\(uuid\) writes it$"),
    ({"__t": "c", "n": "t.Nope", "v": 1}, r"^unknown codec name 't.Nope'"),
    ({"__t": "c", "n": "t.Money"}, r"^malformed 'c' tag: keys"),
    ({"__t": "c", "n": "t.Money", "v": "x"}, r"^the decoder registered for '(tests\.)?test_values\.Money'"),
]


@pytest.mark.parametrize(("obj", "message"), JSON_BAD, ids=repr)
def test_malformed_json_values_are_refused_saying_what(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(SerializationError, match=message):
        JsonSerializer(money_registry()).deserialize(json.dumps(obj).encode())


# --- register_codec ---------------------------------------------------------------------------


def test_codec_values_nest_in_each_other_and_in_dataclasses(ser: Serializer) -> None:
    value = {"wallet": [Money(1, "EUR"), (Fraction(1, 2), Money(2, "USD"))]}
    assert ser.deserialize(ser.serialize(value)) == value


def test_an_encoder_that_raises_is_a_serialization_error_naming_the_class(ser: Serializer) -> None:
    reg = TypeRegistry()
    reg.register_codec(NotMine, lambda obj: 1 // 0, lambda v: NotMine(), "t.NotMine")
    s = MsgpackSerializer(reg) if isinstance(ser, MsgpackSerializer) else JsonSerializer(reg)
    with pytest.raises(SerializationError, match=r"^the encoder registered for '(tests\.)?test_values\.NotMine' "
                                                 r"\(as 't.NotMine'\) failed: ZeroDivisionError: "):
        s.serialize([NotMine()])


def test_a_decoder_that_raises_or_lies_is_a_serialization_error(ser: Serializer) -> None:
    reg = TypeRegistry()
    reg.register_codec(NotMine, lambda obj: "x", lambda v: 1 // 0, "t.Raises")
    reg.register_codec(Money, lambda obj: "x", lambda v: v, "t.Lies")
    s = MsgpackSerializer(reg) if isinstance(ser, MsgpackSerializer) else JsonSerializer(reg)
    with pytest.raises(SerializationError, match=r"registered for '(tests\.)?test_values\.NotMine' \(as 't.Raises'\) "
                                                 r"failed: ZeroDivisionError: .*by zero$"):
        s.deserialize(s.serialize(NotMine()))
    with pytest.raises(SerializationError, match=r"registered for '(tests\.)?test_values\.Money' \(as 't.Lies'\) "
                                                 r"returned 'builtins.str', not '(tests\.)?test_values\.Money'$"):
        s.deserialize(s.serialize(Money(1, "x")))


def test_register_codec_refuses_bad_arguments_and_conflicts() -> None:
    reg = money_registry()
    ok = (lambda v: v, lambda v: v)
    with pytest.raises(TypeError, match=r"^register_codec takes a class, got 3$"):
        reg.register_codec(3, *ok)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^datetime.datetime travels natively; it cannot take a codec$"):
        reg.register_codec(datetime.datetime, *ok)
    with pytest.raises(TypeError, match=r"^the decode function for .*NotMine must be callable, got 'x'$"):
        reg.register_codec(NotMine, ok[0], "x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^a codec name must be a non-empty str, got ''$"):
        reg.register_codec(NotMine, *ok, name="")
    with pytest.raises(ValueError, match=r"already has a codec, registered as 't.Money'$"):
        reg.register_codec(Money, *ok, name="t.Money2")
    with pytest.raises(ValueError, match=r"^type name 't.Money' is already taken by"):
        reg.register_codec(NotMine, *ok, name="t.Money")
    with pytest.raises(ValueError, match=r"^type name 't.Order' is already taken by"):
        reg.register_codec(NotMine, *ok, name="t.Order")
    with pytest.raises(ValueError, match=r"already travels as the dataclass/Enum 't.Order'; it cannot take a codec$"):
        reg.register_codec(Order, *ok)
    reg.register_codec(Stamp, lambda st: st.n, lambda n: Stamp(n), "t.Stamp")
    with pytest.raises(ValueError, match=r"already travels through the codec 't.Stamp'$"):
        reg.register(Stamp, "t.S")
    with pytest.raises(ValueError, match=r"^type name 't.Money' is already taken by"):
        reg.register(Order, "t.Money")


def test_a_codec_class_in_an_allowed_module_is_not_built_as_a_dataclass() -> None:
    """With a codec, a dataclass travels only through it: a peer cannot call its constructor."""
    reg = TypeRegistry()
    reg.allow_module(Order.__module__)
    reg.register_codec(Order, lambda o: str(o.price), lambda v: None, "t.OrderCodec")
    name = f"{Order.__module__}.Order"
    payload = msgpack.packb(msgpack.ExtType(1, msgpack.packb([name, 1, 2, 3, 4, 5])))
    with pytest.raises(SerializationError, match="unknown type name"):
        MsgpackSerializer(reg).deserialize(payload)


def test_unsupported_plain_classes_are_pointed_at_register_codec(ser: Serializer) -> None:
    with pytest.raises(SerializationError, match=r"\(registry.register_codec\(NotMine, encode, decode\)\)"):
        ser.serialize(NotMine())


# --- serialize_messages -------------------------------------------------------------------------


async def echo(ctx: Any, msg: Any) -> Any:
    payload, reply_to = msg
    reply_to.tell(payload)
    return Behaviors.same()


async def test_a_local_tell_of_an_unserializable_value_raises_in_the_test_mode() -> None:
    got: list[Any] = []
    arrived = asyncio.Event()

    async def keep(ctx: Any, msg: Any) -> Any:
        got.append(msg)
        arrived.set()
        return Behaviors.same()

    async with ActorSystem("t", serialize_messages=True) as system:
        ref = system.spawn(Behaviors.receive(keep), "keep")
        with pytest.raises(SerializationError) as info:
            ref.tell([NotMine()])
        assert str(info.value) == (
            "cannot send list to casty://t/user/keep: cannot serialize object of type "
            f"'{NotMine.__module__}.NotMine': not registered and not a supported type; register it in the "
            "TypeRegistry of both nodes (registry.register_codec(NotMine, encode, decode)), in a module both import"
        )
        sent = [datetime.date(2024, 1, 1), {"k": (1, 2)}]
        ref.tell(sent)
        await arrived.wait()
        assert got == [sent] and got[0] is not sent  # the actor gets a decoded copy


async def test_without_the_test_mode_a_local_tell_takes_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SERIALIZE_MESSAGES_ENV, raising=False)
    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.receive(echo), "echo")
        obj = NotMine()
        assert await system.ask(ref, lambda r: (obj, r)) is obj
        assert not system.serialize_messages


async def test_the_env_var_turns_the_test_mode_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SERIALIZE_MESSAGES_ENV, "1")
    async with ActorSystem("t", serializer=MsgpackSerializer(money_registry())) as system:
        assert system.serialize_messages
        ref = system.spawn(Behaviors.receive(echo), "echo")
        assert await system.ask(ref, lambda r: (Money(3, "EUR"), r)) == Money(3, "EUR")
        with pytest.raises(AskFailed) as info:
            await system.ask(ref, lambda r: (NotMine(), r))
        assert info.value.reason == "send_failed"
        assert str(info.value.detail).startswith("serialization: tuple: cannot serialize object of type")
    monkeypatch.setenv(SERIALIZE_MESSAGES_ENV, "0")
    assert not ActorSystem("u").serialize_messages
    assert not ActorSystem("v", serialize_messages=False).serialize_messages


def test_serialize_messages_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match=r"^serialize_messages must be a bool or None, got 'yes'$"):
        ActorSystem("t", serialize_messages="yes")  # type: ignore[arg-type]


async def test_refs_in_messages_are_rebuilt_and_replies_are_checked_too() -> None:
    async def bad_reply(ctx: Any, msg: Any) -> Any:
        _, reply_to = msg
        try:
            reply_to.tell(NotMine())
        except SerializationError as exc:
            reply_to.tell(f"refused: {str(exc)[:11]}")
        return Behaviors.same()

    async with ActorSystem("t", serialize_messages=True) as system:
        ref = system.spawn(Behaviors.receive(bad_reply), "bad")
        assert await system.ask(ref, lambda r: (1, r)) == "refused: cannot send"


async def test_remote_system_in_the_test_mode_checks_local_tells_with_its_serializer() -> None:
    reg = money_registry()
    async with RemoteActorSystem("n", "127.0.0.1", 0, registry=reg, serialize_messages=True) as system:
        ref = system.spawn(Behaviors.receive(echo), "echo")
        remote_form = system.ref("/user/echo")  # a ref by URI, local: also checked
        assert await system.ask(remote_form, lambda r: (Money(7, "EUR"), r)) == Money(7, "EUR")
        order = Order(datetime.datetime(2024, 1, 1, tzinfo=PLUS2), datetime.date(2024, 1, 2), D("1.0"), U,
                      frozenset({"a"}))
        got = await system.ask(ref, lambda r: (order, r))
        assert got == order and got.at.tzinfo is UTC
        with pytest.raises(AskFailed, match="send_failed"):
            await system.ask(ref, lambda r: (NotMine(), r))


async def test_values_cross_the_wire_between_two_nodes() -> None:
    """Every path of a real send (both twins' outbound and inbound): the new values and
    frozensets, at top level and inside a message."""
    values = [
        Order(datetime.datetime(2024, 1, 1, 8, tzinfo=PLUS2), datetime.date(1999, 12, 31), D("-0.00"), U,
              frozenset({"a", "b"})),
        frozenset({1, 2}), frozenset(), datetime.datetime(2024, 1, 1), D("NaN"), Money(1, "EUR"), U,
        (frozenset({"x"}), [datetime.date(2024, 1, 1)]),
    ]
    async with RemoteActorSystem("a", "127.0.0.1", 0, registry=money_registry()) as a, \
            RemoteActorSystem("b", "127.0.0.1", 0, registry=money_registry()) as b:
        a.spawn(Behaviors.receive(echo), "echo")
        target = b.ref(f"casty://a@127.0.0.1:{a.address.port}/user/echo")
        for value in values:
            assert same(await b.ask(target, lambda r, v=value: (v, r)), value)


def test_casty_exports_what_the_docs_use() -> None:
    assert casty.SerializationError is SerializationError
