"""Eager handling: what the actor, the pure mailbox and the Cython mailbox share.

A message put into an idle actor's mailbox from outside every task (an inbound read, a
timer) is handled at once, as the actor's task: the mailbox marks the task current
(:data:`HOOKS`), calls the handler in the task's context and steps its coroutine up to
its first suspension.  A handler that returned the ``same`` marker without suspending
is done there.  Anything else the mailbox hands to the actor's task as an
:data:`Outcome` (``take_over(msg, outcome)``), and the task finishes it before any
later message, awaiting :meth:`Suspended.resume` or :attr:`NotACoroutine.awaitable`
(see docs/architecture.md, "Eager handling").

This module is neutral: both mailbox twins and ``casty.actor`` import it, it imports
neither.  :func:`begin` is the step in Python, as the pure mailbox runs it; the Cython
mailbox runs the same step inline at C level and builds the same outcomes.

:data:`EAGER` is the one switch: the mailboxes and the actor read it here when an actor
starts (tests set it to False to run the fallback, where every message goes through the
task).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, NamedTuple, TypeAlias

__all__ = [
    "EAGER",
    "EAGER_TESTED",
    "HOOKS",
    "EagerHooks",
    "NotACoroutine",
    "Outcome",
    "Raised",
    "Returned",
    "Suspended",
    "TakeOver",
    "begin",
    "detect_eager",
    "run_step",
]

log = logging.getLogger("casty.eager")

# What eager handling needs from asyncio: marking a task as the running one while its
# code runs outside the task's own step (what 3.12's eager tasks do), and telling whether
# a task runs now.  These are private names whose behaviour moves between versions (3.14
# keeps the running task per thread and no longer in ``_current_tasks``), so they are
# used only on the versions casty was tested on, and only once a probe at import showed
# they do what eager handling relies on; else every message goes through the task.
EAGER_TESTED = ((3, 11), (3, 12), (3, 13), (3, 14))
"""The CPython versions whose private asyncio hooks eager handling was tested with."""


class EagerHooks(NamedTuple):
    """The asyncio hooks eager handling uses, as :func:`detect_eager` found them."""

    enter: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None]
    """Mark a task as the loop's running one."""
    leave: Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None]
    """Unmark it."""
    current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]
    """The quickest lookup of the loop's running task that agrees with ``asyncio.current_task``."""
    current_tasks: dict[Any, Any] | None
    """The dict behind ``current_task`` (``loop -> task``) when it is one dict lookup, else None."""


def _probe(tasks: Any, loop: asyncio.AbstractEventLoop) -> EagerHooks | None:
    """The hooks of ``tasks`` (asyncio.tasks, or a stand-in), if they mark a task current and
    unmark it as eager handling needs, with the quickest lookup of the running task that
    agrees with ``asyncio.current_task``; else None.  Runs ``loop`` (not running yet)."""
    enter, leave = getattr(tasks, "_enter_task", None), getattr(tasks, "_leave_task", None)
    if not callable(enter) or not callable(leave):
        return None
    table = getattr(tasks, "_current_tasks", None)
    lookups: list[tuple[Any, dict[Any, Any] | None]] = [(asyncio.current_task, None)]
    if type(table) is dict:
        lookups.insert(0, (table.get, table))  # one dict lookup, where asyncio still updates it

    def look() -> list[Any]:
        return [lookup(loop) for lookup, _ in lookups]

    async def parked_on(future: asyncio.Future[None]) -> list[Any]:
        seen = look()  # inside a task step: each lookup must find this task
        await future
        return seen

    parked: asyncio.Future[None] = loop.create_future()
    task = loop.create_task(parked_on(parked))
    task.add_done_callback(lambda _: loop.stop())
    checks: list[list[Any]] = []

    def from_a_callback() -> None:
        # No task is current here, as in a mailbox's put; the parked task stands for the actor's.
        try:
            checks.append(look())
            enter(loop, task)
            try:
                checks.append(look())
            finally:
                leave(loop, task)
            checks.append(look())
        except Exception:
            log.debug("eager handling probe: the asyncio hooks raised", exc_info=True)
        if asyncio.current_task(loop) is None:
            parked.set_result(None)  # the task can run again: let it finish
        else:
            loop.stop()  # leave() did not let go: the task could never step again

    loop.call_soon(loop.call_soon, from_a_callback)  # once the task is parked
    loop.call_later(5.0, loop.stop)  # hooks that wedge the loop must not hang the import
    loop.run_forever()
    if not task.done() or task.cancelled() or task.exception() is not None:
        return None
    in_task = task.result()
    if len(checks) != 3:
        return None
    for i, (lookup, dict_or_none) in enumerate(lookups):
        if in_task[i] is task and checks[0][i] is None and checks[1][i] is task and checks[2][i] is None:
            return EagerHooks(enter, leave, lookup, dict_or_none)
    return None


def detect_eager(tasks: Any = asyncio.tasks, version: tuple[int, int] = sys.version_info[:2]) -> EagerHooks | None:
    """The hooks eager handling uses, or None where they must not be used: ``version`` not
    in :data:`EAGER_TESTED` (nothing of ``tasks`` is touched then), a hook missing, or the
    probe (:func:`_probe`, on a loop of its own in a thread of its own) seeing them behave
    otherwise."""
    if version not in EAGER_TESTED:
        return None
    found: list[EagerHooks | None] = [None]

    def probe() -> None:
        loop = asyncio.SelectorEventLoop()
        try:
            found[0] = _probe(tasks, loop)
        except Exception:
            log.debug("eager handling probe failed; messages go through the actor task", exc_info=True)
        finally:
            loop.close()

    # A thread of its own: no loop of the importer's runs there, nor any task.
    thread = threading.Thread(target=probe, name="casty-eager-probe", daemon=True)
    thread.start()
    thread.join()
    return found[0]


# CASTY_NO_EAGER=1 turns eager handling off without a probe (to compare, or to rule it out).
HOOKS: EagerHooks | None = (
    None if os.environ.get("CASTY_NO_EAGER", "").strip().lower() in {"1", "true", "yes"} else detect_eager()
)
"""The hooks found at import (see :func:`detect_eager`), or None: no eager handling."""

EAGER = HOOKS is not None
"""True when this asyncio lets a mailbox handle a message as its actor's task and
``CASTY_NO_EAGER`` is not set.  Read when an actor starts: set to False, ``arm_eager``
declines and every message goes through the task."""


# -- what a step left for the task ------------------------------------------------------


@dataclass(slots=True, eq=False)
class Returned:
    """The handler's coroutine returned ``behavior`` without suspending (not ``same``:
    that needs nothing more and is never handed over)."""

    behavior: Any


@dataclass(slots=True, eq=False)
class Suspended:
    """The handler's coroutine ``coro`` awaited: it yielded ``yielded`` to its driver (the
    future it waits on, or None), and the task drives it from there."""

    coro: Coroutine[Any, Any, Any]
    yielded: Any

    def resume(self, throw: BaseException | None = None) -> Awaitable[Any]:
        """What the task awaits to drive the coroutine on: first it hands the task
        ``yielded`` (or throws ``throw`` in, a cancel that came before the task resumed)."""
        return _Resumed(self.coro, self.yielded, throw)


@dataclass(slots=True, eq=False)
class Raised:
    """Calling the handler or stepping its coroutine raised ``exc`` (a CancelledError too)."""

    exc: BaseException


@dataclass(slots=True, eq=False)
class NotACoroutine:
    """The handler returned ``awaitable``, which is no coroutine: the task awaits it."""

    awaitable: Any


Outcome: TypeAlias = Returned | Suspended | Raised | NotACoroutine
"""What a mailbox hands the actor's task when eager handling did not finish a message."""

TakeOver = Callable[[Any, Outcome], None]
"""``take_over(msg, outcome)``: given to ``arm_eager``; the task is to finish ``msg``."""


def run_step(coro: Coroutine[Any, Any, Any], context: contextvars.Context) -> Returned | Suspended:
    """Run ``coro`` up to its first suspension, inside ``context``: :class:`Returned` with
    its result, or :class:`Suspended` with what it yielded; what it raised propagates.

    >>> async def done() -> str:
    ...     return "done"
    >>> run_step(done(), contextvars.copy_context())
    Returned(behavior='done')
    """
    try:
        return Suspended(coro, context.run(coro.send, None))
    except StopIteration as finished:
        return Returned(finished.value)


def begin(handler: Callable[[Any, Any], Any], actor_context: Any, msg: Any, context: contextvars.Context) -> Outcome:
    """Call ``handler(actor_context, msg)`` inside ``context`` and step what it returned
    (:func:`run_step`) when it is a coroutine: the step of eager handling, as the pure
    mailbox runs it while the actor's task is marked current.  An exception, a
    CancelledError too, is caught as :class:`Raised` (other BaseExceptions propagate)."""
    try:
        coro = context.run(handler, actor_context, msg)
        if type(coro) is CoroutineType:
            return run_step(coro, context)
        return NotACoroutine(coro)
    except (Exception, asyncio.CancelledError) as exc:
        return Raised(exc)


_HANDED = object()  # _Resumed has handed the task what the coroutine yielded


class _Resumed:
    """Awaits a coroutine that already ran up to its first suspension outside the task.

    The first step hands the task what the coroutine yielded (the future it waits
    on, or None); every later step, and anything thrown in, goes to the coroutine.
    """

    __slots__ = ("_coro", "_throw", "_yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any, throw: BaseException | None) -> None:
        self._coro = coro
        self._yielded = yielded
        self._throw = throw  # thrown in at the first step instead (a cancel that came first)

    def __await__(self) -> Generator[Any, Any, Any]:
        return self

    def __iter__(self) -> _Resumed:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        yielded = self._yielded
        if yielded is not _HANDED:
            self._yielded = _HANDED
            throw = self._throw
            if throw is not None:
                self._throw = None
                return self._coro.throw(throw)
            return yielded
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        self._yielded = _HANDED
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()
