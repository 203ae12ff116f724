"""Casty frames over one TCP connection: the pure-Python twin of ``casty._fast.framing``.

Wire format: ``[length:4, big-endian unsigned][type:1][body]``; ``length`` counts
the type byte and the body, so it is at least 1.  Type :data:`FRAME_HANDSHAKE`
carries the handshake JSON (``casty.transport.handshake``), type :data:`FRAME_MESSAGE`
an encoded envelope; the kinds given to :meth:`FrameProtocol.set_control_kinds` (the
negotiated features' control frames) go to the owner; any other type is counted and
ignored.

:class:`FrameProtocol` is an :class:`asyncio.Protocol` that owns one connection.
It knows nothing of peers or handshake policy: it reports to an *owner*, any
object with these methods, called synchronously on the event loop::

    owner.frame_connection_made(proto)
    owner.frame_handshake(proto, body)          # body: bytes
    owner.frame_message(proto, body)            # a message frame while no sink is set
    owner.frame_control(proto, kind, body)      # after the handshake, kinds set by set_control_kinds
    owner.frame_error(proto, reason)            # then the protocol logs and aborts
    owner.frame_connection_lost(proto, exc, unsent_frames)   # queued, or in a write that raised

Message frames go to the sink given to :meth:`FrameProtocol.set_message_sink`,
inline and in order.  Bodies handed to the sink and the owner are always
``bytes`` objects that they may keep; a frame that arrives whole inside one
received chunk is copied exactly once, from the chunk into that object.

Inbound rules: every length prefix is checked as soon as its four bytes are in,
before any of its body is buffered, against ``max_frame_size`` and, while no
message sink is set (before the handshake), ``max_handshake_size``; a length of 0
or above the limit is a protocol error (``frame_error``, one log line, abort, and
nothing more is read from that connection).  Before the handshake a frame of
unknown type is a protocol error too; after it, unknown types are counted and
ignored, but ``max_ignored_frames`` of them in a row (no message or handshake
frame between) are a protocol error.  A sink or owner callback that raises is
logged and the following frames are still delivered.  Once the protocol is
closed (by :meth:`~FrameProtocol.close`, :meth:`~FrameProtocol.abort`, an error
or the connection's loss) no further frame is delivered, not even the rest of
the chunk being split.

Fair time: one read delivers at most ``read_budget_frames`` frames.  The rest of
the chunk is kept as a backlog, reading is paused (``transport.pause_reading``),
and the backlog is delivered on later loop turns (``loop.call_soon``), the same
budget per turn; reading resumes once it is done.  The owner may hold reading
too, with :meth:`~FrameProtocol.pause_reading` and
:meth:`~FrameProtocol.resume_reading` and a reason of its own: while any reason
holds, no frame is delivered (the rest of a chunk waits in the backlog, called
from inside a sink or not), and the transport reads again only once no reason
holds and no backlog is left.  Frames keep their order throughout.

Outbound rules: ``send_frame``/``send_message`` queue a frame and return True
("accepted", not "delivered").  A frame sent while no flush is pending is
written at once, so a request or a reply does not wait a loop iteration, and a
flush is scheduled with ``loop.call_soon``; frames sent until it runs queue
behind it, and it hands them all to the transport in one ``write``.  A burst of
sends thus costs two writes, the first frame's and the rest's, except that a
``bytes`` frame or envelope of :data:`OWN_WRITE_SIZE` bytes or more is not copied: it gets a ``write`` of its
own, in order between the joined runs of smaller frames.  ``send_message`` also
takes an envelope as a list of pieces that joined make it (one frame; each piece
that large is written as it is).  When the queue reaches ``write_high_water``
it is flushed at once instead of waiting for the loop.  While the transport has
paused writing, nothing is written and frames queue up to ``max_queue_bytes``
(a frame is always accepted into an empty queue, so any frame can be sent);
past that, and after close or loss, ``send_*`` returns False and counts the
frame in :attr:`~FrameProtocol.dropped`.

Counters, for :meth:`TcpNode.stats` (plain integers, bumped where a frame is already
counted): ``frames_sent``, ``messages_sent`` and ``bytes_sent`` per frame accepted by
``send_*``; ``frames_received`` and ``messages_received`` per frame dispatched;
``bytes_received`` and ``last_received`` (``time.monotonic()``) per read.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from casty.errors import FrameError, HandshakeError
from casty.transport.frame_codec import (
    call_owner,
    check_protocol_limits,
    control_kinds,
    early_frame_problem,
    encode_frame,
    frame_length_problem,
    ignored_run_problem,
    log_ignored_frame,
    log_protocol_error,
    log_sink_error,
    log_write_error,
    send_frame_problem,
)
from casty.transport.handshake import (
    MAX_HANDSHAKE_SIZE,
    MAX_HOST_LENGTH,
    decode_handshake,
    encode_handshake,
)
from casty.transport.mailbox import ReadState
from casty.transport.mailbox_rules import read_state_error
from casty.transport.reassembly import Reassembler
from casty.wire import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HANDSHAKE_SIZE,
    DEFAULT_MAX_IGNORED_FRAMES,
    DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_READ_BUDGET_FRAMES,
    DEFAULT_WRITE_HIGH_WATER,
    DEFAULT_WRITE_LOW_WATER,
    FRAME_COMPACT,
    FRAME_HANDSHAKE,
    FRAME_HEADER_SIZE,
    FRAME_MESSAGE,
    MAX_FRAME_LENGTH,
    OWN_WRITE_SIZE,
)

# The constants, errors and slow paths come from the neutral modules above (both twins
# import those); they are exported from here too, where they were first defined.
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

log = logging.getLogger("casty.transport.framing")

_HEADER = struct.Struct(">IB")
_LENGTH = struct.Struct(">I")
_monotonic = time.monotonic


# -- flushing -------------------------------------------------------------------


def write_runs(queue: list[bytes]) -> list[bytes]:
    """What one flush hands to ``transport.write``, in order: each run of small pieces
    joined into one ``bytes``, and each piece of :data:`OWN_WRITE_SIZE` or more alone.

    One joined ``bytes`` beats ``writelines()`` (a writev of many small pieces) on
    uvloop by 1.3x at 64 frames per flush and 1.7x at 256; a large piece is not worth
    a copy, whose fresh pages cost more than the syscall it saves.

    >>> [len(w) for w in write_runs([b"a" * 5, b"b" * OWN_WRITE_SIZE, b"c", b"d"])]
    [5, 65536, 2]
    """
    out: list[bytes] = []
    run: list[bytes] = []
    for piece in queue:
        if len(piece) < OWN_WRITE_SIZE:
            run.append(piece)
            continue
        if run:
            out.append(b"".join(run))
            run = []
        out.append(piece)
    if run:
        out.append(b"".join(run))
    return out


# -- the protocol ------------------------------------------------------------------


class FrameProtocol(asyncio.Protocol):
    """One connection speaking casty frames; see the module docstring for the rules.

    ``peer`` and ``context`` are free slots for the owner (both start as None).
    """

    __slots__ = (
        "_backlog",
        "_backlog_scheduled",
        "_budget",
        "_buf",
        "_bytes_received",
        "_bytes_sent",
        "_closed",
        "_control",
        "_dropped",
        "_failed_frames",
        "_flush_scheduled",
        "_frag",
        "_frag_size",
        "_frames_ignored",
        "_frames_received",
        "_frames_sent",
        "_halt",
        "_held",
        "_high",
        "_holds",
        "_ignored_run",
        "_last_received",
        "_limit",
        "_loop",
        "_low",
        "_max_frame",
        "_max_handshake",
        "_max_ignored",
        "_max_queue",
        "_messages_received",
        "_messages_sent",
        "_owner",
        "_paused",
        "_peername",
        "_queue",
        "_queued_bytes",
        "_queued_frames",
        "_read",
        "_reading_paused",
        "_sink",
        "_transport",
        "context",
        "peer",
    )

    def __init__(
        self,
        owner: Any,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        write_high_water: int = DEFAULT_WRITE_HIGH_WATER,
        write_low_water: int = DEFAULT_WRITE_LOW_WATER,
        max_queue_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        max_handshake_size: int = DEFAULT_MAX_HANDSHAKE_SIZE,
        read_budget_frames: int = DEFAULT_READ_BUDGET_FRAMES,
        max_ignored_frames: int = DEFAULT_MAX_IGNORED_FRAMES,
        read_state: ReadState | None = None,
    ) -> None:
        check_protocol_limits(
            max_frame_size, write_high_water, write_low_water, max_queue_bytes,
            max_handshake_size, read_budget_frames, max_ignored_frames,
        )
        if read_state is not None and type(read_state) is not ReadState:
            raise read_state_error(ReadState, read_state)
        self._owner = owner
        # Its ``more`` is set while a frame that is not its read's last is delivered
        # (None given: one of its own, which nobody reads).
        self._read = ReadState() if read_state is None else read_state
        # A limit above what the prefix can state changes nothing.
        self._max_frame = min(max_frame_size, MAX_FRAME_LENGTH)
        self._max_handshake = min(max_handshake_size, self._max_frame)
        # The length limit in force: the handshake's until a sink is set.
        self._limit = self._max_handshake
        self._budget = read_budget_frames
        self._max_ignored = max_ignored_frames
        self._ignored_run = 0
        # Reasons holding reading (pause_reading); the rest of a chunk not yet delivered
        # (None: none), and whether its delivery is scheduled.
        self._holds: set[Hashable] = set()
        self._backlog: bytes | None = None
        self._backlog_scheduled = False
        # What the transport was last told: paused or reading.
        self._reading_paused = False
        # Closed, or held by a reason: the splitter delivers nothing more.
        self._halt = False
        self._high = write_high_water
        self._low = write_low_water
        self._max_queue = max_queue_bytes
        self._sink: Callable[[bytes], object] | None = None
        self._transport: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._peername: Any = None
        # Inbound: the bytes of one incomplete frame (header included), never more.
        self._buf = bytearray()
        self._frames_received = 0
        self._frames_ignored = 0
        self._frames_sent = 0
        self._bytes_received = 0
        # Statistics (TcpNode.stats): plain counters, bumped where frames are already counted.
        self._bytes_sent = 0
        self._messages_sent = 0
        self._messages_received = 0
        self._last_received = 0.0
        # Frame kinds besides message and handshake that go to owner.frame_control.
        self._control: frozenset[int] = frozenset()
        # Outbound: frames (or header and body pieces) waiting for the next flush.
        self._queue: list[bytes] = []
        self._queued_bytes = 0
        self._queued_frames = 0
        # Frames taken out of the queue by a write that raised: lost, so reported as unsent.
        self._failed_frames = 0
        self._flush_scheduled = False
        self._paused = False
        self._closed = False
        self._dropped = 0
        # Cap "frag": the connection's FragmentLink (None: messages go whole), the frame size
        # above which a message is its, and the bytes it holds (a lane is busy while > 0).
        self._frag: Any = None
        self._frag_size = 0
        self._held = 0
        self.peer: Any = None
        self.context: Any = None

    # -- read-only state -------------------------------------------------------------

    @property
    def transport(self) -> Any:
        """The connection's transport; None before connection_made and after connection_lost."""
        return self._transport

    @property
    def peername(self) -> Any:
        """The transport's ``peername`` extra info, kept after the connection is lost."""
        return self._peername

    @property
    def queued_bytes(self) -> int:
        """Bytes accepted by ``send_*`` and not yet handed to the transport (those the
        fragment link holds included)."""
        return self._queued_bytes + self._held

    @property
    def queued_frames(self) -> int:
        """Frames accepted by ``send_*`` and not yet handed to the transport."""
        return self._queued_frames

    @property
    def paused(self) -> bool:
        """True while the transport has asked us to stop writing."""
        return self._paused

    @property
    def closed(self) -> bool:
        """True after close(), abort(), a protocol error or the connection's loss."""
        return self._closed

    @property
    def dropped(self) -> int:
        """Frames refused by ``send_*`` (queue full, or closed)."""
        return self._dropped

    @property
    def frames_received(self) -> int:
        """Well-formed frames received, of every type."""
        return self._frames_received

    @property
    def frames_ignored(self) -> int:
        """Received frames of an unknown type (ignored)."""
        return self._frames_ignored

    @property
    def frames_sent(self) -> int:
        """Frames accepted by ``send_*`` (queued or written)."""
        return self._frames_sent

    @property
    def bytes_sent(self) -> int:
        """Bytes of the frames accepted by ``send_*`` (headers included)."""
        return self._bytes_sent

    @property
    def messages_sent(self) -> int:
        """Message frames accepted by ``send_*`` (queued or written)."""
        return self._messages_sent

    @property
    def messages_received(self) -> int:
        """Well-formed message frames received (handed to the sink or the owner)."""
        return self._messages_received

    @property
    def last_received(self) -> float:
        """``time.monotonic()`` when bytes last arrived on this connection; 0.0 before any."""
        return self._last_received

    @property
    def partial_bytes(self) -> int:
        """Bytes received of the incomplete frame in progress (header included); 0 between
        frames.  Whole frames waiting in the backlog are not counted."""
        return len(self._buf)

    @property
    def backlog_bytes(self) -> int:
        """Bytes received and kept for a later loop turn (budget used, or reading held)."""
        return 0 if self._backlog is None else len(self._backlog)

    @property
    def reading_paused(self) -> bool:
        """True while a reason holds reading or a backlog waits (the transport is paused)."""
        return bool(self._holds) or self._backlog is not None

    @property
    def max_frame_size(self) -> int:
        return self._max_frame

    @property
    def bytes_received(self) -> int:
        """Bytes received on this connection so far (a sign of life, whatever they hold)."""
        return self._bytes_received

    @property
    def control_kinds(self) -> frozenset[int]:
        """The frame kinds handed to ``owner.frame_control`` (see set_control_kinds)."""
        return self._control

    def set_control_kinds(self, kinds: Iterable[int]) -> None:
        """After the handshake, hand frames of these kinds to
        ``owner.frame_control(proto, kind, body)`` instead of ignoring them; the kinds
        are the negotiated features' (casty.wire), never message or handshake."""
        self._control = control_kinds(kinds)

    @property
    def fragments(self) -> Any:
        """The connection's FragmentLink (cap "frag"), or None: messages go whole."""
        return self._frag

    def set_fragments(self, link: Any) -> None:
        """From now on offer ``link`` (a ``casty.transport.fragments.FragmentLink``, None:
        none) every message frame larger than its ``fragment_size``, and every message
        while it holds some; it writes them as fragments, in order per lane."""
        self._frag = link
        self._frag_size = 0 if link is None else link.fragment_size

    def new_reassembler(self, *, max_message: int, max_streams: int, max_bytes: int) -> Reassembler:
        """A fragment Reassembler of this twin, for the connection's FragmentLink."""
        return Reassembler(max_message=max_message, max_streams=max_streams, max_bytes=max_bytes)

    def _message_arrived(self) -> None:
        """A message reached the sink another way (reassembled from fragments): count it."""
        self._messages_received += 1

    def _set_held(self, nbytes: int) -> None:
        """The fragment link now holds ``nbytes`` of accepted frames (bounded with the queue)."""
        self._held = nbytes

    def set_message_sink(self, sink: Callable[[bytes], object] | None) -> None:
        """Send every later message frame's body to ``sink`` (None: back to the owner).

        Until a sink is set the connection is taken to be before its handshake:
        ``max_handshake_size`` bounds each frame, and only handshake and message
        frames are allowed.
        """
        self._sink = sink
        self._limit = self._max_handshake if sink is None else self._max_frame

    # -- holding reading -----------------------------------------------------------------

    def pause_reading(self, reason: Hashable) -> None:
        """Hold reading for ``reason`` until ``resume_reading(reason)``; no frame is
        delivered meanwhile.  Holding twice for one reason is holding once."""
        if reason in self._holds:
            return
        self._holds.add(reason)
        self._halt = True
        self._sync_reading()

    def resume_reading(self, reason: Hashable) -> None:
        """Let go of ``reason``'s hold; once none is left, the backlog is delivered and
        reading resumes.  A reason that holds nothing is ignored."""
        if reason not in self._holds:
            return
        self._holds.discard(reason)
        if self._holds or self._closed:
            return
        self._halt = False
        if self._backlog is not None:
            self._schedule_backlog()
        else:
            self._sync_reading()

    def _sync_reading(self) -> None:
        """Tell the transport to pause or resume reading, when that changed."""
        want = bool(self._holds) or self._backlog is not None
        if want == self._reading_paused or self._transport is None or self._closed:
            return
        self._reading_paused = want
        if want:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        transport.set_write_buffer_limits(high=self._high, low=self._low)  # type: ignore[attr-defined]
        self._peername = transport.get_extra_info("peername")
        if self._closed:  # aborted before the connection was made
            transport.abort()  # type: ignore[attr-defined]
            return
        call_owner(self._owner, "frame_connection_made", self)
        if self._queued_frames:
            self._schedule_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = self._halt = True
        self._backlog = None
        unsent = self._queued_frames + self._failed_frames
        self._failed_frames = 0
        if self._frag is not None:
            unsent += self._frag.held_frames
            self._frag.clear()
        self._queue.clear()
        self._queued_bytes = self._queued_frames = 0
        self._buf.clear()
        self._transport = None
        call_owner(self._owner, "frame_connection_lost", self, exc, unsent)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._queued_frames and not self._closed:
            self._flush_now()
        if self._frag is not None and not self._closed:
            self._frag.pump()

    # -- inbound -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._bytes_received += len(data)
        self._last_received = _monotonic()  # once per read, not per frame
        if self._halt or self._backlog is not None:
            # Held, or frames wait already: after them (a transport may hand over
            # what it had read before it was paused).
            self._backlog = (self._backlog or b"") + bytes(data)
            self._sync_reading()
            return
        self._feed(bytes(data))

    def _feed(self, data: bytes) -> None:
        """Deliver the frames of ``data`` up to the budget; keep a partial frame in
        ``_buf`` and anything after the budget or a hold in the backlog."""
        pos = 0
        # Not connected (no loop to come back on): no budget; -1 never counts down to 0.
        left = self._budget if self._loop is not None else -1
        if self._buf:
            pos = self._complete_buffered(data)
            if pos < 0:
                return
            left -= 1
        end = len(data)
        try:
            while not self._halt:
                avail = end - pos
                if avail < 4:
                    break
                length = _LENGTH.unpack_from(data, pos)[0]
                if length > self._limit or length == 0:
                    self._length_error(length)
                    return
                if avail - 4 < length:
                    break
                if not left:
                    break  # the budget is spent: the rest waits for a later loop turn
                left -= 1
                # Another frame starts after this one: its messages are handled as a batch.
                self._read.more = length + 4 < avail
                self._dispatch(data[pos + 4], data[pos + 5 : pos + 4 + length])
                pos += 4 + length
        finally:
            self._read.more = False
        if pos >= end or self._closed:
            return
        if self._halt or not left:
            self._keep_backlog(data[pos:])
        else:
            self._buf += data[pos:]  # less than one frame: bounded by the length limit + 4

    def _keep_backlog(self, rest: bytes) -> None:
        self._backlog = rest
        self._sync_reading()
        if not self._halt:
            self._schedule_backlog()

    def _schedule_backlog(self) -> None:
        if not self._backlog_scheduled and self._loop is not None:
            self._backlog_scheduled = True
            self._loop.call_soon(self._deliver_backlog)

    def _deliver_backlog(self) -> None:
        self._backlog_scheduled = False
        data = self._backlog
        if data is None or self._halt:
            return  # closed (nothing more is delivered), or held: resume_reading reschedules
        self._backlog = None
        self._feed(data)
        if self._backlog is None:
            self._sync_reading()

    def _complete_buffered(self, data: bytes) -> int:
        """Feed the buffered partial frame from ``data``; the offset in ``data`` after
        the frame once it is complete and delivered, else -1 (all used, or closed)."""
        buf = self._buf
        used = 0
        if len(buf) < 4:
            used = min(4 - len(buf), len(data))
            buf += data[:used]
            if len(buf) < 4:
                return -1
            length = _LENGTH.unpack_from(buf)[0]
            if length > self._limit or length == 0:
                self._length_error(length)
                return -1
        total = 4 + _LENGTH.unpack_from(buf)[0]
        take = min(total - len(buf), len(data) - used)
        buf += data[used : used + take]
        used += take
        if len(buf) < total:
            return -1
        frame_type, body = buf[4], bytes(buf[5:])
        buf.clear()
        self._dispatch(frame_type, body)
        return -1 if self._closed else used

    def _length_error(self, length: int) -> None:
        self._protocol_error(
            frame_length_problem(length, self._max_frame, self._max_handshake if self._sink is None else None)
            or f"frame length {length} refused"
        )

    def _dispatch(self, frame_type: int, body: bytes) -> None:
        self._frames_received += 1
        if frame_type == FRAME_MESSAGE:
            self._messages_received += 1
            self._ignored_run = 0
            sink = self._sink  # re-read per frame: frame_handshake may just have set it
            if sink is None:
                call_owner(self._owner, "frame_message", self, body)
            else:
                try:
                    sink(body)
                except Exception:
                    log_sink_error(self._peername)
        elif frame_type == FRAME_HANDSHAKE:
            self._ignored_run = 0
            call_owner(self._owner, "frame_handshake", self, body)
        elif frame_type in self._control and self._sink is not None:
            self._ignored_run = 0
            if frame_type == FRAME_COMPACT:
                self._messages_received += 1
            call_owner(self._owner, "frame_control", self, frame_type, body)
        elif self._sink is None:
            self._protocol_error(early_frame_problem(frame_type))
        else:
            self._frames_ignored += 1
            self._ignored_run += 1
            if self._ignored_run >= self._max_ignored:
                self._protocol_error(ignored_run_problem(self._max_ignored))
            else:
                log_ignored_frame(self._peername, frame_type, len(body))

    def _protocol_error(self, reason: str) -> None:
        self._buf.clear()
        call_owner(self._owner, "frame_error", self, reason)
        log_protocol_error(self._peername, reason)
        self.abort()

    # -- outbound ------------------------------------------------------------------------

    def send_frame(self, frame: bytes) -> bool:
        """Queue a whole encoded frame; False (and counted in ``dropped``) when refused."""
        if type(frame) is not bytes:
            frame = bytes(memoryview(frame))  # a snapshot: the caller may reuse a mutable buffer
        size = len(frame)
        if size < FRAME_HEADER_SIZE or _LENGTH.unpack_from(frame)[0] != size - 4:
            raise FrameError(send_frame_problem(frame))
        if not self._accept(size):
            return False
        self._queue.append(frame)
        if frame[4] == FRAME_MESSAGE:  # a message queued while connecting goes out this way
            self._messages_sent += 1
        self._queued(size)
        return True

    def send_control(self, frame: bytes) -> bool:
        """Queue a whole encoded control frame past ``max_queue_bytes`` (what sends those
        bounds them); False (counted in ``dropped``) only once closed."""
        if type(frame) is not bytes:
            frame = bytes(memoryview(frame))
        size = len(frame)
        if size < FRAME_HEADER_SIZE or _LENGTH.unpack_from(frame)[0] != size - 4:
            raise FrameError(send_frame_problem(frame))
        if self._closed:
            self._dropped += 1
            return False
        self._queue.append(frame)
        self._queued(size, opens_batch=False)
        return True

    def send_message(self, envelope: bytes | list[bytes], kind: int = FRAME_MESSAGE) -> bool:
        """Queue a message frame carrying ``envelope``, or the list of buffers that joined
        make it (each kept as a piece, see write_runs); False (and counted) when refused.
        ``kind``: FRAME_MESSAGE, or FRAME_COMPACT for a compact-header body."""
        if kind != FRAME_MESSAGE and kind != FRAME_COMPACT:
            raise FrameError(f"send_message takes a message or compact-message kind, got {kind!r}")
        if self._frag is not None:
            taken = self._offer_fragments(envelope, kind)
            if taken is not None:
                return taken
        if isinstance(envelope, list):
            return self._send_parts(envelope, kind)
        if type(envelope) is not bytes:
            envelope = bytes(memoryview(envelope))  # a snapshot: the caller may reuse a mutable buffer
        size = len(envelope) + FRAME_HEADER_SIZE
        if size - 4 > MAX_FRAME_LENGTH:
            raise FrameError(f"frame body of {len(envelope)} bytes is too long for a 4-byte length")
        if not self._accept(size):
            return False
        self._queue.append(_HEADER.pack(size - 4, kind))
        self._queue.append(envelope)
        self._messages_sent += 1
        self._queued(size)
        return True

    def _offer_fragments(self, envelope: Any, kind: int) -> bool | None:
        """True/False: the fragment link took the message / it was refused (counted);
        None: it goes whole, as usual."""
        if isinstance(envelope, list):
            n = sum(len(p) if type(p) is bytes else memoryview(p).nbytes for p in envelope)
        else:
            n = len(envelope) if type(envelope) is bytes else memoryview(envelope).nbytes
        if n + FRAME_HEADER_SIZE <= self._frag_size and not self._held:
            return None
        if kind == FRAME_COMPACT:
            # The link carries JSON-header envelopes only: a compact message written later
            # would name entries that may have been replaced by then.
            envelope, n = self._frag.expanded(envelope)
        if not self._accept(n + FRAME_HEADER_SIZE):
            return False
        if not self._frag.offer(envelope, n):
            return None
        self._messages_sent += 1
        return True

    def _send_parts(self, parts: list[bytes], kind: int) -> bool:
        parts = [p if type(p) is bytes else bytes(memoryview(p)) for p in parts]  # snapshots
        length = sum(map(len, parts))
        if length + 1 > MAX_FRAME_LENGTH:
            raise FrameError(f"frame body of {length} bytes is too long for a 4-byte length")
        size = length + FRAME_HEADER_SIZE
        if not self._accept(size):
            return False
        self._queue.append(_HEADER.pack(length + 1, kind))
        self._queue.extend(parts)
        self._messages_sent += 1
        self._queued(size)
        return True

    def _accept(self, size: int) -> bool:
        queued = self._queued_bytes + self._held
        if self._closed or (queued and queued + size > self._max_queue):
            self._dropped += 1
            return False
        return True

    def _queued(self, size: int, opens_batch: bool = True) -> None:
        self._queued_bytes += size
        self._queued_frames += 1
        self._frames_sent += 1
        self._bytes_sent += size
        if self._paused or self._transport is None:
            return
        if self._queued_bytes >= self._high or not self._flush_scheduled:
            # The first frame since the last flush goes out at once: a request or a
            # reply should not wait a loop iteration.  Scheduling the flush then makes
            # the frames queued after it, until the loop comes round, share one write.
            # A control frame (a header-table entry, a ping) does not open that batch:
            # the message after it is still the first, and goes out at once too.
            self._flush_now()
            if opens_batch:
                self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._queued_frames and not self._paused and not self._closed:
            self._flush_now()

    def _flush_now(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return  # what stays queued is counted by connection_lost
        queue = self._queue
        frames = self._queued_frames
        self._queue = []
        self._queued_bytes = self._queued_frames = 0
        try:
            for piece in write_runs(queue):
                transport.write(piece)  # may call pause_writing() before it returns
        except Exception:
            # Which of them the transport kept is unknown: count them all as unsent.
            self._failed_frames += frames
            log_write_error(self._peername)
            self.abort()

    def close(self) -> None:
        """Hand everything queued to the transport (even while paused), then close it."""
        if self._closed:
            return
        if self._frag is not None and self._transport is not None:
            self._frag.drain()
        if self._transport is not None and self._queued_frames:
            self._flush_now()
        self._closed = self._halt = True
        self._backlog = None
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close the connection at once; what is queued is counted as unsent."""
        if self._closed and self._transport is None:
            return
        self._closed = self._halt = True
        self._backlog = None
        if self._transport is not None:
            self._transport.abort()
