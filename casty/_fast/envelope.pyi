"""Types of the Cython twin of ``casty.transport.envelope``."""

from casty.errors import EnvelopeDecodeError as EnvelopeDecodeError
from casty.transport.envelope_codec import bounds_error as bounds_error
from casty.transport.envelope_codec import decode_header_slow as decode_header_slow

__all__ = [
    "EnvelopeDecodeError",
    "MessageEnvelope",
    "bounds_error",
    "decode_header_slow",
    "encode_header",
]

def encode_header(target: str, sender: str, type_hint: str) -> bytes: ...

class MessageEnvelope:
    @property
    def target(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def type_hint(self) -> str: ...
    def __init__(
        self,
        target: str,
        sender: str,
        payload: bytes | bytearray | memoryview,
        type_hint: str,
    ) -> None: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes | bytearray | memoryview) -> MessageEnvelope: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    def __reduce__(self) -> tuple[type[MessageEnvelope], tuple[str, str, bytes, str]]: ...
