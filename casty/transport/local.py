"""In-process routing by actor path: the pure-Python twin of ``casty._fast.local``.

Routing rules for ``deliver(address, msg)``, in order:

1. a handler is registered for ``address.path``: call it with ``msg``;
2. the path was unregistered (a dead actor): drop;
3. a path factory's prefix matches: call the factory, then route again once
   (handler, else dead-drop, else on to the buffer);
4. the path's pending buffer has room: buffer (flushed in order by ``register``);
5. otherwise drop.

Every drop is counted in :attr:`LocalTransport.drops` and logged (at WARNING on
the 1st, 2nd, 4th, 8th... drop of each kind, so a flood cannot flood the log).

Handlers and factories run inline: whatever they raise propagates to the caller
of ``deliver`` (or of ``register``, for a flushed message).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from casty.address import ActorAddress

__all__ = [
    "DROP_DEAD",
    "DROP_OVERFLOW",
    "DROP_TOO_MANY_PATHS",
    "LocalTransport",
    "MessageTransport",
]

log = logging.getLogger("casty.transport.local")

DROP_DEAD = "dead"
DROP_OVERFLOW = "overflow"
DROP_TOO_MANY_PATHS = "too_many_paths"


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


def log_drop(drops: dict[str, int], reason: str, path: str) -> None:
    """Count one drop of ``reason``; log it when the count is a power of two."""
    n = drops[reason] + 1
    drops[reason] = n
    if n & (n - 1) == 0:
        log.warning(
            "dropped a message to %s (%s); %d dropped for this reason so far", path, reason, n
        )
    else:
        log.debug("dropped a message to %s (%s)", path, reason)


def log_flush_error(path: str, exc: BaseException) -> None:
    """Log a handler error raised while flushing, after the first (which propagates)."""
    log.error("handler for %s raised while flushing its buffer", path, exc_info=exc)


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

    Messages to unregistered paths are buffered (up to ``max_pending_per_path``)
    until a handler registers; messages to unregistered (dead) paths are dropped.

    >>> transport = LocalTransport()
    >>> received = []
    >>> transport.register("/user/actor", received.append)
    >>> transport.deliver(ActorAddress(system="sys", path="/user/actor"), "hello")
    >>> received
    ['hello']

    ``max_dead_paths`` bounds the memory of dead paths (the least recently
    unregistered is forgotten first) and ``max_pending_paths`` bounds how many
    distinct unregistered paths may hold a buffer.  Handlers run inline: an
    exception a handler raises propagates to the caller of :meth:`deliver`.
    """

    def __init__(
        self,
        *,
        max_pending_per_path: int = 64,
        max_pending_paths: int = 10_000,
        max_dead_paths: int = 100_000,
    ) -> None:
        self._max_pending = check_limit("max_pending_per_path", max_pending_per_path)
        self._max_pending_paths = check_limit("max_pending_paths", max_pending_paths)
        self._max_dead = check_limit("max_dead_paths", max_dead_paths)
        self._handlers: dict[str, Callable[[Any], None]] = {}
        self._pending: dict[str, deque[Any]] = {}  # never holds an empty buffer
        # An ordered set, oldest evicted first.  Not a plain dict: evicting its first key
        # (next(iter(d))) walks past every key deleted before it, O(n) once the set is full.
        self._dead: OrderedDict[str, None] = OrderedDict()
        self._factories: list[tuple[str, Callable[[str], None]]] = []
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.drops: dict[str, int] = {DROP_DEAD: 0, DROP_OVERFLOW: 0, DROP_TOO_MANY_PATHS: 0}

    @property
    def dropped(self) -> int:
        """Total messages dropped, all reasons."""
        return sum(self.drops.values())

    def register_path_factory(self, prefix: str, factory: Callable[[str], None]) -> None:
        """Lazily spawn handlers: ``factory(path)`` runs for unknown paths under ``prefix``.

        The factory should ``register(path, ...)``; if it does not, the message is
        buffered (or dropped as dead if the factory unregistered the path).
        """
        self._factories.append((prefix, factory))

    def register(self, path: str, handler: Callable[[Any], None]) -> None:
        """Route ``path`` to ``handler``, flushing any buffered messages to it in order.

        Each buffered message is routed as ``deliver_path`` would route it, so one
        the handler raises on does not lose the rest: after the flush the first
        exception is re-raised (later ones are logged).  Waiters are woken first.
        """
        self._handlers[path] = handler
        self._dead.pop(path, None)
        pending = self._pending.pop(path, None)
        wake_waiters(self._waiters, path)
        if pending:
            self._flush(path, pending)

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
        pending = self._pending.pop(path, None)
        if pending:
            for _ in range(len(pending)):
                log_drop(self.drops, DROP_DEAD, path)
        dead = self._dead
        dead[path] = None
        dead.move_to_end(path)  # the most recently unregistered is kept longest
        if len(dead) > self._max_dead:
            dead.popitem(last=False)

    def is_registered(self, path: str) -> bool:
        """True when a handler is registered for ``path``."""
        return path in self._handlers

    async def wait_for_path(self, path: str) -> None:
        """Wait until a handler is registered for ``path`` (at once if it already is)."""
        await wait_registered(self._handlers, self._waiters, path)

    def deliver(self, address: ActorAddress, msg: Any) -> None:
        """Deliver ``msg`` to the handler for ``address.path`` (see the module rules).

        The handler runs inline; an exception it raises propagates to the caller.
        """
        path = address.path
        handler = self._handlers.get(path)
        if handler is not None:
            handler(msg)
            return
        self._deliver_unrouted(path, msg)

    def deliver_path(self, path: str, msg: Any) -> None:
        """Like :meth:`deliver`, addressed by path alone."""
        handler = self._handlers.get(path)
        if handler is not None:
            handler(msg)
            return
        self._deliver_unrouted(path, msg)

    def _deliver_unrouted(self, path: str, msg: Any) -> None:
        if path in self._dead:
            log_drop(self.drops, DROP_DEAD, path)
            return
        for prefix, factory in self._factories:
            if path.startswith(prefix):
                factory(path)
                handler = self._handlers.get(path)
                if handler is not None:
                    handler(msg)
                    return
                if path in self._dead:
                    log_drop(self.drops, DROP_DEAD, path)
                    return
                break
        pending = self._pending.get(path)
        if pending is None:
            if len(self._pending) >= self._max_pending_paths:
                log_drop(self.drops, DROP_TOO_MANY_PATHS, path)
                return
            if self._max_pending == 0:
                log_drop(self.drops, DROP_OVERFLOW, path)
                return
            pending = self._pending[path] = deque()
        elif len(pending) >= self._max_pending:
            log_drop(self.drops, DROP_OVERFLOW, path)
            return
        pending.append(msg)
