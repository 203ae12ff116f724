"""Liveness (cap "hb"): pings on idle connections, round-trip times, peers down for silence,
this node's own stalls not held against its peers, and the v1 and bad-body cases.

Small intervals throughout (0.05 s / 0.3 s); the tests await the liveness timer's ticks
and node events rather than sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casty import AskFailed, NodeDown, NodeUp, RemoteActorSystem
from casty.transport.config import TcpTransportConfig
from casty.transport.frame_codec import encode_frame
from casty.transport.handshake import Handshake, encode_handshake, encode_hello
from casty.transport.node import TcpNode, _Conn
from casty.wire import FRAME_ECHO, FRAME_PING
from tests.remote_helpers import Count, Events, node

HB = {"heartbeat_interval": 0.05, "failure_timeout": 0.3}



async def ticks(node: TcpNode, n: int) -> None:
    """Wait until ``node``'s liveness timer ran ``n`` more ticks."""
    assert node._liveness is not None
    target = node._liveness.ticks + n
    async with asyncio.timeout(10 + n * node._liveness.interval * 4):
        while node._liveness.ticks < target:
            await asyncio.sleep(node._liveness.interval / 4)


class SilentPeer:
    """A raw TCP peer: answers the handshake (v2 with cap "hb", or v1), then says nothing."""

    def __init__(self, v2: bool) -> None:
        self.v2 = v2
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> SilentPeer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        length = struct.unpack(">I", await reader.readexactly(4))[0]
        await reader.readexactly(length)
        if self.v2:
            writer.write(encode_hello(Handshake("127.0.0.1", self.port, 99, 2, frozenset({"hb"}))))
        else:
            writer.write(encode_handshake("127.0.0.1", self.port))
        await writer.drain()
        try:
            while await reader.read(65536):  # read on, answer nothing
                pass
        except ConnectionError:
            pass

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        if self.server is not None:
            self.server.close()


async def test_pings_give_a_round_trip_time() -> None:
    async with node("a", **HB) as a, node("b", **HB) as b:
        key = ("127.0.0.1", b.node.port)
        a.node.send_frame(*key, 0x30, b"")
        async with asyncio.timeout(10):
            while not a.nodes() or a.nodes()[0].rtt is None:
                await asyncio.sleep(0.01)
        [info] = a.nodes()
        assert (info.host, info.port, info.uid) == (*key, b.node.uid)
        assert 0 <= info.rtt < 5  # type: ignore[operator]
        proto = a.node._peers[key].proto
        assert "hb" in proto.context.caps


async def test_a_silent_v2_peer_is_down_and_its_pending_ask_fails(caplog: pytest.LogCaptureFixture) -> None:
    peer = await SilentPeer(v2=True).start()
    events = Events()
    caplog.set_level(logging.WARNING, logger="casty")
    try:
        async with node("a", **HB) as a:
            a.subscribe_nodes(events)
            ref = a.ref(f"casty://silent@127.0.0.1:{peer.port}/user/x")
            ask = asyncio.ensure_future(a.ask(ref, lambda r: Count(r), timeout=60))
            assert await events.next() == NodeUp("127.0.0.1", peer.port, 99)
            assert await events.next() == NodeDown("127.0.0.1", peer.port, 99, "silent")
            with pytest.raises(AskFailed) as err:
                await asyncio.wait_for(ask, 5)
            assert err.value.reason == "node_down"
            assert f"127.0.0.1:{peer.port}" in err.value.detail and "silent" in err.value.detail
            assert not a.node.is_connected(("127.0.0.1", peer.port))
            silent = [r for r in caplog.records if "silent for" in r.getMessage()]
            assert len(silent) == 1 and "0.3s" in silent[0].getMessage()
    finally:
        await peer.close()


async def test_a_silent_v1_peer_is_never_down() -> None:
    peer = await SilentPeer(v2=False).start()
    events = Events()
    try:
        async with node("a", **HB) as a:
            a.subscribe_nodes(events)
            a.node.send_frame("127.0.0.1", peer.port, 0x30, b"")
            assert await events.next() == NodeUp("127.0.0.1", peer.port, None)
            await ticks(a.node, 3 * 6)  # three failure_timeouts
            assert events.seen == [NodeUp("127.0.0.1", peer.port, None)]
            proto = a.node._peers[("127.0.0.1", peer.port)].proto
            assert proto.context.caps == frozenset() and not proto.closed
    finally:
        await peer.close()


async def test_our_own_stall_is_not_held_against_a_peer() -> None:
    """The loop blocked for 3 x failure_timeout right after a liveness tick (so nothing was
    read since it): when it runs again, no peer is down and the connection is kept."""
    async with node("a", **HB) as a, node("b", **HB) as b:
        events_a = Events()
        a.subscribe_nodes(events_a)
        key = ("127.0.0.1", b.node.port)
        a.node.send_frame(*key, 0x30, b"")
        assert isinstance(await events_a.next(), NodeUp)
        proto = a.node._peers[key].proto
        await ticks(a.node, 2)
        liveness = a.node._liveness
        assert liveness is not None
        tick = liveness._tick
        stalled = asyncio.Event()
        lags: list[float] = []

        def tick_then_stall() -> None:
            tick()
            lags.append(a.node.loop_lag)
            if not stalled.is_set():
                stalled.set()
                time.sleep(3 * HB["failure_timeout"])  # the stall under test

        liveness._tick = tick_then_stall  # type: ignore[method-assign]
        await asyncio.wait_for(stalled.wait(), 10)
        await ticks(a.node, 1)
        assert lags[1] >= 2 * HB["failure_timeout"]  # the tick after the stall saw it
        await ticks(a.node, 12)  # two failure_timeouts more
        assert [e for e in events_a.seen if isinstance(e, NodeDown)] == []
        assert a.node._peers[key].proto is proto and not proto.closed
        assert len(b.node._protocols) == 1 and not next(iter(b.node._protocols)).closed


async def test_heartbeats_off_lists_no_cap_and_runs_no_timer() -> None:
    async with node("a", heartbeats=False) as a, node("b", **HB) as b:
        assert b'"hb"' not in a.node._hello_frame and a.node._liveness is None
        assert a.node.loop_lag == 0.0
        a.node.send_frame("127.0.0.1", b.node.port, 0x30, b"")
        async with asyncio.timeout(10):
            while not a.nodes():
                await asyncio.sleep(0.01)
        assert "hb" not in a.node._peers[("127.0.0.1", b.node.port)].proto.context.caps


# -- bodies -------------------------------------------------------------------------------


class StubProto:
    """What the heartbeat handler touches of a connection."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.aborted = False
        self.closed = False
        self.peername = ("127.0.0.1", 1)

    def send_control(self, frame: bytes) -> bool:
        self.sent.append(frame)
        return True

    def abort(self) -> None:
        self.aborted = self.closed = True


def stub_conn(node_: TcpNode) -> tuple[_Conn, StubProto]:
    proto = StubProto()
    conn = _Conn(node_, proto, outbound=True, dial_key=("127.0.0.1", 1))
    proto.context = conn  # type: ignore[attr-defined]
    return conn, proto


NODE = TcpNode(TcpTransportConfig("127.0.0.1", 0), None)  # type: ignore[arg-type]


def test_a_ping_is_echoed_byte_for_byte() -> None:
    conn, proto = stub_conn(NODE)
    NODE._kind_handlers[FRAME_PING](conn, FRAME_PING, b"\x01\x02\x03\x04\x05\x06\x07\x08")
    assert proto.sent == [encode_frame(FRAME_ECHO, b"\x01\x02\x03\x04\x05\x06\x07\x08")]


def test_an_echo_sets_rtt_and_one_from_the_future_is_ignored() -> None:
    conn, proto = stub_conn(NODE)
    NODE._kind_handlers[FRAME_ECHO](conn, FRAME_ECHO, struct.pack(">Q", 2**64 - 1))
    assert conn.rtt is None and not proto.aborted
    NODE._kind_handlers[FRAME_ECHO](conn, FRAME_ECHO, struct.pack(">Q", time.monotonic_ns()))
    assert conn.rtt is not None and 0 <= conn.rtt < 5


@pytest.mark.parametrize("kind", [FRAME_PING, FRAME_ECHO])
def test_a_body_not_8_bytes_closes_the_connection(kind: int, caplog: pytest.LogCaptureFixture) -> None:
    conn, proto = stub_conn(NODE)
    NODE._kind_handlers[kind](conn, kind, b"\x00" * 9)
    assert proto.aborted and proto.sent == []
    assert "9-byte body" in caplog.text


@given(kind=st.sampled_from([FRAME_PING, FRAME_ECHO]), body=st.binary(max_size=32))
def test_any_heartbeat_body_is_handled_without_raising(kind: int, body: bytes) -> None:
    conn, proto = stub_conn(NODE)
    NODE._kind_handlers[kind](conn, kind, body)
    if len(body) != 8:
        assert proto.aborted
    elif kind == FRAME_PING:
        assert proto.sent == [encode_frame(FRAME_ECHO, body)]
    else:
        assert conn.rtt is None or conn.rtt >= 0


# -- config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("heartbeat_interval", 0, "heartbeat_interval must be a positive finite"),
        ("heartbeat_interval", math.inf, "heartbeat_interval must be a positive finite"),
        ("heartbeat_interval", True, "heartbeat_interval must be"),
        ("failure_timeout", 1.5, "failure_timeout must be a number of seconds of at least 2 x"),
        ("failure_timeout", "10", "failure_timeout must be"),
        ("heartbeats", 1, "heartbeats must be a bool"),
        ("reconnect_backoff_max", -1, "reconnect_backoff_max must be a non-negative finite"),
        ("reconnect_backoff_max", math.inf, "reconnect_backoff_max must be"),
    ],
)
def test_liveness_knobs_are_checked(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        TcpTransportConfig("127.0.0.1", 0, **{field: value})
    assert repr(value) in str(err.value)


def test_liveness_defaults() -> None:
    cfg = TcpTransportConfig("127.0.0.1", 0)
    assert (cfg.heartbeats, cfg.heartbeat_interval, cfg.failure_timeout, cfg.reconnect_backoff_max) == (
        True, 1.0, 10.0, 30.0,
    )
    assert TcpTransportConfig("127.0.0.1", 0, failure_timeout=math.inf).failure_timeout == math.inf


def test_remote_system_exports() -> None:
    import casty

    for name in ("NodeUp", "NodeDown", "NodeRestarted", "NodeInfo"):
        assert name in casty.__all__ and hasattr(casty, name)
    assert RemoteActorSystem.subscribe_nodes is not None


