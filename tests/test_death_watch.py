"""Death watch (casty.death_watch): ctx.watch / ctx.unwatch and Terminated, local and remote.

Remote watches run between RemoteActorSystems in this process over loopback; the
frame layout has golden vectors; a peer's forged frames and bad bodies are checked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casty import ActorRef, ActorSystem, Behaviors, RemoteActorSystem, Terminated
from casty.death_watch import MAX_BAD_WATCH_FRAMES, RemoteWatch
from casty.transport.config import TcpTransportConfig
from casty.transport.frame_codec import encode_frame
from casty.transport.node import TcpNode
from casty.transport.watch_codec import MAX_WATCH_BODY, WatchFrameError, decode_watch, encode_watch
from casty.wire import FRAME_WATCH, MAX_WATCH_PATH, WATCH_TAG_TERMINATED, WATCH_TAG_UNWATCH, WATCH_TAG_WATCH
from tests.remote_helpers import Collector, Ping, node

ROOT = Path(__file__).resolve().parents[1]


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """For state with no event to await (a table emptied by a peer's frame): bounded polling."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@dataclass(frozen=True)
class Watch:
    ref: ActorRef[Any]


@dataclass(frozen=True)
class Unwatch:
    ref: ActorRef[Any]


@dataclass(frozen=True)
class HoldThenUnwatch:
    release: asyncio.Event
    ref: ActorRef[Any]


class Watcher:
    """An actor that watches what it is told to and records every Terminated and marker."""

    def __init__(self) -> None:
        self.got = Collector()

    def behavior(self) -> Any:
        inner = self.got.behavior()

        async def receive(ctx: Any, msg: Any) -> Any:
            if isinstance(msg, Watch):
                ctx.watch(msg.ref)
            elif isinstance(msg, Unwatch):
                ctx.unwatch(msg.ref)
            elif isinstance(msg, HoldThenUnwatch):
                await msg.release.wait()
                ctx.unwatch(msg.ref)
            else:
                return await inner.handler(ctx, msg)
            return Behaviors.same()

        return Behaviors.receive(receive)


def terminated(items: list[Any]) -> list[Any]:
    return [m.ref for m in items if isinstance(m, Terminated)]


def no_entries(system: ActorSystem) -> bool:
    return not any(system.death_watch.counts().values())


# -- local -------------------------------------------------------------------------------


async def test_local_watch_gets_one_terminated_after_the_stop() -> None:
    async with ActorSystem("w") as system:
        target = system.spawn(Behaviors.ignore(), "target")
        w = Watcher()
        ref = system.spawn(w.behavior(), "watcher")
        ref.tell(Watch(target))
        ref.tell(Watch(target))  # twice is one watch
        ref.tell(Watch(ref))  # itself: ignored
        ref.tell("marker")
        await w.got.wait(1)
        await system.stop(target)
        ref.tell("after")
        items = await w.got.wait(3)
        assert items == ["marker", Terminated(target), "after"]
        assert items[1].ref is target
        assert no_entries(system)


async def test_watching_an_actor_that_does_not_exist_terminates_at_once() -> None:
    async with ActorSystem("w") as system:
        w = Watcher()
        ref = system.spawn(w.behavior(), "watcher")
        ghost = system.make_ref(system.address_of("/user/nobody"))
        ref.tell(Watch(ghost))
        assert terminated(await w.got.wait(1)) == [ghost]
        assert no_entries(system)


async def test_unwatch_before_the_stop_means_no_terminated() -> None:
    async with ActorSystem("w") as system:
        target = system.spawn(Behaviors.ignore(), "target")
        w = Watcher()
        ref = system.spawn(w.behavior(), "watcher")
        ref.tell(Watch(target))
        ref.tell(Unwatch(target))
        ref.tell("unwatched")
        await w.got.wait(1)
        assert no_entries(system)
        await system.stop(target)
        ref.tell("after")
        assert await w.got.wait(2) == ["unwatched", "after"]


async def test_unwatch_takes_back_a_terminated_already_queued() -> None:
    async with ActorSystem("w") as system:
        target = system.spawn(Behaviors.ignore(), "target")
        w = Watcher()
        ref = system.spawn(w.behavior(), "watcher")
        release = asyncio.Event()
        ref.tell(Watch(target))
        ref.tell(HoldThenUnwatch(release, target))
        await system.stop(target)  # its Terminated waits in the busy watcher's mailbox
        cell = system._cells["/user/watcher"]
        assert Terminated(target) in cell.mailbox.queue
        release.set()
        ref.tell("after")
        assert await w.got.wait(1) == ["after"]


async def test_a_stopped_watchers_watches_end_with_it() -> None:
    async with ActorSystem("w") as system:
        targets = [system.spawn(Behaviors.ignore(), f"t{n}") for n in range(3)]
        w = Watcher()
        ref = system.spawn(w.behavior(), "watcher")
        for t in targets:
            ref.tell(Watch(t))
        ref.tell("watching")
        await w.got.wait(1)
        assert system.death_watch.counts() == {"watching": 3, "local": 3}
        await system.stop(ref)
        assert no_entries(system)
        for t in targets:
            await system.stop(t)  # nothing to tell, nothing raised
        assert no_entries(system)


async def test_a_child_watched_by_its_parent() -> None:
    async with ActorSystem("w") as system:
        got = asyncio.get_running_loop().create_future()

        async def parent(ctx: Any, msg: Any) -> Any:
            if isinstance(msg, Terminated):
                got.set_result(msg.ref)
            else:
                child = ctx.spawn(Behaviors.ignore(), "child")
                ctx.watch(child)
                ctx.stop(child)
            return Behaviors.same()

        system.spawn(Behaviors.receive(parent), "parent").tell("go")
        ref = await asyncio.wait_for(got, 10)
        assert ref.address.path == "/user/parent/child"


async def test_watching_what_is_not_a_ref_of_this_system_is_refused() -> None:
    async with ActorSystem("w") as system, ActorSystem("other") as other:
        errors: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

        async def receive(ctx: Any, msg: Any) -> Any:
            try:
                ctx.watch(msg)
            except ValueError as exc:
                errors.set_result(exc)
            return Behaviors.same()

        foreign = other.spawn(Behaviors.ignore(), "x")
        system.spawn(Behaviors.receive(receive), "w").tell(foreign)
        assert "not an actor of actor system 'w'" in str(await asyncio.wait_for(errors, 10))


# -- the wire format ---------------------------------------------------------------------


GOLDEN = [
    (WATCH_TAG_WATCH, "/user/b", "/user/a", b"\x01\x00\x07/user/b\x00\x07/user/a"),
    (WATCH_TAG_UNWATCH, "/user/b", "/user/a", b"\x02\x00\x07/user/b\x00\x07/user/a"),
    (WATCH_TAG_TERMINATED, "/user/b/c", "/u", b"\x03\x00\x09/user/b/c\x00\x02/u"),
    (WATCH_TAG_WATCH, "/user/é", "/x", b"\x01\x00\x08/user/\xc3\xa9\x00\x02/x"),
]


@pytest.mark.parametrize(("tag", "watched", "watcher", "body"), GOLDEN)
def test_golden_vectors(tag: int, watched: str, watcher: str, body: bytes) -> None:
    assert encode_watch(tag, watched, watcher) == body
    assert decode_watch(body) == (tag, watched, watcher)
    assert decode_watch(memoryview(body)) == (tag, watched, watcher)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty"),
        (b"\x09\x00\x02/a\x00\x02/b", "unknown watch frame tag 9"),
        (b"\x01\x00", "ends before the length"),
        (b"\x01\x00\x00\x00\x02/b", "length 0"),
        (b"\x01\x00\x09/a\x00\x02/b", "runs past"),
        (b"\x01\x00\x02/a\x00\x02/b!", "1 bytes after"),
        (b"\x01\x00\x02a/\x00\x02/b", "not an actor path"),
        (b"\x01\x00\x03/\x0a\x00\x00\x02/b", "not an actor path"),
        (b"\x01\x00\x02/\xff\x00\x02/b", "not UTF-8"),
        (b"\x01" + (MAX_WATCH_PATH + 1).to_bytes(2, "big") + b"/" * (MAX_WATCH_PATH + 1), "not in 1..1024"),
        (b"\x01" + b"\x00" * MAX_WATCH_BODY, "longer than"),
    ],
)
def test_bad_bodies_are_refused_saying_why(body: bytes, why: str) -> None:
    with pytest.raises(WatchFrameError, match=why):
        decode_watch(body)


def test_encode_refuses_what_cannot_travel() -> None:
    with pytest.raises(ValueError, match="tag must be one of"):
        encode_watch(7, "/a", "/b")
    with pytest.raises(ValueError, match="watched path 'a b'"):
        encode_watch(WATCH_TAG_WATCH, "a b", "/b")
    with pytest.raises(ValueError, match="watcher path"):
        encode_watch(WATCH_TAG_WATCH, "/a", "/" + "x" * MAX_WATCH_PATH)


class _Proto:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.peername = ("127.0.0.1", 1)

    def send_control(self, frame: bytes) -> bool:
        self.sent.append(frame)
        return not self.closed


class _Conn:
    def __init__(self) -> None:
        self.proto = _Proto()
        self.caps = frozenset({"watch"})


class _Node:
    """What RemoteWatch needs of a TcpNode, recording misbehaving calls."""

    def __init__(self) -> None:
        self.misbehaved: list[str] = []

    def add_feature(self, *args: Any) -> None: ...
    def add_connect_listener(self, fn: Any) -> None: ...
    def add_close_listener(self, fn: Any) -> None: ...
    def add_dial_failure_listener(self, fn: Any) -> None: ...
    def add_node_listener(self, fn: Any) -> None: ...

    def misbehaving(self, proto: Any, why: str) -> None:
        self.misbehaved.append(why)
        proto.closed = True


_fuzz_system = ActorSystem("fuzz")
_fuzz_node = _Node()
_fuzz_watch = RemoteWatch(_fuzz_system.death_watch, _fuzz_node, max_remote_watches=4)  # type: ignore[arg-type]


@given(st.one_of(
    st.binary(max_size=64),
    st.builds(lambda tag, a, b: encode_watch(tag, a, b), st.sampled_from([1, 2, 3]),
              st.from_regex(r"\A/[a-z/]{0,12}\Z"), st.from_regex(r"\A/[a-z/]{0,12}\Z")),
    st.builds(lambda t, raw: bytes([t]) + raw, st.integers(0, 255), st.binary(max_size=40)),
))
def test_fuzz_the_watch_handler_never_raises(body: bytes) -> None:
    conn = _Conn()
    for _ in range(MAX_BAD_WATCH_FRAMES + 1):
        _fuzz_watch.on_frame(conn, FRAME_WATCH, body)  # type: ignore[arg-type]
    # Nothing lives in this system: a watch is answered terminated, nothing is held.
    assert _fuzz_watch.counts()["remote_in"] == 0
    _fuzz_watch._closed(conn)  # type: ignore[arg-type]
    assert not any(_fuzz_watch.counts().values())


async def test_bad_watch_frames_close_the_connection_after_a_few() -> None:
    node_ = _Node()
    async with ActorSystem("x") as system:
        remote = RemoteWatch(system.death_watch, node_)  # type: ignore[arg-type]
        conn = _Conn()
        for _ in range(MAX_BAD_WATCH_FRAMES):
            assert not node_.misbehaved
            remote.on_frame(conn, FRAME_WATCH, b"\x01junk")  # type: ignore[arg-type]
        assert len(node_.misbehaved) == 1
        assert node_.misbehaved[0].startswith(f"{MAX_BAD_WATCH_FRAMES} bad watch frames")


# -- remote --------------------------------------------------------------------------------


async def remote_watcher(a: RemoteActorSystem) -> tuple[Watcher, ActorRef[Any]]:
    w = Watcher()
    return w, a.spawn(w.behavior(), "watcher")


async def test_remote_watch_gets_terminated_when_the_actor_stops() -> None:
    async with node("a") as a, node("b") as b:
        target = b.spawn(Behaviors.ignore(), "target")
        w, ref = await remote_watcher(a)
        remote = a.ref(b.address.with_path("/user/target"))
        ref.tell(Watch(remote))
        await wait_until(lambda: b.remote_watch.counts()["remote_in"] == 1)
        assert a.death_watch.counts()["remote_out"] == 1
        await b.stop(target)
        assert terminated(await w.got.wait(1)) == [remote]
        assert no_entries(a)
        assert no_entries(b)


async def test_remote_watch_of_nothing_terminates_and_unwatch_is_forgotten() -> None:
    async with node("a") as a, node("b") as b:
        b.spawn(Behaviors.ignore(), "target")
        w, ref = await remote_watcher(a)
        ghost = a.ref(b.address.with_path("/user/ghost"))
        system_actor = a.ref(b.address.with_path("/system/tcp"))
        ref.tell(Watch(ghost))
        ref.tell(Watch(system_actor))  # not watchable by peers: answered at once
        assert sorted(map(str, terminated(await w.got.wait(2)))) == sorted(map(str, [ghost, system_actor]))
        target = a.ref(b.address.with_path("/user/target"))
        ref.tell(Watch(target))
        await wait_until(lambda: b.remote_watch.counts()["remote_in"] == 1)
        ref.tell(Unwatch(target))
        await wait_until(lambda: no_entries(b))
        assert no_entries(a)


async def test_losing_the_connection_terminates_and_the_watched_side_forgets() -> None:
    async with node("a") as a, node("b") as b:
        b.spawn(Behaviors.ignore(), "target")
        w, ref = await remote_watcher(a)
        remote = a.ref(b.address.with_path("/user/target"))
        ref.tell(Watch(remote))
        await wait_until(lambda: b.remote_watch.counts()["remote_in"] == 1)
        conn = a.node.connection_to(b.node.advertised)
        assert conn is not None
        conn.proto.abort()
        assert terminated(await w.got.wait(1)) == [remote]
        await wait_until(lambda: no_entries(b))
        assert no_entries(a)


async def test_a_node_shut_down_terminates_its_watchers() -> None:
    async with node("a") as a:
        b = node("b")
        await b.start()
        try:
            b.spawn(Behaviors.ignore(), "target")
            w, ref = await remote_watcher(a)
            remote = a.ref(b.address.with_path("/user/target"))
            ref.tell(Watch(remote))
            await wait_until(lambda: b.remote_watch.counts()["remote_in"] == 1)
        finally:
            await b.shutdown()
        assert terminated(await w.got.wait(1)) == [remote]
        assert no_entries(a)


async def test_a_node_that_cannot_be_reached_terminates_the_watch() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with node("a", connect_timeout=1.0) as a:
        w, ref = await remote_watcher(a)
        remote = a.ref(f"casty://b@127.0.0.1:{port}/user/target")
        ref.tell(Watch(remote))
        assert terminated(await w.got.wait(1)) == [remote]
        assert no_entries(a)


async def test_a_peer_without_the_watch_cap_ends_watches_only_by_disconnecting() -> None:
    class NoMessages:
        async def on_message(self, data: bytes) -> None:
            pass

    peer = TcpNode(TcpTransportConfig("127.0.0.1", 0), NoMessages())  # lists no caps
    await peer.start()
    try:
        async with node("a") as a:
            w, ref = await remote_watcher(a)
            remote = a.ref(f"casty://b@127.0.0.1:{peer.port}/user/target")
            ref.tell(Watch(remote))
            await wait_until(lambda: a.node.connection_to(("127.0.0.1", peer.port)) is not None)
            await wait_until(lambda: a.death_watch.counts()["remote_bound"] == 1)
            assert sum(p.frames_received for p in peer._protocols) == 1  # our handshake, no watch frame
            await peer.close()
            assert terminated(await w.got.wait(1)) == [remote]
            assert no_entries(a)
    finally:
        await peer.close()


async def test_watches_beyond_max_remote_watches_are_answered_at_once() -> None:
    async with node("a") as a, node("b", max_remote_watches=1) as b:
        for name in ("t1", "t2"):
            b.spawn(Behaviors.ignore(), name)
        w, ref = await remote_watcher(a)
        t1, t2 = (a.ref(b.address.with_path(f"/user/{n}")) for n in ("t1", "t2"))
        ref.tell(Watch(t1))
        await wait_until(lambda: b.remote_watch.counts()["remote_in"] == 1)
        ref.tell(Watch(t2))
        assert terminated(await w.got.wait(1)) == [t2]
        assert b.remote_watch.counts()["remote_in"] == 1
    with pytest.raises(ValueError, match="max_remote_watches"):
        node("c", max_remote_watches=-1)


async def test_a_forged_terminated_from_another_node_or_inside_a_message_does_nothing() -> None:
    async with node("a") as a, node("b") as b, node("c") as c:
        b.spawn(Behaviors.ignore(), "target")
        w, ref = await remote_watcher(a)
        remote = a.ref(b.address.with_path("/user/target"))
        ref.tell(Watch(remote))
        await wait_until(lambda: b.remote_watch.counts()["remote_in"] == 1)
        forged = encode_watch(WATCH_TAG_TERMINATED, "/user/target", "/user/watcher")
        # c, a third node, sends the terminated on its own connection to a, then a user
        # message that arrives after it; and the same bytes as user payloads to the watcher.
        sink = Collector()
        a.spawn(sink.behavior(), "sink")
        c.ref(a.address.with_path("/user/sink")).tell(Ping(0))
        await sink.wait(1)
        conn = c.node.connection_to(a.node.advertised)
        assert conn is not None and "watch" in conn.caps
        conn.proto.send_control(encode_frame(FRAME_WATCH, forged))
        c.ref(a.address.with_path("/user/sink")).tell(Ping(1))
        await sink.wait(2)
        c.ref(a.address.with_path("/user/watcher")).tell(forged)
        c.ref(a.address.with_path("/user/watcher")).tell(encode_frame(FRAME_WATCH, forged))
        # b, the watched node, sends it in a user message on the connection the watch came on
        b.ref(a.address.with_path("/user/watcher")).tell(forged)
        items = await w.got.wait(3)
        assert terminated(items) == []
        assert a.death_watch.counts()["remote_out"] == 1
        assert b.remote_watch.counts()["remote_in"] == 1


# -- real faults: a watched node in a child process ----------------------------------------


async def watched_process(port: int = 0) -> tuple[asyncio.subprocess.Process, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.nodes.watched_node", str(port),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    return proc, int(line)


async def end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


async def test_sigkill_of_the_watched_node_terminates_and_its_restart_is_watchable() -> None:
    proc, port = await watched_process()
    try:
        async with node("a") as a:
            w, ref = await remote_watcher(a)
            target = a.ref(f"casty://watched@127.0.0.1:{port}/user/target")
            ref.tell(Watch(target))
            await wait_until(lambda: a.death_watch.counts()["remote_bound"] == 1)
            proc.send_signal(signal.SIGKILL)
            assert terminated(await w.got.wait(1)) == [target]
            assert no_entries(a)
            await proc.wait()
            # The same port, a new incarnation: watched again, and its actor lives.
            proc, again = await watched_process(port)
            assert again == port
            a.remote.clear_blacklist("127.0.0.1", port)
            ref.tell(Watch(target))
            await wait_until(lambda: a.death_watch.counts()["remote_bound"] == 1)
            ref.tell(Watch(a.ref(f"casty://watched@127.0.0.1:{port}/user/ghost")))
            assert len(terminated(await w.got.wait(2))) == 2  # the ghost only
            assert a.death_watch.counts()["remote_out"] == 1
            proc.send_signal(signal.SIGKILL)
            assert terminated(await w.got.wait(3))[2:] == [target]
            assert no_entries(a)
    finally:
        await end(proc)
