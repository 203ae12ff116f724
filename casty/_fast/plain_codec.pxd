# The plain-message codec at C level: the decoder reads straight out of a frame buffer
# (inbound), the encoder writes after an envelope header in one allocation (outbound).

cdef object decode_plain_at(const unsigned char* data, Py_ssize_t size, object plans, object ref_factory)
cdef object encode_plain_after(bytes prefix, object name, object values, bint scatter)
cdef object encode_value_after(bytes prefix, object value, bint scatter)
cdef object encode_fields_after(bytes prefix, object name, object obj, tuple fields, bint scatter)
