# cython: language_level=3, auto_pickle=False
"""EnvelopeWriter in Cython: the twin of ``casty.transport.outbound``.

Same bytes, fewer steps per message: the last (target, sender, class) is matched by
identity at C level, and when the serializer is exactly ``MsgpackSerializer`` a
plain message (see ``casty.plain_codec``: a dataclass of plain fields, or one plain
value) is packed straight after the cached header into the one ``bytes`` that is
returned; ``encode_parts`` leaves its large ``bytes`` values out of that copy and
returns the pieces.  Anything else takes the pure twin's route (header, then
``serializer.serialize``); header cache misses are served by a pure twin kept
inside, so both cache alike, except that an ask reply path's header is built here
(neither twin caches it).
"""

from casty._fast.envelope cimport _encode
from casty._fast.plain_codec cimport encode_fields_after, encode_plain_after, encode_value_after

from casty.address import TEMP_PREFIX
from casty.serialization import type_hint
from casty.transport.outbound import EnvelopeWriter as _PyEnvelopeWriter

cdef extern from "Python.h":
    bint PyUnicode_CheckExact(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    Py_ssize_t PyUnicode_FindChar(object s, Py_UCS4 ch, Py_ssize_t start, Py_ssize_t end, int direction) except -2
    Py_ssize_t PyUnicode_Tailmatch(object s, object sub, Py_ssize_t start, Py_ssize_t end, int direction) except -1


cdef bint _is_temp_uri(str uri) except -1:
    """``casty.address.is_temp_uri`` at C level."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(uri)
    cdef Py_ssize_t cut = PyUnicode_FindChar(uri, 47, 8, n, 1)  # the first '/' after "casty://"
    return cut >= 0 and PyUnicode_Tailmatch(uri, TEMP_PREFIX, cut, n, -1) == 1

__all__ = ["EnvelopeWriter"]

cdef enum:
    _EXT_DATACLASS = 1


cdef class EnvelopeWriter:
    """Serializes messages into envelope bytes, reusing encoded headers (see the pure twin).

    >>> from casty.serialization import MsgpackSerializer
    >>> w = EnvelopeWriter(MsgpackSerializer())
    >>> w.encode("casty://s@h:1/user/a", "casty://s@h:2/", 7)[-1:]
    b'\\x07'
    """

    cdef readonly object serializer
    cdef object _serialize
    cdef object _headers_writer  # a pure twin: serves header cache misses
    cdef dict _hints  # the pure twin's class -> type hint table, shared
    # The serializer and its class -> spec table when it is exactly MsgpackSerializer.
    cdef object _msgpack
    cdef dict _specs
    cdef object _last_target
    cdef object _last_sender
    cdef object _last_cls
    cdef bytes _last_header
    # The spec last packed field by field, and its class's field names (from the plan the
    # spec was made from): the values are read straight off the message, no tuple.
    cdef object _fields_spec
    cdef tuple _fields

    def __init__(self, serializer):
        from casty.serialization import MsgpackSerializer

        self.serializer = serializer
        self._serialize = serializer.serialize
        self._headers_writer = _PyEnvelopeWriter(serializer)
        self._hints = self._headers_writer._hints
        if type(serializer) is MsgpackSerializer:
            self._msgpack = serializer
            self._specs = serializer._specs
        else:
            self._msgpack = None
            self._specs = None
        self._last_target = self._last_sender = self._last_cls = None
        self._last_header = None
        self._fields_spec = None
        self._fields = None

    @property
    def cached_headers(self):
        """Headers remembered (those for ask reply paths never are)."""
        return self._headers_writer.cached_headers

    def encode(self, target, sender, msg):
        """Envelope bytes carrying ``msg``; SerializationError when it cannot be encoded."""
        return self._envelope(target, sender, msg, False)

    def encode_parts(self, target, sender, msg):
        """What ``encode`` returns, or a list of ``bytes`` that joined make it: a plain
        message's ``bytes`` values of 64 KiB or more are pieces of their own, not copied."""
        return self._envelope(target, sender, msg, True)

    cdef object _envelope(self, target, sender, msg, bint scatter):
        cdef object cls = type(msg)
        cdef bytes header
        if target is self._last_target and sender is self._last_sender and cls is self._last_cls:
            header = self._last_header
        elif PyUnicode_CheckExact(target) and PyUnicode_CheckExact(sender) and _is_temp_uri(target):
            # An ask's reply path, used once: what header_for does for it, at C level, and
            # the last (target, sender, class) stays the stream's.
            hint = self._hints.get(cls)
            if hint is None:
                hint = self._hints[cls] = type_hint(msg)
            header = _encode(target, sender, hint, None)
        else:
            header = self._headers_writer.header_for(target, sender, msg)
            self._last_target = target
            self._last_sender = sender
            self._last_cls = cls
            self._last_header = header
        if self._specs is not None:
            spec = self._specs.get(cls)
            # What MsgpackSerializer.serialize does first for a top-level dataclass.
            if spec is not None and spec is self._fields_spec and self._msgpack._depth == 0:
                out = encode_fields_after(header, spec[1], msg, self._fields, scatter)
                if out is not None:
                    return out
            elif spec is not None and spec[0] == _EXT_DATACLASS and self._msgpack._depth == 0:
                self._learn_fields(cls, spec)
                try:
                    values = spec[2](msg)
                except Exception:
                    values = None  # serialize() below raises the error it should
                if values is not None:
                    out = encode_plain_after(header, spec[1], values, scatter)
                    if out is not None:
                        return out
            elif spec is None or spec[0] != _EXT_DATACLASS:
                # A scalar or a ref sent by itself (ask replies often are); others decline.
                out = encode_value_after(header, msg, scatter)
                if out is not None:
                    return out
        return header + self._serialize(msg)

    cdef _learn_fields(self, cls, spec):
        """Remember ``cls``'s field names when ``spec`` (class, name, getter) came from the
        registry's plan for it, whose getter reads exactly those attributes in order."""
        plan = self._msgpack._registry._plans.get(cls)
        if plan is not None and plan.get is spec[2] and plan.name == spec[1]:
            self._fields_spec = spec
            self._fields = plan.fields

