"""Hostile peers on real loopback sockets against a RemoteActorSystem node.

Raw asyncio clients play the attacker against node ``b`` while a well-behaved node
``a`` streams ``Ping(0), Ping(1), ...`` to ``b`` (see :class:`Steady`).  Each case
checks that the offending connection is closed with exactly one log line saying
why, that what ``b`` holds for it stays bounded and is released, and that every
one of ``a``'s messages still arrives, in order, during and after the attack.

Policies decided here (documented in ``casty.transport.node`` and, for decoding,
``casty.transport.remote.InboundMessageHandler``):

* a connection closed for what its peer sent is logged once, at warning level;
  a reset (RST) is an ordinary disconnect: one info line for an established
  connection, none before the handshake;
* a frame must complete within ``frame_timeout`` of its first bytes;
* an undecodable message frame is a per-message failure, not a connection one:
  it is dropped, counted and logged at powers of two of the count; the connection
  stays open, because one unknown type from a peer running newer code must not
  cut off its good messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import struct
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from casty import FRAME_HANDSHAKE, FRAME_MESSAGE, MessageEnvelope, MsgpackSerializer, RemoteActorSystem
from tests.remote_helpers import Collector, Ping, registry
from tests.test_remote import frame, node, read_frame, wait_until

MiB = 1024 * 1024
FAKE_HOST = "127.0.0.9"  # the address hostile peers claim in their handshakes


class Steady:
    """A well-behaved node ``a`` telling ``Ping(0), Ping(1), ...`` to ``b``'s sink, a few at a time."""

    def __init__(self, a: RemoteActorSystem, b: RemoteActorSystem) -> None:
        self.got = Collector()
        b.spawn(self.got.behavior(), "steady")
        self.sink = a.ref(b.address.with_path("/user/steady"))
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    def _tell(self, n: int) -> None:
        for _ in range(n):
            self.sink.tell(Ping(self.sent))
            self.sent += 1

    async def start(self) -> None:
        self._tell(1)
        await self.got.wait(1)  # connected
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            self._tell(4)
            await asyncio.sleep(0.002)

    async def progress(self, n: int = 40) -> None:
        """Return once ``n`` more messages have arrived: delivery goes on right now."""
        await self.got.wait(len(self.got.items) + n)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def finish(self) -> None:
        """Stop streaming, send a last few, and check that every message arrived in order."""
        self.stop()
        self._tell(10)
        items = await self.got.wait(self.sent)
        assert [p.seq for p in items] == list(range(self.sent))


@contextlib.asynccontextmanager
async def arena(**b_options: Any) -> AsyncIterator[tuple[RemoteActorSystem, Steady]]:
    """Node ``b`` (configured by ``b_options``) with ``a`` streaming to it throughout."""
    async with node("b", **b_options) as b, node("a") as a:
        steady = Steady(a, b)
        await steady.start()
        try:
            yield b, steady
            await steady.finish()
        finally:
            steady.stop()


class Lines:
    """``lines()``: the casty log records at INFO and above since ``lines.clear()``."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self._caplog = caplog
        caplog.set_level(logging.INFO, logger="casty")

    def __call__(self) -> list[logging.LogRecord]:
        return [r for r in self._caplog.records if r.name.startswith("casty") and r.levelno >= logging.INFO]

    def clear(self) -> None:
        self._caplog.clear()


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Lines:
    return Lines(caplog)


def handshake(port: int) -> bytes:
    return frame(FRAME_HANDSHAKE, json.dumps({"host": FAKE_HOST, "port": port}).encode())


def ping_frame(b: RemoteActorSystem, path: str, seq: int, text: str = "") -> bytes:
    payload = MsgpackSerializer(registry()).serialize(Ping(seq, text))
    env = MessageEnvelope(b.address.with_path(path).to_uri(), f"casty://x@{FAKE_HOST}:1/",
                          payload, "tests.remote_helpers.Ping")
    return frame(FRAME_MESSAGE, env.to_bytes())


async def connect(b: RemoteActorSystem, claim: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to ``b``; with ``claim``, handshaken as ``FAKE_HOST:claim``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", b.address.port)
    if claim is not None:
        writer.write(handshake(claim))
        assert (await read_frame(reader))[0] == FRAME_HANDSHAKE  # b has established it
    return reader, writer


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float = 5.0) -> None:
    """Return once the other side has closed (FIN or RST) the connection."""
    async with asyncio.timeout(timeout):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass


def hostile_protocol(b: RemoteActorSystem, before: set[Any]) -> Any:
    [proto] = b.node._protocols - before
    return proto


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def assert_one_line(records: list[logging.LogRecord], level: int, text: str) -> None:
    assert [(r.levelno, text in r.getMessage()) for r in records] == [(level, True)], [
        r.getMessage() for r in records
    ]


# -- 1. no handshake -----------------------------------------------------------------------


@pytest.mark.parametrize("sends", [b"", handshake(9)[:7]], ids=["silent", "partial-handshake"])
async def test_peer_without_handshake_is_closed_after_handshake_timeout(lines: Lines, sends: bytes) -> None:
    async with arena(handshake_timeout=0.6) as (b, steady):
        before = set(b.node._protocols)
        lines.clear()
        reader, writer = await connect(b)
        writer.write(sends)
        await wait_until(lambda: len(b.node._protocols) > len(before))
        proto = hostile_protocol(b, before)
        await wait_until(lambda: proto.partial_bytes == len(sends))  # what it sent, no more
        await steady.progress()  # a keeps delivering while the hostile connection hangs
        await closed_by_peer(reader)
        await wait_until(lambda: b.node._protocols == before)
        assert_one_line(lines(), logging.WARNING, "no handshake from")
        writer.close()


# -- 2. absurd length prefixes -------------------------------------------------------------


@pytest.mark.parametrize("length", [0xFFFFFFFF, 2**31, 16 * MiB + 1, 0], ids=hex)
@pytest.mark.parametrize("after_handshake", [False, True], ids=["before-handshake", "after-handshake"])
async def test_absurd_length_prefix_closes_at_once_with_nothing_buffered(
    lines: Lines, length: int, after_handshake: bool
) -> None:
    # handshake_timeout is long: the close below can only come from the length check.
    async with arena(handshake_timeout=30) as (b, steady):
        before = set(b.node._protocols)
        reader, writer = await connect(b, 1000 if after_handshake else None)
        lines.clear()
        tracemalloc.start()
        try:
            writer.write(struct.pack(">I", length))  # the prefix alone: b must not wait for more
            await closed_by_peer(reader)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # A body allocated (or buffered) for that length would show here (16 MiB and up).
        assert peak < 64 * 1024
        await wait_until(lambda: b.node._protocols == before)
        assert (FAKE_HOST, 1000) not in b.node._peers
        assert_one_line(lines(), logging.WARNING, "frame protocol error")
        assert str(length) in lines()[0].getMessage()
        await steady.progress()
        writer.close()


# -- 3. garbage after a valid handshake ----------------------------------------------------

GARBAGE = {
    "http": b"GET / HTTP/1.1\r\nHost: casty\r\n\r\n",
    "tls-client-hello": bytes.fromhex("160301020001000200fc0303") + bytes(500),
    "random": bytes([0xA5]) + random.Random(7).randbytes(4095),  # first byte: length > 16 MiB
    "zero-length": bytes(64),
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
async def test_garbage_after_handshake_closes_that_connection_only(lines: Lines, garbage: bytes) -> None:
    async with arena() as (b, steady):
        before = set(b.node._protocols)
        reader, writer = await connect(b, 2000)
        assert hostile_protocol(b, before).context.peer_key == (FAKE_HOST, 2000)  # established
        lines.clear()
        writer.write(garbage)
        await closed_by_peer(reader)
        await wait_until(lambda: b.node._protocols == before)
        assert (FAKE_HOST, 2000) not in b.node._peers
        assert_one_line(lines(), logging.WARNING, "frame protocol error")
        await steady.progress()
        writer.close()


# -- 4. slow loris -------------------------------------------------------------------------


async def test_frame_trickled_past_frame_timeout_is_cut_off(lines: Lines) -> None:
    async with arena(frame_timeout=0.4) as (b, steady):
        victim = Collector()
        b.spawn(victim.behavior(), "victim")
        data = ping_frame(b, "/user/victim", 1, "x" * 100)  # ~250 bytes: 5 s at a byte per 20 ms
        before = set(b.node._protocols)
        reader, writer = await connect(b, 3000)
        proto = hostile_protocol(b, before)
        lines.clear()
        writer.write(data[:10])
        await wait_until(lambda: proto.partial_bytes == 10)  # what arrived, not the stated length

        async def trickle() -> None:  # the rest, a byte every 20 ms: seconds, were it let through
            for i in range(10, len(data)):
                writer.write(data[i : i + 1])
                await asyncio.sleep(0.02)

        task = asyncio.get_running_loop().create_task(trickle())
        try:
            await steady.progress()
            await closed_by_peer(reader)
            assert not task.done()  # cut off mid-frame, long before the trickle would end
        finally:
            task.cancel()
        await wait_until(lambda: b.node._protocols == before)
        assert (FAKE_HOST, 3000) not in b.node._peers
        assert_one_line(lines(), logging.WARNING, "not complete within 0.4s")
        assert victim.items == []
        writer.close()


async def test_frame_trickled_within_frame_timeout_is_delivered(lines: Lines) -> None:
    async with arena(frame_timeout=2.0) as (b, _steady):
        victim = Collector()
        b.spawn(victim.behavior(), "victim")
        data = ping_frame(b, "/user/victim", 2)
        before = set(b.node._protocols)
        _reader, writer = await connect(b, 3001)
        proto = hostile_protocol(b, before)
        lines.clear()
        half = len(data) // 2
        for i in range(half):
            writer.write(data[i : i + 1])
            await asyncio.sleep(0.002)
        await wait_until(lambda: proto.context.partial_mark is not None)  # a sweep has timed it
        assert proto.partial_bytes == half
        for i in range(half, len(data)):
            writer.write(data[i : i + 1])
            await asyncio.sleep(0.002)
        assert await victim.wait(1) == [Ping(2)]
        assert proto.partial_bytes == 0 and not proto.closed
        assert lines() == []
        writer.close()


async def test_stalled_frame_of_the_largest_size_holds_at_most_max_frame_size(lines: Lines) -> None:
    # The worst one connection can make b hold: max_frame_size, for at most 1.5x frame_timeout.
    async with arena(max_frame_size=MiB, frame_timeout=0.5) as (b, _steady):
        before = set(b.node._protocols)
        reader, writer = await connect(b, 3002)
        proto = hostile_protocol(b, before)
        lines.clear()
        tracemalloc.start()
        try:
            writer.write(struct.pack(">IB", MiB, FRAME_MESSAGE) + bytes(1000))
            await wait_until(lambda: proto.partial_bytes == 1005)
            await closed_by_peer(reader)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < MiB + 256 * 1024  # the body, allocated once at its stated size (Cython twin)
        assert_one_line(lines(), logging.WARNING, "not complete within 0.5s (1005 bytes in)")
        await wait_until(lambda: b.node._protocols == before)
        writer.close()


def test_partial_bytes_counts_what_arrived_of_the_frame_in_progress(impl: Any) -> None:
    # What the sweep reads; it must not depend on the twin or on how the bytes are split.
    got: list[bytes] = []
    proto = impl.FrameProtocol(object())
    proto.set_message_sink(got.append)
    data = frame(FRAME_MESSAGE, b"abcdef") + frame(0x7F, b"xyz")  # 11 bytes, then 8 ignored ones
    seen = []
    for i in range(len(data)):
        proto.data_received(data[i : i + 1])
        seen.append(proto.partial_bytes)
    assert seen == [*range(1, 11), 0, *range(1, 8), 0]
    proto.data_received(data[:13])
    assert proto.partial_bytes == 2 and got == [b"abcdef", b"abcdef"]


def test_frame_timeout_must_be_positive() -> None:
    from casty import TcpTransportConfig

    with pytest.raises(ValueError, match="frame_timeout must be a positive number of seconds"):
        TcpTransportConfig("127.0.0.1", 0, frame_timeout=0)
    assert TcpTransportConfig("127.0.0.1", 0).frame_timeout == 30.0


# -- 5. ten thousand tiny frames in one write ---------------------------------------------


async def test_ten_thousand_tiny_frames_in_one_write_arrive_in_order(lines: Lines) -> None:
    async with arena() as (b, _steady):
        victim = Collector()
        b.spawn(victim.behavior(), "victim")
        before = set(b.node._protocols)
        _reader, writer = await connect(b, 4000)
        proto = hostile_protocol(b, before)
        lines.clear()
        writer.write(b"".join(ping_frame(b, "/user/victim", i) for i in range(10_000)))
        items = await victim.wait(10_000)
        assert [p.seq for p in items] == list(range(10_000))
        assert proto.partial_bytes == 0 and not proto.closed
        assert lines() == []
        writer.close()


def undecodable_bodies(b: RemoteActorSystem) -> list[bytes]:
    sink = b.address.with_path("/user/victim").to_uri()
    ok = MsgpackSerializer(registry()).serialize(Ping(0))
    return [
        b"\x00",  # shorter than an envelope header length
        b"\x00\x00\x00\x05{not}",  # header is not JSON
        MessageEnvelope("casty://other@127.0.0.1:1/user/victim", "s", ok, "h").to_bytes(),  # not b's
        MessageEnvelope(sink, "s", b"\xc1", "h").to_bytes(),  # payload is not msgpack
        MessageEnvelope(sink, "s", MsgpackSerializer().serialize(("x",)) + b"\x00", "h").to_bytes(),
    ]


async def test_a_stream_of_undecodable_frames_closes_its_connection_with_one_line(lines: Lines) -> None:
    from casty.transport.node import MAX_BAD_FRAMES

    async with arena() as (b, steady):
        bodies = undecodable_bodies(b)
        before = set(b.node._protocols)
        reader, writer = await connect(b, 5000)
        lines.clear()
        writer.write(b"".join(frame(FRAME_MESSAGE, bodies[i % len(bodies)]) for i in range(10_000)))
        await closed_by_peer(reader)
        await wait_until(lambda: b.node._protocols == before)
        # decoded no further than the threshold; logged at 1, 2, 4, ..., 1024, then one line to close
        assert b.stats().inbound_dropped == MAX_BAD_FRAMES
        drops = [r for r in lines() if "dropped an inbound message" in r.getMessage()]
        assert len(drops) == MAX_BAD_FRAMES.bit_length()
        closing = [r for r in lines() if "closing the connection from" in r.getMessage()]
        assert [(r.levelno, "undeliverable message frames" in r.getMessage()) for r in closing] == [
            (logging.WARNING, True)
        ]
        await steady.progress()
        writer.close()


async def test_undecodable_frames_among_good_ones_keep_the_connection(lines: Lines) -> None:
    async with arena() as (b, steady):
        victim = Collector()
        b.spawn(victim.behavior(), "victim")
        bodies = undecodable_bodies(b)
        before = set(b.node._protocols)
        _reader, writer = await connect(b, 5000)
        proto = hostile_protocol(b, before)
        lines.clear()
        # one bad frame in three: a peer running newer code must not be cut off for it
        junk = b"".join(
            frame(FRAME_MESSAGE, bodies[i % len(bodies)]) + ping_frame(b, "/user/victim", 2 * i)
            + ping_frame(b, "/user/victim", 2 * i + 1)
            for i in range(2000)
        )
        writer.write(junk)
        assert len(await victim.wait(4000)) == 4000
        assert b.stats().inbound_dropped == 2000
        # 1, 2, 4, ..., 1024: 11 lines for 2,000 failures, not 2,000
        assert len(lines()) == 11
        assert all(r.levelno == logging.WARNING and "dropped an inbound message" in r.getMessage()
                   for r in lines())
        assert not proto.closed and proto.partial_bytes == 0
        await steady.progress()
        writer.close()


# -- 6. reset mid-frame --------------------------------------------------------------------


def send_reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the kernel sends RST instead of FIN."""
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize("after_handshake", [False, True], ids=["before-handshake", "after-handshake"])
async def test_reset_mid_frame_is_cleaned_up(lines: Lines, after_handshake: bool) -> None:
    async with arena() as (b, steady):
        before, peers_before = set(b.node._protocols), dict(b.node._peers)
        _reader, writer = await connect(b, 6000 if after_handshake else None)
        await wait_until(lambda: len(b.node._protocols) > len(before))
        proto = hostile_protocol(b, before)
        lines.clear()
        data = ping_frame(b, "/user/steady", -1)
        writer.write(data[: len(data) // 2])
        await wait_until(lambda: proto.partial_bytes == len(data) // 2)
        send_reset(writer)
        await wait_until(lambda: b.node._protocols == before)
        assert b.node._peers == peers_before  # no entry left for the reset peer
        if after_handshake:  # an ordinary disconnect: one info line
            assert_one_line(lines(), logging.INFO, f"connection from {FAKE_HOST}:6000 lost")
            assert "ConnectionResetError" in lines()[0].getMessage()
        else:
            assert lines() == []
        await steady.progress()


# -- 7. many connections opened and dropped ------------------------------------------------


async def test_five_hundred_dropped_connections_leave_nothing_behind(lines: Lines) -> None:
    async with arena() as (b, steady):
        before, peers_before = set(b.node._protocols), dict(b.node._peers)
        fds_before = open_fds()

        async def one(i: int) -> None:
            _reader, writer = await connect(b, 10_000 + i if i % 2 else None)
            if i % 3 == 0:
                send_reset(writer)
            else:
                writer.close()
                await writer.wait_closed()

        for start in range(0, 500, 50):  # bounded batches: at most 50 sockets at a time
            await asyncio.gather(*(one(i) for i in range(start, start + 50)))
            await steady.progress(4)
        await wait_until(lambda: b.node._protocols == before)
        assert b.node._peers == peers_before
        assert open_fds() <= fds_before + 2
        assert [r.getMessage() for r in lines() if r.levelno >= logging.WARNING] == []
