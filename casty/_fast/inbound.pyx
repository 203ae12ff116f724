# cython: language_level=3, auto_pickle=False
"""InboundMessageHandler in Cython: the twin of ``casty.transport.inbound``.

Same rules, fewer steps per frame: a canonical envelope header is read in place
(no MessageEnvelope object, and the target's text is only made when it differs
from the previous frame's), and a plain message (see ``casty.plain_codec``) is
decoded straight out of the frame, without copying its payload.  Anything else
takes the pure twin's route: ``MessageEnvelope.from_bytes``, then the
serializer.  What it reads of the serializer is its ``fast_path`` (see
``casty.serialization.FastPath``).  Refusals and drops are worded and logged by the
neutral ``casty.transport.inbound_rules``, as in the pure twin.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memcmp

from casty._fast cimport wire
from casty._fast.envelope cimport MessageEnvelope, canonical_fields, header_end
from casty._fast.framing cimport FrameSink
from casty._fast.plain_codec cimport decode_plain_at

from casty.transport.compact_codec import HeaderNames, compact_problem
from casty.transport.inbound_rules import log_inbound_drop, refusal, refuse_connection, target_path
from casty.wire import (
    MAX_CACHED_TARGET_CHARS,
    MAX_CACHED_TARGET_LENGTH,
    MAX_CACHED_TARGETS,
    SYSTEM_PREFIX,
    TEMP_PREFIX,
)

cdef extern from "Python.h":
    bint PyBytes_CheckExact(object o)

cdef bytes _TEMP_BYTES = TEMP_PREFIX.encode("ascii")
cdef const char* _TEMP = _TEMP_BYTES
cdef Py_ssize_t _TEMP_SIZE = len(_TEMP_BYTES)

__all__ = ["InboundMessageHandler", "OriginSink"]


cdef class InboundMessageHandler(FrameSink):
    """Deserializes inbound TCP frames and delivers them locally (see the pure twin)."""

    #: the sinks of sink_for take compact-header frames (on_entry, on_compact)
    compact_headers = True

    def __init__(self, *, local, serializer, system_name, ref_factory=None, allow_system_paths=False):
        self._allow_system = bool(allow_system_paths)
        self.reply_check = None
        self.origin = None
        self._paths_chars = 0
        self._local = local
        self._deliver_path = local.deliver_path
        self._serializer = serializer
        self._deserialize = serializer.deserialize
        fast = getattr(serializer, "fast_path", None)
        self._plans = fast.plans if fast is not None else None
        self._system_name = system_name
        self._paths = {}
        self._last_header = None
        self._last_target = None
        self._last_path = None
        self._own_head = None
        self.ref_factory = ref_factory
        self.dropped = 0
        self.read_state = getattr(local, "read_state", None)

    @property
    def cached_targets(self):
        """Targets whose path is remembered (ask reply paths never are)."""
        return len(self._paths)

    def sink_for(self, origin):
        """A message sink for one connection: each frame is handled with ``origin`` set."""
        cdef OriginSink sink = OriginSink.__new__(OriginSink)
        sink.handler = self
        sink.origin = origin
        return sink.on_frame

    async def on_message(self, data):
        """Decode one message frame body and deliver it."""
        self.on_frame(data)

    def on_frame(self, data):
        """Decode one message frame body (bytes-like) and deliver it, inline."""
        if not PyBytes_CheckExact(data):
            self._slow(data)
            return
        self.on_frame_at(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), data)

    cdef int on_frame_at(self, const unsigned char* p, Py_ssize_t size, object data) except -1:
        """``on_frame`` for the body at p[0:size]; ``data`` is the bytes holding exactly it,
        or None (it is then made only if the slow route needs it)."""
        cdef Py_ssize_t spans[6]
        cdef Py_ssize_t end, tlen
        cdef bytes last
        try:
            end = header_end(p, size)
        except ValueError as exc:
            self._drop(str(exc))
            return 0
        last = self._last_header
        if (last is not None and PyBytes_GET_SIZE(last) == end
                and memcmp(PyBytes_AS_STRING(last), p, end) == 0):
            path = self._last_path
        else:
            if not canonical_fields(p, end, spans):
                self._slow(data if data is not None else PyBytes_FromStringAndSize(<const char*>p, size))
                return 0
            tlen = spans[1] - spans[0]
            last = self._last_target
            if (last is not None and PyBytes_GET_SIZE(last) == tlen
                    and memcmp(PyBytes_AS_STRING(last), p + spans[0], tlen) == 0):
                path = self._last_path
            else:
                path = self._temp_path(p + spans[0], tlen)
                if path is not None:
                    # An ask reply: used once, so the caches keep the stream they hold.
                    if self._reply_refused(path):
                        return 0
                    self._deliver_msg(p, size, end, path)
                    return 0
                target = PyUnicode_DecodeASCII(<const char*>p + spans[0], tlen, NULL)
                path = self._path_of(target)
                if path is None:
                    self._drop(refusal(target, self._system_name))
                    return 0
                if (<str>path).startswith(TEMP_PREFIX):
                    if self._reply_refused(path):
                        return 0
                    self._deliver_msg(p, size, end, path)
                    return 0
                self._last_target = PyBytes_FromStringAndSize(<const char*>p + spans[0], tlen)
                self._last_path = path
            self._last_header = PyBytes_FromStringAndSize(<const char*>p, end)
        self._deliver_msg(p, size, end, path)
        return 0

    def on_compact(self, target, body):
        """Deliver the compact message ``body`` (its ids already checked by the
        connection's OriginSink) to ``target``, by the rules of ``on_frame``."""
        if not PyBytes_CheckExact(body):
            body = bytes(memoryview(body))
        self.compact_at(target, <const unsigned char*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))

    cdef int compact_at(self, str target, const unsigned char* p, Py_ssize_t size) except -1:
        """``on_compact`` for the body at p[0:size] (at least COMPACT_HEADER_SIZE bytes)."""
        path = self._paths.get(target)
        if path is None:  # not cached: never a reply path, a refused or a foreign target
            path = self._path_of(target)
            if path is None:
                self._drop(refusal(target, self._system_name))
                return 0
            if (<str>path).startswith(TEMP_PREFIX) and self._reply_refused(path):
                return 0
        self._deliver_msg(p, size, wire.COMPACT_HEADER_SIZE, path)
        return 0

    cdef int _deliver_msg(self, const unsigned char* p, Py_ssize_t size, Py_ssize_t end, object path) except -1:
        """Decode the payload after the header (p[end:size]) and deliver it to ``path``."""
        msg = None
        if self._plans is not None:
            msg = decode_plain_at(p + end, size - end, self._plans, self.ref_factory)
        if msg is None:
            try:
                msg = self._deserialize(
                    PyBytes_FromStringAndSize(<const char*>p + end, size - end),
                    ref_factory=self.ref_factory,
                )
            except ValueError as exc:
                self._drop(str(exc))
                return 0
        full = self._deliver_path(path, msg, size)
        if full is not None and self.origin is not None:
            self.origin.mailbox_full(full)
        return 0

    cdef object _temp_path(self, const unsigned char* p, Py_ssize_t n):
        """The path of the target URI p[0:n] when it is an ask reply path (under
        TEMP_PREFIX) on a node whose URI head was seen to name this system, else None."""
        cdef bytes own = self._own_head
        cdef Py_ssize_t h
        if own is None:
            return None
        h = PyBytes_GET_SIZE(own)
        if (n > h + _TEMP_SIZE and memcmp(p, PyBytes_AS_STRING(own), h) == 0
                and memcmp(p + h, _TEMP, _TEMP_SIZE) == 0):
            return PyUnicode_DecodeASCII(<const char*>p + h, n - h, NULL)
        return None

    cdef _slow(self, data):
        """The pure twin's route, for headers in other JSON forms and non-bytes input."""
        cdef MessageEnvelope env
        try:
            env = MessageEnvelope.from_bytes(data)
            path = self._path_of(env.target)
            if path is None:
                self._drop(refusal(env.target, self._system_name))
                return
            if (<str>path).startswith(TEMP_PREFIX) and self._reply_refused(path):
                return
            msg = self._deserialize(env.payload, ref_factory=self.ref_factory)
        except ValueError as exc:
            self._drop(str(exc))
            return
        full = self._deliver_path(path, msg, len(data))
        if full is not None and self.origin is not None:
            self.origin.mailbox_full(full)

    cdef bint _reply_refused(self, str path) except -1:
        """True (and the frame dropped) when ``reply_check`` refuses a reply to ``path``."""
        check = self.reply_check
        if check is None:
            return False
        why = check(path, self.origin)
        if why is None:
            return False
        self._drop(why)
        return True

    cdef _path_of(self, str target):
        path = self._paths.get(target)
        if path is not None:
            return path
        path = target_path(target, self._system_name)
        if path is None or ((<str>path).startswith(SYSTEM_PREFIX) and not self._allow_system):
            return None  # not cached: the cache holds only this system's own targets
        cut = target.find("/", 8)  # where the path starts, after "casty://"
        if cut > 0:
            # As a frame holds it; a lone surrogate (JSON escapes allow one) matches no frame.
            self._own_head = target[:cut].encode("utf-8", "surrogatepass")
        if (<str>path).startswith(TEMP_PREFIX) or len(target) > MAX_CACHED_TARGET_LENGTH:
            return path  # an ask's reply path is used once: caching it only crowds out the rest
        if (len(self._paths) >= MAX_CACHED_TARGETS
                or self._paths_chars + len(target) > MAX_CACHED_TARGET_CHARS):
            self._paths.clear()
            self._paths_chars = 0
        self._paths[target] = path
        self._paths_chars += len(target)
        return path

    cdef _drop(self, str reason):
        self.dropped += 1
        log_inbound_drop(reason, self.dropped)
        origin = self.origin
        if origin is not None:
            origin.frame_dropped()


cdef class OriginSink(FrameSink):
    """The message sink of one connection: runs the handler with ``origin`` set, and
    holds the names the peer gave the connection (see the pure twin)."""

    def __cinit__(self):
        self.names = HeaderNames()
        self._names = self.names.names

    def on_entry(self, body):
        """A header-table entry frame's body: recorded, or the connection refused."""
        why = self.names.add(body)
        if why is not None:
            refuse_connection(self.origin, why)

    def on_compact(self, body):
        """A compact message frame's body: its ids checked against the table (a bad one
        refuses the connection), then delivered as the handler's ``on_compact``."""
        if not PyBytes_CheckExact(body):
            body = bytes(memoryview(body))
        self.on_compact_at(<const unsigned char*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body))

    cdef bint on_compact_at(self, const unsigned char* p, Py_ssize_t size) except -1:
        cdef list names = self._names
        cdef Py_ssize_t n = len(names)
        cdef Py_ssize_t t, s, h
        if size < wire.COMPACT_HEADER_SIZE:
            refuse_connection(self.origin, compact_problem(size, None, n))
            return True
        t = (<Py_ssize_t>p[0] << 8) | p[1]
        s = (<Py_ssize_t>p[2] << 8) | p[3]
        h = (<Py_ssize_t>p[4] << 8) | p[5]
        if t >= n or s >= n or h >= n:
            refuse_connection(self.origin, compact_problem(size, (t, s, h), n))
            return True
        self.handler.origin = self.origin
        try:
            self.handler.compact_at(<str>names[t], p, size)
        finally:
            self.handler.origin = None
        return True

    def on_frame(self, data):
        self.handler.origin = self.origin
        try:
            self.handler.on_frame(data)
        finally:
            self.handler.origin = None

    cdef int on_frame_at(self, const unsigned char* p, Py_ssize_t size, object data) except -1:
        self.handler.origin = self.origin
        try:
            self.handler.on_frame_at(p, size, data)
        finally:
            self.handler.origin = None
        return 0
