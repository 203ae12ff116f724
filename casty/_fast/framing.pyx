# cython: language_level=3, auto_pickle=False
"""Casty frames over one TCP connection in Cython: the twin of ``casty.transport.framing``.

The rules (owner callbacks, sink, flow control) are documented in the pure
module and are the same here.  What differs is how the bytes are handled:

* inbound, one call splits every complete frame of a received chunk in a C
  loop; a message body is copied once, from the chunk straight into the
  ``bytes`` object handed to the sink.  A frame that spans chunks is collected
  in a ``bytes`` object that starts at up to 64 KiB and doubles as the body
  arrives (a length prefix alone costs the peer little), so it too is copied
  once, give or take a resize; a frame of unknown type is skipped without
  being stored.  Such a body of 128 KiB to 4 MiB that nobody kept once the
  sink returned (its reference count says so) is refilled by the next large
  frame instead of being freed: fresh memory that size costs a page fault per
  4 KiB once malloc has given it back to the system.  Its cached hash is reset;
  it is let go 64 reads after it was set aside or last refilled, and with the
  connection, and all protocols of a process together hold at most
  SPARE_TOTAL_MAX bytes this way;
* outbound, queued frames are copied into one growing C buffer, and a flush
  turns that buffer into a single ``bytes`` for one ``transport.write`` (the
  first frame sent while no flush is pending is flushed at once).  A
  ``bytes`` frame or envelope of ``OWN_WRITE_SIZE`` or more is not copied: the
  buffer so far is sealed into a ``bytes`` piece, and the large object is
  queued after it as a piece of its own.

Compiled with bounds checking off: every read of peer bytes is checked by hand
against the chunk size or the frame length.  Constants come from ``casty.wire``
(the C values from ``wire.pxd``); error texts, limit checks, logging and the
handshake codec from the neutral ``casty.transport.frame_codec`` and
``casty.transport.handshake``, which the pure twin uses too, so both say the same
things.
"""

import asyncio
import time

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.stdint cimport uint32_t
from libc.string cimport memcpy, memset

from casty._fast cimport wire
from casty._fast.mailbox cimport ReadState
from casty._fast.reassembly cimport Reassembler

from casty.errors import FragmentError, FrameError, HandshakeError
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
from casty.transport.mailbox_rules import read_state_error
from casty.transport.handshake import MAX_HANDSHAKE_SIZE, MAX_HOST_LENGTH, decode_handshake, encode_handshake
from casty.wire import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HANDSHAKE_SIZE,
    DEFAULT_MAX_IGNORED_FRAMES,
    DEFAULT_MAX_QUEUE_BYTES,
    DEFAULT_READ_BUDGET_FRAMES,
    DEFAULT_WRITE_HIGH_WATER,
    DEFAULT_WRITE_LOW_WATER,
    FRAME_HANDSHAKE,
    FRAME_HEADER_SIZE,
    FRAME_MESSAGE,
    MAX_FRAME_LENGTH,
    OWN_WRITE_SIZE,
)

cdef extern from "Python.h":
    bint PyBytes_CheckExact(object o)
    int _PyBytes_Resize(PyObject** data, Py_ssize_t size) except -1

from casty._fast.bytes_reuse cimport CASTY_CAN_REUSE_BYTES, refcount, casty_forget_bytes_hash

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

cdef enum:
    # A send buffer grown past this is given back after a flush.
    _KEEP_WBUF = 1024 * 1024
    # A frame body spanning reads starts at most this big and doubles as bytes arrive.
    _EAGER_BODY = 64 * 1024
    # A spanning body of this size range that nobody kept is refilled by the next one.
    _SPARE_MIN = 128 * 1024
    _SPARE_MAX = 4 * 1024 * 1024
    # The spare is let go after this many reads since it was set aside or last refilled.
    _SPARE_IDLE_READS = 64
    # All the spares of a process together stay within this, however many connections
    # fell silent right after a large frame.
    _SPARE_TOTAL_MAX = 32 * 1024 * 1024

# OWN_WRITE_SIZE as a C value, for the per-frame comparisons.
cdef Py_ssize_t _OWN_WRITE = OWN_WRITE_SIZE
# The flags byte of a fragment ack (casty.transport.fragments.FLAG_ACK)
cdef unsigned char _FLAG_ACK = 0x80

# The pure twin's clock, so both report the same kind of time.
cdef object _monotonic = time.monotonic

# Whether this build refills spanning bodies nobody kept (tests read it).
_REFILLS_BODIES = bool(CASTY_CAN_REUSE_BYTES)
SPARE_TOTAL_MAX = _SPARE_TOTAL_MAX
# Bytes held in spares by every protocol of this process; only touched with the GIL
# held, and spares are never kept where there is no GIL (CASTY_CAN_REUSE_BYTES).
cdef Py_ssize_t _spare_total = 0


def spare_bytes_held():
    """Bytes the protocols of this process hold as spare frame bodies (at most
    ``SPARE_TOTAL_MAX``)."""
    return _spare_total


cdef inline void _put_header(unsigned char* p, unsigned long long length,
                             unsigned char frame_type) noexcept nogil:
    wire.write_be32(p, length)
    p[wire.LENGTH_PREFIX_SIZE] = frame_type


cdef class FrameSink:
    """A message sink the protocol can call at C level.

    A subclass's ``on_frame_at(p, size, data)`` must do what its ``on_frame(body)``
    does for the body at p[0:size]; ``data`` is a ``bytes`` holding exactly that
    body, or None (the subclass makes one if it needs it, and keeps no pointer).
    Without an override, the body goes to ``on_frame`` as ``bytes``.
    When a FrameSink's bound ``on_frame`` is given to ``set_message_sink``, message
    frames that arrive whole in a chunk go to ``on_frame_at`` instead.
    """

    cdef int on_frame_at(self, const unsigned char* p, Py_ssize_t size, object data) except -1:
        # The plain route, for a subclass that only has on_frame: the body as bytes.
        self.on_frame(data if data is not None else PyBytes_FromStringAndSize(<const char*>p, size))
        return 0

    cdef bint on_compact_at(self, const unsigned char* p, Py_ssize_t size) except -1:
        """Take the compact message frame (cap "hdr") whose body is p[0:size]; False when
        this sink does not, and the frame goes to ``owner.frame_control`` as other
        negotiated kinds do."""
        return False


cdef class FrameProtocolBase:
    """State and hot paths of :class:`FrameProtocol` (which adds ``asyncio.Protocol``)."""

    cdef:
        object _owner
        object _sink
        FrameSink _fast_sink  # the FrameSink whose on_frame is the sink, else None
        # Its ``more`` is set while a frame that is not its read's last is delivered.
        ReadState _read
        object _transport
        object _loop
        object _peername
        object _flush_cb
        object _backlog_cb
        public object peer
        public object context
        unsigned long long _max_frame
        unsigned long long _max_handshake
        # The length limit in force: the handshake's until a sink is set.
        unsigned long long _limit
        Py_ssize_t _budget
        Py_ssize_t _max_ignored
        Py_ssize_t _ignored_run
        # Reasons holding reading; the rest of a chunk not yet delivered (None: none).
        set _holds
        object _backlog
        bint _backlog_scheduled
        # What the transport was last told: paused or reading.
        bint _reading_paused
        # Closed, or held by a reason: the splitter delivers nothing more.
        bint _halt
        unsigned long long _frames_sent
        Py_ssize_t _high
        Py_ssize_t _low
        Py_ssize_t _max_queue
        # Inbound partial frame: header bytes so far (0 when none), then its body.
        unsigned char _hdr[5]
        Py_ssize_t _hdr_fill
        object _body          # bytes being filled, None while skipping an unknown type
        object _spare         # the last spanning body, kept for the next (or None)
        Py_ssize_t _spare_size  # its size, counted in _spare_total (0 when none)
        Py_ssize_t _spare_idle  # reads since _spare was last used
        Py_ssize_t _body_len
        Py_ssize_t _body_fill
        unsigned long long _frames_received
        unsigned long long _frames_ignored
        unsigned long long _bytes_received
        # Statistics (TcpNode.stats): plain counters, bumped where frames are already counted.
        unsigned long long _bytes_sent
        unsigned long long _messages_sent
        unsigned long long _messages_received
        double _last_received
        # Frame kinds handed to owner.frame_control (set_control_kinds): a flag per kind,
        # and the same as a frozenset for the property.
        unsigned char _ctl[256]
        object _control
        # Outbound: sealed pieces (None when there are none), then the frames in _wbuf,
        # back to back; _qbytes counts both.
        list _pieces
        unsigned char* _wbuf
        Py_ssize_t _wused
        Py_ssize_t _wcap
        Py_ssize_t _qbytes
        Py_ssize_t _wframes
        # Frames taken out of the queue by a write that raised: lost, so reported as unsent.
        Py_ssize_t _failed_frames
        unsigned long long _dropped
        bint _paused
        bint _closed
        bint _flush_scheduled
        # Cap "frag": the connection's FragmentLink (None: messages go whole), the frame
        # size above which a message is its, and the bytes it holds (a lane is busy while > 0).
        object _frag
        Py_ssize_t _frag_size
        # Its reassembler when it is this twin's: fragment bodies go to it straight from a read
        Reassembler _reasm
        Py_ssize_t _held

    def __init__(
        self,
        owner,
        *,
        max_frame_size=DEFAULT_MAX_FRAME_SIZE,
        write_high_water=DEFAULT_WRITE_HIGH_WATER,
        write_low_water=DEFAULT_WRITE_LOW_WATER,
        max_queue_bytes=DEFAULT_MAX_QUEUE_BYTES,
        max_handshake_size=DEFAULT_MAX_HANDSHAKE_SIZE,
        read_budget_frames=DEFAULT_READ_BUDGET_FRAMES,
        max_ignored_frames=DEFAULT_MAX_IGNORED_FRAMES,
        read_state=None,
    ):
        check_protocol_limits(
            max_frame_size, write_high_water, write_low_water, max_queue_bytes,
            max_handshake_size, read_budget_frames, max_ignored_frames,
        )
        if read_state is not None and type(read_state) is not ReadState:
            raise read_state_error(ReadState, read_state)
        # None given: one of its own, which nobody reads.
        self._read = ReadState() if read_state is None else <ReadState>read_state
        self._owner = owner
        # A limit above what the prefix can state changes nothing.
        self._max_frame = min(max_frame_size, MAX_FRAME_LENGTH)
        self._max_handshake = min(max_handshake_size, self._max_frame)
        self._limit = self._max_handshake
        # Clamped to what a Py_ssize_t holds: a budget that large never runs out anyway.
        self._budget = min(read_budget_frames, 2**62)
        self._max_ignored = min(max_ignored_frames, 2**62)
        self._ignored_run = 0
        self._holds = set()
        self._backlog = None
        self._backlog_scheduled = False
        self._reading_paused = False
        self._halt = False
        self._frames_sent = 0
        self._backlog_cb = self._deliver_backlog
        self._high = write_high_water
        self._low = write_low_water
        self._max_queue = max_queue_bytes
        self._sink = None
        self._fast_sink = None
        self._transport = None
        self._loop = None
        self._peername = None
        self._flush_cb = self._flush
        self.peer = None
        self.context = None
        self._hdr_fill = 0
        self._body = None
        self._drop_spare()  # __init__ may run again on a protocol that holds one
        self._spare_idle = 0
        self._body_len = 0
        self._body_fill = 0
        self._frames_received = 0
        self._frames_ignored = 0
        self._bytes_received = 0
        self._bytes_sent = 0
        self._messages_sent = 0
        self._messages_received = 0
        self._last_received = 0.0
        memset(self._ctl, 0, 256)
        self._control = frozenset()
        self._pieces = None
        self._wused = 0
        self._qbytes = 0
        self._wframes = 0
        self._failed_frames = 0
        self._dropped = 0
        self._paused = False
        self._closed = False
        self._flush_scheduled = False
        self._frag = None
        self._frag_size = 0
        self._reasm = None
        self._held = 0

    def __dealloc__(self):
        global _spare_total
        PyMem_Free(self._wbuf)
        self._wbuf = NULL
        _spare_total -= self._spare_size  # a C field: a cycle's clear may have taken _spare
        self._spare_size = 0

    # -- read-only state -------------------------------------------------------------

    @property
    def transport(self):
        """The connection's transport; None before connection_made and after connection_lost."""
        return self._transport

    @property
    def peername(self):
        """The transport's ``peername`` extra info, kept after the connection is lost."""
        return self._peername

    @property
    def queued_bytes(self):
        """Bytes accepted by ``send_*`` and not yet handed to the transport (those the
        fragment link holds included)."""
        return self._qbytes + self._held

    @property
    def queued_frames(self):
        """Frames accepted by ``send_*`` and not yet handed to the transport."""
        return self._wframes

    @property
    def paused(self):
        """True while the transport has asked us to stop writing."""
        return self._paused

    @property
    def closed(self):
        """True after close(), abort(), a protocol error or the connection's loss."""
        return self._closed

    @property
    def dropped(self):
        """Frames refused by ``send_*`` (queue full, or closed)."""
        return self._dropped

    @property
    def frames_received(self):
        """Well-formed frames received, of every type."""
        return self._frames_received

    @property
    def frames_ignored(self):
        """Received frames of an unknown type (ignored)."""
        return self._frames_ignored

    @property
    def frames_sent(self):
        """Frames accepted by ``send_*`` (queued or written)."""
        return self._frames_sent

    @property
    def bytes_sent(self):
        """Bytes of the frames accepted by ``send_*`` (headers included)."""
        return self._bytes_sent

    @property
    def messages_sent(self):
        """Message frames accepted by ``send_*`` (queued or written)."""
        return self._messages_sent

    @property
    def messages_received(self):
        """Well-formed message frames received (handed to the sink or the owner)."""
        return self._messages_received

    @property
    def last_received(self):
        """``time.monotonic()`` when bytes last arrived on this connection; 0.0 before any."""
        return self._last_received

    @property
    def partial_bytes(self):
        """Bytes received of the incomplete frame in progress (header included); 0 between
        frames.  Whole frames waiting in the backlog are not counted."""
        return self._hdr_fill + self._body_fill

    @property
    def backlog_bytes(self):
        """Bytes received and kept for a later loop turn (budget used, or reading held)."""
        return 0 if self._backlog is None else PyBytes_GET_SIZE(self._backlog)

    @property
    def reading_paused(self):
        """True while a reason holds reading or a backlog waits (the transport is paused)."""
        return bool(self._holds) or self._backlog is not None

    @property
    def max_frame_size(self):
        return self._max_frame

    @property
    def bytes_received(self):
        """Bytes received on this connection so far (a sign of life, whatever they hold)."""
        return self._bytes_received

    @property
    def control_kinds(self):
        """The frame kinds handed to ``owner.frame_control`` (see set_control_kinds)."""
        return self._control

    def set_control_kinds(self, kinds):
        """After the handshake, hand frames of these kinds to
        ``owner.frame_control(proto, kind, body)`` instead of ignoring them."""
        cdef object checked = control_kinds(kinds)
        memset(self._ctl, 0, 256)
        for kind in checked:
            self._ctl[<int>kind] = 1
        self._control = checked

    @property
    def fragments(self):
        """The connection's FragmentLink (cap "frag"), or None: messages go whole."""
        return self._frag

    def set_fragments(self, link):
        """From now on offer ``link`` (a ``casty.transport.fragments.FragmentLink``, None:
        none) every message frame larger than its ``fragment_size``, and every message
        while it holds some; it writes them as fragments, in order per lane."""
        self._frag_size = 0 if link is None else link.fragment_size
        self._frag = link
        reasm = None if link is None else link.reassembler
        self._reasm = reasm if type(reasm) is Reassembler else None

    def new_reassembler(self, *, max_message, max_streams, max_bytes):
        """A fragment Reassembler of this twin, for the connection's FragmentLink."""
        return Reassembler(max_message=max_message, max_streams=max_streams, max_bytes=max_bytes)

    def _message_arrived(self):
        """A message reached the sink another way (reassembled from fragments): count it."""
        self._messages_received += 1

    def _set_held(self, Py_ssize_t nbytes):
        """The fragment link now holds ``nbytes`` of accepted frames (bounded with the queue)."""
        self._held = nbytes

    def set_message_sink(self, sink):
        """Send every later message frame's body to ``sink`` (None: back to the owner).

        Until a sink is set the connection is taken to be before its handshake:
        ``max_handshake_size`` bounds each frame, and only handshake and message
        frames are allowed.
        """
        owner = getattr(sink, "__self__", None)
        if isinstance(owner, FrameSink) and sink == getattr(owner, "on_frame", None):
            self._fast_sink = <FrameSink>owner
        else:
            self._fast_sink = None
        self._sink = sink
        self._limit = self._max_handshake if sink is None else self._max_frame

    # -- holding reading -----------------------------------------------------------------

    def pause_reading(self, reason):
        """Hold reading for ``reason`` until ``resume_reading(reason)``; no frame is
        delivered meanwhile.  Holding twice for one reason is holding once."""
        if reason in self._holds:
            return
        self._holds.add(reason)
        self._halt = True
        self._sync_reading()

    def resume_reading(self, reason):
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

    cdef int _sync_reading(self) except -1:
        """Tell the transport to pause or resume reading, when that changed."""
        cdef bint want = bool(self._holds) or self._backlog is not None
        if want == self._reading_paused or self._transport is None or self._closed:
            return 0
        self._reading_paused = want
        if want:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()
        return 0

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport):
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        transport.set_write_buffer_limits(high=self._high, low=self._low)
        self._peername = transport.get_extra_info("peername")
        if self._closed:  # aborted before the connection was made
            transport.abort()
            return
        call_owner(self._owner, "frame_connection_made", self)
        if self._wframes:
            self._schedule_flush()

    def connection_lost(self, exc):
        self._closed = self._halt = True
        self._backlog = None
        unsent = self._wframes + self._failed_frames
        self._failed_frames = 0
        if self._frag is not None:
            unsent += self._frag.held_frames
            self._frag.clear()
        self._pieces = None
        self._wused = 0
        self._qbytes = 0
        self._wframes = 0
        self._release_wbuf()
        self._reset_partial()
        self._drop_spare()
        self._transport = None
        call_owner(self._owner, "frame_connection_lost", self, exc, unsent)

    def pause_writing(self):
        self._paused = True

    def resume_writing(self):
        self._paused = False
        if self._wframes and not self._closed:
            self._flush_now()
        if self._frag is not None and not self._closed:
            self._frag.pump()

    # -- inbound -------------------------------------------------------------------------

    def data_received(self, data):
        if self._closed:
            return
        if not PyBytes_CheckExact(data):
            data = bytes(data)  # rare: transports hand over bytes
        self._bytes_received += <unsigned long long>PyBytes_GET_SIZE(data)
        self._last_received = _monotonic()  # once per read, not per frame
        if self._halt or self._backlog is not None:
            # Held, or frames wait already: after them (a transport may hand over
            # what it had read before it was paused).
            self._backlog = data if self._backlog is None else self._backlog + data
            self._sync_reading()
            return
        self._feed(data)

    cdef int _feed(self, bytes data) except -1:
        """Deliver the frames of ``data`` up to the budget; keep a partial frame and
        anything after the budget or a hold in the backlog."""
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), off = 0
        # Not connected (no loop to come back on): no budget; -1 never counts down to 0.
        cdef Py_ssize_t left = self._budget if self._loop is not None else -1
        if self._spare is not None:
            self._spare_idle += 1
            if self._spare_idle > _SPARE_IDLE_READS:
                self._drop_spare()
        if self._hdr_fill:
            off = self._complete_partial(p, n)
            if off < 0:
                return 0
            left -= 1
        self._split(data, p, n, off, left)
        return 0

    cdef int _keep_backlog(self, object rest) except -1:
        self._backlog = rest
        self._sync_reading()
        if not self._halt:
            self._schedule_backlog()
        return 0

    cdef int _schedule_backlog(self) except -1:
        if not self._backlog_scheduled and self._loop is not None:
            self._backlog_scheduled = True
            self._loop.call_soon(self._backlog_cb)
        return 0

    def _deliver_backlog(self):
        self._backlog_scheduled = False
        data = self._backlog
        if data is None or self._halt:
            return  # closed (nothing more is delivered), or held: resume_reading reschedules
        self._backlog = None
        self._feed(data)
        if self._backlog is None:
            self._sync_reading()

    cdef Py_ssize_t _complete_partial(self, const unsigned char* p, Py_ssize_t n) except -2:
        """Feed the partial frame from p[0:n]; the offset after it once it is complete and
        delivered, else -1 (all of p used, or the protocol closed)."""
        cdef Py_ssize_t off = 0, take, before
        cdef unsigned char frame_type
        cdef object body
        if self._hdr_fill < wire.FRAME_HEADER_SIZE:
            before = self._hdr_fill
            take = min(wire.FRAME_HEADER_SIZE - before, n)
            memcpy(&self._hdr[before], p, take)
            self._hdr_fill = before + take
            off = take
            if before < 4 <= self._hdr_fill and not self._length_ok(wire.read_be32(self._hdr)):
                return -1
            if self._hdr_fill < wire.FRAME_HEADER_SIZE:
                return -1
            self._begin_body()
        take = min(self._body_len - self._body_fill, n - off)
        if self._body is not None:
            self._fill_body(p + off, take)
        self._body_fill += take
        off += take
        if self._body_fill < self._body_len:
            return -1
        frame_type = self._hdr[4]
        if self._body is not None and PyBytes_GET_SIZE(self._body) != self._body_len:
            self._resize_body(self._body_len)  # a refilled spare that was larger
        body = self._body
        take = self._body_len
        self._reset_partial()
        self._dispatch(frame_type, body, take if body is None else 0)
        if (body is not None and CASTY_CAN_REUSE_BYTES and refcount(<PyObject*>body) == 1
                and _SPARE_MIN <= take <= _SPARE_MAX and not self._closed):
            # Nobody kept it, so nobody can see it refilled; a fresh body this large
            # would cost a page fault per 4 KiB once the allocator has given it back.
            self._keep_spare(body, take)
        return -1 if self._closed else off

    cdef int _split(self, bytes data, const unsigned char* p, Py_ssize_t n, Py_ssize_t off,
                    Py_ssize_t left) except -1:
        """Deliver the whole frames in p[off:n] (``data``'s bytes), at most ``left`` of
        them; keep the tail as the partial frame, or the rest as the backlog."""
        cdef unsigned long long length
        cdef Py_ssize_t avail, blen
        cdef unsigned char frame_type
        cdef object body
        try:
            while not self._halt:
                avail = n - off
                if avail < 4:
                    break
                length = wire.read_be32(p + off)
                if length == 0 or length > self._limit:
                    self._length_ok(length)
                    return 0
                if <unsigned long long>(avail - 4) < length:
                    break
                if left == 0:
                    break  # the budget is spent: the rest waits for a later loop turn
                left -= 1
                blen = <Py_ssize_t>length - 1
                frame_type = p[off + 4]
                # Another frame starts after this one: its messages are handled as a batch.
                self._read.more = <Py_ssize_t>length + 4 < avail
                if frame_type == wire.FRAME_MESSAGE and self._fast_sink is not None:
                    # What _dispatch does for a message, minus the body's bytes object.
                    self._frames_received += 1
                    self._messages_received += 1
                    self._ignored_run = 0
                    try:
                        self._fast_sink.on_frame_at(p + off + wire.FRAME_HEADER_SIZE, blen, None)
                    except Exception:
                        log_sink_error(self._peername)
                elif (frame_type == wire.FRAME_COMPACT and self._ctl[frame_type]
                      and self._fast_sink is not None):
                    self._frames_received += 1
                    self._compact(p + off + wire.FRAME_HEADER_SIZE, blen, None)
                elif frame_type == wire.FRAME_FRAGMENT and self._reasm is not None and self._ctl[frame_type]:
                    self._frames_received += 1
                    self._fragment(p + off + wire.FRAME_HEADER_SIZE, blen, None)
                elif (frame_type == wire.FRAME_MESSAGE or frame_type == wire.FRAME_HANDSHAKE
                      or self._ctl[frame_type]):
                    body = PyBytes_FromStringAndSize(<const char*>p + off + wire.FRAME_HEADER_SIZE, blen)
                    self._dispatch(frame_type, body, 0)
                else:
                    self._dispatch(frame_type, None, blen)
                off += 4 + blen + 1
        finally:
            self._read.more = False
        if self._closed or off >= n:
            return 0
        if self._halt or left == 0:
            self._keep_backlog(data[off:])
            return 0
        # Less than one frame is left, and its length (when present) passed the check.
        avail = n - off
        if avail > wire.FRAME_HEADER_SIZE:
            avail = wire.FRAME_HEADER_SIZE
        memcpy(self._hdr, p + off, avail)
        self._hdr_fill = avail
        off += avail
        if avail == wire.FRAME_HEADER_SIZE:
            self._begin_body()
            avail = n - off
            if self._body is not None:
                self._fill_body(p + off, avail)
            self._body_fill = avail
        return 0

    cdef int _begin_body(self) except -1:
        """The partial frame's header is complete: make room for its body."""
        cdef unsigned char frame_type = self._hdr[4]
        self._body_len = <Py_ssize_t>wire.read_be32(self._hdr) - 1
        self._body_fill = 0
        if frame_type == wire.FRAME_MESSAGE or frame_type == wire.FRAME_HANDSHAKE or self._ctl[frame_type]:
            # Filled in place before anyone else can see it.  Sized by what has arrived,
            # not by what the peer announced: a length prefix alone costs us little.
            if self._spare is not None and self._body_len >= _SPARE_MIN:
                self._body = self._spare
                self._drop_spare()
                # Should someone have reached it, _fill_body copies it before writing,
                # and the hash they recompute is the one it had.
                casty_forget_bytes_hash(self._body)
            else:
                self._body = PyBytes_FromStringAndSize(NULL, min(self._body_len, _EAGER_BODY))
        else:
            self._body = None
        return 0

    cdef inline void _keep_spare(self, object body, Py_ssize_t size) noexcept:
        """Set ``body`` (``size`` bytes) aside for the next spanning frame, if the
        process-wide bound leaves room."""
        global _spare_total
        self._drop_spare()
        if _spare_total + size <= _SPARE_TOTAL_MAX:
            self._spare = body
            self._spare_size = size
            self._spare_idle = 0
            _spare_total += size

    cdef inline void _drop_spare(self) noexcept:
        global _spare_total
        _spare_total -= self._spare_size
        self._spare_size = 0
        self._spare = None

    cdef int _fill_body(self, const unsigned char* p, Py_ssize_t take) except -1:
        """Write p[0:take] into the partial body after what it holds, growing it.  A body
        someone else reached (gc.get_referents can) is copied first, never written into."""
        self._grow_body(self._body_fill + take)
        if refcount(<PyObject*>self._body) != 1:
            self._resize_body(PyBytes_GET_SIZE(self._body))
        memcpy(PyBytes_AS_STRING(self._body) + self._body_fill, p, take)
        return 0

    cdef int _grow_body(self, Py_ssize_t need) except -1:
        """Make the partial body hold ``need`` bytes (doubling, up to its full length)."""
        cdef Py_ssize_t cap = PyBytes_GET_SIZE(self._body)
        if need <= cap:
            return 0
        cap = min(cap * 2, self._body_len)
        if cap < need:
            cap = need
        return self._resize_body(cap)

    cdef int _resize_body(self, Py_ssize_t size) except -1:
        """Resize the partial body to ``size`` bytes: in place when nobody else holds it,
        else into a fresh copy.  On failure the partial frame is dropped and the error
        raised (the transport then closes the connection)."""
        cdef PyObject* raw
        cdef object fresh
        if refcount(<PyObject*>self._body) != 1:
            try:
                fresh = PyBytes_FromStringAndSize(NULL, size)
            except MemoryError:
                self._reset_partial()
                raise
            memcpy(PyBytes_AS_STRING(fresh), PyBytes_AS_STRING(self._body),
                   min(size, PyBytes_GET_SIZE(self._body)))
            self._body = fresh
            return 0
        # Resizing needs the only reference: take it over from the attribute.
        raw = <PyObject*>self._body
        Py_INCREF(<object>raw)
        self._body = None
        if _PyBytes_Resize(&raw, size) < 0:
            self._reset_partial()
            return -1  # raw was released and the error set
        self._body = <object>raw
        Py_DECREF(<object>raw)
        return 0

    cdef inline void _reset_partial(self) noexcept:
        self._hdr_fill = 0
        self._body = None
        self._body_len = 0
        self._body_fill = 0

    cdef bint _length_ok(self, unsigned long long length) except -1:
        if length != 0 and length <= self._limit:
            return True
        self._protocol_error(frame_length_problem(
            length, self._max_frame, self._max_handshake if self._sink is None else None
        ))
        return False

    cdef int _dispatch(self, unsigned char frame_type, object body, Py_ssize_t skipped) except -1:
        """Hand one frame on; ``skipped`` is the body size of an unknown-type frame."""
        self._frames_received += 1
        if frame_type == wire.FRAME_MESSAGE:
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
        elif frame_type == wire.FRAME_HANDSHAKE:
            self._ignored_run = 0
            call_owner(self._owner, "frame_handshake", self, body)
        elif frame_type == wire.FRAME_COMPACT and self._ctl[frame_type] and self._fast_sink is not None:
            self._compact(<const unsigned char*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), body)
        elif frame_type == wire.FRAME_FRAGMENT and self._reasm is not None and self._ctl[frame_type]:
            self._fragment(<const unsigned char*>PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body), body)
        elif self._ctl[frame_type] and self._sink is not None:
            self._ignored_run = 0
            if frame_type == wire.FRAME_COMPACT:
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
                log_ignored_frame(self._peername, frame_type, skipped)
        return 0

    cdef int _compact(self, const unsigned char* p, Py_ssize_t size, object body) except -1:
        """A negotiated compact message frame (body p[0:size], held by ``body`` or None):
        to the fast sink at C level, else to the owner like other control frames."""
        cdef bint taken = False
        self._ignored_run = 0
        self._messages_received += 1
        try:
            taken = self._fast_sink.on_compact_at(p, size)
        except Exception:
            log_sink_error(self._peername)
            return 0
        if not taken:
            if body is None:
                body = PyBytes_FromStringAndSize(<const char*>p, size)
            call_owner(self._owner, "frame_control", self, wire.FRAME_COMPACT, body)
        return 0

    cdef int _fragment(self, const unsigned char* p, Py_ssize_t size, object body) except -1:
        """A fragment frame (body p[0:size], held by ``body`` or None) on a connection whose
        link has this twin's reassembler: a data fragment is fed to it from here, with no
        copy of its own; an ack goes to the link.  What the link's on_frame does otherwise."""
        cdef object message
        link = self._frag
        self._ignored_run = 0
        if size and p[0] == _FLAG_ACK:
            if body is None:
                body = PyBytes_FromStringAndSize(<const char*>p, size)
            link.on_frame(body)
            return 0
        if link.failed:
            return 0
        try:
            message = self._reasm.feed_at(p, size)
        except FragmentError as exc:
            link.fail(str(exc))
            return 0
        link.taken(message)
        return 0

    cdef int _protocol_error(self, str reason) except -1:
        self._reset_partial()
        call_owner(self._owner, "frame_error", self, reason)
        log_protocol_error(self._peername, reason)
        self.abort()
        return 0

    # -- outbound ------------------------------------------------------------------------

    cpdef bint send_frame(self, object frame) except -1:
        """Queue a whole encoded frame; False (and counted in ``dropped``) when refused."""
        cdef Py_buffer view
        if PyBytes_CheckExact(frame):
            return self._enqueue_frame(
                <const unsigned char*>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), frame
            )
        PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
        try:
            if view.len < _OWN_WRITE:
                return self._enqueue_frame(<const unsigned char*>view.buf, view.len, frame)
            # A snapshot, queued as its own piece: the caller may reuse its buffer.
            frame = PyBytes_FromStringAndSize(<const char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return self._enqueue_frame(
            <const unsigned char*>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), frame
        )

    cdef bint _enqueue_frame(self, const unsigned char* p, Py_ssize_t size, object frame,
                             bint control=False) except -1:
        """Queue the whole frame p[0:size] (held by ``frame``); a ``control`` frame passes
        ``max_queue_bytes`` and opens no write batch."""
        if size < wire.FRAME_HEADER_SIZE or wire.read_be32(p) != <unsigned long long>(size - 4):
            raise FrameError(send_frame_problem(frame))
        if control:
            if self._closed:
                self._dropped += 1
                return False
        elif not self._accept(size):
            return False
        if size >= _OWN_WRITE:
            self._seal()
            self._pieces.append(frame)
        else:
            self._reserve(size)
            memcpy(self._wbuf + self._wused, p, size)
            self._wused += size
        if not control and p[4] == wire.FRAME_MESSAGE:  # a message queued while connecting goes out this way
            self._messages_sent += 1
        self._queued(size, not control)
        return True

    cpdef bint send_control(self, object frame) except -1:
        """Queue a whole encoded control frame past ``max_queue_bytes`` (what sends those
        bounds them); False (counted in ``dropped``) only once closed."""
        if not PyBytes_CheckExact(frame):
            frame = bytes(memoryview(frame))
        return self._enqueue_frame(
            <const unsigned char*>PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), frame, True
        )

    cpdef bint send_message(self, object envelope, int kind=wire.FRAME_MESSAGE) except -1:
        """Queue a message frame carrying ``envelope``, or the list of buffers that joined
        make it; False (and counted) when refused.  ``kind``: FRAME_MESSAGE, or
        FRAME_COMPACT for a compact-header body."""
        cdef Py_buffer view
        cdef int taken
        if kind != wire.FRAME_MESSAGE and kind != wire.FRAME_COMPACT:
            raise FrameError(f"send_message takes a message or compact-message kind, got {kind!r}")
        if self._frag is not None:
            taken = self._offer_fragments(envelope, kind)
            if taken >= 0:
                return taken
        if PyBytes_CheckExact(envelope):
            return self._enqueue_message(
                <const unsigned char*>PyBytes_AS_STRING(envelope), PyBytes_GET_SIZE(envelope), envelope, kind
            )
        if isinstance(envelope, list):  # as the pure twin: subclasses are pieces too
            return self._enqueue_parts(envelope if type(envelope) is list else list(envelope), kind)
        PyObject_GetBuffer(envelope, &view, PyBUF_SIMPLE)
        try:
            if view.len < _OWN_WRITE:
                return self._enqueue_message(<const unsigned char*>view.buf, view.len, None, kind)
            # A snapshot, queued as its own piece: the caller may reuse its buffer.
            envelope = PyBytes_FromStringAndSize(<const char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        return self._enqueue_message(
            <const unsigned char*>PyBytes_AS_STRING(envelope), PyBytes_GET_SIZE(envelope), envelope, kind
        )

    cdef int _offer_fragments(self, object envelope, int kind) except -2:
        """1/0: the fragment link took the message / it was refused (counted); -1: it goes
        whole, as usual."""
        cdef Py_ssize_t n = 0
        if PyBytes_CheckExact(envelope):
            n = PyBytes_GET_SIZE(envelope)
        elif isinstance(envelope, list):
            for part in envelope:
                n += PyBytes_GET_SIZE(part) if PyBytes_CheckExact(part) else memoryview(part).nbytes
        else:
            n = memoryview(envelope).nbytes
        if n + wire.FRAME_HEADER_SIZE <= self._frag_size and not self._held:
            return -1
        if kind == wire.FRAME_COMPACT:
            # The link carries JSON-header envelopes only (see the pure twin).
            envelope, n = self._frag.expanded(envelope)
        if not self._accept(n + wire.FRAME_HEADER_SIZE):
            return 0
        if not self._frag.offer(envelope, n):
            return -1
        self._messages_sent += 1
        return 1

    cdef bint _enqueue_message(self, const unsigned char* p, Py_ssize_t n, object envelope,
                               unsigned char kind) except -1:
        """Queue a message frame of p[0:n]; ``envelope`` is the bytes object holding it
        (None for other buffers, which are always copied)."""
        cdef Py_ssize_t size = n + wire.FRAME_HEADER_SIZE
        if <unsigned long long>n + 1 > wire.MAX_FRAME_LENGTH:
            raise FrameError(f"frame body of {n} bytes is too long for a 4-byte length")
        if not self._accept(size):
            return False
        if envelope is not None and n >= _OWN_WRITE:
            self._reserve(wire.FRAME_HEADER_SIZE)
            _put_header(self._wbuf + self._wused, <unsigned long long>n + 1, kind)
            self._wused += wire.FRAME_HEADER_SIZE
            self._seal()
            self._pieces.append(envelope)
        else:
            self._reserve(size)
            _put_header(self._wbuf + self._wused, <unsigned long long>n + 1, kind)
            memcpy(self._wbuf + self._wused + wire.FRAME_HEADER_SIZE, p, n)
            self._wused += size
        self._messages_sent += 1
        self._queued(size)
        return True

    cdef bint _enqueue_parts(self, list parts, unsigned char kind) except -1:
        """Queue one message frame whose body is ``parts`` joined: pieces of OWN_WRITE_SIZE
        or more are queued as they are, the rest copied into the send buffer."""
        cdef Py_ssize_t n = 0, k, size
        for part in parts:
            if not PyBytes_CheckExact(part):
                parts = [p if PyBytes_CheckExact(p) else bytes(memoryview(p)) for p in parts]
                break
        for part in parts:
            n += PyBytes_GET_SIZE(part)
        if <unsigned long long>n + 1 > wire.MAX_FRAME_LENGTH:
            raise FrameError(f"frame body of {n} bytes is too long for a 4-byte length")
        size = n + wire.FRAME_HEADER_SIZE
        if not self._accept(size):
            return False
        self._reserve(wire.FRAME_HEADER_SIZE)
        _put_header(self._wbuf + self._wused, <unsigned long long>n + 1, kind)
        self._wused += wire.FRAME_HEADER_SIZE
        for part in parts:
            k = PyBytes_GET_SIZE(part)
            if k >= _OWN_WRITE:
                self._seal()
                self._pieces.append(part)
            else:
                self._reserve(k)
                memcpy(self._wbuf + self._wused, PyBytes_AS_STRING(part), k)
                self._wused += k
        self._messages_sent += 1
        self._queued(size)
        return True

    cdef bint _accept(self, Py_ssize_t size) except -1:
        """Whether a frame of ``size`` bytes may be queued (if not, it is counted as dropped)."""
        cdef Py_ssize_t queued = self._qbytes + self._held
        if self._closed or (queued and queued + size > self._max_queue):
            self._dropped += 1
            return False
        return True

    cdef int _reserve(self, Py_ssize_t size) except -1:
        """Make room for ``size`` more bytes in the send buffer."""
        cdef Py_ssize_t need, cap
        cdef unsigned char* grown
        need = self._wused + size
        if need > self._wcap:
            # Start small: an idle connection keeps its buffer, and most only ever
            # hold a handshake or a few small frames per loop iteration.
            cap = self._wcap * 2 if self._wcap else 512
            while cap < need:
                cap *= 2
            grown = <unsigned char*>PyMem_Realloc(self._wbuf, cap)
            if grown is NULL:
                raise MemoryError()
            self._wbuf = grown
            self._wcap = cap
        return 0

    cdef int _seal(self) except -1:
        """Move what the send buffer holds into a piece of its own (the pieces list exists after)."""
        if self._pieces is None:
            self._pieces = []
        if self._wused:
            self._pieces.append(PyBytes_FromStringAndSize(<const char*>self._wbuf, self._wused))
            self._wused = 0
            if self._wcap > _KEEP_WBUF:
                self._release_wbuf()
        return 0

    cdef int _queued(self, Py_ssize_t size, bint opens_batch=True) except -1:
        self._qbytes += size
        self._wframes += 1
        self._frames_sent += 1
        self._bytes_sent += <unsigned long long>size
        if self._paused or self._transport is None:
            return 0
        if self._qbytes >= self._high or not self._flush_scheduled:
            # The first frame since the last flush goes out at once (see the pure twin).
            self._flush_now()
            if opens_batch:
                self._schedule_flush()
        return 0

    cdef int _schedule_flush(self) except -1:
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_cb)
        return 0

    def _flush(self):
        self._flush_scheduled = False
        if self._wframes and not self._paused and not self._closed:
            self._flush_now()

    cdef int _flush_now(self) except -1:
        cdef list pieces = self._pieces
        cdef Py_ssize_t frames = self._wframes
        transport = self._transport
        if transport is None or transport.is_closing():
            return 0  # what stays queued is counted by connection_lost
        if pieces is None:
            data = PyBytes_FromStringAndSize(<const char*>self._wbuf, self._wused)
            self._wused = 0
            if self._wcap > _KEEP_WBUF:
                self._release_wbuf()
        else:
            self._seal()
            self._pieces = None
        self._qbytes = 0
        self._wframes = 0
        try:
            if pieces is None:
                transport.write(data)  # may call pause_writing() before it returns
            else:
                for data in pieces:
                    transport.write(data)
        except Exception:
            # Which of them the transport kept is unknown: count them all as unsent.
            self._failed_frames += frames
            log_write_error(self._peername)
            self.abort()
        return 0

    cdef void _release_wbuf(self) noexcept:
        PyMem_Free(self._wbuf)
        self._wbuf = NULL
        self._wcap = 0

    def close(self):
        """Hand everything queued to the transport (even while paused), then close it."""
        if self._closed:
            return
        if self._frag is not None and self._transport is not None:
            self._frag.drain()
        if self._transport is not None and self._wframes:
            self._flush_now()
        self._closed = self._halt = True
        self._backlog = None
        if self._transport is not None:
            self._transport.close()

    def abort(self):
        """Close the connection at once; what is queued is counted as unsent."""
        if self._closed and self._transport is None:
            return
        self._closed = self._halt = True
        self._backlog = None
        if self._transport is not None:
            self._transport.abort()


class FrameProtocol(FrameProtocolBase, asyncio.Protocol):
    """One connection speaking casty frames; see ``casty.transport.framing`` for the rules.

    ``peer`` and ``context`` are free slots for the owner (both start as None).
    """

    __slots__ = ()
