"""Faults on real loopback TCP: a peer killed mid-stream, a peer that stops reading,
and a shutdown with messages in flight.  Every test is bounded in time."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import socket
import struct
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

from casty import (
    FRAME_HANDSHAKE,
    FRAME_MESSAGE,
    ActorSystem,
    AskFailed,
    Behaviors,
    MessageEnvelope,
    MsgpackSerializer,
    RemoteActorSystem,
)
from tests.remote_helpers import Collector, Count, Echo, Failures, Ping, node, registry
from tests.test_remote import wait_until

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def frame(kind: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, kind) + body


# -- a peer in a child process ------------------------------------------------------------


class SeqNode:
    """A ``tests.nodes.seq_node`` child process and the seqs it printed as it got them."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.seqs: list[int] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, port: int = 0) -> SeqNode:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.nodes.seq_node", str(port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        return cls(proc, int(line))

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.seqs.append(int(line))
            self._changed.set()

    async def wait_seqs(self, n: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.seqs) < n:
                self._changed.clear()
                await self._changed.wait()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    async def wait_dead(self) -> None:
        """Wait for the process to exit and every line it printed to be read."""
        await asyncio.wait_for(self.proc.wait(), 10)
        await asyncio.wait_for(self._reader, 10)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader


async def test_peer_killed_mid_stream_is_reported_blacklisted_and_reconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = Failures()
    child = await SeqNode.start()
    port = child.port
    key = ("127.0.0.1", port)
    restarted: SeqNode | None = None
    caplog.set_level(logging.INFO, logger="casty")
    try:
        async with node("a", on_send_failure=failures, blacklist_duration=60) as a:
            sink = a.ref(f"casty://seq@127.0.0.1:{port}/user/sink")
            seq = 0

            def burst(n: int) -> None:
                nonlocal seq
                for _ in range(n):
                    sink.tell(Ping(seq))
                    seq += 1

            async with asyncio.timeout(15):
                while len(child.seqs) < 300:  # stream until the peer is visibly receiving
                    burst(20)
                    await asyncio.sleep(0)
                child.kill()
                while key in a.node.connected_peers:  # keep streaming until the loss is noticed
                    burst(20)
                    await asyncio.sleep(0)
            await child.wait_dead()
            # The dead peer got a prefix of the stream, in order; what was still queued
            # for it on our side (if anything) was reported as lost with the connection.
            assert child.seqs == list(range(len(child.seqs)))
            assert {f.reason for f in failures} <= {"connection_lost"}
            reported_before = len(failures)

            # Nothing is connected now: the next frames wait for a connect, which is refused.
            burst(100)
            await failures.wait_for(lambda fs: len(fs) > reported_before)
            assert [(f.reason, f.count) for f in failures[reported_before:]] == [("connect_failed", 100)]
            assert a.node.is_blacklisted(key)
            burst(10)  # refused at once while blacklisted, each one reported
            assert [(f.reason, f.count) for f in failures[reported_before + 1:]] == [("blacklisted", 1)] * 10
            assert all((f.host, f.port) == key for f in failures)
            assert "blacklisted for" in caplog.text
            assert "dropped 100 message(s)" in caplog.text

            restarted = await SeqNode.start(port)
            burst(1)  # still blacklisted: the restart alone does not lift it
            assert failures[-1].reason == "blacklisted"
            reported = len(failures)
            a.remote.clear_blacklist(*key)
            first = seq
            burst(500)
            got = await a.ask(sink, lambda r: Count(r), timeout=10)
            assert got == list(range(first, seq))  # every later message, once, in order
            assert len(failures) == reported
            assert key in a.node.connected_peers
    finally:
        if child.proc.returncode is None:
            child.kill()
        await child.wait_dead()
        if restarted is not None:
            await restarted.stop()


# -- a peer that stops reading --------------------------------------------------------------


class StalledPeer:
    """A raw TCP peer: answers the casty handshake, then reads nothing until ``resume()``.

    Its receive buffer is made small so that the sender's socket fills up quickly.
    Once resumed it decodes every message frame and keeps the Ping seqs, in order.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by accepted sockets
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]
        self.conn: socket.socket | None = None
        self.seqs: list[int] = []
        self.handshaken = asyncio.Event()
        self._changed = asyncio.Event()
        self._buf = b""
        self._serializer = MsgpackSerializer(registry())
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._handshake())
        self._reading: asyncio.Task[None] | None = None

    async def _recv(self) -> bytes:
        assert self.conn is not None
        data = await asyncio.get_running_loop().sock_recv(self.conn, 1 << 16)
        if not data:
            raise ConnectionError("sender closed the connection")
        return data

    def _frames(self) -> list[tuple[int, bytes]]:
        out = []
        buf = self._buf
        while len(buf) >= 4:
            (length,) = struct.unpack_from(">I", buf)
            if len(buf) < 4 + length:
                break
            out.append((buf[4], buf[5 : 4 + length]))
            buf = buf[4 + length :]
        self._buf = buf
        return out

    async def _handshake(self) -> None:
        loop = asyncio.get_running_loop()
        self.conn, _ = await loop.sock_accept(self.sock)
        frames: list[tuple[int, bytes]] = []
        while not frames:
            self._buf += await self._recv()
            frames = self._frames()
        assert frames[0][0] == FRAME_HANDSHAKE and len(frames) == 1
        reply = json.dumps({"host": "127.0.0.1", "port": self.port}).encode()
        await loop.sock_sendall(self.conn, frame(FRAME_HANDSHAKE, reply))
        self.handshaken.set()

    def resume(self) -> None:
        self._reading = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            self._buf += await self._recv()
            for kind, body in self._frames():
                assert kind == FRAME_MESSAGE
                msg = self._serializer.deserialize(MessageEnvelope.from_bytes(body).payload)
                self.seqs.append(msg.seq)
            self._changed.set()

    async def wait_last(self, seq: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not self.seqs or self.seqs[-1] < seq:
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        for task in (self._task, self._reading):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.conn is not None:
            self.conn.close()
        self.sock.close()


def buffered(system: RemoteActorSystem, key: tuple[str, int]) -> tuple[int, int]:
    """(frames' bytes in the node's queue for ``key``, bytes in its transport's write buffer)."""
    peer = system.node._peers.get(key)
    if peer is None:
        return 0, 0
    if peer.proto is None:
        return peer.pending_bytes, 0
    transport = peer.proto.transport
    return peer.proto.queued_bytes, transport.get_write_buffer_size() if transport is not None else 0


async def test_peer_that_stops_reading_stays_bounded_and_resumes() -> None:
    max_queue, high = 64 * 1024, 16 * 1024
    failures = Failures()
    stalled = StalledPeer()
    key = ("127.0.0.1", stalled.port)
    try:
        async with node("a", on_send_failure=failures, max_queue_bytes=max_queue,
                        write_high_water=high, write_low_water=4 * 1024) as a, node("b") as b:
            got = Collector()
            b.spawn(got.behavior(), "sink")
            healthy = a.ref(b.address.with_path("/user/sink"))
            slow = a.ref(f"casty://raw@127.0.0.1:{stalled.port}/user/sink")
            sent: list[int] = []
            dropped: list[int] = []
            healthy_sent = 0
            big = "x" * 1000

            def to_slow(seq: int, text: str) -> None:
                before = len(failures)
                slow.tell(Ping(seq, text))  # a refusal is reported before tell returns
                sent.append(seq)
                if len(failures) > before:
                    assert [(f.reason, f.count, (f.host, f.port), f.detail) for f in failures[before:]] == [
                        ("queue_full", 1, key, "connection write queue full")
                    ]
                    dropped.append(seq)
                queued, in_transport = buffered(a, key)
                assert queued <= max_queue
                assert in_transport <= max_queue + high

            to_slow(0, "hello")
            await stalled.handshaken.wait()
            async with asyncio.timeout(10):
                while key not in a.node.connected_peers:
                    await asyncio.sleep(0.005)  # our handshake answer is on its way: nothing to await
            seq = 1
            async with asyncio.timeout(15):
                while len(dropped) < 200:  # until the queue has been full for a while
                    for _ in range(50):
                        to_slow(seq, big)
                        healthy.tell(Ping(healthy_sent))
                        healthy_sent += 1
                        seq += 1
                    await asyncio.sleep(0)
            assert stalled.handshaken.is_set()
            # the healthy peer was not held back by the stalled one
            assert [p.seq for p in await got.wait(healthy_sent)] == list(range(healthy_sent))
            assert a.stats().drops == {"queue_full": len(dropped)}

            stalled.resume()
            await stalled.wait_last(max(s for s in sent if s not in set(dropped)))
            later = seq
            for i in range(later, later + 300):
                to_slow(i, "later")
                healthy.tell(Ping(healthy_sent))
                healthy_sent += 1
            await stalled.wait_last(later + 299)
            assert dropped[-1] < later  # nothing dropped once the peer reads again
            gone = set(dropped)
            assert stalled.seqs == [s for s in sent if s not in gone]  # the rest, once, in order
            assert [p.seq for p in await got.wait(healthy_sent)] == list(range(healthy_sent))
            assert all((f.host, f.port) == key for f in failures)
    finally:
        await stalled.close()


# -- shutdown with messages in flight ---------------------------------------------------------


async def test_shutdown_with_messages_in_flight_ends_cleanly() -> None:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    unraisable: list[Any] = []
    old_handler = loop.get_exception_handler()
    old_hook = sys.unraisablehook
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    sys.unraisablehook = unraisable.append

    accepted = asyncio.Event()

    class Silent(asyncio.Protocol):  # accepts, never answers the handshake: frames wait for it
        def connection_made(self, transport: Any) -> None:
            accepted.set()

    silent = await loop.create_server(Silent, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    stalled = StalledPeer()
    failures = Failures()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            a = node("a", on_send_failure=failures, max_queue_bytes=256 * 1024,
                     write_high_water=16 * 1024, write_low_water=4 * 1024, handshake_timeout=30)
            b = node("b")
            await a.start()
            await b.start()
            muted = Collector()
            b.spawn(muted.behavior(), "mute")  # takes asks, never answers them
            mute = a.ref(b.address.with_path("/user/mute"))
            mute.tell(Ping(0))
            await muted.wait(1)
            to_silent = a.ref(f"casty://s@127.0.0.1:{silent_port}/user/x")
            to_stalled = a.ref(f"casty://raw@127.0.0.1:{stalled.port}/user/x")
            big = "y" * 1000
            for i in range(150):
                to_silent.tell(Ping(i, big))
            to_stalled.tell(Ping(0))
            await stalled.handshaken.wait()
            stalled_key = ("127.0.0.1", stalled.port)
            async with asyncio.timeout(10):
                while stalled_key not in a.node.connected_peers:
                    await asyncio.sleep(0.005)  # our handshake answer is on its way: nothing to await
                while not failures:  # until the stalled peer's queue is full
                    for i in range(50):
                        to_stalled.tell(Ping(i, big))
                    await asyncio.sleep(0)
            await accepted.wait()
            asks = [loop.create_task(a.ask(ref, lambda r: Echo("pending", r), timeout=30))
                    for ref in (mute, to_stalled, to_silent)]
            await muted.wait(2)  # the ask to b is there, waiting for an answer that never comes
            stalled_queued = a.node._peers[stalled_key].proto.queued_frames
            assert stalled_queued > 0
            before = len(failures)

            await a.shutdown()
            await b.shutdown()
            results = await asyncio.wait_for(asyncio.gather(*asks, return_exceptions=True), 5)
            gc.collect()
            await asyncio.sleep(0)
            gc.collect()

        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert [type(r) for r in results] == [AskFailed] * 3, results
        assert all(r.reason == "shutdown" for r in results)
        assert all("shut down before the ask got a reply" in str(r) for r in results)
        after = [(f.reason, f.count, f.port) for f in failures[before:]]
        # the silent peer's connect queue (150 Pings and an ask), the stalled peer's write queue
        assert ("closed", 151, silent_port) in after
        assert sum(c for _, c, p in after if p == stalled.port) >= stalled_queued
        assert not loop_errors, loop_errors
        assert not unraisable, unraisable
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], caught
    finally:
        loop.set_exception_handler(old_handler)
        sys.unraisablehook = old_hook
        silent.close()
        await silent.wait_closed()
        await stalled.close()


async def test_frames_queued_when_peer_down_drops_a_connection_are_reported() -> None:
    failures = Failures()
    async with node("a", on_send_failure=failures) as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        sink = a.ref(b.address.with_path("/user/sink"))
        sink.tell(Ping(0))
        await got.wait(1)
        sink.tell(Ping(1))  # the first since the last flush: written at once
        for i in range(2, 102):
            sink.tell(Ping(i))  # queued behind it, to be written when the loop comes round
        a.node.peer_down(*b.node.advertised, "test")
        sink.tell(Ping(102))  # a new connect starts before the old connection's loss is processed
        assert [p.seq for p in await got.wait(3)] == [0, 1, 102]
        await failures.wait_for(lambda fs: sum(f.count for f in fs) >= 100)
        assert [(f.reason, f.count) for f in failures] == [("connection_lost", 100)]
        assert got.items == [Ping(0), Ping(1), Ping(102)]


async def test_asks_pending_at_shutdown_fail_at_once_and_later_asks_are_refused() -> None:
    system = ActorSystem("local")
    mute = system.spawn(Behaviors.ignore(), "mute")
    pending = asyncio.get_running_loop().create_task(system.ask(mute, lambda r: Echo("?", r), timeout=60))
    await asyncio.sleep(0)  # the ask is sent and waiting
    await system.shutdown()
    with pytest.raises(RuntimeError, match="shut down before the ask got a reply"):
        await asyncio.wait_for(pending, 5)
    with pytest.raises(AskFailed, match="failed \\(shutdown\\): actor system 'local' is shut down"):
        await system.ask(mute, lambda r: Echo("?", r))


async def test_peer_down_as_a_connect_completes_leaves_no_connection_behind() -> None:
    # uvloop closes the transport without ever calling connection_lost when a create_connection
    # call is cancelled after connection_made: giving up on a connect must not cancel that call.
    failures = Failures()
    async with node("a", on_send_failure=failures) as a, node("b") as b:
        got = Collector()
        b.spawn(got.behavior(), "sink")
        key = b.node.advertised
        made = asyncio.Event()
        original = a.node.frame_connection_made

        def made_then_down(proto: Any) -> None:
            original(proto)
            if proto.context.outbound and not made.is_set():
                made.set()  # before create_connection has returned to the connect task
                a.node.peer_down(*key, "test: down as the connect completes")

        a.node.frame_connection_made = made_then_down  # type: ignore[method-assign]
        sink = a.ref(b.address.with_path("/user/sink"))
        sink.tell(Ping(1))
        await made.wait()
        assert [(f.reason, f.count) for f in failures] == [("peer_down", 1)]
        async with asyncio.timeout(5):
            while a.node._protocols:  # its connection_lost is what empties it: nothing to await
                await asyncio.sleep(0.005)
        sink.tell(Ping(2))
        assert [p.seq for p in await got.wait(1)] == [2]
        assert len(a.node._protocols) == 1


async def test_losing_the_connection_to_a_peer_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    async with node("a") as a:
        async with node("b") as b:
            got = Collector()
            b.spawn(got.behavior(), "sink")
            a.ref(b.address.with_path("/user/sink")).tell(Ping(1))
            await got.wait(1)
            caplog.clear()
        key = (b.address.host, b.address.port)
        await wait_until(lambda: key not in a.node.connected_peers)
        lost = [r for r in caplog.records if r.getMessage().startswith(f"connection to {key[0]}:{key[1]} lost")]
        assert [r.levelno for r in lost] == [logging.WARNING]
