"""msgpack ext framing and the plain-value rule, shared by the serializer and both
plain-codec twins: a neutral module (msgpack-python keeps its own ``ext.py`` the same way).

The ext type codes are in ``casty.wire``; what a *plain* message is, in
``casty.plain_codec``.  This module imports only ``casty.wire`` and ``casty.ref``.
"""

from __future__ import annotations

from typing import Final

from casty.ref import LocalActorRef, RemoteActorRef
from casty.wire import EXT_DATACLASS

__all__ = ["PLAIN_TYPES", "REF_TYPES", "dataclass_ext_body", "ext_header"]

#: exact types a plain message's fields may hold, besides the actor refs
PLAIN_TYPES: Final = frozenset({type(None), bool, int, float, str, bytes})
#: actor refs travel as ext 6 holding their URI, as the generic path writes them
REF_TYPES: Final = frozenset({LocalActorRef, RemoteActorRef})

_FIXEXT: Final = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
_FIXEXT_SIZE: Final = {v: k for k, v in _FIXEXT.items()}


def ext_header(code: int, size: int) -> bytes:
    """The msgpack ext header for a body of ``size`` bytes, as msgpack's packer writes it."""
    fixed = _FIXEXT.get(size)
    if fixed is not None:
        return bytes((fixed, code))
    if size < 0x100:
        return bytes((0xC7, size, code))
    if size < 0x10000:
        return b"\xc8" + size.to_bytes(2, "big") + bytes((code,))
    return b"\xc9" + size.to_bytes(4, "big") + bytes((code,))



def dataclass_ext_body(data: bytes) -> bytes | None:
    """The body when ``data`` is exactly one dataclass ext; None for anything else."""
    n = len(data)
    if n < 2:
        return None
    first = data[0]
    size = _FIXEXT_SIZE.get(first)
    if size is not None:
        start = 2
    elif first == 0xC7 and n >= 3:
        size, start = data[1], 3
    elif first == 0xC8 and n >= 4:
        size, start = int.from_bytes(data[1:3], "big"), 4
    elif first == 0xC9 and n >= 6:
        size, start = int.from_bytes(data[1:5], "big"), 6
    else:
        return None
    if data[start - 1] != EXT_DATACLASS or n != start + size:
        return None
    return data[start:]
