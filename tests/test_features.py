"""v2 features (caps) on TcpNode: listed in the handshake, used only when both ends list them.

A feature's frame kinds reach its handler only on connections whose peer listed the
feature too; elsewhere they are unknown frames, ignored as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from casty.transport.config import TcpTransportConfig
from casty.transport.frame_codec import encode_frame
from casty.transport.node import TcpNode

KIND = 0x20


class NoMessages:
    async def on_message(self, data: bytes) -> None:
        raise AssertionError("no message expected")


class Seen:
    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []
        self.arrived = asyncio.Event()

    def __call__(self, conn: Any, kind: int, body: bytes) -> None:
        self.frames.append((kind, body))
        self.arrived.set()


def bare_config() -> TcpTransportConfig:
    """A node speaking only the features a test adds (fragments and heartbeats, on by default, off)."""
    return TcpTransportConfig("127.0.0.1", 0, fragment_size=0, heartbeats=False)


async def started(*caps: str, seen: Seen | None = None) -> TcpNode:
    node = TcpNode(bare_config(), NoMessages())
    for n, cap in enumerate(caps):
        node.add_feature(cap, [KIND + n], seen or Seen())
    await node.start()
    return node


async def connection(node: TcpNode, to: TcpNode) -> Any:
    """``node``'s established connection to ``to``, dialed by a first frame."""
    key = ("127.0.0.1", to.port)
    node.send_frame(*key, 0x30, b"")  # an unknown kind: makes the dial, delivers nothing
    async with asyncio.timeout(10):
        while not node.is_connected(key):
            await asyncio.sleep(0.005)
    return node._peers[key].proto


@pytest.mark.parametrize("peer_caps", [("feat",), ("feat", "other"), ()])
async def test_a_feature_is_used_when_both_list_it(peer_caps: tuple[str, ...]) -> None:
    seen = Seen()
    receiver = await started(*peer_caps, seen=seen)
    sender = await started("feat")
    try:
        proto = await connection(sender, receiver)
        shared = {"feat"} & set(peer_caps)
        assert proto.context.caps == frozenset(shared)
        assert proto.control_kinds == (frozenset({KIND}) if shared else frozenset())
        proto.send_control(encode_frame(KIND, b"one"))
        proto.send_frame(encode_frame(0x30, b""))  # a later frame: the first has been read
        if shared:
            await asyncio.wait_for(seen.arrived.wait(), 10)
            assert seen.frames == [(KIND, b"one")]
        else:
            async with asyncio.timeout(10):
                while sum(p.frames_ignored for p in receiver._protocols) < 3:
                    await asyncio.sleep(0.005)
            assert seen.frames == []
    finally:
        await sender.close()
        await receiver.close()


async def test_features_are_checked_and_fixed_at_start() -> None:
    node = TcpNode(bare_config(), NoMessages())
    node.add_feature("a", [KIND], Seen())
    with pytest.raises(ValueError, match="belong to another feature"):
        node.add_feature("b", [KIND], Seen())
    with pytest.raises(ValueError, match="new non-empty name"):
        node.add_feature("a", [KIND + 1], Seen())
    with pytest.raises(ValueError, match="control frame kind"):
        node.add_feature("c", [1], Seen())
    assert node.caps == frozenset({"a"})
    await node.start()
    try:
        with pytest.raises(RuntimeError, match="added after start"):
            node.add_feature("d", [KIND + 2], Seen())
        assert b'"caps": ["a"]' in node._hello_frame
    finally:
        await node.close()
