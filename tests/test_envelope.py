"""MessageEnvelope: wire vectors, inputs, value semantics, bad input, and twin agreement."""

from __future__ import annotations

import array
import copy
import json
import pickle
import struct
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casty.transport import envelope as pure_envelope
from casty.transport.envelope import EnvelopeDecodeError

VECTORS = json.loads((Path(__file__).parent / "data" / "wire_vectors.json").read_text())
ENVELOPES = VECTORS["envelopes"]
DECODE_ONLY = VECTORS["decode_only"]


def _fields(env: Any) -> tuple[str, str, bytes, str]:
    return (env.target, env.sender, env.payload, env.type_hint)


def _raw(header: bytes, payload: bytes = b"") -> bytes:
    """Envelope bytes around an arbitrary header."""
    return struct.pack(">I", len(header)) + header + payload


def test_seed_page_example(impl: types.SimpleNamespace) -> None:
    env = impl.MessageEnvelope(
        target="casty://sys/user/a",
        sender="casty://sys/",
        payload=b'{"x":1}',
        type_hint="mymod.Msg",
    )
    data = env.to_bytes()
    assert impl.MessageEnvelope.from_bytes(data).target == "casty://sys/user/a"


@pytest.mark.parametrize("case", ENVELOPES, ids=[c["name"] for c in ENVELOPES])
def test_vector_encodes_byte_for_byte(impl: types.SimpleNamespace, case: dict[str, str]) -> None:
    env = impl.MessageEnvelope(
        case["target"], case["sender"], bytes.fromhex(case["payload_hex"]), case["type_hint"]
    )
    assert env.to_bytes().hex() == case["bytes_hex"]


@pytest.mark.parametrize("case", ENVELOPES, ids=[c["name"] for c in ENVELOPES])
def test_vector_decodes(impl: types.SimpleNamespace, case: dict[str, str]) -> None:
    env = impl.MessageEnvelope.from_bytes(bytes.fromhex(case["bytes_hex"]))
    assert _fields(env) == (
        case["target"],
        case["sender"],
        bytes.fromhex(case["payload_hex"]),
        case["type_hint"],
    )
    assert type(env.payload) is bytes


@pytest.mark.parametrize("case", DECODE_ONLY, ids=[str(i) for i in range(len(DECODE_ONLY))])
def test_decode_only_vectors(impl: types.SimpleNamespace, case: dict[str, str]) -> None:
    env = impl.MessageEnvelope.from_bytes(bytes.fromhex(case["bytes_hex"]))
    assert _fields(env) == (
        case["target"],
        case["sender"],
        bytes.fromhex(case["payload_hex"]),
        case["type_hint"],
    )


@pytest.mark.parametrize(
    "header",
    [
        b'{"target": "t", "sender": "s", "type_hint": "h", "extra": [1, {"a": null}]}',
        b'{"extra": 1, "type_hint": "h", "target": "t", "sender": "s"}',
        b' \n{"target":"t","sender":"s","type_hint":"h"}\t ',
        b'{"target": "\\u0074", "sender": "\\u0073", "type_hint": "\\u0068"}',
        b'{"target": "x", "target": "t", "sender": "s", "type_hint": "h"}',  # last one wins
        b'{"target": "t", "sender": "s", "type_hint": "h"} ',  # canonical plus a trailing space
    ],
)
def test_other_json_forms_decode(impl: types.SimpleNamespace, header: bytes) -> None:
    env = impl.MessageEnvelope.from_bytes(_raw(header, b"pay"))
    assert _fields(env) == ("t", "s", b"pay", "h")


def test_non_ascii_header_decodes(impl: types.SimpleNamespace) -> None:
    header = '{"target": "casty://sé/user/😀", "sender": "s", "type_hint": "h"}'.encode()
    env = impl.MessageEnvelope.from_bytes(_raw(header))
    assert env.target == "casty://sé/user/😀"


def test_input_kinds(impl: types.SimpleNamespace) -> None:
    case = ENVELOPES[1]
    data = bytes.fromhex(case["bytes_hex"])
    expected = impl.MessageEnvelope.from_bytes(data)
    framed = b"\x01\x02\x03" + data
    for given_data in (
        bytearray(data),
        memoryview(data),
        memoryview(bytearray(data)),
        memoryview(framed)[3:],  # a slice with a nonzero offset, as a frame parser hands it over
        memoryview(framed)[3:].toreadonly(),
        type("Sub", (bytes,), {})(data),
    ):
        env = impl.MessageEnvelope.from_bytes(given_data)
        assert env == expected
        assert type(env.payload) is bytes


def test_memoryview_of_wider_items_and_strided(impl: types.SimpleNamespace) -> None:
    data = impl.MessageEnvelope("t", "s", b"1234", "h").to_bytes()  # 56 bytes: 14 ints
    wide = memoryview(array.array("i", data))
    assert impl.MessageEnvelope.from_bytes(wide).payload == b"1234"
    doubled = bytes(b for pair in zip(data, b"\xee" * len(data), strict=True) for b in pair)
    strided = memoryview(doubled)[::2]
    assert not strided.c_contiguous
    assert impl.MessageEnvelope.from_bytes(strided).payload == b"1234"


def test_payload_bytes_like_becomes_bytes(impl: types.SimpleNamespace) -> None:
    for payload in (bytearray(b"abc"), memoryview(b"xabc")[1:], type("B", (bytes,), {})(b"abc")):
        env = impl.MessageEnvelope("t", "s", payload, "h")
        assert type(env.payload) is bytes
        assert env.payload == b"abc"


def test_str_subclass_stored_as_plain_str(impl: types.SimpleNamespace) -> None:
    class Loud(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    env = impl.MessageEnvelope(Loud("t"), "s", b"", Loud("h"))
    assert type(env.target) is str and type(env.type_hint) is str
    assert env.to_bytes() == impl.MessageEnvelope("t", "s", b"", "h").to_bytes()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1, "s", b"", "h"), "target must be str, got int"),
        (("t", None, b"", "h"), "sender must be str, got NoneType"),
        (("t", "s", "text", "h"), "payload must be bytes, bytearray or memoryview, got str"),
        (("t", "s", [1], "h"), "payload must be bytes, bytearray or memoryview, got list"),
        (("t", "s", b"", b"h"), "type_hint must be str, got bytes"),
    ],
)
def test_constructor_type_errors(
    impl: types.SimpleNamespace, args: tuple[Any, ...], match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        impl.MessageEnvelope(*args)


def test_value_semantics(impl: types.SimpleNamespace) -> None:
    m = impl.MessageEnvelope
    a = m("casty://s/user/a", "casty://s/", b"\x00'\"", "m.T")
    b = m("casty://s/user/a", "casty://s/", bytearray(b"\x00'\""), "m.T")
    assert a == b and not (a != b)
    assert hash(a) == hash(b) == hash(("casty://s/user/a", "casty://s/", b"\x00'\"", "m.T"))
    assert a != m("casty://s/user/a", "casty://s/", b"", "m.T")
    assert a != ("casty://s/user/a", "casty://s/", b"\x00'\"", "m.T")
    assert len({a, b}) == 1
    assert repr(a) == (
        "MessageEnvelope(target='casty://s/user/a', sender='casty://s/', "
        "payload=b'\\x00\\'\"', type_hint='m.T')"
    )
    assert repr(a) == repr(pure_envelope.MessageEnvelope(*_fields(a)))
    for field in ("target", "sender", "payload", "type_hint"):
        with pytest.raises(AttributeError):
            setattr(a, field, getattr(b, field))
        with pytest.raises(AttributeError):
            delattr(a, field)
    with pytest.raises(AttributeError):
        a.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del a.extra  # type: ignore[attr-defined]
    assert not hasattr(a, "extra")
    assert _fields(a) == ("casty://s/user/a", "casty://s/", b"\x00'\"", "m.T")
    for clone in (pickle.loads(pickle.dumps(a)), copy.copy(a), copy.deepcopy(a)):
        assert type(clone) is m and clone == a


@pytest.mark.parametrize("name", ["target", "sender", "payload", "type_hint", "extra", "__dict__", "to_bytes"])
def test_twins_refuse_every_attribute_write_with_the_same_exception_class(name: str) -> None:
    # Differential: whatever the name, setting or deleting it raises an AttributeError in
    # both twins (the pure one raised TypeError for a name it does not have).
    fast = pytest.importorskip("casty._fast.envelope")
    outcomes = []
    for cls in (fast.MessageEnvelope, pure_envelope.MessageEnvelope):
        env = cls("t", "s", b"p", "h")
        for act in (lambda e: setattr(e, name, b"x"), lambda e: delattr(e, name)):
            with pytest.raises(Exception) as info:
                act(env)
            outcomes.append(isinstance(info.value, AttributeError))
        assert _fields(env) == ("t", "s", b"p", "h")
    assert outcomes == [True] * 4


def test_twins_are_different_classes() -> None:
    fast = pytest.importorskip("casty._fast.envelope")
    a = fast.MessageEnvelope("t", "s", b"p", "h")
    b = pure_envelope.MessageEnvelope("t", "s", b"p", "h")
    assert a != b and b != a
    assert hash(a) == hash(b)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", r"envelope too short: 0 bytes, need at least 4"),
        (b"\x00\x00\x00", r"envelope too short: 3 bytes"),
        (b"\x00\x00\x00\x10{}", r"header length 16 runs past the end of the data \(2 bytes"),
        (b"\xff\xff\xff\xff", r"header length 4294967295 runs past the end"),
        (_raw(b'{"target": "\xff", "sender": "s", "type_hint": "h"}'), "not valid UTF-8"),
        (_raw(b'{"target": "\xed\xa0\x80", "sender": "s", "type_hint": "h"}'), "not valid UTF-8"),
        (_raw('{"target": "t", "sender": "s", "type_hint": "h"}'.encode("utf-16")), "not valid"),
        (_raw(b""), "not valid JSON"),
        (_raw(b'{"target": "t", "sender": "s", "type_hint": "h"'), "not valid JSON"),
        (_raw(b'{"target": "t", "sender": "s", "type_hint": "h"}}'), "not valid JSON"),
        (_raw(b"[" * 100_000), "not valid JSON"),
        (_raw(b'["t", "s", "h"]'), "must be a JSON object, got list"),
        (_raw(b'"t"'), "must be a JSON object, got str"),
        (_raw(b'{"target": "t", "type_hint": "h"}'), "has no 'sender' key"),
        (
            _raw(b'{"target": "t", "sender": "s", "type_hint": 1}'),
            "'type_hint' must be a string, got int",
        ),
        (
            _raw(b'{"target": null, "sender": "s", "type_hint": "h"}'),
            "'target' must be a string, got NoneType",
        ),
    ],
    ids=[
        "empty",
        "three-bytes",
        "length-past-end",
        "max-length",
        "bad-utf8",
        "utf8-surrogate",
        "utf16",
        "empty-header",
        "truncated-json",
        "trailing-brace",
        "deep-nesting",
        "array",
        "string",
        "missing-key",
        "int-value",
        "null-value",
    ],
)
def test_bad_input(impl: types.SimpleNamespace, data: bytes, match: str) -> None:
    with pytest.raises(EnvelopeDecodeError, match=match):
        impl.MessageEnvelope.from_bytes(data)


def test_header_shorter_than_its_json(impl: types.SimpleNamespace) -> None:
    # header_len one short: the closing brace lands in the payload and the header is cut-off JSON.
    good = impl.MessageEnvelope("t", "s", b"", "h").to_bytes()
    data = struct.pack(">I", len(good) - 5) + good[4:]
    with pytest.raises(EnvelopeDecodeError, match="not valid JSON"):
        impl.MessageEnvelope.from_bytes(data)


@pytest.mark.parametrize("last", [b" ", b"]", b'"', b"\x00", b"\xff"])
def test_canonical_header_must_end_with_brace(impl: types.SimpleNamespace, last: bytes) -> None:
    good = impl.MessageEnvelope("t", "s", b"", "h").to_bytes()
    with pytest.raises(EnvelopeDecodeError, match="not valid"):
        impl.MessageEnvelope.from_bytes(good[:-1] + last)


@pytest.mark.parametrize("data", ["text", None, 42, array.array("B", b"\x00\x00\x00\x00")])
def test_non_bytes_like_is_type_error(impl: types.SimpleNamespace, data: object) -> None:
    with pytest.raises(TypeError, match="expects bytes, bytearray or memoryview, got "):
        impl.MessageEnvelope.from_bytes(data)


# --- the twins side by side -----------------------------------------------------------------

# Strings the Cython fast path takes as they are, and strings that need JSON escapes.
_PLAIN = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'))
_ANY_TEXT = st.text(st.characters(exclude_categories=()))  # surrogates included
_FIELD = st.one_of(_PLAIN, _PLAIN, _ANY_TEXT, st.sampled_from(["", '"', "\\", "\x7f", "é"]))
_PAYLOAD = st.binary(max_size=64)
_FUZZ_FIELD = st.one_of(_PLAIN, _PLAIN, _PLAIN, _FIELD)


def _fast_module() -> types.ModuleType:
    return pytest.importorskip("casty._fast.envelope")


def _outcome(module: types.ModuleType, data: bytes) -> tuple[str, object]:
    try:
        env = module.MessageEnvelope.from_bytes(data)
    except EnvelopeDecodeError as exc:
        return ("error", str(exc))
    return ("ok", _fields(env))


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """An envelope, mostly in the canonical form the fast path takes, then up to three
    byte-level mutations that favour the header's punctuation, last byte and length."""
    target, sender, hint = draw(_FUZZ_FIELD), draw(_FUZZ_FIELD), draw(_FUZZ_FIELD)
    payload = draw(_PAYLOAD)
    if draw(st.integers(0, 2)):
        data = bytearray(pure_envelope.MessageEnvelope(target, sender, payload, hint).to_bytes())
    else:
        obj: dict[str, object] = {"target": target, "sender": sender, "type_hint": hint}
        if draw(st.booleans()):
            obj = dict(reversed(list(obj.items())))
        if draw(st.booleans()):
            obj[draw(_PLAIN)] = draw(st.one_of(st.none(), st.integers(), _PLAIN))
        header = json.dumps(
            obj,
            ensure_ascii=draw(st.booleans()),
            separators=draw(st.sampled_from([(", ", ": "), (",", ":"), (" ,", " : ")])),
        ).encode("utf-8", "surrogatepass")
        data = bytearray(_raw(header, payload))
    header_end = 4 + struct.unpack_from(">I", data)[0]
    edges = [i for i in range(4, header_end) if data[i] in b'{}":, '] + [header_end - 1] * 4
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "length", "nudge"]))
        at = draw(st.one_of(st.integers(0, len(data)), st.sampled_from(edges)))
        hlen = struct.unpack_from(">I", data)[0] if len(data) >= 4 else 0
        if kind == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif kind == "delete" and at < len(data):
            del data[at]
        elif kind == "truncate":
            del data[at:]
        elif kind == "length" and len(data) >= 4:
            data[:4] = struct.pack(">I", draw(st.integers(0, 2**32 - 1)))
        elif kind == "nudge" and len(data) >= 4:
            data[:4] = struct.pack(">I", (hlen + draw(st.integers(-3, 3))) % 2**32)
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=120), _mutated(), _mutated(), _mutated()))
def test_fuzz_twins_agree(data: bytes) -> None:
    fast = _fast_module()
    expected = _outcome(pure_envelope, data)
    assert _outcome(fast, data) == expected
    assert _outcome(fast, memoryview(b"\x00" + data)[1:]) == expected


def _near_misses(data: bytes) -> list[bytes]:
    """Every single-byte edit of the prefix and header, and every small header_len change."""
    header_end = 4 + struct.unpack_from(">I", data)[0]
    out = []
    for i in range(header_end + 1):
        for byte in (0x00, 0x20, 0x22, 0x2C, 0x3A, 0x5C, 0x7B, 0x7D, 0x7E, 0x7F, 0x80, 0xFF):
            out.append(data[:i] + bytes([byte]) + data[i + 1 :])
            out.append(data[:i] + bytes([byte]) + data[i:])
        out.append(data[:i] + data[i + 1 :])
        out.append(data[:i])
    for delta in range(-4, 5):
        out.append(struct.pack(">I", (header_end - 4 + delta) % 2**32) + data[4:])
    return out


@pytest.mark.parametrize("case", ENVELOPES, ids=[c["name"] for c in ENVELOPES])
def test_near_misses_twins_agree(case: dict[str, str]) -> None:
    fast = _fast_module()
    for data in _near_misses(bytes.fromhex(case["bytes_hex"])):
        assert _outcome(fast, data) == _outcome(pure_envelope, data), data


@settings(max_examples=300, deadline=None)
@given(_FIELD, _FIELD, _PAYLOAD, _FIELD)
def test_round_trip_twins_agree(target: str, sender: str, payload: bytes, hint: str) -> None:
    fast = _fast_module()
    header = json.dumps({"target": target, "sender": sender, "type_hint": hint}).encode("ascii")
    expected = _raw(header, payload)
    for module in (pure_envelope, fast):
        env = module.MessageEnvelope(target, sender, payload, hint)
        assert env.to_bytes() == expected
        assert module.encode_header(target, sender, hint) == expected[: 4 + len(header)]
        assert module.MessageEnvelope.from_bytes(expected) == env


@pytest.mark.parametrize("module_name", ["casty.transport.envelope", "casty._fast.envelope"])
def test_encode_header_checks_types(module_name: str) -> None:
    module = pytest.importorskip(module_name)
    with pytest.raises(TypeError, match="sender must be str, got int"):
        module.encode_header("t", 1, "h")
    assert module.EnvelopeDecodeError is EnvelopeDecodeError
