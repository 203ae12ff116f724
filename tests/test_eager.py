"""Eager handling: an idle actor handles a message inside the callback that delivers it.

A message that reaches a waiting actor from outside every task (an inbound read, a
timer, a ``call_soon`` callback) runs the handler at once, as the actor's task,
instead of waking the task for the next loop iteration.  Whatever the handler does
past that (suspend, raise, return a new behaviour) the task finishes, before any
later message.  These tests pin that down; the rest of the suite runs on it too.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from casty.behavior import Behavior, Behaviors
from casty.context import ActorContext
from casty.eager import EAGER
from casty.ref import ActorRef
from casty.system import ActorSystem

T = TypeVar("T")
WAIT = 5.0

pytestmark = pytest.mark.skipif(not EAGER, reason="this asyncio lacks what eager handling needs")


@dataclass(frozen=True)
class Ping:
    reply_to: ActorRef[Any]


async def in_callback(fn: Callable[[], T]) -> T:
    """``fn()`` run in a loop callback, outside every task; what it returned."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def callback() -> None:
        assert asyncio.current_task() is None
        done.set_result(fn())

    loop.call_soon(callback)
    return await asyncio.wait_for(done, WAIT)


async def idle(system: ActorSystem, ref: ActorRef[Any]) -> None:
    """Return once ``ref``'s actor has handled everything sent so far and waits for mail.

    The reply is told from the actor's task, which then parks in its mailbox before
    the asker's task can run.
    """
    assert await system.ask(ref, Ping, timeout=WAIT) == "pong"


async def idle_cell(system: ActorSystem, ref: ActorRef[Any]) -> tuple[Any, asyncio.Task[None]]:
    """``idle``, then the actor's cell and task."""
    await idle(system, ref)
    cell = system._cells[ref.address.path]  # type: ignore[attr-defined]
    assert cell.task is not None
    return cell, cell.task


def pinging(handle: Callable[[ActorContext[Any], Any], Any]) -> Behavior[Any]:
    """A behaviour that answers Ping with "pong" and hands other messages to ``handle``."""

    async def receive(ctx: ActorContext[Any], msg: Any) -> Behavior[Any]:
        if isinstance(msg, Ping):
            msg.reply_to.tell("pong")
            return Behaviors.same()
        result = await handle(ctx, msg)
        return Behaviors.same() if result is None else result  # type: ignore[no-any-return]

    return Behaviors.receive(receive)


def recording(seen: list[Any]) -> Behavior[Any]:
    """``pinging`` that appends every other message to ``seen``."""

    async def handle(ctx: ActorContext[Any], msg: Any) -> None:
        seen.append(msg)

    return pinging(handle)


def message_frame(body: bytes) -> bytes:
    return (len(body) + 1).to_bytes(4, "big") + b"\x01" + body


async def test_a_message_from_a_callback_is_handled_before_the_callback_returns() -> None:
    seen: list[tuple[Any, bool]] = []

    async with ActorSystem("eager") as system:

        async def handle(ctx: ActorContext[Any], msg: Any) -> None:
            seen.append((msg, asyncio.current_task() is system._cells[ctx.path].task))

        ref = system.spawn(pinging(handle), "a")
        await idle(system, ref)
        after_tell = await in_callback(lambda: (ref.tell("x"), list(seen))[1])
        assert after_tell == [("x", True)]  # handled inside tell, as the actor's own task


async def test_a_tell_from_inside_a_task_is_queued_for_the_actor_task() -> None:
    seen: list[Any] = []
    async with ActorSystem("eager") as system:
        ref = system.spawn(recording(seen), "a")
        await idle(system, ref)
        ref.tell("x")
        assert seen == []  # another task is running: the actor's task takes it later
        await idle(system, ref)
        assert seen == ["x"]


async def test_a_handler_that_suspends_is_finished_by_its_task_before_later_messages() -> None:
    log: list[Any] = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async with ActorSystem("eager") as system:

        async def handle(ctx: ActorContext[Any], msg: Any) -> None:
            log.append(f"{msg}-start")
            if msg == "slow":
                await gate
                log.append(("slow-end", asyncio.current_task() is system._cells[ctx.path].task))

        ref = system.spawn(pinging(handle), "a")
        await idle(system, ref)
        assert await in_callback(lambda: (ref.tell("slow"), ref.tell("b"), list(log))[2]) == [
            "slow-start"
        ]
        ref.tell("c")
        gate.set_result(None)
        await idle(system, ref)
        assert log == ["slow-start", ("slow-end", True), "b-start", "c-start"]


async def test_an_eager_handler_that_raises_stops_an_unsupervised_actor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handled: list[Any] = []

    tried: list[Any] = []

    async def handle(ctx: ActorContext[Any], msg: Any) -> None:
        tried.append(msg)
        if msg == "boom":
            raise ValueError("boom")
        handled.append(msg)

    async with ActorSystem("eager") as system:
        ref = system.spawn(pinging(handle), "a")
        await idle(system, ref)
        cell = system._cells["/user/a"]
        with caplog.at_level(logging.ERROR, logger="casty.actor"):
            assert await in_callback(lambda: (ref.tell("boom"), ref.tell("after"), list(tried))[2]) == [
                "boom"
            ]
            await asyncio.wait_for(asyncio.shield(cell.terminated), WAIT)
    assert handled == []  # the message after the failure was not handled
    failures = [r for r in caplog.records if "failed while handling a str" in r.getMessage()]
    assert len(failures) == 1 and "stopping it" in failures[0].getMessage()
    assert failures[0].exc_info is not None and str(failures[0].exc_info[1]) == "boom"


async def test_an_eager_handler_that_raises_restarts_a_supervised_actor() -> None:
    starts: list[int] = []
    handled: list[Any] = []

    async def setup(ctx: ActorContext[Any]) -> Behavior[Any]:
        starts.append(len(starts))

        async def handle(ctx: ActorContext[Any], msg: Any) -> None:
            if msg == "boom":
                raise ValueError("boom")
            handled.append((msg, len(starts)))

        return pinging(handle)

    async with ActorSystem("eager") as system:
        ref = system.spawn(Behaviors.supervise(Behaviors.setup(setup)), "a")
        await idle(system, ref)
        await in_callback(lambda: (ref.tell("boom"), ref.tell("after")))
        await idle(system, ref)
    assert handled == [("after", 2)]  # handled by the restarted behaviour


async def test_a_behaviour_returned_eagerly_handles_the_next_message() -> None:
    handled: list[tuple[str, Any]] = []

    async def second(ctx: ActorContext[Any], msg: Any) -> Behavior[Any]:
        handled.append(("second", msg))
        if isinstance(msg, Ping):
            msg.reply_to.tell("pong")
        return Behaviors.same()

    async def first(ctx: ActorContext[Any], msg: Any) -> Behavior[Any]:
        handled.append(("first", msg))
        return Behaviors.receive(second)

    async with ActorSystem("eager") as system:
        ref = system.spawn(pinging(first), "a")
        await idle(system, ref)
        assert await in_callback(lambda: (ref.tell(1), ref.tell(2), list(handled))[2]) == [("first", 1)]
        await idle(system, ref)
    assert handled[:2] == [("first", 1), ("second", 2)]


async def test_stopped_returned_eagerly_stops_the_actor_and_drops_what_follows() -> None:
    handled: list[Any] = []
    stopped: list[str] = []

    async def handle(ctx: ActorContext[Any], msg: Any) -> Behavior[Any] | None:
        handled.append(msg)
        return Behaviors.stopped() if msg == "stop" else None

    async def post_stop(ctx: ActorContext[Any]) -> None:
        stopped.append(ctx.path)

    async with ActorSystem("eager") as system:
        ref = system.spawn(Behaviors.with_lifecycle(pinging(handle), post_stop=post_stop), "a")
        await idle(system, ref)
        cell = system._cells["/user/a"]
        assert await in_callback(lambda: (ref.tell("stop"), ref.tell("after"), list(handled))[2]) == ["stop"]
        await asyncio.wait_for(asyncio.shield(cell.terminated), WAIT)
    assert handled == ["stop"] and stopped == ["/user/a"]


async def test_context_variables_set_eagerly_are_the_actor_task_own() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[Any] = []

    async def handle(ctx: ActorContext[Any], msg: Any) -> None:
        seen.append(msg) if msg == "set" else None
        if msg == "set":
            var.set("set by the actor")
        else:
            msg.reply_to.tell(var.get())

    @dataclass(frozen=True)
    class Get:
        reply_to: ActorRef[Any]

    async with ActorSystem("eager") as system:
        ref = system.spawn(pinging(handle), "a")
        await idle(system, ref)
        in_caller = await in_callback(lambda: (ref.tell("set"), var.get(), list(seen))[1:])
        assert in_caller == ("unset", ["set"])  # handled at once; the callback's context untouched
        assert await system.ask(ref, Get, timeout=WAIT) == "set by the actor"
    assert var.get() == "unset"


async def test_a_shutdown_that_cancels_reaches_a_handler_started_eagerly() -> None:
    got: list[str] = []
    waiting = asyncio.Event()

    async def handle(ctx: ActorContext[Any], msg: Any) -> None:
        waiting.set()
        try:
            await asyncio.Event().wait()  # never set: only the shutdown's cancel ends it
        except asyncio.CancelledError:
            got.append("cancelled")
            raise

    system = ActorSystem("eager", stop_timeout=0.05)
    async with system:
        ref = system.spawn(pinging(handle), "a")
        await idle(system, ref)
        assert await in_callback(lambda: (ref.tell("wait"), waiting.is_set())[1])  # started at once
    assert got == ["cancelled"]


async def test_a_handler_returning_another_awaitable_is_awaited_by_the_task() -> None:
    seen: list[Any] = []
    loop = asyncio.get_running_loop()

    def receive(ctx: ActorContext[Any], msg: Any) -> asyncio.Future[Behavior[Any]]:
        reply: asyncio.Future[Behavior[Any]] = loop.create_future()
        if isinstance(msg, Ping):
            msg.reply_to.tell("pong")
        else:
            seen.append(msg)
        reply.set_result(Behaviors.same())
        return reply

    async with ActorSystem("eager") as system:
        ref = system.spawn(Behaviors.receive(receive), "a")
        await idle(system, ref)
        assert await in_callback(lambda: (ref.tell("x"), list(seen))[1]) == ["x"]
        await idle(system, ref)  # the task awaited the future and went back to waiting
        assert seen == ["x"]


class _Owner:
    """Frame protocol owner callbacks that do nothing (the sink gets the messages)."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: None


async def test_a_read_of_several_frames_is_handled_as_a_batch_by_the_task() -> None:
    from casty import _impl

    reading: list[bool] = [False]
    seen: list[tuple[Any, bool]] = []

    async def handle(ctx: ActorContext[Any], msg: Any) -> None:
        seen.append((msg, reading[0]))

    def read(proto: Any, chunk: bytes) -> None:
        reading[0] = True
        try:
            proto.data_received(chunk)
        finally:
            reading[0] = False

    async with ActorSystem("eager") as system:
        ref = system.spawn(pinging(handle), "a")
        proto = _impl.FrameProtocol(_Owner(), read_state=system.local.read_state)
        proto.set_message_sink(ref.tell)
        await idle(system, ref)
        await in_callback(lambda: read(proto, message_frame(b"one")))
        await idle(system, ref)
        await in_callback(lambda: read(proto, message_frame(b"two") + message_frame(b"three")))
        await idle(system, ref)
        await in_callback(lambda: read(proto, message_frame(b"four")))
        await idle(system, ref)
    # One frame in a read: handled inside it.  Several: the task takes them together.
    assert seen == [(b"one", True), (b"two", False), (b"three", False), (b"four", True)]


async def test_a_timeout_in_a_handler_started_eagerly_is_the_handler_own() -> None:
    log: list[str] = []

    async def handle(ctx: ActorContext[Any], msg: Any) -> None:
        log.append("started")
        try:
            async with asyncio.timeout(0):  # its cancel lands before the task resumes us
                await asyncio.sleep(1)
        except TimeoutError:
            log.append("timed out")

    async with ActorSystem("eager") as system:
        ref = system.spawn(pinging(handle), "a")
        await idle(system, ref)
        assert await in_callback(lambda: (ref.tell("t"), list(log))[1]) == ["started"]
        await idle(system, ref)  # still alive, and done with "t"
        assert log == ["started", "timed out"]


async def test_a_cancel_before_the_task_resumes_reaches_the_handler_at_shutdown() -> None:
    log: list[str] = []

    async def handle(ctx: ActorContext[Any], msg: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        finally:
            await asyncio.sleep(0)  # an awaiting cleanup, which close() would not allow
            log.append("cleaned up")

    async with ActorSystem("eager") as system:
        ref = system.spawn(pinging(handle), "a")
        cell, task = await idle_cell(system, ref)
        await in_callback(lambda: (ref.tell("x"), task.cancel()))  # in the same loop turn
        await asyncio.wait_for(asyncio.shield(cell.terminated), WAIT)
    assert log == ["cancelled", "cleaned up"]


async def test_a_cancelled_error_raised_eagerly_stops_the_actor_not_the_sender() -> None:
    async def handle(ctx: ActorContext[Any], msg: Any) -> None:
        raise asyncio.CancelledError

    async with ActorSystem("eager") as system:
        ref = system.spawn(pinging(handle), "a")
        await idle(system, ref)
        cell = system._cells["/user/a"]
        await in_callback(lambda: ref.tell("x"))  # tell itself does not raise
        await asyncio.wait_for(asyncio.shield(cell.terminated), WAIT)  # as from inside its task


async def test_a_plain_function_handler_runs_in_the_actor_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    loop = asyncio.get_running_loop()

    def receive(ctx: ActorContext[Any], msg: Any) -> asyncio.Future[Behavior[Any]]:
        if isinstance(msg, Ping):
            msg.reply_to.tell(var.get())
        else:
            var.set(msg)
        done: asyncio.Future[Behavior[Any]] = loop.create_future()
        done.set_result(Behaviors.same())
        return done

    async with ActorSystem("eager") as system:
        ref = system.spawn(Behaviors.receive(receive), "a")
        assert await system.ask(ref, Ping, timeout=WAIT) == "unset"
        assert await in_callback(lambda: (ref.tell("the actor's"), var.get())[1]) == "unset"
        assert await system.ask(ref, Ping, timeout=WAIT) == "the actor's"


async def test_no_eager_handling_once_the_actor_task_was_cancelled() -> None:
    seen: list[Any] = []
    async with ActorSystem("eager") as system:
        ref = system.spawn(recording(seen), "a")
        cell, task = await idle_cell(system, ref)
        await in_callback(lambda: (task.cancel(), ref.tell("after the cancel")))
        await asyncio.wait_for(asyncio.shield(cell.terminated), WAIT)
    assert seen == []


async def test_a_read_cut_short_by_an_error_leaves_eager_handling_on() -> None:
    from casty import _impl

    reading: list[bool] = [False]
    seen: list[tuple[Any, bool]] = []

    async def handle(ctx: ActorContext[Any], msg: Any) -> None:
        seen.append((msg, reading[0]))

    async with ActorSystem("eager") as system:
        ref = system.spawn(pinging(handle), "a")

        def sink(body: bytes) -> None:
            if body == b"boom":
                raise asyncio.CancelledError  # not an Exception: it leaves the read
            ref.tell(body)

        def read(chunk: bytes) -> None:
            reading[0] = True
            try:
                proto.data_received(chunk)
            except asyncio.CancelledError:
                pass
            finally:
                reading[0] = False

        proto = _impl.FrameProtocol(_Owner(), read_state=system.local.read_state)
        proto.set_message_sink(sink)
        await idle(system, ref)
        await in_callback(lambda: read(message_frame(b"boom") + message_frame(b"lost")))
        proto = _impl.FrameProtocol(_Owner(), read_state=system.local.read_state)
        proto.set_message_sink(sink)
        await in_callback(lambda: read(message_frame(b"next")))
        await idle(system, ref)
    assert seen == [(b"next", True)]
