"""BusyPoller: keep the event loop polling, not sleeping, for a while after each send.

Most of a loopback round trip between two idle processes is the kernel waking a
process blocked in ``epoll_wait``.  While a callback keeps re-scheduling itself
with ``loop.call_soon``, the loop has ready work, so its poll for I/O uses a zero
timeout and never blocks: a reply is picked up on the next loop iteration instead
of after a wake-up.  The price is one CPU core held busy for ``window`` seconds
after the last send; an idle node is back to sleeping after that.

Each turn of the spin also calls ``sched_yield``: when the peer process shares
this core, a spin that never yields keeps it off the core until the window runs
out (a loopback round trip of two windows instead of a few microseconds), while a
yield hands the core over at once and costs well under a microsecond when
nothing else wants it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable

__all__ = ["BusyPoller"]

log = logging.getLogger("casty.transport.busy_poll")


class BusyPoller:
    """Keeps ``loop`` polling until ``window`` seconds pass without a :meth:`poke`.

    ``poke()`` only sets a flag (and starts the spin when it is not running), so it
    can be called on every send.  The spin is one callback re-scheduling itself with
    ``loop.call_soon``; it reads ``clock`` once per turn and stops when no poke came
    for ``window`` seconds.  ``clock`` defaults to :func:`time.monotonic`: uvloop's
    ``loop.time()`` only moves in milliseconds, too coarse for a window in
    microseconds.  Each turn yields the core to any other runnable process
    (``yield_cpu``, where the OS has ``sched_yield``).  ``close()`` cancels the spin
    for good.

    >>> import asyncio
    >>> async def demo() -> tuple[bool, bool, bool]:
    ...     poller = BusyPoller(asyncio.get_running_loop(), 0.001)
    ...     poller.poke()
    ...     started = poller.spinning
    ...     await poller.wait_idle()
    ...     idle = not poller.spinning
    ...     poller.close()
    ...     poller.poke()  # a no-op once closed
    ...     return started, idle, poller.spinning
    >>> asyncio.run(demo())
    (True, True, False)
    """

    __slots__ = (
        "_clock", "_closed", "_handle", "_idle_waiters", "_last", "_loop", "_poked", "_window", "_yield", "spins"
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        yield_cpu: bool = True,
    ) -> None:
        if isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 < window < math.inf:
            raise ValueError(f"BusyPoller window must be a positive finite number of seconds, got {window!r}")
        self._loop = loop
        self._window = float(window)
        self._clock = clock
        self._yield: Callable[[], None] | None = getattr(os, "sched_yield", None) if yield_cpu else None
        self._poked = False
        self._handle: asyncio.Handle | None = None
        self._last = 0.0
        self._closed = False
        self._idle_waiters: list[asyncio.Future[None]] = []
        #: turns of the spin so far (one per loop iteration while spinning)
        self.spins = 0

    @property
    def window(self) -> float:
        """Seconds the loop keeps polling after the last poke."""
        return self._window

    @property
    def spinning(self) -> bool:
        """True while the spin keeps the loop from sleeping."""
        return self._handle is not None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def poke(self) -> None:
        """Note activity: keep polling for another ``window`` seconds."""
        self._poked = True
        if self._handle is None and not self._closed:
            self._handle = self._loop.call_soon(self._spin)

    def _spin(self) -> None:
        now = self._clock()
        if self._poked:
            self._poked = False
            self._last = now
        elif now - self._last >= self._window:
            self._handle = None
            self._wake_idle_waiters()
            return
        self.spins += 1
        self._handle = self._loop.call_soon(self._spin)
        if self._yield is not None:
            self._yield()

    async def wait_idle(self) -> None:
        """Return once the spin has stopped (at once when it is not running)."""
        if self._handle is None:
            return
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._idle_waiters.append(waiter)
        await waiter

    def _wake_idle_waiters(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def close(self) -> None:
        """Stop spinning; later pokes do nothing."""
        if self._closed:
            return
        self._closed = True
        self._poked = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        log.debug("busy poller closed after %d spins", self.spins)
        self._wake_idle_waiters()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "spinning" if self._handle is not None else "idle"
        return f"BusyPoller(window={self._window!r}, {state}, spins={self.spins})"
