# cython: language_level=3, auto_pickle=False
"""Mailbox in Cython: the twin of ``casty.transport.mailbox`` (same methods, same order
of effects).  Final, so the LocalTransport's exact type check covers every instance."""

from collections import deque

__all__ = ["Mailbox"]


cdef class Mailbox:
    """Messages in arrival order, and at most one waiter for the next one (see the pure twin)."""

    def __init__(self):
        self.queue = deque()
        self._waiter = None
        self.eager = None

    cdef int put_c(self, object msg) except -1:
        if self._waiter is None:
            self.queue.append(msg)
        elif self.eager is None or not self.eager(msg):
            self.queue.append(msg)
            self._wake()
        return 0

    cdef int _wake(self) except -1:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return 0

    def put(self, msg):
        """Queue ``msg`` and wake the waiter, if any (unless ``eager`` took it)."""
        self.put_c(msg)

    def __call__(self, msg):
        self.put_c(msg)

    def wait(self, loop):
        """A future that :meth:`put` or :meth:`wake` completes (replaces any earlier one)."""
        waiter = loop.create_future()
        self._waiter = waiter
        return waiter

    def wake(self):
        """Complete the waiter without a message (a stop request)."""
        self._wake()

    def forget_waiter(self):
        """Drop the waiter without completing it (its task is gone)."""
        self._waiter = None
