# cython: language_level=3
"""MessageEnvelope in Cython: the twin of ``casty.transport.envelope``.

Both directions have a fast path for the canonical header that ``json.dumps``
writes when every string is printable ASCII without ``"`` or ``\\``:

    {"target": "<t>", "sender": "<s>", "type_hint": "<h>"}

Anything else (escapes, non-ASCII, other key orders or spacing, bad input) goes
through ``encode_header`` / ``decode_header_slow`` of the neutral
``casty.transport.envelope_codec`` (the pure twin's own), so the two twins cannot
disagree on what they accept or on the errors they raise.

Compiled with bounds checking off: every read of peer bytes below is checked by
hand against the buffer length or the header end.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_1BYTE_DATA, PyUnicode_DecodeASCII, PyUnicode_GET_LENGTH
from libc.string cimport memcmp, memcpy

from casty._fast cimport wire

from casty.errors import EnvelopeDecodeError
from casty.transport.envelope_codec import bounds_error, decode_header_slow
from casty.transport.envelope_codec import encode_header as _encode_header_slow

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    bint PyBytes_CheckExact(object o)
    bint PyUnicode_CheckExact(object o)
    object PyUnicode_FromObject(object o)

__all__ = [
    "EnvelopeDecodeError",
    "MessageEnvelope",
    "bounds_error",
    "decode_header_slow",
    "encode_header",
]

# The constant pieces of the canonical header, in order.
cdef bytes _OPEN = b'{"target": "'
cdef bytes _SENDER = b'", "sender": "'
cdef bytes _HINT = b'", "type_hint": "'
cdef bytes _CLOSE = b'"}'
cdef Py_ssize_t _OPEN_LEN = 12
cdef Py_ssize_t _SENDER_LEN = 14
cdef Py_ssize_t _HINT_LEN = 17
cdef Py_ssize_t _CLOSE_LEN = 2
cdef Py_ssize_t _FIXED_LEN = 45  # all four pieces together


cdef inline bint _plain_byte(unsigned char c) noexcept nogil:
    # json.dumps writes exactly these bytes unescaped (0x7f is escaped).
    return 0x20 <= c <= 0x7e and c != 0x22 and c != 0x5c


cdef inline bint _plain_str(str s) noexcept:
    """True when json.dumps would write ``s`` verbatim between its quotes."""
    if not PyUnicode_IS_ASCII(s):
        return False
    cdef const unsigned char* p = PyUnicode_1BYTE_DATA(s)
    cdef Py_ssize_t i
    for i in range(PyUnicode_GET_LENGTH(s)):
        if not _plain_byte(p[i]):
            return False
    return True


cdef inline Py_ssize_t _scan_plain(const unsigned char* p, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
    """Index of the first ``"`` in p[i:end] when every byte before it is plain, else -1."""
    cdef unsigned char c
    while i < end:
        c = p[i]
        if c == 0x22:
            return i
        if not _plain_byte(c):
            return -1
        i += 1
    return -1


cdef inline char* _put(char* out, bytes piece, Py_ssize_t n) noexcept:
    memcpy(out, PyBytes_AS_STRING(piece), n)
    return out + n


cdef inline char* _put_str(char* out, str s, Py_ssize_t n) noexcept:
    memcpy(out, PyUnicode_1BYTE_DATA(s), n)
    return out + n


cdef bytes encode_envelope(str target, str sender, str type_hint, bytes payload):
    """Length prefix, header, then ``payload`` (may be None: header only), in one allocation."""
    cdef Py_ssize_t lt, ls, lh, header_len, payload_len
    cdef bytes out
    cdef char* w
    if not (_plain_str(target) and _plain_str(sender) and _plain_str(type_hint)):
        head = _encode_header_slow(target, sender, type_hint)
        return head if payload is None else head + payload
    lt = PyUnicode_GET_LENGTH(target)
    ls = PyUnicode_GET_LENGTH(sender)
    lh = PyUnicode_GET_LENGTH(type_hint)
    header_len = _FIXED_LEN + lt + ls + lh
    if <unsigned long long>header_len > wire.MAX_FRAME_LENGTH:
        # Too long for the length prefix: let the slow path raise its error.
        return _encode_header_slow(target, sender, type_hint)
    payload_len = 0 if payload is None else PyBytes_GET_SIZE(payload)
    out = PyBytes_FromStringAndSize(NULL, 4 + header_len + payload_len)
    w = PyBytes_AS_STRING(out)
    wire.write_be32(<unsigned char*>w, <unsigned long long>header_len)
    w = _put(w + wire.LENGTH_PREFIX_SIZE, _OPEN, _OPEN_LEN)
    w = _put_str(w, target, lt)
    w = _put(w, _SENDER, _SENDER_LEN)
    w = _put_str(w, sender, ls)
    w = _put(w, _HINT, _HINT_LEN)
    w = _put_str(w, type_hint, lh)
    w = _put(w, _CLOSE, _CLOSE_LEN)
    if payload_len:
        memcpy(w, PyBytes_AS_STRING(payload), payload_len)
    return out


cdef str _check_str(str name, object value):
    if PyUnicode_CheckExact(value):
        return <str>value
    if isinstance(value, str):
        # A subclass could override __eq__/__hash__; keep the value as a plain str.
        return PyUnicode_FromObject(value)
    raise TypeError(f"MessageEnvelope {name} must be str, got {type(value).__name__}")


def encode_header(target, sender, type_hint):
    """The 4-byte length prefix and the JSON header: envelope bytes minus the payload."""
    return encode_envelope(
        _check_str("target", target),
        _check_str("sender", sender),
        _check_str("type_hint", type_hint),
        None,
    )


cdef Py_ssize_t header_end(const unsigned char* p, Py_ssize_t size) except -1:
    """Where the header ends (= where the payload starts); EnvelopeDecodeError when the
    length prefix is missing or runs past ``size``."""
    cdef unsigned long long announced
    if size < wire.LENGTH_PREFIX_SIZE:
        raise bounds_error(size, None)
    announced = wire.read_be32(p)
    # Unsigned, and compared this way round, so nothing overflows on any platform.
    if announced > <unsigned long long>(size - 4):
        raise bounds_error(size, announced)
    return 4 + <Py_ssize_t>announced


cdef bint canonical_fields(const unsigned char* p, Py_ssize_t end, Py_ssize_t* spans) noexcept:
    """Find target, sender and type_hint in a canonical header ending at ``end``.

    Fills ``spans`` with (t0, t1, s0, s1, h0, h1) and returns True; False when the
    header is in any other form.  Every step checks its bytes lie before ``end``.
    """
    cdef Py_ssize_t t0, t1, s0, s1, h0, h1
    t0 = 4 + _OPEN_LEN
    if t0 > end or memcmp(p + 4, PyBytes_AS_STRING(_OPEN), _OPEN_LEN) != 0:
        return False
    t1 = _scan_plain(p, t0, end)
    if t1 < 0 or end - t1 < _SENDER_LEN or memcmp(p + t1, PyBytes_AS_STRING(_SENDER), _SENDER_LEN) != 0:
        return False
    s0 = t1 + _SENDER_LEN
    s1 = _scan_plain(p, s0, end)
    if s1 < 0 or end - s1 < _HINT_LEN or memcmp(p + s1, PyBytes_AS_STRING(_HINT), _HINT_LEN) != 0:
        return False
    h0 = s1 + _HINT_LEN
    h1 = _scan_plain(p, h0, end)
    # The closing quote is at h1, so only the brace remains: it must end the header.
    if h1 < 0 or h1 + _CLOSE_LEN != end or p[h1 + 1] != 0x7D:
        return False
    spans[0] = t0
    spans[1] = t1
    spans[2] = s0
    spans[3] = s1
    spans[4] = h0
    spans[5] = h1
    return True


cdef MessageEnvelope _decode(const unsigned char* p, Py_ssize_t size):
    cdef Py_ssize_t spans[6]
    cdef Py_ssize_t end = header_end(p, size)
    cdef MessageEnvelope env = MessageEnvelope.__new__(MessageEnvelope)
    if canonical_fields(p, end, spans):
        env.target = PyUnicode_DecodeASCII(<const char*>p + spans[0], spans[1] - spans[0], NULL)
        env.sender = PyUnicode_DecodeASCII(<const char*>p + spans[2], spans[3] - spans[2], NULL)
        env.type_hint = PyUnicode_DecodeASCII(<const char*>p + spans[4], spans[5] - spans[4], NULL)
    else:
        env.target, env.sender, env.type_hint = decode_header_slow(
            PyBytes_FromStringAndSize(<const char*>p + 4, end - 4)
        )
    env.payload = PyBytes_FromStringAndSize(<const char*>p + end, size - end)
    return env


cdef class MessageEnvelope:
    """Wire-format envelope for messages sent over TCP.

    >>> env = MessageEnvelope(target="casty://sys/user/a", sender="casty://sys/",
    ...                       payload=b'{"x":1}', type_hint="mymod.Msg")
    >>> data = env.to_bytes()
    >>> MessageEnvelope.from_bytes(data).target
    'casty://sys/user/a'
    """

    def __init__(self, target, sender, payload, type_hint):
        self.target = _check_str("target", target)
        self.sender = _check_str("sender", sender)
        self.type_hint = _check_str("type_hint", type_hint)
        if PyBytes_CheckExact(payload):
            self.payload = <bytes>payload
        elif isinstance(payload, (bytes, bytearray, memoryview)):
            self.payload = bytes(payload)
        else:
            raise TypeError(
                "MessageEnvelope payload must be bytes, bytearray or memoryview, "
                f"got {type(payload).__name__}"
            )

    def to_bytes(self):
        """``[header_len:4][header][payload]``, byte for byte what casty v1 writes."""
        return encode_envelope(self.target, self.sender, self.type_hint, self.payload)

    @staticmethod
    def from_bytes(data):
        """Decode envelope bytes; the payload is copied once, out of ``data``.

        EnvelopeDecodeError when ``data`` is not a valid envelope, TypeError when
        it is not bytes, bytearray or memoryview.
        """
        cdef Py_buffer buf
        if PyBytes_CheckExact(data):
            return _decode(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                "MessageEnvelope.from_bytes expects bytes, bytearray or memoryview, "
                f"got {type(data).__name__}"
            )
        if isinstance(data, memoryview) and not (<memoryview>data).c_contiguous:
            data = (<memoryview>data).tobytes()  # same copy the pure twin makes
        PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)
        try:
            return _decode(<const unsigned char*>buf.buf, buf.len)
        finally:
            PyBuffer_Release(&buf)

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        cdef MessageEnvelope o = <MessageEnvelope>other
        return (
            self.target == o.target
            and self.sender == o.sender
            and self.payload == o.payload
            and self.type_hint == o.type_hint
        )

    def __hash__(self):
        return hash((self.target, self.sender, self.payload, self.type_hint))

    def __repr__(self):
        return (
            f"MessageEnvelope(target={self.target!r}, sender={self.sender!r}, "
            f"payload={self.payload!r}, type_hint={self.type_hint!r})"
        )

    def __reduce__(self):
        return (MessageEnvelope, (self.target, self.sender, self.payload, self.type_hint))
