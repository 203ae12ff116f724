from collections.abc import Callable, Mapping
from typing import Any, Final

PLAIN_TYPES: Final[frozenset[type]]
REF_TYPES: Final[frozenset[type]]

def encode_plain(name: str, values: tuple[Any, ...]) -> bytes | None: ...
def decode_plain(data: bytes, plans: Mapping[str, Any], ref_factory: Callable[[Any], Any] | None = None) -> Any: ...
