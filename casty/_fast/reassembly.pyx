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
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from libc.string cimport memcpy

from casty._fast cimport wire

from casty.errors import FragmentError

__all__ = ["Reassembler"]

cdef enum:
    _FIRST = 0x01
    _LAST = 0x02


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
        if size < 5:
            raise FragmentError(f"fragment body of {size} bytes (at least 5: flags and stream)")
        flags = p[0]
        if flags & ~(_FIRST | _LAST):
            raise FragmentError(f"fragment flags 0x{flags:02x} name no known bit pattern")
        stream = wire.read_be32(p + 1)
        if flags & _FIRST:
            if size < 9:
                raise FragmentError(f"first fragment body of {size} bytes (at least 9: flags, stream, total)")
            if stream in self._streams:
                raise FragmentError(f"fragment opens stream {stream}, which is open already")
            total = <Py_ssize_t>wire.read_be32(p + 5)
            if not 0 < total <= self._max_message:
                raise FragmentError(
                    f"fragment stream {stream} announces {total} bytes (1..{self._max_message}: max_frame_size)"
                )
            if len(self._streams) >= self._max_streams:
                raise FragmentError(f"more than {self._max_streams} fragment streams open (max_fragment_streams)")
            if self._held + total > self._max_bytes:
                raise FragmentError(
                    f"fragment stream {stream} announces {total} bytes with {self._held} held: "
                    f"over {self._max_bytes} bytes (max_fragment_bytes)"
                )
            n = size - 9
            if n == 0:
                raise FragmentError(f"empty fragment on stream {stream}")
            if n > total:
                raise FragmentError(f"fragment stream {stream} overruns its {total} announced bytes")
            if flags & _LAST:
                if n != total:
                    raise FragmentError(f"fragment stream {stream} ended at {n} of {total} bytes")
                return PyBytes_FromStringAndSize(<const char*>p + 9, n)
            state = _Stream.__new__(_Stream)
            state.buf = PyBytes_FromStringAndSize(NULL, total)
            state.total = total
            memcpy(PyBytes_AS_STRING(state.buf), p + 9, n)
            state.got = n
            self._streams[stream] = state
            self._held += total
            return None
        state = self._streams.get(stream)
        if state is None:
            raise FragmentError(f"fragment for stream {stream}, which is not open")
        n = size - 5
        if n == 0:
            raise FragmentError(f"empty fragment on stream {stream}")
        end = state.got + n
        if end > state.total:
            raise FragmentError(f"fragment stream {stream} overruns its {state.total} announced bytes")
        if flags & _LAST and end != state.total:
            raise FragmentError(f"fragment stream {stream} ended at {end} of {state.total} bytes")
        memcpy(PyBytes_AS_STRING(state.buf) + state.got, p + 5, n)
        state.got = end
        if not flags & _LAST:
            return None
        del self._streams[stream]
        self._held -= state.total
        buf = state.buf
        state.buf = None
        return buf
