"""Framing's slow paths, shared by both twins: a neutral module.

The whole-frame encoder, the text of every protocol error, the limit checks of
``FrameProtocol``'s arguments and its log lines live here, so ``casty.transport.framing``
and ``casty._fast.framing`` say the same things; both import this module, it imports
neither (only ``casty.wire`` and ``casty.errors``).  The frame layout is described in
``casty.wire`` and ``docs/architecture.md``.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from casty.errors import FrameError
from casty.transport.handshake import MAX_HANDSHAKE_SIZE
from casty.wire import (
    DEFAULT_MAX_HANDSHAKE_SIZE,
    DEFAULT_MAX_IGNORED_FRAMES,
    DEFAULT_READ_BUDGET_FRAMES,
    FRAME_HEADER_SIZE,
    MAX_FRAME_LENGTH,
)

__all__ = [
    "call_owner",
    "check_protocol_limits",
    "control_kinds",
    "early_frame_problem",
    "encode_frame",
    "frame_length_problem",
    "ignored_run_problem",
    "log_ignored_frame",
    "log_protocol_error",
    "log_sink_error",
    "log_write_error",
    "send_frame_problem",
]

# The framing's logger, whichever twin logs through it.
log = logging.getLogger("casty.transport.framing")

_HEADER = struct.Struct(">IB")
_LENGTH = struct.Struct(">I")


# -- encoding and decoding ------------------------------------------------------


def encode_frame(frame_type: int, body: bytes) -> bytes:
    """The whole frame ``[length:4][type:1][body]``.

    >>> from casty.wire import FRAME_MESSAGE
    >>> encode_frame(FRAME_MESSAGE, b"hi")
    b'\\x00\\x00\\x00\\x03\\x01hi'
    """
    if (
        isinstance(frame_type, bool)
        or not isinstance(frame_type, int)
        or not 0 <= frame_type <= 255
    ):
        raise FrameError(f"frame type must be an int in 0..255, got {frame_type!r}")
    length = len(body) + 1
    if length > MAX_FRAME_LENGTH:
        raise FrameError(f"frame body of {len(body)} bytes is too long for a 4-byte length")
    return _HEADER.pack(length, frame_type) + bytes(body)


# -- slow, rare paths ----------------------------------------------------------


def frame_length_problem(
    length: int, max_frame_size: int, max_handshake_size: int | None = None
) -> str | None:
    """Why a received length prefix is refused, or None when it is acceptable;
    ``max_handshake_size`` applies before the handshake (None: after it).

    >>> frame_length_problem(0, 100)
    'frame length 0: a frame holds at least its type byte'
    >>> frame_length_problem(101, 100)
    'frame length 101 exceeds max_frame_size 100'
    >>> frame_length_problem(51, 100, 50)
    'frame length 51 exceeds max_handshake_size 50 (no handshake yet)'
    """
    if length == 0:
        return "frame length 0: a frame holds at least its type byte"
    if length > max_frame_size:
        return f"frame length {length} exceeds max_frame_size {max_frame_size}"
    if max_handshake_size is not None and length > max_handshake_size:
        return f"frame length {length} exceeds max_handshake_size {max_handshake_size} (no handshake yet)"
    return None


def control_kinds(kinds: Any) -> frozenset[int]:
    """The frame kinds for ``set_control_kinds``, checked: ints in 2..255.

    >>> sorted(control_kinds([3, 2]))
    [2, 3]
    >>> control_kinds([1])
    Traceback (most recent call last):
    ...
    ValueError: a control frame kind is an int in 2..255 (not message or handshake), got 1
    """
    out = set()
    for kind in kinds:
        if isinstance(kind, bool) or not isinstance(kind, int) or not 2 <= kind <= 255:
            raise ValueError(
                f"a control frame kind is an int in 2..255 (not message or handshake), got {kind!r}"
            )
        out.add(kind)
    return frozenset(out)


def early_frame_problem(frame_type: int) -> str:
    """The protocol error for a frame of unknown type before the handshake."""
    return f"frame of unknown type 0x{frame_type:02x} before the handshake"


def ignored_run_problem(count: int) -> str:
    """The protocol error for ``count`` (= max_ignored_frames) unknown frames in a row."""
    return f"{count} frames of unknown types in a row (max_ignored_frames {count})"


def send_frame_problem(frame: Any) -> str:
    """The error text for ``send_frame`` given something that is not one whole frame."""
    size = len(frame)
    if size < FRAME_HEADER_SIZE:
        return f"send_frame needs a whole encoded frame, got {size} bytes"
    stated = _LENGTH.unpack_from(frame)[0]
    return (
        f"send_frame needs a whole encoded frame: its length prefix says {stated} "
        f"but {size - 4} bytes follow it"
    )


def check_protocol_limits(
    max_frame_size: object,
    write_high_water: object,
    write_low_water: object,
    max_queue_bytes: object,
    max_handshake_size: object = DEFAULT_MAX_HANDSHAKE_SIZE,
    read_budget_frames: object = DEFAULT_READ_BUDGET_FRAMES,
    max_ignored_frames: object = DEFAULT_MAX_IGNORED_FRAMES,
) -> None:
    """Raise ValueError naming the first limit that is not acceptable."""
    for name, value in (
        ("max_frame_size", max_frame_size),
        ("write_high_water", write_high_water),
        ("max_queue_bytes", max_queue_bytes),
        ("max_handshake_size", max_handshake_size),
        ("read_budget_frames", read_budget_frames),
        ("max_ignored_frames", max_ignored_frames),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"FrameProtocol {name} must be a positive int, got {value!r}")
    assert isinstance(max_handshake_size, int)
    if max_handshake_size > MAX_HANDSHAKE_SIZE + 1:
        raise ValueError(
            f"FrameProtocol max_handshake_size must be at most {MAX_HANDSHAKE_SIZE + 1} "
            f"(MAX_HANDSHAKE_SIZE and the type byte), got {max_handshake_size!r}"
        )
    assert isinstance(write_high_water, int)
    if (
        isinstance(write_low_water, bool)
        or not isinstance(write_low_water, int)
        or not 0 <= write_low_water <= write_high_water
    ):
        raise ValueError(
            f"FrameProtocol write_low_water must be an int in 0..write_high_water, "
            f"got {write_low_water!r}"
        )


def call_owner(owner: Any, name: str, proto: Any, *args: Any) -> None:
    """Call ``owner.<name>(proto, *args)``; log (never raise) what it raises."""
    try:
        getattr(owner, name)(proto, *args)
    except Exception:
        log.exception("owner.%s raised (connection %s)", name, proto.peername)


def log_sink_error(peername: Any) -> None:
    """Log the exception a message sink just raised (call it inside ``except``)."""
    log.exception("message sink raised on a frame from %s; frame dropped", peername)


def log_ignored_frame(peername: Any, frame_type: int, body_len: int) -> None:
    log.debug(
        "ignoring a frame of unknown type 0x%02x (%d body bytes) from %s",
        frame_type,
        body_len,
        peername,
    )


def log_protocol_error(peername: Any, reason: str) -> None:
    log.warning("frame protocol error on connection %s: %s; aborting it", peername, reason)


def log_write_error(peername: Any) -> None:
    """Log the exception ``transport.write`` just raised (call it inside ``except``)."""
    log.exception("transport.write failed on connection %s; aborting it", peername)
