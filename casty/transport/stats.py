"""Per-node statistics: what :meth:`TcpNode.stats` and ``RemoteActorSystem.stats()`` return.

The counting itself costs nothing per message beyond what the framing protocol
already did: each connection's :class:`~casty.transport.framing.FrameProtocol`
keeps plain integer counters (``messages_sent``, ``bytes_sent``, ...), and the node
reads them only when asked.  When a connection closes, its counters are added to
its peer's :class:`PeerRecord`, so a reconnect loses nothing.  Drops are charged to
a peer where the node reports them (never on the send path of a message that goes
out).

Peers are chosen by others (an inbound peer names the address it claims), so the
records are bounded: :class:`PeerTable` keeps at most ``limit`` of them and lets go
of the one idle longest, skipping those with an open connection.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NodeStats", "PeerRecord", "PeerStats", "PeerTable"]

Key = tuple[str, int]


@dataclass(frozen=True)
class PeerStats:
    """One peer's counters, as of the :class:`NodeStats` snapshot that holds them.

    Counts are of frames accepted for sending (``messages_sent``, ``bytes_sent``: headers
    included, handshakes and control frames in the bytes) and frames received, over every
    connection with the peer, closed ones included.  ``drops`` counts this node's
    messages for the peer that were not sent, by reason (see ``SendFailure.reason``).
    ``queued_bytes`` waits to go out (connect queue and write queues).  ``reconnects``
    counts connections established after the first, in each direction.  ``rtt`` is the
    last heartbeat round trip in seconds (None until one is measured);
    ``seconds_since_received`` is None until a byte arrived.
    """

    host: str
    port: int
    messages_sent: int
    messages_received: int
    bytes_sent: int
    bytes_received: int
    drops: Mapping[str, int] = field(hash=False)
    queued_bytes: int
    reconnects: int
    #: connections open with the peer now (either direction)
    connections: int
    rtt: float | None
    seconds_since_received: float | None

    @property
    def dropped(self) -> int:
        """Messages for this peer not sent, all reasons."""
        return sum(self.drops.values())


@dataclass(frozen=True)
class NodeStats:
    """A snapshot of one node's statistics.

    ``peers`` maps (host, port) to :class:`PeerStats`: the address this node sends to
    for a peer it dialed, the address an inbound peer claims for one that dialed it.
    ``drops`` is the node's send drops by reason, all peers together (including peers
    whose record was let go: ``peers_evicted`` counts those).  ``local_drops`` are the
    LocalTransport's (messages to actors of this node not delivered) and
    ``inbound_dropped`` the inbound message frames that could not be decoded or
    delivered; both are empty or 0 from a bare :class:`TcpNode`.  ``loop_lag`` is how
    late this node's event loop last ran a timer, in seconds (0.0 where not measured).
    """

    peers: Mapping[Key, PeerStats] = field(hash=False)
    drops: Mapping[str, int] = field(hash=False)
    local_drops: Mapping[str, int] = field(hash=False)
    inbound_dropped: int
    loop_lag: float
    peers_evicted: int

    @property
    def messages_sent(self) -> int:
        """Messages sent to every peer."""
        return sum(p.messages_sent for p in self.peers.values())

    @property
    def messages_received(self) -> int:
        """Messages received from every peer."""
        return sum(p.messages_received for p in self.peers.values())


class PeerRecord:
    """The running totals of one peer: closed connections' counters and its drops."""

    __slots__ = (
        "bytes_received", "bytes_sent", "drops", "inbound", "last_received", "live", "messages_received",
        "messages_sent", "outbound", "rtt",
    )

    def __init__(self) -> None:
        self.messages_sent = 0
        self.messages_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.drops: dict[str, int] = {}
        #: connections established: dialed by this node, and dialed by the peer
        self.outbound = 0
        self.inbound = 0
        #: connections attached and not yet folded in (a record with some is never let go)
        self.live = 0
        self.rtt: float | None = None
        #: time.monotonic() of the last byte received (0.0: none yet)
        self.last_received = 0.0

    def fold(self, proto: Any, rtt: float | None) -> None:
        """Add the counters of ``proto``, a connection of this peer that closed."""
        self.messages_sent += proto.messages_sent
        self.messages_received += proto.messages_received
        self.bytes_sent += proto.bytes_sent
        self.bytes_received += proto.bytes_received
        self.last_received = max(self.last_received, proto.last_received)
        if rtt is not None:
            self.rtt = rtt
        self.live -= 1


class PeerTable:
    """At most ``limit`` :class:`PeerRecord` by (host, port), the one idle longest let go first.

    A record is touched (made the newest) when it is looked up: when a connection with
    the peer is established or closes, and when a drop is charged to it.  One with an
    open connection is never let go, so the table holds at most ``limit`` plus the
    open connections' records.

    >>> table = PeerTable(2)
    >>> for port in (1, 2, 3):
    ...     table.record(("h", port)).messages_sent = port
    >>> sorted(k[1] for k in table.keys()), table.evicted
    ([2, 3], 1)
    """

    __slots__ = ("_records", "evicted", "limit")

    def __init__(self, limit: int) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"PeerTable limit must be a positive int, got {limit!r}")
        self.limit = limit
        self._records: OrderedDict[Key, PeerRecord] = OrderedDict()
        #: records let go to stay within the limit
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._records)

    def keys(self) -> Iterator[Key]:
        return iter(self._records)

    def items(self) -> Iterator[tuple[Key, PeerRecord]]:
        return iter(self._records.items())

    def get(self, key: Key) -> PeerRecord | None:
        """The record of ``key``, untouched, or None."""
        return self._records.get(key)

    def record(self, key: Key) -> PeerRecord:
        """The record of ``key``, made the newest (created, and the oldest idle one let go
        past the limit, when there is none)."""
        records = self._records
        rec = records.get(key)
        if rec is not None:
            records.move_to_end(key)
            return rec
        rec = records[key] = PeerRecord()
        if len(records) > self.limit:
            self._evict(key)
        return rec

    def charge(self, key: Key, reason: str, count: int) -> None:
        """Count ``count`` drops of ``reason`` for ``key``."""
        drops = self.record(key).drops
        drops[reason] = drops.get(reason, 0) + count

    def _evict(self, newest: Key) -> None:
        records = self._records
        for key, rec in records.items():  # oldest first
            if rec.live <= 0 and key != newest:
                del records[key]
                self.evicted += 1
                return
        # Every other record has an open connection: those are bounded by max_connections.
