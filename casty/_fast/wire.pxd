# The constants of casty.wire that the C twins need, as C values, and the 4-byte big-endian
# length prefix they read and write.  Every value here must equal its namesake in casty.wire
# (tests/test_parity.py checks them); cimport it: from casty._fast cimport wire.

from libc.stdint cimport uint32_t

cdef enum:
    FRAME_HANDSHAKE = 0x00
    FRAME_MESSAGE = 0x01
    FRAME_FRAGMENT = 0x05
    FRAME_HDR_ENTRY = 0x06
    FRAME_COMPACT = 0x07
    COMPACT_HEADER_SIZE = 6
    MAX_HDR_ENTRIES = 1024
    MAX_HDR_BYTES = 65536
    MAX_HDR_NAME_BYTES = 1024
    LENGTH_PREFIX_SIZE = 4
    FRAME_HEADER_SIZE = 5
    EXT_DATACLASS = 1
    EXT_ENUM = 2
    EXT_TUPLE = 3
    EXT_SET = 4
    EXT_FROZENSET = 5
    EXT_REF = 6
    EXT_BIGINT = 7

cdef extern from *:
    # Above int range, so not an enum member: the literal itself, as a C constant.
    unsigned long long MAX_FRAME_LENGTH "0xFFFFFFFFULL"


cdef inline uint32_t read_be32(const unsigned char* p) noexcept nogil:
    """The big-endian unsigned length prefix at p[0:4]; the caller has checked 4 bytes are there."""
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | <uint32_t>p[3]


cdef inline void write_be32(unsigned char* p, unsigned long long n) noexcept nogil:
    """Write ``n`` (at most MAX_FRAME_LENGTH, checked by the caller) at p[0:4], big-endian."""
    p[0] = <unsigned char>(n >> 24)
    p[1] = <unsigned char>(n >> 16)
    p[2] = <unsigned char>(n >> 8)
    p[3] = <unsigned char>n
