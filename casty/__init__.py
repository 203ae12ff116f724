"""casty: actors for Python with a Cython-accelerated transport on uvloop.

>>> import casty
>>> async def main() -> str:
...     async with casty.ActorSystem("demo") as system:
...         async def greet(ctx, msg):
...             msg.reply_to.tell(f"hello, {msg.name}")
...             return casty.Behaviors.same()
...         ref = system.spawn(casty.Behaviors.receive(greet), "greeter")
...         return await system.ask(ref, lambda r: _Greet("world", r), timeout=1)
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class _Greet:
...     name: str
...     reply_to: casty.ActorRef[str]
>>> casty.run(main())
'hello, world'
"""

from casty._impl import EXTENSIONS_ACTIVE, LocalTransport, MessageEnvelope
from casty.actor import ActorCell
from casty.address import ActorAddress
from casty.ask_deadlines import AskFailed
from casty.behavior import Behavior, Behaviors
from casty.context import ActorContext
from casty.death_watch import Terminated
from casty.errors import EnvelopeDecodeError, FrameError, HandshakeError, SerializationError
from casty.malloc_tuning import tune_malloc
from casty.node_events import NodeDown, NodeInfo, NodeRestarted, NodeUp
from casty.ref import ActorRef, LocalActorRef, RemoteActorRef
from casty.remote_system import RemoteActorSystem
from casty.runner import run
from casty.serialization import JsonSerializer, MsgpackSerializer, Serializer, TypeRegistry
from casty.serve import serve_forever
from casty.system import ActorSystem
from casty.transport.config import TcpTransportConfig
from casty.transport.local import MessageTransport
from casty.transport.messages import (
    ClearNodeBlacklist,
    DeliverToNode,
    GetPort,
    InboundAccepted,
    LogSerializationFailure,
    PeerDown,
    SendFailure,
    SendFrameToNode,
    SendToNode,
    TcpTransportMsg,
)
from casty.transport.node import InboundHandler, TcpNode
from casty.transport.remote import InboundMessageHandler, RemoteTransport
from casty.transport.stats import NodeStats, PeerStats
from casty.transport.tcp import tcp_transport
from casty.wire import FRAME_HANDSHAKE, FRAME_MESSAGE

__all__ = [
    "EXTENSIONS_ACTIVE",
    "FRAME_HANDSHAKE",
    "FRAME_MESSAGE",
    "ActorAddress",
    "ActorCell",
    "ActorContext",
    "ActorRef",
    "ActorSystem",
    "AskFailed",
    "Behavior",
    "Behaviors",
    "ClearNodeBlacklist",
    "DeliverToNode",
    "EnvelopeDecodeError",
    "FrameError",
    "GetPort",
    "HandshakeError",
    "InboundAccepted",
    "InboundHandler",
    "InboundMessageHandler",
    "JsonSerializer",
    "LocalActorRef",
    "LocalTransport",
    "LogSerializationFailure",
    "MessageEnvelope",
    "MessageTransport",
    "MsgpackSerializer",
    "NodeDown",
    "NodeInfo",
    "NodeRestarted",
    "NodeStats",
    "NodeUp",
    "PeerDown",
    "PeerStats",
    "RemoteActorRef",
    "RemoteActorSystem",
    "RemoteTransport",
    "SendFailure",
    "SendFrameToNode",
    "SendToNode",
    "SerializationError",
    "Serializer",
    "TcpNode",
    "TcpTransportConfig",
    "TcpTransportMsg",
    "Terminated",
    "TypeRegistry",
    "run",
    "serve_forever",
    "tcp_transport",
    "tune_malloc",
]
