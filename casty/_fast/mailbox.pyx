# cython: language_level=3, auto_pickle=False
"""Mailbox in Cython: the twin of ``casty.transport.mailbox`` (same methods, same order
of effects).  Final, so the LocalTransport's exact type check covers every instance.

Eager handling runs at C level: the handler's coroutine is stepped with
``PyIter_Send`` inside ``PyContext_Enter``/``PyContext_Exit``, so a handler that
returns at once costs no StopIteration and no Python frame of the mailbox's own; what
is left for the task is handed over as the outcomes of the neutral ``casty.eager``,
the same the pure twin's ``casty.eager.begin`` builds.

Capacity as in the pure twin: ``put_c`` never refuses; the Cython LocalTransport
reads ``capacity`` and the queue length itself, at C level, and calls ``put_sized_c``
for a peer's message (the byte accounting stays off the local tell's path)."""

from cpython.dict cimport PyDict_GetItemWithError
from cpython.ref cimport Py_DECREF, PyObject

import asyncio
from asyncio import CancelledError
from collections import deque
from types import CoroutineType

import casty.eager
from casty.eager import HOOKS, NotACoroutine, Raised, Returned, Suspended
from casty.transport.mailbox_rules import charge_from, check_capacity, read_state_error, run_space_callbacks

__all__ = ["Mailbox", "ReadState"]

cdef extern from "Python.h":
    # PYGEN_ERROR (-1) comes with an exception set; PYGEN_RETURN is 0, PYGEN_NEXT 1.
    int PyIter_Send(object iter, object arg, PyObject** presult) except -1
    int PyContext_Enter(object ctx) except -1
    int PyContext_Exit(object ctx) except -1

cdef object _Coroutine = CoroutineType
cdef object _Returned = Returned
cdef object _Suspended = Suspended
cdef object _Raised = Raised
cdef object _NotACoroutine = NotACoroutine
cdef dict _tasks = HOOKS.current_tasks if HOOKS is not None and type(HOOKS.current_tasks) is dict else None
cdef object _task_of = HOOKS.current_task if HOOKS is not None else asyncio.current_task
cdef object _enter = HOOKS.enter if HOOKS is not None else None
cdef object _leave = HOOKS.leave if HOOKS is not None else None


cdef inline object _take(PyObject* out):
    """The object of a new reference, the reference handed over."""
    value = <object>out
    Py_DECREF(value)
    return value


cdef class ReadState:
    """Whether the inbound read being split holds more frames after the one being
    delivered (see the pure twin): set by the frame splitter, read by mailboxes."""

    def __init__(self):
        self.more = False


cdef ReadState _QUIET = ReadState()  # never set: what a mailbox reads before it is armed


cdef class Mailbox:
    """Messages in arrival order, and at most one waiter for the next one (see the pure twin)."""

    def __init__(self, capacity=0, byte_capacity=0):
        self.capacity = check_capacity(capacity)
        self.byte_capacity = check_capacity(byte_capacity, "mailbox byte capacity")
        self.queue = deque()
        self._sized = deque()
        self._queued_bytes = 0
        self._charge_from = charge_from(self.capacity, self.byte_capacity)
        self._taken = 0
        self._space = []
        self.space_wanted = False
        self._closed = False
        self._waiter = None
        self.handler = None
        self._armed = False
        self._read = _QUIET
        self._task = self._loop = self._context = self._actor_context = None
        self._same = self._take_over = None

    cdef int put_c(self, object msg) except -1:
        waiter = self._waiter
        if waiter is None:
            self.queue.append(msg)
        elif not self._armed or self._read.more or waiter.done() or not self._run_eager(msg):
            self.queue.append(msg)
            self._wake()
        return 0

    cdef bint put_sized_c(self, object msg, Py_ssize_t nbytes) except -1:
        waiter = self._waiter
        if (
            waiter is not None
            and self._armed
            and not self._read.more
            and not waiter.done()
            and self._run_eager(msg)
        ):
            return self.full_c()  # handled already: nothing of it is queued
        self.queue.append(msg)
        if waiter is not None:
            self._wake()
        if nbytes >= self._charge_from and self.byte_capacity:
            self._sized.append((self._taken + len(self.queue), nbytes))
            self._queued_bytes += nbytes
            self.space_wanted = True
        return self.full_c()

    cdef bint full_c(self) except -1:
        return (
            (self.capacity and len(self.queue) >= self.capacity)
            or (self.byte_capacity and self._queued_bytes >= self.byte_capacity)
        )

    cdef bint _has_space(self) except -1:
        return (not self.capacity or len(self.queue) <= self.capacity // 2) and (
            not self.byte_capacity or self._queued_bytes <= self.byte_capacity // 2
        )

    cdef bint _run_eager(self, object msg) except -1:
        cdef object loop = self._loop
        cdef object task = self._task
        cdef PyObject* out = NULL
        cdef PyObject* found
        cdef int status
        if _tasks is not None:
            found = PyDict_GetItemWithError(_tasks, loop)
            if found is not NULL and <object>found is not None:
                return False  # put from inside a task: that task goes on, ours wakes later
        elif _task_of(loop) is not None:
            return False
        try:
            _enter(loop, task)
        except RuntimeError:
            return False  # the loop is not running here (3.14 refuses then): the task handles it
        try:
            try:
                PyContext_Enter(self._context)
                try:
                    coro = self.handler(self._actor_context, msg)
                    if type(coro) is _Coroutine:
                        status = PyIter_Send(coro, None, &out)
                    else:
                        status = -1
                finally:
                    PyContext_Exit(self._context)
                if status >= 0:
                    result = _take(out)
                    if status:
                        outcome = _Suspended(coro, result)
                    elif result is self._same:
                        return True
                    else:
                        outcome = _Returned(result)
                else:
                    outcome = _NotACoroutine(coro)
            except (Exception, CancelledError) as exc:
                outcome = _Raised(exc)  # the task raises a CancelledError again
        finally:
            _leave(loop, task)
        self._take_over(msg, outcome)
        return True

    cdef int _wake(self) except -1:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return 0

    def put(self, msg):
        """Queue ``msg`` and wake the waiter, if any (or handle it eagerly, once armed)."""
        self.put_c(msg)

    def __call__(self, msg):
        self.put_c(msg)

    def put_sized(self, msg, Py_ssize_t nbytes):
        """Put a peer's ``msg`` of ``nbytes`` wire bytes, charged to ``queued_bytes``
        while it is queued (see the pure twin); True when the mailbox is now full."""
        return self.put_sized_c(msg, nbytes)

    def offer(self, msg):
        """Put ``msg`` unless the queue is at capacity; False when refused."""
        if self.capacity and len(self.queue) >= self.capacity:
            return False
        self.put_c(msg)
        return True

    @property
    def queued_bytes(self):
        """Bytes of the messages queued by put_sized that the loop has not taken."""
        return self._queued_bytes

    @property
    def full(self):
        """True when the queue is at or over a nonzero ``capacity``, or ``queued_bytes``
        at or over a nonzero ``byte_capacity``."""
        return self.full_c()

    def on_space(self, callback):
        """Call ``callback()`` once, when the queue is next down to ``capacity // 2``
        messages and ``byte_capacity // 2`` bytes, or the mailbox is closed: at once if
        that is already so (see the pure twin)."""
        if self._closed or self._has_space():
            run_space_callbacks([callback])
            return
        self._space.append(callback)
        self.space_wanted = True

    def taken(self):
        """The actor's loop took one message off the queue (see the pure twin): release
        the bytes of the sized messages taken, run on_space callbacks once there is space."""
        cdef object sized = self._sized
        cdef Py_ssize_t due
        if sized:
            self._taken += 1
            while sized:
                due, nbytes = sized[0]
                if due > self._taken:
                    break
                sized.popleft()
                self._queued_bytes -= <Py_ssize_t>nbytes
            if not sized:
                self._taken = 0
        if self._space and self._has_space():
            self._release_space()
        elif not sized and not self._space:
            self.space_wanted = False

    def close(self):
        """The actor stopped: drop what is queued, run the waiting callbacks, and later
        ones at once."""
        self._closed = True
        self.queue.clear()
        self._sized.clear()
        self._queued_bytes = self._taken = 0
        self._release_space()

    cdef int _release_space(self) except -1:
        callbacks = self._space
        self._space = []
        self.space_wanted = len(self._sized) > 0
        run_space_callbacks(callbacks)
        return 0

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

    def arm_eager(self, task, loop, context, actor_context, same, take_over, read_state=None):
        """Handle messages eagerly from now on (see the pure twin); False where asyncio
        lacks what this needs."""
        if read_state is not None and type(read_state) is not ReadState:
            raise read_state_error(ReadState, read_state)
        if not casty.eager.EAGER:
            return False
        self._task, self._loop, self._context = task, loop, context
        self._actor_context, self._same, self._take_over = actor_context, same, take_over
        self._read = _QUIET if read_state is None else <ReadState>read_state
        self._armed = True
        return True

    def disarm_eager(self):
        """Stop eager handling and let go of what :meth:`arm_eager` was given."""
        self._armed = False
        self._read = _QUIET
        self._task = self._loop = self._context = self._actor_context = None
        self._same = self._take_over = None
        self.handler = None
