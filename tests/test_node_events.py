"""Node events on TcpNode (add_node_listener): NodeUp, NodeDown, NodeRestarted.

Only a connection carrying this node's traffic makes events: one this node dialed, or an
inbound one whose claim is proven.  An unproven inbound claim makes none.
"""

from __future__ import annotations

import asyncio
from typing import Any

from casty.node_events import NodeDown, NodeRestarted, NodeUp
from casty.transport.config import TcpTransportConfig
from casty.transport.handshake import Handshake, encode_hello
from casty.transport.node import MAX_KNOWN_UIDS, TcpNode
from tests.remote_helpers import Events

KIND = 0x30  # an unknown frame kind: makes the dial, delivers nothing


class NoMessages:
    async def on_message(self, data: bytes) -> None:
        raise AssertionError("no message expected")



async def started(port: int = 0, **cfg: Any) -> TcpNode:
    node = TcpNode(TcpTransportConfig("127.0.0.1", port, **cfg), NoMessages())
    await node.start()
    return node


async def test_up_then_down_closed_for_a_dialed_peer() -> None:
    a, b = await started(), await started()
    events = Events()
    remove = a.add_node_listener(events)
    try:
        a.send_frame("127.0.0.1", b.port, KIND, b"")
        assert await events.next() == NodeUp("127.0.0.1", b.port, b.uid)
        [info] = a.nodes()
        assert (info.host, info.port, info.uid, info.rtt) == ("127.0.0.1", b.port, b.uid, None)
        assert info.connected_since > 0
        await b.close()
        down = await events.next()  # a close with bytes unread may reach us as a reset
        assert isinstance(down, NodeDown) and down.reason in ("closed", "reset")
        assert (down.host, down.port, down.uid) == ("127.0.0.1", b.port, b.uid)
        assert a.nodes() == []
        remove()
        remove()  # twice is harmless
        assert a._node_listeners == []
    finally:
        await a.close()
        await b.close()


async def test_our_shutdown_says_shutdown() -> None:
    a, b = await started(), await started()
    events = Events()
    a.add_node_listener(events)
    try:
        a.send_frame("127.0.0.1", b.port, KIND, b"")
        assert isinstance(await events.next(), NodeUp)
        await a.close()
        assert await events.next() == NodeDown("127.0.0.1", b.port, b.uid, "shutdown")
    finally:
        await a.close()
        await b.close()


async def test_a_new_uid_at_a_known_address_is_a_restart() -> None:
    a, b = await started(), await started()
    port, old_uid = b.port, b.uid
    events = Events()
    a.add_node_listener(events)
    try:
        a.send_frame("127.0.0.1", port, KIND, b"")
        assert isinstance(await events.next(), NodeUp)
        await b.close()
        assert isinstance(await events.next(), NodeDown)
        b = await started(port)
        assert b.uid != old_uid
        a.send_frame("127.0.0.1", port, KIND, b"")
        assert await events.next() == NodeRestarted("127.0.0.1", port, old_uid, b.uid)
        assert await events.next() == NodeUp("127.0.0.1", port, b.uid)
    finally:
        await a.close()
        await b.close()


async def test_the_same_uid_back_is_no_restart() -> None:
    a, b = await started(), await started()
    events = Events()
    a.add_node_listener(events)
    try:
        for _ in range(2):
            a.send_frame("127.0.0.1", b.port, KIND, b"")
            assert await events.next() == NodeUp("127.0.0.1", b.port, b.uid)
            a.peer_down("127.0.0.1", b.port)
            assert (await events.next()).reason in ("closed", "reset")
        assert not any(isinstance(e, NodeRestarted) for e in events.seen)
    finally:
        await a.close()
        await b.close()


async def test_an_unproven_inbound_claim_makes_no_event() -> None:
    """A peer dialing us and claiming a known address (with another uid) is receive-only:
    no NodeUp, no NodeRestarted, and its close no NodeDown."""
    a, b = await started(), await started()
    events = Events()
    a.add_node_listener(events)
    try:
        a.send_frame("127.0.0.1", b.port, KIND, b"")
        assert isinstance(await events.next(), NodeUp)
        reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
        writer.write(encode_hello(Handshake("127.0.0.1", b.port, b.uid ^ 1, 2, frozenset())))
        await reader.readexactly(5)  # a's answer: the claim is established, receive-only
        async with asyncio.timeout(10):
            while len(a.inbound_peers) < 1:
                await asyncio.sleep(0.005)
        writer.close()
        async with asyncio.timeout(10):
            while a.inbound_peers:
                await asyncio.sleep(0.005)
        assert len(events.seen) == 1
        assert a.is_connected(("127.0.0.1", b.port))
    finally:
        await a.close()
        await b.close()


COOKIE = "node-events-cookie"


async def test_a_proven_inbound_claim_with_a_new_uid_replaces_the_connection() -> None:
    """The node at b's address came back (a new uid) and dialed us with the cookie while our
    connection to b is still open (half-open: b's close never reached us): the new
    incarnation's connection carries our traffic, NodeRestarted and no NodeDown."""
    a, b = await started(cookie=COOKIE), await started(cookie=COOKIE)
    events = Events()
    a.add_node_listener(events)
    c: TcpNode | None = None
    try:
        key = ("127.0.0.1", b.port)
        a.send_frame(*key, KIND, b"")
        assert await events.next() == NodeUp(*key, b.uid)
        old = a.connection_to(key)
        assert old is not None
        c = await started(cookie=COOKIE, self_address=key)  # b's successor, as far as a can tell
        c.send_frame("127.0.0.1", a.port, KIND, b"")
        assert await events.next() == NodeRestarted(*key, b.uid, c.uid)
        assert await events.next() == NodeUp(*key, c.uid)
        new = a.connection_to(key)
        assert new is not None and not new.outbound and new.uid == c.uid
        assert old.proto.closed
        [info] = a.nodes()
        assert info.uid == c.uid
        assert not any(isinstance(e, NodeDown) for e in events.seen)
    finally:
        await a.close()
        await b.close()
        if c is not None:
            await c.close()


async def test_a_proven_inbound_claim_with_the_same_uid_or_from_a_client_only_node_replaces_nothing() -> None:
    a, b = await started(cookie=COOKIE), await started(cookie=COOKIE)
    events = Events()
    a.add_node_listener(events)
    others: list[TcpNode] = []
    try:
        key = ("127.0.0.1", b.port)
        a.send_frame(*key, KIND, b"")
        assert await events.next() == NodeUp(*key, b.uid)
        old = a.connection_to(key)
        twin = TcpNode(TcpTransportConfig("127.0.0.1", 0, cookie=COOKIE, self_address=key), NoMessages())
        twin.uid = b.uid  # the same incarnation on a second connection: not a restart
        await twin.start()
        others.append(twin)
        # Two client-only nodes (both claim port 0): the second is another node, not a restart.
        for _ in range(2):
            client = TcpNode(TcpTransportConfig("127.0.0.1", 0, cookie=COOKIE, client_only=True), NoMessages())
            await client.start()
            others.append(client)
        for n, other in enumerate(others, 1):  # one at a time: which client came first is known
            other.send_frame("127.0.0.1", a.port, KIND, b"")
            async with asyncio.timeout(10):
                while len(a.inbound_peers) < n:
                    await asyncio.sleep(0.005)
        assert a.connection_to(key) is old
        first = a.connection_to(("127.0.0.1", 0))
        assert first is not None and first.uid == others[1].uid
        assert [type(e) for e in events.seen] == [NodeUp, NodeUp]  # b, then the first client
    finally:
        for n in (a, b, *others):
            await n.close()


async def test_a_raising_listener_does_not_stop_the_others() -> None:
    a, b = await started(), await started()
    events = Events()

    def broken(event: Any) -> None:
        raise RuntimeError("listener bug")

    a.add_node_listener(broken)
    a.add_node_listener(events)
    try:
        a.send_frame("127.0.0.1", b.port, KIND, b"")
        assert isinstance(await events.next(), NodeUp)
    finally:
        await a.close()
        await b.close()


def test_known_uids_are_bounded() -> None:
    node = TcpNode(TcpTransportConfig("127.0.0.1", 0), NoMessages())

    class Conn:
        uid = 1
        carries = None
        since = 0.0

    for port in range(MAX_KNOWN_UIDS + 5):
        node._carry(Conn(), ("h", port))  # type: ignore[arg-type]
    assert len(node._known_uids) == MAX_KNOWN_UIDS
    assert ("h", 0) not in node._known_uids and ("h", MAX_KNOWN_UIDS + 4) in node._known_uids


async def test_subscribe_nodes_takes_a_callable_or_an_actor_ref_and_unsubscribes() -> None:
    from casty import Behaviors
    from tests.remote_helpers import node

    async with node("a") as a, node("b") as b:
        events, told = Events(), Events()

        async def receive(ctx: Any, msg: Any) -> Any:
            told(msg)
            return Behaviors.same()

        ref = a.spawn(Behaviors.receive(receive), "node-watcher")
        stop_calls = a.subscribe_nodes(events)
        stop_tells = a.subscribe_nodes(ref)
        a.node.send_frame("127.0.0.1", b.node.port, KIND, b"")
        up = NodeUp("127.0.0.1", b.node.port, b.node.uid)
        assert await events.next() == up
        assert await told.next() == up
        [info] = a.nodes()
        assert (info.host, info.port, info.uid) == ("127.0.0.1", b.node.port, b.node.uid)
        stop_calls()
        stop_tells()
        a.node.peer_down("127.0.0.1", b.node.port)
        async with asyncio.timeout(10):
            while a.nodes():
                await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        assert events.seen == [up] and told.seen == [up]
        try:
            a.subscribe_nodes(42)  # type: ignore[arg-type]
        except TypeError as exc:
            assert "int" in str(exc)
        else:
            raise AssertionError("subscribe_nodes took an int")
