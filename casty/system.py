"""ActorSystem: spawns actors, routes to them by path, asks them, shuts them down.

Threads.  An ActorSystem runs on one event loop, the one it first spawned or asked
on (:attr:`ActorSystem.loop`).  From any other thread:

* ``ref.tell(msg)`` on any ref the system handed out (local, or remote on a
  RemoteActorSystem) is thread-safe: the delivery is handed to the system's loop
  with ``loop.call_soon_threadsafe``, so one thread's messages arrive in the order
  it told them, and handlers always run on the loop's thread;
* ``await system.ask(...)`` from a coroutine running on another loop (another
  thread's) is thread-safe: it runs on the system's loop and its result (or
  exception) is handed back.  From a plain thread with no loop, run it there:
  ``asyncio.run_coroutine_threadsafe(system.ask(...), system.loop).result()``;
* ``spawn`` raises RuntimeError saying so; ``stop``, ``shutdown`` and
  everything else (``lookup``, ``ctx.*``, the transports' other methods) belong to
  the loop's thread (use ``asyncio.run_coroutine_threadsafe``).

The check costs one ``threading.get_ident()`` per tell; telling from the loop's
thread is unchanged otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any, TypeVar

from casty._impl import LocalTransport
from casty.actor import ActorCell, validate_name
from casty.address import TEMP_PREFIX, ActorAddress, _trusted
from casty.ask_deadlines import AskDeadlines, AskFailed
from casty.behavior import SAME, UNHANDLED, Behavior
from casty.death_watch import DeathWatch
from casty.errors import SerializationError
from casty.ref import ActorRef, LocalActorRef
from casty.serialization import MsgpackSerializer, Serializer
from casty.transport.mailbox_rules import check_capacity
from casty.wire import SYSTEM_PREFIX

if TYPE_CHECKING:
    # Both twins share this interface; the pure one carries the type.
    from casty.transport.local import LocalTransport as LocalTransportType

__all__ = ["DEFAULT_MAILBOX_BYTES", "DEFAULT_MAILBOX_CAPACITY", "SERIALIZE_MESSAGES_ENV", "ActorSystem"]

log = logging.getLogger("casty.system")

M = TypeVar("M")
if TYPE_CHECKING:
    # A reply type mypy cannot solve (a lambda factory, whose parameter it types from
    # R itself) is Any: an unannotated `x = await system.ask(...)` infers, an annotated
    # one is checked against the message the factory builds.
    from typing_extensions import TypeVar as _DefaultingTypeVar

    R = _DefaultingTypeVar("R", default=Any)
else:
    R = TypeVar("R")

_BAD_SYSTEM_CHARS = frozenset("/@:[]")

DEFAULT_MAILBOX_CAPACITY = 65_536
"""Messages an actor's mailbox queues before local senders are refused and peers paused."""
DEFAULT_MAILBOX_BYTES = 64 * 1024 * 1024
"""Wire bytes of peers' messages an actor's mailbox queues before those peers are paused."""
_NUMBERS = (int, float)
SERIALIZE_MESSAGES_ENV = "CASTY_SERIALIZE_MESSAGES"
"""Set to ``1``/``true``/``yes`` to turn ``serialize_messages`` on in every system that
does not say otherwise (``0`` or empty leaves it off)."""
_TRUE = frozenset({"1", "true", "yes"})
_RANDOM_BATCH = 8 * 256  # bytes of randomness drawn at once: 256 reply paths


class ActorSystem:
    """A set of actors sharing one LocalTransport, addressed by path.

    Root actors live at ``/user/<name>``, their children below them.  Every
    live actor's path is registered in :attr:`local` with its mailbox, so a
    reference is just an address and a transport.

    >>> import casty
    >>> from casty.behavior import Behaviors
    >>> async def shout(ctx, msg):
    ...     text, reply_to = msg
    ...     reply_to.tell(text.upper())
    ...     return Behaviors.same()
    >>> async def main() -> str:
    ...     async with ActorSystem("demo") as system:
    ...         ref = system.spawn(Behaviors.receive(shout), "shouter")
    ...         return await system.ask(ref, lambda reply_to: ("hi", reply_to))
    >>> casty.run(main())
    'HI'

    ``stop_timeout`` is how long :meth:`shutdown` lets busy actors finish the
    message they are handling before it cancels them.  ``mailbox_capacity`` (0 =
    unbounded) is how many queued messages an actor's mailbox takes from local
    senders before the LocalTransport drops their messages (reason
    ``mailbox_full``); at that length a peer's reading is paused instead.
    ``mailbox_bytes`` (0 = unbounded) bounds the wire bytes of peers' messages
    queued in one mailbox: at that many a peer's reading is paused too (local
    senders are charged no bytes).  A paused peer is read again once the mailbox
    is down to half of both.

    ``serialize_messages=True`` is a test mode (Akka's ``serialize-messages``): every
    message told to a local actor (ask replies too) is serialized and decoded again
    with ``serializer`` before it is delivered, so a value that could not cross the wire
    fails in a unit test.  Such a ``tell`` raises the :class:`SerializationError` a
    remote send logs (``cannot send <type> to <uri>: ...``); an ask whose request fails
    so raises ``AskFailed(reason="send_failed")`` as a remote one does.  The actor gets
    the decoded copy.  Messages to ``/system/`` actors, which never travel, are
    exempt.  Left as None, the environment variable ``CASTY_SERIALIZE_MESSAGES``
    decides (off unless ``1``/``true``/``yes``).  ``serializer`` defaults to a
    :class:`~casty.MsgpackSerializer` with an empty registry: pass the one your nodes
    use.  When off (the default) tells pay nothing for it.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Job:
    ...     n: int
    >>> async def strict() -> str:
    ...     async with ActorSystem("test", serialize_messages=True) as system:
    ...         ref = system.spawn(Behaviors.receive(shout), "shouter")
    ...         try:
    ...             ref.tell(Job(1))
    ...         except casty.SerializationError as exc:
    ...             return str(exc).partition(": cannot serialize")[0]
    ...     return "sent"
    >>> casty.run(strict())
    'cannot send Job to casty://test/user/shouter'
    """

    def __init__(
        self,
        name: str = "casty-system",
        *,
        local_transport: LocalTransportType | None = None,
        stop_timeout: float = 5.0,
        mailbox_capacity: int = DEFAULT_MAILBOX_CAPACITY,
        mailbox_bytes: int = DEFAULT_MAILBOX_BYTES,
        serialize_messages: bool | None = None,
        serializer: Serializer | None = None,
    ) -> None:
        if not isinstance(name, str) or not name or any(
            ch in _BAD_SYSTEM_CHARS or ch.isspace() or not ch.isprintable() for ch in name
        ):
            raise ValueError(
                f"invalid actor system name {name!r}: must be non-empty, without whitespace "
                f"or any of / @ : [ ]"
            )
        if isinstance(stop_timeout, bool) or not isinstance(stop_timeout, int | float) or not (
            stop_timeout > 0
        ):
            raise ValueError(
                f"stop_timeout must be a positive number of seconds, got {stop_timeout!r}"
            )
        #: the capacity each actor's mailbox gets (0 = unbounded)
        self.mailbox_capacity = check_capacity(mailbox_capacity, "mailbox_capacity")
        #: the byte capacity each actor's mailbox gets, for peers' messages (0 = unbounded)
        self.mailbox_bytes = check_capacity(mailbox_bytes, "mailbox_bytes")
        self.name = name
        self._root = ActorAddress(name, "/")
        self.local: LocalTransportType = (
            local_transport if local_transport is not None else LocalTransport()
        )
        if serialize_messages is None:
            serialize_messages = os.environ.get(SERIALIZE_MESSAGES_ENV, "").strip().lower() in _TRUE
        elif not isinstance(serialize_messages, bool):
            raise TypeError(f"serialize_messages must be a bool or None, got {serialize_messages!r}")
        #: whether local tells go through the serializer (see the class docstring)
        self.serialize_messages = serialize_messages
        #: what local refs tell through: ``local`` itself, or a _SerializingTells around it
        self._tells: Any = self.local
        if serialize_messages:
            self._tells = _SerializingTells(
                self, serializer if serializer is not None else MsgpackSerializer()
            )
        self.stop_timeout = float(stop_timeout)
        self._cells: dict[str, ActorCell[Any]] = {}
        self._user: dict[str, ActorCell[Any]] = {}
        self._system_actors: dict[str, ActorCell[Any]] = {}
        self._ask_seq = 0
        # Random bits for reply paths, drawn in batches: a path must be unguessable (a peer
        # that could name it could answer the ask), and one getrandom() per ask costs more.
        self._ask_random = ""
        self._ask_random_at = 0
        #: reply path -> the node its ask went to (None: a local actor); None when not tracked
        self._reply_routes: dict[str, Any] | None = None
        #: reply path -> (reply future, target URI) of every pending ask, so one can fail fast
        self._asks: dict[str, tuple[asyncio.Future[Any], str]] = {}
        #: the reply path of the ask whose request is being told right now: a send failure
        #: reported during that call is that request's
        self._asking: str | None = None
        self._ask_loop: asyncio.AbstractEventLoop | None = None  # the loop asks last ran on
        self._ask_deadlines: AskDeadlines | None = None  # their timeouts, on that loop
        self._closing = False
        self._shutdown: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # see loop
        self._loop_thread: int | None = None  # get_ident() of the thread running it
        self._plain_refs = self._refs_are_plain()
        #: every actor's watches (ctx.watch); see casty.death_watch
        self.death_watch = DeathWatch(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, actors={len(self._cells)})"

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop this system runs on (the one it last spawned or asked on from
        its own thread), None before either; other threads hand work to it."""
        return self._loop

    def _bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop`` from now on (called on its thread): other threads' tells go to it."""
        self._loop = loop
        self._loop_thread = get_ident()
        if self.local.loop is not loop:
            self.local.bind_loop(loop)

    def _other_thread(self) -> asyncio.AbstractEventLoop | None:
        """The system's loop when it is running on a thread other than this one, else None."""
        loop = self._loop
        if loop is not None and get_ident() != self._loop_thread and loop.is_running():
            return loop
        return None

    async def __aenter__(self) -> ActorSystem:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()

    # -- hooks for subclasses (RemoteActorSystem) --------------------------------------

    def address_of(self, path: str) -> ActorAddress:
        """The address other code should use for the actor at ``path``."""
        return self._root_address().with_path(path)

    def _root_address(self) -> ActorAddress:
        """The address of this system's root, ``/``, as other code should use it."""
        return self._root

    def _refs_are_plain(self) -> bool:
        """True when a ref to one of this system's actors is a LocalActorRef on
        ``address_of(path)``: a subclass that overrides ``address_of`` or ``make_ref``
        gets its own refs everywhere, ask's reply ref included."""
        cls = type(self)
        return cls.address_of is ActorSystem.address_of and cls.make_ref is ActorSystem.make_ref

    def make_ref(self, address: ActorAddress) -> ActorRef[Any]:
        """A reference to ``address``; every ref the system hands out is built here."""
        return LocalActorRef(address, self._tells)

    def _watch_route(self, ref: ActorRef[Any]) -> tuple[str, int] | None:
        """The node of the actor ``ref`` names, None for this one (a watch's route);
        ValueError when this system cannot reach it."""
        address = ref.address
        if type(ref) is LocalActorRef and address.system == self.name:
            return None
        raise ValueError(f"cannot watch {ref!r}: not an actor of actor system {self.name!r}")

    # -- spawning ------------------------------------------------------------------------

    def spawn(self, behavior: Behavior[M], name: str) -> ActorRef[M]:
        """Start a root actor at ``/user/<name>`` and return its reference.

        Raises ValueError for an invalid name or one a live root actor has,
        RuntimeError outside a running event loop or after shutdown began.
        """
        return self._spawn_root(self._user, "/user", behavior, name)

    def _spawn_system_actor(self, behavior: Behavior[M], name: str) -> ActorRef[M]:
        """Start an infrastructure actor at ``/system/<name>``; stopped after user actors."""
        return self._spawn_root(self._system_actors, "/system", behavior, name)

    def _spawn_root(
        self, roots: dict[str, ActorCell[Any]], prefix: str, behavior: Behavior[M], name: str
    ) -> ActorRef[M]:
        validate_name(name)
        if name in roots:
            raise ValueError(f"an actor named {name!r} is already running at {prefix}/{name}")
        cell: ActorCell[M] = self._spawn_cell(behavior, f"{prefix}/{name}", None)
        roots[name] = cell
        return cell.ref

    def _spawn_cell(
        self, behavior: Behavior[M], path: str, parent: ActorCell[Any] | None
    ) -> ActorCell[M]:
        if not isinstance(behavior, Behavior) or behavior is SAME or behavior is UNHANDLED:
            raise TypeError(f"cannot spawn {path} with {behavior!r}: it needs a behaviour to run")
        if self._other_thread() is not None:
            raise RuntimeError(
                f"cannot spawn {path} from this thread: actor system {self.name!r} runs on an "
                f"event loop in another thread; spawn there, e.g. with "
                f"asyncio.run_coroutine_threadsafe(coro, system.loop)"
            )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                f"spawning {path} needs a running event loop; spawn from async code "
                f"(e.g. inside casty.run(main()))"
            ) from None
        if self._closing:
            raise RuntimeError(f"actor system {self.name!r} is shutting down; cannot spawn {path}")
        if loop is not self._loop:
            self._bind_loop(loop)
        cell = ActorCell(self, path, behavior, parent, loop)
        self._cells[path] = cell
        self.local.register(path, cell.mailbox)
        cell.start()
        return cell

    def _forget(self, cell: ActorCell[Any]) -> None:
        """Drop a terminated actor from every registry (its name becomes free)."""
        if self._cells.get(cell.path) is cell:
            del self._cells[cell.path]
        owner = cell.parent.children if cell.parent is not None else (
            self._system_actors if cell.path.startswith("/system/") else self._user
        )
        if owner.get(cell.name) is cell:
            del owner[cell.name]

    # -- finding and stopping -------------------------------------------------------------

    def lookup(self, path: str) -> ActorRef[Any] | None:
        """The reference of the live actor at ``path`` (e.g. ``/user/a/b``), else None."""
        cell = self._cells.get(path)
        if cell is None or cell.stopping:
            return None
        return cell.ref

    async def stop(self, ref: ActorRef[Any]) -> None:
        """Stop any actor of this system (its children first) and wait until it has stopped.

        The actor finishes the message it is handling; messages still queued are
        dropped.  Stopping an actor that is not running does nothing.  From inside
        an actor, use ``ctx.stop`` (an actor cannot wait for itself or an ancestor).
        """
        address = ref.address
        cell = self._cells.get(address.path) if address.system == self.name else None
        if cell is None:
            return
        current = asyncio.current_task()
        subtree = cell.path + "/"
        for path, other in self._cells.items():
            if other.task is current and (path == cell.path or path.startswith(subtree)):
                raise RuntimeError(
                    f"actor {path} cannot await stopping {cell.path}, which waits for it; "
                    f"use ctx.stop() instead"
                )
        cell.request_stop()
        await asyncio.shield(cell.terminated)

    # -- ask ------------------------------------------------------------------------------------

    async def ask(
        self,
        target: ActorRef[M],
        make_message: Callable[[ActorRef[R]], M],
        timeout: float = 5.0,
    ) -> R:
        """Send ``make_message(reply_to)`` to ``target`` and return the first reply.

        Typed: the message must be one ``target`` takes (mypy rejects a ``Job``
        asked of an ``ActorRef[KvMsg]``), and the result is the reply type, from an
        annotation (``value: str | None = await system.ask(...)``, checked against
        the reply ref the message takes) or a typed factory function; with a lambda
        and no annotation it is ``Any``.

        The reply ref points at a temporary path ``/temp/ask-<n>-<64 random bits>``
        (unguessable, never reused) that is unregistered once the reply arrived or
        the time ran out.  Raises :class:`~casty.AskFailed` at once when casty
        knows no reply can come: the request was not sent (``send_failed``), no actor
        lives at the target path (``dead_target``), the asked local actor stopped
        (``target_stopped``) or this system shuts down (``shutdown``); TimeoutError
        only when no reply came within ``timeout`` seconds.
        """
        # A float (the usual case) needs only the range check.
        bad_type = type(timeout) is not float and (
            isinstance(timeout, bool) or not isinstance(timeout, _NUMBERS)
        )
        if bad_type or not timeout > 0:
            raise ValueError(f"ask timeout must be a positive number of seconds, got {timeout!r}")
        if self._shutdown is not None and self._shutdown.done():
            raise AskFailed(
                getattr(target, "id", str(target)), "shutdown", f"actor system {self.name!r} is shut down"
            )
        if get_ident() != self._loop_thread and self._loop_thread is not None:
            home = self._other_thread()
            if home is not None:  # asked from another thread's loop: ask on the system's
                return await asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(self.ask(target, make_message, timeout), home)
                )
        cell = self._local_target(target)
        loop = self._ask_loop
        deadlines = self._ask_deadlines
        if loop is None or deadlines is None or not loop.is_running():
            # asyncio.get_running_loop() costs a getpid() syscall on 3.11, a few % of an ask.
            loop = self._ask_loop = asyncio.get_running_loop()
            if loop is not self._loop:
                self._bind_loop(loop)
            if deadlines is not None:
                deadlines.close()  # its loop is gone, and so are the asks it had
            deadlines = self._ask_deadlines = AskDeadlines(loop)
        path = f"{TEMP_PREFIX}ask-{self._ask_seq}-{self._ask_token()}"
        self._ask_seq += 1
        reply: asyncio.Future[R] = loop.create_future()

        def on_reply(msg: R) -> None:
            if not reply.done():
                reply.set_result(msg)

        self.local.register(path, on_reply)
        routes = self._reply_routes
        route = None
        if routes is not None:
            route = routes[path] = self._reply_route(target)
        entry = deadlines.add(timeout, reply, target)
        self._asks[path] = (reply, target.id)
        if cell is not None:
            def stopped(_: object, path: str = path) -> None:
                self._fail_ask(path, "target_stopped", f"{cell.path} stopped before it replied")
            cell.terminated.add_done_callback(stopped)
        if self._plain_refs:
            # What make_ref(address_of(path)) gives, built without the checks a path
            # from elsewhere needs: this runs once per ask.
            root = self._root_address()
            reply_to: ActorRef[R] = LocalActorRef(
                _trusted(root.system, path, root.host, root.port, root.node_id), self._tells
            )
        else:
            reply_to = self.make_ref(self.address_of(path))
        try:
            outer, self._asking = self._asking, path
            try:
                target.tell(make_message(reply_to))
            finally:
                self._asking = outer
            if route is not None and not reply.done():
                self._request_queued(path, route)
            return await reply
        finally:
            deadlines.answered(entry)
            self.local.unregister(path)
            del self._asks[path]
            if cell is not None:
                cell.terminated.remove_done_callback(stopped)
            if routes is not None:
                del routes[path]

    def _ask_token(self) -> str:
        """64 fresh random bits as 16 hex digits."""
        at = self._ask_random_at
        if at >= len(self._ask_random):
            self._ask_random = os.urandom(_RANDOM_BATCH).hex()
            at = 0
        self._ask_random_at = at + 16
        return self._ask_random[at:at + 16]

    def _local_target(self, target: ActorRef[Any]) -> ActorCell[Any] | None:
        """The live cell of ``target`` when it is an actor of this system; AskFailed when
        its path is dead (no actor will ever be there); None otherwise."""
        if type(target) is not LocalActorRef:
            return None
        address = target.address
        if address.system != self.name:
            return None
        cell = self._cells.get(address.path)
        if cell is not None and not cell.terminated.done():
            return cell
        if self.local.is_dead(address.path):
            raise AskFailed(target.id, "dead_target", f"no actor lives at {address.path}")
        return None

    def _fail_ask(self, path: str, reason: str, detail: str) -> None:
        """Fail the pending ask at reply path ``path`` (if it still waits) with AskFailed."""
        pending = self._asks.get(path)
        if pending is not None and not pending[0].done():
            pending[0].set_exception(AskFailed(pending[1], reason, detail))

    def _request_queued(self, path: str, route: Any) -> None:
        """Hook: the request of the ask at ``path`` went to the node at ``route``."""

    def _reply_route(self, target: ActorRef[Any]) -> Any:
        """The node an ask to ``target`` goes to, as reply checks compare it (None: local)."""
        return None

    # -- shutdown -------------------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop every actor (children first, user actors before system actors), idempotent.

        Each actor finishes the message it is handling and runs its post_stop
        hooks; actors still busy after ``stop_timeout`` are cancelled.  When this
        returns no actor Task is left.  Do not await it from inside an actor
        (that actor would wait for itself); stop the actor, or the system, from outside.
        """
        if self._shutdown is not None:
            await asyncio.shield(self._shutdown)
            return
        current = asyncio.current_task()
        for cell in self._cells.values():
            if cell.task is current:
                raise RuntimeError(
                    f"shutdown() awaited inside actor {cell.path} would wait for that actor itself"
                )
        self._closing = True
        self._shutdown = asyncio.get_running_loop().create_future()
        self._fail_all_asks()  # nothing answers an ask once actors stop: no caller waits its timeout
        try:
            await self._stop_all(self._user, "/user/")
            await self._stop_all(self._system_actors, "/system/")
        finally:
            # Nothing can answer them now: their callers should not wait out the timeout.
            self._fail_all_asks()
            deadlines = self._ask_deadlines
            if deadlines is not None:
                deadlines.close()
            self._shutdown.set_result(None)

    def _fail_all_asks(self) -> None:
        for path in list(self._asks):
            self._fail_ask(path, "shutdown", f"actor system {self.name!r} shut down before the ask got a reply")

    async def _stop_all(self, roots: dict[str, ActorCell[Any]], prefix: str) -> None:
        for cell in list(roots.values()):
            cell.request_stop()
        for attempt in range(3):
            pending = [c for p, c in self._cells.items() if p.startswith(prefix)]
            if not pending:
                return
            await asyncio.wait([c.terminated for c in pending], timeout=self.stop_timeout)
            stuck = [c for c in pending if not c.terminated.done()]
            if not stuck or attempt == 2:
                break
            log.warning("actor system %s: actors still busy after %gs, cancelling them: %s",
                        self.name, self.stop_timeout, ", ".join(c.path for c in stuck))
            for cell in stuck:
                # An actor waiting for its children finishes once they have, so its
                # post_stop still runs after theirs: only the busy ones are cancelled.
                waiting = cell.finalizing and any(
                    not child.terminated.done() for child in cell.children.values()
                )
                task = cell.task
                if task is not None and not task.done() and not waiting:
                    task.cancel()
        left = [p for p in self._cells if p.startswith(prefix)]
        if left:
            log.error("actor system %s: actors did not stop: %s", self.name, ", ".join(left))


class _SerializingTells:
    """What local refs tell through in the serialize-messages test mode: each message goes
    through the serializer and back before the LocalTransport routes the decoded copy."""

    __slots__ = ("_inside", "_serializer", "_system")

    def __init__(self, system: ActorSystem, serializer: Serializer) -> None:
        self._system = system
        self._serializer = serializer
        # Inside the LocalTransport's deliver (a handler run inline): a failure there is
        # that handler's own tell, not the request of the ask being sent.
        self._inside = False

    def deliver(self, address: ActorAddress, msg: Any) -> None:
        """Round-trip ``msg`` through the serializer, then deliver it locally."""
        # From another thread: _inside and the ask being sent are the loop thread's, so a
        # failure raises here, and the LocalTransport hands the delivery to the loop.
        foreign = self._system._other_thread() is not None
        if not address.path.startswith(SYSTEM_PREFIX):
            serializer = self._serializer
            try:
                msg = serializer.deserialize(serializer.serialize(msg), ref_factory=self._system.make_ref)
            except SerializationError as exc:
                self._failed(address, msg, exc, foreign)
                return
        if foreign:
            self._system.local.deliver(address, msg)
            return
        outer, self._inside = self._inside, True
        try:
            self._system.local.deliver(address, msg)
        finally:
            self._inside = outer

    def _failed(self, address: ActorAddress, msg: Any, exc: SerializationError, foreign: bool = False) -> None:
        """What a remote send does: an ask's request fails the ask; any other tell raises."""
        system = self._system
        what = type(msg).__qualname__
        asking = None if self._inside or foreign else system._asking
        if asking is not None:
            system._fail_ask(asking, "send_failed", f"serialization: {what}: {exc}")
            return
        raise SerializationError(f"cannot send {what} to {address.to_uri()}: {exc}") from exc
