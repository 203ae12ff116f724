# cython: language_level=3, auto_pickle=False
"""The plain-message msgpack fast path in C: the twin of ``casty.plain_codec``.

Same contract as the pure module: byte-identical output to the generic packer, and
``None`` (decline, use the generic path) for anything that is not a plain message.
Decoding reads peer bytes, so every read is checked by hand against the end of the
buffer (the module is compiled with bounds checking off).  The hash-safe key checks
(``safe_members``, ``dict_from_pairs``, ``keys_safe_within``) follow the rule in the
pure module's docstring exactly.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItemWithError
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_FromDouble
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, memmove

from casty._fast cimport wire
from casty._fast.bytes_reuse cimport CASTY_CAN_REUSE_BYTES, casty_forget_bytes_hash, refcount

from enum import STRICT, Enum, Flag

from casty.address import URI_HEADS, ActorAddress
from casty.msgpack_ext import PLAIN_TYPES, REF_TYPES
from casty.ref import LocalActorRef, RemoteActorRef
from casty.wire import KEY_INT_LIMIT, KEYS_DEPTH

cdef extern from "Python.h":
    bint PyBytes_CheckExact(object o)
    bint PyUnicode_CheckExact(object o)
    bint PyLong_CheckExact(object o)
    bint PyLong_Check(object o)
    bint PyList_CheckExact(object o)
    bint PyFloat_CheckExact(object o)
    bint PyBool_Check(object o)
    bint PyTuple_CheckExact(object o)
    long long PyLong_AsLongLongAndOverflow(object o, int* overflow) except? -1
    unsigned long long PyLong_AsUnsignedLongLong(object o) except? -1
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    int PyObject_GenericSetAttr(object o, object name, object value) except -1
    int PyObject_IS_GC(object o)
    int _PyBytes_Resize(PyObject** bytes, Py_ssize_t newsize)
    PyObject* PyBytes_FromStringAndSize_raw "PyBytes_FromStringAndSize"(const char* v, Py_ssize_t n)
    void PyObject_GC_UnTrack(void* o)

__all__ = [
    "KEY_INT_LIMIT",
    "PLAIN_TYPES",
    "REF_TYPES",
    "decode_plain",
    "dict_from_pairs",
    "encode_plain",
    "keys_safe_within",
    "safe_members",
]

# The last large bytes value decoded, kept to be refilled by the next one of its size once
# its receiver let go of it: a fresh value of a MiB or so faults in page by page when the
# allocator has given the last one back, and that on the loop, while the next messages
# wait (see docs/architecture.md, "Fragments").  One per process, at most _SPARE_BIN_MAX.
cdef object _spare_bin = None
cdef enum:
    _SPARE_BIN_MIN = 128 * 1024
    _SPARE_BIN_MAX = 16 * 1024 * 1024

#: False where bytes objects are never refilled (no exact reference counts, or 3.14+)
_REFILLS_VALUES = bool(CASTY_CAN_REUSE_BYTES)


cdef object _bin_value(const unsigned char* p, Py_ssize_t n):
    """A bytes value of the ``n`` bytes at ``p``: the kept one refilled when nobody else
    holds it and it is that size, else a fresh one (kept in turn when large)."""
    global _spare_bin
    cdef object value
    if n < _SPARE_BIN_MIN or n > _SPARE_BIN_MAX or not CASTY_CAN_REUSE_BYTES:
        return PyBytes_FromStringAndSize(<const char*>p, n)
    value = _spare_bin
    _spare_bin = None
    if value is not None and PyBytes_GET_SIZE(value) == n and refcount(<PyObject*>value) == 1:
        casty_forget_bytes_hash(value)
        memcpy(PyBytes_AS_STRING(value), p, n)
    else:
        value = PyBytes_FromStringAndSize(<const char*>p, n)
    _spare_bin = value
    return value


def spare_value_bytes() -> int:
    """Bytes of the large decoded value kept to refill (0: none)."""
    return 0 if _spare_bin is None else PyBytes_GET_SIZE(_spare_bin)


cdef object _LocalRef = LocalActorRef
cdef object _RemoteRef = RemoteActorRef
cdef object _from_uri = ActorAddress.from_uri
cdef object _ActorAddress = ActorAddress
# from_uri's cache of parsed URI heads (the part before the path): only ever cleared.
cdef dict _heads = URI_HEADS

cdef object _object_new = object.__new__

cdef extern from *:
    """
    /* object.__new__(cls) without the Python-level call: for classes whose __new__ is
       object's own (checked by the caller), this is what that call ends up doing. */
    static PyObject* casty_object_new(PyObject* cls) {
        static PyObject* no_args = NULL;
        if (no_args == NULL && (no_args = PyTuple_New(0)) == NULL) return NULL;
        return PyBaseObject_Type.tp_new((PyTypeObject*)cls, no_args, NULL);
    }
    """
    object casty_object_new(object cls)


# -- encoding -----------------------------------------------------------------------

cdef struct _Buf:
    unsigned char* data
    Py_ssize_t size
    Py_ssize_t cap
    # NULL while data is the caller's stack array; else the bytes object (a new reference)
    # whose storage data is: a large message is written where it will be returned.
    PyObject* out
    # Scattering (see encode_plain_after): whether large bytes values may be left out of
    # data; the list [offset, value, offset, value, ...] of those that were, each offset
    # where the value belongs in data (a new reference, NULL while there are none); and
    # their total size.
    bint scatter
    PyObject* holes
    Py_ssize_t scattered


cdef enum:
    _STACK = 512  # bytes of C stack an encoder starts with: most messages and their header fit
    # A bytes value this large is referenced, not copied, by a scattering encoder: the
    # framing's OWN_WRITE_SIZE, from which on a piece gets a write of its own.
    _SCATTER_MIN = 64 * 1024


cdef inline void _buf_init(_Buf* b, unsigned char* stack, bint scatter) noexcept:
    b.data = stack
    b.size = 0
    b.cap = _STACK
    b.out = NULL
    b.scatter = scatter
    b.holes = NULL
    b.scattered = 0


cdef inline void _buf_free(_Buf* b) noexcept:
    Py_XDECREF(b.out)
    b.out = NULL
    Py_XDECREF(b.holes)
    b.holes = NULL


cdef int _reserve(_Buf* b, Py_ssize_t extra) except -1:
    cdef Py_ssize_t need = b.size + extra
    cdef Py_ssize_t cap
    cdef PyObject* grown
    if need <= b.cap:
        return 0
    cap = b.cap * 2
    if cap < need:
        cap = need + (need >> 3)  # one large value: room for what may follow it
    if b.out is NULL:
        grown = PyBytes_FromStringAndSize_raw(NULL, cap)
        if grown is NULL:
            return -1
        memcpy(PyBytes_AS_STRING(<object>grown), b.data, b.size)
        b.out = grown
    elif _PyBytes_Resize(&b.out, cap) < 0:
        return -1  # the object is freed and b.out is NULL
    b.data = <unsigned char*>PyBytes_AS_STRING(<object>b.out)
    b.cap = cap
    return 0


cdef object _buf_result(_Buf* b, Py_ssize_t start):
    """The bytes written from ``start`` on, as a new bytes (taking over b's if it has one);
    with scattered values, the list of pieces that joined make those bytes."""
    cdef object result
    cdef list holes, pieces
    cdef Py_ssize_t i, at, prev
    if b.holes is not NULL:
        holes = <list>b.holes
        pieces = []
        prev = start
        for i in range(0, len(holes), 2):
            at = <Py_ssize_t>holes[i]
            pieces.append(PyBytes_FromStringAndSize(<const char*>b.data + prev, at - prev))
            pieces.append(holes[i + 1])
            prev = at
        if b.size > prev:
            pieces.append(PyBytes_FromStringAndSize(<const char*>b.data + prev, b.size - prev))
        return pieces
    if b.out is NULL:
        return PyBytes_FromStringAndSize(<const char*>b.data + start, b.size - start)
    if start:
        memmove(b.data, b.data + start, b.size - start)
    if _PyBytes_Resize(&b.out, b.size - start) < 0:
        raise MemoryError()  # (the object is freed and b.out is NULL)
    result = <object>b.out
    _buf_free(b)  # the result holds it now
    return result


cdef inline void _put1(_Buf* b, unsigned char v) noexcept:
    b.data[b.size] = v
    b.size += 1


cdef inline void _put_be(_Buf* b, uint64_t v, int n) noexcept:
    cdef int i
    for i in range(n):
        b.data[b.size + i] = <unsigned char>(v >> (8 * (n - 1 - i)))
    b.size += n


cdef int _put_typed_len(_Buf* b, Py_ssize_t n, unsigned char fix_base, Py_ssize_t fix_max,
                        int has8, unsigned char c8, unsigned char c16, unsigned char c32) except -1:
    """A str/bin/array length header, as small as msgpack's packer makes it."""
    _reserve(b, 5)
    if fix_base and n <= fix_max:
        _put1(b, fix_base | <unsigned char>n)
    elif has8 and n < 0x100:
        _put1(b, c8)
        _put1(b, <unsigned char>n)
    elif n < 0x10000:
        _put1(b, c16)
        _put_be(b, <uint64_t>n, 2)
    elif <uint64_t>n <= 0xFFFFFFFF:
        _put1(b, c32)
        _put_be(b, <uint64_t>n, 4)
    else:
        raise ValueError("value too large for msgpack")
    return 0


cdef int _put_str(_Buf* b, object s) except -1:
    """0 when written; 1 when ``s`` has no UTF-8 form (lone surrogates: not plain)."""
    cdef Py_ssize_t n
    cdef const char* p
    try:
        p = PyUnicode_AsUTF8AndSize(s, &n)
    except UnicodeEncodeError:
        return 1
    _put_typed_len(b, n, 0xA0, 31, 1, 0xD9, 0xDA, 0xDB)
    _reserve(b, n)
    memcpy(b.data + b.size, p, n)
    b.size += n
    return 0


cdef int _put_int(_Buf* b, object v) except -1:
    """0 when written; 1 when ``v`` does not fit 64 bits (not plain)."""
    cdef int overflow = 0
    cdef long long x = PyLong_AsLongLongAndOverflow(v, &overflow)
    cdef unsigned long long u
    _reserve(b, 9)
    if overflow > 0:
        try:
            u = PyLong_AsUnsignedLongLong(v)
        except OverflowError:
            return 1
        _put1(b, 0xCF)
        _put_be(b, u, 8)
    elif overflow < 0:
        return 1
    elif x >= 0:
        if x < 0x80:
            _put1(b, <unsigned char>x)
        elif x < 0x100:
            _put1(b, 0xCC)
            _put1(b, <unsigned char>x)
        elif x < 0x10000:
            _put1(b, 0xCD)
            _put_be(b, <uint64_t>x, 2)
        elif x <= 0xFFFFFFFF:
            _put1(b, 0xCE)
            _put_be(b, <uint64_t>x, 4)
        else:
            _put1(b, 0xCF)
            _put_be(b, <uint64_t>x, 8)
    elif x >= -32:
        _put1(b, <unsigned char>(<int8_t>x))
    elif x >= -128:
        _put1(b, 0xD0)
        _put1(b, <unsigned char>(<int8_t>x))
    elif x >= -32768:
        _put1(b, 0xD1)
        _put_be(b, <uint64_t>(<uint16_t>(<int16_t>x)), 2)
    elif x >= -2147483648:
        _put1(b, 0xD2)
        _put_be(b, <uint64_t>(<uint32_t>(<int32_t>x)), 4)
    else:
        _put1(b, 0xD3)
        _put_be(b, <uint64_t>x, 8)
    return 0


cdef int _put_value(_Buf* b, object v) except -1:
    """0 when written; 1 when ``v`` is not plain."""
    cdef double d
    cdef uint64_t bits
    cdef Py_ssize_t n
    if v is None:
        _reserve(b, 1)
        _put1(b, 0xC0)
    elif v is True:
        _reserve(b, 1)
        _put1(b, 0xC3)
    elif v is False:
        _reserve(b, 1)
        _put1(b, 0xC2)
    elif PyLong_CheckExact(v):
        return _put_int(b, v)
    elif PyUnicode_CheckExact(v):
        return _put_str(b, v)
    elif PyFloat_CheckExact(v):
        d = PyFloat_AS_DOUBLE(v)
        memcpy(&bits, &d, 8)
        _reserve(b, 9)
        _put1(b, 0xCB)
        _put_be(b, bits, 8)
    elif PyBytes_CheckExact(v):
        n = PyBytes_GET_SIZE(v)
        _put_typed_len(b, n, 0, 0, 1, 0xC4, 0xC5, 0xC6)
        if b.scatter and n >= _SCATTER_MIN:
            _scatter(b, v)
        else:
            _reserve(b, n)
            memcpy(b.data + b.size, PyBytes_AS_STRING(v), n)
            b.size += n
    elif type(v) is _RemoteRef or type(v) is _LocalRef:
        return _put_ref(b, v)
    else:
        return 1
    return 0


cdef int _scatter(_Buf* b, object v) except -1:
    """Leave the bytes ``v`` out of b.data: its place there is the current end."""
    if b.holes is NULL:
        holes = []
        Py_INCREF(holes)
        b.holes = <PyObject*>holes
    (<list>b.holes).extend((b.size, v))
    b.scattered += PyBytes_GET_SIZE(v)
    return 0


cdef int _put_ref(_Buf* b, object ref) except -1:
    """ext 6 holding the ref's URI in UTF-8; 1 when the URI has no UTF-8 form."""
    cdef Py_ssize_t n
    cdef const char* p
    uri = ref.address.to_uri()
    try:
        p = PyUnicode_AsUTF8AndSize(uri, &n)
    except UnicodeEncodeError:
        return 1
    if <uint64_t>n > 0xFFFFFFFF:
        return 1
    _reserve(b, 6 + n)
    _write_ext_header(b.data + b.size, n, wire.EXT_REF)
    b.size += _ext_header_size(n)
    memcpy(b.data + b.size, p, n)
    b.size += n
    return 0


cdef inline Py_ssize_t _ext_header_size(Py_ssize_t n) noexcept:
    if n == 1 or n == 2 or n == 4 or n == 8 or n == 16:
        return 2
    if n < 0x100:
        return 3
    if n < 0x10000:
        return 4
    return 6


cdef void _write_ext_header(unsigned char* p, Py_ssize_t n, unsigned char code) noexcept:
    cdef int i
    if n == 1 or n == 2 or n == 4 or n == 8 or n == 16:
        p[0] = 0xD4 if n == 1 else 0xD5 if n == 2 else 0xD6 if n == 4 else 0xD7 if n == 8 else 0xD8
        p[1] = code
    elif n < 0x100:
        p[0] = 0xC7
        p[1] = <unsigned char>n
        p[2] = code
    elif n < 0x10000:
        p[0] = 0xC8
        p[1] = <unsigned char>(n >> 8)
        p[2] = <unsigned char>n
        p[3] = code
    else:
        p[0] = 0xC9
        for i in range(4):
            p[1 + i] = <unsigned char>(n >> (8 * (3 - i)))
        p[5] = code


def encode_plain(name, values):
    """``ext(1, [name, *values])`` as msgpack bytes, or None when a value is not plain."""
    return encode_plain_after(b"", name, values, False)


cdef object encode_plain_after(bytes prefix, object name, object values, bint scatter):
    """``prefix`` followed by ``encode_plain(name, values)`` in one bytes, or None when
    a value is not plain.

    With ``scatter``, a ``bytes`` value of 64 KiB or more is not copied: the result is
    then a list of ``bytes`` pieces, those values among them, that joined make the bytes
    it would otherwise be."""
    if not PyTuple_CheckExact(values):
        return None
    return _encode_ext_after(prefix, name, values, None, PyTuple_GET_SIZE(values), scatter)


cdef object encode_fields_after(bytes prefix, object name, object obj, tuple fields, bint scatter):
    """``encode_plain_after(prefix, name, values, scatter)`` where ``values`` are ``obj``'s
    attributes named ``fields``, read in order as ``operator.attrgetter(*fields)`` would;
    None when one is not plain or cannot be read (the generic path then reports why)."""
    return _encode_ext_after(prefix, name, obj, fields, PyTuple_GET_SIZE(fields), scatter)


cdef object _encode_ext_after(bytes prefix, object name, object source, object fields,
                              Py_ssize_t count, bint scatter):
    """The body of both: the values are ``source``'s items, or its attributes ``fields``."""
    cdef unsigned char stack[_STACK]
    cdef _Buf b
    cdef Py_ssize_t i, body, head, plen, start
    if not PyUnicode_CheckExact(name):
        return None
    plen = PyBytes_GET_SIZE(prefix)
    _buf_init(&b, stack, scatter)
    try:
        _reserve(&b, plen + 6)
        memcpy(b.data, PyBytes_AS_STRING(prefix), plen)
        b.size = plen + 6  # room for the largest ext header, written last
        _put_typed_len(&b, count + 1, 0x90, 15, 0, 0, 0xDC, 0xDD)
        if _put_str(&b, name):
            return None
        for i in range(count):
            if fields is None:
                value = <object>PyTuple_GET_ITEM(source, i)
            else:
                try:
                    value = getattr(source, <object>PyTuple_GET_ITEM(fields, i))
                except Exception:
                    return None
            if _put_value(&b, value):
                return None
        body = b.size - plen - 6 + b.scattered
        if <uint64_t>body > 0xFFFFFFFF:
            return None  # the generic path reports the size problem
        head = _ext_header_size(body)
        start = 6 - head
        _write_ext_header(b.data + plen + start, body, wire.EXT_DATACLASS)
        if start:
            memmove(b.data + start, b.data, plen)  # the prefix moves up to meet the header
        return _buf_result(&b, start)
    finally:
        _buf_free(&b)


cdef object encode_value_after(bytes prefix, object value, bint scatter):
    """``prefix`` followed by the msgpack of ``value`` sent as a message by itself, in one
    bytes, when it is a plain field value (scalar or actor ref; what the generic packer
    writes for it); None for anything else.  ``scatter`` as for encode_plain_after."""
    cdef unsigned char stack[_STACK]
    cdef _Buf b
    cdef Py_ssize_t plen = PyBytes_GET_SIZE(prefix)
    _buf_init(&b, stack, scatter)
    try:
        _reserve(&b, plen)
        memcpy(b.data, PyBytes_AS_STRING(prefix), plen)
        b.size = plen
        if _put_value(&b, value):
            return None
        return _buf_result(&b, 0)
    finally:
        _buf_free(&b)


# -- decoding -----------------------------------------------------------------------

cdef struct _Reader:
    const unsigned char* p
    const unsigned char* end


cdef inline bint _need(_Reader* r, Py_ssize_t n) noexcept:
    return r.end - r.p >= n


cdef inline uint64_t _be(const unsigned char* p, int n) noexcept:
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


cdef int _read_len(_Reader* r, int n, Py_ssize_t* out) noexcept:
    """Read an n-byte big-endian length; 0 on success, 1 when the input is short."""
    if not _need(r, n):
        return 1
    out[0] = <Py_ssize_t>_be(r.p, n)
    r.p += n
    return 0


cdef object _DECLINE = object()


cdef object _read_ref(_Reader* r, Py_ssize_t size, object ref_factory):
    """The ref an ext 6 body of ``size`` bytes names, or _DECLINE."""
    cdef const unsigned char* start
    if ref_factory is None or not _need(r, size):
        return _DECLINE
    start = r.p
    r.p += size
    try:
        return ref_factory(_address_at(start, size))
    except Exception:
        return _DECLINE  # the generic path says what is wrong with it


cdef object _address_at(const unsigned char* p, Py_ssize_t size):
    """``ActorAddress.from_uri`` of the UTF-8 URI at p[0:size]. When from_uri has seen the
    URI's head (its node) before, the address is built here at C level: no checks are
    skipped, since the head was checked when it was cached and the path is everything
    from the first '/' on (a byte that is never part of a longer UTF-8 character)."""
    cdef const unsigned char* slash
    cdef tuple parsed
    if size > 8 and memcmp(p, b"casty://", 8) == 0:
        slash = <const unsigned char*>memchr(p + 8, 47, size - 8)  # '/'
        if slash is not NULL:
            found = _heads.get(PyUnicode_DecodeUTF8(<const char*>p + 8, slash - p - 8, NULL))
            if found is not None:
                parsed = <tuple>found
                path = PyUnicode_DecodeUTF8(<const char*>slash, p + size - slash, NULL)
                address = casty_object_new(_ActorAddress)
                PyObject_GenericSetAttr(address, "system", parsed[0])
                PyObject_GenericSetAttr(address, "path", path)
                PyObject_GenericSetAttr(address, "host", parsed[1])
                PyObject_GenericSetAttr(address, "port", parsed[2])
                PyObject_GenericSetAttr(address, "node_id", None)
                return address
    return _from_uri(PyUnicode_DecodeUTF8(<const char*>p, size, NULL))


cdef object _read_value(_Reader* r, object ref_factory):
    """One plain value, or _DECLINE for anything else (or short input)."""
    cdef unsigned char c
    cdef Py_ssize_t n = 0
    cdef uint64_t u
    cdef double d
    cdef float f
    cdef uint32_t u32
    cdef object s
    if not _need(r, 1):
        return _DECLINE
    c = r.p[0]
    r.p += 1
    if c < 0x80:
        return PyLong_FromLongLong(c)
    if c >= 0xE0:
        return PyLong_FromLongLong(<int8_t>c)
    if 0xA0 <= c <= 0xBF:
        n = c & 0x1F
    elif c == 0xC0:
        return None
    elif c == 0xC2:
        return False
    elif c == 0xC3:
        return True
    elif 0xCC <= c <= 0xCF:
        n = 1 << (c - 0xCC)
        if not _need(r, n):
            return _DECLINE
        u = _be(r.p, <int>n)
        r.p += n
        return PyLong_FromUnsignedLongLong(u)
    elif 0xD0 <= c <= 0xD3:
        n = 1 << (c - 0xD0)
        if not _need(r, n):
            return _DECLINE
        u = _be(r.p, <int>n)
        r.p += n
        if n == 1:
            return PyLong_FromLongLong(<int8_t>u)
        if n == 2:
            return PyLong_FromLongLong(<int16_t>u)
        if n == 4:
            return PyLong_FromLongLong(<int32_t>u)
        return PyLong_FromLongLong(<int64_t>u)
    elif c == 0xCA:
        if not _need(r, 4):
            return _DECLINE
        u32 = <uint32_t>_be(r.p, 4)
        memcpy(&f, &u32, 4)
        r.p += 4
        return PyFloat_FromDouble(<double>f)
    elif c == 0xCB:
        if not _need(r, 8):
            return _DECLINE
        u = _be(r.p, 8)
        memcpy(&d, &u, 8)
        r.p += 8
        return PyFloat_FromDouble(d)
    elif 0xC4 <= c <= 0xC6:
        if _read_len(r, 1 << (c - 0xC4), &n):
            return _DECLINE
        if not _need(r, n):
            return _DECLINE
        s = _bin_value(r.p, n)
        r.p += n
        return s
    elif 0xD9 <= c <= 0xDB:
        if _read_len(r, 1 << (c - 0xD9), &n):
            return _DECLINE
    elif 0xD4 <= c <= 0xD8 or 0xC7 <= c <= 0xC9:
        if c >= 0xD4:
            n = 1 << (c - 0xD4)
        elif _read_len(r, 1 << (c - 0xC7), &n):
            return _DECLINE
        if not _need(r, 1) or r.p[0] != wire.EXT_REF:
            return _DECLINE
        r.p += 1
        return _read_ref(r, n, ref_factory)
    else:
        return _DECLINE  # array, map, another ext, or a byte msgpack never writes
    # a str of n bytes
    if not _need(r, n):
        return _DECLINE
    try:
        s = PyUnicode_DecodeUTF8(<const char*>r.p, n, NULL)
    except UnicodeDecodeError:
        return _DECLINE  # the generic path names the problem
    r.p += n
    return s


cdef int _ext_body(_Reader* r) noexcept:
    """Step past the header of exactly one dataclass ext spanning the buffer; 1 if not."""
    cdef unsigned char c
    cdef Py_ssize_t size = 0
    if not _need(r, 2):
        return 1
    c = r.p[0]
    r.p += 1
    if 0xD4 <= c <= 0xD8:
        size = 1 << (c - 0xD4)
    elif 0xC7 <= c <= 0xC9:
        if _read_len(r, 1 << (c - 0xC7), &size):
            return 1
    else:
        return 1
    if not _need(r, 1) or r.p[0] != wire.EXT_DATACLASS:
        return 1
    r.p += 1
    if r.end - r.p != size:
        return 1
    return 0


def decode_plain(data, plans, ref_factory=None):
    """The message a plain payload stands for, or None (use the generic path)."""
    if not PyBytes_CheckExact(data):
        return None
    return decode_plain_at(
        <const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), plans, ref_factory
    )


# The last message type decoded.  A stream mostly carries one type, so its name's bytes
# are compared instead of decoding and hashing a new str per message (the lookup in
# ``plans`` still happens each time, so a changed registry is seen), and its plan's
# attributes are read once.  Plans do not change after they are made.
cdef bytes _last_name_bytes = b""
cdef object _last_name = None
cdef object _last_plan = None
cdef object _last_cls = None
cdef tuple _last_fields = ()
cdef bint _last_direct = False
cdef bint _last_object_new = False  # the class's __new__ is object.__new__
cdef bint _last_enum = False
cdef bint _last_frozen = False  # a frozen dataclass
cdef Py_ssize_t _last_size = 0


cdef int _read_str_span(_Reader* r, const unsigned char** start, Py_ssize_t* n) noexcept:
    """Step past a str item, giving its UTF-8 bytes; 1 if the next item is not a whole str."""
    cdef unsigned char c
    if not _need(r, 1):
        return 1
    c = r.p[0]
    r.p += 1
    if 0xA0 <= c <= 0xBF:
        n[0] = c & 0x1F
    elif 0xD9 <= c <= 0xDB:
        if _read_len(r, 1 << (c - 0xD9), n):
            return 1
    else:
        return 1
    if not _need(r, n[0]):
        return 1
    start[0] = r.p
    r.p += n[0]
    return 0


cdef object decode_plain_at(const unsigned char* data, Py_ssize_t size, object plans, object ref_factory):
    global _last_name_bytes, _last_name, _last_plan, _last_cls, _last_fields, _last_direct
    global _last_enum, _last_size, _last_object_new, _last_frozen
    cdef _Reader r
    cdef unsigned char c
    cdef Py_ssize_t count = 0, i, n = 0
    cdef const unsigned char* start = NULL
    cdef object name, plan, value, obj
    cdef PyObject* found
    cdef bint atomic
    cdef list values
    r.p = data
    r.end = data + size
    if _ext_body(&r):
        # Not a dataclass: a scalar or an actor ref sent by itself (a common ask reply)
        # is plain too.  None declines: it means "use the generic path".
        r.p = data
        value = _read_value(&r, ref_factory)
        return value if value is not _DECLINE and r.p == r.end else None
    if not _need(&r, 1):
        return None
    c = r.p[0]
    r.p += 1
    if 0x90 <= c <= 0x9F:
        count = c & 0x0F
    elif c == 0xDC or c == 0xDD:
        if _read_len(&r, 2 if c == 0xDC else 4, &count):
            return None
    else:
        return None
    if count < 1 or count > r.end - r.p:  # every item takes at least one byte
        return None
    if _read_str_span(&r, &start, &n):
        return None
    if n == PyBytes_GET_SIZE(_last_name_bytes) and memcmp(PyBytes_AS_STRING(_last_name_bytes), start, n) == 0:
        name = _last_name
    else:
        try:
            name = PyUnicode_DecodeUTF8(<const char*>start, n, NULL)
        except UnicodeDecodeError:
            return None  # the generic path names the problem
        _last_name_bytes = PyBytes_FromStringAndSize(<const char*>start, n)
        _last_name = name
    if PyDict_CheckExact(plans):  # the registry's own table: skip the method call
        found = PyDict_GetItemWithError(plans, name)
        plan = <object>found if found is not NULL else None
    else:
        plan = plans.get(name)
    if plan is None:
        return None
    if plan is not _last_plan:
        _last_cls = plan.cls
        _last_fields = plan.fields
        _last_direct = plan.direct
        _last_enum = plan.is_enum
        _last_size = plan.size
        _last_object_new = getattr(_last_cls, "__new__", None) is _object_new
        _last_frozen = getattr(getattr(_last_cls, "__dataclass_params__", None), "frozen", False) is True
        _last_plan = plan
    if _last_enum or _last_size != count:
        return None
    if _last_direct:
        # Fields are set as they are read; a value that declines drops the half-built
        # object, which nothing else has seen (its class's __init__ only stores fields).
        fields = _last_fields
        obj = casty_object_new(_last_cls) if _last_object_new else _object_new(_last_cls)
        atomic = _last_frozen
        for i in range(count - 1):
            value = _read_value(&r, ref_factory)
            if value is _DECLINE:
                return None
            PyObject_GenericSetAttr(obj, <object>PyTuple_GET_ITEM(fields, i), value)
            if atomic and PyObject_IS_GC(value):
                atomic = False
        if r.p != r.end:
            return None
        if atomic:
            # A frozen message of scalars, strs and bytes refers to no object the cycle
            # collector tracks, and cannot be changed to: like CPython's own tuples and
            # dicts of such values, it is left out of the collector's passes.  Messages
            # queue in mailboxes by the thousand, and each collection walked them all.
            PyObject_GC_UnTrack(<void*>obj)
        return obj
    build = plan.build
    values = []
    for i in range(count - 1):
        value = _read_value(&r, ref_factory)
        if value is _DECLINE:
            return None
        values.append(value)
    if r.p != r.end:
        return None
    try:
        return build(*values)
    except Exception:
        return None  # the generic path rebuilds it again and reports why it fails


# -- hash-safe keys (see casty.plain_codec) -------------------------------------------

cdef long long _KEY_INT_LIMIT = KEY_INT_LIMIT
cdef int _KEYS_DEPTH = KEYS_DEPTH
cdef object _Enum = Enum
cdef object _Flag = Flag
cdef object _STRICT = STRICT


cdef bint _safe_key(object key) except -1:
    """Whether ``key`` may be a dict key or set member that travels."""
    cdef int overflow = 0
    cdef long long x
    if PyUnicode_CheckExact(key) or PyBytes_CheckExact(key) or key is None:
        return True
    if PyLong_Check(key):  # the value itself, whatever a subclass overrides (as int.__index__)
        x = PyLong_AsLongLongAndOverflow(key, &overflow)
        return overflow == 0 and -_KEY_INT_LIMIT < x < _KEY_INT_LIMIT
    if type(key) is _RemoteRef or type(key) is _LocalRef:
        return True
    return isinstance(key, _Enum) and (not isinstance(key, _Flag) or getattr(type(key), "_boundary_", None) is _STRICT)


cdef bint _all_safe(object items) except -1:
    cdef object item
    if PyList_CheckExact(items):
        for item in <list>items:
            if not _safe_key(item):
                return False
        return True
    for item in items:
        if not _safe_key(item):
            return False
    return True


def safe_members(items):
    """True when every item of ``items`` (a list, set or dict: its keys) is a hash-safe key."""
    return _all_safe(items)


def dict_from_pairs(list pairs):
    """``dict(pairs)`` when every key is hash-safe, else None (the caller names the key)."""
    cdef dict result = {}
    cdef object pair
    for pair in pairs:
        key, value = pair  # msgpack's object_pairs_hook gives 2-tuples
        if not _safe_key(key):
            return None  # before the key is hashed into anything
        result[key] = value
    return result


cdef bint _keys_safe_within(object value, int depth) except -1:
    cdef object item
    if PyList_CheckExact(value):
        if depth >= _KEYS_DEPTH:
            return True
        for item in <list>value:
            if (PyList_CheckExact(item) or PyDict_CheckExact(item)) and not _keys_safe_within(item, depth + 1):
                return False
        return True
    if PyDict_CheckExact(value):
        if not _all_safe(value):
            return False
        if depth >= _KEYS_DEPTH:
            return True
        for item in (<dict>value).values():
            if (PyList_CheckExact(item) or PyDict_CheckExact(item)) and not _keys_safe_within(item, depth + 1):
                return False
    return True


def keys_safe_within(value, int depth=0):
    """False when a dict reached from ``value`` through lists and dicts (exact types) has a
    key that is not hash-safe; past KEYS_DEPTH levels it stops looking (True)."""
    return _keys_safe_within(value, depth)
