"""The message envelope and its wire format: the pure-Python twin of ``casty._fast.envelope``.

Wire format: ``[header_len:4, big-endian unsigned][header][payload]``, where the
header is a UTF-8 JSON object with the string keys ``target``, ``sender`` and
``type_hint``.  :meth:`MessageEnvelope.to_bytes` writes the header exactly as
``json.dumps`` does with its defaults (ASCII escapes, ``", "``/``": "``
separators), so the bytes match the original casty release;
:meth:`MessageEnvelope.from_bytes` accepts any JSON object carrying the three
keys (key order, spacing and extra keys do not matter).

Bad input raises :class:`EnvelopeDecodeError` (a ``ValueError``); an argument
that is not bytes-like at all raises ``TypeError``.
"""

from __future__ import annotations

import struct
from dataclasses import FrozenInstanceError, dataclass

from casty.errors import EnvelopeDecodeError
from casty.transport.envelope_codec import bounds_error, check_str, decode_header_slow, encode_header

# The error and the header codec live in neutral modules that both twins import.
__all__ = [
    "EnvelopeDecodeError",
    "MessageEnvelope",
    "bounds_error",
    "decode_header_slow",
    "encode_header",
]

_BYTES_LIKE = (bytes, bytearray, memoryview)
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class MessageEnvelope:
    """Wire-format envelope for messages sent over TCP.

    >>> env = MessageEnvelope(target="casty://sys/user/a", sender="casty://sys/",
    ...                       payload=b'{"x":1}', type_hint="mymod.Msg")
    >>> data = env.to_bytes()
    >>> MessageEnvelope.from_bytes(data).target
    'casty://sys/user/a'
    """

    target: str
    sender: str
    payload: bytes
    type_hint: str

    def __post_init__(self) -> None:
        set_field = object.__setattr__
        set_field(self, "target", check_str("target", self.target))
        set_field(self, "sender", check_str("sender", self.sender))
        set_field(self, "type_hint", check_str("type_hint", self.type_hint))
        payload: object = self.payload
        if type(payload) is not bytes:
            if not isinstance(payload, _BYTES_LIKE):
                raise TypeError(
                    "MessageEnvelope payload must be bytes, bytearray or memoryview, "
                    f"got {type(payload).__name__}"
                )
            set_field(self, "payload", bytes(payload))

    def to_bytes(self) -> bytes:
        """``[header_len:4][header][payload]``, byte for byte what casty v1 writes."""
        return encode_header(self.target, self.sender, self.type_hint) + self.payload

    @staticmethod
    def from_bytes(data: bytes | bytearray | memoryview) -> MessageEnvelope:
        """Decode envelope bytes; the payload is copied once, out of ``data``.

        EnvelopeDecodeError when ``data`` is not a valid envelope, TypeError when
        it is not bytes, bytearray or memoryview.
        """
        view: bytes | memoryview
        if type(data) is bytes:
            view = data
        elif isinstance(data, _BYTES_LIKE):
            mv = memoryview(data)
            # Index bytes, whatever the exporter's item format; a strided view is copied.
            view = mv.cast("B") if mv.c_contiguous else mv.tobytes()
        else:
            raise TypeError(
                "MessageEnvelope.from_bytes expects bytes, bytearray or memoryview, "
                f"got {type(data).__name__}"
            )
        size = len(view)
        if size < 4:
            raise bounds_error(size, None)
        (header_len,) = _LENGTH.unpack_from(view)
        if header_len > size - 4:
            raise bounds_error(size, header_len)
        end = 4 + header_len
        target, sender, type_hint = decode_header_slow(view[4:end])
        return MessageEnvelope(target, sender, bytes(view[end:]), type_hint)


# dataclass(frozen=True, slots=True) writes a __setattr__/__delattr__ that names the class
# the slots rebuild replaced, so on CPython 3.11 an attribute the envelope does not have
# raised TypeError.  These raise AttributeError for every name, as the Cython twin does.
_FIELDS = frozenset(("target", "sender", "payload", "type_hint"))


def _refuse_set(self: MessageEnvelope, name: str, value: object) -> None:
    if name in _FIELDS:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")
    raise AttributeError(f"'MessageEnvelope' object has no attribute {name!r}")


def _refuse_delete(self: MessageEnvelope, name: str) -> None:
    if name in _FIELDS:
        raise FrozenInstanceError(f"cannot delete field {name!r}")
    raise AttributeError(f"'MessageEnvelope' object has no attribute {name!r}")


setattr(MessageEnvelope, "__setattr__", _refuse_set)  # noqa: B010 (mypy refuses a method assignment)
setattr(MessageEnvelope, "__delattr__", _refuse_delete)  # noqa: B010
