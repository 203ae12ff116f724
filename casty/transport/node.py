"""TcpNode: the listening socket, the connections to and from peer nodes, and their rules.

The node is driven by plain method calls on the event loop: the ``tcp_transport``
actor forwards its messages here, and :class:`~casty.transport.remote.RemoteTransport`
calls :meth:`TcpNode.send_message` directly so a tell pays no mailbox hop.

Connection rules (docs/architecture.md, "Connections"):

* the connecting side sends its handshake first (v2: ``uid``, ``proto``, ``caps``,
  see :mod:`casty.transport.handshake`); the accepting side answers with its own
  (v1 bytes to a v1 peer); frames flow only on a connection whose handshakes are done;
* with a ``cookie`` each side proves it (HMAC challenge-response): the acceptor in
  its answer, the connector in a second handshake frame; a peer that cannot, casty
  0.21 included, is refused;
* traffic for an address goes over the connection this node dialed to it; an
  inbound connection carries it only when its claim is proven (cookie, or a TLS
  client certificate naming the claimed host) or names port 0 (a client-only node,
  which nobody can dial), and never displaces a connection (a peer cannot take
  another node's traffic by claiming its address) except one to a dead incarnation:
  a proven claim with a new uid for an address whose connection has another uid (the
  old process is gone, its connection half-open) replaces it, a NodeRestarted with no
  NodeDown.  Other inbound connections are receive-only, so two nodes that both send
  use a connection each way;
* except with a casty 0.21 (v1) peer, which keeps one connection per pair and, when
  both dial, closes the one dialed by the larger (host, port): when our dial to it is
  answered in v1 while the one inbound v1 connection claiming that address is its
  own, and its address is the smaller, our frames wait (``handshake_timeout`` at
  most) instead of going out on a dial it is about to close; when it does close it,
  that inbound connection carries our traffic (a 0.21 node does so only while it
  holds a connection to our address; with two inbound claims none is chosen; no
  stronger than 0.21's own identity, see docs/architecture.md);
* frames for a peer whose connection is being made wait in a bounded queue and are
  flushed in order; a failed connect refuses dials to the peer for a while
  (``blacklist_duration``, doubling per failure in a row up to ``reconnect_backoff_max``,
  +-25% jitter: :mod:`casty.transport.backoff`), a successful handshake starts over;
* connecting happens in its own task per peer, so a slow peer delays no other;
* a frame must be complete within ``frame_timeout`` of its first bytes (slow-loris
  defence), checked by a sweep every quarter of it, never per byte;
* at most ``max_connections`` connections, in and out: an inbound one beyond it is
  closed at once (a warning at powers of two of the count), a dial beyond it refused
  (``connection_limit``); an established connection with no byte received or sent for
  ``idle_timeout`` is closed by the same sweep (one info line);
* a send that needs a dial ``allow_dial`` refuses is dropped (``not_allowed``) and no
  connect is attempted; failed-dial entries expire in the sweep and are bounded in
  number (:data:`MAX_BLACKLIST`, oldest out first);
* a feature (a v2 ``cap``: :meth:`TcpNode.add_feature`) is used on a connection when
  both handshakes list it: its frame kinds then reach its handler
  (``handler(conn, kind, body)``), on that connection only;
* a connection closed for what its peer sent (bad frame, bad handshake, none in
  time, frame too slow) is logged in one line, saying why; an ordinary disconnect
  or a reset of a connection carrying this node's traffic is one warning line (a
  peer it sends to is gone), of a receive-only one an info line.

Every frame that is not sent is counted, logged and reported to the failure
listeners as a :class:`~casty.transport.messages.SendFailure`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, Protocol

from casty._impl import FrameProtocol, ReadState
from casty.address import _show
from casty.node_events import NodeDown, NodeEvent, NodeInfo, NodeRestarted, NodeUp
from casty.transport.backoff import backoff_delay
from casty.transport.busy_poll import BusyPoller
from casty.transport.compact_codec import HeaderTable
from casty.transport.config import TcpTransportConfig, cookie_bytes, dial_allowed
from casty.transport.fragments import FragmentLink
from casty.transport.frame_codec import control_kinds, encode_frame
from casty.transport.handshake import (
    Handshake,
    HandshakeError,
    encode_handshake,
    encode_hello,
    handshake_mac,
    macs_equal,
    new_nonce,
    new_uid,
    parse_handshake,
)
from casty.transport.liveness import Liveness, _host
from casty.transport.messages import SendFailure
from casty.transport.stats import NodeStats, PeerRecord, PeerStats, PeerTable
from casty.wire import (
    CAP_FRAGMENTS,
    CAP_HEADERS,
    CAP_HEARTBEAT,
    FRAME_COMPACT,
    FRAME_FRAGMENT,
    FRAME_HDR_ENTRY,
    FRAME_MESSAGE,
)

__all__ = ["MAX_BLACKLIST", "MAX_KNOWN_UIDS", "FrameBodyHandler", "InboundHandler", "NodeListener", "TcpNode"]

log = logging.getLogger("casty.transport.tcp")

#: failed-dial entries kept at most: distinct addresses a peer names must not pile up
MAX_BLACKLIST = 10_000
#: peers' incarnations remembered (to tell a restart): the oldest address is forgotten first
MAX_KNOWN_UIDS = 10_000
#: the sweep runs at least this often (it also expires failed-dial entries)
_MAX_SWEEP_INTERVAL = 60.0




Key = tuple[str, int]
FailureListener = Callable[[SendFailure], None]
#: called on the loop with each NodeUp, NodeDown and NodeRestarted (TcpNode.add_node_listener)
NodeListener = Callable[[NodeEvent], None]

#: a connection whose undeliverable message frames reach this many, and are most of what it
#: sent, is closed: a peer sending only garbage costs decode time and log lines
MAX_BAD_FRAMES = 1024


class FrameBodyHandler(Protocol):
    """What a TcpNode hands every message frame's body to (an encoded envelope).

    The seed page calls this protocol ``InboundHandler`` (kept as an alias); casty's own
    implementation is :class:`~casty.InboundMessageHandler`, which also has the synchronous
    ``on_frame`` the node prefers.
    """

    async def on_message(self, data: bytes) -> None:
        """Handle one inbound message frame body."""


#: the seed page's name for :class:`FrameBodyHandler`
InboundHandler = FrameBodyHandler

#: ``handler(conn, kind, body)`` of a feature's frames (TcpNode.add_feature); ``conn``
#: is the connection's :class:`_Conn`, ``body`` the frame's bytes after the kind byte
FeatureHandler = Callable[["_Conn", int, bytes], None]


class _Conn:
    """Per-connection bookkeeping, kept on ``FrameProtocol.context``.

    It is also the *origin* the inbound handler is told for every frame of the
    connection: ``peer_key`` (what the peer claims to be), ``dial_key`` (what we
    dialed, None for an inbound connection), ``verified`` and :meth:`frame_dropped`.
    """

    __slots__ = (
        "awaiting_proof", "bad_frames", "caps", "carries", "dial_key", "dial_peer", "down_reason", "established",
        "hb_heard", "hb_received", "hb_sent", "headers", "hello", "idle_mark", "inbound", "logged", "node", "nonce",
        "opened", "outbound", "partial_mark", "peer_key", "proto", "rtt", "since", "stats", "superseded", "timer",
        "v1_hold", "verified",
    )

    def __init__(
        self, node: TcpNode, proto: Any, outbound: bool, dial_key: Key | None, dial_peer: _Peer | None = None
    ) -> None:
        self.node = node
        self.proto = proto
        self.outbound = outbound
        self.dial_key = dial_key
        self.dial_peer = dial_peer  # the peer entry an outbound connection was made for
        self.peer_key: Key | None = None
        #: the peer's handshake (its claims), once received
        self.hello: Handshake | None = None
        #: our nonce in a cookie challenge-response
        self.nonce: str | None = None
        #: an inbound connection whose connector has still to prove the cookie
        self.awaiting_proof = False
        #: the peer's claim was proven (cookie, or a TLS client certificate naming its host)
        self.verified = False
        self.established = False
        self.superseded = False
        #: our dial to a casty 0.21 peer that is expected to close it (see _outbound_handshake)
        self.v1_hold = False
        self.timer: asyncio.TimerHandle | None = None
        #: why the connection is closing has been logged already
        self.logged = False
        #: (frames_received, monotonic time) when a sweep first saw the current partial frame
        self.partial_mark: tuple[int, float] | None = None
        #: (traffic counters, monotonic time) when a sweep first saw them as they are
        self.idle_mark: tuple[tuple[int, int, int], float] | None = None
        #: message frames from this connection that could not be delivered
        self.bad_frames = 0
        #: the features both ends listed in their handshakes (empty until established, and for v1)
        self.caps: frozenset[str] = frozenset()
        #: when the connection was made (monotonic): the oldest idle one is closed first at the cap
        self.opened = time.monotonic()
        #: the address (as sends name it) whose traffic this connection carries, once it does:
        #: only such a connection makes node events
        self.carries: Key | None = None
        #: when it began to carry that traffic (wall clock, for TcpNode.nodes)
        self.since = 0.0
        #: why this node closed it (a NodeDown reason), when it knows better than the socket
        self.down_reason: str | None = None
        #: liveness (casty.transport.liveness): the last round-trip time in seconds, and when
        #: (monotonic) the peer was last heard, at what bytes_received and frames_sent counts
        self.rtt: float | None = None
        self.hb_heard: float | None = None
        self.hb_received = 0
        self.hb_sent = 0
        #: the peer's statistics record, from establishment until its counters are folded in
        self.stats: PeerRecord | None = None
        #: cap "hdr": the names we give this connection (a HeaderTable), and the message
        #: sink holding those the peer gives us (an OriginSink); None without it
        self.headers: HeaderTable | None = None
        self.inbound: Any = None

    @property
    def uid(self) -> int | None:
        """The peer's incarnation from its handshake (None for a casty 0.21 peer, or before)."""
        hello = self.hello
        return hello.uid if hello is not None and hello.proto >= 2 else None

    def misbehaving(self, why: str) -> None:
        """The peer broke the protocol on this connection: close it with one line."""
        self.node.misbehaving(self.proto, why)

    def mailbox_full(self, mailbox: Any) -> None:
        """A message of this connection left ``mailbox`` at its capacity: read no more
        from the connection until it has room, so the peer's bounded queue (and the
        drops it reports) takes the pressure instead of this node's memory."""
        proto = self.proto
        if proto.closed:
            return
        proto.pause_reading(mailbox)
        mailbox.on_space(partial(proto.resume_reading, mailbox))

    def frame_dropped(self) -> None:
        """The inbound handler could not decode or deliver a frame of this connection."""
        self.bad_frames += 1
        if self.bad_frames >= MAX_BAD_FRAMES and self.bad_frames * 2 > self.proto.frames_received:
            self.node.misbehaving(self.proto, f"{self.bad_frames} undeliverable message frames")


class _Peer:
    """One remote node: its live connection, or the frames waiting for one."""

    __slots__ = ("connect_task", "connecting", "key", "outbound", "pending", "pending_bytes", "proto")

    def __init__(self, key: Key) -> None:
        self.key = key
        self.proto: Any = None  # established FrameProtocol
        self.outbound: Any = None  # our FrameProtocol still in handshake
        self.connecting = False  # from the first send until established or failed
        self.connect_task: asyncio.Task[None] | None = None
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0


class _OrderedAsyncSink:
    """Feeds an ``async on_message`` handler one body at a time, in arrival order."""

    def __init__(self, handler: FrameBodyHandler) -> None:
        self._handler = handler
        self._queue: deque[bytes] = deque()
        self._task: asyncio.Task[None] | None = None

    def __call__(self, body: Any) -> None:
        self._queue.append(bytes(body))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue:
                body = self._queue.popleft()
                try:
                    await self._handler.on_message(body)
                except Exception:
                    log.exception("inbound handler failed on a message frame")
        finally:
            self._task = None

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


class TcpNode:
    """A node's TCP endpoint: server, peer connections, queues, blacklist.

    ``read_state`` is the ``read_state`` of the LocalTransport ``handler`` delivers
    to (by default ``handler.read_state``, which an InboundMessageHandler has): every
    connection's FrameProtocol sets it, so that the mailboxes there leave the frames
    of a read but its last to their tasks (None: nothing tells them).
    """

    def __init__(
        self,
        config: TcpTransportConfig,
        handler: FrameBodyHandler,
        *,
        logger: logging.Logger | None = None,
        read_state: Any = None,
    ) -> None:
        self.config = config
        # Given to each connection's FrameProtocol (None: each owns one nobody else reads).
        if read_state is None:
            read_state = getattr(handler, "read_state", None)
            if type(read_state) is not ReadState:
                read_state = None  # a handler of one's own, or over the other twin's transport
        self._read_state = read_state
        self.log = logger or log
        on_frame = getattr(handler, "on_frame", None)
        self._async_sink: _OrderedAsyncSink | None = None
        #: ``handler.sink_for(origin)``: a sink that tells the handler which connection a frame came from
        self._bind_origin: Callable[[Any], Callable[[Any], None]] | None = None
        if callable(on_frame):
            self._sink: Callable[[Any], None] = on_frame
            bind = getattr(handler, "sink_for", None)
            self._bind_origin = bind if callable(bind) else None
        else:
            self._async_sink = _OrderedAsyncSink(handler)
            self._sink = self._async_sink
        self._peers: dict[Key, _Peer] = {}
        #: address -> until when (monotonic) dials to it are refused
        self._blacklist: dict[Key, float] = {}
        #: address -> (failed connects in a row, when (monotonic) to forget them): the backoff
        self._failures: dict[Key, tuple[int, float]] = {}
        self._rng = random.Random()
        self._protocols: set[Any] = set()
        self._listeners: list[FailureListener] = []
        self._connect_listeners: list[Callable[[Key], None]] = []
        self._close_listeners: list[Callable[[_Conn], None]] = []
        self._dial_failure_listeners: list[Callable[[Key], None]] = []
        self._node_listeners: list[NodeListener] = []
        #: the last uid seen at each address that carried our traffic (None: a v1 peer), oldest first
        self._known_uids: dict[Key, int | None] = {}
        self._server: asyncio.AbstractServer | None = None
        self._dials: set[asyncio.Task[None]] = set()  # connect calls in progress
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._refused_inbound = 0  # inbound connections closed over max_connections
        self._evicted_inbound = 0  # inbound connections closed to admit others at max_connections
        # Poked on every send when config.busy_poll > 0; None (one attribute check per send) when off.
        self._poller: BusyPoller | None = None
        self._closed = False
        self.started = False
        self.port: int = config.port
        self.advertised: Key = config.self_address or (config.host, config.port)
        #: this node's incarnation, drawn at start: a peer seeing a new one knows we restarted
        self.uid = new_uid()
        self._cookie = cookie_bytes(config)
        self._handshake_frame = b""  # v1, for casty 0.21 peers
        self._hello_frame = b""  # v2, without a challenge
        #: frames not sent, by reason
        self.drops: dict[str, int] = {}
        # Per-peer statistics (stats()): closed connections' counters and drops, bounded.
        self._stats = PeerTable(config.max_peer_stats)
        # The features this node speaks (add_feature): their frame kinds, and who handles those.
        self._features: dict[str, frozenset[int]] = {}
        self._kind_handlers: dict[int, FeatureHandler] = {}
        #: heartbeats and silence (cap "hb"), unless config.heartbeats is off
        self._liveness: Liveness | None = None
        if config.heartbeats:
            self._liveness = Liveness(self, config.heartbeat_interval, config.failure_timeout)
            self.add_feature(CAP_HEARTBEAT, Liveness.KINDS, self._liveness.handle)
        if config.fragment_size:
            self.add_feature(CAP_FRAGMENTS, [FRAME_FRAGMENT], _fragment_frame)
        if config.compact_headers and self._bind_origin is not None and getattr(handler, "compact_headers", False):
            self.add_feature(CAP_HEADERS, (FRAME_HDR_ENTRY, FRAME_COMPACT), self._compact_frame)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Listen (unless ``client_only``) and fix the advertised address."""
        cfg = self.config
        if self.started:
            return
        self.started = True
        if not cfg.client_only:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: self._new_protocol(outbound=False, dial_key=None),
                cfg.host,
                cfg.port,
                ssl=cfg.server_ssl,
                ssl_handshake_timeout=cfg.handshake_timeout if cfg.server_ssl else None,
            )
            self.port = self._server.sockets[0].getsockname()[1]
        if cfg.self_address is None:
            self.advertised = (cfg.host, self.port)
        else:  # a self_address port of 0 stands for the port we really got
            self.advertised = (cfg.self_address[0], cfg.self_address[1] or self.port)
        self._handshake_frame = encode_handshake(*self.advertised)
        self._hello_frame = encode_hello(self._hello())
        self._schedule_sweep()
        if self._liveness is not None:
            self._liveness.start()
        if cfg.busy_poll > 0 and not self._closed:
            # Poking on send is enough for request/response: the requester spins after its
            # request, the responder after its reply, so a steady run of asks never sleeps
            # in epoll_wait on either side.
            self._poller = BusyPoller(asyncio.get_running_loop(), cfg.busy_poll)
        self.log.info(
            "casty TCP node %s on %s:%d (advertised %s:%d%s)",
            "client" if cfg.client_only else "listening",
            cfg.host,
            self.port,
            *self.advertised,
            ", TLS" if cfg.server_ssl else "",
        )

    async def close(self) -> None:
        """Stop listening and close every connection; queued frames are reported."""
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.close()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        if self._liveness is not None:
            self._liveness.close()
        if self._server is not None:
            self._server.close()
        for peer in {id(p): p for p in self._peers.values()}.values():
            if peer.connect_task is not None:
                peer.connect_task.cancel()
            self._drop_pending(peer, "closed", "node shut down")
        tasks = [p.connect_task for p in self._peers.values() if p.connect_task is not None]
        for dial in self._dials:  # including those for peers given up on
            dial.cancel()
        tasks.extend(self._dials)
        self._peers.clear()
        for proto in list(self._protocols):
            # close() hands a paused connection's queue to its transport, which is aborted
            # below if the peer does not drain it: those frames would vanish uncounted.
            # Aborting now counts them as unsent, and they are reported.
            if proto.paused:
                proto.abort()
            else:
                proto.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._async_sink is not None:
            self._async_sink.cancel()
        if self._server is not None:
            await self._server.wait_closed()
        # let connection_lost callbacks of closed transports run
        for proto in list(self._protocols):
            proto.abort()
        await asyncio.sleep(0)

    # -- sending ---------------------------------------------------------------

    def add_connect_listener(self, listener: Callable[[Key], None]) -> None:
        """Call ``listener(key)`` when a connection that carries this node's traffic to
        ``key`` (the address sends name) is established."""
        self._connect_listeners.append(listener)

    def add_close_listener(self, listener: Callable[[_Conn], None]) -> None:
        """Call ``listener(conn)`` when an established connection (either direction) is
        lost, with its :class:`_Conn`: state kept per connection is dropped there."""
        self._close_listeners.append(listener)

    def add_dial_failure_listener(self, listener: Callable[[Key], None]) -> None:
        """Call ``listener(key)`` when a dial to ``key`` fails (it is then blacklisted)."""
        self._dial_failure_listeners.append(listener)

    def connection_to(self, key: Key) -> _Conn | None:
        """The established, open connection carrying this node's traffic to ``key``, else None."""
        peer = self._peers.get(key)
        proto = None if peer is None else peer.proto
        if proto is None or proto.closed:
            return None
        conn: _Conn = proto.context
        return conn

    def dial(self, key: Key) -> bool:
        """Start connecting to ``key`` (nothing queued) unless connected or connecting;
        False, with nothing reported, when no dial is allowed now: shut down, blacklisted,
        refused by ``allow_dial`` or at ``max_connections``."""
        peer = self._peers.get(key)
        if peer is not None and (peer.proto is not None or peer.connecting):
            return True
        if self._closed or self.is_blacklisted(key) or not dial_allowed(self.config.allow_dial, *key):
            return False
        if self.connection_count >= self.config.max_connections:
            return False
        if peer is None:
            peer = self._peers[key] = _Peer(key)
        peer.connecting = True
        self._start_connect(peer, key)
        return True
    def add_node_listener(self, listener: NodeListener) -> Callable[[], None]:
        """Call ``listener(event)`` on the loop with every :class:`~casty.NodeUp`,
        :class:`~casty.NodeDown` and :class:`~casty.NodeRestarted`; returns a function that
        removes it.

        Only a connection carrying this node's traffic makes events (an inbound claim this
        node has not proven makes none): NodeUp when it is established (NodeRestarted first
        when its address last had another uid), NodeDown when it is lost, its ``reason``
        ``"silent"`` (liveness), ``"shutdown"`` (our close()), ``"reset"`` (lost with an
        error) or ``"closed"``.  Events name the address as sends name it.
        """
        self._node_listeners.append(listener)

        def remove() -> None:
            if listener in self._node_listeners:
                self._node_listeners.remove(listener)

        return remove

    def nodes(self) -> list[NodeInfo]:
        """The nodes a connection carrying this node's traffic is established to, by address."""
        out = []
        for proto in self._protocols:
            conn: _Conn = proto.context
            key = conn.carries
            if key is not None and not conn.superseded and not proto.closed:
                out.append(NodeInfo(key[0], key[1], conn.uid, conn.since, conn.rtt))
        return sorted(out, key=lambda n: (n.host, n.port))

    def _emit(self, event: NodeEvent) -> None:
        for listener in list(self._node_listeners):
            try:
                listener(event)
            except Exception:
                self.log.exception("node listener raised on %s", type(event).__name__)

    def _carry(self, conn: _Conn, key: Key) -> None:
        """``conn`` now carries our traffic to ``key``: remember its uid, reset its backoff, tell
        the node listeners."""
        self._reset_backoff(key)
        conn.carries = key
        conn.since = time.time()
        uid = conn.uid
        known = self._known_uids
        had = key in known
        old = known.pop(key, None)
        known[key] = uid  # re-inserted last: the dict's order is the age order
        while len(known) > MAX_KNOWN_UIDS:
            del known[next(iter(known))]
        if not self._node_listeners:
            return
        if had and uid is not None and old != uid:
            self._emit(NodeRestarted(key[0], key[1], old, uid))
        self._emit(NodeUp(key[0], key[1], uid))

    def _lost(self, proto: Any, conn: _Conn, exc: BaseException | None) -> None:
        """A connection is gone: NodeDown when it carried our traffic (and was not replaced)."""
        key = conn.carries
        if key is None or conn.superseded:
            return
        conn.carries = None
        if self._node_listeners:
            reason = conn.down_reason or ("shutdown" if self._closed else "reset" if exc is not None else "closed")
            self._emit(NodeDown(key[0], key[1], conn.uid, reason))

    def is_connected(self, key: Key) -> bool:
        """True when a connection carrying this node's traffic to ``key`` is established."""
        peer = self._peers.get(key)
        return peer is not None and peer.proto is not None

    def add_failure_listener(self, listener: FailureListener) -> None:
        """Call ``listener(SendFailure)`` whenever frames are not sent."""
        self._listeners.append(listener)

    def send_message(self, host: str, port: int, envelope: bytes) -> bool:
        """Send an encoded envelope to host:port; False when it was dropped (and reported)."""
        return self.send_message_to((host, port), envelope)

    def send_message_to(self, key: Key, envelope: bytes | list[bytes], kind: int = FRAME_MESSAGE) -> bool:
        """:meth:`send_message` to ``key`` = (host, port): a caller that keeps the key (a
        route cache) saves building and hashing a new tuple per message.  ``envelope`` may
        be a list of ``bytes`` that joined make it (``EnvelopeWriter.encode_parts``).
        ``kind`` FRAME_COMPACT: a compact message body made with :meth:`header_table`'s
        table in this loop turn, so for the connection established now."""
        if self._poller is not None:
            self._poller.poke()
        peer = self._peers.get(key)
        if peer is not None and peer.proto is not None:  # the hot path: no frame copy here
            return peer.proto.send_message(envelope, kind) or self._write_queue_full(key)
        if kind != FRAME_MESSAGE:
            # Its ids name entries of a connection that is gone; no other may carry it.
            self.report(key, "connection_lost", 1, "compact message for a connection that is gone")
            return False
        if isinstance(envelope, list):
            envelope = b"".join(envelope)  # queued whole until the connection is made
        return self._send(key, encode_frame(FRAME_MESSAGE, envelope))

    def send_frame(self, host: str, port: int, frame_type: int, body: bytes) -> bool:
        """Send a frame of any type to host:port; False when it was dropped (and reported)."""
        if self._poller is not None:
            self._poller.poke()
        return self._send((host, port), encode_frame(frame_type, body))

    def _send(self, key: Key, frame: bytes) -> bool:
        peer = self._peers.get(key)
        if peer is not None and peer.proto is not None:
            return peer.proto.send_frame(frame) or self._write_queue_full(key)
        if self._closed:
            self.report(key, "closed", 1, "node is shut down")
            return False
        if self.is_blacklisted(key):
            self.report(key, "blacklisted", 1, "recent connect failure")
            return False
        if (peer is None or not peer.connecting) and self._dial_refused(key):
            return False
        if peer is None:
            peer = self._peers[key] = _Peer(key)
        # Like the connection's queue, an empty queue takes one frame of any size.
        if peer.pending and peer.pending_bytes + len(frame) > self.config.max_queue_bytes:
            self.report(key, "queue_full", 1, "connect queue full")
            return False
        peer.pending.append(frame)
        peer.pending_bytes += len(frame)
        if not peer.connecting:
            peer.connecting = True
            self._start_connect(peer, key)
        return True

    def _dial_refused(self, key: Key) -> bool:
        """True (and the frame reported) when a new dial to ``key`` is not allowed now."""
        if not dial_allowed(self.config.allow_dial, *key):
            self.report(key, "not_allowed", 1, "allow_dial refuses this address")
            return True
        cap = self.config.max_connections
        if self.connection_count >= cap:
            self.report(key, "connection_limit", 1, f"{cap} connections open (max_connections)")
            return True
        return False

    def _start_connect(self, peer: _Peer, key: Key) -> None:
        peer.connect_task = asyncio.get_running_loop().create_task(self._connect(peer, key))

    @property
    def connection_count(self) -> int:
        """Connections open (any state) plus dials in progress, as ``max_connections`` counts them.

        A dial counts until its connection is made (it is then one of the connections), read
        off the peers' state rather than a counter a task's done-callback lowers later, so a
        connection is never counted twice while those callbacks wait their loop turn.
        """
        dialing = {id(p) for p in self._peers.values() if p.connecting and p.outbound is None and p.proto is None}
        return len(self._protocols) + len(dialing)

    def _write_queue_full(self, key: Key) -> bool:
        self.report(key, "queue_full", 1, "connection write queue full")
        return False

    def is_blacklisted(self, key: Key) -> bool:
        """True while connects to ``key`` are refused after a failure."""
        until = self._blacklist.get(key)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self._blacklist[key]
            return False
        return True

    def clear_blacklist(self, host: str, port: int) -> None:
        """Allow connects to host:port again at once."""
        self._failures.pop((host, port), None)
        if self._blacklist.pop((host, port), None) is not None:
            self.log.info("blacklist cleared for %s:%d", host, port)

    def peer_down(self, host: str, port: int, reason: str = "peer down") -> None:
        """Drop every connection to and from host:port; what was queued for it is reported."""
        peer = self._peers.get((host, port))
        inbound = [p for p in self._protocols if p.context.peer_key == (host, port)]
        if peer is None and not inbound:
            return
        self.log.info("peer %s:%d marked down: %s", host, port, reason)
        if peer is not None:
            self._forget(peer)
            self._drop_pending(peer, "peer_down", reason)
            if peer.connect_task is not None:
                peer.connect_task.cancel()
            for proto in (peer.proto, peer.outbound):
                if proto is not None:
                    proto.abort()
        for proto in inbound:  # and what it dialed to us
            proto.abort()

    def adopt(self, host: str, port: int, connection: Any) -> None:
        """Make ``connection`` (a FrameProtocol whose handshake is done) the one to host:port."""
        peer = self._peers.get((host, port)) or _Peer((host, port))
        self._establish(peer, connection, (host, port))

    @property
    def loop_lag(self) -> float:
        """Seconds the last heartbeat tick fired late (this node's own loop stall); 0.0
        with heartbeats off."""
        return 0.0 if self._liveness is None else self._liveness.loop_lag

    @property
    def busy_poller(self) -> BusyPoller | None:
        """The poller kept busy by sends (``config.busy_poll`` > 0, after start), else None."""
        return self._poller

    @property
    def connected_peers(self) -> list[Key]:
        """The addresses this node sends to over an established connection."""
        return sorted({p.key for p in self._peers.values() if p.proto is not None})

    @property
    def inbound_peers(self) -> list[Key]:
        """What the peers of the established inbound connections claim to be (a claim
        proven or not; one entry per connection)."""
        return sorted(
            p.context.peer_key for p in self._protocols
            if p.context.established and not p.context.outbound
        )

    # -- connecting ------------------------------------------------------------

    async def _connect(self, peer: _Peer, key: Key) -> None:
        host, port = self.config.map_address(key)
        # When this task is cancelled (peer_down, a simultaneous connect the peer won) the
        # connect call itself runs on, shielded: uvloop closes the transport of a
        # create_connection cancelled around connection_made without ever calling
        # connection_lost, which would leave a dead connection here.  A connection made
        # for a peer given up on is closed by frame_connection_made.
        dial = asyncio.get_running_loop().create_task(self._dial(peer, key, host, port))
        self._dials.add(dial)
        dial.add_done_callback(self._dials.discard)
        try:
            await asyncio.shield(dial)
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            self._connect_failed(peer, key, f"connect to {host}:{port} failed: {exc!r}")
        finally:
            peer.connect_task = None

    async def _dial(self, peer: _Peer, key: Key, host: str, port: int) -> None:
        cfg = self.config
        async with asyncio.timeout(cfg.connect_timeout):
            await asyncio.get_running_loop().create_connection(
                lambda: self._new_protocol(outbound=True, dial_key=key, dial_peer=peer),
                host,
                port,
                ssl=cfg.client_ssl,
                server_hostname=host if cfg.client_ssl is not None else None,
            )

    def _connect_failed(self, peer: _Peer, key: Key, reason: str) -> None:
        if peer.proto is not None:
            return  # an inbound connection from that peer won meanwhile
        delay, failures = self._blacklist_add(key)
        self.log.warning("%s; blacklisted for %.2fs (failed connect %d in a row)", reason, delay, failures)
        self._forget(peer)
        self._drop_pending(peer, "connect_failed", reason)
        for listener in self._dial_failure_listeners:
            try:
                listener(key)
            except Exception:
                self.log.exception("dial failure listener raised")

    def _new_protocol(self, *, outbound: bool, dial_key: Key | None, dial_peer: _Peer | None = None) -> Any:
        cfg = self.config
        proto = FrameProtocol(
            self,
            max_frame_size=cfg.max_frame_size,
            write_high_water=cfg.write_high_water,
            write_low_water=cfg.write_low_water,
            max_queue_bytes=cfg.max_queue_bytes,
            max_handshake_size=cfg.max_handshake_size,
            read_budget_frames=cfg.read_budget_frames,
            max_ignored_frames=cfg.max_ignored_frames,
            read_state=self._read_state,
        )
        proto.context = _Conn(self, proto, outbound, dial_key, dial_peer)
        return proto

    # -- FrameProtocol owner callbacks ------------------------------------------

    # -- features (v2 caps) --------------------------------------------------------

    def add_feature(self, cap: str, kinds: Iterable[int], handler: FeatureHandler) -> None:
        """Speak the feature ``cap``: list it in our handshakes, and on each connection whose
        peer lists it too, hand its frames of ``kinds`` to ``handler(conn, kind, body)``.

        Added before :meth:`start` (the handshakes are encoded there).  A handler is
        called on the loop with the peer's bytes: it checks them, and it calls
        :meth:`misbehaving` for a connection that sends what it cannot take.
        """
        if self.started:
            raise RuntimeError(f"feature {cap!r} added after start(): the handshake lists features")
        if not isinstance(cap, str) or not cap or cap in self._features:
            raise ValueError(f"a feature is a new non-empty name, got {cap!r}")
        checked = control_kinds(kinds)
        taken = checked & self._kind_handlers.keys()
        if taken:
            raise ValueError(f"frame kinds {sorted(taken)} of feature {cap!r} belong to another feature")
        self._features[cap] = checked
        for kind in checked:
            self._kind_handlers[kind] = handler

    @property
    def caps(self) -> frozenset[str]:
        """The features this node lists in its handshakes."""
        return frozenset(self._features)

    def _negotiate(self, proto: Any, conn: _Conn, sink: Callable[[Any], None]) -> None:
        """The handshakes are done: use on ``proto`` (whose message sink is ``sink``) the
        features both ends listed."""
        hello = conn.hello
        if hello is None or hello.proto < 2:
            return  # a casty 0.21 peer gets exactly the v1 bytes
        shared = self._features.keys() & hello.caps
        conn.caps = frozenset(shared)
        if CAP_HEADERS in shared:
            conn.headers = HeaderTable(proto)
        if shared:
            proto.set_control_kinds(k for cap in shared for k in self._features[cap])
        if CAP_FRAGMENTS in shared:
            cfg = self.config
            link = FragmentLink(
                proto,
                fragment_size=cfg.fragment_size,
                window=cfg.fragment_window,
                max_message=proto.max_frame_size - 1,
                max_streams=cfg.max_fragment_streams,
                max_bytes=cfg.fragment_bytes_limit,
                deliver=sink,  # the same sink: it holds the peer's compact-header names
                on_error=partial(self.misbehaving, proto),
            )
            if conn.headers is not None:
                link.expand = conn.headers.expand
            proto.set_fragments(link)

    def _compact_frame(self, conn: _Conn, kind: int, body: bytes) -> None:
        """Cap "hdr": an entry, or a compact message the protocol did not hand the sink itself."""
        sink = conn.inbound
        if kind == FRAME_HDR_ENTRY:
            sink.on_entry(body)
        else:
            sink.on_compact(body)

    def header_table(self, key: Key) -> HeaderTable | None:
        """The compact-header table of the connection carrying this node's traffic to
        ``key`` when both ends speak "hdr", else None: a body made with it goes to
        :meth:`send_message_to` with ``FRAME_COMPACT`` at once (the connection may not
        outlive the loop turn)."""
        peer = self._peers.get(key)
        if peer is None or peer.proto is None:
            return None
        headers: HeaderTable | None = peer.proto.context.headers
        return headers

    def connection_table(self) -> Mapping[Key, Any] | None:
        """The node's live routes, read only: key -> peer, whose ``proto`` is the established
        connection carrying this node's traffic to that key, or None.  The same object for
        the node's life: a sender may keep it and write to ``proto`` (``send_message``) what
        :meth:`send_message_to` would, saving that call per message.  None when the node
        busy-polls: every send must go through send_message_to, which pokes the poller."""
        return self._peers if self.config.busy_poll <= 0 else None

    def frame_control(self, proto: Any, kind: int, body: Any) -> None:
        """A frame of a negotiated feature's kind: to that feature's handler."""
        self._kind_handlers[kind](proto.context, kind, body)

    def _hello(self, nonce: str | None = None, mac: str | None = None) -> Handshake:
        host, port = self.advertised
        return Handshake(host, port, self.uid, 2, self.caps, nonce, mac)

    def frame_connection_made(self, proto: Any) -> None:
        if self._closed:
            proto.abort()
            return
        if not proto.context.outbound and self._over_connection_limit(proto):
            return
        self._protocols.add(proto)
        conn: _Conn = proto.context
        conn.timer = asyncio.get_running_loop().call_later(
            self.config.handshake_timeout, self._handshake_timed_out, proto
        )
        if conn.outbound:
            assert conn.dial_key is not None
            peer = self._peers.get(conn.dial_key)
            if peer is None or peer is not conn.dial_peer or peer.proto is not None:
                proto.close()  # forgotten, replaced or superseded while connecting
                return
            peer.outbound = proto
            if self._cookie is not None:
                conn.nonce = new_nonce()
                proto.send_frame(encode_hello(self._hello(conn.nonce)))
            else:
                proto.send_frame(self._hello_frame)

    def _over_connection_limit(self, proto: Any) -> bool:
        """At ``max_connections``, make room for an inbound connection by closing the least
        active inbound one that carries none of this node's traffic (False: admitted), or
        close the new one before it holds anything (True) when there is none.

        Without the eviction, one peer holding idle connections up to the cap would shut
        every other peer out; with it, idle connections go first and one that delivers
        frames, or that this node sends over, is kept.
        """
        cap = self.config.max_connections
        if self.connection_count < cap:
            return False
        victim = self._least_active_inbound()
        if victim is not None:
            victim.context.logged = True
            self._evicted_inbound += 1
            n = self._evicted_inbound
            if n & (n - 1) == 0:
                self.log.warning(
                    "closed the least active inbound connection, from %s (%d frames), to admit "
                    "another: %d connections open (max_connections %d); %d closed so far",
                    _show(victim.peername, 100), victim.frames_received, self.connection_count, cap, n,
                )
            victim.abort()
            return False
        proto.context.logged = True
        self._refused_inbound += 1
        n = self._refused_inbound
        if n & (n - 1) == 0:  # at powers of two: a flood of connects is a few lines
            self.log.warning(
                "refused an inbound connection from %s: %d connections open (max_connections %d); "
                "%d refused so far",
                _show(proto.peername, 100), self.connection_count, cap, n,
            )
        proto.abort()
        return True

    def _least_active_inbound(self) -> Any:
        """The inbound connection, not carrying this node's traffic, that delivered the fewest
        frames (the oldest of those), or None."""
        carrying = {id(p.proto) for p in self._peers.values() if p.proto is not None}
        best: Any = None
        for proto in self._protocols:
            conn: _Conn = proto.context
            if conn.outbound or id(proto) in carrying or proto.closed:
                continue
            if best is None or (proto.frames_received, conn.opened) < (best.frames_received, best.context.opened):
                best = proto
        return best

    def _handshake_timed_out(self, proto: Any) -> None:
        proto.context.logged = True
        self.log.warning(
            "no handshake from %s within %.1fs; closing", proto.peername, self.config.handshake_timeout
        )
        proto.abort()

    def _refuse(self, proto: Any, why: str) -> None:
        proto.context.logged = True
        self.log.warning("handshake from %s refused: %s; closing", proto.peername, why)
        proto.abort()

    def frame_handshake(self, proto: Any, body: Any) -> None:
        conn: _Conn = proto.context
        if conn.established or conn.v1_hold:
            self.log.debug("ignoring a repeated handshake from %s", proto.peername)
            return
        try:
            hello = parse_handshake(body)
        except HandshakeError as exc:
            self.log.warning("bad handshake from %s: %s; closing", proto.peername, exc)
            conn.logged = True
            proto.abort()
            return
        if conn.awaiting_proof:
            self._inbound_proof(proto, conn, hello)
            return
        if self._cookie is not None and hello.nonce is None:
            self._refuse(proto, "this node requires the cookie handshake, which the peer did not offer")
            return
        if conn.outbound:
            self._outbound_handshake(proto, conn, hello)
        else:
            self._inbound_handshake(proto, conn, hello)

    def _inbound_handshake(self, proto: Any, conn: _Conn, hello: Handshake) -> None:
        tls = _tls_claim(proto, hello.host)
        if tls is False:
            self._refuse(proto, f"its TLS certificate does not name the host it claims, {hello.host}")
            return
        conn.hello = hello
        conn.verified = tls is True
        if self._cookie is not None:
            assert hello.nonce is not None
            conn.nonce = new_nonce()
            conn.awaiting_proof = True
            mine = self._hello(conn.nonce)
            mac = handshake_mac(self._cookie, "accept", hello.nonce, conn.nonce, mine)
            proto.send_frame(encode_hello(self._hello(conn.nonce, mac)))
            return  # established once the connector's proof arrives
        self._cancel_timer(conn)
        proto.send_frame(self._hello_frame if hello.proto >= 2 else self._handshake_frame)
        self._accept(proto, conn)

    def _inbound_proof(self, proto: Any, conn: _Conn, proof: Handshake) -> None:
        first = conn.hello
        assert self._cookie is not None and first is not None and first.nonce is not None
        assert conn.nonce is not None
        expected = handshake_mac(self._cookie, "connect", conn.nonce, first.nonce, first)
        if proof.key != first.key or proof.uid != first.uid or not macs_equal(proof.mac, expected):
            self._refuse(proto, "it could not prove the cluster cookie")
            return
        conn.awaiting_proof = False
        conn.verified = True
        self._cancel_timer(conn)
        self._accept(proto, conn)

    def _accept(self, proto: Any, conn: _Conn) -> None:
        """An inbound connection is established: its frames are delivered.

        It carries this node's traffic to the address it claims only when that claim is
        proven, or names port 0 (a client-only node, which nobody can dial), and no other
        connection holds that address: an inbound claim never displaces a connection,
        and an unproven one never receives traffic meant for the address it names.  The
        one exception is a new incarnation (:meth:`_new_incarnation`): its proven claim
        replaces the connection to the old one.
        """
        assert conn.hello is not None
        key = conn.hello.key
        conn.established = True
        conn.peer_key = key
        self._attach_stats(conn)
        sink = self._sink_for(conn)
        proto.set_message_sink(sink)
        self._negotiate(proto, conn, sink)
        carries = (conn.verified or key[1] == 0) and key != self.advertised
        peer = self._peers.get(key)
        if carries and peer is not None and peer.proto is not None and self._new_incarnation(peer.proto, conn, key):
            old = peer.proto
            self.log.warning(
                "%s:%d came back as a new incarnation (uid %d, was %d): its connection replaces the old one",
                key[0], key[1], conn.uid, old.context.uid,
            )
            # No NodeDown for the old one: the NodeRestarted _carry makes ends its watches and asks.
            old.context.superseded = True
            old.abort()
            peer.proto = None
        if carries and (peer is None or (peer.proto is None and not peer.connecting)):
            peer = self._peers[key] = peer or _Peer(key)
            peer.proto = proto
            self.log.info("connected to %s:%d (inbound, %s)", key[0], key[1],
                          "verified" if conn.verified else "client-only")
            self._flush_pending(peer, proto, key)
            self._tell_connected(key)
            self._carry(conn, key)
        else:
            self.log.info("connection from %s:%d (inbound, receive only)", key[0], key[1])

    @staticmethod
    def _new_incarnation(old: Any, conn: _Conn, key: Key) -> bool:
        """Whether ``conn``, an inbound connection proving its claim to ``key`` (verified, not
        client-only), comes from a new incarnation of the node whose connection ``old`` carries
        our traffic to ``key``: both uids known and different.  The old process is then gone
        and its connection half-open (nothing read from it will come), so the new one carries."""
        held: _Conn = old.context
        return (
            conn.verified and key[1] != 0 and held.carries == key
            and conn.uid is not None and held.uid is not None and conn.uid != held.uid
        )

    def _outbound_handshake(self, proto: Any, conn: _Conn, hello: Handshake) -> None:
        assert conn.dial_key is not None
        peer = self._peers.get(conn.dial_key)
        if peer is None or peer.outbound is not proto or peer.proto is not None:
            proto.close()  # superseded while the handshake was in flight
            return
        if self._cookie is not None:
            assert conn.nonce is not None and hello.nonce is not None
            expected = handshake_mac(self._cookie, "accept", conn.nonce, hello.nonce, hello)
            if not macs_equal(hello.mac, expected):
                self._refuse(proto, "it could not prove the cluster cookie")
                return
            mine = self._hello()
            proof = handshake_mac(self._cookie, "connect", hello.nonce, conn.nonce, mine)
            proto.send_frame(encode_hello(self._hello(mac=proof)))
            conn.verified = True
        self._cancel_timer(conn)
        conn.hello = hello
        if hello.proto < 2 and self._v1_keeps_its_own(conn.dial_key, hello):
            # casty 0.21 keeps one connection per pair: holding its own connection to us,
            # and its address the smaller, it closes ours after its handshake, unread.
            # Nothing goes out on it meanwhile; its close hands our queue to its connection
            # (frame_connection_lost), and if it keeps ours after all, ours carries it.
            conn.v1_hold = True
            conn.peer_key = hello.key
            proto.set_message_sink(self._sink_for(conn))  # what we dialed may still talk
            conn.timer = asyncio.get_running_loop().call_later(
                self.config.handshake_timeout, self._v1_hold_over, proto
            )
            self.log.debug("%s:%d answered in v1 and has its own connection here: waiting for it to "
                           "close ours", *hello.key)
            return
        peer.outbound = None
        self._establish(peer, proto, hello.key)

    def _v1_claimant(self, key: Key) -> Any:
        """The established inbound v1 connection claiming ``key``, when exactly one does; else None."""
        found = None
        for proto in self._protocols:
            conn: _Conn = proto.context
            hello = conn.hello
            if (conn.outbound or not conn.established or conn.peer_key != key or hello is None
                    or hello.proto >= 2 or proto.closed):
                continue
            if found is not None:
                return None  # two claim it: which is the node we dialed cannot be told
            found = proto
        return found

    def _v1_keeps_its_own(self, dial_key: Key, hello: Handshake) -> bool:
        """Whether a casty 0.21 node at ``dial_key`` (its v1 answer: ``hello``) will close our dial.

        It does when it holds a connection to our address and its own (host, port) is the
        smaller (0.21's ``resolve_race``: the connection dialed by the smaller one stays).
        """
        return hello.key == dial_key and hello.key < self.advertised and self._v1_claimant(dial_key) is not None

    def _v1_hold_over(self, proto: Any) -> None:
        """The casty 0.21 peer kept our dial after all: it carries our traffic."""
        conn: _Conn = proto.context
        conn.timer = None
        conn.v1_hold = False
        assert conn.dial_key is not None and conn.hello is not None
        peer = self._peers.get(conn.dial_key)
        if peer is None or peer.outbound is not proto or peer.proto is not None:
            proto.close()  # given up on or superseded meanwhile
            return
        peer.outbound = None
        self._establish(peer, proto, conn.hello.key)

    def _adopt_v1_inbound(self, peer: _Peer, key: Key) -> bool:
        """Our held dial to the casty 0.21 peer ``key`` was closed by it: send over its own
        connection (the one inbound v1 connection claiming ``key``), if it is still there."""
        proto = self._v1_claimant(key)
        if proto is None:
            return False
        peer.proto = proto
        peer.connecting = False
        self._peers[key] = peer
        self.log.info("connected to %s:%d (casty 0.21 closed our connection and keeps its own: "
                      "sending over that one)", *key)
        self._flush_pending(peer, proto, key)
        self._carry(proto.context, key)
        return True

    def _cancel_timer(self, conn: _Conn) -> None:
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def _sink_for(self, conn: _Conn) -> Callable[[Any], None]:
        """The message sink of one connection: the handler told which connection it is."""
        bind = self._bind_origin
        if bind is None:
            return self._sink
        sink = bind(conn)
        conn.inbound = getattr(sink, "__self__", None)  # the OriginSink, which holds the peer's names (cap "hdr")
        return sink

    def _abandon_outbound(self, peer: _Peer) -> None:
        if peer.connect_task is not None:
            peer.connect_task.cancel()
            peer.connect_task = None
        if peer.outbound is not None:
            peer.outbound.context.superseded = True
            peer.outbound.abort()
            peer.outbound = None

    def _establish(self, peer: _Peer, proto: Any, key: Key) -> None:
        """Make ``proto`` the connection carrying this node's traffic for ``peer``.

        ``key`` is the address the peer claims: it is an alias of ``peer`` (and the
        queues merge) only when the claim is proven (cookie); otherwise traffic goes
        only to the address dialed, whatever the node there says it is.
        """
        conn: _Conn = proto.context
        old = peer.proto
        if old is not None and old is not proto:
            self.log.info("new connection to %s:%d replaces the old one", key[0], key[1])
            old.context.superseded = True
            old.close()
        peer.proto = proto
        peer.connecting = False
        conn.established = True
        conn.peer_key = key
        if conn.verified and key != peer.key:
            other = self._peers.get(key)
            if other is None:
                self._peers[key] = peer  # alias: the proven name of the address we dialed
            elif other is not peer and other.proto is None:
                # The same node known under another address: one peer, queues merged in order.
                peer.pending.extend(other.pending)
                peer.pending_bytes += other.pending_bytes
                other.pending.clear()
                other.pending_bytes = 0
                self._abandon_outbound(other)
                for k, p in list(self._peers.items()):
                    if p is other:
                        self._peers[k] = peer
        self._peers[peer.key] = peer
        self._attach_stats(conn)
        sink = self._sink_for(conn)
        proto.set_message_sink(sink)
        self._negotiate(proto, conn, sink)
        self.log.info("connected to %s:%d (outbound)", key[0], key[1])
        self._flush_pending(peer, proto, key)
        self._tell_connected(peer.key)
        self._carry(conn, peer.key)

    def _flush_pending(self, peer: _Peer, proto: Any, key: Key) -> None:
        if peer.pending:
            pending, peer.pending = peer.pending, deque()
            peer.pending_bytes = 0
            lost = sum(1 for frame in pending if not proto.send_frame(frame))
            if lost:
                self.report(key, "queue_full", lost, "connection write queue full")

    def _tell_connected(self, key: Key) -> None:
        for listener in self._connect_listeners:
            try:
                listener(key)
            except Exception:
                self.log.exception("connect listener raised")

    def claimed_by(self, key: Key) -> Key | None:
        """What the node this node dialed at ``key`` says it is, while connected; else None."""
        peer = self._peers.get(key)
        if peer is None or peer.proto is None:
            return None
        conn: _Conn = peer.proto.context
        return conn.peer_key

    def misbehaving(self, proto: Any, why: str) -> None:
        """Close ``proto`` for what its peer sent, with one warning line."""
        conn: _Conn = proto.context
        if conn.logged or proto.closed:
            return
        conn.logged = True
        self.log.warning("closing the connection from %s: %s", proto.peername, why)
        proto.abort()

    def frame_message(self, proto: Any, body: Any) -> None:
        proto.context.logged = True
        self.log.warning("message frame before handshake from %s; closing", proto.peername)
        proto.abort()

    def frame_error(self, proto: Any, reason: str) -> None:
        # The protocol logs the violation itself (one line per bad connection).
        proto.context.logged = True
        self.log.debug("connection to %s closed by the framing layer: %s", proto.peername, reason)

    def frame_connection_lost(self, proto: Any, exc: BaseException | None, unsent: int) -> None:
        try:
            self._connection_lost(proto, exc, unsent)
        finally:
            # After the tables are updated: a listener that sends finds the peer gone.
            conn: _Conn = proto.context
            if conn.established:
                for listener in self._close_listeners:
                    try:
                        listener(conn)
                    except Exception:
                        self.log.exception("close listener raised")

    def _connection_lost(self, proto: Any, exc: BaseException | None, unsent: int) -> None:
        self._protocols.discard(proto)
        conn: _Conn = proto.context
        self._fold_stats(conn)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        self._lost(proto, conn, exc)
        # What the connection is filed under: the address dialed, or the one an inbound peer claims.
        key = conn.dial_key if conn.outbound else conn.peer_key
        if not conn.established:
            unsent = 0  # only our handshake waits on a connection before then, no message
        if conn.superseded or key is None:
            if unsent:
                self.report(key or ("?", 0), "connection_lost", unsent, "superseded connection")
            return
        peer = self._peers.get(key)
        if peer is None or (peer.proto is not proto and peer.outbound is not proto):
            if conn.established and not conn.outbound:  # a receive-only inbound connection
                # Info: none of this node's traffic was on it (a peer that dialed us left).
                (self.log.debug if conn.logged else self.log.info)(
                    "connection from %s:%d lost%s", *key, f": {exc!r}" if exc else ""
                )
            if unsent:  # dropped from our table already (peer_down), and a new send came since
                self.report(key, "connection_lost", unsent, repr(exc) if exc else "connection closed")
            return
        if peer.proto is proto:
            peer.proto = None
            # Once: a connection we closed for cause was logged saying why.
            (self.log.debug if conn.logged else self.log.warning)(
                "connection to %s:%d lost%s", *key, f": {exc!r}" if exc else ""
            )
            if unsent:
                self.report(key, "connection_lost", unsent, repr(exc) if exc else "connection closed")
            self._forget(peer)
        else:  # our dial, still in its handshake
            peer.outbound = None
            if conn.v1_hold and self._adopt_v1_inbound(peer, key):
                return
            reason = f"handshake with {key[0]}:{key[1]} failed: {exc!r}" if exc else (
                f"{key[0]}:{key[1]} closed the connection during the handshake"
            )
            self._connect_failed(peer, key, reason)

    # -- statistics ----------------------------------------------------------------

    def _attach_stats(self, conn: _Conn) -> None:
        """An established connection counts for its peer: the address dialed, or the one
        an inbound peer claims (what frame_connection_lost files it under too)."""
        key = conn.dial_key if conn.outbound else conn.peer_key
        if conn.stats is not None or key is None:
            return
        rec = conn.stats = self._stats.record(key)
        rec.live += 1
        if conn.outbound:
            rec.outbound += 1
        else:
            rec.inbound += 1

    def _fold_stats(self, conn: _Conn) -> None:
        """A connection closed: its counters go into its peer's totals (nothing is lost)."""
        rec = conn.stats
        if rec is None:
            return
        conn.stats = None
        rec.fold(conn.proto, conn.rtt)
        key = conn.dial_key if conn.outbound else conn.peer_key
        if key is not None and self._stats.get(key) is rec:
            self._stats.record(key)  # touched: it was active just now

    def stats(self) -> NodeStats:
        """A snapshot of this node's statistics (see :class:`~casty.transport.stats.NodeStats`).

        It reads the counters the connections keep anyway: the cost is in this call
        (linear in peers and connections), none on the path of a message.
        """
        now = time.monotonic()
        live: dict[int, list[Any]] = {}
        for proto in self._protocols:
            rec = proto.context.stats
            if rec is not None:
                live.setdefault(id(rec), []).append(proto)
        pending: dict[Key, int] = {}
        for peer in self._peers.values():  # an alias names the same peer: counted once, under its key
            pending[peer.key] = peer.pending_bytes
        table = self._stats
        keys = list(table.keys())
        keys.extend(k for k in pending if table.get(k) is None)
        peers: dict[Key, PeerStats] = {}
        for key in keys:
            rec = table.get(key) or PeerRecord()
            protos = live.get(id(rec), [])
            protos.sort(key=lambda p: not p.context.outbound)  # our dial's round trip first
            rtt = next((r for p in protos if (r := p.context.rtt) is not None), rec.rtt)
            last = max([rec.last_received, *(p.last_received for p in protos)])
            peers[key] = PeerStats(
                host=key[0],
                port=key[1],
                messages_sent=rec.messages_sent + sum(p.messages_sent for p in protos),
                messages_received=rec.messages_received + sum(p.messages_received for p in protos),
                bytes_sent=rec.bytes_sent + sum(p.bytes_sent for p in protos),
                bytes_received=rec.bytes_received + sum(p.bytes_received for p in protos),
                drops=dict(rec.drops),
                queued_bytes=pending.get(key, 0) + sum(p.queued_bytes for p in protos),
                reconnects=max(rec.outbound - 1, 0) + max(rec.inbound - 1, 0),
                connections=len(protos),
                rtt=rtt,
                seconds_since_received=max(now - last, 0.0) if last > 0.0 else None,
            )
        return NodeStats(
            peers=peers,
            drops=dict(self.drops),
            local_drops={},
            inbound_dropped=0,
            loop_lag=self.loop_lag,
            peers_evicted=table.evicted,
        )

    # -- slow-frame sweep -------------------------------------------------------

    def _schedule_sweep(self) -> None:
        cfg = self.config
        if not self._closed:
            interval = min(cfg.frame_timeout / 4, cfg.idle_timeout / 4, _MAX_SWEEP_INTERVAL)
            self._sweep_timer = asyncio.get_running_loop().call_later(max(interval, 0.01), self._sweep)

    def _sweep(self) -> None:
        """Close every connection whose partial frame is older than ``frame_timeout``,
        and every established one idle for ``idle_timeout``; expire failed-dial entries.

        A partial frame is timed from the sweep that first sees it (at most a quarter
        of the timeout after its first byte): it is never cut before ``frame_timeout``
        and never lasts past 1.5x.  Its identity is the count of frames received
        before it, so a steady stream of frames is never mistaken for one slow frame.
        A connection whose reading this node holds (``reading_paused``) is neither.
        """
        try:
            now = time.monotonic()
            limit = self.config.frame_timeout
            self._expire_blacklist(now)
            for proto in list(self._protocols):
                conn: _Conn = proto.context
                if proto.reading_paused:  # we stopped reading: the peer is not the slow one
                    conn.partial_mark = conn.idle_mark = None
                    continue
                if conn.established and self._idle_too_long(proto, conn, now):
                    continue
                partial = proto.partial_bytes
                if not partial:
                    conn.partial_mark = None
                    continue
                mark = conn.partial_mark
                received = proto.frames_received
                if mark is None or mark[0] != received:
                    conn.partial_mark = (received, now)
                elif now - mark[1] >= limit and not proto.closed:
                    conn.logged = True
                    self.log.warning(
                        "frame from %s not complete within %.1fs (%d bytes in); closing",
                        proto.peername, limit, partial,
                    )
                    proto.abort()
        finally:
            self._schedule_sweep()

    def _idle_too_long(self, proto: Any, conn: _Conn, now: float) -> bool:
        """Close ``proto`` (True) when no byte went either way since ``idle_timeout`` ago."""
        limit = self.config.idle_timeout
        if not math.isfinite(limit):
            return False
        traffic = (proto.frames_received, proto.partial_bytes, proto.frames_sent)
        mark = conn.idle_mark
        if mark is None or mark[0] != traffic:
            conn.idle_mark = (traffic, now)
            return False
        if now - mark[1] < limit or proto.closed:
            return False
        conn.logged = True
        key = conn.peer_key or ("?", 0)
        self.log.info(
            "connection to %s:%d idle for %.1fs (idle_timeout); closing", _host(key[0]), key[1], limit
        )
        proto.close()
        return True

    # -- failed dials ---------------------------------------------------------------

    def _blacklist_add(self, key: Key) -> tuple[float, int]:
        """Refuse dials to ``key`` for the backoff of one more failure in a row; returns
        (that delay, the failures in a row).  Both tables keep MAX_BLACKLIST entries at
        most, the oldest out first."""
        cfg = self.config
        now = time.monotonic()
        failures = self._failures.pop(key, (0, 0.0))[0] + 1  # re-inserted last: age order
        delay = backoff_delay(failures, cfg.blacklist_duration, cfg.reconnect_backoff_max, self._rng)
        until = now + delay
        # Failures in a row are forgotten once no dial failed for the longest wait after this one.
        self._failures[key] = (failures, until + max(cfg.reconnect_backoff_max, cfg.blacklist_duration))
        bl = self._blacklist
        bl.pop(key, None)
        bl[key] = until
        for table in (bl, self._failures):
            while len(table) > MAX_BLACKLIST:
                del table[next(iter(table))]
        return delay, failures

    def _reset_backoff(self, key: Key) -> None:
        """A handshake with ``key`` succeeded: its next failure waits the first delay again."""
        if self._failures:
            self._failures.pop(key, None)

    def _expire_blacklist(self, now: float) -> None:
        bl = self._blacklist
        for key in [k for k, until in bl.items() if until <= now]:
            del bl[key]
        failures = self._failures
        for key in [k for k, (_, forget) in failures.items() if forget <= now]:
            del failures[key]

    # -- bookkeeping -------------------------------------------------------------

    def _forget(self, peer: _Peer) -> None:
        for k, p in list(self._peers.items()):
            if p is peer:
                del self._peers[k]
        peer.connecting = False

    def _drop_pending(self, peer: _Peer, reason: str, detail: str) -> None:
        if peer.pending:
            n = len(peer.pending)
            peer.pending.clear()
            peer.pending_bytes = 0
            self.report(peer.key, reason, n, detail)

    def report(self, key: Key, reason: str, count: int, detail: str) -> None:
        """Count, log and pass on to the failure listeners ``count`` unsent messages for ``key``."""
        total = self.drops.get(reason, 0) + count
        self.drops[reason] = total
        self._stats.charge(key, reason, count)
        if (total & (total - 1)) == 0 or count > 1:
            self.log.warning(
                "dropped %d message(s) for %s:%d (%s: %s); %d dropped for this reason so far",
                count, _host(key[0]), key[1], reason, detail, total,
            )
        failure = SendFailure(key[0], key[1], reason, count, detail)
        for listener in self._listeners:
            try:
                listener(failure)
            except Exception:
                self.log.exception("send-failure listener raised")


def _fragment_frame(conn: _Conn, kind: int, body: bytes) -> None:
    """Cap "frag": a fragment or an ack from the peer, to the connection's FragmentLink."""
    conn.proto.fragments.on_frame(body)


def _tls_claim(proto: Any, host: str) -> bool | None:
    """Whether the peer's TLS client certificate names ``host``: None when the connection
    has no client certificate (no TLS, or the server does not ask for one)."""
    transport = proto.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    try:
        want: Any = ipaddress.ip_address(host)
    except ValueError:
        want = host.rstrip(".").lower()
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "IP Address" and not isinstance(want, str):
            try:
                if ipaddress.ip_address(value.strip()) == want:
                    return True
            except ValueError:
                continue
        elif kind == "DNS" and isinstance(want, str):
            name = value.rstrip(".").lower()
            if name == want or (
                name.startswith("*.") and "." in want and want.split(".", 1)[1] == name[2:]
            ):
                return True
    return False
