"""AskDeadlines: the timeouts of all pending asks on one loop timer, not one timer each.

An ask that gets its reply in time (nearly all of them) only pushes an entry on a
heap and later blanks it; a loop timer per ask (``call_later`` then ``cancel``)
cost several times that.  Blanked entries are dropped when they reach the top of
the heap, or all at once when they outnumber the live ones.
"""

from __future__ import annotations

import asyncio
import math
from heapq import heapify, heappop, heappush
from typing import Any

__all__ = ["AskDeadlines", "AskFailed"]

# An entry: [deadline, seq, reply future or None once answered, target, timeout].
_WHEN, _REPLY, _TARGET = 0, 2, 3
# How early a deadline may be served, as asyncio runs timers within its clock resolution.
_RESOLUTION = 1e-3
# Blanked entries kept before a sweep, beyond twice the live ones.
_SLACK = 64


class AskFailed(RuntimeError):
    """An ask that cannot get its reply, and why: raised at once, not after the timeout.

    ``target`` is the asked actor's URI; ``reason`` one of ``"send_failed"`` (the request
    was not sent: ``detail`` names the :class:`~casty.SendFailure` reason, e.g.
    ``serialization``, ``connect_failed``, ``blacklisted``), ``"dead_target"`` (no actor
    lives at the target path), ``"target_stopped"`` (the asked local actor stopped),
    ``"node_down"`` (the target's node went down or restarted while the ask waited:
    ``detail`` names ``host:port`` and the :class:`~casty.NodeDown` reason) or
    ``"shutdown"`` (the asking system shut down).  Only an ask nobody answered ends in
    :class:`TimeoutError`.  A subclass of RuntimeError, which asks raised on shutdown before.

    >>> err = AskFailed("casty://app/user/gone", "dead_target", "no actor at /user/gone")
    >>> (err.reason, str(err))
    ('dead_target', 'ask to casty://app/user/gone failed (dead_target): no actor at /user/gone')
    """

    def __init__(self, target: str, reason: str, detail: str = "") -> None:
        self.target = target
        self.reason = reason
        self.detail = detail
        super().__init__(f"ask to {target} failed ({reason})" + (f": {detail}" if detail else ""))

    def __reduce__(self) -> tuple[type[AskFailed], tuple[str, str, str]]:
        return type(self), (self.target, self.reason, self.detail)


class AskDeadlines:
    """Fails each registered ask's reply future with TimeoutError once its time is up.

    >>> import asyncio, casty
    >>> async def main() -> str:
    ...     loop = asyncio.get_running_loop()
    ...     deadlines = AskDeadlines(loop)
    ...     reply = loop.create_future()
    ...     deadlines.add(0.01, reply, "casty://demo/user/silent")
    ...     try:
    ...         return await reply
    ...     except TimeoutError as exc:
    ...         return str(exc)
    >>> casty.run(main())
    'ask to casty://demo/user/silent got no reply within 0.01s'
    """

    __slots__ = ("_armed", "_heap", "_live", "_loop", "_seq", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[list[Any]] = []
        self._live = 0
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed = math.inf  # the deadline the timer is set for

    @property
    def pending(self) -> int:
        """Asks registered and neither answered nor timed out."""
        return self._live

    def add(self, timeout: float, reply: asyncio.Future[Any], target: object) -> list[Any]:
        """Fail ``reply`` after ``timeout`` seconds unless :meth:`answered` comes first.

        ``target`` (an ActorRef, or anything with a useful ``str``) names the asked
        actor in the error.  Returns the entry to hand to :meth:`answered`.
        """
        when = self._loop.time() + timeout
        self._seq += 1
        entry = [when, self._seq, reply, target, timeout]
        heappush(self._heap, entry)
        self._live += 1
        if when < self._armed:
            self._arm(when)
        return entry

    def pending_replies(self) -> list[asyncio.Future[Any]]:
        """The reply futures of the asks still pending."""
        return [entry[_REPLY] for entry in self._heap if entry[_REPLY] is not None]

    def answered(self, entry: list[Any]) -> None:
        """The ask of ``entry`` is over (replied, failed or cancelled): forget it."""
        if entry[_REPLY] is None:
            return
        entry[_REPLY] = entry[_TARGET] = None  # let go of the reply and the ref now
        self._live -= 1
        heap = self._heap
        if len(heap) > 2 * self._live + _SLACK:
            heap[:] = [e for e in heap if e[_REPLY] is not None]
            heapify(heap)

    def close(self) -> None:
        """Stop the timer and forget every entry; their futures are left as they are."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed = math.inf
        for entry in self._heap:
            entry[_REPLY] = entry[_TARGET] = None  # so a late answered() counts nothing
        self._heap.clear()
        self._live = 0

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed = when
        self._timer = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._armed = math.inf
        heap = self._heap
        horizon = self._loop.time() + _RESOLUTION
        while heap and heap[0][_WHEN] <= horizon:
            entry = heappop(heap)
            _, _, reply, target, timeout = entry
            if reply is None:
                continue  # answered already
            entry[_REPLY] = entry[_TARGET] = None
            self._live -= 1
            if not reply.done():
                reply.set_exception(TimeoutError(
                    f"ask to {getattr(target, 'id', target)} got no reply within {timeout}s"
                ))
        if heap:
            self._arm(heap[0][_WHEN])
