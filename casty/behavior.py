"""Behaviours: what an actor does with its next message.

A behaviour is an immutable value.  The handler of a :meth:`Behaviors.receive`
behaviour returns the behaviour for the next message: :meth:`Behaviors.same`
keeps the current one, :meth:`Behaviors.stopped` stops the actor, any other
behaviour replaces the current one (so state lives in closures, not fields).

>>> async def counter_handler(ctx, msg):
...     return Behaviors.same()
>>> b = Behaviors.receive(counter_handler)
>>> isinstance(b, Behavior), Behaviors.same() is Behaviors.same()
(True, True)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from casty.context import ActorContext

__all__ = [
    "Behavior",
    "Behaviors",
    "IgnoreBehavior",
    "LifecycleBehavior",
    "ReceiveBehavior",
    "SetupBehavior",
    "SupervisedBehavior",
]

M = TypeVar("M")

Handler = Callable[["ActorContext[M]", M], Awaitable["Behavior[M]"]]
Factory = Callable[["ActorContext[M]"], Awaitable["Behavior[M]"]]
Hook = Callable[["ActorContext[M]"], Awaitable[None]]


class Behavior(Generic[M]):
    """Base class of every behaviour; build them with :class:`Behaviors`."""

    __slots__ = ()


class ReceiveBehavior(Behavior[M]):
    """Handle each message with ``handler(ctx, msg)``, which returns the next behaviour."""

    __slots__ = ("handler",)

    def __init__(self, handler: Handler[M]) -> None:
        if not callable(handler):
            raise TypeError(
                f"Behaviors.receive needs an async callable (ctx, msg), got {handler!r}"
            )
        # An ``async def`` (the usual case) is used as it is; anything else is checked per
        # call, so a plain ``def`` that returns a behaviour says what to do, not "can't be
        # used in 'await' expression".
        self.handler = handler if _is_async(handler) else _checked(handler)

    def __repr__(self) -> str:
        return f"Behaviors.receive({_name(getattr(self.handler, '__wrapped__', self.handler))})"


def _is_async(fn: object) -> bool:
    # A callable object whose __call__ is an async def counts too.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _checked(handler: Handler[M]) -> Handler[M]:
    @functools.wraps(handler)
    def call(ctx: Any, msg: M) -> Any:
        result = handler(ctx, msg)
        if not inspect.isawaitable(result):
            raise TypeError(
                f"the handler {_name(handler)} given to Behaviors.receive returned "
                f"{_shown(result)} instead of an awaitable: define it with 'async def' "
                f"(async def handler(ctx, msg): ... return Behaviors.same())"
            )
        return result

    return call


class SetupBehavior(Behavior[M]):
    """Run ``factory(ctx)`` when the actor starts (and on supervised restart)."""

    __slots__ = ("factory",)

    def __init__(self, factory: Factory[M]) -> None:
        if not callable(factory):
            raise TypeError(f"Behaviors.setup needs an async callable (ctx), got {factory!r}")
        self.factory = factory

    def __repr__(self) -> str:
        return f"Behaviors.setup({_name(self.factory)})"


class LifecycleBehavior(Behavior[M]):
    """``behavior`` with hooks run when it starts and when the actor stops."""

    __slots__ = ("behavior", "post_stop", "pre_start")

    def __init__(
        self, behavior: Behavior[M], pre_start: Hook[M] | None, post_stop: Hook[M] | None
    ) -> None:
        _check_behavior("Behaviors.with_lifecycle", behavior)
        for hook_name, hook in (("pre_start", pre_start), ("post_stop", post_stop)):
            if hook is not None and not callable(hook):
                raise TypeError(
                    f"{hook_name} must be an async callable (ctx) or None, got {hook!r}"
                )
        self.behavior = behavior
        self.pre_start = pre_start
        self.post_stop = post_stop

    def __repr__(self) -> str:
        return f"Behaviors.with_lifecycle({self.behavior!r})"


class SupervisedBehavior(Behavior[M]):
    """``behavior``, restarted (re-created from scratch) when its handler raises."""

    __slots__ = ("behavior", "max_restarts", "within")

    def __init__(self, behavior: Behavior[M], max_restarts: int, within: float) -> None:
        _check_behavior("Behaviors.supervise", behavior)
        if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
            raise ValueError(f"max_restarts must be a non-negative int, got {max_restarts!r}")
        if isinstance(within, bool) or not isinstance(within, int | float) or not within > 0:
            raise ValueError(f"within must be a positive number of seconds, got {within!r}")
        self.behavior = behavior
        self.max_restarts = max_restarts
        self.within = float(within)

    def __repr__(self) -> str:
        return (
            f"Behaviors.supervise({self.behavior!r}, max_restarts={self.max_restarts}, "
            f"within={self.within})"
        )


class IgnoreBehavior(Behavior[Any]):
    """Swallow every message."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Behaviors.ignore()"


class _Marker(Behavior[Any]):
    """A directive returned by a handler (same, stopped, unhandled); not a running behaviour."""

    __slots__ = ("_label",)

    def __init__(self, label: str) -> None:
        self._label = label

    def __repr__(self) -> str:
        return f"Behaviors.{self._label}()"


SAME: Behavior[Any] = _Marker("same")
STOPPED: Behavior[Any] = _Marker("stopped")
UNHANDLED: Behavior[Any] = _Marker("unhandled")
IGNORE: Behavior[Any] = IgnoreBehavior()


class Behaviors:
    """Factories for every kind of behaviour.

    >>> async def start(ctx):
    ...     return Behaviors.ignore()
    >>> Behaviors.supervise(Behaviors.setup(start), max_restarts=3)
    Behaviors.supervise(Behaviors.setup(start), max_restarts=3, within=60.0)
    """

    __slots__ = ()

    @staticmethod
    def receive(handler: Handler[M]) -> Behavior[M]:
        """Handle each message with ``async handler(ctx, msg) -> Behavior``."""
        return ReceiveBehavior(handler)

    @staticmethod
    def setup(factory: Factory[M]) -> Behavior[M]:
        """Run ``async factory(ctx) -> Behavior`` once when the actor starts.

        It runs again when a supervised actor restarts.  The behaviour it returns
        is the one that handles messages.
        """
        return SetupBehavior(factory)

    @staticmethod
    def same() -> Behavior[Any]:
        """Returned from a handler: keep the current behaviour."""
        return SAME

    @staticmethod
    def stopped() -> Behavior[Any]:
        """Returned from a handler (or setup): stop the actor."""
        return STOPPED

    @staticmethod
    def ignore() -> Behavior[Any]:
        """Swallow every message."""
        return IGNORE

    @staticmethod
    def unhandled() -> Behavior[Any]:
        """Returned from a handler: the message was not handled.

        It is logged at DEBUG on ``casty.actor`` with the actor path and the
        message type; the behaviour stays as it was.
        """
        return UNHANDLED

    @staticmethod
    def with_lifecycle(
        behavior: Behavior[M],
        pre_start: Hook[M] | None = None,
        post_stop: Hook[M] | None = None,
    ) -> Behavior[M]:
        """Wrap ``behavior`` with ``async hook(ctx)`` lifecycle hooks.

        ``pre_start`` runs when the behaviour starts, before any message.
        ``post_stop`` runs when the actor stops for any reason (stopped behaviour,
        ``ctx.stop``, its parent stopping, system shutdown, an unsupervised
        failure), after its children have stopped, and only if ``pre_start``
        completed.  Inside :meth:`supervise`, the hooks belong to one incarnation:
        a restart runs ``post_stop`` of the failed one and ``pre_start`` of the next.
        """
        return LifecycleBehavior(behavior, pre_start, post_stop)

    @staticmethod
    def supervise(
        behavior: Behavior[M], *, max_restarts: int = 10, within: float = 60.0
    ) -> Behavior[M]:
        """Restart the actor when its handler (or setup) raises.

        A restart logs the exception with the actor path, stops the actor's
        children, and re-creates the behaviour from ``behavior`` (re-running
        setup); the mailbox is kept and processing goes on with the next
        message.  A failure that would be the ``max_restarts + 1``-th restart
        within ``within`` seconds stops the actor instead (logged).
        """
        return SupervisedBehavior(behavior, max_restarts, within)


def _check_behavior(where: str, behavior: object) -> None:
    if not isinstance(behavior, Behavior):
        raise TypeError(f"{where} needs a Behavior, got {type(behavior).__name__}: {behavior!r}")
    if isinstance(behavior, _Marker):
        raise TypeError(f"{where} needs a behaviour to run, not the directive {behavior!r}")


def _shown(value: object) -> str:
    if isinstance(value, Behavior):
        return repr(value)
    return f"a {type(value).__name__}"


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or repr(fn))
