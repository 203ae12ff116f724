# The actor mailbox at C level: the Cython LocalTransport puts into it without a call
# through Python.

cimport cython


@cython.final
cdef class Mailbox:
    cdef readonly object queue
    cdef object _waiter
    cdef public object eager

    cdef int put_c(self, object msg) except -1
    cdef int _wake(self) except -1
