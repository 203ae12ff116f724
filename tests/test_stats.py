"""Per-node statistics: the framing counters of both twins, RemoteActorSystem.stats() after
known traffic (exact counts), folding on reconnect, drops by reason, and the bounds."""

from __future__ import annotations

import asyncio
import socket
import types
from collections.abc import Callable

import pytest

from casty import NodeStats, PeerStats, RemoteActorSystem, SendFailure, TcpTransportConfig
from casty.transport.frame_codec import encode_frame
from casty.transport.handshake import encode_handshake
from casty.transport.stats import PeerTable
from casty.wire import FRAME_MESSAGE
from tests.remote_helpers import Collector, Echo, Ping, echo_behavior, registry
from tests.test_framing import FakeTransport, Owner, message

LOCAL = "127.0.0.1"


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait, a loop turn or a few ms at a time, for ``check()`` to hold (what loopback
    connections do on their own; no fixed sleep)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


def free_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


def key_of(system: RemoteActorSystem) -> tuple[str, int]:
    return (system.address.host or LOCAL, system.address.port or 0)


# -- the framing twins' counters ------------------------------------------------------


async def test_framing_counts_messages_and_bytes_sent(impl: types.SimpleNamespace) -> None:
    proto = impl.FrameProtocol(Owner())
    transport = FakeTransport()
    proto.connection_made(transport)
    hello = encode_handshake("10.0.0.1", 7001)
    assert proto.send_frame(hello)  # a handshake: bytes, not a message
    assert proto.send_message(b"abc")
    assert proto.send_message([b"de", b"f"])
    assert proto.send_frame(encode_frame(FRAME_MESSAGE, b"queued while connecting"))
    assert proto.send_control(encode_frame(0x05, b"ping"))
    assert proto.messages_sent == 3
    assert proto.frames_sent == 5
    assert proto.bytes_sent == len(hello) + (5 + 3) + (5 + 3) + (5 + 23) + (5 + 4)
    await asyncio.sleep(0)
    assert proto.bytes_sent == sum(map(len, transport.writes))
    proto.abort()
    assert not proto.send_message(b"late")  # refused: not counted as sent
    assert (proto.messages_sent, proto.dropped) == (3, 1)


def test_framing_counts_messages_received(impl: types.SimpleNamespace) -> None:
    owner = Owner(sink_on_handshake=True)
    proto = impl.FrameProtocol(owner)
    assert (proto.messages_received, proto.last_received) == (0, 0.0)
    hello = encode_handshake("10.0.0.1", 7001)
    chunk = hello + message(b"one") + message(b"two") + encode_frame(0x07, b"unknown")
    proto.data_received(chunk[:7])  # a frame spanning reads counts once, when whole
    proto.data_received(chunk[7:])
    assert proto.messages_received == 2
    assert proto.frames_received == 4
    assert proto.bytes_received == len(chunk)
    assert proto.last_received > 0.0
    assert [e[0] for e in owner.events] == ["handshake", "message", "message"]


# -- PeerTable: the bound --------------------------------------------------------------


def test_peer_table_lets_the_oldest_idle_record_go() -> None:
    table = PeerTable(3)
    busy = table.record(("h", 1))
    busy.live = 1  # an open connection: never let go
    for port in (2, 3, 4, 5):
        table.record(("h", port))
    assert sorted(k[1] for k in table.keys()) == [1, 4, 5]
    assert table.evicted == 2
    table.record(("h", 4))  # touched: now the newest
    table.charge(("h", 6), "queue_full", 2)
    assert sorted(k[1] for k in table.keys()) == [1, 4, 6]
    assert table.get(("h", 6)).drops == {"queue_full": 2}  # type: ignore[union-attr]


def test_peer_table_keeps_a_new_record_when_every_other_is_live() -> None:
    table = PeerTable(1)
    table.record(("h", 1)).live = 1
    new = table.record(("h", 2))
    assert table.get(("h", 2)) is new and len(table) == 2  # over by the live ones only


def test_peer_table_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive int, got 0"):
        PeerTable(0)
    with pytest.raises(ValueError, match="max_peer_stats must be a positive int, got -1"):
        TcpTransportConfig(LOCAL, 0, max_peer_stats=-1)


# -- RemoteActorSystem.stats() ------------------------------------------------------------


async def test_exact_counts_after_tells() -> None:
    n = 25
    async with RemoteActorSystem("a", registry=registry()) as a, RemoteActorSystem("b", registry=registry()) as b:
        inbox = Collector()
        b.spawn(inbox.behavior(), "inbox")
        ref = a.ref(f"casty://b@{LOCAL}:{b.address.port}/user/inbox")
        for i in range(n):
            ref.tell(Ping(i, "x" * i))
        await inbox.wait(n)
        sent = a.stats().peers[key_of(b)]
        await until(lambda: b.stats().peers[key_of(a)].bytes_received == sent.bytes_sent)
        got = b.stats().peers[key_of(a)]
        assert isinstance(sent, PeerStats)
        assert (sent.messages_sent, sent.messages_received) == (n, 0)
        assert (got.messages_sent, got.messages_received) == (0, n)
        assert got.bytes_sent == sent.bytes_received > 0  # b's handshake answer
        assert sent.bytes_sent > n * 5 + sum(range(n))
        assert (sent.drops, sent.dropped, sent.reconnects, sent.connections) == ({}, 0, 0, 1)
        assert sent.queued_bytes == 0
        assert sent.rtt is None  # no heartbeats measured here
        assert got.seconds_since_received is not None and got.seconds_since_received >= 0.0
        whole = a.stats()
        assert isinstance(whole, NodeStats)
        assert (whole.messages_sent, whole.drops, whole.local_drops, whole.inbound_dropped) == (n, {}, {}, 0)


async def test_an_ask_counts_both_connections_of_a_peer() -> None:
    async with RemoteActorSystem("a", registry=registry()) as a, RemoteActorSystem("b", registry=registry()) as b:
        b.spawn(echo_behavior(), "echo")
        ref = a.ref(f"casty://b@{LOCAL}:{b.address.port}/user/echo")
        for i in range(3):
            assert await a.ask(ref, lambda r, i=i: Echo(f"hi {i}", r), timeout=5) == f"hi {i}"
        mine = a.stats().peers[key_of(b)]
        theirs = b.stats().peers[key_of(a)]
        # The request goes over a's dial, the reply over b's: one record per peer, both counted.
        assert (mine.messages_sent, mine.messages_received, mine.connections) == (3, 3, 2)
        assert (theirs.messages_sent, theirs.messages_received, theirs.connections) == (3, 3, 2)
        assert (mine.reconnects, theirs.reconnects) == (0, 0)


async def test_counters_of_a_closed_connection_are_folded_in() -> None:
    async with RemoteActorSystem("a", registry=registry()) as a, RemoteActorSystem("b", registry=registry()) as b:
        inbox = Collector()
        b.spawn(inbox.behavior(), "inbox")
        ref = a.ref(f"casty://b@{LOCAL}:{b.address.port}/user/inbox")
        for i in range(10):
            ref.tell(Ping(i))
        await inbox.wait(10)
        before = a.stats().peers[key_of(b)].bytes_sent
        a.node.peer_down(*key_of(b), "test: reconnect")
        await until(lambda: a.stats().peers[key_of(b)].connections == 0
                    and b.stats().peers[key_of(a)].connections == 0)
        closed = a.stats().peers[key_of(b)]
        assert (closed.messages_sent, closed.bytes_sent) == (10, before)
        for i in range(10, 17):
            ref.tell(Ping(i))
        await inbox.wait(17)
        mine = a.stats().peers[key_of(b)]
        assert (mine.messages_sent, mine.reconnects, mine.connections) == (17, 1, 1)
        assert mine.bytes_sent > before
        await until(lambda: b.stats().peers[key_of(a)].connections == 1)
        theirs = b.stats().peers[key_of(a)]
        assert (theirs.messages_received, theirs.reconnects) == (17, 1)
        assert [p.seq for p in inbox.items] == list(range(17))


async def test_drops_are_charged_to_their_peer_by_reason() -> None:
    failures: list[SendFailure] = []
    dead = (LOCAL, free_port())
    async with RemoteActorSystem("a", registry=registry(), on_send_failure=failures.append,
                                 blacklist_duration=60.0) as a:
        ref = a.ref(f"casty://b@{dead[0]}:{dead[1]}/user/inbox")
        ref.tell(Ping(1))
        ref.tell(Ping(2))  # queued behind the dial: lost with it
        await until(lambda: bool(failures))
        ref.tell(Ping(3))  # refused while blacklisted
        peer = a.stats().peers[dead]
        assert dict(peer.drops) == {"connect_failed": 2, "blacklisted": 1}
        assert (peer.dropped, peer.messages_sent, peer.connections, peer.queued_bytes) == (3, 0, 0, 0)
        assert peer.seconds_since_received is None
        assert a.stats().drops == {"connect_failed": 2, "blacklisted": 1}


async def test_peer_records_are_bounded() -> None:
    failures: list[SendFailure] = []
    dead = [(LOCAL, free_port()) for _ in range(4)]
    async with RemoteActorSystem("a", registry=registry(), on_send_failure=failures.append,
                                 max_peer_stats=2) as a:
        for host, port in dead:
            a.ref(f"casty://b@{host}:{port}/user/inbox").tell(Ping(0))
        await until(lambda: len(failures) == 4)
        stats = a.stats()
        assert len(stats.peers) == 2 and stats.peers_evicted == 2
        assert set(stats.peers) <= set(dead)
        assert stats.drops == {"connect_failed": 4}  # the node's totals lose nothing


async def test_queued_bytes_while_connecting() -> None:
    async with RemoteActorSystem("a", registry=registry()) as a, RemoteActorSystem("b", registry=registry()) as b:
        inbox = Collector()
        b.spawn(inbox.behavior(), "inbox")
        ref = a.ref(f"casty://b@{LOCAL}:{b.address.port}/user/inbox")
        ref.tell(Ping(1, "y" * 100))  # the dial has not even started: the frame waits in the queue
        assert a.stats().peers[key_of(b)].queued_bytes > 100
        await inbox.wait(1)
        assert a.stats().peers[key_of(b)].queued_bytes == 0


async def test_local_drops_and_loop_lag() -> None:
    async with RemoteActorSystem("a", registry=registry()) as a:
        a.local.unregister("/user/gone")
        a.local.deliver(a.address_of("/user/gone"), Ping(0))
        stats = a.stats()
        assert stats.local_drops == {"dead": 1}
        assert stats.loop_lag == a.node.loop_lag
        assert a.node._liveness is not None
        a.node._liveness.loop_lag = 0.25  # what a late heartbeat tick records
        assert a.stats().loop_lag == 0.25


async def test_the_round_trip_time_is_reported_and_kept_after_the_connection_closes() -> None:
    hb = {"heartbeat_interval": 0.02, "failure_timeout": 5.0}
    async with RemoteActorSystem("a", registry=registry(), **hb) as a, \
            RemoteActorSystem("b", registry=registry(), **hb) as b:
        key = ("127.0.0.1", b.node.port)
        a.node.send_frame(*key, 0x30, b"")  # dials; heartbeats then measure the round trip
        async with asyncio.timeout(10):
            while (peer := a.stats().peers.get(key)) is None or peer.rtt is None:
                await asyncio.sleep(0.01)
        assert 0 <= peer.rtt < 5
        a.node.peer_down(*key)
        async with asyncio.timeout(10):
            while a.stats().peers[key].connections:
                await asyncio.sleep(0.01)
        assert a.stats().peers[key].rtt is not None


def test_stats_types_are_frozen() -> None:
    stats = PeerStats("h", 1, 0, 0, 0, 0, {}, 0, 0, 0, None, None)
    with pytest.raises(AttributeError):
        stats.messages_sent = 1  # type: ignore[misc]
    assert hash(stats) == hash(PeerStats("h", 1, 0, 0, 0, 0, {"x": 1}, 0, 0, 0, None, None))
