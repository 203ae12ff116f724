"""Liveness (cap ``"hb"``): heartbeats on idle connections, and peers declared down for silence.

One loop timer, every ``heartbeat_interval``, looks at every established connection
whose peer listed ``"hb"`` too, comparing counters the framing keeps anyway (nothing
is done per message):

* a connection on which nothing was sent since the last tick gets a ping: frame
  ``FRAME_PING`` (0x02) whose body is 8 bytes, this node's ``time.monotonic_ns()``
  big-endian.  The peer answers with ``FRAME_ECHO`` (0x03) carrying the same 8 bytes,
  and the difference to our clock on arrival is the round-trip time (``_Conn.rtt``,
  seconds).  Only the pinger's clock is ever compared;
* any byte received (``bytes_received`` changed) is a sign of life: a peer silent for
  ``failure_timeout`` is down, its connection closed (one warning line) with NodeDown
  reason ``"silent"``;
* **own stalls:** when a tick fires late, this node's loop was blocked and could not
  read; the lateness (``TcpNode.loop_lag``) is added to every connection's last-heard
  time, so silence overlapping our own stall is never held against a peer.

A ping or echo body that is not 8 bytes is misbehaviour (the connection is closed
with a reason); an echo of a time not yet reached on our clock is ignored.  A casty
0.21 peer never lists ``"hb"``: it gets no heartbeat and is never declared down for
silence.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from typing import TYPE_CHECKING, Any

from casty.address import _show
from casty.transport.frame_codec import encode_frame
from casty.wire import CAP_HEARTBEAT, FRAME_ECHO, FRAME_PING

if TYPE_CHECKING:
    from casty.transport.node import TcpNode, _Conn

__all__ = ["HEARTBEAT_BODY_SIZE", "Liveness"]

#: a ping or echo body: a big-endian unsigned 64-bit nanosecond clock reading
HEARTBEAT_BODY_SIZE = 8
_STAMP = struct.Struct(">Q")

log = logging.getLogger("casty.transport.liveness")


class Liveness:
    """The heartbeat timer of one :class:`~casty.transport.node.TcpNode`, and the handler
    of its ping and echo frames (``TcpNode`` registers it as the ``"hb"`` feature)."""

    KINDS = (FRAME_PING, FRAME_ECHO)

    def __init__(self, node: TcpNode, interval: float, timeout: float) -> None:
        self.node = node
        self.interval = interval
        self.timeout = timeout
        #: how late (seconds) the last tick fired: this node's own loop stall
        self.loop_lag = 0.0
        #: ticks run so far (tests await them instead of sleeping)
        self.ticks = 0
        self._timer: asyncio.TimerHandle | None = None
        self._due = math.inf  # when (time.monotonic) the next tick should fire

    def start(self) -> None:
        """Schedule the first tick (on the running loop)."""
        self._schedule(time.monotonic())

    def close(self) -> None:
        """Stop ticking."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = math.inf

    def _schedule(self, now: float) -> None:
        self._due = now + self.interval
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    # -- frames ----------------------------------------------------------------------

    def handle(self, conn: _Conn, kind: int, body: Any) -> None:
        """A ping or echo from the peer of ``conn``: answer, or take the round-trip time."""
        if len(body) != HEARTBEAT_BODY_SIZE:
            self.node.misbehaving(
                conn.proto, f"heartbeat frame 0x{kind:02x} with a {len(body)}-byte body, not {HEARTBEAT_BODY_SIZE}"
            )
            return
        if kind == FRAME_PING:
            conn.proto.send_control(encode_frame(FRAME_ECHO, bytes(body)))
            return
        (sent,) = _STAMP.unpack_from(body)
        rtt = time.monotonic_ns() - sent
        if rtt < 0:
            # Not a ping of ours (our clock never showed that time): nothing to learn.
            log.debug("ignoring an echo from the future on the connection to %s", conn.peer_key)
            return
        conn.rtt = rtt / 1e9

    # -- the tick ----------------------------------------------------------------------

    def _tick(self) -> None:
        self._timer = None
        now = time.monotonic()
        lag = max(0.0, now - self._due)
        self.loop_lag = lag
        self.ticks += 1
        try:
            for proto in list(self.node._protocols):
                conn: _Conn = proto.context
                if conn.established and CAP_HEARTBEAT in conn.caps and not proto.closed:
                    self._check(proto, conn, now, lag)
        finally:
            if not self.node._closed:
                self._schedule(now)

    def _check(self, proto: Any, conn: _Conn, now: float, lag: float) -> None:
        received = proto.bytes_received
        heard = conn.hb_heard
        if heard is None or received != conn.hb_received:
            conn.hb_heard = now
            conn.hb_received = received
        else:
            # Our loop was blocked for ``lag``: the peer's bytes may wait unread in the
            # socket, so that time is not silence of the peer's.
            heard = conn.hb_heard = min(now, heard + lag)
            if now - heard >= self.timeout:
                self._silent(proto, conn)
                return
        if proto.frames_sent == conn.hb_sent and not proto.paused:
            # Nothing went out since the last tick (a paused connection has bytes waiting to).
            proto.send_control(encode_frame(FRAME_PING, _STAMP.pack(time.monotonic_ns())))
        conn.hb_sent = proto.frames_sent

    def _silent(self, proto: Any, conn: _Conn) -> None:
        key = conn.peer_key or ("?", 0)
        conn.logged = True
        conn.down_reason = "silent"
        self.node.log.warning(
            "%s:%d silent for %.1fs (failure_timeout); closing its connection",
            _host(key[0]), key[1], self.timeout,
        )
        proto.abort()


def _host(host: object) -> str:
    """A host for a log line: as it is when short and plain, else a bounded, escaped repr."""
    if isinstance(host, str) and len(host) <= 255 and host.isascii() and host.isprintable():
        return host
    return _show(host, 100)
