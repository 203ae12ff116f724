# The reassembly of a peer's message fragments at C level (cap "frag"): the Cython twin of
# casty.transport.reassembly.  framing.pyx feeds it fragment bodies straight from a read.

cimport cython


@cython.final
cdef class Reassembler:
    cdef Py_ssize_t _max_message, _max_streams, _max_bytes, _held
    cdef dict _streams  # stream id -> _Stream
    cdef object _spare  # the last body delivered, kept to refill (None: none)
    cdef Py_ssize_t _spare_size  # its size, counted in the module's _spare_total

    cdef void _drop_spare(self) noexcept
    cdef object _new_body(self, Py_ssize_t total)
    cdef void _keep(self, object body, Py_ssize_t total) noexcept

    cdef object feed_at(self, const unsigned char* p, Py_ssize_t size)
    cdef object _feed_at(self, const unsigned char* p, Py_ssize_t size)
