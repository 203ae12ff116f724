"""Message fragments (cap ``"frag"``, frame kind 0x05): the codec, the reassembler and the
writer of one connection, shared by both framing twins (a neutral module: it imports no twin).

Why: a large message written whole holds every frame queued behind it for as long as the
socket takes to move it.  On a connection where both handshakes list ``"frag"``, a message
frame larger than ``fragment_size`` goes out as fragments instead, and the sender keeps at
most ``fragment_window`` of them unacknowledged, so a small message sent meanwhile is
written after at most that many fragments (in our buffers, the kernel's and the peer's).

Fragment body (after the kind byte 0x05; integers big-endian)::

    data:  [flags:1][stream:4][total:4, only with FIRST][data:1+]
    ack:   [0x80][count:4]

``flags``: FIRST (0x01) opens ``stream`` and announces ``total``, the message body's bytes
(an envelope, 1..max_frame_size - 1); LAST (0x02) closes it, and the bytes received must
then equal ``total``; both may be set.  The receiver allocates ``total`` bytes when FIRST
arrives, copies each fragment into place, and hands the body on as a message frame once
LAST is in.  It acknowledges the data fragments taken in one loop turn (a read's worth)
with one ack; ``count`` (1 or more) is how many data fragments the sender may now count as
taken.  Anything else (other flag bits, a stream opened twice or not open, an overrun, an
empty piece, an ack of more fragments than are out, more than ``max_fragment_streams``
streams open, announced totals of open streams over ``max_fragment_bytes``) is a
:class:`~casty.errors.FragmentError`, and the node closes the connection.  The
reassemblers (both twins) are ``casty.transport.reassembly`` and ``casty._fast.reassembly``.

Order: per (connection, lane).  The lane of a message is its target, read from its
envelope header (:func:`lane_of`): a message whose lane holds a message not yet fully
written waits behind it in that lane; messages to other targets (an ask's reply path
included) go out at once, between fragments.  This sender streams one message at a time
(stream ids count up per message), lanes taking turns.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from casty.errors import FragmentError
from casty.transport.frame_codec import encode_frame, log_sink_error
from casty.wire import COMPACT_HEADER_SIZE, FRAME_FRAGMENT, FRAME_HEADER_SIZE, FRAME_MESSAGE, LENGTH_PREFIX_SIZE

__all__ = [
    "ACK_FRAME",
    "FLAG_ACK",
    "FLAG_FIRST",
    "FLAG_LAST",
    "FRAGMENT_OVERHEAD",
    "FragmentLink",
    "decode_ack",
    "encode_ack",
    "encode_fragment",
    "lane_of",
]

FLAG_FIRST = 0x01
FLAG_LAST = 0x02
FLAG_ACK = 0x80

_FRAG_HEAD = struct.Struct(">IBBI")  # frame length, kind, flags, stream
_FIRST_HEAD = struct.Struct(">IBBII")  # ... and total
_ACK = struct.Struct(">BI")
_U32 = struct.Struct(">I")
_MAX_STREAM = 0xFFFFFFFF
#: bytes a fragment frame spends on more than its data, at most (length, kind, flags,
#: stream, total): a fragment frame is at most ``fragment_size`` bytes on the wire
FRAGMENT_OVERHEAD = _FIRST_HEAD.size


def encode_fragment(stream: int, flags: int, data: Any, total: int = 0) -> bytes:
    """The whole fragment frame; ``total`` is written only when ``flags`` has FIRST.

    >>> encode_fragment(7, FLAG_FIRST | FLAG_LAST, b"hi", 2).hex()
    '0000000c050300000007000000026869'
    """
    n = len(data)
    if flags & FLAG_FIRST:
        return b"".join((_FIRST_HEAD.pack(n + 10, FRAME_FRAGMENT, flags, stream, total), data))
    return b"".join((_FRAG_HEAD.pack(n + 6, FRAME_FRAGMENT, flags, stream), data))


def encode_ack(count: int) -> bytes:
    """The whole ack frame for ``count`` data fragments.

    >>> encode_ack(1).hex()
    '00000006058000000001'
    """
    return encode_frame(FRAME_FRAGMENT, _ACK.pack(FLAG_ACK, count))


#: the ack a receiver sends for each data fragment
ACK_FRAME = encode_ack(1)


def decode_ack(body: Any) -> int:
    """The count of an ack body; FragmentError when it is not one."""
    if len(body) != _ACK.size:
        raise FragmentError(f"fragment ack of {len(body)} bytes (an ack is 5)")
    count: int = _U32.unpack_from(body, 1)[0]
    if count == 0:
        raise FragmentError("fragment ack of 0 fragments")
    return count


_TARGET_START = b'{"target": "'
_TARGET_END = b'", "sender": '


def lane_of(envelope: Any) -> bytes:
    """The lane key of an envelope (bytes, or the list of buffers that joined make it): its
    target as the header spells it.

    The header is written as ``json.dumps`` writes it, target first, so the target ends at
    the first ``", "sender": ``: inside the JSON string every quote is escaped.  A header of
    another shape is decoded (the peer-facing decoder is not needed: this is our own bytes).

    >>> from casty.transport.envelope import encode_header
    >>> lane_of(encode_header('casty://s@h:1/user/"a"', "casty://s@h:2/", "int") + b"payload")
    b'casty://s@h:1/user/\\\\"a\\\\"'
    """
    head = envelope[0] if isinstance(envelope, list) else envelope
    if len(head) < LENGTH_PREFIX_SIZE:
        head = b"".join(envelope) if isinstance(envelope, list) else bytes(envelope)
    hlen = _U32.unpack_from(head)[0]
    if len(head) < LENGTH_PREFIX_SIZE + hlen and isinstance(envelope, list):
        head = b"".join(envelope)
    header = bytes(head[LENGTH_PREFIX_SIZE : LENGTH_PREFIX_SIZE + hlen])
    if header.startswith(_TARGET_START):
        end = header.find(_TARGET_END, len(_TARGET_START))
        if end >= 0:
            return header[len(_TARGET_START) : end]
    try:
        target = json.loads(header)["target"]
    except (ValueError, KeyError, TypeError):
        return header  # not an envelope we can read: a lane of its own kind
    return json.dumps(target)[1:-1].encode()


def _frozen(part: Any) -> Any:
    """``part`` when it cannot change under us (bytes, or a view of bytes), else a copy:
    the caller may reuse its buffer."""
    if type(part) is bytes or (type(part) is memoryview and type(part.obj) is bytes):
        return part
    return bytes(memoryview(part))


def _no_compact(body: Any) -> bytes:
    raise ValueError("a compact message on a connection without compact headers")


class FragmentLink:
    """One connection's fragments, both ways: large messages out (paced by the peer's acks)
    and the reassembly of the peer's.

    ``proto`` is the connection's FrameProtocol (either twin): the link writes through its
    ``send_control`` (already accepted bytes, so past ``max_queue_bytes``), tells it what
    it holds through ``_set_held(nbytes)``, and reassembles with its twin's Reassembler
    (``proto.new_reassembler``; the Cython protocol feeds that one itself, from its reads,
    and calls :meth:`taken`).  ``deliver(body)`` takes each reassembled message body (the
    connection's message sink); ``on_error(reason)`` is called once for a peer that breaks
    the rules (the node closes the connection).
    """

    __slots__ = (
        "_ack_scheduled",
        "_current",
        "_deliver",
        "_held_bytes",
        "_lanes",
        "_on_error",
        "_proto",
        "_ready",
        "_stream",
        "_to_ack",
        "_unacked",
        "expand",
        "failed",
        "fragment_size",
        "reassembler",
        "window",
    )

    def __init__(
        self,
        proto: Any,
        *,
        fragment_size: int,
        window: int,
        max_message: int,
        max_streams: int,
        max_bytes: int,
        deliver: Callable[[bytes], object],
        on_error: Callable[[str], object],
    ) -> None:
        self._proto = proto
        #: a message frame (header included) larger than this is fragmented
        self.fragment_size = fragment_size
        self.window = window
        self.reassembler = proto.new_reassembler(
            max_message=max_message, max_streams=max_streams, max_bytes=max_bytes
        )
        self._deliver = deliver
        self._on_error = on_error
        #: the peer broke the rules: its later fragments are ignored (the node closes it)
        self.failed = False
        # Outbound: lane -> messages not yet written, each (frame bytes, envelope parts),
        # the head of each a large one; lanes whose head waits for its turn; the one being
        # streamed as [lane, size, parts, part index, position in it, offset, stream];
        # fragments out unacknowledged.
        self._lanes: dict[bytes, deque[tuple[int, tuple[Any, ...]]]] = {}
        self._ready: deque[bytes] = deque()
        self._current: list[Any] | None = None
        self._stream = 0
        self._unacked = 0
        self._held_bytes = 0
        # Inbound: data fragments taken and not yet acknowledged (one ack per loop turn).
        self._to_ack = 0
        self._ack_scheduled = False
        #: compact body -> the same message with its JSON header (cap "hdr" on this
        #: connection: HeaderTable.expand); the link holds JSON-header envelopes only
        self.expand: Callable[[Any], bytes] = _no_compact

    # -- outbound ---------------------------------------------------------------

    @property
    def held_frames(self) -> int:
        """Messages taken by :meth:`offer` and not yet fully written (the protocol counts
        them as unsent when the connection is lost, besides the fragments it still queues)."""
        return sum(map(len, self._lanes.values()))

    @property
    def held_bytes(self) -> int:
        """Their frames' bytes."""
        return self._held_bytes

    @property
    def unacked(self) -> int:
        """Fragments written that the peer has not acknowledged yet."""
        return self._unacked

    def offer(self, envelope: Any, size: int) -> bool:
        """Take a message whose envelope has ``size`` bytes when it is large or its lane is
        busy (True); False: not ours, the caller writes it whole now.  The caller has
        checked the queue bound.  The envelope's parts are kept as they are (bytes; other
        buffers are copied, the caller may reuse them): fragments are cut from them, the
        message is never joined whole."""
        large = size + FRAME_HEADER_SIZE > self.fragment_size
        if not large and not self._held_bytes:
            return False
        key = lane_of(envelope)
        lane = self._lanes.get(key)
        if lane is None:
            if not large:
                return False
            lane = self._lanes[key] = deque()
            self._ready.append(key)
        parts = envelope if isinstance(envelope, list) else (envelope,)
        lane.append((size, tuple(map(_frozen, parts))))
        self._hold(size + FRAME_HEADER_SIZE)
        self.pump()
        return True

    def expanded(self, body: Any) -> tuple[list[Any], int]:
        """The compact message ``body`` (a buffer, or a list of them) as the same message
        with its JSON header (``expand``), as parts and their size: only its 6-byte
        compact head is read and replaced, the payload is not copied."""
        head = bytearray()
        rest: list[Any] = []
        for part in body if isinstance(body, list) else (body,):
            need = COMPACT_HEADER_SIZE - len(head)
            if need > 0:
                view = memoryview(part)
                head += view[:need]
                if view.nbytes > need:
                    rest.append(view[need:])
            else:
                rest.append(part)
        header = self.expand(bytes(head))
        return [header, *rest], len(header) + sum(memoryview(p).nbytes for p in rest)

    def _hold(self, delta: int) -> None:
        self._held_bytes += delta
        self._proto._set_held(self._held_bytes)

    def pump(self) -> None:
        """Write fragments while the window and the transport allow."""
        proto = self._proto
        while self._unacked < self.window and not proto.paused and proto.transport is not None:
            cur = self._current
            if cur is None:
                if not self._ready:
                    return
                key = self._ready.popleft()
                self._stream = (self._stream + 1) & _MAX_STREAM
                size, parts = self._lanes[key][0]
                cur = self._current = [key, size, parts, 0, 0, 0, self._stream]
            if not self._emit(cur) or proto.closed:
                return

    def _emit(self, cur: list[Any]) -> bool:
        """Write the next fragment of ``cur``; False once the connection refused it.

        Every fragment but the last fills its frame to exactly ``fragment_size`` bytes:
        at the default (OWN_WRITE_SIZE) each is then written as its own piece, not copied
        again into the protocol's buffer of small frames."""
        key, size, parts, index, pos, offset, stream = cur
        head = _FIRST_HEAD.size if offset == 0 else _FRAG_HEAD.size
        end = min(offset + self.fragment_size - head, size)
        flags = (FLAG_FIRST if offset == 0 else 0) | (FLAG_LAST if end == size else 0)
        n = end - offset
        if flags & FLAG_FIRST:
            pieces: list[Any] = [_FIRST_HEAD.pack(n + 10, FRAME_FRAGMENT, flags, stream, size)]
        else:
            pieces = [_FRAG_HEAD.pack(n + 6, FRAME_FRAGMENT, flags, stream)]
        left = n
        while left:  # the fragment's data, cut from the parts without joining them
            part = parts[index]
            take = min(len(part) - pos, left)
            if take:
                pieces.append(part if take == len(part) else memoryview(part)[pos : pos + take])
            left -= take
            pos += take
            if pos == len(part):
                index += 1
                pos = 0
        if not self._proto.send_control(b"".join(pieces)):
            return False
        self._unacked += 1
        cur[3], cur[4], cur[5] = index, pos, end
        if flags & FLAG_LAST:
            self._finish(key)
        return True

    def _finish(self, key: bytes) -> None:
        """The lane's head is written: write whole the small messages that waited behind it."""
        self._current = None
        lane = self._lanes[key]
        freed = lane.popleft()[0] + FRAME_HEADER_SIZE
        send = self._proto.send_control
        while lane and lane[0][0] + FRAME_HEADER_SIZE <= self.fragment_size:
            size, parts = lane.popleft()
            freed += size + FRAME_HEADER_SIZE
            send(encode_frame(FRAME_MESSAGE, b"".join(parts)))
        if lane:
            self._ready.append(key)
        else:
            del self._lanes[key]
        self._hold(-freed)

    def drain(self) -> None:
        """The connection is closing: write everything held now (the current message's
        remaining fragments, then every lane in order, whole), without waiting for acks."""
        cur = self._current
        if cur is not None:
            while self._current is cur and not self._proto.closed:
                if not self._emit(cur):
                    break
        send = self._proto.send_control
        for lane in self._lanes.values():
            for _, parts in lane:
                send(encode_frame(FRAME_MESSAGE, b"".join(parts)))
        self.clear()

    def clear(self) -> None:
        """Forget everything held (the connection is gone); the reassembly too."""
        self._lanes.clear()
        self._ready.clear()
        self._current = None
        self._unacked = 0
        self._to_ack = 0
        if self._held_bytes:
            self._hold(-self._held_bytes)
        self.reassembler.clear()

    # -- inbound ------------------------------------------------------------------

    def on_frame(self, body: Any) -> None:
        """A fragment frame from the peer: an ack, or a data fragment (acknowledged, and
        its message delivered once whole)."""
        if self.failed:
            return
        try:
            if len(body) and body[0] == FLAG_ACK:
                count = decode_ack(body)
                if count > self._unacked:
                    raise FragmentError(f"fragment ack of {count} with {self._unacked} out")
                self._unacked -= count
                self.pump()
                return
            message = self.reassembler.feed(body)
        except FragmentError as exc:
            self.fail(str(exc))
            return
        self.taken(message)

    def fail(self, reason: str) -> None:
        """The peer broke the rules (``reason``): tell the node, once; ignore the rest."""
        self.failed = True
        self._on_error(reason)

    def taken(self, message: bytes | None) -> None:
        """A data fragment was reassembled (``message``: the body it completed, or None):
        acknowledge it and deliver the message.  The acks of one loop turn (a read's
        fragments) go out together, as one ack frame, after it: cumulative acks keep the
        sender's window full at a fraction of the frames and writes."""
        self._to_ack += 1
        if not self._ack_scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._send_acks()  # no loop to come back on (a test feeding by hand)
            else:
                self._ack_scheduled = True
                loop.call_soon(self._send_acks)
        if message is not None:
            try:
                self._proto._message_arrived()
                self._deliver(message)
            except Exception:
                log_sink_error(self._proto.peername)

    def _send_acks(self) -> None:
        self._ack_scheduled = False
        count, self._to_ack = self._to_ack, 0
        if count and not self.failed and not self._proto.closed:
            self._proto.send_control(ACK_FRAME if count == 1 else encode_ack(count))
