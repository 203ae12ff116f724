"""Fuzzers for every decoder that reads peer bytes, run against both twins at once.

Each example feeds the same hostile or mutated input to the Cython build and the
pure twin and requires identical outcomes (values delivered, exception class and
message, connection state), and checks both against a small reference model
written here from the wire format in docs/architecture.md:

* the frame splitter (``FrameProtocol.data_received``): random chunkings, chunk
  kinds and owner behaviour give what one chunk gives, and what the model gives;
* the handshake parser (``decode_handshake``), alone and as frames through the
  protocol;
* ``MessageEnvelope.from_bytes``;
* ``MsgpackSerializer`` / ``JsonSerializer`` ``.deserialize``: a value or a
  SerializationError, never another exception, never an import, never a call to
  anything a peer names that is not registered; dict keys and set members that are
  not hash-safe (colliding ints and floats among them) refused alike by both twins of
  the plain codec's key checks, which also agree with a model of the rule;
* ``InboundMessageHandler.on_frame``, which chains the last two (the Cython twin
  with its own in-place header and plain-message readers): same deliveries, same
  drops.

The example count comes from the active Hypothesis profile (see conftest.py):
the suite's default keeps this file fast; ``make fuzz`` runs the ``fuzz`` profile
against a bounds-checked build and prints how many examples each decoder tried.
Other properties of these decoders (vectors, limits, flow control) live in
test_framing.py, test_envelope.py and test_serialization.py.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import datetime
import decimal
import enum
import importlib
import importlib.abc
import ipaddress
import itertools
import json
import logging
import os
import re
import struct
import sys
import types
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from casty import serialization
from casty.address import ActorAddress
from casty.ref import RemoteActorRef
from casty.serialization import JsonSerializer, MsgpackSerializer, SerializationError, TypeRegistry
from casty.transport import envelope as pure_envelope
from casty.transport import framing as pure_framing
from casty.transport.envelope import EnvelopeDecodeError
from casty.transport.framing import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HANDSHAKE_SIZE,
    DEFAULT_MAX_IGNORED_FRAMES,
    FRAME_HANDSHAKE,
    FRAME_MESSAGE,
    MAX_FRAME_LENGTH,
    MAX_HANDSHAKE_SIZE,
    MAX_HOST_LENGTH,
    HandshakeError,
    ignored_run_problem,
)
from casty.transport.handshake import Handshake, encode_hello, parse_handshake
from casty.wire import FRAME_COMPACT, FRAME_HDR_ENTRY

_REQUIRE = os.environ.get("CASTY_REQUIRE_EXTENSIONS", "").strip().lower() in {"1", "true", "yes"}


def _twins(pure: str, fast: str) -> dict[str, types.ModuleType]:
    """Both implementations of one module by kind; the Cython one must load when required."""
    found = {"pure": importlib.import_module(pure)}
    try:
        found["fast"] = importlib.import_module(fast)
    except ImportError:
        if _REQUIRE:
            raise
    return found


FRAMING = _twins("casty.transport.framing", "casty._fast.framing")
ENVELOPE = _twins("casty.transport.envelope", "casty._fast.envelope")
PLAIN = _twins("casty.plain_codec", "casty._fast.plain_codec")
INBOUND = _twins("casty.transport.inbound", "casty._fast.inbound")

# Every fuzzer: the example count is the profile's, never set here.
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- totals ------------------------------------------------------------------------------

TRIED: Counter[tuple[str, str]] = Counter()


def _tried(decoder: str, kinds: Iterable[str]) -> None:
    for kind in kinds:
        TRIED[decoder, kind] += 1


class _Totals:
    """Prints, at the end of the session, how many examples each decoder tried per twin."""

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
        tr = terminalreporter
        tr.write_sep("=", "casty fuzz totals (examples tried)")
        for decoder in dict.fromkeys(d for d, _ in TRIED):
            per_kind = "  ".join(f"{k}: {n}" for (d, k), n in TRIED.items() if d == decoder)
            tr.write_line(f"{decoder:<22} {per_kind}")
        failed = [
            r
            for key in ("failed", "error")
            for r in tr.stats.get(key, [])
            if "test_fuzz.py" in getattr(r, "nodeid", "")
        ]
        tr.write_line(f"failures: {len(failed)}")


_LOOP: asyncio.AbstractEventLoop | None = None


@pytest.fixture(scope="module", autouse=True)
def _fuzz_module(request: pytest.FixtureRequest) -> Iterator[None]:
    global _LOOP
    plugins = request.config.pluginmanager
    if plugins.get_plugin("casty-fuzz-totals") is None:
        plugins.register(_Totals(), "casty-fuzz-totals")
    # Thousands of protocol errors and raising sinks are logged here; test_framing checks
    # those lines, here they would only pile up in the capture.
    casty_log = logging.getLogger("casty")
    level = casty_log.level
    casty_log.setLevel(logging.CRITICAL)
    _LOOP = asyncio.new_event_loop()
    try:
        yield
    finally:
        casty_log.setLevel(level)
        _LOOP.close()
        _LOOP = None


def _run(coro: Any) -> Any:
    assert _LOOP is not None
    return _LOOP.run_until_complete(coro)


# --- shared strategies ---------------------------------------------------------------------

# Bytes that are punctuation, boundaries or type markers in JSON, msgpack or our frames.
_HOT = (0x00, 0x01, 0x09, 0x20, 0x22, 0x2C, 0x30, 0x3A, 0x5B, 0x5C, 0x5D, 0x7B, 0x7D, 0x7F,
        0x80, 0x91, 0xA1, 0xC0, 0xC1, 0xC3, 0xC7, 0xC9, 0xD4, 0xDC, 0xDE, 0xED, 0xEF, 0xFF)
# 4-byte big-endian values worth writing over a length prefix.
_WORDS = (0, 1, 2, 3, 4, 5, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 2**24, 2**31 - 1, 2**31, 2**32 - 1)
# Deterministic filler for big bodies: shifted starts make a misplaced copy visible.
_PATTERN = bytes(range(256)) * 300


def _mutate(draw: st.DrawFn, data: bytes, anchors: Sequence[int] = ()) -> bytes:
    """One to four byte-level edits, half of them at ``anchors`` (length prefixes, header ends)."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        n = len(buf)
        at = min(draw(st.sampled_from(anchors)), n) if anchors and draw(st.booleans()) else draw(st.integers(0, n))
        op = draw(st.integers(0, 7))
        if op == 0 and at < n:
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and at < n:
            buf[at] = draw(st.sampled_from(_HOT))
        elif op == 2:
            buf[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == 3:
            del buf[at : at + draw(st.integers(1, 8))]
        elif op == 4:
            buf[at:at] = buf[at : at + draw(st.integers(1, 16))]  # a repeated stretch
        elif op == 5:
            del buf[at:]
        elif op == 6:  # a length: a round number, or one close to what follows
            rest = n - at - 4
            word = draw(st.sampled_from(_WORDS)) if draw(st.booleans()) else (rest + draw(st.integers(-6, 6))) % 2**32
            buf[at : at + 4] = word.to_bytes(4, "big")
        else:
            buf[at:at] = bytes([draw(st.sampled_from(_HOT))]) * draw(st.integers(1, 3))
    return bytes(buf)


# Around the hash-safe int range (|n| < 2**60), and ints whose hashes collide (hash 0, -2).
_KEY_EDGES = [2**60 - 1, 2**60, -(2**60) + 1, -(2**60), 2**61 - 1, 2 * (2**61 - 1), -1, -2, 2.0**61, 1.0]
_PLAIN_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'), max_size=24)
_ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates too
_ODD_TEXT = st.sampled_from(["", '"', "\\", "\x7f", "\x00", "\n", "é", "\u2028", "\U0001f600", "\ud800", "\udfff"])
_TEXT = st.one_of(_PLAIN_TEXT, _PLAIN_TEXT, _ANY_TEXT, _ODD_TEXT)
_JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), _PLAIN_TEXT,
    st.sampled_from([2**64, -(2**63) - 1, 1e308, -0.0]),
    st.sampled_from(_KEY_EDGES),
)
_JSON_VALUE = st.recursive(
    _JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_PLAIN_TEXT, inner, max_size=3),
    max_leaves=5,
)
_SEPARATORS = st.sampled_from([None, (",", ":"), (" , ", " : "), (",\n", ":\t"), (",\r ", ": ")])


def _json_text(draw: st.DrawFn, obj: Any) -> bytes:
    """``obj`` as JSON in a drawn style; lone surrogates travel as invalid UTF-8 unless escaped."""
    text = json.dumps(
        obj,
        ensure_ascii=draw(st.booleans()),
        separators=draw(_SEPARATORS),
        indent=draw(st.sampled_from([None, None, 0, 2])),
    )
    if draw(st.integers(0, 4)) == 0:
        text = draw(st.sampled_from([" ", "\n", "\t", "\ufeff"])) + text + draw(st.sampled_from(["", " ", "\r\n"]))
    return text.encode("utf-8", "surrogatepass")


@st.composite
def _json_objects(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> bytes:
    """A JSON object holding ``fields`` (some dropped, retyped or repeated, keys shuffled,
    extra keys), or now and then some other JSON value."""
    if draw(st.integers(0, 9)) == 0:
        return _json_text(draw, draw(_JSON_VALUE))
    items = [(k, draw(v)) for k, v in fields.items()]
    if draw(st.integers(0, 3)) == 0:
        i = draw(st.integers(0, len(items) - 1))
        if draw(st.booleans()):
            del items[i]
        else:
            items[i] = (items[i][0], draw(_JSON_VALUE))
    items += draw(st.lists(st.tuples(_PLAIN_TEXT, _JSON_VALUE), max_size=2))
    items = draw(st.permutations(items))
    text = _json_text(draw, dict(items))
    core = text.strip()
    if items and core.startswith(b"{") and core.endswith(b"}") and draw(st.integers(0, 4)) == 0:
        # A repeated key: JSON keeps the last one.
        key, value = draw(st.sampled_from(items))[0], draw(_JSON_VALUE)
        extra = json.dumps({key: value}).encode()[1:-1]
        text = b"{" + extra + b", " + core[1:] if draw(st.booleans()) else core[:-1] + b", " + extra + b"}"
    return text


# --- the handshake parser --------------------------------------------------------------------

_HOSTS = st.one_of(
    st.sampled_from(["10.0.0.1", "::1", "localhost", "a" * MAX_HOST_LENGTH, "a" * (MAX_HOST_LENGTH + 1)]),
    _TEXT,
)
_PORTS = st.one_of(
    st.integers(0, 65535),
    st.integers(-3, 70_000),
    st.sampled_from([0, 65535, 65536, -1, True, False, None, 7001.0, "7001", 2**64, [], {}]),
    st.floats(),
)


_UIDS = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from([-1, 2**64, True, None, 1.0, "7", 0, 2**64 - 1]),
)
_PROTOS = st.one_of(st.integers(-1, 5), st.sampled_from([True, None, 2.0, "2", 10**30]))
_CAPS = st.one_of(
    st.lists(st.sampled_from(["hb", "watch", "frag", "hdr", "x" * 32, "x" * 33, ""]), max_size=4),
    st.lists(st.just("hb"), min_size=64, max_size=66),
    st.sampled_from(["hb", None, {}, [1], [None]]),
)


def _hex_or_not(size: int) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text("0123456789abcdef", min_size=size, max_size=size),
        st.text("0123456789abcdefABCDEFg", min_size=size - 1, max_size=size + 1),
        st.sampled_from([None, 0, "", []]),
    )


@st.composite
def _handshake_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.binary(max_size=60))
    if kind == 1:  # nesting: JSON's recursion limit, or the size limit first
        depth = draw(st.one_of(st.integers(1, 3000), st.sampled_from([MAX_HANDSHAKE_SIZE, MAX_HANDSHAKE_SIZE + 1])))
        return b"[" * depth + b"]" * draw(st.sampled_from([0, depth]))
    fields: dict[str, st.SearchStrategy[Any]] = {"host": _HOSTS, "port": _PORTS}
    if kind >= 10:  # a v2 handshake: uid, proto, caps and the cookie's nonce and mac
        fields |= {"uid": _UIDS, "proto": _PROTOS, "caps": _CAPS}
        if kind >= 13:
            fields |= {"nonce": _hex_or_not(32), "mac": _hex_or_not(64)}
    body = draw(_json_objects(fields))
    if kind == 2:  # the right JSON in another encoding
        with contextlib.suppress(UnicodeError):
            body = body.decode("utf-8").encode(draw(st.sampled_from(["utf-16", "utf-32", "utf-8-sig", "latin-1"])))
    if kind >= 15:
        body = _mutate(draw, body, [0, len(body) - 1])
    return body


def _handshake_model(body: bytes) -> tuple[str, Any]:
    """What docs/architecture.md says a handshake body gives: ``("ok", (host, port))`` or ``("error", None)``."""
    bad = ("error", None)
    if len(body) > MAX_HANDSHAKE_SIZE:
        return bad
    try:
        obj = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return bad
    if not isinstance(obj, dict) or "host" not in obj or "port" not in obj:
        return bad
    host, port = obj["host"], obj["port"]
    if type(host) is not str or not 0 < len(host) <= MAX_HOST_LENGTH or type(port) is not int:
        return bad
    if not _host_model(host) or not 0 <= port <= 65535:
        return bad
    if "proto" not in obj:
        return ("ok", (host, port))  # v1: other keys ignored
    proto, uid, caps = obj["proto"], obj.get("uid"), obj.get("caps", [])
    if type(proto) is not int or proto < 2 or type(uid) is not int or not 0 <= uid < 2**64:
        return bad
    if not isinstance(caps, list) or len(caps) > 64 or not all(
        type(c) is str and 0 < len(c) <= 32 for c in caps
    ):
        return bad
    for name, size in (("nonce", 32), ("mac", 64)):
        value = obj.get(name)
        if value is not None and (
            type(value) is not str or len(value) != size or any(ch not in "0123456789abcdef" for ch in value)
        ):
            return bad
    return ("ok", (host, port))


def _host_model(host: str) -> bool:
    """A hostname (dot-separated labels of word characters and '-', 1..63 long, no '-' at
    either end) of at most 253 characters, or a printable ASCII IP literal."""
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host.rstrip(".")) <= 253 and all(
        0 < len(label) <= 63 and not label.startswith("-") and not label.endswith("-")
        and all(ch == "-" or re.fullmatch(r"\w", ch) for ch in label)  # word characters as re knows them
        for label in labels
    ):
        return True
    if ":" not in host or not (host.isascii() and host.isprintable()):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _decode_handshake(mod: types.ModuleType, body: Any) -> tuple[str, Any]:
    try:
        return ("ok", mod.decode_handshake(body))
    except HandshakeError as exc:
        return ("error", str(exc))


@FUZZ
@given(body=_handshake_bodies())
@example(body=b'{"host": "\\ud800", "port": 1}')  # a lone surrogate, escaped: valid JSON, bad host
@example(body=b'{"host": "a", "port": -0}')  # -0 is the integer 0
@example(body=b'{"host": "a", "port": 1e2}')  # a float, even a whole one
@example(body=b'\xef\xbb\xbf{"host": "a", "port": 1}')  # a UTF-8 BOM
@example(body=b"[" * 100_000)  # over the size limit: refused before parsing
def test_handshake_parser(body: bytes) -> None:
    _tried("handshake", FRAMING)
    expected = _handshake_model(body)
    outcomes = {
        (kind, form): _decode_handshake(mod, view)
        for kind, mod in FRAMING.items()
        for form, view in (("bytes", body), ("bytearray", bytearray(body)), ("view", memoryview(b"#" + body)[1:]))
    }
    first = outcomes["pure", "bytes"]
    event(f"handshake {first[0]}")
    assert all(o == first for o in outcomes.values()), outcomes
    assert first[0] == expected[0], (first, expected)
    if first[0] == "ok":
        assert first == expected
        host, port = first[1]
        frame = pure_framing.encode_handshake(host, port)  # what we would answer must read back
        assert pure_framing.decode_handshake(frame[5:]) == (host, port)
        hs = parse_handshake(body)  # and a v2 hello carrying what it said
        again = parse_handshake(encode_hello(Handshake(host, port, hs.uid if hs.uid is not None else 1, 2,
                                                       hs.caps, hs.nonce, hs.mac))[5:])
        assert (again.key, again.caps, again.nonce, again.mac) == ((host, port), hs.caps, hs.nonce, hs.mac)


# --- the frame splitter ----------------------------------------------------------------------

_FRAME_TYPES = st.sampled_from([FRAME_MESSAGE] * 5 + [FRAME_HANDSHAKE, FRAME_HANDSHAKE, 0x02, 0x7F, 0xFF])
_BODIES = st.one_of(
    st.binary(max_size=48),
    st.binary(max_size=48),
    st.builds(lambda n, at: _PATTERN[at : at + n], st.integers(49, 70_000), st.integers(0, 255)),
)
_MAX_FRAME = st.one_of(
    st.sampled_from([DEFAULT_MAX_FRAME_SIZE, MAX_FRAME_LENGTH, MAX_FRAME_LENGTH + 1, 2**70]),
    st.integers(1, 80),
)


@st.composite
def _streams(draw: st.DrawFn) -> bytes:
    """Frames (messages, handshakes good and bad, unknown types) back to back, sometimes
    mutated; now and then plain noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    parts, anchors, pos = [], [], 0
    for frame_type in draw(st.lists(_FRAME_TYPES, max_size=8)):
        body = draw(_handshake_bodies() if frame_type == FRAME_HANDSHAKE else _BODIES)
        parts.append(struct.pack(">IB", len(body) + 1, frame_type) + body)
        anchors.append(pos)
        pos += len(parts[-1])
    data = b"".join(parts)
    if draw(st.integers(0, 2)) == 0:
        data = _mutate(draw, data, [*anchors, pos])
    return data


@dataclass(frozen=True)
class _Plan:
    """What the receiving side does, which changes what the splitter must deliver."""

    sink_first: bool  # a message sink is set before any data arrives
    sink_on_handshake: bool  # a good handshake sets the sink (what TcpNode does)
    abort_bad_handshake: bool  # a bad handshake aborts (what TcpNode does)
    raise_at: frozenset[int]  # deliveries (0-based) on which the receiver raises
    stop_at: int | None  # the delivery on which the receiver closes or aborts
    stop_abort: bool


_PLANS = st.builds(
    _Plan,
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.frozensets(st.integers(0, 8), max_size=3),
    st.none() | st.integers(0, 8),
    st.booleans(),
)


class _Receiver:
    """Owner and sink in one: records everything in order, and acts out a plan.

    Nothing here may raise unplanned: the protocol would log and swallow it, so a
    broken contract is recorded as an event instead, where the comparison sees it.
    """

    def __init__(self, decode_handshake: Callable[[bytes], tuple[str, int]], plan: _Plan) -> None:
        self.decode_handshake = decode_handshake
        self.plan = plan
        self.events: list[tuple[Any, ...]] = []
        self.deliveries = 0
        self.proto: Any = None

    def _deliver(self, how: str, body: object) -> None:
        self.events.append((how, body if type(body) is bytes else ("NOT BYTES", type(body).__name__)))
        n = self.deliveries
        self.deliveries += 1
        if n == self.plan.stop_at:
            self.proto.abort() if self.plan.stop_abort else self.proto.close()
        if n in self.plan.raise_at:
            raise RuntimeError("planned failure in the receiver")

    def sink(self, body: bytes) -> None:
        self._deliver("sink", body)

    def frame_message(self, proto: Any, body: bytes) -> None:
        self._deliver("owner", body)

    def frame_handshake(self, proto: Any, body: bytes) -> None:
        if type(body) is not bytes:
            self.events.append(("handshake", "NOT BYTES", type(body).__name__))
            return
        try:
            peer = self.decode_handshake(body)
        except HandshakeError as exc:
            self.events.append(("bad handshake", str(exc)))
            if self.plan.abort_bad_handshake:
                proto.abort()
            return
        self.events.append(("handshake", peer))
        if self.plan.sink_on_handshake:
            proto.set_message_sink(self.sink)

    def frame_error(self, proto: Any, reason: str) -> None:
        self.events.append(("error", reason))

    def frame_connection_made(self, proto: Any) -> None:
        self.events.append(("made",))

    def frame_connection_lost(self, proto: Any, exc: BaseException | None, unsent: int) -> None:
        self.events.append(("lost", exc, unsent))


class _Transport:
    def __init__(self) -> None:
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        raise AssertionError("nothing is sent in these tests")

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.1", 9) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True


def _as_chunk(form: int, piece: bytes) -> Any:
    """``piece`` as bytes, bytearray, a memoryview, a view into a bigger buffer, or a strided view."""
    if form == 0:
        return piece
    if form == 1:
        return bytearray(piece)
    if form == 2:
        return memoryview(piece)
    if form == 3:
        return memoryview(b"<" + piece + b">")[1 : len(piece) + 1]
    spread = bytearray(2 * len(piece))
    spread[::2] = piece
    return memoryview(bytes(spread))[::2]


@st.composite
def _chunkings(draw: st.DrawFn, size: int) -> list[tuple[int, int, int]]:
    """``(start, end, form)`` pieces covering ``size`` bytes; repeated cuts give empty chunks."""
    if 0 < size <= 300 and draw(st.integers(0, 7)) == 0:
        cuts = list(range(1, size))  # a byte at a time
    else:
        cuts = sorted(draw(st.lists(st.integers(0, size), max_size=12)))
    edges = [0, *cuts, size]
    first, step = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    return [(a, b, (first + i * step) % 5) for i, (a, b) in enumerate(itertools.pairwise(edges))]


def _protocol_run(
    mod: types.ModuleType, data: bytes, pieces: list[tuple[int, int, int]], max_frame: int, plan: _Plan
) -> list[tuple[Any, ...]]:
    receiver = _Receiver(mod.decode_handshake, plan)
    proto = mod.FrameProtocol(receiver, max_frame_size=max_frame)
    receiver.proto = proto
    transport = _Transport()

    async def feed() -> None:
        proto.connection_made(transport)  # needs a running loop

    _run(feed())
    if plan.sink_first:
        proto.set_message_sink(receiver.sink)
    for start, end, form in pieces:
        proto.data_received(_as_chunk(form, data[start:end]))
    state = ("state", proto.frames_received, proto.frames_ignored, proto.closed, transport.closing, transport.aborted)
    before_loss = len(receiver.events)
    proto.connection_lost(None)
    proto.data_received(data)  # after the loss: nothing more
    events = receiver.events
    return [*events[:before_loss], state, *events[before_loss:], ("after loss", proto.frames_received)]


class _ModelProto:
    """Just enough of a FrameProtocol for the receiver to act on."""

    def __init__(self) -> None:
        self.sink: Callable[[bytes], None] | None = None
        self.closed = self.closing = self.aborted = False

    def set_message_sink(self, sink: Callable[[bytes], None] | None) -> None:
        self.sink = sink

    def close(self) -> None:
        if not self.closed:
            self.closed = self.closing = True

    def abort(self) -> None:
        self.closed = self.closing = self.aborted = True


def _splitter_model(data: bytes, max_frame: int, plan: _Plan) -> list[tuple[Any, ...]]:
    """The wire format read straight off docs/architecture.md, for the whole stream in one piece."""
    limit = min(max_frame, MAX_FRAME_LENGTH)
    receiver = _Receiver(pure_framing.decode_handshake, plan)
    proto = receiver.proto = _ModelProto()
    receiver.events.append(("made",))
    if plan.sink_first:
        proto.sink = receiver.sink
    pos = received = ignored = run = 0
    while not proto.closed and len(data) - pos >= 4:
        length = int.from_bytes(data[pos : pos + 4], "big")
        # Before the handshake (no sink yet) a frame is bounded by max_handshake_size too.
        early_limit = limit if proto.sink is not None else min(limit, DEFAULT_MAX_HANDSHAKE_SIZE)
        if length == 0 or length > early_limit:
            if length == 0:
                why = "frame length 0: a frame holds at least its type byte"
            elif length > limit:
                why = f"frame length {length} exceeds max_frame_size {limit}"
            else:
                why = f"frame length {length} exceeds max_handshake_size {early_limit} (no handshake yet)"
            receiver.events.append(("error", why))
            proto.abort()
            break
        if len(data) - pos - 4 < length:
            break  # an incomplete frame waits for more
        frame_type, body = data[pos + 4], data[pos + 5 : pos + 4 + length]
        pos += 4 + length
        received += 1
        with contextlib.suppress(RuntimeError):  # a raising receiver is logged, not fatal
            if frame_type == FRAME_MESSAGE:
                run = 0
                proto.sink(body) if proto.sink is not None else receiver.frame_message(proto, body)
            elif frame_type == FRAME_HANDSHAKE:
                run = 0
                receiver.frame_handshake(proto, body)
            elif proto.sink is None:  # only handshake and message frames before the handshake
                receiver.events.append(("error", f"frame of unknown type 0x{frame_type:02x} before the handshake"))
                proto.abort()
            else:
                ignored += 1
                run += 1
                if run >= DEFAULT_MAX_IGNORED_FRAMES:
                    receiver.events.append(("error", ignored_run_problem(DEFAULT_MAX_IGNORED_FRAMES)))
                    proto.abort()
    state = ("state", received, ignored, proto.closed, proto.closing, proto.aborted)
    return [*receiver.events, state, ("lost", None, 0), ("after loss", received)]


@st.composite
def _splitter_cases(draw: st.DrawFn) -> tuple[bytes, int, _Plan, list[tuple[int, int, int]]]:
    data = draw(_streams())
    return data, draw(_MAX_FRAME), draw(_PLANS), draw(_chunkings(len(data)))


@FUZZ
@given(case=_splitter_cases())
@example(case=(b"\x00\x00\x00\x02\x01a\x00\x00\x00\x00", DEFAULT_MAX_FRAME_SIZE, _Plan(True, False, False,
                                                                                      frozenset(), None, False),
               [(0, 4, 3), (4, 7, 4), (7, 9, 1), (9, 10, 0)]))
def test_frame_splitter(case: tuple[bytes, int, _Plan, list[tuple[int, int, int]]]) -> None:
    data, max_frame, plan, pieces = case
    _tried("frame splitter", FRAMING)
    expected = _splitter_model(data, max_frame, plan)
    chunking = "one piece" if len(pieces) == 1 else "byte by byte" if len(pieces) == len(data) > 2 else "pieces"
    event(f"splitter: {chunking}, " + ("error" if any(e[0] == "error" for e in expected) else "no error"))
    for kind, mod in FRAMING.items():
        for how, chunks in (("one chunk", [(0, len(data), 0)]), ("chunked", pieces)):
            assert _protocol_run(mod, data, chunks, max_frame, plan) == expected, (kind, how)


# --- MessageEnvelope.from_bytes ------------------------------------------------------------------


@st.composite
def _envelopes(draw: st.DrawFn) -> bytes:
    """Envelope bytes: canonical, other JSON forms, damaged headers, mutated, or noise."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=100))
    payload = draw(st.binary(max_size=40))
    if kind <= 4:
        env = pure_envelope.MessageEnvelope(draw(_TEXT), draw(_TEXT), payload, draw(_TEXT))
        data = env.to_bytes()
    else:
        header = draw(_json_objects({"target": _TEXT, "sender": _TEXT, "type_hint": _TEXT}))
        data = len(header).to_bytes(4, "big") + header + payload
    if draw(st.integers(0, 2)) == 0:
        end = 4 + int.from_bytes(data[:4], "big")
        data = _mutate(draw, data, [0, 4, 5, end - 2, end - 1, end])
    return data


def _envelope_model(data: bytes) -> tuple[str, Any]:
    """``("ok", (target, sender, payload, type_hint))`` or ``("error", None)``, per docs/architecture.md."""
    bad = ("error", None)
    if len(data) < 4 or int.from_bytes(data[:4], "big") > len(data) - 4:
        return bad
    end = 4 + int.from_bytes(data[:4], "big")
    try:
        obj = json.loads(data[4:end].decode("utf-8"))
    except (ValueError, RecursionError):
        return bad
    if not isinstance(obj, dict) or any(type(obj.get(k)) is not str for k in ("target", "sender", "type_hint")):
        return bad
    return ("ok", (obj["target"], obj["sender"], data[end:], obj["type_hint"]))


def _from_bytes(mod: types.ModuleType, data: Any) -> tuple[str, Any]:
    try:
        env = mod.MessageEnvelope.from_bytes(data)
    except EnvelopeDecodeError as exc:
        return ("error", str(exc))
    fields = (env.target, env.sender, env.payload, env.type_hint)
    if tuple(map(type, fields)) != (str, str, bytes, str):
        return ("WRONG TYPES", tuple(type(f).__name__ for f in fields))
    return ("ok", fields)


@FUZZ
@given(data=_envelopes(), form=st.integers(0, 4))
@example(data=b"\x00\x00\x00\x00", form=0)
@example(data=b'\x00\x00\x00\x30{"target": "t", "sender": "s", "type_hint": "\x7f"}', form=4)
def test_envelope_from_bytes(data: bytes, form: int) -> None:
    _tried("envelope", ENVELOPE)
    expected = _envelope_model(data)
    outcomes = {kind: _from_bytes(mod, _as_chunk(form, data)) for kind, mod in ENVELOPE.items()}
    first = outcomes["pure"]
    event(f"envelope {first[0]}")
    assert all(o == first for o in outcomes.values()), outcomes
    assert first[0] == expected[0], (first, expected)
    if first[0] != "ok":
        return
    assert first == expected
    target, sender, payload, hint = first[1]
    encoded = {kind: mod.MessageEnvelope(target, sender, payload, hint).to_bytes() for kind, mod in ENVELOPE.items()}
    assert len(set(encoded.values())) == 1  # both twins write the same bytes ...
    again = encoded["pure"]
    if data[4 : 4 + int.from_bytes(data[:4], "big")] == again[4 : len(again) - len(payload)]:
        assert again == data  # ... which are the input when its header was canonical
    assert all(_from_bytes(mod, again) == first for mod in ENVELOPE.values())


# --- the serializers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    x: Any
    y: Any


@dataclass
class Checked:
    n: Any

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 0:
            raise ValueError(f"n must be a non-negative int, got {self.n!r}")


class Color(enum.Enum):
    RED = 1
    GREEN = "g"


@dataclass(frozen=True)
class Loose:
    """Unregistered; travels because this module is allowed."""

    value: Any


TRAPPED: list[str] = []


def trap_function(*args: Any) -> None:
    TRAPPED.append("trap_function")


class TrapClass:
    """In an allowed module but neither a dataclass nor an Enum: never to be called."""

    def __init__(self, *args: Any) -> None:
        TRAPPED.append("TrapClass")


# A dataclass in an imported module nobody allowed: a payload naming it must not build it.
_FORBIDDEN = types.ModuleType("casty_fuzz_forbidden")


@dataclass
class _ForbiddenTrap:
    value: Any = None

    def __post_init__(self) -> None:
        TRAPPED.append("_ForbiddenTrap")


_ForbiddenTrap.__module__ = _FORBIDDEN.__name__
_ForbiddenTrap.__qualname__ = "Trap"
_FORBIDDEN.Trap = _ForbiddenTrap  # type: ignore[attr-defined]
sys.modules.setdefault(_FORBIDDEN.__name__, _FORBIDDEN)


class Money:
    """Travels through a codec as [cents, currency]; its decoder checks what it gets."""

    def __init__(self, cents: int, currency: str) -> None:
        self.cents, self.currency = cents, currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and (self.cents, self.currency) == (other.cents, other.currency)

    __hash__ = None  # type: ignore[assignment]

    @staticmethod
    def decode(value: Any) -> Money:
        cents, currency = value  # a wrong shape raises: the serializer reports it
        if type(cents) is not int or type(currency) is not str:
            raise ValueError(f"bad money {value!r}")
        return Money(cents, currency)


def _registry() -> TypeRegistry:
    reg = TypeRegistry()
    reg.register(Point, "fz.Point")
    reg.register(Checked, "fz.Checked")
    reg.register(Color, "fz.Color")
    reg.register_codec(Money, lambda m: [m.cents, m.currency], Money.decode, "fz.Money")
    # A decoder that returns the wrong type, and one that always fails.
    reg.register_codec(TrapClass, lambda t: None, lambda v: v, "fz.Liar")
    reg.register_codec(complex, lambda c: [c.real, c.imag], lambda v: 1 // 0, "fz.Broken")
    reg.allow_module(__name__)
    return reg


_MSGPACK = MsgpackSerializer(_registry())
_JSON = JsonSerializer(_registry())


class _FakeTransport:
    def deliver(self, address: ActorAddress, msg: Any) -> None:
        raise AssertionError("refs built while decoding are never used here")


_TRANSPORT = _FakeTransport()


def _ref_factory(address: ActorAddress) -> RemoteActorRef[Any]:
    return RemoteActorRef(address, _TRANSPORT)  # type: ignore[arg-type]


_TYPE_NAMES = st.one_of(
    st.sampled_from([
        "fz.Point", "fz.Checked", "fz.Color", "casty.address.ActorAddress",
        f"{__name__}.Loose", f"{__name__}.Point", f"{__name__}.Color",
        f"{__name__}.TrapClass", f"{__name__}.trap_function", f"{__name__}.TRAPPED",
        f"{__name__}.Point.__init__", f"{__name__}.Point.__class__", f"{__name__}.sys.modules",
        f"{__name__}.dataclasses.dataclass", f"{__name__}", f"{__name__}.", f"{__name__}..Point",
        "casty_fuzz_forbidden.Trap", "casty_fuzz_never_imported.Thing", "antigravity.Fly", "this.Zen",
        "os.system", "builtins.eval", "subprocess.Popen", "pickle.loads", "casty.transport.messages.PeerDown",
        "", ".", "fz", "fz.Point.x", "fz.Money", "fz.Liar", "fz.Broken",
    ]),
    _PLAIN_TEXT,
)
_URIS = st.one_of(
    st.sampled_from([
        "casty://sys/user/a", "casty://sys@host:1/user/a", "casty://sys@[::1]:65535/", "casty://sys@h:99999/x",
        "casty://", "http://x/y", "casty://sys@:1/a", "casty://s y/a", "",
    ]),
    _TEXT,
)
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**100), 2**100), st.floats(), st.text(max_size=8),
    st.binary(max_size=8), st.sampled_from(list(Color)),
)
# The standard-library values and a codec value, which the serializers encode.
_STDLIB_VALUES = st.one_of(
    st.datetimes(), st.datetimes(timezones=st.timezones() | st.just(datetime.UTC)), st.dates(),
    st.decimals(allow_nan=True), st.uuids(), st.builds(Money, st.integers(-(2**63), 2**63), st.text(max_size=3)),
)
# Hash-safe keys (see casty.plain_codec), which encode; _KEYS adds what a peer may send.
_SAFE_KEYS = st.one_of(st.none(), st.booleans(), st.integers(-(2**60) + 1, 2**60 - 1), st.text(max_size=8),
                       st.binary(max_size=8), st.sampled_from(list(Color)))
_KEYS = st.one_of(_SAFE_KEYS, st.integers(), st.floats(), st.sampled_from(_KEY_EDGES))


def _ext(code: int, body: bytes) -> msgpack.ExtType:
    # Built directly: ExtType() refuses -1, the Timestamp code, which the packer writes fine.
    return tuple.__new__(msgpack.ExtType, (code, body))


# Bodies near what the standard-library exts hold: Timestamp (-1) and naive datetime (8)
# take 4, 8 or 12 bytes, a date (9) 4, a UUID (11) 16; a Decimal (10) is text.
_TIME_BODIES = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=8, max_size=8),
                         st.binary(min_size=12, max_size=12), st.binary(max_size=13))
_DECIMAL_TEXTS = st.one_of(
    st.sampled_from(["1.10", "-0", "NaN", "sNaN", "-Infinity", "1E+5", "NaN12", " 1", "1_0", "inf", "1e5",
                     "Infinity ", "٣", "1" * 4097, "", "+1", "0.1E-999999999999999999"]),
    st.decimals(allow_nan=True).map(str), _PLAIN_TEXT,
)
_STDLIB_BODIES: dict[int, st.SearchStrategy[bytes]] = {
    -1: _TIME_BODIES, 8: _TIME_BODIES, 9: st.binary(min_size=3, max_size=5),
    10: _DECIMAL_TEXTS.map(lambda t: t.encode("utf-8", "surrogatepass")), 11: st.binary(min_size=15, max_size=17),
}


def _hostile_ext(draw: st.DrawFn, depth: int) -> Any:
    """A msgpack ext our serializer reads: right or wrong code, body, name, arity or kind."""
    code = draw(st.sampled_from([1, 1, 1, 2, 2, 3, 4, 5, 6, 7, 0, 8, 9, 10, 11, 12, 12, -1, 13, 127]))
    inner = st.one_of(_SCALARS, _msgpack_values(depth + 1))
    kind = draw(st.integers(0, 5))
    if code in _STDLIB_BODIES and kind:
        body = draw(_STDLIB_BODIES[code])
    elif code == 12 and kind <= 3:  # a codec value: [name, value], or the wrong arity
        values = draw(st.lists(inner, min_size=0 if kind == 3 else 1, max_size=1 if kind < 3 else 3))
        body = msgpack.packb([draw(_TYPE_NAMES), *values], use_bin_type=True, default=_default)
    elif kind == 0:
        body = draw(st.binary(max_size=16))
    elif code in (4, 5) and kind == 1:  # a set of keys, hash-safe or not
        body = msgpack.packb(draw(st.lists(_KEYS, max_size=4)), use_bin_type=True, default=_default)
    elif code == 6:
        body = draw(_URIS).encode("utf-8", "surrogatepass")
    elif code == 7:
        body = draw(st.binary(max_size=20))
    elif code in (1, 2) and kind <= 3:
        values = draw(st.lists(inner, max_size=3))
        body = msgpack.packb([draw(_TYPE_NAMES), *values], use_bin_type=True, default=_default)
    else:
        body = msgpack.packb(draw(inner), use_bin_type=True, default=_default)
    return _ext(code, body)


def _default(obj: Any) -> Any:
    if isinstance(obj, enum.Enum):
        return _ext(2, msgpack.packb(["fz.Color", obj.value]))
    if type(obj) is int:  # beyond 64 bits
        return _ext(7, obj.to_bytes((obj.bit_length() + 8) // 8, "big", signed=True))
    raise TypeError(type(obj).__name__)


@st.composite
def _msgpack_values(draw: st.DrawFn, depth: int = 0) -> Any:
    """Values for msgpack.packb (ExtType included), at most three levels deep."""
    if depth >= 3:
        return draw(_SCALARS)
    kind = draw(st.integers(0, 5))
    if kind <= 1:
        return draw(_SCALARS)
    if kind == 2:
        return draw(st.lists(_msgpack_values(depth + 1), max_size=3))
    if kind == 3:
        return draw(st.dictionaries(_KEYS, _msgpack_values(depth + 1), max_size=3))
    return _hostile_ext(draw, depth)


def _nested_ext(levels: int, code: int) -> bytes:
    """``levels`` exts of ``code`` each holding a one-item list of the next: MAX_NESTING's edge."""
    data = msgpack.packb(None)
    for _ in range(levels):
        data = msgpack.packb(_ext(code, b"\x91" + data))
    return data


_VALUES = st.recursive(
    st.one_of(_SCALARS, _STDLIB_VALUES, st.builds(Point, _SCALARS, _SCALARS), st.builds(Loose, _SCALARS),
              st.builds(Checked, st.integers(0, 9)), st.builds(lambda u: _ref_factory(ActorAddress.from_uri(u)),
                                                             st.sampled_from(["casty://s/user/a",
                                                                              "casty://s@h:1/user/b"]))),
    lambda inner: st.lists(inner, max_size=3) | st.lists(inner, max_size=3).map(tuple)
    | st.frozensets(_SAFE_KEYS, max_size=3)
    | st.dictionaries(_SAFE_KEYS, inner, max_size=3)
    | st.builds(Point, inner, inner),
    max_leaves=8,
)


# What the plain-message fast path (casty.plain_codec) reads: a dataclass of scalars and refs.
_PLAIN_FIELDS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=12),
    st.binary(max_size=12), st.sampled_from([_ref_factory(ActorAddress.from_uri("casty://s@h:1/user/b"))]),
)
_PLAIN_MESSAGES = st.one_of(
    st.builds(Point, _PLAIN_FIELDS, _PLAIN_FIELDS), st.builds(Loose, _PLAIN_FIELDS),
    st.builds(Checked, st.integers(0, 2**64 - 1)),
)


@st.composite
def _msgpack_payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 13))
    if kind == 0:
        return draw(st.binary(max_size=80))
    if kind == 1:
        return _nested_ext(draw(st.integers(250, 262)), draw(st.sampled_from([1, 3, 4, 5])))
    if kind == 2:
        return b"\x91" * draw(st.integers(1, 5000)) + b"\xc0"
    if kind <= 5:
        data = _MSGPACK.serialize(draw(_PLAIN_MESSAGES))
        if kind == 5:  # the same bytes for a Checked its __post_init__ refuses to rebuild
            data = PLAIN["pure"].encode_plain("fz.Checked", (draw(_PLAIN_FIELDS),)) or data
    elif kind <= 8:
        data = _MSGPACK.serialize(draw(_VALUES))
    else:
        data = msgpack.packb(draw(_msgpack_values()), use_bin_type=True, default=_default)
    return _mutate(draw, data, [0, 1, 2, 3]) if draw(st.integers(0, 2)) == 0 else data


_TAGS = st.sampled_from(["t", "s", "fs", "b", "i", "f", "m", "dc", "e", "r", "x", "", "__t",
                         "dt", "ndt", "d", "dec", "u", "c"])
_ISO_TEXTS = st.one_of(
    st.datetimes().map(datetime.datetime.isoformat),
    st.datetimes(timezones=st.timezones()).map(datetime.datetime.isoformat),
    st.dates().map(datetime.date.isoformat),
    st.sampled_from(["2024-05-01T12:00:00+00:00", "2024-05-01T12:00:00Z", "20240501", "2024-05-01 12:00:00",
                     "2024-13-01", "9999-12-31T23:59:59.999999+00:00", "0001-01-01T00:00:00-01:00"]),
)


def _tag_object(draw: st.DrawFn, inner: st.SearchStrategy[Any]) -> dict[str, Any]:
    """A ``{"__t": ...}`` object, right or wrong, as a peer could send it."""
    tag = draw(_TAGS)
    fields: dict[str, st.SearchStrategy[Any]] = {
        "t": st.lists(inner, max_size=3), "s": st.lists(inner, max_size=3), "fs": st.lists(inner, max_size=3),
        "b": st.one_of(st.sampled_from(["AA==", "AA", "====", "*", ""]), _PLAIN_TEXT),
        "i": st.one_of(st.sampled_from(["0x10", "-0x1", "ff", "0x", "1" * 5000]), _PLAIN_TEXT),
        "f": st.sampled_from(["nan", "inf", "-inf", "NaN", "1.0", ""]),
        "m": st.lists(st.lists(inner, max_size=3), max_size=3),
        "r": _URIS,
        "dt": _ISO_TEXTS, "ndt": _ISO_TEXTS, "d": _ISO_TEXTS, "dec": _DECIMAL_TEXTS,
        "u": st.one_of(st.uuids().map(str), st.uuids().map(lambda u: u.hex), _PLAIN_TEXT),
    }
    obj: dict[str, Any] = {"__t": tag}
    if tag in ("dc", "e", "c"):
        obj["n"] = draw(_TYPE_NAMES)
        obj["f" if tag == "dc" else "v"] = draw(st.lists(inner, max_size=3) if tag != "e" else inner)
    else:
        obj["v"] = draw(fields.get(tag, inner))
    if draw(st.integers(0, 5)) == 0:
        obj[draw(st.sampled_from(["v", "n", "f", "x"]))] = draw(inner)
    if draw(st.integers(0, 7)) == 0:
        del obj[draw(st.sampled_from(list(obj)))]
    return obj


@st.composite
def _json_values(draw: st.DrawFn, depth: int = 0) -> Any:
    if depth >= 3:
        return draw(_JSON_SCALAR)
    kind = draw(st.integers(0, 4))
    inner = _json_values(depth + 1)
    if kind <= 1:
        return draw(_JSON_SCALAR)
    if kind == 2:
        return draw(st.lists(inner, max_size=3))
    if kind == 3:
        return draw(st.dictionaries(_PLAIN_TEXT, inner, max_size=3))
    return _tag_object(draw, inner)


@st.composite
def _json_payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 11))
    if kind == 0:
        return draw(st.binary(max_size=80))
    if kind == 1:
        depth = draw(st.integers(1, 5000))
        return draw(st.sampled_from([b"[", b'{"__t":"t","v":['])) * depth
    if kind == 2:
        return draw(st.sampled_from([b"NaN", b"-Infinity", b"1" * 5000, b"1e999", b'"\\ud800"', b"\xef\xbb\xbf1"]))
    if kind <= 6:
        data = _JSON.serialize(draw(_VALUES))
    else:
        data = _json_text(draw, draw(_json_values()))
    return _mutate(draw, data, [0, 1, len(data) - 1]) if draw(st.integers(0, 2)) == 0 else data


class _ImportWatch(importlib.abc.MetaPathFinder):
    """Records every module name looked for while installed (and finds none)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        self.names.append(name)


# Modules the standard library looks up through __import__ while decoding, already
# loaded: from 3.12 on, _json fetches JSONDecodeError from json.decoder that way each
# time it reports malformed JSON.  Nothing a peer sends can name them.
_STDLIB_LOOKUPS = frozenset({"json.decoder"})


@contextlib.contextmanager
def _no_imports_or_traps() -> Iterator[None]:
    """Fail if anything inside imports (a statement, a C-level import, a new module) or
    calls a trap."""
    watch = _ImportWatch()
    real_import = builtins.__import__

    def spy(name: str, *args: Any, **kwargs: Any) -> Any:
        if not (name in _STDLIB_LOOKUPS and name in sys.modules):
            watch.names.append(name)
        return real_import(name, *args, **kwargs)

    TRAPPED.clear()
    modules = set(sys.modules)
    sys.meta_path.insert(0, watch)
    builtins.__import__ = spy
    try:
        yield
    finally:
        builtins.__import__ = real_import
        sys.meta_path.remove(watch)
        # Checked on the error path too (this replaces the SerializationError being raised).
        new_modules = set(sys.modules) - modules
        assert not watch.names and not new_modules, f"decoding imported {watch.names} {new_modules}"
        assert not TRAPPED, f"decoding called {TRAPPED}"


def _canon(value: Any) -> tuple[Any, ...]:
    """A comparable form of a decoded value: types kept, NaN equal to itself, sets ordered.

    Flat (pre-order tokens, built without recursion) so that lists nested as deep as
    msgpack allows compare without hitting the recursion limit.
    """
    out: list[Any] = []
    stack = [value]
    while stack:
        v = stack.pop()
        kind = type(v)
        if kind is float:
            out.append(("float", struct.pack(">d", v)))
        elif kind is list or kind is tuple:
            out.append((kind.__name__, len(v)))
            stack.extend(reversed(v))
        elif kind is dict:
            out.append(("dict", len(v)))
            for key, item in reversed(v.items()):
                stack += (item, key)
        elif kind is set or kind is frozenset:
            out.append((kind.__name__, tuple(sorted((_canon(x) for x in v), key=repr))))
        elif isinstance(v, enum.Enum):
            out.append(("enum", kind.__qualname__, v.name))
        elif isinstance(v, RemoteActorRef):
            out.append(("ref", v.address.to_uri()))
        elif kind is decimal.Decimal:  # NaN is not equal to itself, and sNaN refuses ==
            out.append(("Decimal", str(v)))
        elif kind is datetime.datetime:  # aware ones equal across zones: the zone counts here
            out.append(("datetime", v.isoformat()))
        elif kind is Money:
            out.append(("Money", v.cents, v.currency))
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            fields = dataclasses.fields(v)
            out.append((kind.__qualname__, len(fields)))
            stack.extend(getattr(v, f.name) for f in reversed(fields))
        else:
            out.append((kind.__name__, v))
    return tuple(out)


def _deserialize(ser: Any, data: bytes, factory: Any) -> tuple[str, Any]:
    try:
        with _no_imports_or_traps():
            value = ser.deserialize(data, ref_factory=factory)
    except SerializationError as exc:
        return ("error", str(exc))
    return ("ok", _canon(value))


# What serialization takes from the plain codec twin casty._impl picked; swapped per twin.
_CODEC_NAMES = ("decode_plain", "dict_from_pairs", "keys_safe_within", "safe_members")


@contextlib.contextmanager
def _codec_twin(mod: types.ModuleType) -> Iterator[None]:
    """Make the serializers use ``mod``'s plain codec functions for a while."""
    real = {name: getattr(serialization, name) for name in _CODEC_NAMES}
    for name in _CODEC_NAMES:
        setattr(serialization, name, getattr(mod, name))
    try:
        yield
    finally:
        for name, fn in real.items():
            setattr(serialization, name, fn)


# Decoding this after every example shows no state (nesting depth, ref factory) was left behind.
_CANARY = Point((1, frozenset({b"x"})), [Color.GREEN, Loose(2**70)])


@FUZZ
@given(data=_msgpack_payloads(), with_factory=st.booleans())
@example(data=_nested_ext(256, 3), with_factory=False)
@example(data=_nested_ext(257, 3), with_factory=False)
@example(data=msgpack.packb(_ext(1, msgpack.packb([f"{__name__}.TrapClass", 1]))), with_factory=False)
@example(data=msgpack.packb(_ext(1, msgpack.packb(["casty_fuzz_forbidden.Trap", 1]))), with_factory=False)
@example(data=msgpack.packb(_ext(1, msgpack.packb(["antigravity.Fly"]))), with_factory=False)
@example(data=msgpack.packb(_ext(1, msgpack.packb(["fz.Checked", -1]))), with_factory=False)
@example(data=msgpack.packb(_ext(4, msgpack.packb([k * (2**61 - 1) for k in range(1, 9)]))), with_factory=False)
@example(data=msgpack.packb({k * (2**61 - 1): k for k in range(1, 9)}), with_factory=False)
@example(data=msgpack.packb([{2**60 - 1: 1, -(2**60) + 1: 2}, _ext(5, msgpack.packb([-1, -2]))]),
         with_factory=False)
# A codec value as a dict key: refused in words that carry no object address (they must agree).
@example(data=msgpack.packb({_ext(12, msgpack.packb(["fz.Money", [0, ""]])): 1}), with_factory=False)
def test_msgpack_deserialize(data: bytes, with_factory: bool) -> None:
    """The top-level fast path (``decode_plain``) comes from each twin in turn."""
    _tried("msgpack deserialize", PLAIN)
    factory = _ref_factory if with_factory else None
    outcomes = {}
    for kind, mod in PLAIN.items():
        with _codec_twin(mod):
            outcomes[kind] = _deserialize(_MSGPACK, data, factory)
            assert _MSGPACK.deserialize(_MSGPACK.serialize(_CANARY)) == _CANARY
    event(f"msgpack {outcomes['pure'][0]}")
    if "hash-safe" in outcomes["pure"][1]:
        event("msgpack refused a key")
    assert all(o == outcomes["pure"] for o in outcomes.values()), outcomes


@FUZZ
@given(data=_json_payloads(), with_factory=st.booleans())
@example(data=b"1" * 5000, with_factory=False)  # past int()'s digit limit
@example(data=b'{"__t":"i","v":"' + b"1" * 5000 + b'"}', with_factory=False)
@example(data=b'{"__t":"dc","n":"os.system","f":["true"]}', with_factory=False)
@example(data=b"[" * 5000, with_factory=False)
@example(data=b'{"__t":"s","v":[2305843009213693951,4611686018427387902]}', with_factory=False)
@example(data=b'{"__t":"m","v":[[1152921504606846975,1],[1152921504606846976,2]]}', with_factory=False)
@example(data=b"[100000000000000000000]", with_factory=False)
def test_json_deserialize(data: bytes, with_factory: bool) -> None:
    """A value or a SerializationError, nothing imported or called; the key checks come
    from each plain codec twin in turn (the rest of the decoder has no twin)."""
    _tried("json deserialize", PLAIN)
    outcomes = {}
    for kind, mod in PLAIN.items():
        with _codec_twin(mod):
            outcomes[kind] = _deserialize(_JSON, data, _ref_factory if with_factory else None)
            assert _JSON.deserialize(_JSON.serialize(_CANARY)) == _CANARY
    event(f"json {outcomes['pure'][0]}")
    assert all(o == outcomes["pure"] for o in outcomes.values()), outcomes


# --- the hash-safe key rule, directly ------------------------------------------------------------


def _model_safe_key(key: Any) -> bool:
    """The rule in casty.plain_codec's docstring, written again from its text."""
    if key is None or type(key) in (str, bytes, RemoteActorRef):
        return True
    if isinstance(key, int):
        return abs(int.__index__(key)) < 2**60
    if isinstance(key, enum.Flag):
        return type(key)._boundary_ is enum.STRICT
    return isinstance(key, enum.Enum)


class _KeepFlag(enum.Flag, boundary=enum.KEEP):
    A = 1


class _StrictFlag(enum.Flag):
    A = 1
    B = 2


class _Mask(enum.IntFlag):
    A = 1


_ANY_KEYS = st.one_of(
    _KEYS, st.integers(-(2**62), 2**62), st.floats(allow_nan=False),
    st.builds(_KeepFlag, st.integers(0, 2**70)), st.builds(_StrictFlag, st.integers(0, 3)),
    st.builds(_Mask, st.integers(0, 2**62)), st.sampled_from([(), (1,), frozenset({1}), Point(1, 2)]),
    st.sampled_from([_ref_factory(ActorAddress.from_uri("casty://s@h:1/user/b"))]),
)
_KEY_NESTS = st.recursive(
    _ANY_KEYS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_ANY_KEYS, inner, max_size=3),
    max_leaves=12,
)


@FUZZ
@given(items=st.lists(_ANY_KEYS, max_size=8), value=_KEY_NESTS)
def test_hash_safe_keys(items: list[Any], value: Any) -> None:
    """Both twins' key checks agree with each other and with the model; what they refuse,
    both serializers refuse to encode, and what they accept in a set encodes and decodes."""
    _tried("hash-safe keys", PLAIN)
    safe = all(map(_model_safe_key, items))
    pairs = [(k, i) for i, k in enumerate(items)]
    for mod in PLAIN.values():
        assert mod.safe_members(items) is safe
        assert mod.dict_from_pairs(pairs) == (dict(pairs) if safe else None)
        assert mod.keys_safe_within(value) is PLAIN["pure"].keys_safe_within(value)
    event(f"keys {'safe' if safe else 'refused'}")
    members = set(items)  # (False and 0.0 are one member)
    safe = all(map(_model_safe_key, members))
    for ser in (_MSGPACK, _JSON):
        try:
            data = ser.serialize(members)
        except serialization.UnsafeKeyError:
            assert not safe
            continue
        assert safe
        assert ser.deserialize(data, ref_factory=_ref_factory) == members


# --- the inbound message handler ------------------------------------------------------------------

_SYSTEM = "app"
_OUR_TARGETS = st.sampled_from(["casty://app/user/a", "casty://app/user/b", "casty://app@h:1/user/a",
                                "casty://app@[::1]:2/user/a/kid", "casty://app/user/\u00e9"])
_TARGETS = st.one_of(
    _OUR_TARGETS, _OUR_TARGETS, _OUR_TARGETS,
    st.sampled_from(["casty://other/user/a", "casty://app", "casty://ap/user/a", "/user/a", ""]),
    _URIS,
)


@st.composite
def _frame_bodies(draw: st.DrawFn, json_payloads: bool, targets: list[str]) -> bytes:
    """A message frame's body: an envelope (mostly canonical) around a payload, maybe mutated."""
    if json_payloads:
        payload = draw(_json_payloads())
    else:  # plain messages often: the Cython twin reads those in place
        payload = draw(st.one_of(_PLAIN_MESSAGES.map(_MSGPACK.serialize), _msgpack_payloads()))
    target, sender, hint = draw(st.sampled_from(targets)), draw(_TEXT), draw(st.sampled_from(["fz.Point", "x", ""]))
    if draw(st.integers(0, 4)):
        data = pure_envelope.MessageEnvelope(target, sender, payload, hint).to_bytes()
    else:
        header = draw(_json_objects({"target": st.just(target), "sender": st.just(sender), "type_hint": st.just(hint)}))
        data = len(header).to_bytes(4, "big") + header + payload
    if draw(st.integers(0, 7)) == 0:
        end = 4 + int.from_bytes(data[:4], "big")
        data = _mutate(draw, data, [0, 4, 16, end - 2, end, end + 1])
    return data


class _Local:
    """Stands in for LocalTransport: records what is delivered."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, Any]] = []

    def deliver_path(self, path: str, msg: Any, nbytes: int = -1) -> None:
        self.delivered.append((path, _canon(msg)))


class _NullOwner:
    """A FrameProtocol owner that ignores every callback."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: None


@st.composite
def _inbound_cases(draw: st.DrawFn) -> tuple[bool, bool, list[tuple[bytes, int]]]:
    json_payloads = draw(st.integers(0, 3)) == 0
    targets = draw(st.lists(_TARGETS, min_size=1, max_size=3))  # repeats exercise the target caches
    frames = draw(st.lists(st.tuples(_frame_bodies(json_payloads, targets), st.sampled_from([0, 0, 0, 1, 3, 4])),
                           min_size=1, max_size=3))
    return json_payloads, draw(st.booleans()), frames


@FUZZ
@given(case=_inbound_cases())
def test_inbound_handler(case: tuple[bool, bool, list[tuple[bytes, int]]]) -> None:
    json_payloads, with_factory, frames = case
    _tried("inbound handler", INBOUND)
    results = {}
    for kind, mod in INBOUND.items():
        local = _Local()
        serializer = _JSON if json_payloads else _MSGPACK
        handler = mod.InboundMessageHandler(local=local, serializer=serializer, system_name=_SYSTEM,
                                            ref_factory=_ref_factory if with_factory else None)
        with _no_imports_or_traps():
            for data, form in frames:
                handler.on_frame(_as_chunk(form, data))
        results[kind] = (local.delivered, handler.dropped)
        # The same bodies framed and received by that twin's protocol in one chunk: the
        # Cython protocol hands whole frames to the Cython handler at C level.
        local = _Local()
        handler = mod.InboundMessageHandler(local=local, serializer=serializer, system_name=_SYSTEM,
                                            ref_factory=_ref_factory if with_factory else None)
        proto = FRAMING[kind].FrameProtocol(_NullOwner())
        proto.set_message_sink(handler.on_frame)
        with _no_imports_or_traps():
            proto.data_received(b"".join(pure_framing.encode_frame(FRAME_MESSAGE, data) for data, _ in frames))
        results[kind + " framed"] = (local.delivered, handler.dropped)
    first = results["pure"]
    event(f"inbound: {len(first[0])} delivered, {first[1]} dropped")
    assert all(r == first for r in results.values()), results
    assert len(first[0]) + first[1] == len(frames)


# --- control frames of the negotiated features, through a node's connection ------------------
#
# Pings, echoes, watch, fragment, header-entry and compact frames (docs/architecture.md,
# "Features (v2 caps) and their frames") after a v2 handshake listing every cap, mixed
# with messages and unknown kinds, cut into arbitrary chunks: each twin's FrameProtocol
# under the same node must answer with the same bytes and end in the same state, and
# nothing may raise out of the node.

from casty.remote_system import RemoteActorSystem  # noqa: E402
from casty.transport import node as node_module  # noqa: E402
from casty.transport.watch_codec import encode_watch  # noqa: E402
from casty.wire import FRAME_ECHO, FRAME_FRAGMENT, FRAME_PING, FRAME_WATCH  # noqa: E402
from tests.test_fragments import Transport as _Wire  # noqa: E402  (records what is written)


@pytest.fixture(scope="module")
def control_node() -> Iterator[tuple[asyncio.AbstractEventLoop, RemoteActorSystem]]:
    loop = asyncio.new_event_loop()
    system = RemoteActorSystem("fuzz", "127.0.0.1", 0)
    loop.run_until_complete(system.start())
    try:
        yield loop, system
    finally:
        loop.run_until_complete(system.shutdown())
        loop.close()


_PATH = st.from_regex(r"\A/[a-z/]{0,10}\Z")
_CONTROL_BODY = st.one_of(
    st.binary(max_size=16),
    st.binary(min_size=8, max_size=8),
    st.builds(encode_watch, st.sampled_from([1, 2, 3]), _PATH, _PATH),
    st.builds(lambda t, raw: bytes([t]) + raw, st.integers(0, 255), st.binary(max_size=24)),
)
_CONTROL_FRAMES = st.lists(
    st.tuples(st.sampled_from([FRAME_PING, FRAME_ECHO, FRAME_WATCH, FRAME_FRAGMENT, FRAME_HDR_ENTRY,
                               FRAME_COMPACT, FRAME_MESSAGE, 0x09]), _CONTROL_BODY),
    max_size=12,
)


def _control_run(loop: asyncio.AbstractEventLoop, system: RemoteActorSystem, cls: type,
                 chunks: list[bytes]) -> tuple[bytes, bool, int]:
    node = system.node
    real, state = node_module.FrameProtocol, node._read_state
    node_module.FrameProtocol = cls  # type: ignore[misc]
    node._read_state = None  # the LocalTransport's is of one twin only
    try:
        proto = node._new_protocol(outbound=False, dial_key=None)
    finally:
        node_module.FrameProtocol = real  # type: ignore[misc]
        node._read_state = state
    wire = _Wire()

    async def run() -> None:
        proto.connection_made(wire)
        for chunk in chunks:
            proto.data_received(chunk)
        await asyncio.sleep(0)  # the flush scheduled by the first answer
        await asyncio.sleep(0)

    try:
        loop.run_until_complete(run())
        return bytes(wire.data[len(node._hello_frame):]), proto.closed, proto.frames_ignored
    finally:
        proto.connection_lost(None)


@FUZZ
@given(frames=_CONTROL_FRAMES, cuts=st.lists(st.integers(0, 600), max_size=6))
def test_control_frames_through_a_node(
    control_node: tuple[asyncio.AbstractEventLoop, RemoteActorSystem],
    frames: list[tuple[int, bytes]], cuts: list[int],
) -> None:
    loop, system = control_node
    hello = encode_hello(Handshake("127.0.0.9", 0, 77, 2, frozenset({"hb", "watch", "frag", "hdr"})))
    data = hello + b"".join(pure_framing.encode_frame(kind, body) for kind, body in frames)
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in itertools.pairwise([0, *points, len(data)])]
    outcomes = {kind: _control_run(loop, system, mod.FrameProtocol, chunks) for kind, mod in FRAMING.items()}
    _tried("control frames via TcpNode", outcomes)
    assert len(set(outcomes.values())) == 1, outcomes
    written, closed, _ = outcomes["pure"]
    # A ping or echo body that is not 8 bytes closes the connection (what was queued is
    # dropped with it); otherwise every ping is echoed with its own 8 bytes.
    if any(kind in (FRAME_PING, FRAME_ECHO) and len(body) != 8 for kind, body in frames):
        assert closed
    elif not closed:  # (a bad frame of another feature closes it too)
        for kind, body in frames:
            if kind == FRAME_PING:
                assert pure_framing.encode_frame(FRAME_ECHO, body) in written
    assert not system.death_watch.counts()["remote_in"]
# --- compact headers (cap "hdr") ------------------------------------------------------------------

_HDR_NAMES = st.one_of(
    _TARGETS,
    st.sampled_from(["casty://app/system/tcp", "casty://app/temp/ask-1", "casty://app/temp/ask-2", "fz.Point"]),
)


@st.composite
def _hdr_frames(draw: st.DrawFn) -> list[tuple[int, bytes]]:
    """Entry and compact-message frames of one connection: mostly in order and naming
    entries sent, sometimes not (out-of-order or bad entries, unknown ids, short bodies)."""
    frames: list[tuple[int, bytes]] = []
    count = 0
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.integers(0, 9))
        if op < 4:  # an entry: mostly the next id and a valid name
            entry = count + draw(st.sampled_from([0, 0, 0, 0, 1, -1]))
            name = draw(_HDR_NAMES).encode("utf-8", "surrogatepass")
            if draw(st.integers(0, 9)) == 0:
                name = draw(st.binary(max_size=8))
            body = (entry & 0xFFFF).to_bytes(2, "big") + name
            count += entry == count and bool(name)
            frames.append((FRAME_HDR_ENTRY, body))
        elif op == 4:
            frames.append((FRAME_HDR_ENTRY, b""))  # a clear
            count = 0
        else:
            ids = b"".join(draw(st.integers(0, count + 1)).to_bytes(2, "big") for _ in range(3))
            payload = draw(st.one_of(_PLAIN_MESSAGES.map(_MSGPACK.serialize), _msgpack_payloads()))
            body = ids + payload
            if draw(st.integers(0, 9)) == 0:
                body = body[: draw(st.integers(0, 7))]
            frames.append((FRAME_COMPACT, body))
    return frames


class _HdrOrigin:
    """The connection a compact-header sink reports to; ``misbehaving`` closes it."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.proto: Any = None

    def misbehaving(self, why: str) -> None:
        self.events.append("closed: " + why)
        if self.proto is not None:
            self.proto.abort()

    def frame_dropped(self) -> None:
        self.events.append("dropped")

    def mailbox_full(self, mailbox: Any) -> None:
        pass


class _HdrOwner(_NullOwner):
    """A FrameProtocol owner that hands cap "hdr" frames to the connection's sink, as TcpNode does."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def frame_control(self, proto: Any, kind: int, body: bytes) -> None:
        (self.sink.on_entry if kind == FRAME_HDR_ENTRY else self.sink.on_compact)(body)


@FUZZ
@given(frames=_hdr_frames(), with_factory=st.booleans())
def test_compact_headers(frames: list[tuple[int, bytes]], with_factory: bool) -> None:
    _tried("compact headers", INBOUND)
    results = {}
    for kind, mod in INBOUND.items():
        for framed in (False, True):
            local, origin = _Local(), _HdrOrigin()
            handler = mod.InboundMessageHandler(local=local, serializer=_MSGPACK, system_name=_SYSTEM,
                                                ref_factory=_ref_factory if with_factory else None)
            handler.reply_check = lambda path, org: None if path.endswith("1") else "not that ask"
            sink = handler.sink_for(origin).__self__
            with _no_imports_or_traps():
                if framed:  # through that twin's protocol, in one chunk (the Cython one takes 0x07 at C level)
                    proto = FRAMING[kind].FrameProtocol(_HdrOwner(sink))
                    origin.proto = proto
                    proto.set_message_sink(sink.on_frame)
                    proto.set_control_kinds([FRAME_HDR_ENTRY, FRAME_COMPACT])
                    proto.data_received(b"".join(pure_framing.encode_frame(k, b) for k, b in frames))
                else:
                    for k, body in frames:
                        if origin.events and origin.events[-1].startswith("closed"):
                            break  # the node has closed the connection
                        (sink.on_entry if k == FRAME_HDR_ENTRY else sink.on_compact)(body)
            results[kind, framed] = (local.delivered, origin.events, list(sink.names.names))
    first = results["pure", False]
    event(f"compact headers: {len(first[0])} delivered, closed: {any(e.startswith('closed') for e in first[1])}")
    assert all(r == first for r in results.values()), results
