from typing import Any

from casty.serialization import Serializer

__all__ = ["EnvelopeWriter"]

class EnvelopeWriter:
    serializer: Serializer
    def __init__(self, serializer: Serializer) -> None: ...
    @property
    def cached_headers(self) -> int: ...
    def encode(self, target: str, sender: str, msg: Any) -> bytes: ...
