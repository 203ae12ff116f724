"""Untrusted peers that speak the protocol correctly: who may answer an ask, who gets whose traffic.

A raw socket plays the attacker against real RemoteActorSystem nodes on loopback:
it sprays replies at reply paths, answers an ask whose path it learned, claims another
node's address in its handshake, or tries the cookie handshake without the cookie.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any

import pytest

from casty import FRAME_HANDSHAKE, FRAME_MESSAGE, MessageEnvelope, MsgpackSerializer, RemoteActorSystem
from casty.behavior import Behavior, Behaviors
from casty.transport.handshake import Handshake, encode_hello, handshake_mac, new_nonce, parse_handshake
from casty.transport.node import MAX_BAD_FRAMES
from tests.remote_helpers import Collector, Echo, Failures, Ping, echo_behavior, node, registry
from tests.test_hostile_peers import closed_by_peer
from tests.test_remote import frame, read_frame, wait_until

FAKE = "127.0.0.9"


def reply_frame(target: str, value: Any) -> bytes:
    payload = MsgpackSerializer(registry()).serialize(value)
    return frame(FRAME_MESSAGE, MessageEnvelope(target, f"casty://x@{FAKE}:1/", payload, "str").to_bytes())


async def raw_peer(to: RemoteActorSystem, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``to`` whose handshake claims host:port (v1, no cookie)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", to.address.port)
    writer.write(frame(FRAME_HANDSHAKE, json.dumps({"host": host, "port": port}).encode()))
    assert (await read_frame(reader))[0] == FRAME_HANDSHAKE
    return reader, writer


async def nothing_more(reader: asyncio.StreamReader, within: float = 0.3) -> bool:
    """True when nothing arrives on ``reader`` within ``within`` seconds (an absence has no event)."""
    try:
        data = await asyncio.wait_for(reader.read(1), within)
    except TimeoutError:
        return True
    return data == b""


# -- asks ----------------------------------------------------------------------------------------


async def test_replies_sprayed_at_guessable_reply_paths_answer_no_ask() -> None:
    async with node("a") as a, node("b") as b:
        b.spawn(echo_behavior(), "echo")
        echo = a.ref(b.address.with_path("/user/echo"))
        assert await a.ask(echo, lambda r: Echo("warm", r), timeout=5) == "warm"
        reader, writer = await raw_peer(a, FAKE, 1)
        head = a.address.to_uri().rstrip("/")
        spray = b"".join(
            reply_frame(f"{head}/temp/ask-{i}", "forged") + reply_frame(f"{head}/temp/ask-{i}-{i:016x}", "forged")
            for i in range(1000)
        )
        writer.write(spray)
        answers = [await a.ask(echo, lambda r, i=i: Echo(f"true {i}", r), timeout=5) for i in range(20)]
        assert answers == [f"true {i}" for i in range(20)]
        # nothing buffered for those paths; and a connection sending only such frames is cut off
        await wait_until(lambda: a.stats().inbound_dropped >= MAX_BAD_FRAMES)
        assert a.local.drops.get("overflow", 0) == 0 and a.local.drops.get("too_many_paths", 0) == 0
        await closed_by_peer(reader)
        writer.close()


async def test_a_reply_is_taken_only_from_the_node_the_ask_went_to(caplog: pytest.LogCaptureFixture) -> None:
    leaked: asyncio.Queue[Any] = asyncio.Queue()
    release = asyncio.Event()

    async def hold(ctx: Any, msg: Echo) -> Behavior[Any]:
        leaked.put_nowait(msg.reply_to)  # the reply path reaches a third party
        await release.wait()
        msg.reply_to.tell("from b")
        return Behaviors.same()

    async with node("a") as a, node("b") as b:
        b.spawn(Behaviors.receive(hold), "hold")
        hold_ref = a.ref(b.address.with_path("/user/hold"))
        asking = asyncio.ensure_future(a.ask(hold_ref, lambda r: Echo("x", r), timeout=5))
        reply_to = await leaked.get()
        _reader, writer = await raw_peer(a, FAKE, 1)
        writer.write(reply_frame(reply_to.id, "forged"))
        await wait_until(lambda: a.stats().inbound_dropped == 1)
        assert not asking.done()
        assert f"went to 127.0.0.1:{b.address.port}, but a reply came from {FAKE}:1" in caplog.text
        release.set()
        assert await asking == "from b"
        writer.close()


async def test_a_peer_cannot_answer_an_ask_of_a_local_actor() -> None:
    leaked: asyncio.Queue[Any] = asyncio.Queue()
    release = asyncio.Event()

    async def hold(ctx: Any, msg: Echo) -> Behavior[Any]:
        leaked.put_nowait(msg.reply_to)
        await release.wait()
        msg.reply_to.tell("local")
        return Behaviors.same()

    async with node("a") as a:
        ref = a.spawn(Behaviors.receive(hold), "hold")
        asking = asyncio.ensure_future(a.ask(ref, lambda r: Echo("x", r), timeout=5))
        reply_to = await leaked.get()
        _reader, writer = await raw_peer(a, FAKE, 1)
        writer.write(reply_frame(a.address.with_path(reply_to.address.path).to_uri(), "forged"))
        await wait_until(lambda: a.stats().inbound_dropped == 1)
        release.set()
        assert await asking == "local"
        writer.close()


# -- identity -------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["claimant", "real"], ids=["claimant-first", "real-first"])
async def test_a_handshake_claiming_a_node_takes_none_of_its_traffic(first: str) -> None:
    async with node("a") as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        b.spawn(echo_behavior(), "echo")
        sink = a.ref(b.address.with_path("/user/sink"))
        if first == "real":
            sink.tell(Ping(-1))
            await got.wait(1)
        reader, writer = await raw_peer(a, "127.0.0.1", b.address.port)  # "I am b"
        for i in range(50):
            sink.tell(Ping(i))
        echo = a.ref(b.address.with_path("/user/echo"))
        assert await a.ask(echo, lambda r: Echo("to b", r), timeout=5) == "to b"
        before = 1 if first == "real" else 0
        assert [p.seq for p in await got.wait(before + 50)][before:] == list(range(50))
        assert await nothing_more(reader)  # the claimant got none of it
        writer.close()


# -- the cookie -----------------------------------------------------------------------------------


async def test_nodes_sharing_a_cookie_use_one_proven_connection() -> None:
    async with node("a", cookie="s3cret-cookie") as a, node("b", cookie="s3cret-cookie") as b:
        b.spawn(echo_behavior(), "echo")
        echo = a.ref(b.address.with_path("/user/echo"))
        assert await a.ask(echo, lambda r: Echo("proven", r), timeout=5) == "proven"
        # b answered over the connection a dialed: its claim was proven
        assert len(a.node._protocols) == 1 and len(b.node._protocols) == 1
        [conn] = [p.context for p in b.node._protocols]
        assert conn.verified and conn.peer_key == a.node.advertised


async def test_a_node_without_the_cookie_is_refused() -> None:
    failures = Failures()
    async with node("b", cookie="s3cret-cookie") as b, node("a", cookie="wrong-cookie", on_send_failure=failures) as a:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        a.ref(b.address.with_path("/user/sink")).tell(Ping(1))
        await failures.wait(1)
        assert got.items == []
        await wait_until(lambda: not b.node._protocols)


async def test_a_v1_peer_is_refused_by_a_cookie_node(caplog: pytest.LogCaptureFixture) -> None:
    async with node("b", cookie="s3cret-cookie") as b:
        reader, writer = await asyncio.open_connection("127.0.0.1", b.address.port)
        writer.write(frame(FRAME_HANDSHAKE, json.dumps({"host": FAKE, "port": 1}).encode()))
        assert await reader.read() == b""  # closed without an answer
        assert "requires the cookie handshake" in caplog.text
        writer.close()


async def test_a_connector_that_cannot_prove_the_cookie_gets_no_message_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with node("b", cookie="s3cret-cookie") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        reader, writer = await asyncio.open_connection("127.0.0.1", b.address.port)
        mine = Handshake(FAKE, 1, 42, 2, frozenset(), new_nonce())
        writer.write(encode_hello(mine))
        kind, body = await read_frame(reader)
        answer = parse_handshake(body)
        assert kind == FRAME_HANDSHAKE and answer.mac is not None and answer.nonce is not None
        # the acceptor proved the cookie to us: a guessed proof does not work the other way
        bogus = handshake_mac(b"not-the-cookie", "connect", answer.nonce, mine.nonce or "", mine)
        payload = MsgpackSerializer(registry()).serialize(Ping(1))
        env = MessageEnvelope(b.address.with_path("/user/sink").to_uri(), "casty://x@h:1/", payload, "p")
        proof = encode_hello(Handshake(FAKE, 1, 42, 2, frozenset(), None, bogus))
        writer.write(proof + frame(FRAME_MESSAGE, env.to_bytes()))
        assert await reader.read() == b""
        assert got.items == [] and "could not prove the cluster cookie" in caplog.text
        writer.close()


def test_the_cookie_is_checked_and_never_shown() -> None:
    from casty import TcpTransportConfig

    with pytest.raises(ValueError, match="cookie must be None or a str/bytes secret of at least 8"):
        TcpTransportConfig("127.0.0.1", 0, cookie="short")
    assert "hunter2-hunter2" not in repr(TcpTransportConfig("127.0.0.1", 0, cookie="hunter2-hunter2"))


# -- TLS ----------------------------------------------------------------------------------------


async def test_a_tls_client_certificate_must_name_the_host_it_claims(caplog: pytest.LogCaptureFixture) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    def client(*names: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ca.configure_trust(ctx)
        ca.issue_cert(*names).configure_cert(ctx)
        return ctx

    async with node("b", server_ssl=server_ctx) as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        failures = Failures()
        async with node("a", client_ssl=client("other.casty.test"), on_send_failure=failures) as a:
            a.ref(b.address.with_path("/user/sink")).tell(Ping(1))  # a claims 127.0.0.1
            await failures.wait(1)
        assert got.items == [] and "does not name the host it claims" in caplog.text
        async with node("c", client_ssl=client("127.0.0.1")) as c:
            c.ref(b.address.with_path("/user/sink")).tell(Ping(2))
            assert await got.wait(1) == [Ping(2)]
            [conn] = [p.context for p in b.node._protocols]
            assert conn.verified


# -- system actors ---------------------------------------------------------------------------


async def test_peers_cannot_message_system_actors(caplog: pytest.LogCaptureFixture) -> None:
    async with node("a") as a:
        _reader, writer = await raw_peer(a, FAKE, 1)
        caplog.clear()
        writer.write(b"".join(reply_frame(a.address.with_path("/system/tcp").to_uri(), "x" * 1000) for _ in range(8)))
        await wait_until(lambda: a.stats().inbound_dropped == 8)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert "is a system actor, which peers may not message" in caplog.text
        writer.close()


# -- back-pressure ------------------------------------------------------------------------------


async def test_a_full_mailbox_pauses_the_peer_and_loses_nothing() -> None:
    release = asyncio.Event()
    seen: list[int] = []

    async def slow(ctx: Any, msg: Ping) -> Behavior[Any]:
        await release.wait()
        seen.append(msg.seq)
        return Behaviors.same()

    async with node("a") as a, node("b", mailbox_capacity=16) as b:
        b.spawn(Behaviors.receive(slow), "slow")
        sink = a.ref(b.address.with_path("/user/slow"))
        for i in range(2000):
            sink.tell(Ping(i))
        cell = b._cells["/user/slow"]
        await wait_until(lambda: any(p.reading_paused for p in b.node._protocols))
        # held at capacity: the rest waits in a's queue and the sockets, not in b's mailbox
        assert len(cell.mailbox.queue) <= 16
        release.set()
        await wait_until(lambda: len(seen) == 2000)
        assert seen == list(range(2000))
        assert sum(a.stats().drops.values()) == 0 and b.local.drops.get("mailbox_full", 0) == 0


async def test_a_mailbox_full_of_bytes_pauses_the_peer_and_loses_nothing() -> None:
    """Few, large messages: far under mailbox_capacity, so only the byte bound holds them."""
    mib, size, count = 1024 * 1024, 256 * 1024, 200
    release = asyncio.Event()
    seen: list[int] = []
    most = [0]

    async with node("a", max_queue_bytes=64 * mib) as a, node("b", mailbox_bytes=4 * mib) as b:
        box = None

        def note() -> None:
            if box is not None:
                most[0] = max(most[0], box.queued_bytes)

        async def slow(ctx: Any, msg: Ping) -> Behavior[Any]:
            await release.wait()
            seen.append(msg.seq)
            note()  # while the peer refills the mailbox
            return Behaviors.same()

        b.spawn(Behaviors.receive(slow), "slow")
        box = b._cells["/user/slow"].mailbox
        assert box.byte_capacity == 4 * mib
        sink = a.ref(b.address.with_path("/user/slow"))
        for i in range(count):
            sink.tell(Ping(i, "x" * size))

        def paused() -> bool:
            note()
            return any(p.reading_paused for p in b.node._protocols)

        await wait_until(paused)
        # held at 4 MiB: the rest waits in a's queue and the sockets, not in b's mailbox
        assert box.full and len(box.queue) < count // 2
        release.set()
        await wait_until(lambda: len(seen) == count)
        assert seen == list(range(count))
        assert 4 * mib <= most[0] <= 4 * mib + size + 1024  # one message over at most
        assert box.queued_bytes == 0
        assert sum(a.stats().drops.values()) == 0 and b.local.drops.get("mailbox_full", 0) == 0


async def test_inbound_peers_lists_the_claims_of_connections_peers_dialed() -> None:
    async with node("a") as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        a.ref(b.address.with_path("/user/sink")).tell(Ping(1))
        await got.wait(1)
        assert b.node.inbound_peers == [a.node.advertised] and b.node.connected_peers == []
        assert a.node.connected_peers == [b.node.advertised] and a.node.inbound_peers == []
