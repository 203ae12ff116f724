"""Compact headers (cap "hdr"): per-connection name tables, in both twins.

The byte layouts (golden vectors below) are in docs/architecture.md, "Compact
headers"; the tables in casty.transport.compact_codec.  The fuzzer is in
tests/test_fuzz.py ("compact headers").
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import types
from typing import Any

import pytest

from casty import RemoteActorSystem
from casty.serialization import MsgpackSerializer
from casty.transport.compact_codec import RESET_FRAME, HeaderNames, HeaderTable
from casty.transport.handshake import Handshake, encode_hello
from casty.wire import (
    CAP_HEADERS,
    FRAME_COMPACT,
    FRAME_HDR_ENTRY,
    FRAME_MESSAGE,
    MAX_HDR_BYTES,
    MAX_HDR_ENTRIES,
    MAX_HDR_NAME_BYTES,
)
from tests.remote_helpers import Collector, Echo, KindSpy, Ping, echo_behavior, node

TARGET = "casty://b@127.0.0.1:7001/user/sink"
SENDER = "casty://a@127.0.0.1:7000/"


class Proto:
    """Stands in for a FrameProtocol: records the control frames a table sends."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_control(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True


class Origin:
    """Stands in for the node's connection (_Conn): records what the handler tells it."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.dropped = 0

    def misbehaving(self, why: str) -> None:
        self.refused.append(why)

    def frame_dropped(self) -> None:
        self.dropped += 1

    def mailbox_full(self, mailbox: Any) -> None:
        pass


class Local:
    def __init__(self) -> None:
        self.delivered: list[tuple[str, Any, int]] = []

    def deliver_path(self, path: str, msg: Any, nbytes: int = -1) -> None:
        self.delivered.append((path, msg, nbytes))


def sink(impl: types.SimpleNamespace, origin: Origin, **kw: Any) -> tuple[Any, Any, Local]:
    """(OriginSink, handler, local) of ``impl``'s twin, for system "b"."""
    local = Local()
    handler = impl.InboundMessageHandler(local=local, serializer=MsgpackSerializer(), system_name="b", **kw)
    return handler.sink_for(origin).__self__, handler, local


def entry_body(entry: int, name: str) -> bytes:
    return struct.pack(">H", entry) + name.encode()


def compact_body(t: int, s: int, h: int, payload: bytes) -> bytes:
    return struct.pack(">HHH", t, s, h) + payload


# -- golden vectors --------------------------------------------------------------------


def test_golden_vectors_of_the_entry_and_compact_frames(impl: types.SimpleNamespace) -> None:
    proto = Proto()
    table = HeaderTable(proto)
    writer = impl.EnvelopeWriter(MsgpackSerializer())
    body = writer.encode_compact(table, TARGET, SENDER, 7)
    assert body == bytes.fromhex("000000010002") + b"\x07"
    assert proto.frames == [
        bytes.fromhex("0000002506" "0000") + TARGET.encode(),
        bytes.fromhex("0000001c06" "0001") + SENDER.encode(),
        bytes.fromhex("0000000f06" "0002") + b"builtins.int",
    ]
    assert RESET_FRAME == bytes.fromhex("0000000106")
    # Known names: no entry, and the same ids for a new type hint's message keep the names.
    assert writer.encode_compact(table, TARGET, SENDER, 8) == bytes.fromhex("000000010002") + b"\x08"
    assert writer.encode_compact(table, TARGET, SENDER, "x") == bytes.fromhex("000000010003") + b"\xa1x"
    assert proto.frames[3:] == [bytes.fromhex("0000000f06" "0003") + b"builtins.str"]


def test_a_reply_path_or_an_overlong_name_takes_the_json_header(impl: types.SimpleNamespace) -> None:
    proto = Proto()
    table = HeaderTable(proto)
    writer = impl.EnvelopeWriter(MsgpackSerializer())
    assert writer.encode_compact(table, "casty://b@127.0.0.1:7001/temp/ask-1-00ff", SENDER, 1) is None
    long_target = "casty://b@127.0.0.1:7001/user/" + "x" * MAX_HDR_NAME_BYTES
    assert writer.encode_compact(table, long_target, SENDER, 1) is None
    assert writer.encode_compact(table, TARGET + "\ud800", SENDER, 1) is None  # not UTF-8 encodable
    assert proto.frames == [] and table.entries == 0


# -- the sender's table: bounds and the start-over rule ----------------------------------


def test_a_full_table_starts_over_with_a_clear_and_the_receiver_follows() -> None:
    proto = Proto()
    table = HeaderTable(proto)
    names = HeaderNames()
    for i in range(MAX_HDR_ENTRIES):  # target i, with the same sender and hint
        assert table.header(f"casty://b/user/{i}", SENDER, "h") is not None
        assert table.entries <= MAX_HDR_ENTRIES and table.name_bytes <= MAX_HDR_BYTES
    assert table.epoch == 1  # the 1023rd target did not fit with the two shared names
    assert RESET_FRAME in proto.frames
    for frame in proto.frames:
        assert frame[4] == FRAME_HDR_ENTRY and names.add(frame[5:]) is None
    header = table.header(f"casty://b/user/{MAX_HDR_ENTRIES - 1}", SENDER, "h")
    assert header is not None
    t, s, h = struct.unpack(">HHH", header)
    assert (names.names[t], names.names[s], names.names[h]) == (f"casty://b/user/{MAX_HDR_ENTRIES - 1}", SENDER, "h")


def test_the_byte_bound_starts_over_too() -> None:
    proto = Proto()
    table = HeaderTable(proto)
    name = "x" * (MAX_HDR_NAME_BYTES - 10)
    for i in range(MAX_HDR_BYTES // len(name) + 2):
        table.header(f"{name}{i:05}", SENDER, "h")
        assert table.name_bytes <= MAX_HDR_BYTES
    assert table.epoch >= 1


# -- the receiver: same routing rules as the JSON header, bad input closes --------------


def test_compact_messages_are_routed_like_json_ones(impl: types.SimpleNamespace) -> None:
    origin = Origin()
    checked: list[tuple[str, Any]] = []
    osink, handler, local = sink(impl, origin)
    handler.reply_check = lambda path, org: checked.append((path, org)) or (None if path.endswith("ok") else "no")
    names = ["casty://b@h:1/user/a", SENDER, "builtins.int", "casty://b@h:1/system/tcp",
             "casty://other@h:1/user/a", "casty://b@h:1/temp/ask-ok", "casty://b@h:1/temp/ask-bad"]
    for i, name in enumerate(names):
        osink.on_entry(entry_body(i, name))
    for t in range(len(names)):
        if t not in (1, 2):
            osink.on_compact(compact_body(t, 1, 2, b"\x05"))
    assert local.delivered == [("/user/a", 5, 7), ("/temp/ask-ok", 5, 7)]
    assert checked == [("/temp/ask-ok", origin), ("/temp/ask-bad", origin)]  # the connection it came on
    assert origin.dropped == handler.dropped == 3  # /system/, another system, the refused reply
    assert origin.refused == []
    assert handler.origin is None


@pytest.mark.parametrize(("frames", "why"), [
    ([(FRAME_COMPACT, compact_body(0, 0, 0, b"\x01"))],
     "compact message names header-table entry 0, but the table holds 0"),
    ([(FRAME_HDR_ENTRY, entry_body(0, TARGET)), (FRAME_COMPACT, b"\x00\x00\x00")],
     "compact message of 3 bytes is shorter than its 6-byte header"),
    ([(FRAME_HDR_ENTRY, entry_body(0, TARGET)), (FRAME_COMPACT, compact_body(0, 0, 1, b""))],
     "compact message names header-table entry 1, but the table holds 1"),
    ([(FRAME_HDR_ENTRY, entry_body(1, TARGET))], "header-table entry 1 out of order: the next is 0"),
    ([(FRAME_HDR_ENTRY, b"\x00")], "header-table entry of 1 bytes holds no name (an id takes 2, a name at least 1)"),
    ([(FRAME_HDR_ENTRY, b"\x00\x00\xff\xfe")], "header-table entry 0 is not UTF-8"),
    ([(FRAME_HDR_ENTRY, b"\x00\x00" + b"x" * (MAX_HDR_NAME_BYTES + 1))],
     f"header-table entry 0 of {MAX_HDR_NAME_BYTES + 1} bytes is over the bound of {MAX_HDR_NAME_BYTES}"),
    ([(FRAME_HDR_ENTRY, entry_body(i, f"n{i}")) for i in range(MAX_HDR_ENTRIES + 1)],
     f"header-table entry {MAX_HDR_ENTRIES} past the bound of {MAX_HDR_ENTRIES} entries"),
    ([(FRAME_HDR_ENTRY, entry_body(i, f"{i:04}" + "x" * 1000)) for i in range(MAX_HDR_BYTES // 1004 + 1)],
     f"header-table entry {MAX_HDR_BYTES // 1004} would take the table past its bound of {MAX_HDR_BYTES} bytes"),
])
def test_bad_entries_and_ids_refuse_the_connection(
    impl: types.SimpleNamespace, frames: list[tuple[int, bytes]], why: str
) -> None:
    origin = Origin()
    osink, handler, local = sink(impl, origin)
    for kind, body in frames:
        (osink.on_entry if kind == FRAME_HDR_ENTRY else osink.on_compact)(body)
    assert origin.refused == [why]
    assert local.delivered == [] and handler.dropped == 0


def test_a_clear_empties_the_table(impl: types.SimpleNamespace) -> None:
    origin = Origin()
    osink, _, local = sink(impl, origin)
    osink.on_entry(entry_body(0, "casty://b/user/a"))
    osink.on_compact(compact_body(0, 0, 0, b"\x01"))
    osink.on_entry(b"")
    assert osink.names.names == [] and origin.refused == []
    osink.on_compact(compact_body(0, 0, 0, b"\x02"))
    assert local.delivered == [("/user/a", 1, 7)]
    assert origin.refused == ["compact message names header-table entry 0, but the table holds 0"]


# -- two nodes ---------------------------------------------------------------------------


def inbound_names(system: RemoteActorSystem) -> list[list[str]]:
    """The names each established inbound-capable connection of ``system`` was given."""
    return [p.context.inbound.names.names for p in system.node._protocols
            if p.context.established and p.context.inbound is not None]


async def test_a_stream_between_two_nodes_goes_compact_and_in_order() -> None:
    async with node("a") as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        sink_ref = a.ref(b.address.with_path("/user/sink"))
        sink_ref.tell(Ping(0))  # queued while connecting: the JSON header
        await got.wait(1)
        key = b.node.advertised
        table = a.node.header_table(key)
        assert table is not None and CAP_HEADERS in a.node._peers[key].proto.context.caps
        with KindSpy(a.node, key) as spy:
            for i in range(1, 200):
                sink_ref.tell(Ping(i))
        assert await got.wait(200) == [Ping(i) for i in range(200)]
        assert spy.kinds == [FRAME_COMPACT] * 199
        assert table.entries == 3  # target, sender, type hint: sent once
        assert [b.address.with_path("/user/sink").to_uri(), a.address.with_path("/").to_uri(),
                "tests.remote_helpers.Ping"] in inbound_names(b)
        # An ask: the request goes compact, the reply (to a /temp/ path) with the JSON header.
        b.spawn(echo_behavior(), "echo")
        echo = a.ref(b.address.with_path("/user/echo"))
        assert await a.ask(echo, lambda r: Echo("hi", r), timeout=5) == "hi"
        assert all(not n.startswith(b.address.with_path("/temp/").to_uri()) for names in inbound_names(a)
                   for n in names)


@pytest.mark.parametrize("off", ["sender", "receiver"])
async def test_without_hdr_on_either_end_every_message_has_the_json_header(off: str) -> None:
    async with node("a", compact_headers=off != "sender") as a, node("b", compact_headers=off != "receiver") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        sink_ref = a.ref(b.address.with_path("/user/sink"))
        sink_ref.tell(Ping(0))
        await got.wait(1)
        assert a.node.header_table(b.node.advertised) is None
        for i in range(1, 50):
            sink_ref.tell(Ping(i))
        assert await got.wait(50) == [Ping(i) for i in range(50)]
        assert all(names == [] for names in inbound_names(b))


async def test_a_new_connection_starts_with_empty_tables() -> None:
    async with node("a") as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        sink_ref = a.ref(b.address.with_path("/user/sink"))
        sink_ref.tell(Ping(0))
        await got.wait(1)
        key = b.node.advertised
        first = a.node.header_table(key)
        sink_ref.tell(Ping(1))
        await got.wait(2)
        proto = a.node._peers[key].proto
        a.node.peer_down(*key, "test")
        while proto.transport is not None:
            await asyncio.sleep(0.01)
        sink_ref.tell(Ping(2))  # queued while reconnecting: the JSON header
        await got.wait(3)
        second = a.node.header_table(key)
        assert second is not None and second is not first and second.entries == 0
        sink_ref.tell(Ping(3))  # its names are sent again on the new connection first
        assert await got.wait(4) == [Ping(0), Ping(1), Ping(2), Ping(3)]
        assert second.entries == 3


@pytest.mark.parametrize("compact", [True, False])
async def test_a_steady_stream_makes_no_node_call_per_message(compact: bool) -> None:
    # RemoteTransport writes to the established connection itself: neither header_table
    # nor send_message_to runs per message, compact headers or not.
    async with node("a", compact_headers=compact) as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        sink_ref = a.ref(b.address.with_path("/user/sink"))
        sink_ref.tell(Ping(0))
        await got.wait(1)
        calls: list[str] = []
        a.node.header_table = lambda key: calls.append("header_table")  # type: ignore[method-assign,func-returns-value]
        a.node.send_message_to = lambda *args: calls.append("send_message_to")  # type: ignore[method-assign,func-returns-value]
        with KindSpy(a.node, b.node.advertised) as spy:
            for i in range(1, 100):
                sink_ref.tell(Ping(i))
        assert await got.wait(100) == [Ping(i) for i in range(100)]
        assert calls == []
        assert spy.kinds == [FRAME_COMPACT if compact else FRAME_MESSAGE] * 99


async def test_a_busy_polling_node_sends_through_the_node_to_poke_its_poller() -> None:
    async with node("a", busy_poll=1e-4) as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        sink_ref = a.ref(b.address.with_path("/user/sink"))
        sink_ref.tell(Ping(0))
        await got.wait(1)
        assert a.node.busy_poller is not None
        calls: list[int] = []
        send = a.node.send_message_to
        a.node.send_message_to = lambda k, env, kind=FRAME_MESSAGE: calls.append(kind) or send(k, env, kind)  # type: ignore[method-assign]
        for i in range(1, 20):
            sink_ref.tell(Ping(i))
        assert await got.wait(20) == [Ping(i) for i in range(20)]
        assert calls == [FRAME_COMPACT] * 19  # send_message_to pokes the poller


async def test_a_tell_right_after_peer_down_goes_to_a_new_connection() -> None:
    # In the loop turn of peer_down the old connection is aborted but not yet lost: the
    # next tells must not be written to it (they would be lost), but queued for a new one.
    async with node("a") as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        sink_ref = a.ref(b.address.with_path("/user/sink"))
        for i in range(2):
            sink_ref.tell(Ping(i))
        await got.wait(2)
        key = b.node.advertised
        first = a.node.header_table(key)
        a.node.peer_down(*key, "test")
        sink_ref.tell(Ping(2))
        sink_ref.tell(Ping(3))
        assert await got.wait(4) == [Ping(i) for i in range(4)]
        second = a.node.header_table(key)
        assert second is not None and second is not first
        sink_ref.tell(Ping(4))
        assert await got.wait(5) == [Ping(i) for i in range(5)]
        assert second.entries == 3


async def hostile_peer(b: RemoteActorSystem) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to ``b`` that listed "hdr" in its v2 handshake."""
    reader, writer = await asyncio.open_connection("127.0.0.1", b.node.port)
    writer.write(encode_hello(Handshake("127.0.0.1", 1, 5, 2, frozenset({CAP_HEADERS}))))
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    hello = json.loads((await reader.readexactly(length))[1:])
    assert CAP_HEADERS in hello["caps"]
    return reader, writer


def frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


async def test_a_bad_id_from_a_peer_closes_only_that_connection(caplog: pytest.LogCaptureFixture) -> None:
    async with node("a") as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        sink_ref = a.ref(b.address.with_path("/user/sink"))
        sink_ref.tell(Ping(0))
        await got.wait(1)
        reader, writer = await hostile_peer(b)
        target = b.address.with_path("/user/sink").to_uri()
        payload = b.serializer.serialize(Ping(7))
        with caplog.at_level(logging.WARNING, logger="casty"):
            writer.write(frame(FRAME_HDR_ENTRY, entry_body(0, target))
                         + frame(FRAME_COMPACT, compact_body(0, 0, 0, payload))
                         + frame(FRAME_COMPACT, compact_body(0, 9, 0, payload)))
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by b
        assert "compact message names header-table entry 9, but the table holds 1" in caplog.text
        sink_ref.tell(Ping(1))
        assert await got.wait(3) == [Ping(0), Ping(7), Ping(1)]  # the good frame, then a's traffic goes on
        writer.close()


async def test_a_peer_cannot_reach_system_actors_through_a_compact_frame() -> None:
    async with node("b") as b:
        _, writer = await hostile_peer(b)
        dropped = b._inbound.dropped
        writer.write(frame(FRAME_HDR_ENTRY, entry_body(0, b.address.with_path("/system/tcp").to_uri()))
                     + frame(FRAME_COMPACT, compact_body(0, 0, 0, b"\xc0")))
        async with asyncio.timeout(5):
            while b._inbound.dropped == dropped:
                await asyncio.sleep(0.01)
        assert b._inbound.dropped == dropped + 1
        writer.close()
