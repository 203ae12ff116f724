# cython: language_level=3, auto_pickle=False
"""EnvelopeWriter in Cython: the twin of ``casty.transport.outbound``.

Same bytes, fewer steps per message: the last (target, sender, class) is matched by
identity at C level, and when the serializer has a fast path (``MsgpackSerializer``:
see ``casty.serialization.FastPath``, all this module reads of it) a plain message
(see ``casty.plain_codec``: a dataclass of plain fields, or one plain value) is
packed straight after the cached header into the one ``bytes`` that is returned;
``encode_parts`` leaves its large ``bytes`` values out of that copy and returns the
pieces.  Anything else takes the pure twin's route (header, then
``serializer.serialize``).  Headers are cached as the pure twin caches them (same
key, same bound, ask reply paths never); one for an ask reply path is built at C level.
``encode_compact`` puts the same payload after a compact header (cap "hdr", see
``casty.transport.compact_codec``), the last one matched by identity as well.
"""

from cpython.unicode cimport PyUnicode_GET_LENGTH

from casty._fast cimport wire
from casty._fast.envelope cimport encode_envelope
from casty._fast.plain_codec cimport encode_fields_after, encode_plain_after, encode_value_after

from casty._fast.envelope import encode_header
from casty.address import is_temp_uri
from casty.transport.envelope_codec import type_hint
from casty.wire import MAX_CACHED_HEADERS, TEMP_PREFIX

cdef extern from "Python.h":
    bint PyUnicode_CheckExact(object o)
    Py_ssize_t PyUnicode_FindChar(object s, Py_UCS4 ch, Py_ssize_t start, Py_ssize_t end, int direction) except -2
    Py_ssize_t PyUnicode_Tailmatch(object s, object sub, Py_ssize_t start, Py_ssize_t end, int direction) except -1


cdef bint _is_temp_uri(str uri) except -1:
    """``casty.address.is_temp_uri`` at C level."""
    cdef Py_ssize_t n = PyUnicode_GET_LENGTH(uri)
    cdef Py_ssize_t cut = PyUnicode_FindChar(uri, 47, 8, n, 1)  # the first '/' after "casty://"
    return cut >= 0 and PyUnicode_Tailmatch(uri, TEMP_PREFIX, cut, n, -1) == 1

__all__ = ["EnvelopeWriter"]

cdef Py_ssize_t _MAX_HEADERS = MAX_CACHED_HEADERS


cdef class EnvelopeWriter:
    """Serializes messages into envelope bytes, reusing encoded headers (see the pure twin).

    >>> from casty.serialization import MsgpackSerializer
    >>> w = EnvelopeWriter(MsgpackSerializer())
    >>> w.encode("casty://s@h:1/user/a", "casty://s@h:2/", 7)[-1:]
    b'\\x07'
    """

    cdef readonly object serializer
    cdef object _serialize
    cdef dict _headers  # (target, sender, type hint) -> header, as in the pure twin
    cdef dict _hints  # class -> type hint
    # The serializer's fast path (None without one) and its class -> spec table.
    cdef object _fast
    cdef dict _specs
    cdef object _last_target
    cdef object _last_sender
    cdef object _last_cls
    cdef bytes _last_header
    # The spec last packed field by field, its wire name and its class's field names
    # (from the plan the spec was made from): the values are read straight off the
    # message, no tuple.
    cdef object _fields_spec
    cdef object _fields_name
    cdef tuple _fields
    # send_compact's last (table, table epoch, target, sender, class) and its header
    cdef object _c_table
    cdef object _c_epoch
    cdef object _c_target
    cdef object _c_sender
    cdef object _c_cls
    cdef bytes _c_header

    def __init__(self, serializer):
        self.serializer = serializer
        self._serialize = serializer.serialize
        self._headers = {}
        self._hints = {}
        self._fast = getattr(serializer, "fast_path", None)
        self._specs = self._fast.specs if self._fast is not None else None
        self._last_target = self._last_sender = self._last_cls = None
        self._last_header = None
        self._fields_spec = None
        self._fields_name = None
        self._fields = None
        self._c_table = self._c_epoch = self._c_target = self._c_sender = self._c_cls = None
        self._c_header = None

    @property
    def cached_headers(self):
        """Headers remembered (those for ask reply paths never are)."""
        return len(self._headers)

    def encode(self, target, sender, msg):
        """Envelope bytes carrying ``msg``; SerializationError when it cannot be encoded."""
        return self._envelope(target, sender, msg, False)

    def encode_parts(self, target, sender, msg):
        """What ``encode`` returns, or a list of ``bytes`` that joined make it: a plain
        message's ``bytes`` values of 64 KiB or more are pieces of their own, not copied."""
        return self._envelope(target, sender, msg, True)

    def encode_compact(self, table, target, sender, msg):
        """The compact message body carrying ``msg`` on ``table``'s connection (see the
        pure twin), bytes or a list of bytes; None when it cannot go compact."""
        cdef object cls = type(msg)
        cdef bytes header
        if (table is self._c_table and target is self._c_target and sender is self._c_sender
                and cls is self._c_cls and table.epoch == self._c_epoch):
            header = self._c_header
        else:
            if _is_temp_uri(target) if PyUnicode_CheckExact(target) else is_temp_uri(target):
                return None  # an ask's reply path is used once: inline, with the JSON header
            hint = self._hints.get(cls)
            if hint is None:
                hint = self._hints[cls] = type_hint(msg)
            found = table.header(target, sender, hint)
            if found is None:
                return None
            header = found
            self._c_table = table
            self._c_epoch = table.epoch
            self._c_target = target
            self._c_sender = sender
            self._c_cls = cls
            self._c_header = header
        return self._after(header, msg, cls, True)

    def header_for(self, target, sender, msg):
        """The envelope header (length prefix included) for ``msg``, from the cache when it
        is there."""
        cls = type(msg)
        hint = self._hints.get(cls)
        if hint is None:
            hint = self._hints[cls] = type_hint(msg)
        if _is_temp_uri(target) if PyUnicode_CheckExact(target) else is_temp_uri(target):
            return encode_header(target, sender, hint)  # an ask's reply path is used once
        key = (target, sender, hint)
        header = self._headers.get(key)
        if header is None:
            if len(self._headers) >= _MAX_HEADERS:
                self._headers.clear()
            header = self._headers[key] = encode_header(target, sender, hint)
        return header

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
            header = encode_envelope(target, sender, hint, None)
        else:
            header = self.header_for(target, sender, msg)
            self._last_target = target
            self._last_sender = sender
            self._last_cls = cls
            self._last_header = header
        return self._after(header, msg, cls, scatter)

    cdef object _after(self, bytes header, object msg, object cls, bint scatter):
        """``header`` followed by ``msg`` serialized: bytes, or with ``scatter`` possibly
        a list of bytes that joined make them."""
        if self._specs is not None:
            spec = self._specs.get(cls)
            # What MsgpackSerializer.serialize does first for a top-level dataclass.
            if spec is not None and spec is self._fields_spec and self._fast.depth == 0:
                out = encode_fields_after(header, self._fields_name, msg, self._fields, scatter)
                if out is not None:
                    return out
            elif spec is not None and spec.code == wire.EXT_DATACLASS and self._fast.depth == 0:
                self._learn_fields(cls, spec)
                try:
                    values = spec.get(msg)
                except Exception:
                    values = None  # serialize() below raises the error it should
                if values is not None:
                    out = encode_plain_after(header, spec.name, values, scatter)
                    if out is not None:
                        return out
            elif spec is None or spec.code != wire.EXT_DATACLASS:
                # A scalar or a ref sent by itself (ask replies often are); others decline.
                out = encode_value_after(header, msg, scatter)
                if out is not None:
                    return out
        return header + self._serialize(msg)

    cdef _learn_fields(self, cls, spec):
        """Remember ``cls``'s field names when ``spec`` (an EncodeSpec) came from the
        registry's plan for it, whose getter reads exactly those attributes in order."""
        plan = self._fast.class_plans.get(cls)
        if plan is not None and plan.get is spec.get and plan.name == spec.name:
            self._fields_spec = spec
            self._fields_name = spec.name
            self._fields = plan.fields
