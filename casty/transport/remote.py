"""Routing between this node and others: RemoteTransport out, InboundMessageHandler in."""

from __future__ import annotations

import asyncio
import inspect
import logging
from asyncio import events
from collections.abc import Callable, Coroutine, Mapping
from threading import get_ident
from typing import Any

from casty._impl import EnvelopeWriter, InboundMessageHandler
from casty.address import TEMP_PREFIX, ActorAddress, loggable
from casty.ref import ActorRef, LocalActorRef, RemoteActorRef
from casty.serialization import SerializationError, Serializer
from casty.transport.local import hand_to_loop
from casty.transport.messages import ClearNodeBlacklist, DeliverToNode, SendFailure, SendToNode, ShareNode
from casty.transport.node import TcpNode
from casty.wire import (
    FRAME_COMPACT,
    FRAME_MESSAGE,
    MAX_CACHED_TARGET_CHARS,
    MAX_CACHED_TARGET_LENGTH,
    MAX_CACHED_TARGETS,
)

__all__ = ["InboundMessageHandler", "RemoteTransport"]  # the handler lives in casty.transport.inbound

log = logging.getLogger("casty.transport.remote")

SendFailureCallback = Callable[[SendFailure], Any]
TaskRunner = Callable[[Coroutine[Any, Any, Any]], Any]



class RemoteTransport:
    """Bridge between MessageTransport and the TCP transport actor.

    Local addresses go to the LocalTransport; remote ones are serialized into an
    envelope and sent to their node.  An address is local when its ``node_id``
    is ours, or it has no host, or its host:port is ours or our advertised one; a
    ``node_id`` naming another node resolves through :meth:`update_node_index`.

    How a remote message leaves, by what the transport was given:

    * ``node`` (a :class:`TcpNode`) and ``serializer`` (as RemoteActorSystem does):
      encoded here and written straight to the node, no mailbox hop per message;
    * ``serializer`` only: encoded here and told to ``tcp`` as ``SendToNode``;
    * no ``serializer`` (the reference page's arguments, as casty 0.21's clustered
      system wires it): the transport tells ``tcp`` :class:`ShareNode` at once and,
      until the actor has answered, tells it ``DeliverToNode`` for each message,
      which the actor serializes with the serializer given to ``tcp_transport``.
      Once every message told that way has been handed to the node, later ones take
      the direct path above with the actor's serializer and node (``node`` if
      given), in order.  A ``tcp`` actor that does not know ``ShareNode`` keeps
      getting ``DeliverToNode``.

    Failures (a message that cannot be serialized, an unknown node id, an address
    that routes to this node but names another actor system, and every drop the
    node reports) are counted (:attr:`drops`, the node's ``drops``) and logged,
    rate-limited, whether or not ``on_send_failure`` is set, and passed to it as a
    :class:`SendFailure`; when that callback is a coroutine
    function its coroutines are started with ``task_runner`` (default:
    ``loop.create_task``).  Drops the node reports reach the callback once the
    transport has the node (given, or shared by the actor).

    Threads: ``deliver`` called from a thread other than the one running the loop
    the transport was made on (or :meth:`bind_loop` named) is handed to that loop
    with ``call_soon_threadsafe``, so one thread's messages keep their order; every
    other method belongs to the loop's thread.
    """

    def __init__(
        self,
        *,
        local: Any,
        tcp: ActorRef[Any],
        local_host: str,
        local_port: int,
        system_name: str,
        advertised_host: str | None = None,
        advertised_port: int | None = None,
        task_runner: TaskRunner | None = None,
        on_send_failure: SendFailureCallback | None = None,
        local_node_id: str | None = None,
        serializer: Serializer | None = None,
        node: TcpNode | None = None,
    ) -> None:
        self._local = local
        self._tcp = tcp
        self._local_host = local_host
        self._local_port = local_port
        self._system_name = system_name
        self._advertised_host = advertised_host
        self._advertised_port = advertised_port
        self._task_runner = task_runner
        self._on_send_failure = on_send_failure
        self._local_node_id = local_node_id
        self._writer: EnvelopeWriter | None = EnvelopeWriter(serializer) if serializer is not None else None
        self._node: TcpNode | None = None
        #: the node's connection_table, read per message (None: no node, or one that busy-polls)
        self._routes: Mapping[tuple[str, int], Any] | None = None
        self._use_node(node)
        #: DeliverToNode messages told after ShareNode (the page path, before the handover)
        self._relayed = 0
        #: encoded messages waiting for the relayed ones to reach the node (during the handover)
        self._held: list[tuple[tuple[str, int], bytes | list[bytes]]] | None = None
        self._handover_node: TcpNode | None = None  # the node to use once they have
        #: messages dropped here (not by the node), by reason
        self.drops: dict[str, int] = {}
        self._node_index: dict[str, tuple[str, int]] = {}
        self._own: set[tuple[str, int]] = {(local_host, local_port)}
        if advertised_host is not None or advertised_port is not None:
            self._own.add((self.sender_host, self.sender_port))
        self._sender = ActorAddress(system_name, "/", self.sender_host, self.sender_port).to_uri()
        self._targets: dict[ActorAddress, str] = {}
        self._target_chars = 0
        # (address, (host, port), target URI) of the last remote send: a ref told many
        # messages hands over the same address object each time, so an identity check
        # skips hashing it.
        self._last: tuple[ActorAddress, tuple[str, int], str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None  # get_ident() of the thread running _loop
        loop = events._get_running_loop()
        if loop is not None:
            self.bind_loop(loop)
        if node is not None:
            node.add_failure_listener(self._report)
        if serializer is None:
            tcp.tell(ShareNode(self._adopt))

    @property
    def sender_host(self) -> str:
        """Host used in outbound sender URIs (advertised or local)."""
        return self._advertised_host if self._advertised_host is not None else self._local_host

    @property
    def sender_port(self) -> int:
        """Port used in outbound sender URIs (advertised or local)."""
        return self._advertised_port if self._advertised_port is not None else self._local_port

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Name the event loop messages are sent from; call it from that loop's thread
        (a transport made while a loop runs is bound to it already)."""
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"bind_loop needs an asyncio event loop, got {loop!r:.100}")
        self._loop = loop
        self._loop_thread = get_ident()

    def update_node_index(self, index: Mapping[str, tuple[str, int]]) -> None:
        """Replace the node index used for node_id resolution (node_id -> (host, port))."""
        self._node_index = dict(index)
        self._last = None  # routes may have changed

    def _route(self, address: ActorAddress) -> tuple[str, int] | None:
        """(host, port) of the node for ``address``, or None when it is local."""
        node_id = address.node_id
        if node_id is not None:
            if node_id == self._local_node_id:
                return None
            hp = self._node_index.get(node_id)
            if hp is not None:
                return None if hp in self._own else hp
            if address.host is None:
                raise LookupError(f"unknown node id {node_id!r:.100} for {address.path!r:.200}")
        if address.host is None:
            return None
        hp = (address.host, address.port)  # type: ignore[assignment]
        return None if hp in self._own else hp

    def route_of(self, address: ActorAddress) -> tuple[str, int] | None:
        """(host, port) of the node for ``address``, None when it is local; LookupError
        for a node id this transport does not know."""
        return self._route(address)

    def is_local(self, address: ActorAddress) -> bool:
        """True when ``address`` names an actor of this node."""
        try:
            return self._route(address) is None
        except LookupError:
            return False

    def deliver(self, address: ActorAddress, msg: Any) -> None:
        """Deliver ``msg`` to ``address``: locally, or serialized over TCP (handed to the
        transport's loop first when called from another thread)."""
        if get_ident() != self._loop_thread and self._loop is not None:
            hand_to_loop(self._loop, self.deliver, address, msg)
            return
        last = self._last
        if last is not None and last[0] is address:
            hp, target = last[1], last[2]
        else:
            try:
                route = self._route(address)
            except LookupError as exc:
                self._dropped(SendFailure("", 0, "unknown_node", 1, str(exc)))
                return
            if route is None:
                if address.system != self._system_name:
                    self._dropped(SendFailure("", 0, "wrong_system", 1, self._not_ours(address)))
                    return
                self._local.deliver(address, msg)
                return
            hp = route
            if address.path.startswith(TEMP_PREFIX):
                # An ask's reply path is used once: caching it would only evict the rest.
                target = address.to_uri()
            else:
                target = self._targets.get(address)  # type: ignore[assignment]
                if target is None:
                    target = address.to_uri()
                    # Peers choose the refs this node answers to, so the cache is bounded in
                    # characters as well as entries, and a long target is not kept.
                    if len(target) <= MAX_CACHED_TARGET_LENGTH:
                        if (len(self._targets) >= MAX_CACHED_TARGETS
                                or self._target_chars + len(target) > MAX_CACHED_TARGET_CHARS):
                            self._targets.clear()
                            self._target_chars = 0
                        self._targets[address] = target
                        self._target_chars += len(target)
                self._last = (address, hp, target)
        writer = self._writer
        if writer is None:  # the page path before the handover: the actor serializes
            self._relayed += 1
            self._tcp.tell(DeliverToNode(hp[0], hp[1], msg, target, self._sender))
            return
        node = self._node
        routes = self._routes
        proto = None
        if routes is not None:
            # What send_message_to and header_table look up, inline: a steady stream then
            # pays no node call per message.
            peer = routes.get(hp)
            if peer is not None:
                proto = peer.proto
        try:
            # On a connection whose ends both speak "hdr", a compact message; else (or when
            # this one cannot be: a reply path) the JSON header.
            if proto is not None:
                table = proto.context.headers
            elif node is not None and routes is None:
                table = node.header_table(hp)
            else:
                table = None  # no connection yet: the frame is queued, with the JSON header
            data = writer.encode_compact(table, target, self._sender, msg) if table is not None else None
            kind = FRAME_COMPACT
            if data is None:
                kind = FRAME_MESSAGE
                data = writer.encode_parts(target, self._sender, msg)
        except SerializationError as exc:
            # ERROR, not WARNING: the program sends what it never can (still rate-limited).
            self._dropped(SendFailure(hp[0], hp[1], "serialization", 1, f"{type(msg).__qualname__}: {exc}"),
                          target, logging.ERROR)
            return
        if proto is not None:
            # send_message_to's hot path, inline (routes is None for a node that busy-polls)
            if not proto.send_message(data, kind):
                node.report(hp, "queue_full", 1, "connection write queue full")  # type: ignore[union-attr]
        elif node is not None:
            node.send_message_to(hp, data, kind)
        elif self._held is not None:
            self._held.append((hp, data))
        else:
            if isinstance(data, list):
                data = b"".join(data)
            self._tcp.tell(SendToNode(hp[0], hp[1], data))

    def _adopt(self, node: TcpNode, writer: EnvelopeWriter) -> None:
        """ShareNode's answer: the actor's node and writer (it runs before any DeliverToNode
        this transport told, since ShareNode was told first)."""
        if self._node is None:
            node.add_failure_listener(self._report)
        else:
            node = self._node  # the one given: it gets the messages the actor's node does not
        self._writer = writer
        if self._relayed == 0:
            self._use_node(node)
            return
        # Those DeliverToNode wait in the actor's mailbox behind ShareNode: a message sent
        # straight to a node now would overtake them.  Hold what comes next (deliver holds
        # while there is no node) until a second ShareNode, told behind them, says they
        # reached the node.
        self._use_node(None)
        self._handover_node = node
        self._held = []
        self._tcp.tell(ShareNode(self._drained))

    def _drained(self, node: TcpNode, writer: EnvelopeWriter) -> None:
        node = self._handover_node or node
        held, self._held, self._handover_node = self._held or [], None, None
        self._use_node(node)
        for hp, data in held:
            node.send_message_to(hp, data)

    def _use_node(self, node: TcpNode | None) -> None:
        """Send through ``node`` from now on (None: hold or relay, as deliver says)."""
        self._node = node
        self._routes = node.connection_table() if node is not None else None

    def make_ref(self, address: ActorAddress) -> ActorRef[Any]:
        """An ActorRef for ``address``: local refs skip the remote routing."""
        host = address.host
        if host is not None and address.node_id is None:
            # What is_local works out for the usual address (every ref decoded off the
            # wire), inline: this runs per ref per message.
            local = (host, address.port) in self._own
        else:
            local = self.is_local(address)
        if local and address.system == self._system_name:
            return LocalActorRef(address, self._local)
        # Remote, or this node's but naming another system: deliver drops (and logs) that.
        return RemoteActorRef(address, self)

    def clear_blacklist(self, host: str, port: int) -> None:
        """Clear the TCP circuit breaker for a specific endpoint."""
        if self._node is not None:
            self._node.clear_blacklist(host, port)
        else:
            self._tcp.tell(ClearNodeBlacklist(host, port))

    def _not_ours(self, address: ActorAddress) -> str:
        return (f"{loggable(address.to_uri())} routes to this node, whose actor system is "
                f"{self._system_name!r}, not {loggable(address.system)!r}")

    def _dropped(self, failure: SendFailure, target: str | None = None, level: int = logging.WARNING) -> None:
        """Count and log a drop decided here, then report it: at ``level`` at counts
        1, 2, 4, 8, ... per reason (debug otherwise), callback or not."""
        count = self.drops[failure.reason] = self.drops.get(failure.reason, 0) + failure.count
        to = "" if target is None else f" to {loggable(target)}"
        if count & (count - 1) == 0:
            log.log(level, "dropped a message%s (%s: %s); %d dropped for this reason so far",
                    to, failure.reason, failure.detail, count)
        else:
            log.debug("dropped a message%s (%s: %s)", to, failure.reason, failure.detail)
        self._report(failure)

    def _report(self, failure: SendFailure) -> None:
        callback = self._on_send_failure
        if callback is None:
            return
        try:
            result = callback(failure)
            if inspect.isawaitable(result):
                runner = self._task_runner or asyncio.get_running_loop().create_task
                runner(result)  # type: ignore[arg-type]
        except Exception:
            log.exception("on_send_failure raised")
