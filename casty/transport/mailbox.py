"""Mailbox: an actor's queue of messages, and the wake-up for the loop draining it.

The LocalTransport delivers into it inline (it is the handler registered for the
actor's path), so it is on the path of every message: ``put`` is one
``deque.append`` while the actor is busy, plus a future's ``set_result`` when the
actor waits for mail.  This is the pure twin of ``casty._fast.mailbox``, whose
Mailbox the Cython LocalTransport calls at C level.

Eager handling (see ``casty.eager``): once armed, a message that finds the actor
waiting, put from outside every task and not while the :class:`ReadState` it was
armed with says more frames of the read follow, is handled right in ``put``, as
the actor's task: :func:`casty.eager.begin` calls the handler in the task's
context, with the task marked current (not when the task was cancelled meanwhile:
its waiter is then done).  A handler that returns the ``same`` marker without
suspending is done there; for anything else the mailbox calls
``take_over(msg, outcome)`` with the :data:`~casty.eager.Outcome` and wakes the
actor's task, which finishes the message.

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
from collections import deque
from collections.abc import Callable
from typing import Any

import casty.eager
from casty.eager import HOOKS, Returned, TakeOver, begin
from casty.transport.mailbox_rules import (
    SpaceCallback,
    charge_from,
    check_capacity,
    read_state_error,
    run_space_callbacks,
)

__all__ = ["Mailbox", "ReadState"]

_enter_task, _leave_task, _current_task = (
    HOOKS[:3] if HOOKS is not None else (None, None, asyncio.current_task)
)

Handler = Callable[[Any, Any], Any]


class ReadState:
    """Whether the inbound read being split holds more frames after the one being
    delivered.

    One per LocalTransport (``LocalTransport.read_state``): the frame protocols of the
    node delivering there set :attr:`more` around each frame they deliver, and the
    mailboxes registered there read it (each actor arms its mailbox with it): an idle
    actor then queues the message for its task instead of handling it eagerly, so a
    stream is handled in batches (a request and its reply still travel eagerly, one
    per read).
    """

    __slots__ = ("more",)

    def __init__(self) -> None:
        #: True while a frame splitter delivers a frame that is not its read's last
        self.more = False


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
        "_read",
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
        self._read = _QUIET  # the ReadState given to arm_eager
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
        elif self._eager is None or self._read.more or waiter.done() or not self._run_eager(msg):
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
            and not self._read.more
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
        read_state: ReadState | None = None,
    ) -> bool:
        """Handle messages eagerly from now on, as ``task`` in ``context`` (see the module).

        ``handler(actor_context, msg)`` is called; ``same`` is the result that needs
        nothing more.  While ``read_state.more`` is set, messages are queued instead
        (None: never).  Returns False, and changes nothing, where asyncio lacks what
        this needs (:data:`casty.eager.EAGER`).
        """
        if read_state is not None and type(read_state) is not ReadState:
            raise read_state_error(ReadState, read_state)
        if not casty.eager.EAGER:
            return False
        self._eager = (task, loop, context, actor_context, same, take_over)
        self._read = _QUIET if read_state is None else read_state
        return True

    def disarm_eager(self) -> None:
        """Stop eager handling and let go of what :meth:`arm_eager` was given."""
        self._eager = None
        self._read = _QUIET
        self.handler = None

    def _run_eager(self, msg: Any) -> bool:
        task, loop, context, actor_context, same, take_over = self._eager  # type: ignore[misc]
        if _current_task(loop) is not None:
            return False  # put from inside a task: that task goes on, ours wakes later
        try:
            _enter_task(loop, task)  # type: ignore[misc]
        except RuntimeError:
            return False  # the loop is not running here (3.14 refuses then): the task handles it
        try:
            outcome = begin(self.handler, actor_context, msg, context)  # type: ignore[arg-type]
        finally:
            _leave_task(loop, task)  # type: ignore[misc]
        if type(outcome) is not Returned or outcome.behavior is not same:
            take_over(msg, outcome)
        return True


_QUIET = ReadState()  # never set: what a mailbox reads before it is armed with a system's
