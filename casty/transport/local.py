"""In-process routing by actor path: the pure-Python twin of ``casty._fast.local``.

Routing rules for ``deliver(address, msg)`` and ``deliver_path(path, msg, nbytes)``,
in order:

1. a handler is registered for the path: call it with ``msg``.  An actor's
   :class:`~casty.transport.mailbox.Mailbox`: ``deliver`` drops the message when
   the queue is at ``capacity`` messages; ``deliver_path`` always queues it, with
   its ``nbytes`` charged to the mailbox when known (:meth:`Mailbox.put_sized`), and
   returns the mailbox when it is now full (``capacity`` messages or
   ``byte_capacity`` bytes) so that the peer's reader pauses until
   :meth:`Mailbox.on_space`.  Local senders are charged no bytes;
2. the path was unregistered (a dead actor): drop;
3. the path is under ``/temp/`` (an ask's reply path, registered only by the ask
   itself): drop (``no_such_ask``), never buffered, never given to a factory;
4. a path factory's prefix matches: call the factory, then route again once
   (handler, else dead-drop, else on to the buffer);
5. the path's pending buffer has room, in messages (``max_pending_per_path``),
   paths (``max_pending_paths``) and bytes over all buffers
   (``max_pending_bytes``): buffer it (flushed in order by ``register``);
6. otherwise drop.

A buffered message is charged ``nbytes`` (the inbound handler passes the frame
body length) or, when that is not given, ``sys.getsizeof(msg)``: a shallow size,
so a local sender's containers count only their own header and pointers.  A
buffer is dropped ``pending_ttl`` seconds after its first message if no handler
registered (``expired``, one log line per buffer).  Messages still queued in an
actor's mailbox when it stops are counted as ``stopped`` (logged by the actor, one
line per actor, through :func:`log_stopped`).  Expiry needs no further
traffic: while an event loop runs, one loop timer is set for the oldest buffer;
without one, due buffers are expired at the next ``deliver``/``register``.

Every drop is counted in :attr:`LocalTransport.drops` and logged (at WARNING on
the 1st, 2nd, 4th, 8th... drop of each kind, so a flood cannot flood the log).

Handlers and factories run inline: whatever they raise propagates to the caller
of ``deliver`` (or of ``register``, for a flushed message).

Threads: once :meth:`LocalTransport.bind_loop` named the event loop the handlers run
on (an ActorSystem does so when it first spawns or asks), ``deliver`` called from any
other thread does not run the handler there: it hands the delivery to that loop with
``loop.call_soon_threadsafe``, so one thread's messages keep their order and the
handler runs on the loop's thread (an error it raises then goes to the loop's
exception handler, not the caller).  That thread check is one ``threading.get_ident()``
per ``deliver``.  Every other method (``deliver_path``, ``register``, ...) belongs to the
loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from asyncio import events
from collections import OrderedDict, deque
from collections.abc import Callable
from threading import get_ident
from typing import Any, Protocol, runtime_checkable

from casty.address import TEMP_PREFIX, ActorAddress, loggable
from casty.transport.mailbox import Mailbox, ReadState

__all__ = [
    "DROP_DEAD",
    "DROP_EXPIRED",
    "DROP_MAILBOX_FULL",
    "DROP_NO_SUCH_ASK",
    "DROP_OVERFLOW",
    "DROP_PENDING_BYTES",
    "DROP_STOPPED",
    "DROP_TOO_MANY_PATHS",
    "LocalTransport",
    "MessageTransport",
]

log = logging.getLogger("casty.transport.local")

DROP_DEAD = "dead"
DROP_OVERFLOW = "overflow"
DROP_TOO_MANY_PATHS = "too_many_paths"
DROP_NO_SUCH_ASK = "no_such_ask"
DROP_PENDING_BYTES = "pending_bytes"
DROP_EXPIRED = "expired"
DROP_MAILBOX_FULL = "mailbox_full"
DROP_STOPPED = "stopped"
DROP_REASONS = (
    DROP_DEAD,
    DROP_OVERFLOW,
    DROP_TOO_MANY_PATHS,
    DROP_NO_SUCH_ASK,
    DROP_PENDING_BYTES,
    DROP_EXPIRED,
    DROP_MAILBOX_FULL,
    DROP_STOPPED,
)
#: seconds added to a buffer's expiry timer: a loop whose clock lags (uvloop caches it
#: per iteration) would otherwise fire just before the buffer is due, and re-arm
TIMER_SLACK = 0.001


@runtime_checkable
class MessageTransport(Protocol):
    """Anything with ``deliver(address, msg)``.

    >>> class NullTransport:
    ...     def deliver(self, address: ActorAddress, msg: object) -> None:
    ...         pass  # discard all messages
    >>> isinstance(NullTransport(), MessageTransport)
    True
    """

    def deliver(self, address: ActorAddress, msg: Any) -> None:
        """Deliver ``msg`` to the actor at ``address``."""


def check_limit(name: str, value: object) -> int:
    """Return ``value`` if it is a non-negative int, else raise ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def check_ttl(value: object) -> float:
    """Return ``value`` as a float if it is a positive number of seconds (``math.inf``:
    never), else raise ValueError naming ``pending_ttl``."""
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not value > 0  # also refuses NaN
    ):
        raise ValueError(f"pending_ttl must be a positive number of seconds or math.inf, got {value!r}")
    return float(value)


def message_size(msg: Any, nbytes: int) -> int:
    """What buffering ``msg`` is charged: ``nbytes``, or ``sys.getsizeof(msg)`` (shallow)
    when ``nbytes`` is negative (not known)."""
    return nbytes if nbytes >= 0 else sys.getsizeof(msg)


class PendingBuffer:
    """Messages waiting for a path's handler, their charged bytes, and when they expire."""

    __slots__ = ("expires", "msgs", "nbytes")

    def __init__(self, expires: float) -> None:
        self.msgs: deque[Any] = deque()
        self.nbytes = 0
        self.expires = expires


def log_dropped(drops: dict[str, int], reason: str, path: str, count: int, why: str) -> None:
    """Count ``count`` drops of ``reason`` at once; WARNING when the total passes a power of two."""
    before = drops.get(reason, 0)
    after = drops[reason] = before + count
    level = logging.WARNING if after.bit_length() > before.bit_length() else logging.DEBUG
    log.log(
        level, "dropped %d messages to %s: %s (%s); %d dropped for this reason so far",
        count, loggable(path), why, reason, after,
    )


def log_expired(drops: dict[str, int], path: str, count: int, ttl: float) -> None:
    """Count ``count`` drops of an expired buffer; WARNING when the total passes a power of two."""
    log_dropped(drops, DROP_EXPIRED, path, count, f"no handler registered within {ttl:g}s")


def log_stopped(drops: dict[str, int], path: str, count: int) -> None:
    """Count the ``count`` messages still queued for an actor that stopped; WARNING when
    the total passes a power of two."""
    log_dropped(drops, DROP_STOPPED, path, count, "the actor stopped before handling them")


def log_drop(drops: dict[str, int], reason: str, path: str) -> None:
    """Count one drop of ``reason``; log it when the count is a power of two."""
    n = drops[reason] + 1
    drops[reason] = n
    if n & (n - 1) == 0:
        log.warning(
            "dropped a message to %s (%s); %d dropped for this reason so far", loggable(path), reason, n
        )
    else:
        log.debug("dropped a message to %s (%s)", loggable(path), reason)


def hand_to_loop(
    loop: asyncio.AbstractEventLoop, deliver: Callable[[ActorAddress, Any], Any],
    address: ActorAddress, msg: Any,
) -> None:
    """Run ``deliver(address, msg)`` on ``loop`` (called from another thread): FIFO, so one
    thread's messages keep their order.  RuntimeError naming the target if ``loop`` is closed."""
    try:
        loop.call_soon_threadsafe(deliver, address, msg)
    except RuntimeError:
        if not loop.is_closed():
            raise
        raise RuntimeError(
            f"cannot tell {address.to_uri()} from this thread: the event loop its actor system "
            f"ran on is closed"
        ) from None


def log_flush_error(path: str, exc: BaseException) -> None:
    """Log a handler error raised while flushing, after the first (which propagates)."""
    log.error("handler for %s raised while flushing its buffer", loggable(path), exc_info=exc)


def wake_waiters(waiters: dict[str, list[asyncio.Future[None]]], path: str) -> None:
    """Resolve every ``wait_for_path(path)`` waiting in ``waiters``."""
    futures = waiters.pop(path, None)
    if futures:
        for fut in futures:
            if not fut.done():
                fut.set_result(None)


async def wait_registered(
    handlers: dict[str, Any], waiters: dict[str, list[asyncio.Future[None]]], path: str
) -> None:
    """Wait until ``path`` is in ``handlers``; a cancelled wait leaves nothing behind."""
    if path in handlers:
        return
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters.setdefault(path, []).append(fut)
    try:
        await fut
    finally:
        futures = waiters.get(path)
        if futures is not None and fut in futures:
            futures.remove(fut)
            if not futures:
                del waiters[path]


class LocalTransport:
    """In-process message transport that routes by actor path.

    Messages to unregistered paths are buffered (bounded, expiring: see the module)
    until a handler registers; messages to unregistered (dead) paths are dropped.

    >>> transport = LocalTransport()
    >>> received = []
    >>> transport.register("/user/actor", received.append)
    >>> transport.deliver(ActorAddress(system="sys", path="/user/actor"), "hello")
    >>> received
    ['hello']

    ``max_dead_paths`` bounds the memory of dead paths (the least recently
    unregistered is forgotten first), ``max_pending_paths`` how many distinct
    unregistered paths may hold a buffer, ``max_pending_bytes`` the bytes charged
    to all buffers together, and ``pending_ttl`` how long a buffer waits for its
    handler.  Handlers run inline: an exception a handler raises propagates to the
    caller of :meth:`deliver`.
    """

    def __init__(
        self,
        *,
        max_pending_per_path: int = 64,
        max_pending_paths: int = 10_000,
        max_dead_paths: int = 100_000,
        max_pending_bytes: int = 8 * 1024 * 1024,
        pending_ttl: float = 5.0,
    ) -> None:
        self._max_pending = check_limit("max_pending_per_path", max_pending_per_path)
        self._max_pending_paths = check_limit("max_pending_paths", max_pending_paths)
        self._max_dead = check_limit("max_dead_paths", max_dead_paths)
        self._max_pending_bytes = check_limit("max_pending_bytes", max_pending_bytes)
        self._ttl = check_ttl(pending_ttl)
        #: whether the inbound read being split holds more frames after the one being
        #: delivered: the frame protocols of a node delivering here set it, the mailboxes
        #: registered here read it (see ``casty.transport.mailbox.ReadState``)
        self.read_state = ReadState()
        self._handlers: dict[str, Callable[[Any], None]] = {}
        # Oldest first (buffers expire in creation order); never holds an empty buffer.
        self._pending: OrderedDict[str, PendingBuffer] = OrderedDict()
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None  # expires the oldest buffer
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        # An ordered set, oldest evicted first.  Not a plain dict: evicting its first key
        # (next(iter(d))) walks past every key deleted before it, O(n) once the set is full.
        self._dead: OrderedDict[str, None] = OrderedDict()
        self._factories: list[tuple[str, Callable[[str], None]]] = []
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.drops: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None  # get_ident() of the thread running _loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop handlers run on, as :meth:`bind_loop` named it (None: not bound)."""
        return self._loop

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Name the event loop the handlers run on; call it from that loop's thread.

        From then on :meth:`deliver` called from any other thread is handed to
        ``loop`` with ``call_soon_threadsafe`` (in that thread's order) instead of
        running the handler inline.
        """
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"bind_loop needs an asyncio event loop, got {loop!r:.100}")
        self._loop = loop
        self._loop_thread = get_ident()

    @property
    def dropped(self) -> int:
        """Total messages dropped, all reasons."""
        return sum(self.drops.values())

    @property
    def pending_bytes(self) -> int:
        """Bytes charged to all pending buffers now (see the module for the charge)."""
        return self._pending_bytes

    def register_path_factory(self, prefix: str, factory: Callable[[str], None]) -> None:
        """Lazily spawn handlers: ``factory(path)`` runs for unknown paths under ``prefix``.

        The factory should ``register(path, ...)``; if it does not, the message is
        buffered (or dropped as dead if the factory unregistered the path).  Paths
        under ``/temp/`` never reach a factory.
        """
        self._factories.append((prefix, factory))

    def register(self, path: str, handler: Callable[[Any], None]) -> None:
        """Route ``path`` to ``handler``, flushing any buffered messages to it in order.

        Each buffered message is routed as ``deliver_path`` would route it, so one
        the handler raises on does not lose the rest: after the flush the first
        exception is re-raised (later ones are logged).  Waiters are woken first.
        A buffer past its time to live is dropped, not flushed.
        """
        self._handlers[path] = handler
        self._dead.pop(path, None)
        pending = None
        if self._pending:
            self._expire(time.monotonic())
            pending = self._take_pending(path)
        wake_waiters(self._waiters, path)
        if pending:
            self._flush(path, pending)

    def _take_pending(self, path: str) -> deque[Any] | None:
        """Remove ``path``'s buffer, giving its bytes back; its messages, if it had one."""
        buffer = self._pending.pop(path, None)
        if buffer is None:
            return None
        self._pending_bytes -= buffer.nbytes
        if not self._pending:
            self._cancel_timer()
        return buffer.msgs

    def _flush(self, path: str, pending: deque[Any]) -> None:
        error: Exception | None = None
        while pending:
            msg = pending.popleft()
            try:
                # Routed afresh: the handler may unregister or replace itself mid-flush.
                self.deliver_path(path, msg)
            except Exception as exc:
                if error is None:
                    error = exc
                else:
                    log_flush_error(path, exc)
        if error is not None:
            try:
                raise error
            finally:
                error = None  # break the frame <-> traceback cycle

    def unregister(self, path: str) -> None:
        """Remove the handler for ``path`` and mark it dead; later messages are dropped.

        Messages still buffered for ``path`` are dropped (and counted) too.
        """
        self._handlers.pop(path, None)
        pending = self._take_pending(path) if self._pending else None
        if pending:
            for _ in range(len(pending)):
                log_drop(self.drops, DROP_DEAD, path)
        dead = self._dead
        dead[path] = None
        dead.move_to_end(path)  # the most recently unregistered is kept longest
        if len(dead) > self._max_dead:
            dead.popitem(last=False)

    def is_dead(self, path: str) -> bool:
        """True when ``path`` was unregistered (and not registered again): messages to it are dropped."""
        return path in self._dead

    def is_registered(self, path: str) -> bool:
        """True when a handler is registered for ``path``."""
        return path in self._handlers

    async def wait_for_path(self, path: str) -> None:
        """Wait until a handler is registered for ``path`` (at once if it already is)."""
        await wait_registered(self._handlers, self._waiters, path)

    def deliver(self, address: ActorAddress, msg: Any) -> None:
        """Deliver ``msg`` to the handler for ``address.path`` (see the module rules).

        A mailbox at capacity refuses it (dropped as ``mailbox_full``).  The handler
        runs inline; an exception it raises propagates to the caller.  From a thread
        other than the bound loop's, it is handed to that loop instead (see the module).
        """
        if get_ident() != self._loop_thread and self._loop is not None:
            hand_to_loop(self._loop, self.deliver, address, msg)
            return
        path = address.path
        handler = self._handlers.get(path)
        if handler is not None:
            if type(handler) is Mailbox:
                if not handler.offer(msg):
                    log_drop(self.drops, DROP_MAILBOX_FULL, path)
                return
            handler(msg)
            return
        self._deliver_unrouted(path, msg, -1)

    def deliver_path(self, path: str, msg: Any, nbytes: int = -1) -> Mailbox | None:
        """Like :meth:`deliver`, addressed by path alone, for messages from peers.

        ``nbytes`` is the message's wire size, charged to a mailbox while it is
        queued and to a buffer (negative: not known; a buffer is then charged
        ``sys.getsizeof(msg)``, a mailbox nothing).  A mailbox is never refused: it
        is returned when, with ``msg`` queued, it is :attr:`Mailbox.full`, so that
        the caller pauses until :meth:`Mailbox.on_space`; else None.
        """
        handler = self._handlers.get(path)
        if handler is not None:
            if type(handler) is Mailbox:
                if nbytes >= 0:
                    return handler if handler.put_sized(msg, nbytes) else None
                handler.put(msg)
                return handler if handler.full else None
            handler(msg)
            return None
        self._deliver_unrouted(path, msg, nbytes)
        return None

    def _deliver_unrouted(self, path: str, msg: Any, nbytes: int) -> None:
        if path in self._dead:
            log_drop(self.drops, DROP_DEAD, path)
            return
        if isinstance(path, str) and path.startswith(TEMP_PREFIX):
            # Only ask registers these, before its request leaves: nothing will come later.
            log_drop(self.drops, DROP_NO_SUCH_ASK, path)
            return
        for prefix, factory in self._factories:
            if path.startswith(prefix):
                factory(path)
                handler = self._handlers.get(path)
                if handler is not None:
                    # A new mailbox: far from full.
                    if nbytes >= 0 and type(handler) is Mailbox:
                        handler.put_sized(msg, nbytes)
                    else:
                        handler(msg)
                    return
                if path in self._dead:
                    log_drop(self.drops, DROP_DEAD, path)
                    return
                break
        self._buffer(path, msg, message_size(msg, nbytes))

    def _buffer(self, path: str, msg: Any, size: int) -> None:
        pending = self._pending
        if pending:
            self._expire(time.monotonic())
        buffer = pending.get(path)
        if buffer is None:
            if len(pending) >= self._max_pending_paths:
                log_drop(self.drops, DROP_TOO_MANY_PATHS, path)
                return
            if self._max_pending == 0:
                log_drop(self.drops, DROP_OVERFLOW, path)
                return
        elif len(buffer.msgs) >= self._max_pending:
            log_drop(self.drops, DROP_OVERFLOW, path)
            return
        if size > self._max_pending_bytes - self._pending_bytes:
            log_drop(self.drops, DROP_PENDING_BYTES, path)
            return
        if buffer is None:
            buffer = pending[path] = PendingBuffer(time.monotonic() + self._ttl)
            self._arm_timer()
        buffer.msgs.append(msg)
        buffer.nbytes += size
        self._pending_bytes += size

    def _expire(self, now: float) -> None:
        """Drop every buffer due at ``now`` (they are in creation order, so oldest first)."""
        pending = self._pending
        while pending:
            path = next(iter(pending))
            buffer = pending[path]
            if buffer.expires > now:
                return
            del pending[path]
            self._pending_bytes -= buffer.nbytes
            log_expired(self.drops, path, len(buffer.msgs), self._ttl)
        self._cancel_timer()

    def _arm_timer(self) -> None:
        """Set the one expiry timer for the oldest buffer, on the running loop (if any)."""
        if not self._pending or self._ttl == math.inf:
            return
        loop = events._get_running_loop()
        if loop is None:
            return  # expired lazily by deliver/register instead
        if self._timer is not None:
            if self._timer_loop is loop:
                return
            self._cancel_timer()  # left over from a loop that is gone
        oldest = next(iter(self._pending.values()))
        delay = max(0.0, oldest.expires - time.monotonic()) + TIMER_SLACK
        self._timer = loop.call_later(delay, self._on_timer)
        self._timer_loop = loop

    def _on_timer(self) -> None:
        self._timer = self._timer_loop = None
        self._expire(time.monotonic())
        self._arm_timer()

    def _cancel_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = self._timer_loop = None
            timer.cancel()
