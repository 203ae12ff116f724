# The actor mailbox at C level: the Cython LocalTransport puts into it without a call
# through Python; the Cython frame splitter sets a ReadState that mailboxes read.

cimport cython


@cython.final
cdef class ReadState:
    # True while a frame splitter delivers a frame that is not its read's last: an idle
    # actor then queues the message for its task instead of handling it eagerly.
    cdef public bint more


@cython.final
cdef class Mailbox:
    cdef readonly object queue
    cdef readonly Py_ssize_t capacity  # 0 = unbounded
    cdef readonly Py_ssize_t byte_capacity  # 0 = unbounded
    cdef readonly bint space_wanted  # on_space callbacks wait, or sized messages are queued
    cdef object _sized  # deque of (position when taken, bytes), oldest first
    cdef Py_ssize_t _queued_bytes
    cdef Py_ssize_t _charge_from  # smaller sized messages are not charged (see the pure twin)
    cdef Py_ssize_t _taken
    cdef bint _closed
    cdef list _space
    cdef object _waiter
    cdef public object handler
    cdef bint _armed
    cdef ReadState _read  # given to arm_eager; never None
    cdef object _task, _loop, _context, _actor_context, _same, _take_over

    cdef int put_c(self, object msg) except -1
    cdef bint put_sized_c(self, object msg, Py_ssize_t nbytes) except -1
    cdef bint full_c(self) except -1
    cdef bint _has_space(self) except -1
    cdef bint _run_eager(self, object msg) except -1
    cdef int _wake(self) except -1
    cdef int _release_space(self) except -1
