"""Types of the Cython twin of ``casty.transport.framing``."""

import asyncio
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from casty.errors import FrameError as FrameError
from casty.errors import HandshakeError as HandshakeError
from casty.transport.frame_codec import check_protocol_limits as check_protocol_limits
from casty.transport.frame_codec import encode_frame as encode_frame
from casty.transport.frame_codec import frame_length_problem as frame_length_problem
from casty.transport.frame_codec import send_frame_problem as send_frame_problem
from casty.transport.handshake import MAX_HANDSHAKE_SIZE as MAX_HANDSHAKE_SIZE
from casty.transport.handshake import MAX_HOST_LENGTH as MAX_HOST_LENGTH
from casty.transport.handshake import decode_handshake as decode_handshake
from casty.transport.handshake import encode_handshake as encode_handshake
from casty.transport.mailbox import ReadState
from casty.wire import DEFAULT_MAX_FRAME_SIZE as DEFAULT_MAX_FRAME_SIZE
from casty.wire import DEFAULT_MAX_HANDSHAKE_SIZE as DEFAULT_MAX_HANDSHAKE_SIZE
from casty.wire import DEFAULT_MAX_IGNORED_FRAMES as DEFAULT_MAX_IGNORED_FRAMES
from casty.wire import DEFAULT_MAX_QUEUE_BYTES as DEFAULT_MAX_QUEUE_BYTES
from casty.wire import DEFAULT_READ_BUDGET_FRAMES as DEFAULT_READ_BUDGET_FRAMES
from casty.wire import DEFAULT_WRITE_HIGH_WATER as DEFAULT_WRITE_HIGH_WATER
from casty.wire import DEFAULT_WRITE_LOW_WATER as DEFAULT_WRITE_LOW_WATER
from casty.wire import FRAME_HANDSHAKE as FRAME_HANDSHAKE
from casty.wire import FRAME_HEADER_SIZE as FRAME_HEADER_SIZE
from casty.wire import FRAME_MESSAGE as FRAME_MESSAGE
from casty.wire import MAX_FRAME_LENGTH as MAX_FRAME_LENGTH
from casty.wire import OWN_WRITE_SIZE as OWN_WRITE_SIZE

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_HANDSHAKE_SIZE",
    "DEFAULT_MAX_IGNORED_FRAMES",
    "DEFAULT_MAX_QUEUE_BYTES",
    "DEFAULT_READ_BUDGET_FRAMES",
    "DEFAULT_WRITE_HIGH_WATER",
    "DEFAULT_WRITE_LOW_WATER",
    "FRAME_HANDSHAKE",
    "FRAME_HEADER_SIZE",
    "FRAME_MESSAGE",
    "MAX_FRAME_LENGTH",
    "MAX_HANDSHAKE_SIZE",
    "MAX_HOST_LENGTH",
    "OWN_WRITE_SIZE",
    "FrameError",
    "FrameProtocol",
    "HandshakeError",
    "check_protocol_limits",
    "decode_handshake",
    "encode_frame",
    "encode_handshake",
    "frame_length_problem",
    "send_frame_problem",
]

SPARE_TOTAL_MAX: int

def spare_bytes_held() -> int: ...

class FrameProtocolBase:
    peer: Any
    context: Any
    def __init__(
        self,
        owner: Any,
        *,
        max_frame_size: int = ...,
        write_high_water: int = ...,
        write_low_water: int = ...,
        max_queue_bytes: int = ...,
        max_handshake_size: int = ...,
        read_budget_frames: int = ...,
        max_ignored_frames: int = ...,
        read_state: ReadState | None = ...,
    ) -> None: ...
    @property
    def transport(self) -> Any: ...
    @property
    def peername(self) -> Any: ...
    @property
    def queued_bytes(self) -> int: ...
    @property
    def queued_frames(self) -> int: ...
    @property
    def paused(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def dropped(self) -> int: ...
    @property
    def frames_received(self) -> int: ...
    @property
    def frames_ignored(self) -> int: ...
    @property
    def frames_sent(self) -> int: ...
    @property
    def bytes_sent(self) -> int: ...
    @property
    def messages_sent(self) -> int: ...
    @property
    def messages_received(self) -> int: ...
    @property
    def last_received(self) -> float: ...
    @property
    def partial_bytes(self) -> int: ...
    @property
    def backlog_bytes(self) -> int: ...
    @property
    def reading_paused(self) -> bool: ...
    @property
    def max_frame_size(self) -> int: ...
    @property
    def bytes_received(self) -> int: ...
    @property
    def control_kinds(self) -> frozenset[int]: ...
    def set_control_kinds(self, kinds: Iterable[int]) -> None: ...
    @property
    def fragments(self) -> Any: ...
    def set_fragments(self, link: Any) -> None: ...
    def _set_held(self, nbytes: int) -> None: ...
    def set_message_sink(self, sink: Callable[[bytes], object] | None) -> None: ...
    def pause_reading(self, reason: Hashable) -> None: ...
    def resume_reading(self, reason: Hashable) -> None: ...
    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def data_received(self, data: bytes) -> None: ...
    def send_frame(self, frame: bytes | bytearray | memoryview) -> bool: ...
    def send_control(self, frame: bytes | bytearray | memoryview) -> bool: ...
    def send_message(
        self, envelope: bytes | bytearray | memoryview | list[bytes | bytearray | memoryview], kind: int = ...
    ) -> bool: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...

class FrameProtocol(FrameProtocolBase, asyncio.Protocol): ...
