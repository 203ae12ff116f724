"""Actor references: the handle through which messages are told to an actor.

``tell`` is thread-safe on every ref an ActorSystem hands out: from a thread other
than the system's loop thread the message is handed to that loop, in the order the
thread told it (see ``casty.system`` and docs/architecture.md, "Threads").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from casty.address import ActorAddress

if TYPE_CHECKING:
    from casty.transport.local import MessageTransport

__all__ = ["ActorRef", "LocalActorRef", "RemoteActorRef"]

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)


@runtime_checkable
class ActorRef(Protocol[M_contra]):
    """What every actor reference offers: an ``id`` and ``tell``."""

    @property
    def id(self) -> str:
        """The actor's URI."""
        ...

    @property
    def address(self) -> ActorAddress:
        """The actor's address."""
        ...

    def tell(self, msg: M_contra) -> None:
        """Send ``msg`` to the actor, fire and forget."""
        ...


class _TransportRef(Generic[M]):
    """A reference that tells through a :class:`MessageTransport`; equal by address."""

    __slots__ = ("_transport", "address")

    def __init__(self, address: ActorAddress, _transport: MessageTransport) -> None:
        self.address = address
        self._transport = _transport

    @property
    def id(self) -> str:
        """The actor's URI (also its wire form)."""
        return self.address.to_uri()

    def tell(self, msg: M) -> None:
        """Send ``msg`` to the actor, fire and forget (from any thread)."""
        self._transport.deliver(self.address, msg)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _TransportRef):
            return self.address == other.address
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.address)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address.to_uri()!r})"

    def __reduce__(self) -> Any:
        # A ref travels as its URI; the transport does not.
        raise TypeError(f"{type(self).__name__} is sent by URI through a casty serializer, not pickled")


class LocalActorRef(_TransportRef[M]):
    """A reference to an actor in this process.

    >>> from casty.transport.local import LocalTransport
    >>> local = LocalTransport()
    >>> got = []
    >>> local.register("/user/a", got.append)
    >>> ref = LocalActorRef(ActorAddress("sys", "/user/a"), local)
    >>> ref.tell("hi"); got, ref.id
    (['hi'], 'casty://sys/user/a')
    """

    __slots__ = ()


class RemoteActorRef(_TransportRef[M]):
    """A reference to an actor on another node, told through a RemoteTransport."""

    __slots__ = ()
