"""Tells and asks from threads other than the system's loop thread (issue 19, item 5).

Each test really runs code on another thread (``asyncio.to_thread`` or a Thread with
its own loop) and awaits what it does; handlers must run on the loop's thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from casty import ActorAddress, ActorSystem, Behavior, Behaviors, SerializationError
from casty._impl import LocalTransport
from tests.remote_helpers import Echo, Ping, echo_behavior, node

N = 200  # messages per thread: enough to interleave with the loop, few enough to be quick


class Recorder:
    """What an actor received, the thread each message was handled on, and a wait for n."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.threads: set[int] = set()
        self._want = 0
        self._done: asyncio.Future[None] | None = None

    def behavior(self) -> Behavior[Any]:
        async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
            self.threads.add(threading.get_ident())
            self.items.append(msg)
            if self._done is not None and len(self.items) >= self._want and not self._done.done():
                self._done.set_result(None)
            return Behaviors.same()

        return Behaviors.receive(receive)

    async def wait(self, n: int) -> list[Any]:
        if len(self.items) < n:
            self._want = n
            self._done = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self._done, 10)
        return self.items


def thread_echo(threads: set[int]) -> Behavior[Any]:
    """Replies with the text; records the thread each message was handled on."""

    async def receive(ctx: Any, msg: Echo) -> Behavior[Any]:
        threads.add(threading.get_ident())
        msg.reply_to.tell(msg.text)
        return Behaviors.same()

    return Behaviors.receive(receive)


def tell_all(ref: Any, tag: str) -> None:
    for i in range(N):
        ref.tell((tag, i))


async def test_a_local_tell_from_threads_runs_on_the_loop_thread_in_each_threads_order() -> None:
    asyncio.get_running_loop().set_debug(True)  # a loop call from a wrong thread raises
    recorder = Recorder()
    async with ActorSystem("threads") as system:
        ref = system.spawn(recorder.behavior(), "rec")
        await asyncio.gather(asyncio.to_thread(tell_all, ref, "a"), asyncio.to_thread(tell_all, ref, "b"))
        items = await recorder.wait(2 * N)
        assert recorder.threads == {threading.get_ident()}
        for tag in "ab":
            assert [i for t, i in items if t == tag] == list(range(N))


async def test_a_remote_tell_from_a_thread_is_sent_in_order() -> None:
    recorder = Recorder()
    async with node("a") as a, node("b") as b:
        b.spawn(recorder.behavior(), "rec")
        ref = a.ref(b.address.with_path("/user/rec"))

        def tell_pings() -> None:
            for i in range(N):
                ref.tell(Ping(i))

        await asyncio.to_thread(tell_pings)  # raised "no running event loop" before
        items = await recorder.wait(N)
        assert [p.seq for p in items] == list(range(N))


async def test_an_ask_from_another_threads_loop_runs_on_the_systems_loop() -> None:
    threads: set[int] = set()
    async with ActorSystem("threads") as system:
        ref = system.spawn(thread_echo(threads), "echo")
        assert await system.ask(ref, lambda r: Echo("here", r)) == "here"

        def ask_from_thread() -> Any:
            return asyncio.run(system.ask(ref, lambda r: Echo("from a thread", r), timeout=10))

        assert await asyncio.to_thread(ask_from_thread) == "from a thread"
        assert threads == {threading.get_ident()}


async def test_an_ask_from_a_plain_thread_through_run_coroutine_threadsafe() -> None:
    threads: set[int] = set()
    async with ActorSystem("threads") as system:
        ref = system.spawn(thread_echo(threads), "echo")
        loop = system.loop
        assert loop is asyncio.get_running_loop()

        def ask_blocking() -> Any:
            return asyncio.run_coroutine_threadsafe(
                system.ask(ref, lambda r: Echo("blocking", r), timeout=10), loop
            ).result(10)

        assert await asyncio.to_thread(ask_blocking) == "blocking"
        assert threads == {threading.get_ident()}


async def test_spawn_from_another_thread_is_refused_saying_how() -> None:
    async with ActorSystem("threads") as system:
        system.spawn(echo_behavior(), "echo")

        def spawn_in_own_loop() -> None:
            async def go() -> None:
                system.spawn(echo_behavior(), "other")

            asyncio.run(go())

        with pytest.raises(RuntimeError, match=r"cannot spawn /user/other from this thread: actor system "
                           r"'threads' runs on an event loop in another thread.*run_coroutine_threadsafe"):
            await asyncio.to_thread(spawn_in_own_loop)
        assert system.lookup("/user/other") is None


async def test_local_transport_hands_a_threads_deliver_to_the_bound_loop() -> None:
    transport = LocalTransport()
    seen: list[tuple[int, int]] = []
    done = asyncio.get_running_loop().create_future()

    def handler(msg: int) -> None:
        seen.append((msg, threading.get_ident()))
        if msg == N - 1:
            done.set_result(None)

    transport.register("/user/h", handler)
    transport.bind_loop(asyncio.get_running_loop())
    assert transport.loop is asyncio.get_running_loop()
    address = ActorAddress("sys", "/user/h")

    def deliver_all() -> None:
        for i in range(N):
            transport.deliver(address, i)

    await asyncio.to_thread(deliver_all)
    await asyncio.wait_for(done, 10)
    assert seen == [(i, threading.get_ident()) for i in range(N)]


def test_a_tell_from_a_thread_after_the_loop_closed_says_so() -> None:
    transport = LocalTransport()

    async def bind() -> None:
        transport.bind_loop(asyncio.get_running_loop())

    asyncio.run(bind())  # closes the loop
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            transport.deliver(ActorAddress("sys", "/user/h"), "late")
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=deliver)
    thread.start()
    thread.join()
    assert [str(e) for e in errors] == [
        "cannot tell casty://sys/user/h from this thread: the event loop its actor system ran on is closed"
    ]


def test_bind_loop_refuses_what_is_not_a_loop() -> None:
    with pytest.raises(TypeError, match="bind_loop needs an asyncio event loop, got 'loop'"):
        LocalTransport().bind_loop("loop")  # type: ignore[arg-type]


async def test_a_tell_from_a_thread_in_serialize_messages_mode_is_checked_on_the_loop() -> None:
    recorder = Recorder()
    async with ActorSystem("threads", serialize_messages=True) as system:
        ref = system.spawn(recorder.behavior(), "rec")
        await asyncio.to_thread(tell_all, ref, "a")
        items = await recorder.wait(N)
        assert recorder.threads == {threading.get_ident()}
        assert [i for _, i in items] == list(range(N))


async def test_a_thread_telling_what_cannot_be_serialized_in_serialize_messages_mode_gets_the_error() -> None:
    class NotRegistered:
        pass

    async with ActorSystem("threads", serialize_messages=True) as system:
        ref = system.spawn(Recorder().behavior(), "rec")
        with pytest.raises(SerializationError, match=r"cannot send .*NotRegistered to casty://threads/user/rec"):
            await asyncio.to_thread(ref.tell, NotRegistered())
