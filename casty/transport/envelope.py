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

import json
import struct
from dataclasses import FrozenInstanceError, dataclass

__all__ = [
    "EnvelopeDecodeError",
    "MessageEnvelope",
    "bounds_error",
    "decode_header_slow",
    "encode_header",
]

_LENGTH = struct.Struct(">I")
_KEYS = ("target", "sender", "type_hint")
_BYTES_LIKE = (bytes, bytearray, memoryview)


class EnvelopeDecodeError(ValueError):
    """Envelope bytes that cannot be decoded; the message says what is wrong."""


def bounds_error(size: int, header_len: int | None) -> EnvelopeDecodeError:
    """The error for ``size`` bytes too short for the length prefix (``header_len``
    None) or for the header length they announce; one text for both twins."""
    if header_len is None:
        return EnvelopeDecodeError(
            f"envelope too short: {size} bytes, need at least 4 for the header length"
        )
    return EnvelopeDecodeError(
        f"envelope header length {header_len} runs past the end of the data "
        f"({size - 4} bytes follow the length prefix)"
    )


def _check_str(name: str, value: object) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):
        # A subclass could override __eq__/__hash__; keep the value as a plain str.
        return str.__str__(value)
    raise TypeError(f"MessageEnvelope {name} must be str, got {type(value).__name__}")


def encode_header(target: str, sender: str, type_hint: str) -> bytes:
    """The 4-byte length prefix and the JSON header: envelope bytes minus the payload.

    >>> encode_header("t", "s", "h")
    b'\\x00\\x00\\x000{"target": "t", "sender": "s", "type_hint": "h"}'
    """
    target = _check_str("target", target)
    sender = _check_str("sender", sender)
    type_hint = _check_str("type_hint", type_hint)
    if _verbatim(target) and _verbatim(sender) and _verbatim(type_hint):
        # What json.dumps writes for strings it copies as they are, without building a dict.
        text = f'{{"target": "{target}", "sender": "{sender}", "type_hint": "{type_hint}"}}'
        header = text.encode("ascii")
    else:
        header = json.dumps({"target": target, "sender": sender, "type_hint": type_hint}).encode("ascii")
    return _LENGTH.pack(len(header)) + header


def _verbatim(text: str) -> bool:
    """True when json.dumps writes ``text`` unescaped: printable ASCII without '"' or '\\'."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def decode_header_slow(header: bytes | memoryview) -> tuple[str, str, str]:
    """``(target, sender, type_hint)`` from a header in any valid JSON form.

    >>> decode_header_slow(b'{"type_hint":"h","sender":"s","target":"t","x":1}')
    ('t', 's', 'h')
    """
    try:
        # Decode strictly first: json.loads on bytes would guess UTF-16/32 too.
        text = str(header, "utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeDecodeError(f"envelope header is not valid UTF-8: {exc}") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise EnvelopeDecodeError(f"envelope header is not valid JSON: {exc}") from None
    except RecursionError:
        raise EnvelopeDecodeError("envelope header is not valid JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise EnvelopeDecodeError(
            f"envelope header must be a JSON object, got {type(obj).__name__}"
        )
    fields = []
    for key in _KEYS:
        try:
            value = obj[key]
        except KeyError:
            raise EnvelopeDecodeError(f"envelope header has no {key!r} key") from None
        if type(value) is not str:
            raise EnvelopeDecodeError(
                f"envelope header {key!r} must be a string, got {type(value).__name__}"
            )
        fields.append(value)
    return fields[0], fields[1], fields[2]


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
        set_field(self, "target", _check_str("target", self.target))
        set_field(self, "sender", _check_str("sender", self.sender))
        set_field(self, "type_hint", _check_str("type_hint", self.type_hint))
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
