# The C-level sink for message frames: a subclass's on_frame_at is called straight out of
# the received chunk, with no bytes object per frame (see FrameSink in framing.pyx).

cdef class FrameSink:
    cdef int on_frame_at(self, const unsigned char* p, Py_ssize_t size, object data) except -1
    cdef bint on_compact_at(self, const unsigned char* p, Py_ssize_t size) except -1
