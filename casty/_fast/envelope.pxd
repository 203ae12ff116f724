# C-level pieces of the envelope codec that the inbound path reads frames with.

cdef class MessageEnvelope:
    cdef readonly str target
    cdef readonly str sender
    cdef readonly bytes payload
    cdef readonly str type_hint


cdef Py_ssize_t header_end(const unsigned char* p, Py_ssize_t size) except -1
cdef bint canonical_fields(const unsigned char* p, Py_ssize_t end, Py_ssize_t* spans) noexcept
# Length prefix, JSON header, then ``payload`` (None: header only); the fields must be exact str.
cdef bytes encode_envelope(str target, str sender, str type_hint, bytes payload)
