"""Connection-level limits against peers that speak the protocol correctly (issue 20).

FrameProtocol, in both twins: a small frame limit and only handshake or message frames
before the handshake, a per-read frame budget (the rest of a chunk waits for a later
loop turn, reading paused), reason-keyed holds on reading, and a bound on unknown
frames in a row.  TcpNode, on loopback: the connection cap, the idle timeout, failed-dial
entries that expire and stay bounded, the ``allow_dial`` policy, and log lines that
carry no peer-chosen newlines or megabytes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import struct
import types
from typing import Any

import pytest

from casty import TcpTransportConfig
from casty.transport import node as node_module
from casty.transport.messages import GetPort
from tests.remote_helpers import Collector, Failures, Ping, node
from tests.test_framing import FakeTransport, Owner, connected, frame, handshake, message, one_loop_turn
from tests.test_hostile_peers import (
    FAKE_HOST,
    Lines,
    Steady,
    arena,
    assert_one_line,
    closed_by_peer,
    connect,
    hostile_protocol,
    ping_frame,
)
from tests.test_remote import wait_until

MiB = 1024 * 1024
UNKNOWN = 0x07


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Lines:
    return Lines(caplog)


class ReadingTransport(FakeTransport):
    """A FakeTransport that records pause_reading / resume_reading calls."""

    def __init__(self) -> None:
        super().__init__()
        self.reading: list[str] = []

    def pause_reading(self) -> None:
        self.reading.append("pause")

    def resume_reading(self) -> None:
        self.reading.append("resume")


def reading_protocol(impl: types.SimpleNamespace, owner: Owner | None = None, **kw: Any) -> tuple[Any, Owner, Any]:
    """A connected protocol with a sink (after the handshake), on a ReadingTransport."""
    owner = owner if owner is not None else Owner()
    proto = impl.FrameProtocol(owner, **kw)
    transport = ReadingTransport()
    proto.connection_made(transport)
    proto.set_message_sink(owner.sink)
    return proto, owner, transport


def bodies(n: int, start: int = 0) -> list[bytes]:
    return [b"m%d" % i for i in range(start, start + n)]


def delivered(owner: Owner) -> list[bytes]:
    return [e[1] for e in owner.events if e[0] == "message"]


# -- 1. before the handshake: a small frame limit, only handshake and message frames ---------


@pytest.mark.parametrize("available", [4, 5, 9])
async def test_a_length_above_max_handshake_size_before_the_handshake_fails_at_once(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture, available: int
) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol)  # no sink: no handshake yet
    proto.data_received((struct.pack(">IB", 8 * 1024 + 1, 0) + bytes(100))[:available])
    assert owner.events == [
        ("made",),
        ("error", "frame length 8193 exceeds max_handshake_size 8192 (no handshake yet)"),
    ]
    assert transport.aborted and proto.closed and proto.partial_bytes == 0
    assert caplog.text.count("frame protocol error") == 1


async def test_the_handshake_limit_is_a_kwarg_and_the_sink_lifts_it(impl: types.SimpleNamespace) -> None:
    owner = Owner(sink_on_handshake=True)
    proto, _, transport = await connected(impl.FrameProtocol, owner, max_handshake_size=64)
    big = bytes(1000)
    proto.data_received(handshake("10.0.0.1", 7) + message(big))  # the handshake sets the sink
    assert owner.events[-1] == ("message", big) and not transport.aborted
    proto2, owner2, transport2 = await connected(impl.FrameProtocol, max_handshake_size=64)
    proto2.data_received(struct.pack(">I", 65))
    assert owner2.events[-1] == ("error", "frame length 65 exceeds max_handshake_size 64 (no handshake yet)")
    assert transport2.aborted


def test_max_handshake_size_is_validated(impl: types.SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="max_handshake_size must be a positive int, got 0"):
        impl.FrameProtocol(Owner(), max_handshake_size=0)
    with pytest.raises(ValueError, match="max_handshake_size must be at most 65537"):
        impl.FrameProtocol(Owner(), max_handshake_size=65538)
    for name in ("read_budget_frames", "max_ignored_frames"):
        with pytest.raises(ValueError, match=f"{name} must be a positive int, got -1"):
            impl.FrameProtocol(Owner(), **{name: -1})


@pytest.mark.parametrize("split", [False, True], ids=["one-chunk", "byte-by-byte"])
async def test_an_unknown_frame_type_before_the_handshake_is_an_error(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture, split: bool
) -> None:
    proto, owner, transport = await connected(impl.FrameProtocol)
    data = frame(0xAB, b"future") + handshake("10.0.0.1", 7)
    for chunk in [data[i : i + 1] for i in range(len(data))] if split else [data]:
        proto.data_received(chunk)
    assert owner.events == [("made",), ("error", "frame of unknown type 0xab before the handshake")]
    assert transport.aborted and proto.frames_ignored == 0
    assert caplog.text.count("frame protocol error") == 1


# -- 3. unknown frames after the handshake: ignored, up to max_ignored_frames in a row --------


async def test_max_ignored_frames_in_a_row_close_the_connection(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    proto, owner, transport = reading_protocol(impl, max_ignored_frames=3)
    # A good frame between them starts the count again.
    proto.data_received(frame(UNKNOWN, b"") * 2 + message(b"ok") + frame(UNKNOWN, b"") * 2)
    assert not transport.aborted and proto.frames_ignored == 4
    proto.data_received(frame(UNKNOWN, b"x") + message(b"never"))
    assert owner.events[-2:] == [
        ("message", b"ok"),
        ("error", "3 frames of unknown types in a row (max_ignored_frames 3)"),
    ]
    assert transport.aborted
    assert caplog.text.count("frame protocol error") == 1


async def test_the_default_allows_1023_unknown_frames_in_a_row(impl: types.SimpleNamespace) -> None:
    proto, owner, transport = reading_protocol(impl, read_budget_frames=10_000)
    proto.data_received(frame(UNKNOWN, b"") * 1023 + message(b"ok") + frame(UNKNOWN, b"") * 1023)
    assert delivered(owner) == [b"ok"] and not transport.aborted
    proto.data_received(frame(UNKNOWN, b""))
    assert transport.aborted and owner.events[-1][0] == "error"


# -- 2. a per-read budget, and holds on reading ----------------------------------------------


async def test_one_read_delivers_at_most_the_budget_and_the_rest_follows_in_order(
    impl: types.SimpleNamespace,
) -> None:
    proto, owner, transport = reading_protocol(impl, read_budget_frames=3)
    data = b"".join(message(b) for b in bodies(10))
    tail = message(b"last")
    proto.data_received(data + tail[:4])
    assert delivered(owner) == bodies(3)
    assert transport.reading == ["pause"] and proto.reading_paused
    assert proto.backlog_bytes == len(data) - 3 * len(message(b"m0")) + 4
    assert proto.partial_bytes == 0 and proto.frames_received == 3
    seen = []
    while proto.reading_paused:
        await asyncio.sleep(0)  # one loop turn: the backlog's callback was scheduled before us
        seen.append(len(delivered(owner)))
    assert seen == [6, 9, 10]  # three a turn, then the last one
    assert transport.reading == ["pause", "resume"]
    assert proto.partial_bytes == 4 and proto.backlog_bytes == 0 and proto.frames_received == 10
    proto.data_received(tail[4:])
    assert delivered(owner) == [*bodies(10), b"last"]


async def test_a_frame_completed_from_the_partial_one_counts_against_the_budget(
    impl: types.SimpleNamespace,
) -> None:
    proto, owner, _transport = reading_protocol(impl, read_budget_frames=2)
    first = message(b"first")
    proto.data_received(first[:3])
    proto.data_received(first[3:] + b"".join(message(b) for b in bodies(3)))
    assert delivered(owner) == [b"first", b"m0"]
    await wait_until_resumed(proto)
    assert delivered(owner) == [b"first", *bodies(3)]


async def wait_until_resumed(proto: Any) -> None:
    for _ in range(1000):
        if not proto.reading_paused:
            return
        await one_loop_turn()
    raise AssertionError("the backlog was never delivered")


@pytest.mark.parametrize("how", ["close", "abort", "lost"])
async def test_nothing_more_is_delivered_once_closed_during_the_backlog(
    impl: types.SimpleNamespace, how: str
) -> None:
    proto, owner, _transport = reading_protocol(impl, read_budget_frames=2)
    proto.data_received(b"".join(message(b) for b in bodies(6)))
    assert delivered(owner) == bodies(2)
    if how == "lost":
        proto.connection_lost(None)
    else:
        getattr(proto, how)()
    for _ in range(3):
        await one_loop_turn()
    assert delivered(owner) == bodies(2) and proto.backlog_bytes == 0
    proto.data_received(message(b"later"))
    assert delivered(owner) == bodies(2)


async def test_reasons_hold_reading_until_all_let_go(impl: types.SimpleNamespace) -> None:
    holder: list[Any] = []

    class Pausing(Owner):
        def sink(self, body: bytes) -> None:
            super().sink(body)
            if body == b"m1":  # a full mailbox, say: hold reading from inside the sink
                holder[0].pause_reading("mailbox")

    proto, owner, transport = reading_protocol(impl, Pausing())
    holder.append(proto)
    proto.data_received(b"".join(message(b) for b in bodies(4)))
    assert delivered(owner) == bodies(2)  # nothing after the frame that paused
    assert transport.reading == ["pause"] and proto.reading_paused
    proto.pause_reading("other")
    proto.pause_reading("mailbox")  # twice for one reason is once
    proto.data_received(message(b"m4"))  # handed over by a transport already reading: kept, in order
    proto.resume_reading("mailbox")
    await one_loop_turn()
    assert delivered(owner) == bodies(2) and transport.reading == ["pause"]  # "other" still holds
    proto.resume_reading("nobody")  # holds nothing: ignored
    proto.resume_reading("other")
    await wait_until_resumed(proto)
    assert delivered(owner) == bodies(5)
    assert transport.reading == ["pause", "resume"]
    proto.data_received(message(b"m5"))
    assert delivered(owner) == bodies(6)


async def test_a_hold_without_a_backlog_pauses_and_resumes_the_transport(impl: types.SimpleNamespace) -> None:
    proto, _owner, transport = reading_protocol(impl)
    proto.pause_reading(("mailbox", 1))
    assert transport.reading == ["pause"] and proto.reading_paused
    proto.resume_reading(("mailbox", 1))
    assert transport.reading == ["pause", "resume"] and not proto.reading_paused


async def test_frames_sent_counts_accepted_frames(impl: types.SimpleNamespace) -> None:
    proto, _, _ = reading_protocol(impl)
    proto.send_message(b"a")
    proto.send_message([b"b", b"c"])
    proto.send_frame(frame(UNKNOWN, b""))
    assert proto.frames_sent == 3


# -- on the wire: what a hostile peer gets from a node --------------------------------------


async def test_a_large_length_before_the_handshake_closes_at_once(lines: Lines) -> None:
    async with arena(handshake_timeout=30) as (b, steady):
        before = set(b.node._protocols)
        reader, writer = await connect(b)
        lines.clear()
        writer.write(struct.pack(">IB", MiB, 0) + bytes(1000))  # a "handshake" of 1 MiB
        await closed_by_peer(reader)
        await wait_until(lambda: b.node._protocols == before)
        assert_one_line(lines(), logging.WARNING, "exceeds max_handshake_size 8192")
        await steady.progress()
        writer.close()


async def test_an_unknown_frame_before_the_handshake_closes_at_once(lines: Lines) -> None:
    async with arena(handshake_timeout=30) as (b, steady):
        before = set(b.node._protocols)
        reader, writer = await connect(b)
        lines.clear()
        writer.write(frame(0x42, b"hello"))
        await closed_by_peer(reader)
        await wait_until(lambda: b.node._protocols == before)
        assert_one_line(lines(), logging.WARNING, "frame of unknown type 0x42 before the handshake")
        await steady.progress()
        writer.close()


async def test_a_flood_of_unknown_frames_after_the_handshake_is_cut_off(lines: Lines) -> None:
    async with arena() as (b, steady):
        before = set(b.node._protocols)
        reader, writer = await connect(b, 7000)
        lines.clear()
        writer.write(frame(0x42, b"x" * 10) * 5000)
        await closed_by_peer(reader)
        await wait_until(lambda: b.node._protocols == before)
        assert (FAKE_HOST, 7000) not in claims(b)
        records = [r for r in lines() if r.levelno >= logging.WARNING]
        assert_one_line(records, logging.WARNING, "1024 frames of unknown types in a row")
        await steady.progress()
        writer.close()


async def test_a_stream_of_frames_yields_to_a_healthy_peer(lines: Lines) -> None:
    async with arena(read_budget_frames=16) as (b, steady):
        before = set(b.node._protocols)
        _reader, writer = await connect(b, 7100)
        proto = hostile_protocol(b, before)
        steady_seen: list[int] = []
        paused_seen: list[bool] = []

        class Recording(list[Any]):
            """The victim's items, noting at each one how far the healthy stream got."""

            def append(self, item: Any) -> None:
                steady_seen.append(len(steady.got.items))
                paused_seen.append(proto.reading_paused)
                super().append(item)

        victim = Collector()
        victim.items = Recording()
        b.spawn(victim.behavior(), "victim")
        writer.write(b"".join(ping_frame(b, "/user/victim", i) for i in range(5000)))
        items = await victim.wait(5000)
        assert [p.seq for p in items] == list(range(5000))
        assert any(paused_seen)  # the budget ran out inside a read, and reading paused
        assert steady_seen[-1] > steady_seen[0]  # the healthy peer's messages came in between
        assert not proto.closed and not proto.reading_paused
        assert [r for r in lines() if r.levelno >= logging.WARNING] == []
        writer.close()


# -- 4. connection cap and idle timeout ----------------------------------------------------


async def test_at_max_connections_the_least_active_inbound_connection_makes_room(lines: Lines) -> None:
    async with node("b", max_connections=3) as b, node("a") as a:
        steady = Steady(a, b)
        await steady.start()  # a's dial to b: one inbound connection that delivers frames
        lines.clear()
        idle = [await connect(b, 9000 + i) for i in range(2)]  # the cap is reached
        await wait_until(lambda: len(b.node._protocols) == 3)
        late = [await connect(b, 9100 + i) for i in range(5)]  # each closes the least active one
        for reader, _ in idle + late[:3]:
            await closed_by_peer(reader)
        await steady.progress()  # the busy connection was never the one closed
        assert b.node.connection_count == 3
        assert sorted(k[1] for k in b.node.inbound_peers if k[0] == FAKE_HOST) == [9103, 9104]
        warnings = [r.getMessage() for r in lines() if r.levelno >= logging.WARNING]
        # five closed to make room, logged at powers of two of the count: 1, 2, 4
        assert len(warnings) == 3 and all("closed the least active inbound connection" in w for w in warnings)
        assert "4 closed so far" in warnings[-1]
        steady.stop()
        await steady.finish()
        for _, writer in idle + late:
            writer.close()


async def test_inbound_connections_beyond_max_connections_are_refused_when_none_can_go(lines: Lines) -> None:
    # b sends over all of its connections (it dialed them): none is closed for a newcomer
    async with node("b", max_connections=2) as b, node("c1") as c1, node("c2") as c2:
        for c in (c1, c2):
            got = Collector()
            c.spawn(got.behavior(), "sink")
            b.ref(c.address.with_path("/user/sink")).tell(Ping(1))
            await got.wait(1)
        await wait_until(lambda: len(b.node._protocols) == 2)
        lines.clear()
        refused = [await connect(b) for _ in range(5)]
        for reader, _ in refused:
            await closed_by_peer(reader)
        assert len(b.node._protocols) == 2 and b.node.connection_count == 2
        warnings = [r.getMessage() for r in lines() if r.levelno >= logging.WARNING]
        # five refusals, logged at powers of two of the count: 1, 2, 4
        assert len(warnings) == 3 and all("max_connections 2" in w for w in warnings), warnings
        assert "3 refused so far" not in " ".join(warnings) and "4 refused so far" in warnings[-1]
        for _, writer in refused:
            writer.close()


async def test_a_dial_beyond_max_connections_is_refused_and_reported() -> None:
    failures = Failures()
    async with node("b") as b, node("c") as c, node("a", max_connections=1, on_send_failure=failures) as a:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        c.spawn(got.behavior(), "sink")
        a.ref(b.address.with_path("/user/sink")).tell(Ping(1))
        await got.wait(1)
        a.ref(c.address.with_path("/user/sink")).tell(Ping(2))
        await failures.wait(1)
        assert [(f.host, f.port, f.reason) for f in failures] == [("127.0.0.1", c.address.port, "connection_limit")]
        assert a.node.connected_peers == [("127.0.0.1", b.address.port)]
        assert ("127.0.0.1", c.address.port) not in a.node._peers  # no connect attempted


async def test_an_idle_connection_is_closed_and_a_busy_one_kept(lines: Lines) -> None:
    async with arena(idle_timeout=0.4) as (b, steady):
        before = set(b.node._protocols)
        idle_reader, idle_writer = await connect(b, 8000)
        _busy_reader, busy_writer = await connect(b, 8001)
        victim = Collector()
        b.spawn(victim.behavior(), "victim")
        lines.clear()

        async def chat() -> None:
            for i in range(1000):
                busy_writer.write(ping_frame(b, "/user/victim", i))
                await asyncio.sleep(0.05)

        task = asyncio.get_running_loop().create_task(chat())
        try:
            await closed_by_peer(idle_reader)
            await wait_until(lambda: (FAKE_HOST, 8000) not in claims(b))
            assert (FAKE_HOST, 8001) in claims(b) and not task.done()
        finally:
            task.cancel()
        assert_one_line(lines(), logging.INFO, f"connection to {FAKE_HOST}:8000 idle for 0.4s")
        await steady.progress()  # the streaming node's connection is busy: kept
        await wait_until(lambda: len(b.node._protocols) == len(before) + 1)
        idle_writer.close()
        busy_writer.close()


def claims(b: Any) -> set[Any]:
    """What the peers of b's open connections claim to be."""
    return {p.context.peer_key for p in b.node._protocols}


def test_new_config_knobs_and_their_defaults() -> None:
    cfg = TcpTransportConfig("127.0.0.1", 0)
    assert (cfg.max_handshake_size, cfg.read_budget_frames, cfg.max_ignored_frames) == (8192, 1024, 1024)
    assert (cfg.max_connections, cfg.idle_timeout, cfg.allow_dial) == (1024, 300.0, None)
    assert TcpTransportConfig("127.0.0.1", 0, idle_timeout=math.inf).idle_timeout == math.inf
    for kw, text in [
        ({"max_connections": 0}, "max_connections must be a positive int, got 0"),
        ({"idle_timeout": 0}, "idle_timeout must be a positive number of seconds"),
        ({"read_budget_frames": 1.5}, "read_budget_frames must be a positive int, got 1.5"),
        ({"max_handshake_size": 10**6}, "max_handshake_size must be at most 65537, got 1000000"),
        ({"allow_dial": "127.0.0.1"}, "allow_dial must be None, a callable"),
        ({"allow_dial": [("h", 1), ("h", "2")]}, r"its item \('h', '2'\) is not a \(host, port\) tuple"),
    ]:
        with pytest.raises(ValueError, match=text):
            TcpTransportConfig("127.0.0.1", 0, **kw)


# -- 5. failed-dial entries expire and stay bounded ----------------------------------------


def closed_ports(n: int) -> list[int]:
    """Ports on 127.0.0.1 nothing listens on (bound, then closed)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


async def test_failed_dial_entries_expire_in_the_sweep() -> None:
    failures = Failures()
    async with node("a", blacklist_duration=0.05, frame_timeout=0.2, on_send_failure=failures) as a:
        ports = closed_ports(20)
        for port in ports:
            a.node.send_message("127.0.0.1", port, b"x")
        await failures.wait_for(lambda fs: {f.port for f in fs if f.reason == "connect_failed"} == set(ports))
        assert len(a.node._blacklist) > 0
        await wait_until(lambda: not a.node._blacklist)  # nobody looked them up: the sweep did it


async def test_failed_dial_entries_are_bounded_oldest_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "MAX_BLACKLIST", 5)
    failures = Failures()
    async with node("a", blacklist_duration=60, on_send_failure=failures) as a:
        ports = closed_ports(12)
        for port in ports:
            a.node.send_message("127.0.0.1", port, b"x")
            await failures.wait_for(lambda fs, port=port: any(f.port == port for f in fs))
        assert list(a.node._blacklist) == [("127.0.0.1", p) for p in ports[-5:]]


# -- 6. dial policy -------------------------------------------------------------------------


async def test_allow_dial_refuses_before_connecting_and_applies_to_the_name(lines: Lines) -> None:
    failures = Failures()
    async with node("b") as b:
        real = ("127.0.0.1", b.address.port)
        alias = ("b.internal", 1)

        def address_map(host: str, port: int) -> tuple[str, int]:
            return real if (host, port) == alias else (host, port)

        async with node("a", allow_dial=[alias], address_map=address_map, on_send_failure=failures) as a:
            got = Collector()
            b.spawn(got.behavior(), "sink")
            lines.clear()
            assert a.node.send_message(*real, b"x") is False  # b's own address is not on the list
            assert a.node.send_message("evil\nhost", 9, b"x") is False
            assert [(f.host, f.reason) for f in failures] == [
                ("127.0.0.1", "not_allowed"),
                ("evil\nhost", "not_allowed"),
            ]
            assert a.node._peers == {} and a.node.connection_count == 0 and not a.node._dials
            text = [r.getMessage() for r in lines()]
            assert len(text) == 2 and all("\n" not in t for t in text)  # logged at powers of two, escaped
            assert "'evil\\nhost'" in text[1]
            remote = a.ref(f"casty://b@{alias[0]}:{alias[1]}/user/sink")
            remote.tell(Ping(1))  # the name is allowed; address_map leads it to b
            assert await got.wait(1) == [Ping(1)]


async def test_allow_dial_takes_a_predicate() -> None:
    failures = Failures()
    async with node("a", allow_dial=lambda host, port: port != 9, on_send_failure=failures) as a:
        a.node.send_message("127.0.0.1", 9, b"x")
        assert [f.reason for f in failures] == ["not_allowed"]


# -- 7. log lines a peer cannot flood or forge ---------------------------------------------


async def test_unknown_messages_to_the_tcp_actor_are_logged_bounded_and_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="casty")
    async with node("b") as b:
        assert b._tcp is not None
        caplog.clear()
        for i in range(100):
            b._tcp.tell(("junk\n" * 100_000, i))
        # Handled in order: once it answers this, it has handled all of them.
        assert await b.ask(b._tcp, GetPort) == b.address.port
        records = [r for r in caplog.records if "unknown message" in r.getMessage()]
        assert len(records) == 7  # 1, 2, 4, ..., 64
        assert all(r.levelno == logging.WARNING for r in records)
        assert all(len(r.getMessage()) < 600 and "\n" not in r.getMessage() for r in records)
        assert "of type tuple" in records[0].getMessage() and "64 so far" in records[-1].getMessage()
