# The plain-message decoder, readable straight out of a frame buffer by the inbound path.

cdef object decode_plain_at(const unsigned char* data, Py_ssize_t size, object plans, object ref_factory)
