"""The wire's constants, in one place: a neutral module that both twins import.

Frame kinds and sizes (``[length:4, big-endian][kind:1][body]``), the msgpack ext
type codes of ``casty.serialization``, the limits the framing enforces, the path
prefixes that routing treats specially, and the bounds of the twins' caches.
``casty/_fast/wire.pxd`` mirrors the ones the C code needs (``tests/test_parity.py``
checks that the two agree).  The layout itself is described in
``docs/architecture.md``.  This module imports nothing.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CAP_FRAGMENTS",
    "CAP_HEADERS",
    "CAP_HEARTBEAT",
    "CAP_WATCH",
    "COMPACT_HEADER_SIZE",
    "DEFAULT_FRAGMENT_SIZE",
    "DEFAULT_FRAGMENT_WINDOW",
    "DEFAULT_MAX_FRAGMENT_STREAMS",
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_HANDSHAKE_SIZE",
    "DEFAULT_MAX_IGNORED_FRAMES",
    "DEFAULT_MAX_QUEUE_BYTES",
    "DEFAULT_MAX_REMOTE_WATCHES",
    "DEFAULT_READ_BUDGET_FRAMES",
    "DEFAULT_WRITE_HIGH_WATER",
    "DEFAULT_WRITE_LOW_WATER",
    "EXT_BIGINT",
    "EXT_CODEC",
    "EXT_DATACLASS",
    "EXT_DATE",
    "EXT_DECIMAL",
    "EXT_ENUM",
    "EXT_FROZENSET",
    "EXT_NAIVE_DATETIME",
    "EXT_REF",
    "EXT_SET",
    "EXT_TIMESTAMP",
    "EXT_TUPLE",
    "EXT_UUID",
    "FRAME_COMPACT",
    "FRAME_ECHO",
    "FRAME_FRAGMENT",
    "FRAME_HANDSHAKE",
    "FRAME_HDR_ENTRY",
    "FRAME_HEADER_SIZE",
    "FRAME_MESSAGE",
    "FRAME_PING",
    "FRAME_WATCH",
    "KEYS_DEPTH",
    "KEY_INT_LIMIT",
    "LENGTH_PREFIX_SIZE",
    "MAX_CACHED_HEADERS",
    "MAX_CACHED_TARGETS",
    "MAX_CACHED_TARGET_CHARS",
    "MAX_CACHED_TARGET_LENGTH",
    "MAX_DECIMAL_CHARS",
    "MAX_FRAME_LENGTH",
    "MAX_HDR_BYTES",
    "MAX_HDR_ENTRIES",
    "MAX_HDR_NAME_BYTES",
    "MAX_WATCH_PATH",
    "OWN_WRITE_SIZE",
    "SYSTEM_PREFIX",
    "TEMP_PREFIX",
    "WATCH_TAG_TERMINATED",
    "WATCH_TAG_UNWATCH",
    "WATCH_TAG_WATCH",
]

# -- frames ---------------------------------------------------------------------------

#: frame kinds: the handshake JSON, and an encoded envelope; any other kind is ignored
#: unless both handshakes list the feature (cap) it belongs to
FRAME_HANDSHAKE: Final = 0x00
FRAME_MESSAGE: Final = 0x01
#: cap "hb": a ping carries the sender's 8-byte big-endian clock reading (ns); the echo
#: returns those 8 bytes unchanged, so only the pinger's clock is ever compared
FRAME_PING: Final = 0x02
FRAME_ECHO: Final = 0x03
#: cap "watch": a watch, unwatch or terminated notice (body in casty.transport.watch_codec)
FRAME_WATCH: Final = 0x04
#: the first byte of a FRAME_WATCH body: what the frame says
WATCH_TAG_WATCH: Final = 0x01
WATCH_TAG_UNWATCH: Final = 0x02
WATCH_TAG_TERMINATED: Final = 0x03
#: the longest actor path (UTF-8 bytes) a watch frame carries
MAX_WATCH_PATH: Final = 1024
#: watches a peer may hold on this node per connection (RemoteActorSystem(max_remote_watches=))
DEFAULT_MAX_REMOTE_WATCHES: Final = 65_536
#: cap "frag": a piece of a large message, or the receiver's acknowledgement of pieces
#: (body in casty.transport.fragments)
FRAME_FRAGMENT: Final = 0x05
#: cap "hdr": a header-table entry ``[id:2][name: UTF-8]`` (an empty body clears the table),
#: and a compact message ``[target id:2][sender id:2][type hint id:2][payload]``; see
#: casty.transport.compact_codec and docs/architecture.md
FRAME_HDR_ENTRY: Final = 0x06
FRAME_COMPACT: Final = 0x07
#: cap names, as listed in the handshake's "caps"
CAP_HEARTBEAT: Final = "hb"
CAP_WATCH: Final = "watch"
CAP_FRAGMENTS: Final = "frag"
CAP_HEADERS: Final = "hdr"
#: bytes of a big-endian unsigned length prefix (of frames, and of an envelope's header)
LENGTH_PREFIX_SIZE: Final = 4
#: the length prefix and the kind byte
FRAME_HEADER_SIZE: Final = 5
#: the largest length a 4-byte prefix can state
MAX_FRAME_LENGTH: Final = 0xFFFFFFFF

DEFAULT_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024
DEFAULT_WRITE_HIGH_WATER: Final = 256 * 1024
DEFAULT_WRITE_LOW_WATER: Final = 64 * 1024
DEFAULT_MAX_QUEUE_BYTES: Final = 8 * 1024 * 1024
#: the limit on the length prefix of a frame received before the handshake; at most
#: MAX_HANDSHAKE_SIZE + 1 (the type byte), so a frame it lets in is one the codec reads
DEFAULT_MAX_HANDSHAKE_SIZE: Final = 8 * 1024
#: frames one read delivers before the rest waits for a later loop turn
DEFAULT_READ_BUDGET_FRAMES: Final = 1024
#: frames of unknown type in a row after which a connection is closed
DEFAULT_MAX_IGNORED_FRAMES: Final = 1024
#: cap "frag": a message frame larger than this goes out as fragments carrying this much each
DEFAULT_FRAGMENT_SIZE: Final = 64 * 1024
#: fragments a sender has out unacknowledged, at most: what a small message may wait behind
DEFAULT_FRAGMENT_WINDOW: Final = 2
#: fragment streams a receiver keeps open per connection, at most
DEFAULT_MAX_FRAGMENT_STREAMS: Final = 8
#: a queued frame or envelope this large is written as it is, not copied into a joined write
OWN_WRITE_SIZE: Final = 64 * 1024

# -- msgpack ext type codes (casty.serialization); up to EXT_FROZENSET the body is an array --

EXT_DATACLASS: Final = 1  # [name, *field values]
EXT_ENUM: Final = 2  # [name, value]
EXT_TUPLE: Final = 3  # [items]
EXT_SET: Final = 4
EXT_FROZENSET: Final = 5
EXT_REF: Final = 6  # UTF-8 URI
EXT_BIGINT: Final = 7  # big-endian two's complement
EXT_NAIVE_DATETIME: Final = 8  # a Timestamp body (4, 8 or 12 bytes) of the wall-clock fields
EXT_DATE: Final = 9  # 4 bytes: days since 1970-01-01, big-endian signed
EXT_DECIMAL: Final = 10  # ASCII: str(Decimal), exactly
EXT_UUID: Final = 11  # 16 bytes: UUID.bytes
EXT_CODEC: Final = 12  # msgpack [name, encoded value] of a TypeRegistry.register_codec class
#: msgpack's own Timestamp extension: an aware datetime's instant (4, 8 or 12 bytes)
EXT_TIMESTAMP: Final = -1
#: the longest Decimal text that travels (what encodes also decodes)
MAX_DECIMAL_CHARS: Final = 4096

#: a hash-safe int key lies strictly between -KEY_INT_LIMIT and KEY_INT_LIMIT; there
#: hash(n) == n (hashes are taken modulo 2**61 - 1), so a peer cannot make two collide
KEY_INT_LIMIT: Final = 2**60
#: how deep keys_safe_within looks; msgpack's packer refuses deeper nesting (511) anyway
KEYS_DEPTH: Final = 512

# -- paths ----------------------------------------------------------------------------

#: paths of the one-off actors that receive ask replies (``/temp/ask-<n>``); caches keyed
#: by path or URI leave them out, since each is used once
TEMP_PREFIX: Final = "/temp/"
#: paths of the system's own infrastructure actors: no peer may message them
SYSTEM_PREFIX: Final = "/system/"

# -- cache bounds (peers choose what fills them) ---------------------------------------

#: envelope headers an EnvelopeWriter remembers before its cache starts over
MAX_CACHED_HEADERS: Final = 4096
#: distinct targets an InboundMessageHandler remembers before its cache starts over
MAX_CACHED_TARGETS: Final = 65536
#: characters of all cached targets together, and of one: a peer chooses their length
MAX_CACHED_TARGET_CHARS: Final = 4 * 1024 * 1024
MAX_CACHED_TARGET_LENGTH: Final = 1024

# -- compact headers (cap "hdr"): one table per connection and direction ---------------

#: bytes of a compact message's header: three 2-byte big-endian ids
COMPACT_HEADER_SIZE: Final = 6
#: entries of one table; the sender starts over (an empty entry frame) when full
MAX_HDR_ENTRIES: Final = 1024
#: UTF-8 bytes of all the names in one table, and of one name
MAX_HDR_BYTES: Final = 64 * 1024
MAX_HDR_NAME_BYTES: Final = 1024
