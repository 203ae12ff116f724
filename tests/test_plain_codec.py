"""The plain-message fast path: byte-identical to the generic msgpack path, both twins.

``encode_plain``/``decode_plain`` must either agree exactly with what the generic
packer/unpacker would do, or decline (None) so the generic path runs; the Cython
build and the pure twin must give the same answer for every input.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import math
import types
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casty.address import ActorAddress
from casty.ref import LocalActorRef, RemoteActorRef
from casty.serialization import MsgpackSerializer, TypeRegistry


@dataclass(frozen=True)
class Tick:
    seq: int
    text: str


@dataclass(frozen=True)
class Wide:
    a: Any
    b: Any
    c: Any
    d: Any


@dataclass
class Plain:
    x: Any


@dataclass(frozen=True)
class Checked:
    n: int

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError("negative")


@dataclass(frozen=True)
class WithInitFalse:
    a: int
    b: int = field(init=False, default=0)


@dataclass(frozen=True, slots=True)
class Slotted:
    a: Any
    b: Any


@dataclass
class CustomSetattr:
    a: Any

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, ("seen", value))


CLASSES = (Tick, Wide, Plain, Checked, WithInitFalse, Slotted, CustomSetattr)


def registry() -> TypeRegistry:
    reg = TypeRegistry()
    for cls in CLASSES:
        reg.register(cls, f"t.{cls.__name__}")
        reg._plan_for_name(f"t.{cls.__name__}")  # plans are made on first use; the fast path reads them
    return reg


# The impl fixture only names a twin; nothing in it changes between examples.
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

REG = registry()
PLANS = REG._name_plans

plain_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=300),
    st.binary(max_size=300),
)
any_values = st.one_of(
    plain_values,
    st.integers(),  # beyond 64 bits: not plain
    st.lists(st.integers(), max_size=3),
    st.tuples(st.integers()),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.just(float("nan")),
)


def generic_bytes(name: str, values: tuple[Any, ...]) -> bytes:
    """What the generic path writes for ``ext(1, [name, *values])``."""
    return msgpack.packb(
        msgpack.ExtType(1, msgpack.packb([name, *values], use_bin_type=True, strict_types=True)),
        use_bin_type=True,
    )


def same(a: Any, b: Any) -> bool:
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


@FIXTURE_OK
@given(st.tuples(plain_values, plain_values, plain_values, plain_values))
def test_plain_values_encode_exactly_as_the_generic_path(impl: types.SimpleNamespace, values: Any) -> None:
    data = impl.encode_plain("t.Wide", values)
    assert data == generic_bytes("t.Wide", values)
    assert same(impl.decode_plain(data, PLANS), Wide(*values))


@FIXTURE_OK
@given(st.tuples(any_values, any_values, any_values, any_values))
def test_twins_agree_on_any_values(impl: types.SimpleNamespace, values: Any) -> None:
    from casty import plain_codec

    data = impl.encode_plain("t.Wide", values)
    assert data == plain_codec.encode_plain("t.Wide", values)
    if data is not None:
        assert data == generic_bytes("t.Wide", values)


@FIXTURE_OK
@given(st.integers(min_value=0, max_value=70_000))
def test_every_size_class_of_name_and_body(impl: types.SimpleNamespace, size: int) -> None:
    values = ("x" * size, b"y" * (size // 3), size, -size)
    assert impl.encode_plain("t.Wide", values) == generic_bytes("t.Wide", values)


def test_lone_surrogate_declines(impl: types.SimpleNamespace) -> None:
    assert impl.encode_plain("t.Tick", (1, "\ud800")) is None


def test_only_exact_tuples_and_str_names(impl: types.SimpleNamespace) -> None:
    assert impl.encode_plain("t.Tick", [1, "a"]) is None
    assert impl.encode_plain(b"t.Tick", (1, "a")) is None


def test_only_generated_inits_are_bypassed() -> None:
    direct = {cls.__name__: REG._plan_for_class(cls).direct for cls in CLASSES}  # type: ignore[union-attr]
    assert direct == {"Tick": True, "Wide": True, "Plain": True, "Checked": False,
                      "WithInitFalse": False, "Slotted": True, "CustomSetattr": False}


@pytest.mark.parametrize(
    "obj", [Tick(1, "a"), Plain(2), Checked(3), WithInitFalse(4), Slotted(1, 2)], ids=lambda x: type(x).__name__
)
def test_decode_rebuilds_every_kind_of_dataclass(impl: types.SimpleNamespace, obj: Any) -> None:
    plan = REG._plan_for_class(type(obj))
    assert plan is not None
    got = impl.decode_plain(generic_bytes(plan.name, plan.get(obj)), PLANS)
    assert got == obj
    assert type(got) is type(obj)


def test_each_registry_maps_the_same_name_to_its_own_class(impl: types.SimpleNamespace) -> None:
    # The decoder remembers the last name it read; the class must still come from the
    # plans it is given, and a name re-registered later must be seen.
    data = generic_bytes("t.Tick", (1, "a"))
    other = TypeRegistry()
    other.register(Slotted, "t.Tick")  # two fields too, under the same name
    other._plan_for_name("t.Tick")
    for _ in range(2):
        assert type(impl.decode_plain(data, PLANS)) is Tick
        assert type(impl.decode_plain(data, other._name_plans)) is Slotted
    mutable = dict(PLANS)
    assert type(impl.decode_plain(data, mutable)) is Tick
    mutable["t.Tick"] = other._name_plans["t.Tick"]
    assert type(impl.decode_plain(data, mutable)) is Slotted
    del mutable["t.Tick"]
    assert impl.decode_plain(data, mutable) is None


def test_a_value_that_declines_midway_builds_nothing(impl: types.SimpleNamespace) -> None:
    # Direct classes are filled field by field as they are read; a later value that is
    # not plain must still make the whole message decline.
    assert impl.decode_plain(generic_bytes("t.Wide", (1, 2, 3, [4])), PLANS) is None
    assert impl.decode_plain(generic_bytes("t.Wide", (1, 2, 3, 4)), PLANS) == Wide(1, 2, 3, 4)


@dataclass(frozen=True)
class CountsNew:
    x: int
    made = 0

    def __new__(cls, *args: Any, **kwargs: Any) -> CountsNew:
        cls.made += 1
        return super().__new__(cls)


def test_classes_with_their_own_new_rebuild_alike(impl: types.SimpleNamespace) -> None:
    # The Cython twin makes instances of classes whose __new__ is object's without a
    # Python-level call; a class with its own __new__ must still come out as the pure twin makes it.
    reg = TypeRegistry()
    reg.register(CountsNew, "t.CountsNew")
    reg.register(Tick, "t.Tick")
    plans = {name: reg._plan_for_name(name) for name in ("t.CountsNew", "t.Tick")}
    from casty.plain_codec import decode_plain as pure_decode

    def news_in(decode: Any) -> tuple[Any, int]:
        before = CountsNew.made
        obj = decode(generic_bytes("t.CountsNew", (5,)), plans)
        return obj, CountsNew.made - before

    got, made = news_in(impl.decode_plain)
    assert got == CountsNew(5) and type(got) is CountsNew
    assert made == news_in(pure_decode)[1]
    tick = impl.decode_plain(generic_bytes("t.Tick", (1, "a")), plans)
    assert tick == Tick(1, "a") and type(tick) is Tick and tick.__dict__ == {"seq": 1, "text": "a"}


def test_post_init_still_validates(impl: types.SimpleNamespace) -> None:
    assert impl.decode_plain(generic_bytes("t.Checked", (-1,)), PLANS) is None
    with pytest.raises(ValueError, match=r"cannot rebuild 't\.Checked'"):
        MsgpackSerializer(REG).deserialize(generic_bytes("t.Checked", (-1,)))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc7",
        b"\xc7\x05\x01",  # body shorter than its length
        b"\xd4\x02\x90",  # another ext code
        generic_bytes("t.Tick", (1, "a")) + b"\x00",  # trailing byte
        generic_bytes("t.Tick", (1,)),  # wrong field count
        generic_bytes("t.Unknown", (1, "a")),
        generic_bytes("t.Tick", (1, [1])),  # not plain
        msgpack.packb(msgpack.ExtType(1, b"\x92\xa6t.Tick\xc1")),  # never-used byte
        msgpack.packb(msgpack.ExtType(1, b"\x93\xa6t.Tick\x01\xa2\xff\xfe")),  # bad UTF-8
        msgpack.packb(msgpack.ExtType(1, b"\x93\xa6t.Tick\x01\xdb\xff\xff\xff\xff")),  # huge str
        msgpack.packb(msgpack.ExtType(1, b"\xdd\xff\xff\xff\xff\xa6t.Tick")),  # huge array
        msgpack.packb(msgpack.ExtType(1, b"\x93\xc4\x06t.Tick\x01\xa1a")),  # name as bin
    ],
)
def test_decline_what_is_not_a_plain_message(impl: types.SimpleNamespace, data: bytes) -> None:
    assert impl.decode_plain(data, PLANS) is None


def test_only_exact_bytes_are_read(impl: types.SimpleNamespace) -> None:
    data = generic_bytes("t.Tick", (1, "a"))
    assert impl.decode_plain(bytearray(data), PLANS) is None
    assert impl.decode_plain(memoryview(data), PLANS) is None


@FIXTURE_OK
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=40), st.binary(max_size=4))
def test_mutated_payloads_twins_agree_with_generic(
    impl: types.SimpleNamespace, noise: bytes, at: int, insert: bytes
) -> None:
    from casty import plain_codec

    base = generic_bytes("t.Wide", (1, "text", b"\x00bin", 2.5))
    data = base[:at] + insert + noise[: len(insert)] + base[at + len(insert):]
    for candidate in (data, noise, base[:at]):
        got = impl.decode_plain(candidate, PLANS)
        assert same(got, plain_codec.decode_plain(candidate, PLANS))
        if got is not None:
            assert same(got, MsgpackSerializer(REG).deserialize(candidate))


def test_float32_and_every_int_width_read_like_msgpack(impl: types.SimpleNamespace) -> None:
    items = [1.5, 0, 127, 128, 255, 256, 65535, 65536, 2**32, 2**64 - 1, -1, -32, -33, -128, -129,
             -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]
    for value in items:
        data = generic_bytes("t.Plain", (value,))
        assert same(impl.decode_plain(data, PLANS), Plain(value))
    f32 = msgpack.packb(msgpack.ExtType(1, b"\x92\xa7t.Plain\xca\x3f\xc0\x00\x00"))
    assert same(impl.decode_plain(f32, PLANS), Plain(1.5))


# -- actor refs ------------------------------------------------------------------------


def _ref(path: str, kind: type = RemoteActorRef) -> Any:
    return kind(ActorAddress("app", path, "10.0.0.1", 25520), None)


def _ref_ext(ref: Any) -> msgpack.ExtType:
    return msgpack.ExtType(6, ref.address.to_uri().encode())


def _factory(address: ActorAddress) -> Any:
    return RemoteActorRef(address, None)


@FIXTURE_OK
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40), plain_values)
def test_refs_travel_as_ext6_uris_like_the_generic_path(impl: types.SimpleNamespace, tail: str, other: Any) -> None:
    ref = _ref("/temp/ask-" + tail)
    values = (ref, other, _ref("/user/x", LocalActorRef), None)
    data = impl.encode_plain("t.Wide", values)
    assert data == generic_bytes("t.Wide", (_ref_ext(ref), other, _ref_ext(values[2]), None))
    got = impl.decode_plain(data, PLANS, _factory)
    assert got == Wide(ref, other, _factory(values[2].address), None)
    assert type(got.a) is RemoteActorRef


def test_refs_need_a_factory_and_a_good_uri(impl: types.SimpleNamespace) -> None:
    data = impl.encode_plain("t.Tick", (_ref("/user/a"), "x"))
    assert impl.decode_plain(data, PLANS) is None  # no factory: the generic path reports it
    for body in (b"not a uri", b"\xff\xfe", b""):
        bad = generic_bytes("t.Plain", (msgpack.ExtType(6, body),))
        assert impl.decode_plain(bad, PLANS, _factory) is None
    other_ext = generic_bytes("t.Plain", (msgpack.ExtType(7, b"\x01"),))
    assert impl.decode_plain(other_ext, PLANS, _factory) is None

    def failing(address: ActorAddress) -> Any:
        raise RuntimeError("no")

    assert impl.decode_plain(data, PLANS, failing) is None


def test_ref_subclasses_are_not_plain(impl: types.SimpleNamespace) -> None:
    class MyRef(RemoteActorRef):  # type: ignore[type-arg]
        pass

    assert impl.encode_plain("t.Plain", (_ref("/user/a", MyRef),)) is None


# -- a plain value sent by itself ---------------------------------------------------------


@FIXTURE_OK
@given(plain_values)
def test_a_plain_value_by_itself_reads_as_the_generic_path_does(impl: types.SimpleNamespace, value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    got = impl.decode_plain(data, PLANS)
    if value is None:
        assert got is None  # None means "declined": the generic path decodes it
    else:
        assert same(got, value)
        assert same(got, MsgpackSerializer(REG).deserialize(data))


def test_a_ref_by_itself_is_plain_with_a_factory(impl: types.SimpleNamespace) -> None:
    ref = _ref("/temp/ask-9")
    data = MsgpackSerializer(REG).serialize(ref)
    assert impl.decode_plain(data, PLANS, _factory) == ref
    assert impl.decode_plain(data, PLANS) is None  # no factory: the generic path reports it


@pytest.mark.parametrize(
    "value", [[1], {"a": 1}, [], {}, 2**70, msgpack.ExtType(7, b"x"), msgpack.Timestamp(1)], ids=repr
)
def test_other_values_by_themselves_decline(impl: types.SimpleNamespace, value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True, default=lambda v: msgpack.ExtType(2, b"big"))
    assert impl.decode_plain(data, PLANS) is None


def test_a_value_with_bytes_after_it_declines(impl: types.SimpleNamespace) -> None:
    assert impl.decode_plain(b"\x01\x02", PLANS) is None
    assert impl.decode_plain(msgpack.packb("text") + b"\xc0", PLANS) is None


# -- the cycle collector -------------------------------------------------------------------


@dataclass(frozen=True)
class Frozen:
    a: Any
    b: Any


def test_frozen_messages_of_scalars_stay_out_of_the_cycle_collector(impl: types.SimpleNamespace) -> None:
    # The Cython decoder untracks them (what CPython does for tuples of scalars); they
    # are still freed by reference counting, and anything else stays tracked.
    import gc
    import weakref

    reg = TypeRegistry()
    for cls in (Frozen, Plain):
        reg.register(cls, f"t.{cls.__name__}")
        reg._plan_for_name(f"t.{cls.__name__}")
    scalars = impl.decode_plain(generic_bytes("t.Frozen", (1, "x")), reg._name_plans)
    assert scalars == Frozen(1, "x")
    assert gc.is_tracked(scalars) is (impl.kind == "pure")
    gone = weakref.ref(scalars)
    del scalars
    assert gone() is None
    ref = _ref("/user/a")
    with_ref = impl.decode_plain(generic_bytes("t.Frozen", (1, _ref_ext(ref))), reg._name_plans, _factory)
    assert with_ref == Frozen(1, ref) and gc.is_tracked(with_ref)
    mutable = impl.decode_plain(generic_bytes("t.Plain", ("x",)), reg._name_plans)
    assert mutable == Plain("x") and gc.is_tracked(mutable)


# -- hash-safe keys: safe_members, dict_from_pairs, keys_safe_within ----------------------------


def codec(impl: types.SimpleNamespace) -> types.ModuleType:
    """The plain codec module of the twin ``impl`` names."""
    return importlib.import_module("casty._fast.plain_codec" if impl.kind == "fast" else "casty.plain_codec")


class Hue(enum.Enum):
    RED = 1


class Strict(enum.Flag):
    A = 1
    B = 2


class Keep(enum.Flag, boundary=enum.KEEP):
    A = 1


class Small(enum.IntEnum):
    ONE = 1


class Mask(enum.IntFlag):
    A = 1


class MyInt(int):
    def __index__(self) -> int:  # the rule reads the value itself, not what this says
        return 0


LIMIT = 2**60
SAFE = [
    None, True, False, "", "s", b"", b"b", 0, 1, -1, -2, LIMIT - 1, -LIMIT + 1, Hue.RED, Strict.A,
    Strict.A | Strict.B, Small.ONE, Mask.A, Mask(LIMIT - 1), MyInt(5), _ref("/user/a"),
    LocalActorRef(ActorAddress("s", "/user/a"), None),  # type: ignore[arg-type]
]
UNSAFE = [
    LIMIT, -LIMIT, LIMIT + 1, 2**64, -(2**63), 2**61 - 1, 2**200, 0.0, 1.5, -0.0, math.inf, math.nan,
    (), (1,), frozenset(), frozenset({1}), Keep(2), Keep.A, Mask(LIMIT), MyInt(LIMIT),
    ActorAddress("s", "/a"), Tick(1, "x"), [1], {},
]


@pytest.mark.parametrize("key", SAFE, ids=repr)
def test_hash_safe_keys_are_accepted(impl: types.SimpleNamespace, key: Any) -> None:
    mod = codec(impl)
    assert mod.safe_members([key]) and mod.safe_members({key}) and mod.safe_members({key: 1})
    assert mod.dict_from_pairs([("a", 1), (key, 2)]) == {"a": 1, key: 2}
    assert mod.keys_safe_within([{"a": [{key: 1}]}])


@pytest.mark.parametrize("key", UNSAFE, ids=repr)
def test_other_keys_are_refused(impl: types.SimpleNamespace, key: Any) -> None:
    mod = codec(impl)
    assert not mod.safe_members(["a", key, 1])
    assert mod.dict_from_pairs([("a", 1), (key, 2)]) is None
    if not isinstance(key, list | dict):  # (unhashable: no dict holds them)
        assert not mod.keys_safe_within([1, {"a": [{"b": 1, key: 1}]}])
        assert not mod.keys_safe_within({key: 1})


def test_the_int_limit_is_what_the_docs_say(impl: types.SimpleNamespace) -> None:
    mod = codec(impl)
    assert mod.KEY_INT_LIMIT == 2**60
    assert [mod.safe_members([n]) for n in (2**60 - 1, 2**60, -(2**60) + 1, -(2**60))] == [True, False, True, False]
    # Inside the limit hash(n) == n: distinct values, distinct hashes (but for -1 and -2).
    assert hash(2**60 - 1) == 2**60 - 1 and hash(-(2**60) + 1) == -(2**60) + 1


def test_keys_safe_within_looks_only_through_lists_and_dicts(impl: types.SimpleNamespace) -> None:
    mod = codec(impl)
    # Tuples, sets and dataclasses are packed through calls of their own, each checked there.
    assert mod.keys_safe_within(({1.5: 1},)) and mod.keys_safe_within(Plain({1.5: 1}))
    assert mod.keys_safe_within([1, "x", 2.5, (1.5,), [[[]]], {"k": {"j": [None]}}])
    deep: Any = {1.5: 1}
    for _ in range(600):  # past KEYS_DEPTH it stops looking (msgpack refuses 512 levels)
        deep = [deep]
    assert mod.keys_safe_within(deep)
    shallow: Any = {1.5: 1}
    for _ in range(400):
        shallow = [shallow]
    assert not mod.keys_safe_within(shallow)
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert mod.keys_safe_within(cyclic)  # bounded by the depth; the packer refuses it


hashables = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**61), 2**61), st.floats(), st.text(max_size=3),
    st.binary(max_size=3), st.sampled_from([Hue.RED, Strict.A, Keep(4), Small.ONE, Mask.A, (), (1,), frozenset()]),
)
nested = st.recursive(
    hashables,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hashables, inner, max_size=3),
    max_leaves=10,
)


@FIXTURE_OK
@given(st.lists(hashables, max_size=6), nested)
def test_twins_agree_on_hash_safety(impl: types.SimpleNamespace, items: list[Any], value: Any) -> None:
    mod, pure = codec(impl), importlib.import_module("casty.plain_codec")
    expected = all(pure._safe_key(x) for x in items)
    assert mod.safe_members(items) is expected
    pairs = [(x, i) for i, x in enumerate(items)]
    assert mod.dict_from_pairs(pairs) == (dict(pairs) if expected else None)
    assert mod.keys_safe_within(value) is pure.keys_safe_within(value)


def test_a_released_large_value_is_refilled_by_the_next_of_its_size(impl: types.SimpleNamespace) -> None:
    module = importlib.import_module(impl.decode_plain.__module__)
    if not getattr(module, "_REFILLS_VALUES", False):
        pytest.skip("this twin keeps no decoded values aside")
    plan = REG._plan_for_class(Plain)
    assert plan is not None
    size = 256 * 1024

    def decoded(fill: bytes) -> bytes:
        got = impl.decode_plain(generic_bytes(plan.name, (fill * size,)), PLANS)
        assert type(got) is Plain
        return got.x  # type: ignore[no-any-return]

    first = decoded(b"a")
    assert first == b"a" * size and hash(first) == hash(b"a" * size)
    where = id(first)
    del first  # released: the next value of its size refills it
    second = decoded(b"b")
    assert id(second) == where and second == b"b" * size
    assert hash(second) == hash(b"b" * size)  # the cached hash was forgotten
    third = decoded(b"c")  # second is still held: never written into
    assert third is not second and second == b"b" * size and third == b"c" * size
    view = memoryview(third)  # a view holds it too
    fourth = decoded(b"d")
    assert bytes(view) == b"c" * size and fourth == b"d" * size
    assert module.spare_value_bytes() == size
