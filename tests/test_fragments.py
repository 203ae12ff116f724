"""Fragments (cap "frag", frame kind 0x05): wire bytes, reassembly rules, the writer's order
and pacing in both framing twins, negotiation with peers that lack the cap, and a
differential fuzz of the reassembly path (pure and Cython protocols fed the same bytes).
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import logging
import os
import struct
import types
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casty.errors import FragmentError
from casty.transport.config import TcpTransportConfig
from casty.transport.envelope import encode_header
from casty.transport.fragments import (
    ACK_FRAME,
    FLAG_FIRST,
    FLAG_LAST,
    FRAGMENT_OVERHEAD,
    FragmentLink,
    encode_ack,
    encode_fragment,
    lane_of,
)
from casty.transport.frame_codec import encode_frame
from casty.transport.handshake import Handshake, encode_hello
from casty.transport.node import TcpNode
from casty.wire import FRAME_FRAGMENT, FRAME_HANDSHAKE, FRAME_MESSAGE, OWN_WRITE_SIZE

FRAG = FLAG_FIRST | FLAG_LAST


def env(target: str, payload: bytes) -> bytes:
    return encode_header(target, "casty://s@h:2/user/x", "bytes") + payload


# -- wire bytes -----------------------------------------------------------------------


def test_golden_vectors() -> None:
    assert encode_fragment(7, FRAG, b"hi", 2).hex() == "0000000c050300000007000000026869"
    assert encode_fragment(7, FLAG_FIRST, b"h", 2).hex() == "0000000b05010000000700000002" "68"
    assert encode_fragment(7, 0, b"x", 3).hex() == "00000007050000000007" "78"
    assert encode_fragment(7, FLAG_LAST, b"i", 3).hex() == "00000007050200000007" "69"
    assert ACK_FRAME.hex() == "00000006058000000001"
    assert encode_ack(3).hex() == "00000006058000000003"


def test_lane_is_the_target_as_the_header_spells_it() -> None:
    a = env('casty://s@h:1/user/"a", "sender": x', b"p")
    assert lane_of(a) == b'casty://s@h:1/user/\\"a\\", \\"sender\\": x'
    assert lane_of([a[:3], a[3:]]) == lane_of(a)
    header = b'{"sender": "s", "target": "t", "z": 1}'
    odd = struct.pack(">I", len(header)) + header
    assert lane_of(odd + b"p") == lane_of(env("t", b"q"))  # another key order, the same lane


# -- reassembly rules ------------------------------------------------------------------------


def body(frame: bytes) -> bytes:
    return frame[5:]


def reassembler(impl: types.SimpleNamespace, **kw: int) -> Any:
    limits = {"max_message": 100, "max_streams": 2, "max_bytes": 150} | kw
    return impl.Reassembler(**limits)


def test_reassembles_in_order_and_interleaved(impl: types.SimpleNamespace) -> None:
    r = reassembler(impl)
    assert r.feed(body(encode_fragment(1, FLAG_FIRST, b"ab", 5))) is None
    assert r.feed(body(encode_fragment(2, FLAG_FIRST, b"x", 2))) is None
    assert r.held_bytes == 7  # the announced totals: allocated when each stream opened
    assert r.feed(body(encode_fragment(1, 0, b"cd", 5))) is None
    assert r.feed(body(encode_fragment(2, FLAG_LAST, b"y", 2))) == b"xy"
    assert r.held_bytes == 5 and r.open_streams == 1
    assert r.feed(body(encode_fragment(1, FLAG_LAST, b"e", 5))) == b"abcde"
    assert r.held_bytes == 0 and r.open_streams == 0
    assert r.feed(body(encode_fragment(1, FRAG, b"z", 1))) == b"z"  # a stream id may be reused


BAD = [
    ([b"\x01\x00\x00"], "fragment body of 3 bytes"),
    ([b"\x41\x00\x00\x00\x01\x00\x00\x00\x01x"], "flags 0x41"),
    ([b"\x01\x00\x00\x00\x01\x00\x00"], "first fragment body of 7 bytes"),
    ([body(encode_fragment(1, FLAG_FIRST, b"a", 3)), body(encode_fragment(1, FLAG_FIRST, b"a", 3))],
     "opens stream 1, which is open already"),
    ([body(encode_fragment(9, 0, b"a", 3))], "stream 9, which is not open"),
    ([body(encode_fragment(1, FLAG_FIRST, b"a", 101))], "announces 101 bytes (1..100"),
    ([body(encode_fragment(1, FLAG_FIRST, b"a", 0))], "announces 0 bytes"),
    ([body(encode_fragment(1, FLAG_FIRST, b"", 3))], "empty fragment on stream 1"),
    ([body(encode_fragment(1, FLAG_FIRST, b"abcd", 3))], "overruns its 3 announced bytes"),
    ([body(encode_fragment(1, FLAG_FIRST, b"a", 3)), body(encode_fragment(1, FLAG_LAST, b"b", 3))],
     "ended at 2 of 3 bytes"),
    ([body(encode_fragment(n, FLAG_FIRST, b"a", 3)) for n in range(3)], "more than 2 fragment streams"),
    ([body(encode_fragment(1, FLAG_FIRST, b"a" * 80, 100)), body(encode_fragment(2, FLAG_FIRST, b"a" * 80, 100))],
     "over 150 bytes (max_fragment_bytes)"),
]


@pytest.mark.parametrize(("bodies", "why"), BAD)
def test_bad_fragments_are_refused(impl: types.SimpleNamespace, bodies: list[bytes], why: str) -> None:
    r = reassembler(impl)
    with pytest.raises(FragmentError, match=None) as err:
        for b in bodies:
            r.feed(b)
    assert why in str(err.value)
    assert r.held_bytes == 0 and r.open_streams == 0  # cleared: nothing held after an error


# -- the writer, in both framing twins ---------------------------------------------------------


class Owner:
    """A FrameProtocol owner that hands fragment frames to the link, as TcpNode does."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.lost: list[int] = []

    def frame_connection_made(self, proto: Any) -> None:
        pass

    def frame_control(self, proto: Any, kind: int, body: bytes) -> None:
        proto.fragments.on_frame(body)

    def frame_error(self, proto: Any, reason: str) -> None:
        self.errors.append(reason)

    def frame_connection_lost(self, proto: Any, exc: Any, unsent: int) -> None:
        self.lost.append(unsent)


class Transport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closing = False

    def write(self, data: Any) -> None:
        self.data += data

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("192.0.2.1", 9) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def frames(self) -> list[tuple[int, bytes]]:
        out, pos, data = [], 0, bytes(self.data)
        while pos < len(data):
            n = struct.unpack_from(">I", data, pos)[0]
            out.append((data[pos + 4], data[pos + 5 : pos + 4 + n]))
            pos += 4 + n
        self.data.clear()
        return out


def link_protocol(impl: types.SimpleNamespace, **kw: Any) -> tuple[Any, Transport, list[bytes], Owner]:
    owner = Owner()
    proto = impl.FrameProtocol(owner, max_frame_size=kw.pop("max_frame_size", 1 << 20))
    transport = Transport()
    proto.connection_made(transport)
    delivered: list[bytes] = []
    proto.set_message_sink(delivered.append)
    proto.set_control_kinds([FRAME_FRAGMENT])
    limits = {"fragment_size": 1024, "window": 2, "max_message": proto.max_frame_size - 1,
              "max_streams": 4, "max_bytes": 1 << 21} | kw
    proto.set_fragments(FragmentLink(proto, deliver=delivered.append, on_error=owner.errors.append, **limits))
    return proto, transport, delivered, owner


class WriteLog(Transport):
    """A Transport that also keeps each ``write`` as it came."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        super().write(data)
        self.writes.append(bytes(data))


async def test_fragments_fill_their_frames_and_get_writes_of_their_own(impl: types.SimpleNamespace) -> None:
    # At fragment_size == OWN_WRITE_SIZE every fragment but the last is exactly that long on
    # the wire, so the protocol writes it as its own piece instead of copying it into the
    # batch of small frames queued around it.
    size = OWN_WRITE_SIZE
    proto = impl.FrameProtocol(Owner(), max_frame_size=1 << 22)
    transport = WriteLog()
    proto.connection_made(transport)
    proto.set_control_kinds([FRAME_FRAGMENT])
    proto.set_fragments(FragmentLink(proto, fragment_size=size, window=8, max_message=(1 << 22) - 1,
                                     max_streams=4, max_bytes=1 << 23, deliver=print, on_error=print))
    big = env("casty://r@h:1/user/a", b"x" * (4 * size))
    assert proto.send_message(env("casty://r@h:1/user/b", b"first")) is True  # written at once; opens a batch
    assert proto.send_message(big) is True  # its fragments queue in that batch
    assert proto.send_message(env("casty://r@h:1/user/b", b"second")) is True
    await asyncio.sleep(0)  # the scheduled flush
    frags = [k for k, _ in transport.frames()].count(FRAME_FRAGMENT)
    assert frags == 5  # 4 * size of payload plus a header, in frames of `size`
    whole = [w for w in transport.writes if len(w) == size]
    assert len(whole) == frags - 1, [len(w) for w in transport.writes]
    assert all(w[4] == FRAME_FRAGMENT for w in whole)
    assert proto.queued_bytes == 0


async def test_small_messages_pass_a_large_one_and_keep_their_lane(impl: types.SimpleNamespace) -> None:
    proto, transport, _, _ = link_protocol(impl)
    chunk = 1024 - FRAGMENT_OVERHEAD
    big = env("casty://r@h:1/user/a", bytes(range(256)) * 20)
    assert proto.send_message(big) is True
    assert proto.send_message([env("casty://r@h:1/user/a", b"after")]) is True  # its lane: waits
    assert proto.send_message(env("casty://r@h:1/user/b", b"other")) is True  # another: goes now
    await asyncio.sleep(0)  # the scheduled flush
    out = transport.frames()
    # Two fragments (the window), then the other target's message whole.
    assert [k for k, _ in out] == [FRAME_FRAGMENT, FRAME_FRAGMENT, FRAME_MESSAGE]
    assert out[0][1] == encode_fragment(1, FLAG_FIRST, big[:chunk], len(big))[5:]
    assert out[2][1].endswith(b"other")
    assert proto.queued_bytes == len(big) + 5 + len(env("casty://r@h:1/user/a", b"after")) + 5
    rest = []
    while True:  # ack each fragment as the peer would
        proto.data_received(ACK_FRAME)
        await asyncio.sleep(0)
        got = transport.frames()
        if not got:
            break
        rest += got
    kinds = [k for k, _ in rest]
    assert kinds[-1] == FRAME_MESSAGE and rest[-1][1].endswith(b"after")
    assert all(k == FRAME_FRAGMENT for k in kinds[:-1])
    pieces = [out[0][1][9:], out[1][1][5:], *(b[5:] for _, b in rest[:-1])]
    assert b"".join(pieces) == big
    assert rest[-2][1][0] == FLAG_LAST
    assert proto.queued_bytes == 0


async def test_a_link_reassembles_acks_and_refuses(impl: types.SimpleNamespace) -> None:
    proto, transport, delivered, owner = link_protocol(impl)
    frames = encode_fragment(5, FLAG_FIRST, b"ab", 4) + encode_fragment(5, FLAG_LAST, b"cd", 4)
    proto.data_received(frames[:7])
    proto.data_received(frames[7:])
    assert delivered == [b"abcd"]
    await asyncio.sleep(0)
    # One ack for the loop turn's two fragments (cumulative), after it.
    assert transport.frames() == [(FRAME_FRAGMENT, encode_ack(2)[5:])]
    proto.data_received(ACK_FRAME)  # an ack with nothing out
    assert owner.errors == ["fragment ack of 1 with 0 out"]


async def test_lost_connection_counts_held_messages_unsent(impl: types.SimpleNamespace) -> None:
    proto, _, _, owner = link_protocol(impl)
    proto.send_message(env("casty://r@h:1/user/a", b"x" * 5000))
    proto.send_message(env("casty://r@h:1/user/a", b"y"))
    await asyncio.sleep(0)  # the window's fragments are written; the rest waits for acks
    proto.connection_lost(None)
    assert owner.lost == [2]  # the large message, part-way, and the one behind it
    assert proto.queued_bytes == 0


async def test_close_writes_everything_held(impl: types.SimpleNamespace) -> None:
    proto, transport, _, _ = link_protocol(impl)
    big = env("casty://r@h:1/user/a", b"x" * 5000)
    proto.send_message(big)
    proto.send_message(env("casty://r@h:1/user/a", b"y"))
    proto.close()
    out = transport.frames()
    assert b"".join(b[9:] if b[0] & FLAG_FIRST else b[5:] for k, b in out if k == FRAME_FRAGMENT) == big
    assert out[-1] == (FRAME_MESSAGE, env("casty://r@h:1/user/a", b"y"))


async def test_the_queue_bound_counts_what_the_link_holds(impl: types.SimpleNamespace) -> None:
    owner = Owner()
    proto = impl.FrameProtocol(owner, max_queue_bytes=10_000)
    proto.connection_made(Transport())
    proto.set_message_sink(lambda b: None)
    proto.set_fragments(FragmentLink(proto, fragment_size=1024, window=1, max_message=100_000, max_streams=4,
                                     max_bytes=200_000, deliver=print, on_error=print))
    assert proto.send_message(env("casty://r@h:1/user/a", b"x" * 6000))
    assert not proto.send_message(env("casty://r@h:1/user/b", b"x" * 6000))
    assert proto.dropped == 1


# -- over TCP: negotiation ---------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.arrived = asyncio.Event()

    async def on_message(self, data: bytes) -> None:
        self.got.append(data)
        self.arrived.set()

    async def wait(self, n: int) -> list[bytes]:
        async with asyncio.timeout(10):
            while len(self.got) < n:
                self.arrived.clear()
                await self.arrived.wait()
        return self.got


async def test_order_per_target_over_tcp() -> None:
    sink = Sink()
    recv = TcpNode(TcpTransportConfig("127.0.0.1", 0), sink)
    send = TcpNode(TcpTransportConfig("127.0.0.1", 0, fragment_window=1), Sink())
    await recv.start()
    await send.start()
    try:
        key = ("127.0.0.1", recv.port)
        send.send_message_to(key, env("casty://r@h:1/user/a", b"0"))
        await sink.wait(1)
        big = env("casty://r@h:1/user/a", b"x" * (1 << 20))
        send.send_message_to(key, big)
        send.send_message_to(key, env("casty://r@h:1/user/a", b"after"))
        send.send_message_to(key, env("casty://r@h:1/user/b", b"other"))
        got = await sink.wait(4)
        assert got[1].endswith(b"other")  # overtook the large message
        assert got[2:] == [big, env("casty://r@h:1/user/a", b"after")]
        assert send._peers[key].proto.fragments is not None
    finally:
        await send.close()
        await recv.close()


@pytest.mark.parametrize("which", ["sender", "receiver"])
async def test_without_the_cap_on_either_end_messages_go_whole(which: str) -> None:
    sink = Sink()
    off = {"fragment_size": 0}
    recv = TcpNode(TcpTransportConfig("127.0.0.1", 0, **(off if which == "receiver" else {})), sink)
    send = TcpNode(TcpTransportConfig("127.0.0.1", 0, **(off if which == "sender" else {})), Sink())
    await recv.start()
    await send.start()
    try:
        key = ("127.0.0.1", recv.port)
        send.send_message_to(key, env("casty://r@h:1/user/a", b"0"))
        await sink.wait(1)
        proto = send._peers[key].proto
        assert proto.fragments is None and "frag" not in proto.context.caps
        big = env("casty://r@h:1/user/a", b"x" * 200_000)
        before = proto.frames_sent
        send.send_message_to(key, big)
        assert (await sink.wait(2))[1] == big
        assert proto.frames_sent == before + 1  # one whole frame
    finally:
        await send.close()
        await recv.close()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(5)
    n = struct.unpack(">I", head[:4])[0]
    return head[4], await reader.readexactly(n - 1)


async def test_a_v1_peer_gets_whole_frames() -> None:
    send = TcpNode(TcpTransportConfig("127.0.0.1", 0), Sink())
    await send.start()
    got: list[tuple[int, bytes]] = []
    done = asyncio.Event()

    async def v1_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader)  # its hello
        writer.write(encode_frame(FRAME_HANDSHAKE, json.dumps({"host": "127.0.0.1", "port": port}).encode()))
        got.append(await read_frame(reader))
        done.set()
        writer.close()

    server = await asyncio.start_server(v1_peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        big = env("casty://r@h:1/user/a", b"x" * 300_000)
        send.send_message_to(("127.0.0.1", port), big)
        async with asyncio.timeout(10):
            await done.wait()
        assert got == [(FRAME_MESSAGE, big)]
    finally:
        server.close()
        await send.close()


async def test_a_peer_breaking_the_rules_is_closed_with_one_line(caplog: pytest.LogCaptureFixture) -> None:
    recv = TcpNode(TcpTransportConfig("127.0.0.1", 0), Sink())
    await recv.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", recv.port)
        writer.write(encode_hello(Handshake("127.0.0.9", 9, 1, 2, frozenset({"frag"}), None, None)))
        assert (await read_frame(reader))[0] == FRAME_HANDSHAKE
        with caplog.at_level(logging.WARNING, logger="casty"):
            writer.write(encode_fragment(3, FLAG_FIRST, b"a", 2) + encode_fragment(3, FLAG_FIRST, b"b", 2))
            async with asyncio.timeout(10):
                while await reader.read(65536):  # the ack of the first, then EOF
                    pass
        lines = [r.getMessage() for r in caplog.records if "stream 3" in r.getMessage()]
        assert len(lines) == 1 and "opens stream 3, which is open already" in lines[0]
        writer.close()
    finally:
        await recv.close()


# -- differential fuzz: both framing twins fed the same fragment streams ------------------------------


def twins() -> list[types.SimpleNamespace]:
    """Both framing twins (the Cython one when it imports; it must where it is required)."""
    import casty.transport.framing as pure

    found = [types.SimpleNamespace(FrameProtocol=pure.FrameProtocol)]
    try:
        import casty._fast.framing as fast
    except ImportError:
        if os.environ.get("CASTY_REQUIRE_EXTENSIONS", "") in {"1", "true", "yes"}:
            raise
    else:
        found.append(types.SimpleNamespace(FrameProtocol=fast.FrameProtocol))
    return found


@st.composite
def fragment_streams(draw: st.DrawFn) -> bytes:
    """Valid fragment streams (interleaved, with whole messages and acks between), then mutated."""
    out = []
    for stream in range(draw(st.integers(1, 3))):
        total = draw(st.integers(1, 60))
        data = bytes((stream * 7 + i) & 0xFF for i in range(total))
        cuts = sorted(set(draw(st.lists(st.integers(1, max(total - 1, 1)), max_size=4))) - {total})
        edges = [0, *cuts, total]
        for i, (a, b) in enumerate(itertools.pairwise(edges)):
            flags = (FLAG_FIRST if i == 0 else 0) | (FLAG_LAST if b == total else 0)
            out.append(encode_fragment(stream, flags, data[a:b], total))
    out = draw(st.permutations(out))
    if draw(st.booleans()):
        out.insert(draw(st.integers(0, len(out))), encode_frame(FRAME_MESSAGE, b"whole"))
    data = bytearray(b"".join(out))
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.sampled_from([0, 1, 2, 3, 5, 0x80, 0xFF, 60]))
    return bytes(data)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=fragment_streams(), cut=st.integers(0, 400))
def test_fuzz_twins_agree_on_fragment_streams(data: bytes, cut: int) -> None:
    outcomes = []
    for ns in twins():
        loop = asyncio.new_event_loop()
        try:
            proto, transport, delivered, owner = loop.run_until_complete(_connected(ns))
            proto.data_received(data[:cut])
            proto.data_received(data[cut:])
            link = proto.fragments
            outcomes.append((delivered, owner.errors, proto.closed, link.reassembler.held_bytes,
                             link.reassembler.open_streams, bytes(transport.data)))
            assert link.reassembler.held_bytes <= 150
        finally:
            loop.close()
    assert all(o == outcomes[0] for o in outcomes)


async def _connected(ns: types.SimpleNamespace) -> tuple[Any, Transport, list[bytes], Owner]:
    return link_protocol(ns, max_frame_size=120, max_streams=2, max_bytes=150)


async def test_compact_messages_held_behind_a_large_one_survive_a_table_start_over() -> None:
    """A message to a target whose lane holds a large message waits in the link; with compact
    headers it is held in its JSON form, so ids the table gives again meanwhile (a start-over
    forced by more names than the table holds) cannot misroute it."""
    from tests.remote_helpers import Collector, Ping, node

    got = Collector()
    async with node("r") as r, node("s", fragment_size=1024, fragment_window=1) as s:
        r.spawn(got.behavior(), "x")
        x = s.ref(f"casty://r@127.0.0.1:{r.node.port}/user/x")
        x.tell(Ping(0))
        await got.wait(1)
        key = ("127.0.0.1", r.node.port)
        table = s.node.header_table(key)
        assert table is not None and s.node._peers[key].proto.fragments is not None
        epoch = table.epoch
        x.tell(Ping(1, "b" * 8192))  # fragmented: its lane is busy until the last ack
        x.tell(Ping(2))  # waits in the lane
        for i in range(1100):  # more names than a table holds: it starts over
            s.ref(f"casty://r@127.0.0.1:{r.node.port}/user/none-{i}").tell(Ping(-1))
        assert table.epoch > epoch
        x.tell(Ping(3))
        items = await got.wait(4)
        assert [p.seq for p in items] == [0, 1, 2, 3]
        assert items[1] == Ping(1, "b" * 8192)
        assert not s.node._peers[key].proto.closed


async def test_a_compact_message_is_expanded_without_copying_its_payload(impl: types.SimpleNamespace) -> None:
    proto, _, _, _ = link_protocol(impl)
    link = proto.fragments
    link.expand = lambda head: env("casty://r@h:1/user/a", b"") if head == b"\x00\x01\x00\x02\x00\x03" else b"?"
    payload = b"p" * 5000
    parts, size = link.expanded([b"\x00\x01\x00", b"\x02\x00\x03" + payload[:10], payload])
    assert b"".join(parts) == env("casty://r@h:1/user/a", payload[:10] + payload)
    assert size == len(b"".join(parts))
    assert parts[-1] is payload  # the large part is kept as it is, not copied


def _stream(reassembler: Any, stream: int, data: bytes, piece: int = 64 * 1024) -> bytes:
    """Feed ``data`` as one fragment stream (bodies after the frame header); the body back."""
    out = None
    for start in range(0, len(data), piece):
        chunk = data[start : start + piece]
        flags = (FLAG_FIRST if start == 0 else 0) | (FLAG_LAST if start + piece >= len(data) else 0)
        out = reassembler.feed(encode_fragment(stream, flags, chunk, len(data))[5:])
    assert out is not None
    return out


def test_a_released_body_is_refilled_by_the_next_stream_of_its_size(impl: types.SimpleNamespace) -> None:
    module = importlib.import_module(type(impl.Reassembler(max_message=1, max_streams=1, max_bytes=1)).__module__)
    if not getattr(module, "_REFILLS_BODIES", False):
        pytest.skip("this twin keeps no bodies aside")
    size = 256 * 1024
    r = impl.Reassembler(max_message=4 * size, max_streams=4, max_bytes=8 * size)
    first = _stream(r, 1, b"a" * size)
    assert first == b"a" * size and hash(first) == hash(b"a" * size)
    where = id(first)
    del first  # released: the next stream of its size refills it
    second = _stream(r, 2, b"b" * size)
    assert id(second) == where and second == b"b" * size
    assert hash(second) == hash(b"b" * size)  # the cached hash was forgotten
    third = _stream(r, 3, b"c" * size)  # second is still held: never written into
    assert third is not second and second == b"b" * size and third == b"c" * size
    other = _stream(r, 4, b"d" * (size // 2))  # another size: a fresh body
    assert other == b"d" * (size // 2)
    held = module.spare_bytes_held()
    assert 0 < held <= 32 * 1024 * 1024
    r.clear()
    assert module.spare_bytes_held() == held - size // 2
