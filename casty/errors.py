"""Every error class casty raises for bad bytes or values: a neutral module.

Both twins of each layer (``casty/transport/*.py`` and ``casty/_fast/*.pyx``) raise
these, so an ``except`` clause catches the same class whichever twin ``casty._impl``
picked.  Each is also importable from the module that raised it before this one
existed (``casty.transport.framing``, ``casty.transport.envelope``,
``casty.serialization``, ``casty.transport.handshake``) and from ``casty``.
This module imports nothing of casty.
"""

from __future__ import annotations

__all__ = [
    "EnvelopeDecodeError",
    "FragmentError",
    "FrameError",
    "HandshakeError",
    "SerializationError",
    "UnsafeKeyError",
    "WatchFrameError",
]


class FrameError(ValueError):
    """A frame that cannot be encoded or that breaks the framing rules."""


class FragmentError(FrameError):
    """A fragment frame (cap "frag") that breaks the rules of ``casty.transport.fragments``."""


class HandshakeError(ValueError):
    """A handshake body that breaks the rules of ``casty.transport.handshake``; the message says why."""


class EnvelopeDecodeError(ValueError):
    """Envelope bytes that cannot be decoded; the message says what is wrong."""


class SerializationError(ValueError):
    """A value could not be encoded, or a payload could not be decoded."""


class UnsafeKeyError(SerializationError):
    """A dict key or set member is not hash-safe (a peer could make such hashes collide)."""


class WatchFrameError(ValueError):
    """A death-watch frame body (``casty.transport.watch_codec``) that breaks its layout."""
