"""InboundMessageHandler: message frames from peers, decoded and delivered inline.

This is the pure twin of ``casty._fast.inbound``; ``casty._impl`` picks one.  Both
decode the envelope, map its target URI to a local path (cached per target), decode
the payload and hand the message to ``LocalTransport.deliver_path``; a frame that
fails anywhere before delivery is dropped, counted and logged, and the connection
stays up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from casty.address import TEMP_PREFIX, ActorAddress, split_uri
from casty.ref import ActorRef
from casty.transport.envelope import MessageEnvelope

if TYPE_CHECKING:
    from casty.serialization import Serializer

__all__ = ["InboundMessageHandler", "log_inbound_drop", "target_path"]

log = logging.getLogger("casty.transport.inbound")

#: distinct targets remembered before the cache starts over (peers choose targets)
MAX_CACHED_TARGETS = 65536


def target_path(target: str, system_name: str) -> str | None:
    """The local path ``target`` names, or None when it is no actor URI of ``system_name``.

    >>> target_path("casty://app@10.0.0.1:25520/user/a", "app"), target_path("casty://other/user/a", "app")
    ('/user/a', None)
    """
    try:
        system, _, _, path = split_uri(target)
    except ValueError:
        return None
    return path if system == system_name else None


def not_ours(target: str, system_name: str) -> str:
    return f"target {target!r} is not an actor of system {system_name!r}"


def log_inbound_drop(reason: str, count: int) -> None:
    """Log a dropped inbound message: a warning at counts 1, 2, 4, 8, ..., debug otherwise."""
    if count & (count - 1) == 0:
        log.warning("dropped an inbound message: %s (%d dropped so far)", reason, count)
    else:
        log.debug("dropped an inbound message: %s", reason)


class InboundMessageHandler:
    """Deserializes inbound TCP frames and delivers them locally.

    Satisfies InboundHandler structurally; ``on_frame`` is the synchronous form
    the TCP node calls inline for every message frame (no task per message).
    A frame that fails to decode is logged, counted in ``dropped`` and dropped;
    the connection stays up.
    """

    def __init__(
        self,
        *,
        local: Any,
        serializer: Serializer,
        system_name: str,
        ref_factory: Callable[[ActorAddress], ActorRef[Any]] | None = None,
    ) -> None:
        self._local = local
        self._serializer = serializer
        self._system_name = system_name
        self.ref_factory = ref_factory
        self._paths: dict[str, str | None] = {}
        self.dropped = 0

    async def on_message(self, data: bytes) -> None:
        """Decode one message frame body and deliver it."""
        self.on_frame(data)

    def on_frame(self, data: Any) -> None:
        """Decode one message frame body (bytes-like) and deliver it, inline."""
        try:
            env = MessageEnvelope.from_bytes(data)
            path = self._paths.get(env.target, "")
            if path == "":
                path = self._path_of(env.target)
            if path is None:
                self._drop(not_ours(env.target, self._system_name))
                return
            msg = self._serializer.deserialize(env.payload, ref_factory=self.ref_factory)
        except ValueError as exc:  # EnvelopeDecodeError or SerializationError: bad peer bytes
            self._drop(str(exc))
            return
        self._local.deliver_path(path, msg)

    @property
    def cached_targets(self) -> int:
        """Targets whose path is remembered (ask reply paths never are)."""
        return len(self._paths)

    def _path_of(self, target: str) -> str | None:
        path = target_path(target, self._system_name)
        if path is not None and path.startswith(TEMP_PREFIX):
            return path  # an ask's reply path is used once: caching it only crowds out the rest
        if len(self._paths) >= MAX_CACHED_TARGETS:
            self._paths.clear()
        self._paths[target] = path
        return path

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        log_inbound_drop(reason, self.dropped)
