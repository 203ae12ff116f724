"""What a node learns about its peers: frozen events, in one neutral module.

A :class:`NodeUp` when a connection carrying this node's traffic to a peer completes
its handshake, a :class:`NodeDown` when the peer is lost (``reason`` says how), a
:class:`NodeRestarted` when a peer at a known ``host:port`` answers with a new
incarnation ``uid``.  A casty 0.21 (v1) peer has no uid: its events carry ``uid=None``.

>>> NodeDown("10.0.0.2", 7001, 42, "silent")
NodeDown(host='10.0.0.2', port=7001, uid=42, reason='silent')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NodeDown", "NodeEvent", "NodeInfo", "NodeRestarted", "NodeUp"]


@dataclass(frozen=True, slots=True)
class NodeUp:
    """A peer node is connected (``uid``: its incarnation, None for a v1 peer)."""

    host: str
    port: int
    uid: int | None


@dataclass(frozen=True, slots=True)
class NodeDown:
    """A peer node is lost; ``reason`` is one of ``"silent"`` (no byte for
    ``failure_timeout``), ``"closed"``, ``"reset"``, ``"refused"``, ``"shutdown"``..."""

    host: str
    port: int
    uid: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class NodeRestarted:
    """The node at ``host:port`` is a new process: its uid changed."""

    host: str
    port: int
    old_uid: int | None
    new_uid: int


NodeEvent = NodeUp | NodeDown | NodeRestarted


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A connected node: its address, ``uid`` (None for a v1 peer), ``connected_since``
    (wall-clock seconds, as :func:`time.time`) and ``rtt``, the last heartbeat round trip
    in seconds (None before the first echo, and for peers without heartbeats)."""

    host: str
    port: int
    uid: int | None
    connected_since: float
    rtt: float | None
