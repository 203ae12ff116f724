"""ActorContext: what a behaviour can reach from inside its actor."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from casty.ref import ActorRef

if TYPE_CHECKING:
    from casty.actor import ActorCell
    from casty.behavior import Behavior
    from casty.system import ActorSystem

__all__ = ["ActorContext", "ActorLogger"]

M = TypeVar("M")
C = TypeVar("C")

_actor_log = logging.getLogger("casty.actor")


class ActorLogger(logging.LoggerAdapter[logging.Logger]):
    """A ``casty.actor`` logger that prefixes messages with the actor path.

    Records also carry the path as ``record.actor_path``, for formatters and filters.
    """

    def __init__(self, path: str, logger: logging.Logger = _actor_log) -> None:
        super().__init__(logger, {"actor_path": path})
        self.path = path

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "actor_path": self.path}
        return f"[{self.path}] {msg}", kwargs


class ActorContext(Generic[M]):
    """Handed to every handler and hook: the actor's own ref, its system, children, log.

    ``self`` is the actor's reference, ``system`` the ActorSystem it runs in, and
    ``log`` a logger (``casty.actor``) whose records name the actor path.
    """

    __slots__ = ("_cell", "log", "self", "system")

    def __init__(self, cell: ActorCell[M], ref: ActorRef[M], system: ActorSystem) -> None:
        self._cell = cell
        self.self = ref
        self.system = system
        self.log = ActorLogger(cell.path)

    @property
    def path(self) -> str:
        """The actor's path, e.g. ``/user/parent/child``."""
        return self._cell.path

    @property
    def parent(self) -> ActorRef[Any] | None:
        """The parent's reference; None for a root actor."""
        parent = self._cell.parent
        return None if parent is None else parent.ref

    @property
    def children(self) -> dict[str, ActorRef[Any]]:
        """The children not yet fully stopped, name to reference (a snapshot)."""
        return {name: cell.ref for name, cell in self._cell.children.items()}

    def spawn(self, behavior: Behavior[C], name: str) -> ActorRef[C]:
        """Start a child actor at ``<this path>/<name>`` and return its reference.

        Raises ValueError when ``name`` is invalid or a child already has it (a
        stopped child's name is free once it has finished stopping), RuntimeError
        when this actor is stopping.
        """
        return self._cell.spawn_child(behavior, name)

    def stop(self, ref: ActorRef[Any]) -> None:
        """Stop this actor or one of its children (children of the stopped actor first).

        This actor stops after the current message; a child stops after the
        message it is handling.  Anything else raises ValueError.
        """
        self._cell.stop_ref(ref)

    def watch(self, ref: ActorRef[Any]) -> None:
        """Receive ``casty.Terminated(ref)`` once, as a message, when the actor at ``ref``
        (here or on another node) stops, does not exist, or its node is lost.

        Watching a ref again is one watch; watching ``self`` is ignored.  See
        :mod:`casty.death_watch`.  ValueError for something that is not a ref this
        system can reach.
        """
        self.system.death_watch.watch(self._cell, ref)

    def unwatch(self, ref: ActorRef[Any]) -> None:
        """Stop watching ``ref``: no ``Terminated(ref)`` comes after this (one still queued
        is taken back, see :mod:`casty.death_watch`).  Unwatching what is not watched
        does nothing."""
        self.system.death_watch.unwatch(self._cell, ref)

    def __repr__(self) -> str:
        return f"ActorContext({self._cell.path!r})"
