"""InboundMessageHandler: message frames from peers, decoded and delivered inline.

This is the pure twin of ``casty._fast.inbound``; ``casty._impl`` picks one.  Both
decode the envelope, map its target URI to a local path (cached per target), decode
the payload and hand the message to ``LocalTransport.deliver_path``; a frame that
fails anywhere before delivery is dropped, counted and logged, and the connection
stays up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from casty.address import ActorAddress
from casty.ref import ActorRef
from casty.transport.compact_codec import COMPACT_HEAD, HeaderNames, compact_problem
from casty.transport.envelope import MessageEnvelope
from casty.transport.inbound_rules import log_inbound_drop, refusal, refuse_connection, target_path
from casty.wire import (
    COMPACT_HEADER_SIZE,
    MAX_CACHED_TARGET_CHARS,
    MAX_CACHED_TARGET_LENGTH,
    MAX_CACHED_TARGETS,
    SYSTEM_PREFIX,
    TEMP_PREFIX,
)

if TYPE_CHECKING:
    from casty.serialization import Serializer

__all__ = ["InboundMessageHandler", "OriginSink"]


class InboundMessageHandler:
    """Deserializes inbound TCP frames and delivers them locally.

    Satisfies InboundHandler (``casty.transport.node.FrameBodyHandler``) structurally;
    ``on_frame`` is the synchronous form the TCP node calls inline for every message
    frame (no task per message).
    A frame that fails to decode is logged, counted in ``dropped`` and dropped;
    the connection stays up.

    Peers are untrusted: a frame for a ``/system/`` path is refused (unless
    ``allow_system_paths``), and one for an ask's reply path (under ``/temp/``) is
    delivered only when ``reply_check(path, origin)`` (when set) returns None;
    otherwise it returns why not.  ``origin`` is the connection the frame came
    on, as the node told it through :meth:`sink_for` (None when not told); when a
    delivery leaves a mailbox at its capacity, ``origin.mailbox_full(mailbox)`` is
    called, and the node stops reading that connection until the mailbox has room.
    A compact message (cap "hdr", through the OriginSink, which holds the
    connection's table) is routed by the same rules as a message frame whose JSON
    header names the same target.
    """

    #: the sinks of sink_for take compact-header frames (on_entry, on_compact)
    compact_headers = True

    def __init__(
        self,
        *,
        local: Any,
        serializer: Serializer,
        system_name: str,
        ref_factory: Callable[[ActorAddress], ActorRef[Any]] | None = None,
        allow_system_paths: bool = False,
    ) -> None:
        self._local = local
        self._serializer = serializer
        self._system_name = system_name
        self._allow_system = bool(allow_system_paths)
        self.ref_factory = ref_factory
        self.reply_check: Callable[[str, Any], str | None] | None = None
        self.origin: Any = None
        self._paths: dict[str, str] = {}
        self._paths_chars = 0
        self.dropped = 0
        #: ``local.read_state``, for the node whose frames this handles (None without one)
        self.read_state: Any = getattr(local, "read_state", None)

    def sink_for(self, origin: Any) -> Callable[[Any], None]:
        """A message sink for one connection: each frame is handled with ``origin`` set."""
        return OriginSink(self, origin).on_frame

    async def on_message(self, data: bytes) -> None:
        """Decode one message frame body and deliver it."""
        self.on_frame(data)

    def on_frame(self, data: Any) -> None:
        """Decode one message frame body (bytes-like) and deliver it, inline."""
        try:
            env = MessageEnvelope.from_bytes(data)
            path = self._route(env.target)
            if path is None:
                return
            msg = self._serializer.deserialize(env.payload, ref_factory=self.ref_factory)
        except ValueError as exc:  # EnvelopeDecodeError or SerializationError: bad peer bytes
            self._drop(str(exc))
            return
        full = self._local.deliver_path(path, msg, len(data))
        if full is not None and self.origin is not None:
            self.origin.mailbox_full(full)

    def on_compact(self, target: str, body: Any) -> None:
        """Deliver the compact message ``body`` (bytes-like; its ids already checked by the
        connection's OriginSink) to ``target``, by the rules of :meth:`on_frame`."""
        try:
            path = self._route(target)
            if path is None:
                return
            payload = bytes(body[COMPACT_HEADER_SIZE:])
            msg = self._serializer.deserialize(payload, ref_factory=self.ref_factory)
        except ValueError as exc:  # SerializationError: bad peer bytes
            self._drop(str(exc))
            return
        full = self._local.deliver_path(path, msg, len(body))
        if full is not None and self.origin is not None:
            self.origin.mailbox_full(full)

    def _route(self, target: str) -> str | None:
        """The local path for a frame to ``target``, or None when it is dropped."""
        path = self._paths.get(target)
        if path is None:  # not cached: never a reply path, a refused or a foreign target
            path = self._path_of(target)
            if path is None:
                self._drop(refusal(target, self._system_name))
                return None
            if path.startswith(TEMP_PREFIX) and self.reply_check is not None:
                why = self.reply_check(path, self.origin)
                if why is not None:
                    self._drop(why)
                    return None
        return path

    @property
    def cached_targets(self) -> int:
        """Targets whose path is remembered (ask reply paths never are)."""
        return len(self._paths)

    def _path_of(self, target: str) -> str | None:
        path = target_path(target, self._system_name)
        if path is None or (path.startswith(SYSTEM_PREFIX) and not self._allow_system):
            return None  # not cached: the cache holds only this system's own targets
        if path.startswith(TEMP_PREFIX) or len(target) > MAX_CACHED_TARGET_LENGTH:
            return path  # an ask's reply path is used once: caching it only crowds out the rest
        if len(self._paths) >= MAX_CACHED_TARGETS or self._paths_chars + len(target) > MAX_CACHED_TARGET_CHARS:
            self._paths.clear()
            self._paths_chars = 0
        self._paths[target] = path
        self._paths_chars += len(target)
        return path

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        log_inbound_drop(reason, self.dropped)
        origin = self.origin
        if origin is not None:
            origin.frame_dropped()


class OriginSink:
    """The message sink of one connection: runs the handler with ``origin`` set.

    It also holds the names the peer gave this connection (cap "hdr": ``names``, a
    :class:`~casty.transport.compact_codec.HeaderNames`), which its compact messages
    use; a bad entry or id closes the connection (``origin.misbehaving``).
    """

    __slots__ = ("_handler", "_origin", "names")

    def __init__(self, handler: InboundMessageHandler, origin: Any) -> None:
        self._handler = handler
        self._origin = origin
        self.names = HeaderNames()

    def on_entry(self, body: Any) -> None:
        """A header-table entry frame's body: recorded, or the connection refused."""
        why = self.names.add(body)
        if why is not None:
            refuse_connection(self._origin, why)

    def on_compact(self, body: Any) -> None:
        """A compact message frame's body: its ids checked against the table (a bad one
        refuses the connection), then delivered as the handler's ``on_compact``."""
        names = self.names.names
        size = len(body)
        if size < COMPACT_HEADER_SIZE:
            refuse_connection(self._origin, compact_problem(size, None, len(names)))
            return
        ids = COMPACT_HEAD.unpack_from(body)
        if max(ids) >= len(names):
            refuse_connection(self._origin, compact_problem(size, ids, len(names)))
            return
        handler = self._handler
        handler.origin = self._origin
        try:
            handler.on_compact(names[ids[0]], body)
        finally:
            handler.origin = None

    def on_frame(self, data: Any) -> None:
        handler = self._handler
        handler.origin = self._origin
        try:
            handler.on_frame(data)
        finally:
            handler.origin = None
