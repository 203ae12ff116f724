"""The messages the TCP transport actor understands (``TcpTransportMsg``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from casty.ref import ActorRef

__all__ = [
    "ClearNodeBlacklist",
    "DeliverToNode",
    "GetPort",
    "InboundAccepted",
    "LogSerializationFailure",
    "PeerDown",
    "SendFailure",
    "SendFrameToNode",
    "SendToNode",
    "ShareNode",
    "TcpTransportMsg",
]


@dataclass(frozen=True, slots=True)
class SendToNode:
    """Send an encoded envelope (``data``) to the node at host:port as a message frame."""

    host: str
    port: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SendFrameToNode:
    """Send a frame of any type (``frame_type``, body ``data``) to the node at host:port."""

    host: str
    port: int
    frame_type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DeliverToNode:
    """Serialize ``msg`` with the transport's serializer and send it to ``target`` on host:port."""

    host: str
    port: int
    msg: Any
    target: str
    sender: str


@dataclass(frozen=True, slots=True)
class InboundAccepted:
    """A connection (a FrameProtocol) whose peer said, in its handshake, it is host:port."""

    host: str
    port: int
    connection: Any


@dataclass(frozen=True, slots=True)
class PeerDown:
    """Close the connection to host:port (it is known to be gone); queued frames are reported."""

    host: str
    port: int
    reason: str = "peer down"


@dataclass(frozen=True, slots=True)
class ClearNodeBlacklist:
    """Lift the connect circuit breaker for host:port."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class GetPort:
    """Ask the transport for the port it listens on; ``reply_to`` gets an ``int``."""

    reply_to: ActorRef[int]


@dataclass(frozen=True, slots=True)
class LogSerializationFailure:
    """A message for host:port could not be serialized; log it and report it."""

    host: str
    port: int
    target: str
    type_name: str
    error: str


@dataclass(frozen=True, slots=True)
class ShareNode:
    """Call ``receiver(node, writer)`` with the actor's TcpNode and its EnvelopeWriter.

    Not part of ``TcpTransportMsg`` (casty 0.21 has no such message): a
    RemoteTransport built without ``node`` tells it to take over the direct send
    path.  The actor handles it in mailbox order, so every message told to the
    actor before it has been handed to the node by the time ``receiver`` runs.
    """

    receiver: Callable[[Any, Any], None]


TcpTransportMsg = (
    SendToNode
    | SendFrameToNode
    | InboundAccepted
    | PeerDown
    | ClearNodeBlacklist
    | GetPort
    | DeliverToNode
    | LogSerializationFailure
)


@dataclass(frozen=True, slots=True)
class SendFailure:
    """What ``on_send_failure`` receives: ``count`` messages for host:port were not sent.

    ``reason`` is one of ``"serialization"``, ``"blacklisted"``, ``"connect_failed"``,
    ``"queue_full"``, ``"connection_lost"``, ``"peer_down"``, ``"closed"``,
    ``"unknown_node"``, ``"wrong_system"`` (the address routes to this node but names
    another actor system; host and port are then empty); ``detail``
    says more (the error, the message type, the target).
    """

    host: str
    port: int
    reason: str
    count: int = 1
    detail: str = ""
