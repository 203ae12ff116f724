"""Mailbox: an actor's queue of messages, and the wake-up for the loop draining it.

The LocalTransport delivers into it inline (it is the handler registered for the
actor's path), so it is on the path of every message: ``put`` is one
``deque.append`` while the actor is busy, plus a future's ``set_result`` when the
actor waits for mail.  This is the pure twin of ``casty._fast.mailbox``, whose
Mailbox the Cython LocalTransport calls at C level.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["Mailbox"]


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

    __slots__ = ("_waiter", "eager", "queue")

    def __init__(self) -> None:
        self.queue: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        #: ``eager(msg) -> bool``: offered each message that finds the actor waiting;
        #: True means it was handled on the spot and is not queued.
        self.eager: Callable[[Any], bool] | None = None

    def put(self, msg: Any) -> None:
        """Queue ``msg`` and wake the waiter, if any (unless ``eager`` took it)."""
        if self._waiter is None:
            self.queue.append(msg)
        elif self.eager is None or not self.eager(msg):
            self.queue.append(msg)
            self.wake()

    __call__ = put

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
