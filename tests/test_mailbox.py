"""Mailbox twins: what the LocalTransport delivers into, and how it wakes an idle actor."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import types
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from casty import eager
from casty.address import ActorAddress


async def test_put_appends_in_order_and_wakes_the_waiter_once(impl: types.SimpleNamespace) -> None:
    box = impl.Mailbox()
    loop = asyncio.get_running_loop()
    waiter = box.wait(loop)
    assert not waiter.done()
    box.put(1)
    assert waiter.done() and list(box.queue) == [1]
    box(2)  # calling it is putting
    assert list(box.queue) == [1, 2]
    again = box.wait(loop)
    box.wake()
    assert again.done() and list(box.queue) == [1, 2]  # woken without a message
    box.wake()  # nothing waits: no effect


async def test_a_settled_or_forgotten_waiter_is_left_alone(impl: types.SimpleNamespace) -> None:
    box = impl.Mailbox()
    loop = asyncio.get_running_loop()
    cancelled = box.wait(loop)
    cancelled.cancel()
    box.put("a")  # must not raise on the cancelled future
    forgotten = box.wait(loop)
    box.forget_waiter()
    box.put("b")
    assert cancelled.cancelled() and not forgotten.done()
    assert list(box.queue) == ["a", "b"]


async def _in_callback(fn: Any) -> Any:
    """``fn()`` run in a loop callback, outside every task; what it returned."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(lambda: done.set_result(fn()))
    return await done


async def test_an_armed_mailbox_handles_eagerly_only_outside_every_task(
    impl: types.SimpleNamespace,
) -> None:
    if not eager.EAGER:
        pytest.skip("this asyncio lacks what eager handling needs")
    loop = asyncio.get_running_loop()
    parked = loop.create_future()
    task = loop.create_task(asyncio.wait([parked]))  # stands for the actor's task
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outside")
    context = contextvars.copy_context()
    context.run(var.set, "the task's")
    same, handled, taken = object(), [], []

    async def handler(actor_context: Any, msg: Any) -> Any:
        handled.append((actor_context, msg, asyncio.current_task() is task, var.get()))
        if msg == "raise":
            raise ValueError(msg)
        if msg == "await":
            await asyncio.sleep(0)
        return "other" if msg == "other" else same

    box = impl.Mailbox()
    transport = impl.LocalTransport()
    transport.register("/user/a", box)
    assert box.arm_eager(task, loop, context, "ctx", same, lambda *a: taken.append(a)) is True
    box.handler = handler
    transport.deliver_path("/user/a", "busy")  # nothing waits: queued
    waiter = box.wait(loop)
    for msg in ("same", "other", "raise", "await"):
        await _in_callback(lambda msg=msg: transport.deliver_path("/user/a", msg))
    assert handled == [("ctx", m, True, "the task's") for m in ("same", "other", "raise", "await")]
    assert asyncio.current_task() is not task and var.get() == "outside"
    assert [(msg, type(outcome)) for msg, outcome in taken] == [
        ("other", eager.Returned), ("raise", eager.Raised), ("await", eager.Suspended)
    ]
    assert taken[0][1].behavior == "other" and isinstance(taken[1][1].exc, ValueError)
    assert asyncio.iscoroutine(taken[2][1].coro) and taken[2][1].yielded is None  # sleep(0) yields None
    taken[2][1].coro.close()
    assert list(box.queue) == ["busy"] and not waiter.done()  # take_over wakes, not the box

    box.handler = lambda actor_context, msg: loop.create_future()  # an awaitable, no coroutine
    await _in_callback(lambda: box.put("future"))
    assert taken[3][0] == "future" and type(taken[3][1]) is eager.NotACoroutine
    assert isinstance(taken[3][1].awaitable, asyncio.Future)

    box.put("from a task")  # declined: queued, and the waiter woken
    assert list(box.queue) == ["busy", "from a task"] and waiter.done()
    box.disarm_eager()
    again = box.wait(loop)
    await _in_callback(lambda: box.put("disarmed"))
    assert again.done() and list(box.queue) == ["busy", "from a task", "disarmed"]
    assert len(handled) == 4
    parked.set_result(None)
    await task


async def test_run_step_and_begin_name_each_outcome() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outside")
    context = contextvars.copy_context()

    async def returns() -> str:
        var.set("set inside")
        return "value"

    async def suspends() -> None:
        await asyncio.sleep(0)

    async def raises() -> None:
        raise KeyError("k")

    step: Any = eager.run_step(returns(), context)
    assert type(step) is eager.Returned and step.behavior == "value"
    assert context[var] == "set inside" and var.get() == "outside"
    coro = suspends()
    step = eager.run_step(coro, context)
    assert type(step) is eager.Suspended and step.coro is coro and step.yielded is None
    coro.close()
    with pytest.raises(KeyError):
        eager.run_step(raises(), context)

    async def handler(actor_context: Any, msg: Any) -> Any:
        if msg == "raise":
            raise KeyError(msg)
        return actor_context

    returned: Any = eager.begin(handler, "ctx", "hi", context)
    assert type(returned) is eager.Returned and returned.behavior == "ctx"
    raised: Any = eager.begin(handler, "ctx", "raise", context)
    assert type(raised) is eager.Raised and isinstance(raised.exc, KeyError)
    future = asyncio.get_running_loop().create_future()
    other: Any = eager.begin(lambda actor_context, msg: future, "ctx", "x", context)
    assert type(other) is eager.NotACoroutine and other.awaitable is future


async def test_a_read_state_with_more_set_leaves_messages_to_the_task(impl: types.SimpleNamespace) -> None:
    async with stand_in_task() as (loop, task):
        same, handled, handler = recording_handler()
        read = impl.ReadState()
        assert read.more is False
        box = impl.Mailbox(byte_capacity=100)
        assert box.arm_eager(task, loop, contextvars.copy_context(), "ctx", same, lambda *a: None, read)
        box.handler = handler
        read.more = True  # as a frame splitter sets it: more frames of the read follow
        waiter = box.wait(loop)
        await _in_callback(lambda: box.put("batched"))
        assert handled == [] and list(box.queue) == ["batched"] and waiter.done()
        waiter = box.wait(loop)
        assert await _in_callback(lambda: box.put_sized("sized", 10)) is False
        assert handled == [] and list(box.queue) == ["batched", "sized"] and waiter.done()
        assert box.queued_bytes == 10
        box.queue.clear()
        read.more = False  # the read's last frame
        waiter = box.wait(loop)
        await _in_callback(lambda: box.put("eager"))
        assert handled == ["eager"] and not box.queue and not waiter.done()


def test_only_a_read_state_of_the_same_twin_is_taken(impl: types.SimpleNamespace) -> None:
    box = impl.Mailbox()
    with pytest.raises(TypeError, match=r"read_state must be a casty\..*ReadState, got object"):
        box.arm_eager(None, None, None, None, None, None, object())
    with pytest.raises(TypeError, match=r"read_state must be a casty\..*ReadState, got dict"):
        impl.FrameProtocol(object(), read_state={"more": True})
    impl.FrameProtocol(object(), read_state=impl.ReadState())


class _Owner:
    """Frame protocol owner callbacks that do nothing (the sink gets the messages)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def test_the_frame_splitter_sets_more_while_frames_of_its_read_follow(impl: types.SimpleNamespace) -> None:
    def frame(body: bytes) -> bytes:
        return (len(body) + 1).to_bytes(4, "big") + b"\x01" + body

    read = impl.ReadState()
    seen: list[tuple[bytes, bool]] = []
    proto = impl.FrameProtocol(_Owner(), read_state=read)
    proto.set_message_sink(lambda body: seen.append((body, read.more)))
    proto.data_received(frame(b"one"))
    assert seen == [(b"one", False)] and read.more is False
    proto.data_received(frame(b"two") + frame(b"three") + frame(b"four")[:3])
    assert seen[1:] == [(b"two", True), (b"three", True)] and read.more is False
    proto.data_received(frame(b"four")[3:])  # completes a frame split across reads
    assert seen[3:] == [(b"four", False)] and read.more is False
    other = impl.ReadState()
    impl.FrameProtocol(_Owner(), read_state=other).data_received(frame(b"x") + frame(b"y"))
    assert seen[4:] == [] and other.more is False  # each protocol sets the state it was given


def test_a_node_hands_its_local_transports_read_state_to_each_connection() -> None:
    from casty import _impl
    from casty.serialization import MsgpackSerializer
    from casty.transport.config import TcpTransportConfig
    from casty.transport.node import TcpNode

    local = _impl.LocalTransport()
    assert type(local.read_state) is _impl.ReadState and local.read_state.more is False
    handler = _impl.InboundMessageHandler(local=local, serializer=MsgpackSerializer(), system_name="s")
    assert handler.read_state is local.read_state
    node = TcpNode(TcpTransportConfig("127.0.0.1", 0), handler)  # wired by hand, as the seed page does
    proto = node._new_protocol(outbound=False, dial_key=None)
    seen: list[bool] = []
    proto.set_message_sink(lambda body: seen.append(local.read_state.more))
    frame = (4).to_bytes(4, "big") + b"\x01abc"
    proto.data_received(frame + frame)
    assert seen == [True, False] and local.read_state.more is False


async def test_an_actor_over_the_other_twins_transport_still_runs(impl: types.SimpleNamespace) -> None:
    from casty.behavior import Behaviors
    from casty.system import ActorSystem

    async def echo(ctx: Any, msg: Any) -> Any:
        msg.tell("pong")
        return Behaviors.same()

    async with ActorSystem("mixed", local_transport=impl.LocalTransport()) as system:
        ref = system.spawn(Behaviors.receive(echo), "a")
        assert await system.ask(ref, lambda reply_to: reply_to, timeout=5.0) == "pong"


async def test_the_local_transport_delivers_into_a_mailbox(impl: types.SimpleNamespace) -> None:
    transport = impl.LocalTransport()
    box = impl.Mailbox()
    transport.register("/user/a", box)
    waiter = box.wait(asyncio.get_running_loop())
    transport.deliver(ActorAddress("s", "/user/a"), "one")
    transport.deliver_path("/user/a", "two")
    assert waiter.done() and list(box.queue) == ["one", "two"]
    transport.deliver(ActorAddress("s", "/user/b"), "early")  # buffered until registered
    late = impl.Mailbox()
    transport.register("/user/b", late)
    assert list(late.queue) == ["early"]


async def test_actors_run_on_the_chosen_mailbox() -> None:
    from casty import _impl
    from casty.behavior import Behaviors
    from casty.system import ActorSystem

    async def echo(ctx: object, msg: tuple[str, object]) -> object:
        msg[1].tell(msg[0])  # type: ignore[attr-defined]
        return Behaviors.same()

    async with ActorSystem("boxes") as system:
        ref = system.spawn(Behaviors.receive(echo), "echo")
        assert type(system._cells["/user/echo"].mailbox) is _impl.Mailbox
        assert [await system.ask(ref, lambda r, i=i: (i, r)) for i in range(3)] == [0, 1, 2]


# ---------------------------------------------------------------- capacity and on_space


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_bad_capacity_is_named(impl: types.SimpleNamespace, bad: object) -> None:
    with pytest.raises(ValueError, match="capacity"):
        impl.Mailbox(bad)


def test_capacity_bounds_offer_but_never_put(impl: types.SimpleNamespace) -> None:
    assert impl.Mailbox().capacity == 0
    assert impl.Mailbox(2**70).capacity == sys.maxsize  # no queue can reach more
    box = impl.Mailbox(capacity=2)
    assert box.capacity == 2 and not box.full
    assert box.offer("a") and box.offer("b")
    assert box.full and not box.offer("refused")
    box.put("c")  # a peer's message: queued over capacity
    assert list(box.queue) == ["a", "b", "c"] and box.full
    unbounded = impl.Mailbox()
    assert all(unbounded.offer(i) for i in range(1000)) and not unbounded.full


def test_on_space_fires_once_when_drained_to_half(impl: types.SimpleNamespace) -> None:
    box = impl.Mailbox(capacity=4)
    for i in range(5):
        box.put(i)
    calls: list[tuple[str, int]] = []
    box.on_space(lambda: calls.append(("a", len(box.queue))))
    box.on_space(lambda: calls.append(("b", len(box.queue))))
    assert box.space_wanted and calls == []
    drained = []
    while box.queue:
        drained.append(box.queue.popleft())
        box.taken()  # what the actor's loop does after each message while space_wanted
    assert calls == [("a", 2), ("b", 2)]  # at capacity // 2, once each
    assert not box.space_wanted and drained == [0, 1, 2, 3, 4]
    box.taken()
    assert len(calls) == 2


def test_on_space_runs_at_once_when_there_is_space_or_the_box_is_closed(
    impl: types.SimpleNamespace,
) -> None:
    box = impl.Mailbox(capacity=4)
    box.put(1)
    box.put(2)
    calls: list[str] = []
    box.on_space(lambda: calls.append("now"))  # already at capacity // 2
    assert calls == ["now"] and not box.space_wanted
    for i in range(3):
        box.put(i)
    box.on_space(lambda: calls.append("closed"))
    assert calls == ["now"]
    box.close()  # the actor stopped: nothing will drain it
    assert calls == ["now", "closed"] and not box.space_wanted
    box.on_space(lambda: calls.append("after"))
    assert calls == ["now", "closed", "after"]


def test_a_raising_on_space_callback_is_logged_not_propagated(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    box = impl.Mailbox(capacity=2)
    box.put(1)
    box.put(2)

    def boom() -> None:
        raise RuntimeError("boom")

    calls: list[str] = []
    box.on_space(boom)
    box.on_space(lambda: calls.append("next"))
    box.queue.clear()
    with caplog.at_level(logging.ERROR, logger="casty.transport.mailbox"):
        box.taken()
    assert calls == ["next"]
    [record] = caplog.records
    assert record.exc_info is not None and "on_space" in record.getMessage()


# ---------------------------------------------------------------- byte capacity (peers' messages)


def _take(box: Any) -> Any:
    """Pop the next message as the actor's loop does, telling the box while it wants to know."""
    msg = box.queue.popleft()
    if box.space_wanted:
        box.taken()
    return msg


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_bad_byte_capacity_is_named(impl: types.SimpleNamespace, bad: object) -> None:
    with pytest.raises(ValueError, match="mailbox byte capacity"):
        impl.Mailbox(0, bad)


def test_put_sized_charges_bytes_until_the_loop_takes_the_message(impl: types.SimpleNamespace) -> None:
    assert impl.Mailbox().byte_capacity == 0
    box = impl.Mailbox(byte_capacity=100)
    assert box.byte_capacity == 100 and box.queued_bytes == 0 and not box.space_wanted
    box.put("local")  # local senders are charged nothing
    assert box.put_sized("a", 30) is False and box.space_wanted
    box.put("local 2")
    assert box.put_sized("b", 40) is False and box.queued_bytes == 70 and not box.full
    assert box.put_sized("c", 30) is True and box.queued_bytes == 100 and box.full
    assert box.offer("local 3")  # full by peers' bytes only: local tells still go in
    assert box.put_sized("d", 0) is True  # nothing to charge, still full
    left = []
    while box.queue:
        left.append((_take(box), box.queued_bytes))
    assert left == [
        ("local", 100), ("a", 70), ("local 2", 70), ("b", 30), ("c", 0), ("local 3", 0), ("d", 0),
    ]
    assert not box.space_wanted and not box.full
    # positions restart from the queue as it is now
    box.put("x")
    box.put_sized("y", 10)
    assert _take(box) == "x" and box.queued_bytes == 10
    assert _take(box) == "y" and box.queued_bytes == 0 and not box.space_wanted


def test_no_byte_capacity_charges_nothing(impl: types.SimpleNamespace) -> None:
    box = impl.Mailbox(capacity=2)
    assert box.put_sized("a", 10**9) is False
    assert box.queued_bytes == 0 and not box.space_wanted
    assert box.put_sized("b", 1) is True  # full by messages, as before
    assert list(box.queue) == ["a", "b"]


def test_on_space_waits_for_both_bytes_and_messages_to_halve(impl: types.SimpleNamespace) -> None:
    box = impl.Mailbox(byte_capacity=100)  # no bound in messages
    full = [box.put_sized(i, 30) for i in range(4)]
    assert full == [False, False, False, True]
    calls: list[int] = []
    box.on_space(lambda: calls.append(box.queued_bytes))
    assert calls == []
    while box.queue:
        _take(box)
    assert calls == [30]  # at byte_capacity // 2 or below, once

    both = impl.Mailbox(capacity=4, byte_capacity=100)
    for i in range(5):
        both.put(i)
    assert both.put_sized("big", 60) is True  # full by messages; bytes past half
    both.on_space(lambda: calls.append(len(both.queue)))
    for _ in range(4):
        _take(both)
    assert calls == [30] and len(both.queue) == 2  # messages at half, bytes not yet
    _take(both)
    assert calls == [30] and both.queued_bytes == 60
    _take(both)
    assert calls == [30, 0] and not both.space_wanted

    bytes_first = impl.Mailbox(capacity=4, byte_capacity=100)
    assert bytes_first.put_sized("big", 100) is True
    for i in range(5):
        bytes_first.put(i)
    bytes_first.on_space(lambda: calls.append(len(bytes_first.queue)))
    _take(bytes_first)
    assert bytes_first.queued_bytes == 0 and calls == [30, 0]  # 5 messages still > 4 // 2
    while len(bytes_first.queue) > 2:
        _take(bytes_first)
    assert calls == [30, 0, 2] and not bytes_first.space_wanted


def test_closing_forgets_the_queued_bytes(impl: types.SimpleNamespace) -> None:
    box = impl.Mailbox(byte_capacity=10)
    box.put("local")
    assert box.put_sized("a", 20) is True
    calls: list[str] = []
    box.on_space(lambda: calls.append("resumed"))
    box.close()
    assert calls == ["resumed"] and not box.queue and box.queued_bytes == 0
    assert not box.space_wanted and not box.full


async def test_a_sized_message_handled_eagerly_is_not_charged(impl: types.SimpleNamespace) -> None:
    async with stand_in_task() as (loop, task):
        same, handled, handler = recording_handler()
        box = impl.Mailbox(byte_capacity=100)
        assert box.arm_eager(task, loop, contextvars.copy_context(), "ctx", same, lambda *a: None)
        box.handler = handler
        waiter = box.wait(loop)
        assert await _in_callback(lambda: box.put_sized("eager", 500)) is False
        assert handled == ["eager"] and not box.queue and box.queued_bytes == 0
        assert not box.space_wanted and not waiter.done()
        assert box.put_sized("from a task", 500) is True  # declined: queued, charged, woken
        assert list(box.queue) == ["from a task"] and box.queued_bytes == 500 and waiter.done()
        assert handled == ["eager"]


def test_messages_under_the_charge_threshold_cost_no_byte_tracking(impl: types.SimpleNamespace) -> None:
    # capacity bounds how many small messages there can be: together they stay under byte_capacity
    box = impl.Mailbox(10, 100)  # charged from 100 // 10 = 10 bytes
    assert box.put_sized("small", 9) is False
    assert box.queued_bytes == 0 and not box.space_wanted
    assert box.put_sized("large", 10) is False
    assert box.queued_bytes == 10 and box.space_wanted
    assert _take(box) == "small" and box.queued_bytes == 10
    assert _take(box) == "large" and box.queued_bytes == 0 and not box.space_wanted


@contextlib.asynccontextmanager
async def stand_in_task() -> AsyncIterator[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]]:
    """A parked task standing for the actor's task while a mailbox is armed for eager handling."""
    if not eager.EAGER:
        pytest.skip("this asyncio lacks what eager handling needs")
    loop = asyncio.get_running_loop()
    parked = loop.create_future()
    task = loop.create_task(asyncio.wait([parked]))
    try:
        yield loop, task
    finally:
        parked.set_result(None)
        await task


def recording_handler() -> tuple[object, list[Any], Callable[[Any, Any], Any]]:
    """(the same marker, the messages handled, a handler recording them and returning same)."""
    same, handled = object(), []

    async def handler(actor_context: Any, msg: Any) -> Any:
        handled.append(msg)
        return same

    return same, handled, handler
