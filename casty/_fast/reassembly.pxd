# The reassembly of a peer's message fragments at C level (cap "frag"): the Cython twin of
# casty.transport.reassembly.  framing.pyx feeds it fragment bodies straight from a read.

cimport cython


@cython.final
cdef class Reassembler:
    cdef Py_ssize_t _max_message, _max_streams, _max_bytes, _held
    cdef dict _streams  # stream id -> _Stream

    cdef object feed_at(self, const unsigned char* p, Py_ssize_t size)
    cdef object _feed_at(self, const unsigned char* p, Py_ssize_t size)
