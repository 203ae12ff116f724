from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

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

KEY_INT_LIMIT: Final[int]
PLAIN_TYPES: Final[frozenset[type]]
REF_TYPES: Final[frozenset[type]]

def encode_plain(name: str, values: tuple[Any, ...]) -> bytes | None: ...
def decode_plain(data: bytes, plans: Mapping[str, Any], ref_factory: Callable[[Any], Any] | None = None) -> Any: ...
def safe_members(items: Collection[Any]) -> bool: ...
def dict_from_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any] | None: ...
def keys_safe_within(value: object, depth: int = 0) -> bool: ...

def spare_value_bytes() -> int: ...
