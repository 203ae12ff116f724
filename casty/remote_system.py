"""RemoteActorSystem: an ActorSystem whose actors are reachable over TCP."""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Callable
from typing import Any, TypeVar, get_origin, overload

from casty.address import ActorAddress, loggable
from casty.death_watch import RemoteWatch
from casty.node_events import NodeDown, NodeEvent, NodeInfo, NodeRestarted, NodeUp
from casty.ref import ActorRef
from casty.serialization import MsgpackSerializer, Serializer, TypeRegistry
from casty.system import DEFAULT_MAILBOX_BYTES, DEFAULT_MAILBOX_CAPACITY, ActorSystem
from casty.transport.config import TcpTransportConfig
from casty.transport.messages import SendFailure
from casty.transport.node import TcpNode
from casty.transport.remote import InboundMessageHandler, RemoteTransport, SendFailureCallback
from casty.transport.stats import NodeStats
from casty.transport.tcp import tcp_transport
from casty.wire import DEFAULT_MAX_REMOTE_WATCHES

__all__ = ["RemoteActorSystem"]

#: failure reasons after which nothing queued for a node was sent: its queued asks fail
_NOTHING_SENT = frozenset({"connect_failed", "blacklisted", "peer_down", "closed", "not_allowed",
                           "connection_limit"})

#: failure reasons decided before a message has a route: the ask being sent is the one failed
_NOT_ROUTED = frozenset({"unknown_node", "wrong_system"})

log = logging.getLogger("casty.remote")

M = TypeVar("M")


class RemoteActorSystem(ActorSystem):
    """An ActorSystem that listens on host:port and talks to actors on other nodes.

    Every spawned actor is reachable from other nodes at
    ``casty://<name>@<advertised host>:<advertised port>/user/<name>``; ``ref()``
    gives a reference to any actor anywhere, and ``ask`` works across nodes.
    Start it with ``async with`` (or ``await start()``); port 0 picks a free port
    and ``address`` tells the real one.

    ``mailbox_capacity`` and ``mailbox_bytes`` bound every actor's mailbox, in
    messages and in peers' wire bytes (see :class:`ActorSystem`); a peer whose
    message fills one is not read from until it has room.  ``serialize_messages``
    (see :class:`ActorSystem`) checks local tells with this system's serializer.

    ``max_remote_watches`` (65,536) bounds the watches (``ctx.watch``) a peer may hold on
    this node's actors over one connection; one more is answered ``Terminated`` at once.

    Extra keyword arguments (``connect_timeout``, ``max_frame_size``,
    ``handshake_timeout``, ``max_queue_bytes``, ``address_map``, ...) go to
    :class:`TcpTransportConfig`.

    >>> import asyncio, casty
    >>> async def main() -> str:
    ...     async with RemoteActorSystem("demo", "127.0.0.1", 0) as system:
    ...         return system.address.host
    >>> casty.run(main())
    '127.0.0.1'
    """

    def __init__(
        self,
        name: str = "casty-system",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        serializer: Serializer | None = None,
        registry: TypeRegistry | None = None,
        advertised_host: str | None = None,
        advertised_port: int | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        node_id: str | None = None,
        on_send_failure: SendFailureCallback | None = None,
        client_only: bool = False,
        mailbox_capacity: int = DEFAULT_MAILBOX_CAPACITY,
        mailbox_bytes: int = DEFAULT_MAILBOX_BYTES,
        serialize_messages: bool | None = None,
        max_remote_watches: int = DEFAULT_MAX_REMOTE_WATCHES,
        **tcp_options: Any,
    ) -> None:
        serializer = serializer if serializer is not None else MsgpackSerializer(registry)
        super().__init__(
            name, mailbox_capacity=mailbox_capacity, mailbox_bytes=mailbox_bytes,
            serialize_messages=serialize_messages, serializer=serializer,
        )
        self.serializer = serializer
        self_address = None
        if advertised_host is not None or advertised_port is not None:
            self_address = (advertised_host or host, advertised_port or 0)
        self.config = TcpTransportConfig(
            host,
            port,
            self_address=self_address,
            client_only=client_only,
            server_ssl=server_ssl,
            client_ssl=client_ssl,
            **tcp_options,
        )
        self.node_id = node_id
        self._on_send_failure = on_send_failure
        self._inbound = InboundMessageHandler(
            local=self.local, serializer=self.serializer, system_name=name
        )
        # A reply from a peer is taken only from the node its ask went to (see _check_reply).
        self._reply_routes = {}
        #: node -> reply paths of asks whose request waits for a connection to it
        self._queued_asks: dict[tuple[str, int], set[str]] = {}
        #: nodes with a NodeUp and no NodeDown since (a NodeRestarted for one fails its asks)
        self._up_nodes: set[tuple[str, int]] = set()
        self._inbound.reply_check = self._check_reply
        self.node = TcpNode(
            self.config,
            self._inbound,
            logger=logging.getLogger("casty.transport.tcp"),
            read_state=self.local.read_state,
        )
        #: the remote half of ``death_watch``: watches of and by actors on other nodes
        self.remote_watch = RemoteWatch(self.death_watch, self.node, max_remote_watches=max_remote_watches)
        self._remote: RemoteTransport | None = None
        self._tcp: ActorRef[Any] | None = None
        # (node.advertised, the root address there): address_of runs per spawn and per ask
        self._advertised_root: tuple[object, ActorAddress] | None = None

    async def start(self) -> RemoteActorSystem:
        """Listen, spawn the TCP transport actor and wire remote routing (idempotent)."""
        if self._remote is not None:
            return self
        await self.node.start()
        self._tcp = self._spawn_system_actor(
            tcp_transport(self.config, self._inbound, serializer=self.serializer, node=self.node),
            "tcp",
        )
        host, port = self.node.advertised
        self._remote = RemoteTransport(
            local=self._tells,
            tcp=self._tcp,
            local_host=self.config.host,
            local_port=self.node.port,
            system_name=self.name,
            advertised_host=host,
            advertised_port=port,
            on_send_failure=self._send_failed,
            local_node_id=self.node_id,
            serializer=self.serializer,
            node=self.node,
        )
        self._inbound.ref_factory = self._remote.make_ref
        self.node.add_connect_listener(self._connected)
        self.node.add_node_listener(self._node_event)
        return self

    async def __aenter__(self) -> RemoteActorSystem:
        return await self.start()

    @property
    def remote(self) -> RemoteTransport:
        """The RemoteTransport (after start)."""
        if self._remote is None:
            raise RuntimeError(f"RemoteActorSystem {self.name!r} is not started; use 'async with' or start()")
        return self._remote

    @property
    def address(self) -> ActorAddress:
        """The system's root address as other nodes reach it."""
        host, port = self.node.advertised
        return ActorAddress(self.name, "/", host, port, self.node_id)

    def _root_address(self) -> ActorAddress:
        advertised = self.node.advertised
        root = self._advertised_root
        if root is None or root[0] is not advertised:
            host, port = advertised
            root = self._advertised_root = (advertised, ActorAddress(self.name, "/", host, port))
        return root[1]

    def _refs_are_plain(self) -> bool:
        # make_ref below gives a LocalActorRef for every address of this node.
        cls = type(self)
        return cls.address_of is ActorSystem.address_of and cls.make_ref is RemoteActorSystem.make_ref

    def make_ref(self, address: ActorAddress) -> ActorRef[Any]:
        if self._remote is None:
            return super().make_ref(address)
        return self._remote.make_ref(address)

    @overload
    def ref(self, target: str | ActorAddress) -> ActorRef[Any]: ...

    @overload
    def ref(self, target: str | ActorAddress, msg_type: type[M]) -> ActorRef[M]: ...

    def ref(self, target: str | ActorAddress, msg_type: object = None) -> ActorRef[Any]:
        """A reference to any actor, on this node or another: by URI
        (``casty://system@host:port/path``), by address, or by a path of this node
        (``"/user/x"``).

        ``msg_type`` is for the type checker: ``system.ref(uri, Job)`` is an
        ``ActorRef[Job]``, so telling or asking it anything else is a type error.  It
        is not checked at run time (the actor may be anywhere); it must be a class or
        a type expression.  For a union of messages, annotate instead:
        ``kv: ActorRef[Get | Put] = system.ref(uri)``.
        """
        if msg_type is not None and not isinstance(msg_type, type) and get_origin(msg_type) is None:
            raise TypeError(
                f"ref() takes the message type the actor handles as its second argument "
                f"(a class, e.g. system.ref(uri, Job)), got {msg_type!r:.100}"
            )
        if isinstance(target, str) and target.startswith("/"):
            return self.remote.make_ref(self.address_of(target))
        address = ActorAddress.from_uri(target) if isinstance(target, str) else target
        if address.host is None and address.node_id is None:
            address = self.address_of(address.path) if address.system == self.name else address
        return self.remote.make_ref(address)

    def _watch_route(self, ref: ActorRef[Any]) -> tuple[str, int] | None:
        address = getattr(ref, "address", None)
        if self._remote is None or not isinstance(address, ActorAddress):
            return super()._watch_route(ref)
        try:
            return self._remote.route_of(address)
        except LookupError as exc:
            raise ValueError(f"cannot watch {ref!r}: {exc}") from None

    def _reply_route(self, target: ActorRef[Any]) -> Any:
        address = getattr(target, "address", None)
        remote = self._remote
        if remote is None or not isinstance(address, ActorAddress):
            return None
        try:
            return remote.route_of(address)
        except LookupError:
            return None

    def _send_failed(self, failure: SendFailure) -> Any:
        """Every send failure: fail the asks whose request it was, then tell the user's callback."""
        asking = self._asking
        key = (failure.host, failure.port)
        if asking is not None and (
            failure.reason in _NOT_ROUTED or (self._reply_routes or {}).get(asking) == key
        ):
            self._fail_ask(asking, "send_failed", f"{failure.reason}: {failure.detail}")
        if failure.reason in _NOTHING_SENT:
            for path in self._queued_asks.pop(key, ()):
                self._fail_ask(path, "send_failed", f"{failure.reason}: {failure.detail}")
        callback = self._on_send_failure
        return callback(failure) if callback is not None else None

    def _request_queued(self, path: str, route: Any) -> None:
        if not self.node.is_connected(route):  # it waits in the node's connect queue
            self._queued_asks.setdefault(route, set()).add(path)

    def _connected(self, key: tuple[str, int]) -> None:
        self._queued_asks.pop(key, None)  # their requests went out

    def _node_event(self, event: NodeEvent) -> None:
        """The connection to a node is lost: the asks waiting on that node fail now, not at
        their timeout.

        A NodeRestarted fails them too when no NodeDown came since that address's last
        NodeUp: its connection was replaced by the new incarnation's while open, so every
        ask routed there went out on the old one.  Otherwise it fails none: the NodeDown
        did, and asks since then waited for the connection to the new incarnation."""
        key = (event.host, event.port)
        if isinstance(event, NodeUp):
            self._up_nodes.add(key)
            return
        if isinstance(event, NodeRestarted):
            if key not in self._up_nodes:
                return
            why = (f"node {event.host}:{event.port} restarted (uid {event.old_uid} is now {event.new_uid}) "
                   "before it replied")
        elif isinstance(event, NodeDown):
            self._up_nodes.discard(key)
            why = f"node {event.host}:{event.port} is down ({event.reason})"
        else:
            return
        routes = self._reply_routes or {}
        for path in [p for p, route in routes.items() if route == key]:
            self._fail_ask(path, "node_down", why)

    def subscribe_nodes(self, target: Callable[[NodeEvent], Any] | ActorRef[Any]) -> Callable[[], None]:
        """Tell ``target`` (a callable, called on the loop, or an ActorRef) every
        :class:`~casty.NodeUp`, :class:`~casty.NodeDown` and :class:`~casty.NodeRestarted`
        of this node's peers; returns a function that unsubscribes it."""
        tell = getattr(target, "tell", None)
        if callable(tell):
            return self.node.add_node_listener(tell)
        if not callable(target):
            raise TypeError(f"subscribe_nodes takes a callable or an ActorRef, got {type(target).__name__}")
        return self.node.add_node_listener(target)

    def nodes(self) -> list[NodeInfo]:
        """The nodes this system is connected to (over connections carrying its traffic):
        address, uid, connected-since (wall clock) and last heartbeat round-trip time."""
        return self.node.nodes()

    def _check_reply(self, path: str, origin: Any) -> str | None:
        """Why a message from a peer to the reply path ``path`` is refused, or None.

        Taken only while the ask waits, and only from the node it went to: a
        connection whose peer claims that address, or the one this node dialed to
        it (whatever the node there calls itself).
        """
        routes = self._reply_routes
        assert routes is not None
        if path not in routes:
            return f"no ask is waiting at {loggable(path)}"
        if origin is None:  # not told which connection: nothing to compare
            return None
        key = routes[path]
        if key is None:
            return f"the ask at {loggable(path)} went to a local actor, but a reply came from {_peer(origin)}"
        if origin.peer_key == key or origin.dial_key == key or self.node.claimed_by(key) == origin.peer_key:
            return None
        return f"the ask at {loggable(path)} went to {key[0]}:{key[1]}, but a reply came from {_peer(origin)}"

    def stats(self) -> NodeStats:
        """A snapshot of this node's statistics: per peer (host, port), messages and bytes
        sent and received, drops by reason, queued bytes, reconnects, the last round trip
        and the seconds since the peer was last heard; and the node's drops, its
        LocalTransport's, and its event-loop lag.  Cheap enough to call often: the
        counters are kept anyway, and read here.

        >>> import asyncio, casty
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class _Note:
        ...     text: str
        >>> async def main() -> tuple[int, int, int]:
        ...     registry = casty.TypeRegistry()
        ...     registry.register(_Note)
        ...     async with RemoteActorSystem("a", registry=registry) as a, \\
        ...             RemoteActorSystem("b", registry=registry) as b:
        ...         got = asyncio.Event()
        ...         async def receive(ctx, msg):
        ...             got.set()
        ...             return casty.Behaviors.same()
        ...         b.spawn(casty.Behaviors.receive(receive), "inbox")
        ...         a.ref(f"casty://b@127.0.0.1:{b.address.port}/user/inbox").tell(_Note("hi"))
        ...         await got.wait()
        ...         sent = a.stats().peers[("127.0.0.1", b.address.port)]
        ...         (key, received), = b.stats().peers.items()
        ...         return sent.messages_sent, received.messages_received, sent.dropped
        >>> casty.run(main())
        (1, 1, 0)
        """
        stats = self.node.stats()
        drops = dict(stats.drops)
        if self._remote is not None:
            for reason, count in self._remote.drops.items():
                drops[reason] = drops.get(reason, 0) + count
        return dataclasses.replace(
            stats,
            drops=drops,
            local_drops={reason: n for reason, n in self.local.drops.items() if n},
            inbound_dropped=self._inbound.dropped,
        )

    async def shutdown(self) -> None:
        """Stop every actor, then close every connection."""
        await super().shutdown()
        await self.node.close()




def _peer(origin: Any) -> str:
    key = origin.peer_key
    return "an unknown peer" if key is None else f"{key[0]}:{key[1]}"
