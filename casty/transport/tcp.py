"""The TCP transport actor: ``tcp_transport(config, handler)`` and its message handling.

The actor owns a :class:`~casty.transport.node.TcpNode` (server and peer
connections) and turns each ``TcpTransportMsg`` into a call on it.  Connecting
and handshakes run in the node's own tasks, never inside this actor's receive,
so one slow peer cannot stall messages for another.
"""

from __future__ import annotations

import logging
from typing import Any

from casty._impl import EnvelopeWriter
from casty.address import _show
from casty.behavior import Behavior, Behaviors
from casty.serialization import MsgpackSerializer, SerializationError, Serializer
from casty.transport.config import TcpTransportConfig
from casty.transport.messages import (
    ClearNodeBlacklist,
    DeliverToNode,
    GetPort,
    InboundAccepted,
    LogSerializationFailure,
    PeerDown,
    SendFrameToNode,
    SendToNode,
    ShareNode,
    TcpTransportMsg,
)
from casty.transport.node import FrameBodyHandler, TcpNode

__all__ = ["tcp_transport"]

log = logging.getLogger("casty.transport.tcp")


def tcp_transport(
    config: TcpTransportConfig,
    handler: FrameBodyHandler,
    logger: logging.Logger | None = None,
    serializer: Serializer | None = None,
    *,
    node: TcpNode | None = None,
) -> Behavior[TcpTransportMsg]:
    """Actor managing TCP connections to all peers.

    On start it listens (unless ``config.client_only``); inbound message frames go
    to ``handler``.  ``DeliverToNode`` is serialized with ``serializer`` (default:
    :class:`MsgpackSerializer`).  Pass ``node`` to share a :class:`TcpNode` with a
    :class:`~casty.transport.remote.RemoteTransport` (its direct send path); a
    RemoteTransport given neither ``node`` nor ``serializer`` gets this actor's
    node and serializer by telling it ``ShareNode``.
    """
    the_log = logger or log
    unknown = 0  # messages of unknown type so far: logged at powers of two of the count
    the_node = node if node is not None else TcpNode(config, handler, logger=the_log)
    writer = EnvelopeWriter(serializer if serializer is not None else MsgpackSerializer())

    def report_serialization(msg: LogSerializationFailure) -> None:
        the_log.error(
            "cannot serialize %s for %s on %s:%d: %s",
            msg.type_name, msg.target, msg.host, msg.port, msg.error,
        )
        the_node.report((msg.host, msg.port), "serialization", 1, f"{msg.type_name}: {msg.error}")

    async def receive(ctx: Any, msg: TcpTransportMsg | ShareNode) -> Behavior[TcpTransportMsg]:
        nonlocal unknown
        match msg:
            case SendToNode(host, port, data):
                the_node.send_message(host, port, data)
            case DeliverToNode(host, port, payload, target, sender):
                try:
                    data = writer.encode(target, sender, payload)
                except SerializationError as exc:
                    report_serialization(LogSerializationFailure(
                        host, port, target, type(payload).__qualname__, str(exc)))
                else:
                    the_node.send_message(host, port, data)
            case SendFrameToNode(host, port, frame_type, data):
                the_node.send_frame(host, port, frame_type, data)
            case InboundAccepted(host, port, connection):
                the_node.adopt(host, port, connection)
            case PeerDown(host, port, reason):
                the_node.peer_down(host, port, reason)
            case ClearNodeBlacklist(host, port):
                the_node.clear_blacklist(host, port)
            case GetPort(reply_to):
                reply_to.tell(the_node.port)
            case LogSerializationFailure():
                report_serialization(msg)
            case ShareNode(receiver):
                try:
                    receiver(the_node, writer)
                except Exception:
                    the_log.exception("a ShareNode receiver raised")
            case _:
                # A peer can send these (any path is reachable): bounded and rate-limited.
                unknown += 1
                if unknown & (unknown - 1) == 0:
                    the_log.warning(
                        "tcp_transport got an unknown message of type %s: %s; %d so far",
                        type(msg).__qualname__[:100], _show(msg, 200), unknown,
                    )
                return Behaviors.unhandled()
        return Behaviors.same()

    async def start(ctx: Any) -> Behavior[TcpTransportMsg]:
        if not the_node.started:
            await the_node.start()
        return Behaviors.receive(receive)

    async def stop(ctx: Any) -> None:
        await the_node.close()

    return Behaviors.with_lifecycle(Behaviors.setup(start), post_stop=stop)

