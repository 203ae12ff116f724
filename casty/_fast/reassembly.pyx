# cython: language_level=3, auto_pickle=False
"""The reassembly of a peer's message fragments in Cython: the twin of
``casty.transport.reassembly`` (the rules, and what ``held_bytes`` counts, are there).

A stream's body is one ``bytes`` object allocated when its FIRST fragment announces
``total`` (after the limits are checked) and filled in place by ``memcpy``; nobody else
sees it before it is returned, whole.  :meth:`Reassembler.feed_at` takes a fragment body
by pointer, so the Cython frame splitter hands it the bytes of a read without copying
them out first.  Compiled with bounds checking off: every read of the body is checked by
hand against its size.
"""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.string cimport memcpy

from casty._fast cimport wire
from casty._fast.bytes_reuse cimport CASTY_CAN_REUSE_BYTES, refcount, casty_forget_bytes_hash
from cpython.object cimport PyObject

from casty.errors import FragmentError
from casty.transport.fragment_rules import head_problem, not_open_problem, opening_problem, piece_problem

__all__ = ["Reassembler"]

cdef enum:
    _FIRST = 0x01
    _LAST = 0x02
    # A delivered body this large is kept to be refilled by the next stream of its size:
    # a fresh one would cost a page fault per 4 KiB once the allocator has given it back
    # (smaller ones come from the heap's free lists anyway).  All reassemblers together
    # keep at most _SPARE_TOTAL_MAX bytes aside.
    _SPARE_MIN = 128 * 1024
    _SPARE_TOTAL_MAX = 32 * 1024 * 1024

cdef Py_ssize_t _spare_total = 0
#: False where bytes objects are never refilled (no exact reference counts, or 3.14+)
_REFILLS_BODIES = bool(CASTY_CAN_REUSE_BYTES)


def spare_bytes_held():
    """Bytes of delivered bodies the reassemblers of this process keep to refill."""
    return _spare_total


@cython.final
cdef class _Stream:
    cdef object buf  # bytes of the announced total, filled up to ``got``
    cdef Py_ssize_t got, total


@cython.final
cdef class Reassembler:
    """The open fragment streams of one connection, bounded in count and bytes (see the
    pure twin)."""

    def __init__(self, *, max_message, max_streams, max_bytes):
        self._max_message = max_message
        self._max_streams = max_streams
        self._max_bytes = max_bytes
        self._streams = {}
        self._held = 0

    @property
    def held_bytes(self):
        """Bytes held for open streams: the sum of their announced totals."""
        return self._held

    @property
    def open_streams(self):
        return len(self._streams)

    def clear(self):
        self._streams.clear()
        self._held = 0
        self._drop_spare()

    def __dealloc__(self):
        global _spare_total
        _spare_total -= self._spare_size  # a C field: a cycle's clear may have taken _spare
        self._spare_size = 0

    cdef void _drop_spare(self) noexcept:
        global _spare_total
        _spare_total -= self._spare_size
        self._spare_size = 0
        self._spare = None

    cdef object _new_body(self, Py_ssize_t total):
        """An unshared bytes of ``total`` bytes to fill: the kept body when nobody else holds
        it and it is that size, else a fresh one."""
        cdef object body = self._spare
        if body is not None:
            self._drop_spare()
            if PyBytes_GET_SIZE(body) == total and refcount(<PyObject*>body) == 1:
                casty_forget_bytes_hash(body)
                return body
        return PyBytes_FromStringAndSize(NULL, total)

    cdef void _keep(self, object body, Py_ssize_t total) noexcept:
        """Keep a body just delivered, to refill once its receiver lets go of it."""
        global _spare_total
        self._drop_spare()
        if CASTY_CAN_REUSE_BYTES and total >= _SPARE_MIN and _spare_total + total <= _SPARE_TOTAL_MAX:
            self._spare = body
            self._spare_size = total
            _spare_total += total

    def feed(self, body):
        """The whole message body once ``body`` (a data fragment's body) completes its
        stream, else None; FragmentError (and the state cleared) for a body breaking the rules."""
        cdef Py_buffer view
        PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
        try:
            return self.feed_at(<const unsigned char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef object feed_at(self, const unsigned char* p, Py_ssize_t size):
        """:meth:`feed` of the ``size`` bytes at ``p``."""
        try:
            return self._feed_at(p, size)
        except FragmentError:
            self.clear()
            raise

    cdef object _feed_at(self, const unsigned char* p, Py_ssize_t size):
        cdef unsigned char flags
        cdef unsigned long stream
        cdef Py_ssize_t total, n, end
        cdef _Stream state
        cdef object buf
        cdef object problem
        flags = p[0] if size > 0 else 0
        if size < 5 or flags & ~(_FIRST | _LAST):
            raise FragmentError(head_problem(size, flags))
        stream = wire.read_be32(p + 1)
        if flags & _FIRST:
            total = <Py_ssize_t>wire.read_be32(p + 5) if size >= 9 else 0
            problem = opening_problem(size, stream, total, stream in self._streams, len(self._streams),
                                      self._max_streams, self._held, self._max_bytes, self._max_message)
            if problem is None:
                problem = piece_problem(stream, size - 9, 0, total, bool(flags & _LAST))
            if problem is not None:
                raise FragmentError(problem)
            n = size - 9
            if flags & _LAST:
                return PyBytes_FromStringAndSize(<const char*>p + 9, n)
            state = _Stream.__new__(_Stream)
            state.buf = self._new_body(total)
            state.total = total
            memcpy(PyBytes_AS_STRING(state.buf), p + 9, n)
            state.got = n
            self._streams[stream] = state
            self._held += total
            return None
        state = self._streams.get(stream)
        if state is None:
            raise FragmentError(not_open_problem(stream))
        n = size - 5
        end = state.got + n
        if n == 0 or end > state.total or (flags & _LAST and end != state.total):
            raise FragmentError(piece_problem(stream, n, state.got, state.total, bool(flags & _LAST)))
        if refcount(<PyObject*>state.buf) != 1:
            # Someone reached the body being filled (gc.get_referents can): fill a copy.
            state.buf = PyBytes_FromStringAndSize(PyBytes_AS_STRING(state.buf), state.total)
        memcpy(PyBytes_AS_STRING(state.buf) + state.got, p + 5, n)
        state.got = end
        if not flags & _LAST:
            return None
        del self._streams[stream]
        self._held -= state.total
        buf = state.buf
        state.buf = None
        self._keep(buf, state.total)
        return buf
