"""Eager handling's use of private asyncio hooks: detected once at import, per version.

``casty.eager.detect_eager`` probes ``_enter_task``/``_leave_task`` and the
running-task lookups on a loop of its own; eager handling is on only where the probe
passed on a version in ``EAGER_TESTED``.  Both branches run here in both twins: the eager
one as detected, the fallback by setting the one switch ``casty.eager.EAGER`` to False.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import types
from typing import Any

import pytest

import casty.eager as eager
from casty import _impl
from casty.behavior import Behaviors
from casty.context import ActorContext
from casty.system import ActorSystem

WAIT = 5.0


class Untouchable:
    """A stand-in for ``asyncio.tasks`` that fails the test if any name is read from it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"asyncio.tasks.{name} was touched")


def real_hooks(**overrides: Any) -> types.SimpleNamespace:
    """This asyncio's own hooks, some replaced by ``overrides``."""
    names = ("_enter_task", "_leave_task", "_current_tasks")
    hooks = {name: getattr(asyncio.tasks, name) for name in names if hasattr(asyncio.tasks, name)}
    return types.SimpleNamespace(**{**hooks, **overrides})


@pytest.fixture
def no_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback branch: the detection result forced to False, for both twins and the actor."""
    monkeypatch.setattr(eager, "EAGER", False)


# ---------------------------------------------------------------- detection


def test_eager_handling_is_on_on_every_tested_version() -> None:
    if sys.version_info[:2] not in eager.EAGER_TESTED:
        assert eager.EAGER is False
        return
    assert eager.EAGER is True
    hooks = eager.detect_eager()
    assert hooks is not None
    enter, leave, lookup, table = hooks
    assert (enter, leave) == (asyncio.tasks._enter_task, asyncio.tasks._leave_task)  # type: ignore[attr-defined]
    if sys.version_info >= (3, 14):
        # 3.14 keeps the running task per thread: the old dict is left stale, not used.
        assert table is None and lookup is asyncio.current_task
    else:
        assert table is asyncio.tasks._current_tasks  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", [(3, 10), (3, 15), (4, 0)])
def test_an_untested_version_touches_no_private_name(version: tuple[int, int]) -> None:
    assert eager.detect_eager(Untouchable(), version) is None


def test_missing_hooks_turn_eager_handling_off() -> None:
    assert eager.detect_eager(types.SimpleNamespace()) is None
    assert eager.detect_eager(real_hooks(_leave_task=None)) is None


def test_hooks_that_do_not_mark_the_task_turn_eager_handling_off() -> None:
    def nothing(loop: Any, task: Any) -> None:
        pass

    assert eager.detect_eager(real_hooks(_enter_task=nothing, _leave_task=nothing)) is None


def test_hooks_that_raise_turn_eager_handling_off() -> None:
    def refuse(loop: Any, task: Any) -> None:
        raise RuntimeError("not here")

    assert eager.detect_eager(real_hooks(_enter_task=refuse)) is None


def test_a_leave_that_does_not_let_go_turns_eager_handling_off_without_hanging() -> None:
    kept: list[tuple[Any, Any]] = []

    def keep(loop: Any, task: Any) -> None:
        kept.append((loop, task))

    assert eager.detect_eager(real_hooks(_leave_task=keep)) is None
    if kept and sys.version_info < (3, 14):
        asyncio.tasks._leave_task(*kept[0])  # type: ignore[attr-defined]  # the shared table, not the thread's


def test_a_running_task_table_that_asyncio_does_not_keep_is_not_used() -> None:
    # What 3.14 did to _current_tasks: still a dict, no longer updated by task steps.
    hooks = eager.detect_eager(real_hooks(_current_tasks={}))
    if sys.version_info[:2] not in eager.EAGER_TESTED:
        assert hooks is None
        return
    assert hooks is not None
    assert hooks[2] is asyncio.current_task and hooks[3] is None


def test_casty_no_eager_turns_it_off_in_both_twins_without_a_probe() -> None:
    code = (
        "import asyncio, contextvars, casty.eager as e, casty.transport.mailbox as m\n"
        "try:\n    import casty._fast.mailbox as fast\nexcept ImportError:\n    fast = m\n"
        "loop = asyncio.new_event_loop()\n"
        "armed = [b.arm_eager(None, loop, contextvars.copy_context(), 0, 0, print)\n"
        "         for b in (m.Mailbox(), fast.Mailbox())]\n"
        "print(e.EAGER, e.HOOKS, *armed)\n"
    )
    env = {**os.environ, "CASTY_NO_EAGER": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "None", "False", "False"]


# ---------------------------------------------------------------- both branches, both twins


async def _in_callback(fn: Any) -> Any:
    """``fn()`` run in a loop callback, outside every task; what it returned."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(lambda: done.set_result(fn()))
    return await asyncio.wait_for(done, WAIT)


def _armed(
    impl: types.SimpleNamespace, loop: asyncio.AbstractEventLoop, handled: list[Any]
) -> tuple[Any, bool, asyncio.Future[None], asyncio.Task[Any]]:
    """A mailbox armed for a parked task standing for its actor's: the box, what arm_eager
    answered, the future the task waits on, and the task."""
    parked = loop.create_future()
    task = loop.create_task(asyncio.wait([parked]))
    same = object()

    async def handler(actor_context: Any, msg: Any) -> Any:
        handled.append((msg, asyncio.current_task(loop) is task))
        return same

    box = impl.Mailbox()
    armed = box.arm_eager(task, loop, contextvars.copy_context(), "ctx", same, lambda *a: None)
    box.handler = handler
    return box, armed, parked, task


async def test_eager_branch_handles_in_put(impl: types.SimpleNamespace) -> None:
    if not eager.EAGER:
        pytest.skip("eager handling is off on this interpreter")
    loop = asyncio.get_running_loop()
    handled: list[Any] = []
    box, armed, parked, task = _armed(impl, loop, handled)
    await asyncio.sleep(0)  # the task parks
    assert armed is True
    waiter = box.wait(loop)
    await _in_callback(lambda: box.put("x"))
    assert handled == [("x", True)] and not box.queue and not waiter.done()
    parked.set_result(None)
    await task


async def test_fallback_branch_queues_and_wakes_the_task(impl: types.SimpleNamespace, no_eager: None) -> None:
    loop = asyncio.get_running_loop()
    handled: list[Any] = []
    box, armed, parked, task = _armed(impl, loop, handled)
    await asyncio.sleep(0)
    assert armed is False
    waiter = box.wait(loop)
    await _in_callback(lambda: box.put("x"))
    assert handled == [] and list(box.queue) == ["x"] and waiter.done()
    parked.set_result(None)
    await task


async def test_actors_work_with_eager_handling_off(no_eager: None) -> None:
    seen: list[Any] = []

    async def receive(ctx: ActorContext[Any], msg: Any) -> Any:
        if isinstance(msg, tuple):
            msg[1].tell(msg[0])
        else:
            seen.append(msg)
        return Behaviors.same()

    async with ActorSystem("no-eager") as system:
        ref = system.spawn(Behaviors.receive(receive), "a")
        assert type(system._cells["/user/a"].mailbox) is _impl.Mailbox
        assert await system.ask(ref, lambda r: ("ready", r), timeout=WAIT) == "ready"
        after_tell = await _in_callback(lambda: (ref.tell("x"), list(seen))[1])
        assert after_tell == []  # not handled inside tell: the task handles it later
        assert await system.ask(ref, lambda r: ("done", r), timeout=WAIT) == "done"
        assert seen == ["x"]


def test_a_put_while_the_loop_is_not_running_is_left_to_the_task(impl: types.SimpleNamespace) -> None:
    # 3.14's _enter_task refuses a loop that is not running in this thread; put must not raise.
    loop = asyncio.new_event_loop()
    try:
        handled: list[Any] = []
        box, _, parked, task = _armed(impl, loop, handled)
        loop.run_until_complete(asyncio.sleep(0))  # the task parks; the loop stops again
        waiter = box.wait(loop)
        box.put("x")
        if handled:  # 3.11-3.13 let a task be entered on a loop that is not running
            assert handled == [("x", True)] and not box.queue
        else:
            assert list(box.queue) == ["x"] and waiter.done()
        parked.set_result(None)
        loop.run_until_complete(task)
    finally:
        loop.close()
