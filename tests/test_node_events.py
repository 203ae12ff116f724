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

KIND = 0x30  # an unknown frame kind: makes the dial, delivers nothing


class NoMessages:
    async def on_message(self, data: bytes) -> None:
        raise AssertionError("no message expected")


class Events:
    """A node listener that queues what it is told."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.seen: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.seen.append(event)
        self.queue.put_nowait(event)

    async def next(self) -> Any:
        return await asyncio.wait_for(self.queue.get(), 10)


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
        assert await events.next() == NodeDown("127.0.0.1", b.port, b.uid, "closed")
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
