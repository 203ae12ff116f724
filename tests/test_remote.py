"""Two nodes talking over real loopback TCP, through RemoteActorSystem and the TCP node."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import struct
from typing import Any

import pytest

from casty import (
    FRAME_HANDSHAKE,
    FRAME_MESSAGE,
    ActorAddress,
    MessageEnvelope,
    MsgpackSerializer,
    RemoteActorSystem,
)
from casty.wire import FRAME_COMPACT
from tests.remote_helpers import Chunk, Collector, Count, Echo, Failures, KindSpy, Ping, echo_behavior, node, registry


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """For state with no event to await (a peer's socket closing): bounded polling."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    data = await reader.readexactly(length)
    return data[0], data[1:]


async def test_tell_and_ask_across_nodes() -> None:
    async with node("a") as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        b.spawn(echo_behavior(), "echo")
        sink = a.ref(f"casty://b@127.0.0.1:{b.address.port}/user/sink")
        for i in range(100):
            sink.tell(Ping(i, "x"))
        assert [p.seq for p in await got.wait(100)] == list(range(100))
        echo = a.ref(b.address.with_path("/user/echo"))
        assert await a.ask(echo, lambda r: Echo("hi", r), timeout=5) == "hi"
        # the temporary reply path is gone once the answer is in
        assert not any(p.startswith("/temp/") for p in _registered(a))


async def test_large_and_small_messages_interleaved_arrive_whole_and_in_order() -> None:
    # Envelopes of 64 KiB and more leave as writes of their own, between the joined
    # runs of small frames; over a real socket the stream must still read back intact.
    async with node("a") as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        sink = a.ref(b.address.with_path("/user/sink"))
        sizes = [10, 70_000, 3, 1 << 20, 65_536, 0, 200_000, 65_535, 7] * 3
        for i, size in enumerate(sizes):
            sink.tell(Ping(i, chr(65 + i % 26) * size))
        received = await got.wait(len(sizes))
        assert [(p.seq, len(p.text)) for p in received] == list(enumerate(sizes))
        assert all(p.text == chr(65 + p.seq % 26) * len(p.text) for p in received)
        assert sum(a.stats().drops.values()) == 0


async def test_large_bytes_values_arrive_whole_and_in_order() -> None:
    # The Cython writer sends bytes values of 64 KiB or more as pieces of their own,
    # without copying them; the first message goes out while the connection is made.
    async with node("a") as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        sink = a.ref(b.address.with_path("/user/sink"))
        sizes = [1 << 20, 10, 65_536, 65_535, 0, 200_000, 3] * 2
        sent: list[Any] = []
        for i, size in enumerate(sizes):
            data = bytes([i]) * size
            msg = data if i % 3 == 2 else Chunk(i, data, data[: size // 2])
            sent.append(msg)
            sink.tell(msg)
        assert await got.wait(len(sent)) == sent
        assert sum(a.stats().drops.values()) == 0


def _registered(system: RemoteActorSystem) -> list[str]:
    return [p for p in ("/temp/ask-0", "/temp/ask-1", "/temp/ask-2") if system.local.is_registered(p)]


async def test_many_asks_leave_no_trace_in_the_route_caches() -> None:
    # Every ask replies to a fresh /temp/ask-<n> path; none of them may stay cached on
    # either node (an ask-heavy node would otherwise hold up to tens of thousands).
    async with node("a") as a, node("b") as b:
        b.spawn(echo_behavior(), "echo")
        echo = a.ref(b.address.with_path("/user/echo"))
        for i in range(30):
            assert await a.ask(echo, lambda r, i=i: Echo(f"hi {i}", r), timeout=5) == f"hi {i}"
        assert a._inbound.cached_targets == 0  # the replies' targets
        assert b._inbound.cached_targets == 1  # /user/echo
        assert b.remote._writer.cached_headers == 0  # headers of the replies
        assert not any(addr.path.startswith("/temp/") for addr in b.remote._targets)


async def test_ask_across_nodes_times_out_and_cleans_up() -> None:
    async with node("a") as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "silent")  # never replies to Ping-less messages
        ref = a.ref(b.address.with_path("/user/silent"))
        with pytest.raises(TimeoutError):
            await a.ask(ref, lambda r: Echo("nobody answers", r), timeout=0.2)
        await got.wait(1)
        assert not _registered(a)


async def test_ref_in_a_message_is_usable_by_the_receiver() -> None:
    async with node("a") as a, node("b") as b:
        b.spawn(echo_behavior(), "echo")
        replies = Collector()
        mine = a.spawn(replies.behavior(), "replies")
        a.ref(b.address.with_path("/user/echo")).tell(Echo("back", mine))
        assert await replies.wait(1) == ["back"]


async def test_local_ref_through_remote_system_stays_local() -> None:
    async with node("a") as a:
        got = Collector()
        a.spawn(got.behavior(), "sink")
        a.ref(a.address.with_path("/user/sink")).tell(Ping(1))
        a.ref("casty://a/user/sink").tell(Ping(2))
        assert [p.seq for p in await got.wait(2)] == [1, 2]
        assert a.node.connected_peers == []


async def test_raw_client_handshake_and_message() -> None:
    async with node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        reader, writer = await asyncio.open_connection("127.0.0.1", b.address.port)
        writer.write(frame(FRAME_HANDSHAKE, json.dumps({"host": "10.9.9.9", "port": 4242}).encode()))
        kind, body = await read_frame(reader)
        assert kind == FRAME_HANDSHAKE
        assert json.loads(body) == {"host": "127.0.0.1", "port": b.address.port}
        payload = MsgpackSerializer(registry()).serialize(Ping(7, "raw"))
        env = MessageEnvelope(b.address.with_path("/user/sink").to_uri(), "casty://x@10.9.9.9:4242/",
                              payload, "tests.remote_helpers.Ping")
        writer.write(frame(0x7F, b"future frame kind, ignored") + frame(FRAME_MESSAGE, env.to_bytes()))
        assert await got.wait(1) == [Ping(7, "raw")]
        writer.close()


async def connected_sink(a: RemoteActorSystem, b: RemoteActorSystem) -> tuple[Any, Collector]:
    """A /user/sink on b, a's ref to it, and a's connection to b made (Ping(0) arrived)."""
    got = Collector()
    b.spawn(got.behavior(), "sink")
    sink = a.ref(b.address.with_path("/user/sink"))
    sink.tell(Ping(0))
    await got.wait(1)
    return sink, got


@pytest.mark.parametrize("compact", [False, True], ids=["json-header", "compact-header"])
async def test_a_large_bytes_value_reaches_the_connection_uncopied(compact: bool) -> None:
    # The Cython writer hands the connection the user's own bytes object as one piece of
    # the envelope; the pure twin hands it one joined envelope.
    from casty import _impl

    async with node("a", compact_headers=compact) as a, node("b") as b:
        sink, got = await connected_sink(a, b)  # later sends go straight to the connection
        data = bytes(range(256)) * 1024
        with KindSpy(a.node, b.node.advertised) as spy:
            sink.tell(Chunk(1, b"small"))  # the writer learns a class on its first message
            sink.tell(Chunk(2, data))
        assert await got.wait(3) == [Ping(0), Chunk(1, b"small"), Chunk(2, data)]
        envelope, kind = spy.sent[-1]
        assert kind == (FRAME_COMPACT if compact else FRAME_MESSAGE)
        if _impl.EXTENSIONS_ACTIVE:
            assert isinstance(envelope, list) and any(piece is data for piece in envelope)
        else:
            assert isinstance(envelope, bytes) and data in envelope


async def test_garbage_handshake_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    async with node("a") as a, node("b") as b:
        sink, got = await connected_sink(a, b)
        reader, writer = await asyncio.open_connection("127.0.0.1", b.address.port)
        with caplog.at_level(logging.WARNING, logger="casty"):
            writer.write(frame(FRAME_HANDSHAKE, b"{not json"))
            assert await reader.read() == b""  # closed by b
        assert "bad handshake" in caplog.text
        sink.tell(Ping(1))
        assert [p.seq for p in await got.wait(2)] == [0, 1]
        writer.close()


async def test_oversized_frame_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    async with node("a") as a, node("b", max_frame_size=1024) as b:
        sink, got = await connected_sink(a, b)
        reader, writer = await asyncio.open_connection("127.0.0.1", b.address.port)
        writer.write(frame(FRAME_HANDSHAKE, json.dumps({"host": "127.0.0.9", "port": 9}).encode()))
        await read_frame(reader)
        with caplog.at_level(logging.WARNING, logger="casty"):
            writer.write(struct.pack(">IB", 0xFFFFFFF0, FRAME_MESSAGE))
            assert await reader.read() == b""
        sink.tell(Ping(1))
        assert [p.seq for p in await got.wait(2)] == [0, 1]
        writer.close()


async def test_message_before_handshake_is_refused() -> None:
    async with node("b") as b:
        reader, writer = await asyncio.open_connection("127.0.0.1", b.address.port)
        writer.write(frame(FRAME_MESSAGE, b"\x00\x00\x00\x02{}"))
        assert await reader.read() == b""
        writer.close()


async def test_no_handshake_is_closed_after_handshake_timeout() -> None:
    async with node("b", handshake_timeout=0.2) as b:
        reader, writer = await asyncio.open_connection("127.0.0.1", b.address.port)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_simultaneous_connect_each_side_sends_over_its_own() -> None:
    async with node("a") as a, node("b") as b:
        ga, gb = Collector(), Collector()
        a.spawn(ga.behavior(), "sink")
        b.spawn(gb.behavior(), "sink")
        to_b = a.ref(b.address.with_path("/user/sink"))
        to_a = b.ref(a.address.with_path("/user/sink"))
        for i in range(50):  # both sides start connecting in the same loop iteration
            to_b.tell(Ping(i))
            to_a.tell(Ping(i))
        assert [p.seq for p in await gb.wait(50)] == list(range(50))
        assert [p.seq for p in await ga.wait(50)] == list(range(50))
        assert a.node.connected_peers == [b.node.advertised]
        assert b.node.connected_peers == [a.node.advertised]
        # Without a cookie an inbound claim is unproven: each sends over what it dialed.
        assert len(a.node._protocols) == 2 and len(b.node._protocols) == 2


async def test_connect_failure_blacklists_and_clear_lifts_it() -> None:
    failures = Failures()
    probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
    dead_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with node("a", on_send_failure=failures, blacklist_duration=60) as a:
        ref = a.ref(f"casty://b@127.0.0.1:{dead_port}/user/x")
        ref.tell(Ping(1))
        await failures.wait(1)
        assert failures[0].reason == "connect_failed" and failures[0].count == 1
        ref.tell(Ping(2))
        assert failures[-1].reason == "blacklisted"
        a.remote.clear_blacklist("127.0.0.1", dead_port)
        ref.tell(Ping(3))
        await failures.wait(3)
        assert failures[2].reason == "connect_failed"


async def test_reconnect_after_peer_restart() -> None:
    async with node("a") as a:
        b = node("b")
        await b.start()
        port = b.address.port
        got = Collector()
        b.spawn(got.behavior(), "sink")
        sink = a.ref(b.address.with_path("/user/sink"))
        sink.tell(Ping(1))
        await got.wait(1)
        await b.shutdown()
        await wait_until(lambda: not a.node.connected_peers)
        b2 = RemoteActorSystem("b", "127.0.0.1", port, registry=registry())
        async with b2:
            got2 = Collector()
            b2.spawn(got2.behavior(), "sink")
            sink.tell(Ping(2))
            sink.tell(Ping(3))
            assert [p.seq for p in await got2.wait(2)] == [2, 3]


async def test_address_map_rewrites_outbound_connects() -> None:
    async with node("b") as b:
        real = b.address.port
        mapping = {("b.example.invalid", 1): ("127.0.0.1", real)}
        async with node("a", address_map=lambda h, p: mapping.get((h, p), (h, p))) as a:
            got = Collector()
            b.spawn(got.behavior(), "sink")
            a.ref("casty://b@b.example.invalid:1/user/sink").tell(Ping(5))
            assert await got.wait(1) == [Ping(5)]


async def test_client_only_node_gets_replies() -> None:
    async with node("b") as b, node("a", client_only=True) as a:
        b.spawn(echo_behavior(), "echo")
        echo = a.ref(b.address.with_path("/user/echo"))
        assert await a.ask(echo, lambda r: Echo("via the same connection", r), timeout=5) == (
            "via the same connection"
        )
        # nobody can dial a port-0 claim: b answers over a's connection, the only one
        assert len(b.node._protocols) == 1


async def test_unserializable_message_is_reported() -> None:
    failures = Failures()

    class NotRegistered:
        pass

    async with node("a", on_send_failure=failures) as a, node("b") as b:
        a.ref(b.address.with_path("/user/x")).tell(NotRegistered())
        assert failures and failures[0].reason == "serialization"
        assert "NotRegistered" in failures[0].detail


async def test_count_is_answered_over_the_wire() -> None:
    async with node("a") as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        sink = a.ref(b.address.with_path("/user/sink"))
        for i in range(10):
            sink.tell(Ping(i))
        assert await a.ask(sink, lambda r: Count(r), timeout=5) == 10


# -- TLS -------------------------------------------------------------------------------

@pytest.fixture
def tls() -> dict[str, ssl.SSLContext]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("client.casty.test", "127.0.0.1", "localhost")  # names the hosts nodes claim

    def server_ctx(require_client: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_cert.configure_cert(ctx)
        if require_client:
            ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_ctx(with_cert: bool) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca.configure_trust(ctx)
        if with_cert:
            client_cert.configure_cert(ctx)
        return ctx

    return {
        "server": server_ctx(False),
        "server_mutual": server_ctx(True),
        "client": client_ctx(False),
        "client_cert": client_ctx(True),
    }


async def test_tls_nodes_talk(tls: dict[str, ssl.SSLContext]) -> None:
    async with node("b", server_ssl=tls["server"], client_ssl=tls["client"]) as b, \
            node("a", server_ssl=tls["server"], client_ssl=tls["client"]) as a:
        b.spawn(echo_behavior(), "echo")
        echo = a.ref(b.address.with_path("/user/echo"))
        assert await a.ask(echo, lambda r: Echo("secret", r), timeout=5) == "secret"


async def test_plain_client_is_refused_by_tls_server(tls: dict[str, ssl.SSLContext]) -> None:
    async with node("b", server_ssl=tls["server"]) as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        reader, writer = await asyncio.open_connection("127.0.0.1", b.address.port)
        writer.write(frame(FRAME_HANDSHAKE, json.dumps({"host": "127.0.0.1", "port": 1}).encode()))
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert got.items == []


async def test_mutual_tls_refuses_client_without_certificate(tls: dict[str, ssl.SSLContext]) -> None:
    failures = Failures()
    async with node("b", server_ssl=tls["server_mutual"]) as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        async with node("a", client_ssl=tls["client"], on_send_failure=failures) as a:
            a.ref(b.address.with_path("/user/sink")).tell(Ping(1))
            await failures.wait(1)
        assert got.items == []
        async with node("c", client_ssl=tls["client_cert"]) as c:
            c.ref(b.address.with_path("/user/sink")).tell(Ping(2))
            assert await got.wait(1) == [Ping(2)]


def test_addresses_are_advertised() -> None:
    async def main() -> tuple[ActorAddress, ActorAddress]:
        async with node("a", advertised_host="203.0.113.7", advertised_port=4000) as a:
            return a.address, a.address_of("/user/x")

    import casty

    root, actor = casty.run(main())
    assert (root.host, root.port) == ("203.0.113.7", 4000)
    assert actor.to_uri() == "casty://a@203.0.113.7:4000/user/x"


async def test_tcp_transport_actor_handles_every_message() -> None:
    from casty import (
        ClearNodeBlacklist,
        DeliverToNode,
        GetPort,
        LogSerializationFailure,
        PeerDown,
        SendFrameToNode,
        SendToNode,
    )

    failures = Failures()
    async with node("a", on_send_failure=failures) as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        tcp = a._tcp
        assert tcp is not None and tcp.address.path == "/system/tcp"
        bhost, bport = b.node.advertised
        target = b.address.with_path("/user/sink").to_uri()

        assert await a.ask(tcp, lambda r: GetPort(r), timeout=5) == a.node.port
        tcp.tell(DeliverToNode(bhost, bport, Ping(1), target, a.address.to_uri()))
        env = MessageEnvelope(target, a.address.to_uri(),
                              MsgpackSerializer(registry()).serialize(Ping(2)), "x.Ping")
        tcp.tell(SendFrameToNode(bhost, bport, 0x42, b"ignored by b"))
        tcp.tell(SendToNode(bhost, bport, env.to_bytes()))
        assert [p.seq for p in await got.wait(2)] == [1, 2]

        tcp.tell(LogSerializationFailure(bhost, bport, target, "x.Bad", "no encoder"))
        assert (await failures.wait(1))[0].reason == "serialization"

        tcp.tell(PeerDown(bhost, bport, "told so"))
        await wait_until(lambda: not a.node.connected_peers)

        a.node._blacklist[(bhost, bport)] = float("inf")
        tcp.tell(ClearNodeBlacklist(bhost, bport))
        tcp.tell(DeliverToNode(bhost, bport, Ping(3), target, a.address.to_uri()))
        assert [p.seq for p in await got.wait(3)] == [1, 2, 3]


async def test_a_silent_peer_does_not_delay_sends_to_another() -> None:
    accepted = asyncio.Event()

    class Silent(asyncio.Protocol):  # accepts, reads, never answers the handshake
        def connection_made(self, transport: Any) -> None:
            accepted.set()

    loop = asyncio.get_running_loop()
    silent = await loop.create_server(Silent, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    failures = Failures()
    try:
        async with node("a", on_send_failure=failures, handshake_timeout=30) as a, node("b") as b:
            got = Collector()
            b.spawn(got.behavior(), "sink")
            stuck = a.ref(f"casty://s@127.0.0.1:{silent_port}/user/x")
            sink = a.ref(b.address.with_path("/user/sink"))
            for i in range(20):
                stuck.tell(Ping(i))
                sink.tell(Ping(i))
            await accepted.wait()
            assert [p.seq for p in await got.wait(20)] == list(range(20))
            assert list(failures) == []  # the silent peer's frames wait, bounded, in order
    finally:
        silent.close()
        await silent.wait_closed()
    # shutting down reports what never left for the silent peer
    assert [(f.reason, f.count) for f in failures] == [("closed", 20)]


async def test_the_reply_ref_of_an_ask_is_what_make_ref_and_address_of_give() -> None:
    handed: list[Any] = []

    def make(reply_to: Any) -> Echo:
        handed.append(reply_to)
        return Echo("hi", reply_to)

    # b answers by dialing what a advertises: a name that resolves here
    async with node("a", advertised_host="localhost") as a, node("b") as b:
        b.spawn(echo_behavior(), "echo")
        assert await a.ask(a.ref(b.address.with_path("/user/echo")), make, timeout=5) == "hi"
        (reply_to,) = handed
        expected = a.make_ref(a.address_of(reply_to.address.path))
        assert type(reply_to) is type(expected) and reply_to == expected
        path = reply_to.address.path
        assert re.fullmatch(r"/temp/ask-0-[0-9a-f]{16}", path), path
        assert reply_to.id == f"casty://a@localhost:{a.address.port}{path}"
        # the same address the checked constructor builds
        assert reply_to.address == ActorAddress("a", path, "localhost", a.address.port)


async def test_address_of_names_the_port_the_node_listens_on() -> None:
    async with node("a") as a:
        port = a.address.port
        assert port != 0
        assert a.address_of("/user/x") == ActorAddress("a", "/user/x", "127.0.0.1", port)
        assert a.address_of("/user/y").port == port  # the cached root address
        with pytest.raises(ValueError, match="actor path must start with '/'"):
            a.address_of("user/x")


async def test_ref_takes_a_bare_path_of_this_node() -> None:
    async with node("a") as a:
        a.spawn(echo_behavior(), "echo")
        ref = a.ref("/user/echo")
        assert ref.address == a.address_of("/user/echo")
        assert await a.ask(ref, lambda r: Echo("by path", r), timeout=5) == "by path"
