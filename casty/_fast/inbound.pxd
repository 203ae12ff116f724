# The inbound handler at C level: the framing protocol hands it message frames straight
# out of a received chunk, with no bytes object per frame.

from casty._fast.framing cimport FrameSink


cdef class InboundMessageHandler(FrameSink):
    cdef object _local
    cdef object _deliver_path
    cdef object _serializer
    cdef object _deserialize
    # The serializer's fast_path.plans (wire name -> plan) when it has a fast path (its
    # deserialize tries decode_plain first anyway); None otherwise.
    cdef object _plans
    cdef str _system_name
    cdef dict _paths
    # The previous frame's whole header (length prefix included) and its target's bytes:
    # a stream from one node to one actor repeats the same header, so a memcmp finds
    # the path without scanning the JSON; another sender to the same actor still
    # matches on the target.
    cdef bytes _last_header
    cdef bytes _last_target
    cdef object _last_path
    # "casty://<head>" of a target seen to name this system: an ask's reply path on the
    # same node is then read off the bytes (it is never cached: each is used once).
    cdef bytes _own_head
    cdef public object ref_factory
    cdef public Py_ssize_t dropped
    # reply_check(path, origin) -> None or why a reply is refused; origin: the connection
    # the frame being handled came on (set by an OriginSink), else None
    cdef public object reply_check
    cdef public object origin
    cdef readonly object read_state  # local.read_state, for the node (None without one)
    cdef bint _allow_system
    cdef Py_ssize_t _paths_chars

    cdef int on_frame_at(self, const unsigned char* p, Py_ssize_t size, object data) except -1
    cdef int compact_at(self, str target, const unsigned char* p, Py_ssize_t size) except -1
    cdef _slow(self, data)
    cdef _path_of(self, str target)
    cdef object _temp_path(self, const unsigned char* p, Py_ssize_t n)
    cdef int _deliver_msg(self, const unsigned char* p, Py_ssize_t size, Py_ssize_t end, object path) except -1
    cdef _drop(self, str reason)
    cdef bint _reply_refused(self, str path) except -1


cdef class OriginSink(FrameSink):
    cdef InboundMessageHandler handler
    cdef object origin
    # The names the peer gave this connection (cap "hdr"): a compact_codec.HeaderNames,
    # and its list (the same object for the connection's life, cleared in place).
    cdef readonly object names
    cdef list _names
