"""The failure model with real faults: a peer process stopped (SIGSTOP) is declared down for
silence and the asks waiting on it fail at once; resumed (SIGCONT) it comes back with the
same uid; killed and restarted on its port it is a NodeRestarted; this node's own stall
declares no healthy peer down; connects to a closed port back off.

Small intervals (0.05 s heartbeats, 0.3 s failure timeout); every wait is on an event
(node events from a listener, send failures, liveness ticks) and bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from casty import ActorRef, AskFailed, Behaviors, NodeDown, NodeRestarted, NodeUp, SendFailure, Terminated
from casty.transport.backoff import JITTER, backoff_delay
from tests.remote_helpers import Collector, Echo, Events, node

ROOT = Path(__file__).resolve().parents[1]
INTERVAL, TIMEOUT = 0.05, 0.3
HB = {"heartbeat_interval": INTERVAL, "failure_timeout": TIMEOUT}

pytestmark = pytest.mark.slow


class LiveNode:
    """A ``tests.nodes.live_node`` child process."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, uid: int) -> None:
        self.proc, self.port, self.uid = proc, port, uid

    @classmethod
    async def start(
        cls, port: int = 0, timeout: float = TIMEOUT, cookie: str | None = None, hello: str | None = None
    ) -> LiveNode:
        extra = [cookie or "-"] + ([hello] if hello is not None else [])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.nodes.live_node", str(port), str(INTERVAL), str(timeout), *extra,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
        )
        assert proc.stdout is not None
        hello = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        return cls(proc, hello["port"], hello["uid"])

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), 10)



def watcher(system: Any) -> tuple[Collector, ActorRef[Any]]:
    """An actor that watches every ref it is told and collects what else it gets (Terminated)."""
    got = Collector()
    inner = got.behavior()

    async def receive(ctx: Any, msg: Any) -> Any:
        if isinstance(msg, ActorRef):
            ctx.watch(msg)
            return Behaviors.same()
        return await inner.handler(ctx, msg)

    return got, system.spawn(Behaviors.receive(receive), "watcher")


def terminated(items: list[Any]) -> list[str]:
    return [m.ref.address.path for m in items if isinstance(m, Terminated)]


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """For state with no event to await (a watch table filled): bounded polling."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


async def echo(system: Any, port: int, text: str, timeout: float = 10) -> Any:
    ref = system.ref(f"casty://live@127.0.0.1:{port}/user/sink")
    return await system.ask(ref, lambda r: Echo(text, r), timeout=timeout)


async def test_a_stopped_peer_is_down_its_asks_fail_and_it_comes_back_with_its_uid() -> None:
    child = await LiveNode.start()
    events = Events()
    try:
        async with node("a", **HB) as a:
            a.subscribe_nodes(events)
            assert await echo(a, child.port, "hi") == "hi"
            assert await events.next() == NodeUp("127.0.0.1", child.port, child.uid)

            child.signal(signal.SIGSTOP)
            pending = asyncio.ensure_future(echo(a, child.port, "lost", timeout=60))
            assert await events.next() == NodeDown("127.0.0.1", child.port, child.uid, "silent")
            with pytest.raises(AskFailed) as err:
                await asyncio.wait_for(pending, 5)  # at once, not after its 60 s
            assert err.value.reason == "node_down"
            assert f"127.0.0.1:{child.port}" in err.value.detail and "silent" in err.value.detail

            child.signal(signal.SIGCONT)
            assert await echo(a, child.port, "back") == "back"  # a new send reconnects
            assert await events.next() == NodeUp("127.0.0.1", child.port, child.uid)
            assert not any(isinstance(e, NodeRestarted) for e in events.seen)
    finally:
        await child.stop()


async def test_a_stopped_peer_ends_its_watches_once_through_silence_and_is_watchable_after_sigcont() -> None:
    child = await LiveNode.start()
    events = Events()
    try:
        async with node("a", **HB) as a:
            a.subscribe_nodes(events)
            got, w = watcher(a)
            sink = a.ref(f"casty://live@127.0.0.1:{child.port}/user/sink")
            w.tell(sink)
            assert await events.next() == NodeUp("127.0.0.1", child.port, child.uid)
            await wait_until(lambda: a.death_watch.counts()["remote_bound"] == 1)

            child.signal(signal.SIGSTOP)
            pending = asyncio.ensure_future(echo(a, child.port, "lost", timeout=60))
            assert await events.next() == NodeDown("127.0.0.1", child.port, child.uid, "silent")
            assert terminated(await got.wait(1)) == ["/user/sink"]
            with pytest.raises(AskFailed) as err:
                await asyncio.wait_for(pending, 5)  # at once, not after its 60 s
            assert err.value.reason == "node_down" and "silent" in err.value.detail
            assert not any(a.death_watch.counts().values())

            child.signal(signal.SIGCONT)
            w.tell(sink)  # watched again: the watch dials
            assert await events.next() == NodeUp("127.0.0.1", child.port, child.uid)
            await wait_until(lambda: a.death_watch.counts()["remote_bound"] == 1)
            # A ghost's Terminated comes back over the same connection, behind the sink's watch:
            # the resumed node took that watch and the sink lives.
            w.tell(a.ref(f"casty://live@127.0.0.1:{child.port}/user/ghost"))
            assert terminated(await got.wait(2)) == ["/user/sink", "/user/ghost"]
            assert await echo(a, child.port, "back") == "back"
            assert terminated(got.items) == ["/user/sink", "/user/ghost"]  # the first one once
            assert a.death_watch.counts()["remote_out"] == 1
            assert [type(e) for e in events.seen] == [NodeUp, NodeDown, NodeUp]
    finally:
        await child.stop()


class HalfOpenProxy:
    """Forwards connections to a port; when that side closes, the client's side is left open
    and silent (what a connection to a dead host looks like: no FIN ever comes)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> HalfOpenProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers.append(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, close: bool) -> None:
            while data := await src.read(65536):
                dst.write(data)
            if close:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False),
                             return_exceptions=True)


async def test_a_restart_seen_only_through_the_new_incarnations_connection() -> None:
    """The old connection half-open (through a proxy that never passes the close on), the
    peer SIGSTOPped with an ask in flight, then SIGKILLed and restarted on its port: the new
    process dials us with the cluster cookie, and its handshake alone (a new uid from a
    proven address) ends the old incarnation: NodeRestarted and no NodeDown, the watcher
    told once, the ask failed at once, and the new incarnation reached."""
    cookie = "failure-model-cookie"
    child = await LiveNode.start(cookie=cookie)
    restarted: LiveNode | None = None
    events = Events()
    try:
        async with HalfOpenProxy(child.port) as proxy, node(
            "a", cookie=cookie, heartbeat_interval=1.0, failure_timeout=60.0,
            address_map=lambda h, p: (h, proxy.port) if p == child.port else (h, p),
        ) as a:
            a.subscribe_nodes(events)
            key = ("127.0.0.1", child.port)
            got, w = watcher(a)
            w.tell(a.ref(f"casty://live@127.0.0.1:{child.port}/user/sink"))
            assert await events.next() == NodeUp(*key, child.uid)
            await wait_until(lambda: a.death_watch.counts()["remote_bound"] == 1)
            old = a.node.connection_to(key)
            assert old is not None

            child.signal(signal.SIGSTOP)
            pending = asyncio.ensure_future(echo(a, child.port, "lost", timeout=60))
            await asyncio.sleep(0)  # the request goes out on the old connection
            child.signal(signal.SIGKILL)
            await child.proc.wait()
            restarted = await LiveNode.start(child.port, cookie=cookie, hello=f"{a.address}/user/hello")
            assert restarted.uid != child.uid

            assert await events.next() == NodeRestarted(*key, child.uid, restarted.uid)
            assert await events.next() == NodeUp(*key, restarted.uid)
            assert old.proto.closed and a.node.connection_to(key) is not old
            assert terminated(await got.wait(1)) == ["/user/sink"]
            with pytest.raises(AskFailed) as err:
                await asyncio.wait_for(pending, 5)  # at once, not after its 60 s
            assert err.value.reason == "node_down" and "restarted" in err.value.detail
            assert await echo(a, child.port, "new") == "new"  # over the new incarnation's connection
            assert terminated(got.items) == ["/user/sink"]
            assert not any(isinstance(e, NodeDown) for e in events.seen)
            assert not any(a.death_watch.counts().values())
    finally:
        await child.stop()
        if restarted is not None:
            await restarted.stop()


async def test_a_peer_killed_and_restarted_on_its_port_is_a_restart() -> None:
    child = await LiveNode.start()
    restarted: LiveNode | None = None
    events = Events()
    try:
        async with node("a", **HB) as a:
            a.subscribe_nodes(events)
            assert await echo(a, child.port, "hi") == "hi"
            assert await events.next() == NodeUp("127.0.0.1", child.port, child.uid)
            child.signal(signal.SIGKILL)
            down = await events.next()
            assert isinstance(down, NodeDown) and down.uid == child.uid
            assert down.reason in ("closed", "reset")
            restarted = await LiveNode.start(child.port)
            assert restarted.uid != child.uid
            assert await echo(a, child.port, "new") == "new"
            assert await events.next() == NodeRestarted("127.0.0.1", child.port, child.uid, restarted.uid)
            assert await events.next() == NodeUp("127.0.0.1", child.port, restarted.uid)
    finally:
        await child.stop()
        if restarted is not None:
            await restarted.stop()


async def test_our_stall_declares_no_healthy_peer_down() -> None:
    """This node's loop blocked 3 x failure_timeout right after a tick; the peer (whose own
    failure_timeout is long, so it does not drop us meanwhile) kept sending heartbeats."""
    child = await LiveNode.start(timeout=30.0)
    events = Events()
    try:
        async with node("a", **HB) as a:
            a.subscribe_nodes(events)
            assert await echo(a, child.port, "hi") == "hi"
            proto = a.node._peers[("127.0.0.1", child.port)].proto
            liveness = a.node._liveness
            assert liveness is not None
            tick, stalled, after = liveness._tick, asyncio.Event(), asyncio.Event()
            lags: list[float] = []

            def tick_then_stall() -> None:
                tick()
                lags.append(a.node.loop_lag)
                if not stalled.is_set():
                    stalled.set()
                    time.sleep(3 * TIMEOUT)  # the stall under test
                elif len(lags) >= 12:  # two failure timeouts after it
                    after.set()

            liveness._tick = tick_then_stall  # type: ignore[method-assign]
            await asyncio.wait_for(after.wait(), 10)
            assert lags[1] >= 2 * TIMEOUT
            assert [e for e in events.seen if isinstance(e, NodeDown)] == []
            assert a.node._peers[("127.0.0.1", child.port)].proto is proto and not proto.closed
            assert await echo(a, child.port, "still") == "still"
    finally:
        await child.stop()


# -- reconnect backoff ------------------------------------------------------------------


def test_the_backoff_schedule_doubles_to_its_cap_with_jitter() -> None:
    rng = random.Random(16)
    delays = [backoff_delay(n, 0.5, 4.0, rng) for n in range(1, 9)]
    for n, delay in enumerate(delays, 1):
        nominal = min(4.0, 0.5 * 2 ** (n - 1))
        assert nominal * (1 - JITTER) <= delay <= nominal * (1 + JITTER)
    assert len(set(delays)) == len(delays)  # jittered: no two alike
    # blacklist_duration above reconnect_backoff_max: every wait is blacklist_duration (0.21's meaning)
    assert all(7.5 <= backoff_delay(n, 10.0, 4.0, rng) <= 12.5 for n in range(1, 5))
    assert backoff_delay(10_000, 1.0, 30.0, rng) <= 30 * (1 + JITTER)
    with pytest.raises(ValueError, match="failures counts from 1, got 0"):
        backoff_delay(0, 1.0, 30.0, rng)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_connects_to_a_closed_port_back_off_longer_each_time() -> None:
    port = closed_port()
    key = ("127.0.0.1", port)
    failed: asyncio.Queue[float] = asyncio.Queue()
    reasons: list[str] = []

    def on_failure(f: SendFailure) -> None:
        reasons.append(f.reason)
        if f.reason == "connect_failed":
            failed.put_nowait(time.monotonic())

    base = 0.04
    async with node("a", on_send_failure=on_failure, blacklist_duration=base, reconnect_backoff_max=10.0) as a:
        times = []
        async with asyncio.timeout(20):
            for _ in range(5):
                a.node.send_frame(*key, 0x30, b"")
                times.append(await failed.get())
                while a.node.is_blacklisted(key):  # sends now are dropped as "blacklisted"
                    assert not a.node.send_frame(*key, 0x30, b"")
                    await asyncio.sleep(base / 4)
        gaps = [t2 - t1 for t1, t2 in itertools.pairwise(times)]
        for n, gap in enumerate(gaps, 1):  # timers never fire early: lower bounds only
            assert gap >= base * 2 ** (n - 1) * (1 - JITTER) - 0.002, gaps
        assert a.node._failures[key][0] == 5
        assert "blacklisted" in reasons
        a.remote.clear_blacklist(*key)  # ClearNodeBlacklist: at once, and the count starts over
        assert not a.node.is_blacklisted(key) and key not in a.node._failures


async def test_a_successful_handshake_resets_the_backoff() -> None:
    async with node("a", blacklist_duration=0.01) as a, node("b") as b:
        key = ("127.0.0.1", b.node.port)
        a.node._failures[key] = (6, time.monotonic() + 60)
        a.node.send_frame(*key, 0x30, b"")
        async with asyncio.timeout(10):
            while not a.node.is_connected(key):
                await asyncio.sleep(0.01)
        assert key not in a.node._failures
