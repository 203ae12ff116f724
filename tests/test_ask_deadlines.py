"""AskDeadlines: every pending ask's timeout on one loop timer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from casty.ask_deadlines import AskDeadlines
from casty.behavior import Behaviors
from casty.system import ActorSystem

WAIT = 5.0  # a bound so a bug fails the test instead of hanging it


def futures(n: int) -> list[asyncio.Future[Any]]:
    loop = asyncio.get_running_loop()
    return [loop.create_future() for _ in range(n)]


async def failed(fut: asyncio.Future[Any]) -> str:
    with pytest.raises(TimeoutError) as info:
        await asyncio.wait_for(asyncio.shield(fut), WAIT)
    return str(info.value)


async def test_each_ask_times_out_in_deadline_order_whatever_the_order_added() -> None:
    deadlines = AskDeadlines(asyncio.get_running_loop())
    replies = futures(3)
    order: list[str] = []
    due: dict[str, float] = {}
    for fut, (timeout, name) in zip(replies, [(0.06, "late"), (0.02, "early"), (0.04, "middle")], strict=True):
        due[name] = deadlines.add(timeout, fut, name)[0]  # the entry's deadline (loop time)
        fut.add_done_callback(lambda _, name=name: order.append(name))
    assert deadlines.pending == 3
    assert await failed(replies[0]) == "ask to late got no reply within 0.06s"
    for fut in replies[1:]:
        await failed(fut)
    await asyncio.sleep(0)  # the done callbacks of the last ones to fail
    # Deadline order; a loop stalled between two adds (a loaded machine) may move a deadline
    # past the next one's, so the order is the deadlines', not the timeouts'.
    assert order == sorted(due, key=due.__getitem__)
    assert deadlines.pending == 0


async def test_answered_asks_never_fail_and_are_swept() -> None:
    loop = asyncio.get_running_loop()
    deadlines = AskDeadlines(loop)
    answered = futures(500)
    for fut in answered:
        entry = deadlines.add(0.05, fut, "quick")
        fut.set_result("reply")
        deadlines.answered(entry)
        deadlines.answered(entry)  # twice is harmless
        assert len(deadlines._heap) <= 2 * deadlines.pending + 64  # swept as it goes
    silent = futures(1)[0]
    deadlines.add(0.1, silent, "silent")
    assert deadlines.pending == 1
    await failed(silent)  # by now every answered deadline has passed too
    assert all(f.result() == "reply" for f in answered)
    assert deadlines._heap == [] and deadlines.pending == 0


async def test_answering_lets_go_of_the_reply_and_the_target() -> None:
    deadlines = AskDeadlines(asyncio.get_running_loop())
    fut = futures(1)[0]
    entry = deadlines.add(5.0, fut, object())
    deadlines.answered(entry)
    assert entry[2] is None and entry[3] is None
    deadlines.close()


async def test_close_stops_every_timeout() -> None:
    loop = asyncio.get_running_loop()
    closed = AskDeadlines(loop)
    forgotten = futures(1)[0]
    closed.add(0.01, forgotten, "forgotten")
    entry = closed.add(5.0, futures(1)[0], "late")
    closed.close()
    assert closed.pending == 0
    closed.answered(entry)  # an ask finishing after close (shutdown) counts nothing
    assert closed.pending == 0
    witness = futures(1)[0]
    AskDeadlines(loop).add(0.05, witness, "witness")
    await failed(witness)  # well past the closed one's deadline
    assert not forgotten.done()


async def test_a_timeout_already_settled_is_left_alone() -> None:
    deadlines = AskDeadlines(asyncio.get_running_loop())
    cancelled, answered_late = futures(2)
    deadlines.add(0.01, cancelled, "a")
    deadlines.add(0.01, answered_late, "b")
    cancelled.cancel()
    answered_late.set_result(1)  # settled, but answered() not called yet
    witness = futures(1)[0]
    deadlines.add(0.03, witness, "witness")
    await failed(witness)
    assert cancelled.cancelled() and answered_late.result() == 1
    assert deadlines.pending == 0


async def test_system_asks_time_out_and_answered_ones_leave_nothing_pending() -> None:
    async def echo(ctx: Any, msg: Any) -> Any:
        if msg[0] == "answer":
            msg[1].tell("ok")
        return Behaviors.same()

    async with ActorSystem("deadlines") as system:
        ref = system.spawn(Behaviors.receive(echo), "echo")
        assert [await system.ask(ref, lambda r: ("answer", r)) for _ in range(100)] == ["ok"] * 100
        with pytest.raises(TimeoutError, match=r"ask to casty://deadlines/user/echo got no reply within 0\.02s"):
            await system.ask(ref, lambda r: ("ignore", r), timeout=0.02)
        deadlines = system._ask_deadlines
        assert deadlines is not None and deadlines.pending == 0
    assert deadlines._heap == [] and deadlines._timer is None  # shutdown closed it


async def test_pending_replies_are_the_live_asks() -> None:
    deadlines = AskDeadlines(asyncio.get_running_loop())
    a, b, c = futures(3)
    entries = [deadlines.add(5.0, fut, "t") for fut in (a, b, c)]
    deadlines.answered(entries[1])
    assert sorted(map(id, deadlines.pending_replies())) == sorted([id(a), id(c)])
    deadlines.close()
    assert deadlines.pending_replies() == []


async def test_ask_refuses_a_timeout_that_is_not_a_positive_number() -> None:
    async with ActorSystem("timeouts") as system:
        ref = system.spawn(Behaviors.receive(lambda ctx, msg: _same()), "x")
        for bad in (True, "1", -1, 0, 0.0, -0.5, float("nan"), None, [1]):
            with pytest.raises(ValueError, match="ask timeout must be a positive number of seconds"):
                await system.ask(ref, lambda r: r, timeout=bad)  # type: ignore[arg-type]
        assert system._ask_deadlines is None or system._ask_deadlines.pending == 0


async def _same() -> Any:
    return Behaviors.same()
