"""ActorCell: one actor's mailbox, current behaviour and message loop.

Each actor is one asyncio Task draining a :class:`Mailbox` one message at a
time, in arrival order.  The mailbox is the handler registered for the actor's
path in the LocalTransport: it appends and, only when the loop is idle, wakes it
through a single future; a busy actor costs one ``deque.append`` per message.
Consecutive messages are handled without a trip through the event loop, except
that after ``BATCH`` of them in a row the loop yields once, so an actor that keeps
feeding itself cannot starve every other task.

Eager handling: a message that finds the actor waiting, delivered from outside
every task (an inbound TCP read, a timer), runs the handler right there, as the
actor's task (``asyncio.current_task()`` and context variables are the task's),
instead of waking the task for the next loop iteration: a request and its reply
then leave in the same read callback, with no task switch.  What the handler
does beyond returning ``same`` without suspending (awaiting, raising, returning
a new behaviour) the task finishes before any later message.  From inside a
task (another actor, an ``ask``) a message is queued as above, so one actor's
handler never runs nested inside another's; so is every frame of a read but the
last, so that a stream is handled in batches by the task.  The mailbox does the
handling (``casty.transport.mailbox``, at C level in its Cython twin), and hands
what is left as an outcome of ``casty.eager``.

Capacity: the mailbox holds at most ``ActorSystem(mailbox_capacity=...)`` messages
from local senders (more are dropped and counted by the LocalTransport); a peer's
messages are always queued, their wire bytes counted, and its reader is paused
once the mailbox holds ``mailbox_capacity`` messages or ``mailbox_bytes`` bytes of
peers' messages, until the loop has drained both to half (see
``casty.transport.mailbox``).

Failure policy: a handler (or setup, or pre_start) that raises is logged on
``casty.actor`` with the actor path.  Without :meth:`Behaviors.supervise` the
actor then stops (children first, then post_stop hooks, then its path is
unregistered for good); with it, the actor restarts.  The message that failed
is not retried.  Stopping was chosen over "log and carry on" because state that
a handler left half-updated should not see more messages unless the user asked
for a restart.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import casty.eager
from casty._impl import Mailbox, ReadState
from casty.behavior import (
    SAME,
    STOPPED,
    UNHANDLED,
    Behavior,
    IgnoreBehavior,
    LifecycleBehavior,
    ReceiveBehavior,
    SetupBehavior,
    SupervisedBehavior,
)
from casty.context import ActorContext
from casty.eager import NotACoroutine, Outcome, Raised, Returned, Suspended
from casty.ref import ActorRef
from casty.transport.local import log_stopped

if TYPE_CHECKING:
    from casty.system import ActorSystem

__all__ = ["BATCH", "ActorCell", "validate_name"]

log = logging.getLogger("casty.actor")

M = TypeVar("M")
C = TypeVar("C")

BATCH = 1024
"""Messages handled back to back before the actor yields to the event loop once."""

_Handler = Callable[[ActorContext[Any], Any], Awaitable[Behavior[Any]]]
_Hook = Callable[[ActorContext[Any]], Awaitable[None]]
_NO_MESSAGE = object()

def validate_name(name: object) -> str:
    """Return ``name`` if it can name an actor: a non-empty str without '/' or whitespace.

    >>> validate_name("worker-1")
    'worker-1'
    >>> validate_name("a/b")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: invalid actor name 'a/b': must be non-empty, without '/', ...
    """
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or not name.isprintable()
        or any(ch.isspace() for ch in name)
    ):
        raise ValueError(
            f"invalid actor name {name!r}: must be non-empty, without '/', whitespace or "
            f"control characters"
        )
    return name


async def _ignore(ctx: ActorContext[Any], msg: Any) -> Behavior[Any]:
    return SAME


async def _not_started(ctx: ActorContext[Any], msg: Any) -> Behavior[Any]:
    raise RuntimeError(f"actor {ctx.path} has no behaviour yet")  # unreachable by design


class _Supervision:
    """Restart bookkeeping for one :class:`SupervisedBehavior`."""

    __slots__ = ("behavior", "mark", "restarts")

    def __init__(self, behavior: SupervisedBehavior[Any], mark: int) -> None:
        self.behavior = behavior
        self.mark = mark  # post_stop hooks from this index on belong to the supervised part
        self.restarts: deque[float] = deque()

    def may_restart(self, now: float) -> bool:
        """Count one restart at ``now`` unless that exceeds the budget in the window."""
        horizon = now - self.behavior.within
        restarts = self.restarts
        while restarts and restarts[0] <= horizon:
            restarts.popleft()
        if len(restarts) >= self.behavior.max_restarts:
            return False
        restarts.append(now)
        return True


class ActorCell(Generic[M]):
    """The runtime of one actor; created by the system, not by users."""

    __slots__ = (
        "_cont",
        "_context",
        "_finalizing",
        "_handler",
        "_initial",
        "_loop",
        "_post_stop",
        "_stop_requested",
        "_supervision",
        "_task",
        "children",
        "context",
        "mailbox",
        "name",
        "parent",
        "path",
        "ref",
        "system",
        "terminated",
    )

    def __init__(
        self,
        system: ActorSystem,
        path: str,
        behavior: Behavior[M],
        parent: ActorCell[Any] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.system = system
        self.path = path
        self.name = path.rsplit("/", 1)[-1]
        self.parent = parent
        self.children: dict[str, ActorCell[Any]] = {}
        self.ref: ActorRef[M] = system.make_ref(system.address_of(path))
        self.context: ActorContext[M] = ActorContext(self, self.ref, system)
        self.terminated: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._initial = behavior
        self.mailbox = Mailbox(system.mailbox_capacity, system.mailbox_bytes)
        self._handler: _Handler = _not_started
        self._post_stop: list[_Hook] = []
        self._supervision: _Supervision | None = None
        self._stop_requested = False
        self._finalizing = False
        self._task: asyncio.Task[None] | None = None
        self._context = contextvars.copy_context()
        # What the mailbox's take_over hands on (see casty.eager): a message that eager
        # handling started and the task finishes, with what the start left.
        self._cont: tuple[Any, Outcome] | None = None

    def __repr__(self) -> str:
        return f"ActorCell({self.path!r})"

    # -- delivery ----------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once a stop was requested (the actor may still be finishing)."""
        return self._stop_requested

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The asyncio Task running this actor."""
        return self._task

    @property
    def finalizing(self) -> bool:
        """True while the actor stops its children and runs its post_stop hooks."""
        return self._finalizing

    def start(self) -> None:
        """Start the actor's Task (the system calls this once)."""
        loop = self._loop
        name = f"casty-actor:{self.path}"
        if casty.eager.EAGER and loop.get_task_factory() is None:
            # Eager handling runs handler code in the task's context, so the task gets
            # one it can be handed; a custom task factory may not take that argument.
            task = self._task = loop.create_task(self._run(), name=name, context=self._context)
            read = getattr(self.system.local, "read_state", None)
            if type(read) is not ReadState:
                read = None  # a transport of one's own, or of the other twin: no batching hint
            self.mailbox.arm_eager(task, loop, self._context, self.context, SAME, self._take_over, read)
        else:
            self._task = loop.create_task(self._run(), name=name)

    def _take_over(self, msg: Any, outcome: Outcome) -> None:
        """The mailbox began handling ``msg`` eagerly; the task is to finish it."""
        self._cont = (msg, outcome)
        self.mailbox.wake()

    def request_stop(self) -> None:
        """Ask the actor to stop after the message it is handling (idempotent)."""
        if self._stop_requested:
            return
        self._stop_requested = True
        self.mailbox.wake()

    # -- context operations --------------------------------------------------------

    def spawn_child(self, behavior: Behavior[C], name: str) -> ActorRef[C]:
        validate_name(name)
        if self._stop_requested:
            raise RuntimeError(f"actor {self.path} is stopping; cannot spawn child {name!r}")
        if name in self.children:
            raise ValueError(f"actor {self.path} already has a live child named {name!r}")
        cell = self.system._spawn_cell(behavior, f"{self.path}/{name}", self)
        self.children[name] = cell
        return cell.ref

    def stop_ref(self, ref: ActorRef[Any]) -> None:
        address = getattr(ref, "address", None)
        path = getattr(address, "path", None)
        if getattr(address, "system", None) == self.system.name:
            if path == self.path:
                self.request_stop()
                return
            if isinstance(path, str) and path.rpartition("/")[0] == self.path:
                child = self.children.get(path.rpartition("/")[2])
                if child is not None:
                    child.request_stop()
                    return
                return  # an already stopped child: nothing to do
        shown = getattr(ref, "id", ref)
        raise ValueError(f"actor {self.path} can stop only itself or its children, not {shown!r}")

    # -- the loop --------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            # Started even when a stop came first, so setup/pre_start and post_stop pair up.
            await self._start_guarded(self._initial)
            box = self.mailbox
            mailbox = box.queue
            ctx = self.context
            budget = BATCH
            while not self._stop_requested:
                if mailbox:
                    if budget:
                        budget -= 1
                    else:
                        budget = BATCH
                        await asyncio.sleep(0)  # let other tasks run, then carry on
                        continue
                    msg = mailbox.popleft()
                    if box.space_wanted:
                        box.taken()  # releases a peer's bytes; a paused peer may send again
                    try:
                        nxt = await self._handler(ctx, msg)
                    except Exception as exc:
                        await self._fail(exc, msg)
                        continue
                    if nxt is not SAME:
                        await self._become(nxt, msg)
                else:
                    budget = BATCH
                    try:
                        await box.wait(self._loop)
                    except asyncio.CancelledError as cancel:
                        # Cancelled while waking to finish an eager message: the cancel
                        # belongs to that handler, as if the task had been running it.
                        if not self._has_suspended_handler():
                            raise
                        await self._finish_eager(cancel)
                        continue
                    if self._cont is not None:
                        await self._finish_eager()
        except asyncio.CancelledError:
            # Only a shutdown whose grace period ran out cancels an actor; still clean up.
            self._uncancel()
            self.mailbox.forget_waiter()
            self._drop_eager()
            log.warning("actor %s was cancelled while busy; stopping it", self.path,
                        extra={"actor_path": self.path})
        finally:
            await self._finalize()

    def _has_suspended_handler(self) -> bool:
        cont = self._cont
        return cont is not None and type(cont[1]) is Suspended

    async def _finish_eager(self, cancel: BaseException | None = None) -> None:
        """Finish the message that eager handling started (see :meth:`_take_over`);
        ``cancel``, thrown into its suspended handler first."""
        msg, outcome = self._cont  # type: ignore[misc]
        self._cont = None
        if type(outcome) is Raised:
            if not isinstance(outcome.exc, Exception):
                raise outcome.exc  # a CancelledError stops the actor, as from inside the task
            await self._fail(outcome.exc, msg)
            return
        if type(outcome) is Returned:
            result = outcome.behavior
        else:
            try:
                if type(outcome) is Suspended:
                    result = await outcome.resume(cancel)
                else:
                    assert type(outcome) is NotACoroutine
                    result = await outcome.awaitable
            except Exception as exc:
                await self._fail(exc, msg)
                return
        if result is not SAME:
            await self._become(result, msg)

    def _drop_eager(self) -> None:
        """Close a handler that eager handling started and the task never resumed."""
        cont, self._cont = self._cont, None
        if cont is not None and type(cont[1]) is Suspended:
            try:
                cont[1].coro.close()
            except Exception:
                log.exception("closing the handler of actor %s failed", self.path,
                              extra={"actor_path": self.path})

    async def _become(self, nxt: Behavior[Any], msg: Any) -> None:
        if nxt is UNHANDLED:
            log.debug("actor %s did not handle a message of type %s", self.path,
                      type(msg).__qualname__, extra={"actor_path": self.path})
        elif nxt is STOPPED:
            self.request_stop()
        else:
            await self._start_guarded(nxt)

    async def _start_guarded(self, behavior: Behavior[Any]) -> None:
        try:
            await self._start(behavior)
        except Exception as exc:
            await self._fail(exc, _NO_MESSAGE)

    async def _start(self, b: Behavior[Any]) -> None:
        """Run ``b`` down to a message handler: setups, pre_start hooks, supervision."""
        ctx = self.context
        while True:
            if isinstance(b, ReceiveBehavior):
                self._handler = self.mailbox.handler = b.handler
                return
            if isinstance(b, SetupBehavior):
                b = await b.factory(ctx)
                if b is SAME or b is UNHANDLED:
                    raise TypeError(
                        f"setup of actor {self.path} returned {b!r}; return the behaviour to run"
                    )
            elif isinstance(b, LifecycleBehavior):
                if b.pre_start is not None:
                    await b.pre_start(ctx)
                if b.post_stop is not None and b.post_stop not in self._post_stop:
                    self._post_stop.append(b.post_stop)
                b = b.behavior
            elif isinstance(b, SupervisedBehavior):
                self._supervision = _Supervision(b, len(self._post_stop))
                b = b.behavior
            elif isinstance(b, IgnoreBehavior):
                self._handler = self.mailbox.handler = _ignore
                return
            elif b is STOPPED:
                self.request_stop()
                return
            elif b is SAME or b is UNHANDLED:
                raise TypeError(f"actor {self.path} cannot start with {b!r}; it needs a behaviour")
            else:
                raise TypeError(
                    f"actor {self.path} expected a Behavior, got {type(b).__name__}: {b!r} "
                    f"(did a handler forget to return Behaviors.same()?)"
                )

    async def _fail(self, exc: BaseException, msg: Any) -> None:
        extra = {"actor_path": self.path}
        what = "starting" if msg is _NO_MESSAGE else f"handling a {type(msg).__qualname__}"
        while True:
            sup = self._supervision
            if self._stop_requested:
                log.error("actor %s failed while %s (it was stopping)", self.path, what,
                          exc_info=exc, extra=extra)
                return
            if sup is None:
                log.error("actor %s failed while %s; stopping it (not supervised)", self.path,
                          what, exc_info=exc, extra=extra)
                self.request_stop()
                return
            if not sup.may_restart(self._loop.time()):
                log.error(
                    "actor %s failed while %s after %d restarts within %gs; stopping it",
                    self.path, what, sup.behavior.max_restarts, sup.behavior.within,
                    exc_info=exc, extra=extra,
                )
                self.request_stop()
                return
            log.error("actor %s failed while %s; restarting it", self.path, what,
                      exc_info=exc, extra=extra)
            try:
                await self._stop_children()
                await self._run_post_stop(sup.mark)
                await self._start(sup.behavior.behavior)
                return
            except Exception as again:
                exc, what = again, "restarting"

    # -- stopping ------------------------------------------------------------------------

    async def _finalize(self) -> None:
        self._stop_requested = True
        self._finalizing = True
        self.system.death_watch.watcher_stopping(self.path)
        self.mailbox.forget_waiter()
        self.mailbox.disarm_eager()  # the cell and its mailbox no longer hold each other
        self.system.local.unregister(self.path)
        queue = self.mailbox.queue
        if queue:
            drops = getattr(self.system.local, "drops", None)  # a user's transport may keep none
            log_stopped(drops if drops is not None else {}, self.path, len(queue))
        # Drops the queue and its byte count; peers paused on it may read again (their
        # messages go dead).
        self.mailbox.close()
        try:
            await self._stop_children()
            await self._run_post_stop(0)
        finally:
            self.system._forget(self)
            # Its watchers are told once it is gone from the tables: a watch arriving
            # later finds no actor and is answered at once.
            self.system.death_watch.stopped(self.path)
            if not self.terminated.done():
                self.terminated.set_result(None)

    async def _stop_children(self) -> None:
        children = list(self.children.values())
        if not children:
            return
        for child in children:
            child.request_stop()
        try:
            await asyncio.wait([child.terminated for child in children])
        except asyncio.CancelledError:
            self._uncancel()
            log.warning("actor %s was cancelled waiting for its children to stop", self.path,
                        extra={"actor_path": self.path})

    async def _run_post_stop(self, mark: int) -> None:
        hooks = self._post_stop[mark:]
        del self._post_stop[mark:]
        for hook in reversed(hooks):  # innermost first, like nested context managers
            try:
                await hook(self.context)
            except asyncio.CancelledError:
                self._uncancel()
                log.warning("post_stop of actor %s was cancelled", self.path,
                            extra={"actor_path": self.path})
            except Exception:
                log.exception("post_stop of actor %s failed", self.path,
                              extra={"actor_path": self.path})

    def _uncancel(self) -> None:
        task = asyncio.current_task()
        if task is not None and task is self._task:
            task.uncancel()
