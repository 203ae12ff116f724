"""The envelope header codec on its slow, general path, shared by both twins: a neutral module.

Header layout (see ``casty.transport.envelope``): ``[header_len:4, big-endian][JSON]``
with the string keys ``target``, ``sender`` and ``type_hint``.  :func:`encode_header`
writes it as ``json.dumps`` does with its defaults; :func:`decode_header_slow` reads
any JSON form of it.  ``casty.transport.envelope`` uses these as they are, and
``casty._fast.envelope`` falls back on them for anything but the canonical
printable-ASCII form, so the twins accept, write and refuse the same bytes.
:func:`type_hint` names a message's class as the header's ``type_hint`` does.
This module imports only ``casty.errors``.
"""

from __future__ import annotations

import json
import struct

from casty.errors import EnvelopeDecodeError

__all__ = [
    "EnvelopeDecodeError",
    "bounds_error",
    "check_str",
    "decode_header_slow",
    "encode_header",
    "type_hint",
]

_LENGTH = struct.Struct(">I")
_KEYS = ("target", "sender", "type_hint")


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


def check_str(name: str, value: object) -> str:
    """``value`` as an exact str for the envelope field ``name``; TypeError when not a str."""
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
    target = check_str("target", target)
    sender = check_str("sender", sender)
    type_hint = check_str("type_hint", type_hint)
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


def type_hint(obj: object) -> str:
    """The fully-qualified name of ``obj``'s type, as written in an envelope's type_hint.

    >>> type_hint(7)
    'builtins.int'
    """
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"
