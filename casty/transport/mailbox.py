"""Mailbox: an actor's queue of messages, and the wake-up for the loop draining it.

The LocalTransport delivers into it inline (it is the handler registered for the
actor's path), so it is on the path of every message: ``put`` is one
``deque.append`` while the actor is busy, plus a future's ``set_result`` when the
actor waits for mail.  This is the pure twin of ``casty._fast.mailbox``, whose
Mailbox the Cython LocalTransport calls at C level.

Eager handling (see ``casty.actor``): once armed, a message that finds the actor
waiting, put from outside every task and not while :data:`more_to_come` is set,
is handled right in ``put``, as the actor's task: the handler is called and run
in the task's context, with the task marked current (not when the task was
cancelled meanwhile: its waiter is then done).  A handler that returns the ``same``
marker without suspending is done there; for anything else the mailbox calls
``take_over(started, result, msg)`` and wakes the actor's task, which finishes
the message.  ``started`` is the handler's coroutine with what it yielded as
``result``, or its awaitable with :data:`NOT_STARTED`, or None with the
behaviour it returned, or :data:`FAILED` with the exception.

Capacity, in messages (``capacity``) and in bytes of peers' messages
(``byte_capacity``), 0 = unbounded: ``put`` always queues, and
:meth:`Mailbox.offer` (local senders) refuses a message once the queue holds
``capacity`` messages.  :meth:`Mailbox.put_sized` (the LocalTransport's delivery of
a peer's message, with its wire size) always queues too and charges those bytes to
:attr:`Mailbox.queued_bytes` until the actor's loop takes the message; it reports
the mailbox :attr:`~Mailbox.full` (at ``capacity`` messages or ``byte_capacity``
bytes) so that the peer's reader pauses.  Local senders are charged no bytes and
are not refused for them.  Callbacks given to :meth:`Mailbox.on_space` run once
the queue is down to ``capacity // 2`` messages and ``byte_capacity // 2`` bytes
(the actor's loop calls :meth:`Mailbox.taken` after each message it takes while
:attr:`Mailbox.space_wanted`), or when the mailbox is closed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from types import CoroutineType
from typing import Any

# The eager-handling probe (EAGER_TESTED, detect_eager) is this module's alone: the Cython
# twin takes its result from here, so it is not part of the twins' shared interface.
__all__ = ["EAGER", "FAILED", "NOT_STARTED", "Mailbox", "Suspended", "check_capacity", "run_step"]

log = logging.getLogger("casty.transport.mailbox")

# What eager handling needs from asyncio: marking a task as the running one while its
# code runs outside the task's own step (what 3.12's eager tasks do), and telling whether
# a task runs now.  These are private names whose behaviour moves between versions (3.14
# keeps the running task per thread and no longer in ``_current_tasks``), so they are
# used only on the versions casty was tested on, and only once a probe at import showed
# they do what eager handling relies on; else every message goes through the task.
EAGER_TESTED = ((3, 11), (3, 12), (3, 13), (3, 14))
"""The CPython versions whose private asyncio hooks eager handling was tested with."""

_Hooks = tuple[
    Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None],
    Callable[[asyncio.AbstractEventLoop, asyncio.Task[Any]], None],
    Callable[[asyncio.AbstractEventLoop], "asyncio.Task[Any] | None"],
    "dict[Any, Any] | None",
]


def _probe(tasks: Any, loop: asyncio.AbstractEventLoop) -> _Hooks | None:
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
        # No task is current here, as in put(); the parked task stands for the actor's.
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
            return enter, leave, lookup, dict_or_none
    return None


def detect_eager(tasks: Any = asyncio.tasks, version: tuple[int, int] = sys.version_info[:2]) -> _Hooks | None:
    """The hooks eager handling uses (enter, leave, running-task lookup, and the dict behind
    that lookup or None), or None where they must not be used: ``version`` not in
    :data:`EAGER_TESTED` (nothing of ``tasks`` is touched then), a hook missing, or the
    probe (:func:`_probe`, on a loop of its own in a thread of its own) seeing them behave
    otherwise."""
    if version not in EAGER_TESTED:
        return None
    found: list[_Hooks | None] = [None]

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
_hooks = None if os.environ.get("CASTY_NO_EAGER", "").strip().lower() in {"1", "true", "yes"} else detect_eager()
_enter_task, _leave_task, _current_task, _current_tasks = (
    _hooks if _hooks is not None else (None, None, asyncio.current_task, None)
)
EAGER = _hooks is not None
"""True when this asyncio lets a mailbox handle a message as its actor's task (see
:func:`detect_eager`) and ``CASTY_NO_EAGER`` is not set.  Tests set it (here and in
``casty._fast.mailbox``) to False to run the fallback: ``arm_eager`` then declines and
every message goes through the task."""

more_to_come = False
"""Set by the frame splitter while the chunk it reads holds more frames after the one
being delivered: an idle actor then queues the message for its task instead of
handling it eagerly, so a stream is handled in batches (a request and its reply
still travel eagerly, one per read)."""

FAILED = object()
"""``take_over``'s ``started`` when the handler raised."""
NOT_STARTED = object()
"""``take_over``'s ``result`` when the handler returned an awaitable that is no coroutine."""

Handler = Callable[[Any, Any], Any]
TakeOver = Callable[[Any, Any, Any], None]
SpaceCallback = Callable[[], object]


def check_capacity(value: object, name: str = "mailbox capacity") -> int:
    """``value`` as a capacity: a non-negative int (0 = unbounded), at most ``sys.maxsize``
    (a larger one cannot be reached by a queue length); else ValueError naming ``name``.

    >>> check_capacity(8), check_capacity(2**70) == sys.maxsize
    (8, True)
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int (0 = unbounded), got {value!r}")
    return min(value, sys.maxsize)


def run_space_callbacks(callbacks: list[SpaceCallback]) -> None:
    """Call each of ``callbacks`` in order; one that raises is logged, not propagated."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("a mailbox on_space callback raised")


def charge_from(capacity: int, byte_capacity: int) -> int:
    """The smallest sized message a mailbox charges to ``queued_bytes``.

    Charging costs a record per message and a call per message taken, which a stream
    of small messages would pay on every one.  A message under ``byte_capacity //
    capacity`` bytes is not charged: ``capacity`` bounds how many there can be, so
    together they hold less than ``byte_capacity``, and the bytes queued stay under
    twice ``byte_capacity``.  With no message bound every sized message is charged.

    >>> charge_from(65_536, 64 * 1024 * 1024), charge_from(0, 1024)
    (1024, 1)
    """
    return max(byte_capacity // capacity, 1) if capacity else 1


class Mailbox:
    """Messages in arrival order, and at most one waiter for the next one.

    >>> import casty
    >>> async def main() -> list[str]:
    ...     box = Mailbox()
    ...     waiting = box.wait(asyncio.get_running_loop())
    ...     box.put("hello")  # the LocalTransport calls box("hello"), the same thing
    ...     await waiting
    ...     return list(box.queue)
    >>> casty.run(main())
    ['hello']
    """

    __slots__ = (
        "_charge_from",
        "_closed",
        "_eager",
        "_queued_bytes",
        "_sized",
        "_space",
        "_taken",
        "_waiter",
        "byte_capacity",
        "capacity",
        "handler",
        "queue",
        "space_wanted",
    )

    def __init__(self, capacity: int = 0, byte_capacity: int = 0) -> None:
        #: the queue length at which :meth:`offer` refuses and peers are asked to pause
        #: (0 = unbounded)
        self.capacity = check_capacity(capacity)
        #: the :attr:`queued_bytes` at which peers are asked to pause (0 = unbounded)
        self.byte_capacity = check_capacity(byte_capacity, "mailbox byte capacity")
        self.queue: deque[Any] = deque()
        # Sized messages still queued, oldest first: (value of _taken once the loop has
        # taken it, its bytes).  Positions, not the messages: the loop pops the queue itself.
        self._sized: deque[tuple[int, int]] = deque()
        self._queued_bytes = 0
        self._charge_from = charge_from(self.capacity, self.byte_capacity)
        self._taken = 0  # messages taken while anything was tracked (reset when nothing is)
        self._waiter: asyncio.Future[None] | None = None
        #: the actor's current handler, used once eager handling is armed
        self.handler: Handler | None = None
        # (task, loop, task context, actor context, same marker, take_over) once armed
        self._eager: tuple[Any, ...] | None = None
        self._space: list[SpaceCallback] = []
        #: True while :meth:`on_space` callbacks wait or sized messages are queued (the
        #: actor's loop then calls :meth:`taken` after each message it takes)
        self.space_wanted = False
        self._closed = False

    def put(self, msg: Any) -> None:
        """Queue ``msg`` and wake the waiter, if any (or handle it eagerly, once armed).

        Never refuses: a full mailbox is reported to peers by the LocalTransport."""
        waiter = self._waiter
        if waiter is None:
            self.queue.append(msg)
        elif self._eager is None or more_to_come or waiter.done() or not self._run_eager(msg):
            self.queue.append(msg)
            self.wake()

    __call__ = put

    def put_sized(self, msg: Any, nbytes: int) -> bool:
        """:meth:`put` a peer's ``msg`` of ``nbytes`` wire bytes, charged to
        :attr:`queued_bytes` while it is queued (not when it is handled eagerly, nor
        with no ``byte_capacity``).  Never refuses; True when the mailbox is now
        :attr:`full`, for the peer's reader to pause."""
        waiter = self._waiter
        if (
            waiter is not None
            and self._eager is not None
            and not more_to_come
            and not waiter.done()
            and self._run_eager(msg)
        ):
            return self.full  # handled already: nothing of it is queued
        self.queue.append(msg)
        if waiter is not None:
            self.wake()
        if nbytes >= self._charge_from and self.byte_capacity:
            self._sized.append((self._taken + len(self.queue), nbytes))
            self._queued_bytes += nbytes
            self.space_wanted = True
        return self.full

    def offer(self, msg: Any) -> bool:
        """:meth:`put` ``msg`` unless the queue is at capacity; False when refused."""
        capacity = self.capacity
        if capacity and len(self.queue) >= capacity:
            return False
        self.put(msg)
        return True

    @property
    def queued_bytes(self) -> int:
        """Bytes of the messages queued by :meth:`put_sized` that the loop has not taken."""
        return self._queued_bytes

    @property
    def full(self) -> bool:
        """True when the queue is at or over a nonzero ``capacity``, or
        :attr:`queued_bytes` at or over a nonzero ``byte_capacity``."""
        return 0 < self.capacity <= len(self.queue) or 0 < self.byte_capacity <= self._queued_bytes

    def _has_space(self) -> bool:
        """The queue is down to half of each nonzero capacity."""
        capacity = self.capacity
        byte_capacity = self.byte_capacity
        return (not capacity or len(self.queue) <= capacity // 2) and (
            not byte_capacity or self._queued_bytes <= byte_capacity // 2
        )

    def on_space(self, callback: SpaceCallback) -> None:
        """Call ``callback()`` once, when the queue is next down to ``capacity // 2``
        messages and ``byte_capacity // 2`` bytes, or the mailbox is closed: at once if
        that is already so.

        Several callbacks may wait; one that raises is logged, not propagated."""
        if self._closed or self._has_space():
            run_space_callbacks([callback])
            return
        self._space.append(callback)
        self.space_wanted = True

    def taken(self) -> None:
        """The actor's loop took one message off the queue (it calls this after each
        while :attr:`space_wanted`): release the bytes of the sized messages taken,
        and run the waiting :meth:`on_space` callbacks once there is space."""
        sized = self._sized
        if sized:
            taken = self._taken = self._taken + 1
            while sized and sized[0][0] <= taken:
                self._queued_bytes -= sized.popleft()[1]
            if not sized:
                self._taken = 0
        if self._space and self._has_space():
            self._release_space()
        elif not sized and not self._space:
            self.space_wanted = False

    def close(self) -> None:
        """The actor stopped: drop what is queued, run the waiting callbacks, and later
        ones at once."""
        self._closed = True
        self.queue.clear()
        self._forget_sized()
        self._release_space()

    def _forget_sized(self) -> None:
        self._sized.clear()
        self._queued_bytes = self._taken = 0

    def _release_space(self) -> None:
        callbacks, self._space = self._space, []
        self.space_wanted = bool(self._sized)
        run_space_callbacks(callbacks)

    def wait(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """A future that :meth:`put` or :meth:`wake` completes (replaces any earlier one)."""
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        return waiter

    def wake(self) -> None:
        """Complete the waiter without a message (a stop request)."""
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def forget_waiter(self) -> None:
        """Drop the waiter without completing it (its task is gone)."""
        self._waiter = None

    def arm_eager(
        self,
        task: asyncio.Task[Any],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context,
        actor_context: Any,
        same: Any,
        take_over: TakeOver,
    ) -> bool:
        """Handle messages eagerly from now on, as ``task`` in ``context`` (see the module).

        ``handler(actor_context, msg)`` is called; ``same`` is the result that needs
        nothing more.  Returns False, and changes nothing, where asyncio lacks what
        this needs (:data:`EAGER`).
        """
        if not EAGER:
            return False
        self._eager = (task, loop, context, actor_context, same, take_over)
        return True

    def disarm_eager(self) -> None:
        """Stop eager handling and let go of what :meth:`arm_eager` was given."""
        self._eager = None
        self.handler = None

    def _run_eager(self, msg: Any) -> bool:
        task, loop, context, actor_context, same, take_over = self._eager  # type: ignore[misc]
        if _current_task(loop) is not None:
            return False  # put from inside a task: that task goes on, ours wakes later
        started: Any
        try:
            _enter_task(loop, task)  # type: ignore[misc]
        except RuntimeError:
            return False  # the loop is not running here (3.14 refuses then): the task handles it
        try:
            try:
                coro = context.run(self.handler, actor_context, msg)
                if type(coro) is CoroutineType:
                    result = run_step(coro, context)
                    if result is same:
                        return True
                    if type(result) is Suspended:
                        started, result = coro, result.yielded
                    else:
                        started = None
                else:
                    started, result = coro, NOT_STARTED
            except (Exception, asyncio.CancelledError) as exc:
                started, result = FAILED, exc  # the task raises a CancelledError again
        finally:
            _leave_task(loop, task)  # type: ignore[misc]
        take_over(started, result, msg)
        return True


class Suspended:
    """What :func:`run_step` returns when the coroutine awaited instead of returning."""

    __slots__ = ("yielded",)

    def __init__(self, yielded: Any) -> None:
        #: what the coroutine yielded to its driver (the future it waits on, or None)
        self.yielded = yielded


def run_step(coro: Coroutine[Any, Any, Any], context: contextvars.Context) -> Any:
    """Run ``coro`` up to its first suspension, inside ``context``.

    Returns the coroutine's result when it returned, or a :class:`Suspended` with
    what it yielded when it awaited something; what it raised propagates.  The
    Cython twin gets the result without raising StopIteration.

    >>> async def done() -> str:
    ...     return "done"
    >>> run_step(done(), contextvars.copy_context())
    'done'
    """
    try:
        return Suspended(context.run(coro.send, None))
    except StopIteration as finished:
        return finished.value
