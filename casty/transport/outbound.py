"""Turning a message into envelope bytes on the way out, with cached headers: the pure
twin of ``casty._fast.outbound``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from casty.address import is_temp_uri
from casty.transport.envelope import encode_header
from casty.transport.envelope_codec import type_hint
from casty.wire import MAX_CACHED_HEADERS

if TYPE_CHECKING:
    from casty.serialization import Serializer
    from casty.transport.compact_codec import HeaderTable

__all__ = ["EnvelopeWriter"]


class EnvelopeWriter:
    """Serializes messages into envelope bytes, reusing the encoded header per
    (target, sender, type_hint) since a sender mostly talks to a few actors.

    >>> from casty.serialization import MsgpackSerializer
    >>> from casty.transport.envelope import MessageEnvelope
    >>> w = EnvelopeWriter(MsgpackSerializer())
    >>> env = MessageEnvelope.from_bytes(w.encode("casty://s@h:1/user/a", "casty://s@h:2/", 7))
    >>> (env.target, env.type_hint)
    ('casty://s@h:1/user/a', 'builtins.int')
    """

    __slots__ = ("_headers", "_hints", "_last", "_serialize", "serializer")

    def __init__(self, serializer: Serializer) -> None:
        self.serializer = serializer
        self._serialize = serializer.serialize
        self._headers: dict[tuple[str, str, str], bytes] = {}
        self._hints: dict[type, str] = {}
        # (target, sender, class, header) of the last message: a stream of one type to
        # one actor passes the same objects each time, so identity checks find it.
        self._last: tuple[str, str, type, bytes] = ("", "", type(None), b"")

    def encode(self, target: str, sender: str, msg: Any) -> bytes:
        """Envelope bytes carrying ``msg``; SerializationError when it cannot be encoded."""
        payload = self._serialize(msg)
        cls = type(msg)
        last = self._last
        if last[0] is target and last[1] is sender and last[2] is cls:
            return last[3] + payload
        header = self.header_for(target, sender, msg)
        self._last = (target, sender, cls, header)
        return header + payload

    # What encode returns, or a list of bytes that joined make it: the Cython twin splits
    # out a plain message's bytes values of 64 KiB or more, so they reach the socket
    # without a copy.  Here the serializer has copied them already: one bytes, always.
    encode_parts = encode

    def encode_compact(self, table: HeaderTable, target: str, sender: str, msg: Any) -> bytes | list[bytes] | None:
        """The body of a compact message (cap "hdr") carrying ``msg`` on the connection of
        ``table`` (entries for names new to it go out on it first), as ``encode_parts``
        returns it; None when it cannot go compact (an ask reply path, or a name that
        cannot be an entry: send it with :meth:`encode_parts`).  SerializationError when
        it cannot be encoded (any new entries went out: they stay valid)."""
        if is_temp_uri(target):
            return None  # an ask's reply path is used once: inline, with the JSON header
        cls = type(msg)
        hint = self._hints.get(cls)
        if hint is None:
            hint = self._hints[cls] = type_hint(msg)
        header = table.header(target, sender, hint)
        if header is None:
            return None
        return header + self._serialize(msg)

    @property
    def cached_headers(self) -> int:
        """Headers remembered (those for ask reply paths never are)."""
        return len(self._headers)

    def header_for(self, target: str, sender: str, msg: Any) -> bytes:
        """The envelope header (length prefix included) for ``msg``, from the cache when it
        is there."""
        cls = type(msg)
        hint = self._hints.get(cls)
        if hint is None:
            hint = self._hints[cls] = type_hint(msg)
        if is_temp_uri(target):
            return encode_header(target, sender, hint)  # an ask's reply path is used once
        key = (target, sender, hint)
        header = self._headers.get(key)
        if header is None:
            if len(self._headers) >= MAX_CACHED_HEADERS:
                self._headers.clear()
            header = self._headers[key] = encode_header(target, sender, hint)
        return header
