"""FrameProtocol and the frame/handshake codec: wire vectors, splitting, bad input,
flow control, twin agreement, and a real loopback connection on uvloop."""

from __future__ import annotations

import asyncio
import functools
import gc
import importlib
import itertools
import json
import logging
import struct
import sys
import tracemalloc
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casty.transport import framing as pure_framing
from casty.transport.framing import FRAME_HANDSHAKE, FRAME_MESSAGE, FrameError, HandshakeError

try:
    from casty._fast import framing as fast_framing
except ImportError:  # no compiler: the pure twin alone is tested
    fast_framing = None  # type: ignore[assignment]

VECTORS = json.loads((Path(__file__).parent / "data" / "wire_vectors.json").read_text())
MODULES = [pure_framing] + ([fast_framing] if fast_framing is not None else [])
PEER = ("10.1.2.3", 4567)
UNKNOWN = 0x07


def frame(frame_type: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, frame_type) + body


def message(body: bytes) -> bytes:
    return frame(FRAME_MESSAGE, body)


def handshake(host: str, port: int) -> bytes:
    return frame(FRAME_HANDSHAKE, json.dumps({"host": host, "port": port}).encode())


@pytest.fixture
def mod(impl: types.SimpleNamespace) -> Any:
    """The module (pure or Cython) that ``impl.FrameProtocol`` comes from."""
    return importlib.import_module(impl.FrameProtocol.__module__)


class FakeTransport:
    """Records what a protocol does to its transport."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.limits: tuple[int, int] | None = None
        self.closing = False
        self.aborted = False
        self.fail_writes = False

    def write(self, data: bytes) -> None:
        if self.fail_writes:
            raise RuntimeError("socket gone")
        assert type(data) is bytes
        self.writes.append(data)

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        self.limits = (high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return PEER if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True


class Owner:
    """Records owner callbacks and sink calls in one ordered list.

    With ``sink_on_handshake`` the owner does what a real one does: it sets the
    sink inside ``frame_handshake``.
    """

    def __init__(self, *, sink_on_handshake: bool = False) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.sink_on_handshake = sink_on_handshake

    def sink(self, body: bytes) -> None:
        assert type(body) is bytes
        self.events.append(("message", body))

    def frame_connection_made(self, proto: Any) -> None:
        self.events.append(("made",))

    def frame_handshake(self, proto: Any, body: bytes) -> None:
        assert type(body) is bytes
        self.events.append(("handshake", body))
        if self.sink_on_handshake:
            proto.set_message_sink(self.sink)

    def frame_message(self, proto: Any, body: bytes) -> None:
        assert type(body) is bytes
        self.events.append(("owner_message", body))

    def frame_error(self, proto: Any, reason: str) -> None:
        self.events.append(("error", reason))

    def frame_control(self, proto: Any, kind: int, body: bytes) -> None:
        assert type(body) is bytes
        self.events.append(("control", kind, body))

    def frame_connection_lost(self, proto: Any, exc: BaseException | None, unsent: int) -> None:
        self.events.append(("lost", exc, unsent))


def receiver(cls: Any, **kw: Any) -> tuple[Any, Owner]:
    """A protocol with a sink, not connected (enough for data_received)."""
    owner = Owner()
    proto = cls(owner, **kw)
    proto.set_message_sink(owner.sink)
    return proto, owner


async def connected(cls: Any, owner: Any = None, **kw: Any) -> tuple[Any, Any, FakeTransport]:
    owner = owner if owner is not None else Owner()
    proto = cls(owner, **kw)
    transport = FakeTransport()
    proto.connection_made(transport)
    return proto, owner, transport


def prime(proto: Any, transport: FakeTransport) -> None:
    """Send one frame, which goes out at once; frames sent after it wait for the loop."""
    before = len(transport.writes)
    assert proto.send_message(b"prime") is True
    assert transport.writes[before:] == [message(b"prime")] and proto.queued_frames == 0
    del transport.writes[before:]


async def one_loop_turn() -> None:
    """Let every callback already scheduled with call_soon run (FIFO), then return."""
    ran = asyncio.Event()
    asyncio.get_running_loop().call_soon(ran.set)
    await ran.wait()


# -- codec -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", VECTORS["handshake_frames"], ids=lambda c: f"{c['host']}:{c['port']}"
)
def test_encode_handshake_matches_vectors(mod: Any, case: dict[str, Any]) -> None:
    data = mod.encode_handshake(case["host"], case["port"])
    assert data.hex() == case["frame_hex"]
    assert data == handshake(case["host"], case["port"])
    assert mod.decode_handshake(data[5:]) == (case["host"], case["port"])


def test_constants_match(mod: Any) -> None:
    assert (mod.FRAME_HANDSHAKE, mod.FRAME_MESSAGE, mod.FRAME_HEADER_SIZE) == (0, 1, 5)
    assert mod.DEFAULT_MAX_FRAME_SIZE == 16 * 1024 * 1024
    assert (mod.DEFAULT_WRITE_HIGH_WATER, mod.DEFAULT_WRITE_LOW_WATER) == (256 * 1024, 64 * 1024)
    assert mod.DEFAULT_MAX_QUEUE_BYTES == 8 * 1024 * 1024
    assert mod.FrameError is FrameError and mod.HandshakeError is HandshakeError
    assert issubclass(FrameError, ValueError) and issubclass(HandshakeError, ValueError)


def test_encode_frame(mod: Any) -> None:
    assert mod.encode_frame(FRAME_MESSAGE, b"abc") == b"\x00\x00\x00\x04\x01abc"
    assert mod.encode_frame(0xFF, b"") == b"\x00\x00\x00\x01\xff"
    for bad in (-1, 256, True, "1"):
        with pytest.raises(FrameError, match=r"frame type must be an int in 0\.\.255"):
            mod.encode_frame(bad, b"")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff{}", "not valid UTF-8"),
        ('{"host": "a", "port": 1}'.encode("utf-16"), "not valid UTF-8"),
        (b'\xef\xbb\xbf{"host": "a", "port": 1}', "not valid JSON"),
        (b'{"host": "a", "port": 1', "not valid JSON"),
        (b"", "not valid JSON"),
        # 3.14's json bounds its recursion by the C stack, not the recursion limit: it reads
        # this (under the size limit) as a list, which is refused all the same.
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply" if sys.version_info < (3, 14) else "got list"),
        (b" " * 70_000, "70000 bytes long (at most 65536)"),
        (b'["host", "port"]', "must be a JSON object, got list"),
        (b'"x"', "must be a JSON object, got str"),
        (b'{"port": 1}', "handshake has no 'host'"),
        (b'{"host": "a"}', "handshake has no 'port'"),
        (b'{"host": 5, "port": 1}', "host must be a string, got int"),
        (b'{"host": null, "port": 1}', "host must be a string, got NoneType"),
        (b'{"host": "", "port": 1}', "handshake host is empty"),
        (json.dumps({"host": "h" * 256, "port": 1}).encode(), "256 characters long (at most 255)"),
        (b'{"host": "\\ud800", "port": 1}', "neither a hostname nor an IP address"),
        (b'{"host": "evil\\nINFO forged line", "port": 1}', "neither a hostname nor an IP address"),
        (b'{"host": "a\\u0000b", "port": 1}', "neither a hostname nor an IP address"),
        (b'{"host": "a b", "port": 1}', "neither a hostname nor an IP address"),
        (b'{"host": "-a", "port": 1}', "neither a hostname nor an IP address"),
        (json.dumps({"host": "h" * 64, "port": 1}).encode(), "neither a hostname nor an IP address"),
        (b'{"host": "1::2::3", "port": 1}', "neither a hostname nor an IP address"),
        (b'{"host": "a", "port": ' + b"9" * 4300 + b"}", "port 9999"),
        (b'{"host": "a", "port": ' + b"9" * 4301 + b"}", "too many digits"),
        (b'{"host": "a", "port": 1, "proto": 2}', "needs a uid"),
        (b'{"host": "a", "port": 1, "proto": 1, "uid": 1}', "proto must be an integer of at least 2"),
        (b'{"host": "a", "port": 1, "proto": 2, "uid": -1}', "needs a uid"),
        (b'{"host": "a", "port": 1, "proto": 2, "uid": 18446744073709551616}', "needs a uid"),
        (b'{"host": "a", "port": 1, "proto": 2, "uid": 1, "caps": "hb"}', "caps must be a list"),
        (b'{"host": "a", "port": 1, "proto": 2, "uid": 1, "caps": [1]}', "caps must be names"),
        (b'{"host": "a", "port": 1, "proto": 2, "uid": 1, "nonce": "xyz"}', "nonce must be 32"),
        (b'{"host": "a", "port": 1, "proto": 2, "uid": 1, "mac": "AB"}', "mac must be 64"),
        (b'{"host": "a", "port": true}', "port must be an integer, got bool"),
        (b'{"host": "a", "port": 1.0}', "port must be an integer, got float"),
        (b'{"host": "a", "port": "1"}', "port must be an integer, got str"),
        (b'{"host": "a", "port": -1}', "port -1 is out of range 0..65535"),
        (b'{"host": "a", "port": 65536}', "port 65536 is out of range 0..65535"),
    ],
)
def test_decode_handshake_rejects(mod: Any, body: bytes, message: str) -> None:
    with pytest.raises(HandshakeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mod.decode_handshake(body)


def test_decode_handshake_accepts(mod: Any) -> None:
    assert mod.decode_handshake(b'{"port":1,"host":"h","extra":[1,{}]}') == ("h", 1)
    assert mod.decode_handshake(memoryview(b'{"host": "h", "port": 0}')) == ("h", 0)
    assert mod.decode_handshake(bytearray(b'{"host": "h", "port": 65535}')) == ("h", 65535)
    assert mod.decode_handshake('{"host": "né", "port": 2}'.encode()) == ("né", 2)
    long_name = ".".join(["h" * 63] * 4)[:253]
    assert mod.decode_handshake(json.dumps({"host": long_name, "port": 3}).encode())[0] == long_name
    for host in ("::1", "fe80::1%eth0", "10.0.0.1", "node_1.local.", "xn--nd-fka.example"):
        assert mod.decode_handshake(json.dumps({"host": host, "port": 3}).encode()) == (host, 3)
    with pytest.raises(TypeError):
        mod.decode_handshake("not bytes")


def test_encode_handshake_rejects_what_decode_would(mod: Any) -> None:
    for host, port in [("", 1), ("a", -1), ("a", 70000), ("a", True), (None, 1), ("h" * 256, 1), ("a\nb", 1)]:
        with pytest.raises(HandshakeError):
            mod.encode_handshake(host, port)


def test_bad_limits(impl: types.SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="max_frame_size must be a positive int, got 0"):
        impl.FrameProtocol(Owner(), max_frame_size=0)
    with pytest.raises(ValueError, match=r"write_low_water must be an int in 0\.\.write_high"):
        impl.FrameProtocol(Owner(), write_high_water=10, write_low_water=11)
    with pytest.raises(ValueError, match="max_queue_bytes must be a positive int, got True"):
        impl.FrameProtocol(Owner(), max_queue_bytes=True)


# -- splitting inbound frames ---------------------------------------------------------

BODIES = [b"", b"a", b"hello", bytes(range(256)) * 3, b"x" * 100]
STREAM = (
    message(BODIES[0])
    + message(BODIES[1])
    + frame(UNKNOWN, b"ignored")
    + message(BODIES[2])
    + frame(UNKNOWN, b"")
    + message(BODIES[3])
    + message(BODIES[4])
)
EXPECTED = [("message", b) for b in BODIES]


def test_one_chunk_many_frames(impl: types.SimpleNamespace) -> None:
    proto, owner = receiver(impl.FrameProtocol)
    proto.data_received(STREAM)
    assert owner.events == EXPECTED
    assert proto.frames_received == 7
    assert proto.frames_ignored == 2


def test_every_split_position(impl: types.SimpleNamespace) -> None:
    for cut in range(len(STREAM) + 1):
        proto, owner = receiver(impl.FrameProtocol)
        proto.data_received(STREAM[:cut])
        proto.data_received(STREAM[cut:])
        assert owner.events == EXPECTED, cut
    proto, owner = receiver(impl.FrameProtocol)
    for i in range(len(STREAM)):
        proto.data_received(STREAM[i : i + 1])
    assert owner.events == EXPECTED
    assert (proto.frames_received, proto.frames_ignored) == (7, 2)


def test_accepts_bytearray_and_memoryview_chunks(impl: types.SimpleNamespace) -> None:
    proto, owner = receiver(impl.FrameProtocol)
    proto.data_received(bytearray(STREAM[:9]))
    proto.data_received(memoryview(STREAM)[9:])
    assert owner.events == EXPECTED


# -- large bodies spanning reads: what a sink holds is never changed by later frames ----

BIG = 200 * 1024  # spans reads, and is large enough that the Cython twin may reuse it


def _big_bodies(sizes: list[int]) -> list[bytes]:
    return [bytes([i % 251]) * 7 + (b"%d:" % i) * ((size - 7) // len(b"%d:" % i)) for i, size in enumerate(sizes)]


def _pieces(stream: bytes, piece: int = 65_536) -> list[bytes]:
    return [stream[i : i + piece] for i in range(0, len(stream), piece)]


def _feed_spanning(proto: Any, bodies: list[bytes], piece: int = 65_536) -> None:
    for chunk in _pieces(b"".join(message(b) for b in bodies), piece):
        proto.data_received(chunk)


def test_kept_large_bodies_stay_intact(impl: types.SimpleNamespace) -> None:
    bodies = _big_bodies([BIG, BIG, 3 * BIG, BIG // 2 + 1, BIG, 2 * BIG])
    proto, owner = receiver(impl.FrameProtocol)
    _feed_spanning(proto, bodies)
    assert [e[1] for e in owner.events] == bodies


def test_dropped_large_bodies_are_whole_and_sized(impl: types.SimpleNamespace) -> None:
    # The sink keeps nothing, so a body may be refilled: each must still arrive whole,
    # at its own length, whether the one before was larger or smaller.
    sizes = [BIG, 3 * BIG, BIG, BIG + 1, 140 * 1024, 5 * BIG, 64 * 1024, BIG]
    bodies = _big_bodies(sizes)
    seen: list[tuple[int, int]] = []
    proto = impl.FrameProtocol(Owner())
    proto.set_message_sink(lambda body: seen.append((len(body), hash(body))))
    _feed_spanning(proto, bodies, piece=50_000)
    assert seen == [(len(b), hash(b)) for b in bodies]


def test_refilled_body_forgets_its_hash(impl: types.SimpleNamespace) -> None:
    # The first body is hashed (caching the hash in it) and dropped; the second, the same
    # size with other bytes, is kept in a set: its hash must be its own.
    first, second = _big_bodies([BIG, BIG])
    kept: set[bytes] = set()
    calls = iter([lambda b: hash(b), kept.add])
    proto = impl.FrameProtocol(Owner())
    proto.set_message_sink(lambda body: next(calls)(body))
    _feed_spanning(proto, [first, second])
    assert second in kept and bytes(second) in kept
    assert first not in kept


def test_views_of_a_large_body_stay_intact(impl: types.SimpleNamespace) -> None:
    bodies = _big_bodies([BIG, BIG, BIG])
    views: list[memoryview] = []
    proto = impl.FrameProtocol(Owner())
    proto.set_message_sink(lambda body: views.append(memoryview(body)[:100]))
    _feed_spanning(proto, bodies)
    assert [bytes(v) for v in views] == [b[:100] for b in bodies]


@settings(max_examples=40, deadline=None)
@given(
    frames=st.lists(
        st.tuples(st.sampled_from([1, 100, 70_000, 131_071, 131_072, 200_000, 300_000]), st.booleans()),
        min_size=1, max_size=8,
    ),
    piece=st.sampled_from([1_000, 40_000, 65_536, 250_000]),
)
def test_large_bodies_kept_or_dropped_in_any_order(frames: list[tuple[int, bool]], piece: int) -> None:
    # Whatever the sink keeps and drops, each body it sees is its frame's, and each
    # body it kept still is, once the rest of the stream has gone through.
    bodies = _big_bodies([size for size, _ in frames])
    for module in MODULES:
        keeps = iter([keep for _, keep in frames])
        kept: list[bytes] = []
        seen: list[bytes] = []
        proto = module.FrameProtocol(Owner())
        proto.set_message_sink(functools.partial(_keep_some, keeps, kept, seen))
        _feed_spanning(proto, bodies, piece)
        assert seen == bodies
        assert kept == [b for b, (_, keep) in zip(bodies, frames, strict=True) if keep]


def _keep_some(keeps: Iterator[bool], kept: list[bytes], seen: list[bytes], body: bytes) -> None:
    seen.append(bytes(memoryview(body)))  # a copy: what it held then
    if next(keeps):
        kept.append(body)


@pytest.mark.parametrize("end", ["idle_reads", "connection_lost"])
def test_large_body_memory_is_let_go(impl: types.SimpleNamespace, end: str) -> None:
    # A body that may be refilled is not held for ever: a run of reads with no large
    # frame, or the connection's end, gives its memory back.
    proto = impl.FrameProtocol(Owner())
    proto.set_message_sink(lambda body: None)
    small = message(b"s")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _feed_spanning(proto, _big_bodies([4 * BIG]))
        if end == "idle_reads":
            for _ in range(100):
                proto.data_received(small)
        else:
            proto.connection_lost(None)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < BIG // 2


def _peak_while_fed(proto: Any, chunks: list[bytes]) -> int:
    """Bytes allocated at the peak while ``chunks`` are fed (they exist beforehand)."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for chunk in chunks:
            proto.data_received(chunk)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _refills(mod: Any) -> bool:
    return bool(getattr(mod, "_REFILLS_BODIES", False))


def _assert_refilled(mod: Any, peak: int) -> None:
    """A large body's fill allocated next to nothing (where bodies are refilled), or at
    least the body (the pure twin)."""
    assert peak < 16 * 1024 if _refills(mod) else peak >= BIG


def _held_bytes(proto: Any) -> list[tuple[bytes, bytes]]:
    """The large bytes objects gc.get_referents reaches from ``proto``, each with a copy."""
    held = [o for o in gc.get_referents(proto) if isinstance(o, bytes) and len(o) > 1000]
    return [(o, bytes(memoryview(o))) for o in held]


def _unchanged(held: list[tuple[bytes, bytes]]) -> bool:
    return all(bytes(memoryview(o)) == copy for o, copy in held)


@pytest.mark.parametrize("small_reads_between", [0, 63])
def test_a_dropped_body_is_refilled_by_the_next(mod: Any, small_reads_between: int) -> None:
    # The second large body reuses the first one's memory (in builds that refill; the
    # pure twin allocates each), also after reads of small frames in between.
    seen: list[bytes] = []
    proto = mod.FrameProtocol(Owner())
    proto.set_message_sink(lambda body: seen.append(body[:8]))
    first, second = _big_bodies([BIG, BIG])
    for _ in range(2):
        _feed_spanning(proto, [first])
        for _ in range(small_reads_between):
            proto.data_received(message(b"s"))
        _assert_refilled(mod, _peak_while_fed(proto, _pieces(message(second))))
    assert seen[-1] == second[:8]


def test_refilling_resumes_after_an_idle_spell(mod: Any) -> None:
    # A long run of small reads lets the set-aside body go; the next large body nobody
    # keeps is set aside afresh, with its own count of idle reads.
    proto = mod.FrameProtocol(Owner())
    proto.set_message_sink(lambda body: None)
    first, second = _big_bodies([BIG, BIG])
    _feed_spanning(proto, [first])
    for _ in range(100):
        proto.data_received(message(b"s"))
    _feed_spanning(proto, [first])
    for _ in range(10):
        proto.data_received(message(b"s"))
    _assert_refilled(mod, _peak_while_fed(proto, _pieces(message(second))))


def test_set_aside_bodies_are_bounded_per_process(mod: Any) -> None:
    # Connections that fall silent right after a large frame each keep its body, but all
    # of them together keep no more than SPARE_TOTAL_MAX; it is given back as they end.
    if not _refills(mod):
        pytest.skip("this twin keeps no bodies aside")
    body = _big_bodies([3 << 20])[0]
    size = len(body)
    gc.collect()  # protocols of earlier tests let theirs go
    base = mod.spare_bytes_held()
    assert base + size <= mod.SPARE_TOTAL_MAX
    protos = [mod.FrameProtocol(Owner()) for _ in range(mod.SPARE_TOTAL_MAX // size + 3)]
    for proto in protos:
        proto.set_message_sink(lambda body: None)
        _feed_spanning(proto, [body], piece=1 << 20)
    total = mod.spare_bytes_held()
    assert mod.SPARE_TOTAL_MAX - size < total <= mod.SPARE_TOTAL_MAX
    protos[0].connection_lost(None)  # one ends; another is set up afresh; the rest are dropped
    assert mod.spare_bytes_held() == total - size
    protos[1].__init__(Owner())
    assert mod.spare_bytes_held() == total - 2 * size
    del protos, proto
    gc.collect()
    assert mod.spare_bytes_held() == base


def test_a_set_aside_body_someone_reached_is_not_refilled(mod: Any) -> None:
    # gc.get_referents hands out what a protocol holds; bytes reached that way must keep
    # their contents, and the next body must still arrive whole.
    proto = mod.FrameProtocol(Owner())
    seen: list[bytes] = []
    proto.set_message_sink(lambda body: seen.append(bytes(memoryview(body))))
    first, second, third = _big_bodies([BIG, BIG, 2 * BIG])
    _feed_spanning(proto, [first])
    held = _held_bytes(proto)
    assert held or not _refills(mod)  # the Cython twin holds the set-aside body
    _feed_spanning(proto, [second, third], piece=30_000)
    assert seen == [first, second, third]
    assert _unchanged(held)


@pytest.mark.parametrize("piece", [10_000, 50_000])  # fills without and with a resize
@pytest.mark.parametrize("refilled", [False, True])
def test_a_partial_body_someone_reached_keeps_its_bytes(mod: Any, piece: int, refilled: bool) -> None:
    # The same while a body is still being filled (a fresh one, or a refilled spare):
    # the rest of the frame must not be written into bytes another holder can see.
    proto = mod.FrameProtocol(Owner())
    seen: list[bytes] = []
    proto.set_message_sink(lambda body: seen.append(bytes(memoryview(body))))
    first, body = _big_bodies([3 * BIG, 3 * BIG])
    if refilled:
        _feed_spanning(proto, [first])
    chunks = _pieces(message(body), piece)
    proto.data_received(chunks[0])
    held = _held_bytes(proto)
    assert held or mod is pure_framing  # the Cython twin holds the partial body
    for chunk in chunks[1:]:
        proto.data_received(chunk)
    assert seen == [first, body] if refilled else seen == [body]
    assert _unchanged(held)


def _feed(module: Any, chunks: list[bytes], **kw: Any) -> list[tuple[Any, ...]]:
    proto, owner = receiver(module.FrameProtocol, **kw)
    for chunk in chunks:
        proto.data_received(chunk)
    return [*owner.events, ("counts", proto.frames_received, proto.frames_ignored, proto.closed)]


def _chunk(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(
        st.tuples(
            st.sampled_from([FRAME_MESSAGE, FRAME_MESSAGE, UNKNOWN]), st.binary(max_size=300)
        ),
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_random_chunking_same_as_one_chunk_in_both_twins(
    frames: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    data = b"".join(frame(t, b) for t, b in frames)
    expected = [("message", b) for t, b in frames if t == FRAME_MESSAGE]
    n_ignored = sum(t == UNKNOWN for t, _ in frames)
    expected.append(("counts", len(frames), n_ignored, False))
    for module in MODULES:
        assert _feed(module, [data]) == expected
        assert _feed(module, _chunk(data, cuts)) == expected


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_arbitrary_bytes_twins_agree(data: bytes, cuts: list[int]) -> None:
    """Whatever a peer sends, both twins deliver, refuse and report the same things."""
    results = [_feed(m, _chunk(data, cuts), max_frame_size=64) for m in MODULES]
    assert all(r == results[0] for r in results)
    assert results[0] == _feed(MODULES[0], [data], max_frame_size=64)


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.one_of(
            st.tuples(st.integers(0, 2), st.binary(max_size=24)).map(lambda t: frame(*t)),
            st.integers(0, 30).map(lambda n: struct.pack(">I", n)),  # a bare length prefix
            st.binary(min_size=1, max_size=4),
        ),
        max_size=10,
    ),
    cuts=st.lists(st.integers(0, 300), max_size=8),
    max_frame_size=st.integers(1, 26),
)
def test_frames_near_the_limit_and_garbage_twins_agree(
    items: list[bytes], cuts: list[int], max_frame_size: int
) -> None:
    data = b"".join(items)
    results = [_feed(m, _chunk(data, cuts), max_frame_size=max_frame_size) for m in MODULES]
    assert all(r == results[0] for r in results)
    assert results[0] == _feed(MODULES[0], [data], max_frame_size=max_frame_size)


async def test_unknown_frame_type_ignored(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol)
    proto.set_message_sink(owner.sink)
    with caplog.at_level(logging.DEBUG, logger="casty.transport.framing"):
        proto.data_received(frame(0xAB, b"future") + message(b"after"))
    assert owner.events == [("made",), ("message", b"after")]
    assert proto.frames_ignored == 1 and not proto.closed and not transport.aborted
    assert "unknown type 0xab (6 body bytes)" in caplog.text


@pytest.mark.parametrize("available", [4, 5, 9])
async def test_oversize_length_fails_at_once(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture, available: int
) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol, max_frame_size=100)
    proto.set_message_sink(owner.sink)
    bad = struct.pack(">IB", 101, FRAME_MESSAGE) + b"xxxx"
    proto.data_received(message(b"ok") + bad[:available])
    assert owner.events == [
        ("made",),
        ("message", b"ok"),
        ("error", "frame length 101 exceeds max_frame_size 100"),
    ]
    assert transport.aborted and proto.closed
    assert "frame length 101 exceeds max_frame_size 100" in caplog.text
    proto.data_received(message(b"later"))  # nothing more is read
    assert owner.events[-1][0] == "error"


async def test_four_gib_prefix_fails_without_allocating(impl: types.SimpleNamespace) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol)
    proto.data_received(b"\xff\xff")
    assert owner.events == [("made",)]
    proto.data_received(b"\xff\xff")  # now the whole prefix is in: 4 GiB - 1
    assert owner.events[-1] == ("error", f"frame length {2**32 - 1} exceeds max_frame_size {2**24}")
    assert transport.aborted


async def test_oversize_after_partial_header(impl: types.SimpleNamespace) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol, max_frame_size=10)
    proto.data_received(message(b"a") + b"\x00")
    proto.data_received(b"\x00\x00\x0b" + b"z" * 20 + message(b"never"))
    assert owner.events == [
        ("made",),
        ("owner_message", b"a"),
        ("error", "frame length 11 exceeds max_frame_size 10"),
    ]
    assert transport.aborted


async def test_max_size_frame_accepted(impl: types.SimpleNamespace) -> None:
    proto, owner, _ = await connected(impl.FrameProtocol, max_frame_size=10)
    proto.set_message_sink(owner.sink)
    data = message(b"123456789")  # length 10
    proto.data_received(data[:3])
    proto.data_received(data[3:])
    assert owner.events == [("made",), ("message", b"123456789")]
    assert not proto.closed


async def test_zero_length_is_an_error(impl: types.SimpleNamespace) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol)
    proto.set_message_sink(owner.sink)
    proto.data_received(message(b"x") + b"\x00\x00\x00\x00" + message(b"y"))
    assert owner.events == [
        ("made",),
        ("message", b"x"),
        ("error", "frame length 0: a frame holds at least its type byte"),
    ]
    assert transport.aborted and proto.closed


async def test_raising_sink_keeps_the_connection(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    proto, _, transport = await connected(impl.FrameProtocol)
    seen: list[bytes] = []

    def sink(body: bytes) -> None:
        seen.append(body)
        if body == b"bad":
            raise RuntimeError("boom")

    proto.set_message_sink(sink)
    proto.data_received(message(b"1") + message(b"bad") + message(b"3"))
    proto.data_received(message(b"4"))
    assert seen == [b"1", b"bad", b"3", b"4"]
    assert not proto.closed and not transport.aborted
    assert "message sink raised" in caplog.text and "boom" in caplog.text


async def test_raising_owner_callbacks_are_logged(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    class Angry(Owner):
        def frame_handshake(self, proto: Any, body: bytes) -> None:
            raise RuntimeError("no")

        def frame_message(self, proto: Any, body: bytes) -> None:
            raise RuntimeError("nope")

        def frame_connection_lost(self, proto: Any, exc: Any, unsent: int) -> None:
            raise RuntimeError("never mind")

    proto, _, _ = await connected(impl.FrameProtocol, Angry())
    proto.data_received(handshake("h", 1) + message(b"m"))
    assert proto.frames_received == 2
    proto.connection_lost(None)
    assert caplog.text.count("owner.frame_") == 3


async def test_handshake_then_messages_in_one_chunk(impl: types.SimpleNamespace) -> None:
    owner = Owner(sink_on_handshake=True)
    proto, _, _ = await connected(impl.FrameProtocol, owner)
    proto.data_received(message(b"early") + handshake(*PEER) + message(b"m1") + message(b"m2"))
    assert owner.events == [
        ("made",),
        ("owner_message", b"early"),
        ("handshake", handshake(*PEER)[5:]),
        ("message", b"m1"),
        ("message", b"m2"),
    ]


async def test_close_inside_sink_stops_the_chunk(impl: types.SimpleNamespace) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol)

    def sink(body: bytes) -> None:
        owner.events.append(("message", body))
        proto.close()

    proto.set_message_sink(sink)
    proto.data_received(message(b"a") + message(b"b"))
    assert owner.events == [("made",), ("message", b"a")]
    assert transport.closing and not transport.aborted


# -- outbound ----------------------------------------------------------------------------


async def test_limits_and_peername(impl: types.SimpleNamespace) -> None:
    proto, owner, transport = await connected(
        impl.FrameProtocol, write_high_water=1000, write_low_water=10
    )
    assert transport.limits == (1000, 10)
    assert proto.peername == PEER and proto.transport is transport
    assert proto.peer is None and proto.context is None
    proto.peer, proto.context = "p", {"k": 1}
    assert (proto.peer, proto.context) == ("p", {"k": 1})
    assert owner.events == [("made",)]
    assert isinstance(proto, asyncio.Protocol)


async def test_the_first_send_goes_out_at_once_and_the_rest_in_one_write(
    impl: types.SimpleNamespace,
) -> None:
    proto, _, transport = await connected(impl.FrameProtocol)
    bodies = [f"msg-{i}".encode() * (i % 7) for i in range(500)]
    for body in bodies:
        assert proto.send_message(body) is True
    assert proto.send_frame(frame(UNKNOWN, b"raw")) is True
    assert transport.writes == [message(bodies[0])]  # nothing was queued: at once
    assert proto.queued_frames == 500
    assert proto.queued_bytes == sum(len(b) + 5 for b in bodies[1:]) + 8
    await one_loop_turn()
    assert transport.writes[1:] == [b"".join(message(b) for b in bodies[1:]) + frame(UNKNOWN, b"raw")]
    assert proto.queued_bytes == 0
    proto.send_message(b"next")  # the loop came round since the last write: at once again
    proto.send_message(b"after")
    assert transport.writes[2:] == [message(b"next")]
    await one_loop_turn()
    assert transport.writes[2:] == [message(b"next"), message(b"after")]


async def test_reaching_high_water_writes_at_once(impl: types.SimpleNamespace) -> None:
    proto, _, transport = await connected(
        impl.FrameProtocol, write_high_water=100, write_low_water=0
    )
    prime(proto, transport)
    for _ in range(3):
        proto.send_message(b"x" * 40)  # 45 bytes each: the third reaches 100+
    assert transport.writes == [message(b"x" * 40) * 3]
    proto.send_message(b"tail")
    assert transport.writes[1:] == []  # the loop has not come round yet
    await one_loop_turn()
    assert transport.writes[1:] == [message(b"tail")]


async def test_pause_resume_and_queue_bound(impl: types.SimpleNamespace) -> None:
    proto, _, transport = await connected(impl.FrameProtocol, max_queue_bytes=100)
    proto.pause_writing()
    assert proto.paused
    accepted = [proto.send_message(bytes([65 + i]) * 15) for i in range(6)]  # 20 bytes each
    assert accepted == [True] * 5 + [False]
    assert proto.dropped == 1 and proto.queued_bytes == 100
    await one_loop_turn()
    assert transport.writes == []
    proto.resume_writing()
    assert not proto.paused
    assert transport.writes == [b"".join(message(bytes([65 + i]) * 15) for i in range(5))]
    assert proto.send_message(b"again") is True


async def test_one_frame_over_the_bound_fits_an_empty_queue(impl: types.SimpleNamespace) -> None:
    proto, _, transport = await connected(impl.FrameProtocol, max_queue_bytes=10)
    proto.pause_writing()
    assert proto.send_message(b"y" * 50) is True
    assert proto.send_message(b"z") is False
    assert proto.dropped == 1
    proto.resume_writing()
    assert transport.writes == [message(b"y" * 50)]


async def test_large_frames_get_writes_of_their_own_in_order(impl: types.SimpleNamespace, mod: Any) -> None:
    # A frame or envelope of OWN_WRITE_SIZE or more is handed over as it is (no copy):
    # the smaller frames around it are joined into writes before and after it.
    proto, _, transport = await connected(impl.FrameProtocol, write_high_water=16 << 20)
    big = b"B" * mod.OWN_WRITE_SIZE
    big_frame = frame(UNKNOWN, b"F" * mod.OWN_WRITE_SIZE)
    under = b"u" * (mod.OWN_WRITE_SIZE - 1)
    prime(proto, transport)
    proto.send_message(b"a")
    proto.send_message(big)
    proto.send_message(b"b")
    proto.send_message(under)
    proto.send_frame(big_frame)
    proto.send_message(bytearray(big))  # a mutable buffer is snapshotted, then sent alone
    assert proto.queued_frames == 6
    assert proto.queued_bytes == 5 * 5 + 2 + 2 * len(big) + len(under) + len(big_frame)
    await one_loop_turn()
    assert transport.writes == [
        message(b"a") + message(big)[:5],
        big,
        message(b"b") + message(under),
        big_frame,
        message(big)[:5],
        big,
    ]
    assert transport.writes[1] is big and transport.writes[3] is big_frame
    assert proto.queued_bytes == proto.queued_frames == 0


async def test_an_envelope_in_pieces_is_one_frame(impl: types.SimpleNamespace, mod: Any) -> None:
    # send_message takes the list EnvelopeWriter.encode_parts may return: one frame whose
    # body is the pieces joined; a large piece is written as it is, small ones are copied.
    proto, _, transport = await connected(impl.FrameProtocol, write_high_water=16 << 20)
    big = b"B" * mod.OWN_WRITE_SIZE
    head, tail = b"head", bytearray(b"tail")
    prime(proto, transport)
    proto.send_message(b"a")
    assert proto.send_message([head, big, tail, big]) is True
    tail[:] = b"TAIL"  # a mutable piece was snapshotted
    proto.send_message(b"b")
    assert proto.send_message([]) is True  # an empty body is still a frame
    assert proto.queued_frames == 4
    assert proto.queued_bytes == 4 * 5 + 2 + 8 + 2 * len(big)
    await one_loop_turn()
    assert b"".join(transport.writes) == (
        message(b"a") + message(b"head" + big + b"tail" + big) + message(b"b") + message(b"")
    )
    assert [w for w in transport.writes if w is big] == [big, big]
    assert transport.writes[0] == message(b"a") + message(b"head" + big + b"tail" + big)[:9]


async def test_a_non_buffer_is_refused_whole(impl: types.SimpleNamespace) -> None:
    # bytes(5) would be five zero bytes: both twins refuse what is not a buffer instead.
    proto, _, transport = await connected(impl.FrameProtocol)
    for bad in (5, "text"):
        with pytest.raises(TypeError):
            proto.send_message(bad)
        with pytest.raises(TypeError):
            proto.send_frame(bad)
    assert proto.queued_frames == 0 and proto.dropped == 0
    await one_loop_turn()
    assert transport.writes == []


class _Pieces(list[bytes]):
    pass


async def test_a_list_subclass_is_pieces_too(impl: types.SimpleNamespace) -> None:
    # Both twins take any list as pieces, so they cannot disagree on what a subclass is.
    proto, _, transport = await connected(impl.FrameProtocol)
    assert proto.send_message(_Pieces([b"ab", b"cd"])) is True
    await one_loop_turn()
    assert b"".join(transport.writes) == message(b"abcd")


async def test_an_envelope_in_pieces_is_counted_as_one_frame(impl: types.SimpleNamespace, mod: Any) -> None:
    size = mod.OWN_WRITE_SIZE
    proto, owner, _ = await connected(impl.FrameProtocol, max_queue_bytes=size + 100)
    proto.pause_writing()
    assert proto.send_message([b"x" * size, b"y"]) is True
    assert proto.send_message([b"z" * 50, b"z" * 50]) is False  # over the bound, whole
    assert proto.dropped == 1 and proto.queued_frames == 1
    with pytest.raises(TypeError):
        proto.send_message([b"ok", 5])
    assert proto.queued_frames == 1 and proto.dropped == 1
    proto.connection_lost(None)
    assert owner.events[-1] == ("lost", None, 1)
    assert proto.send_message([b"late"]) is False and proto.dropped == 2


async def test_large_frames_queue_while_paused(impl: types.SimpleNamespace, mod: Any) -> None:
    size = mod.OWN_WRITE_SIZE
    proto, owner, transport = await connected(impl.FrameProtocol, max_queue_bytes=2 * size + 20)
    proto.pause_writing()
    assert proto.send_message(b"s" * size) is True
    assert proto.send_message(b"t" * size) is True
    assert proto.send_message(b"x" * 20) is False  # over the bound, counting the large ones
    assert proto.send_message(b"y" * 5) is True
    assert proto.queued_bytes == 2 * (size + 5) + 10 and proto.dropped == 1
    proto.resume_writing()
    assert b"".join(transport.writes) == message(b"s" * size) + message(b"t" * size) + message(b"y" * 5)
    proto.pause_writing()
    proto.send_message(b"s" * size)
    proto.send_message(b"z")
    proto.connection_lost(None)
    assert owner.events[-1] == ("lost", None, 2)
    assert proto.queued_bytes == 0


async def test_connection_lost_reports_unsent(impl: types.SimpleNamespace) -> None:
    proto, owner, _ = await connected(impl.FrameProtocol)
    proto.pause_writing()
    for body in (b"a", b"b", b"c"):
        proto.send_message(body)
    exc = ConnectionResetError("gone")
    proto.connection_lost(exc)
    assert owner.events == [("made",), ("lost", exc, 3)]
    assert proto.closed and proto.queued_bytes == 0 and proto.transport is None
    assert proto.peername == PEER
    assert proto.send_message(b"late") is False
    assert proto.send_frame(message(b"late")) is False
    assert proto.dropped == 2


async def test_close_flushes_then_closes(impl: types.SimpleNamespace) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol)
    proto.pause_writing()
    proto.send_message(b"1")
    proto.send_message(b"2")
    proto.close()
    assert transport.writes == [message(b"1") + message(b"2")]
    assert transport.closing and not transport.aborted and proto.closed
    assert proto.send_message(b"3") is False and proto.dropped == 1
    await one_loop_turn()
    assert len(transport.writes) == 1
    proto.connection_lost(None)
    assert owner.events[-1] == ("lost", None, 0)


async def test_abort_discards_and_counts(impl: types.SimpleNamespace) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol)
    prime(proto, transport)
    proto.send_message(b"1")
    proto.abort()
    assert transport.aborted and proto.closed
    await one_loop_turn()
    assert transport.writes == []
    proto.connection_lost(None)
    assert owner.events[-1] == ("lost", None, 1)


async def test_sends_before_connection_made_are_flushed(impl: types.SimpleNamespace) -> None:
    owner = Owner()
    proto = impl.FrameProtocol(owner)
    assert proto.send_message(b"early") is True
    transport = FakeTransport()
    proto.connection_made(transport)
    await one_loop_turn()
    assert transport.writes == [message(b"early")]


async def test_send_frame_needs_a_whole_frame(impl: types.SimpleNamespace) -> None:
    proto, _, transport = await connected(impl.FrameProtocol)
    prime(proto, transport)
    with pytest.raises(FrameError, match="length prefix says 9 but 4 bytes follow it"):
        proto.send_frame(b"\x00\x00\x00\x09\x01abc")
    with pytest.raises(FrameError, match="got 3 bytes"):
        proto.send_frame(b"\x00\x00\x00")
    mutable = bytearray(message(b"ba"))
    assert proto.send_frame(mutable) is True
    mutable[5:] = b"XX"  # sending took a snapshot
    assert proto.send_message(memoryview(b"mv")) is True
    assert proto.queued_frames == 2
    with pytest.raises(TypeError):
        proto.send_message("text")
    await one_loop_turn()
    assert transport.writes == [message(b"ba") + message(b"mv")]


async def test_write_failure_aborts(
    impl: types.SimpleNamespace, mod: Any, caplog: pytest.LogCaptureFixture
) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol)
    prime(proto, transport)
    transport.fail_writes = True
    proto.send_message(b"x")
    proto.send_message(b"y" * mod.OWN_WRITE_SIZE)  # a write of its own: it fails too
    await one_loop_turn()
    assert transport.aborted and proto.closed
    assert "transport.write failed" in caplog.text
    proto.connection_lost(None)
    assert owner.events[-1] == ("lost", None, 2)  # what the failed write held is not sent


async def test_a_write_at_once_that_fails_aborts_inside_the_send(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol)
    transport.fail_writes = True
    assert proto.send_message(b"x") is True  # accepted, then its write failed
    assert transport.aborted and proto.closed and "transport.write failed" in caplog.text
    assert proto.send_message(b"y") is False and proto.dropped == 1
    proto.connection_lost(None)
    assert owner.events[-1] == ("lost", None, 1)


async def test_nothing_written_to_a_closing_transport(impl: types.SimpleNamespace) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol)
    prime(proto, transport)
    proto.send_message(b"x")
    transport.closing = True  # closed by someone else
    await one_loop_turn()
    assert transport.writes == []
    proto.connection_lost(None)
    assert owner.events[-1] == ("lost", None, 1)


# -- a real connection ---------------------------------------------------------------------


class Collector:
    """An owner that takes any handshake and collects message bodies until ``want`` arrive."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.bodies: list[bytes] = []
        self.done = asyncio.Event()
        self.made = asyncio.Event()
        self.lost = asyncio.Event()
        self.proto: Any = None

    def sink(self, body: bytes) -> None:
        self.bodies.append(body)
        if len(self.bodies) == self.want:
            self.done.set()

    def frame_connection_made(self, proto: Any) -> None:
        self.proto = proto
        self.made.set()

    def frame_handshake(self, proto: Any, body: bytes) -> None:
        proto.peer = pure_framing.decode_handshake(body)
        proto.set_message_sink(self.sink)

    def frame_message(self, proto: Any, body: bytes) -> None:
        raise AssertionError("message before handshake")

    def frame_error(self, proto: Any, reason: str) -> None:
        raise AssertionError(reason)

    def frame_connection_lost(self, proto: Any, exc: BaseException | None, unsent: int) -> None:
        self.lost.set()


async def test_loopback_10000_frames_each_way(impl: types.SimpleNamespace) -> None:
    import uvloop

    loop = asyncio.get_running_loop()
    assert isinstance(loop, uvloop.Loop)
    n = 10_000
    server_side = Collector(n)
    client_side = Collector(n)
    server = await loop.create_server(
        lambda: impl.FrameProtocol(server_side, write_high_water=4096, write_low_water=1024),
        "127.0.0.1",
        0,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(30):
            _, client = await loop.create_connection(
                lambda: impl.FrameProtocol(
                    client_side, write_high_water=4096, write_low_water=1024
                ),
                "127.0.0.1",
                port,
            )
            await server_side.made.wait()
            sprot = server_side.proto
            bodies = [f"{i}:".encode() + b"p" * (i % 300) for i in range(n)]
            assert client.send_frame(pure_framing.encode_handshake("127.0.0.1", 1))
            assert sprot.send_frame(pure_framing.encode_handshake("127.0.0.1", port))
            for i, body in enumerate(bodies):
                assert client.send_message(body)
                assert sprot.send_message(body)
                if i % 1000 == 999:
                    await one_loop_turn()  # let the socket drain between bursts
            await server_side.done.wait()
            await client_side.done.wait()
            assert server_side.bodies == bodies
            assert client_side.bodies == bodies
            assert sprot.peer == ("127.0.0.1", 1) and client.peer == ("127.0.0.1", port)
            assert client.dropped == 0 and sprot.dropped == 0
            client.close()
            await server_side.lost.wait()
            await client_side.lost.wait()
    finally:
        server.close()
        await server.wait_closed()


async def test_loopback_large_frames_across_many_chunks(impl: types.SimpleNamespace) -> None:
    loop = asyncio.get_running_loop()
    bodies = [bytes([i]) * (3 * 1024 * 1024 + i) for i in range(4)] + [b"small"]
    server_side = Collector(len(bodies))
    server = await loop.create_server(
        lambda: impl.FrameProtocol(server_side, max_frame_size=4 * 1024 * 1024), "127.0.0.1", 0
    )
    try:
        async with asyncio.timeout(30):
            _, client = await loop.create_connection(
                lambda: impl.FrameProtocol(Collector(0), max_queue_bytes=64 * 1024 * 1024),
                "127.0.0.1",
                server.sockets[0].getsockname()[1],
            )
            assert client.send_frame(pure_framing.encode_handshake("127.0.0.1", 1))
            for body in bodies:
                assert client.send_message(body)
            await server_side.done.wait()
            assert [len(b) for b in server_side.bodies] == [len(b) for b in bodies]
            assert server_side.bodies == bodies
            assert server_side.proto.frames_received == len(bodies) + 1
            client.close()
            await server_side.lost.wait()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("step", [1000, 65_536, 100_003, 2_000_000])
def test_memory_follows_bytes_received_not_the_length_prefix(impl: types.SimpleNamespace, step: int) -> None:
    import tracemalloc

    body = bytes(range(256)) * 4096  # 1 MiB
    data = message(body)
    proto, owner = receiver(impl.FrameProtocol)
    tracemalloc.start()
    try:
        proto.data_received(data[:4 + 1 + 10])  # the prefix says 1 MiB; 10 bytes came
        held = tracemalloc.get_traced_memory()[0]
        for start in range(15, len(data), step):
            proto.data_received(data[start:start + step])
    finally:
        tracemalloc.stop()
    assert held < 200 * 1024
    assert owner.events == [("message", body)]


# -- control frames (negotiated kinds) ---------------------------------------------


def _feed_control(module: Any, chunks: list[bytes], kinds: set[int], **kw: Any) -> list[tuple[Any, ...]]:
    proto, owner = receiver(module.FrameProtocol, **kw)
    proto.set_control_kinds(kinds)
    for chunk in chunks:
        proto.data_received(chunk)
    return [*owner.events, ("counts", proto.frames_received, proto.frames_ignored, proto.closed,
                            proto.bytes_received)]


def test_control_kinds_go_to_the_owner_in_order(impl: types.SimpleNamespace) -> None:
    data = frame(0x02, b"ping") + message(b"m1") + frame(0x04, b"") + frame(0x05, b"x") + message(b"m2")
    for cuts in ([], list(range(len(data)))):
        events = _feed_control(impl, _chunk(data, cuts), {2, 4})
        assert events == [
            ("control", 2, b"ping"), ("message", b"m1"), ("control", 4, b""), ("message", b"m2"),
            ("counts", 5, 1, False, len(data)),
        ]


def test_control_kinds_are_checked(impl: types.SimpleNamespace) -> None:
    proto, _ = receiver(impl.FrameProtocol)
    assert proto.control_kinds == frozenset()
    for bad in (0, 1, 256, -1, True, "2"):
        with pytest.raises(ValueError, match=r"control frame kind is an int in 2\.\.255"):
            proto.set_control_kinds([bad])
    proto.set_control_kinds([3, 2])
    assert proto.control_kinds == frozenset({2, 3})
    proto.set_control_kinds([])
    proto.data_received(frame(0x02, b"x"))
    assert proto.frames_ignored == 1


def test_control_kind_before_handshake_is_a_protocol_error(impl: types.SimpleNamespace) -> None:
    owner = Owner()
    proto = impl.FrameProtocol(owner)
    proto.set_control_kinds([2])
    proto.data_received(frame(0x02, b"early"))
    assert owner.events == [("error", "frame of unknown type 0x02 before the handshake")]


def test_control_frames_reset_the_ignored_run(impl: types.SimpleNamespace) -> None:
    unknown = frame(0x09, b"")
    data = (unknown * 3 + frame(0x02, b"")) * 3
    events = _feed_control(impl, [data], {2}, max_ignored_frames=4)
    assert events[-1] == ("counts", 12, 9, False, len(data))


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.tuples(st.integers(0, 6), st.binary(max_size=40)).map(lambda t: frame(*t)),
        max_size=10,
    ),
    cuts=st.lists(st.integers(0, 500), max_size=8),
    kinds=st.sets(st.integers(2, 6), max_size=3),
)
def test_control_frames_twins_agree(items: list[bytes], cuts: list[int], kinds: set[int]) -> None:
    data = b"".join(items)
    results = [_feed_control(m, _chunk(data, cuts), kinds, max_frame_size=48) for m in MODULES]
    assert all(r == results[0] for r in results)
    assert results[0] == _feed_control(MODULES[0], [data], kinds, max_frame_size=48)


async def test_send_control_passes_the_queue_limit(impl: types.SimpleNamespace) -> None:
    proto, _, transport = await connected(impl.FrameProtocol, max_queue_bytes=64)
    proto.pause_writing()
    assert proto.send_message(b"x" * 40) is True
    assert proto.send_message(b"y" * 40) is False  # over max_queue_bytes: refused
    watch = frame(0x04, b"w" * 40)
    assert proto.send_control(watch) is True and proto.send_control(watch) is True
    assert proto.dropped == 1
    with pytest.raises(FrameError, match="whole encoded frame"):
        proto.send_control(b"\x00\x00")
    proto.resume_writing()
    assert b"".join(transport.writes) == message(b"x" * 40) + watch + watch
    proto.abort()
    assert proto.send_control(watch) is False and proto.dropped == 2
