"""Death watch: an actor asks to be told when another stops, here or on another node.

``ctx.watch(ref)`` makes the watching actor receive :class:`Terminated` ``(ref)`` as an
ordinary message in its mailbox (so a ``Behaviors.receive`` handler matches on it like
any other), exactly once: when the watched actor has stopped (children and
``post_stop`` hooks done), at once when no actor lives at that path, or when the
connection to its node is lost (its node down, or restarted).  ``ctx.unwatch(ref)``
stops that, and takes back a ``Terminated`` for ``ref`` still queued in the
watcher's mailbox (not while the mailbox holds peers' messages charged to its byte
bound, whose queue positions must not move).  Watching twice is one watch; an actor
watching itself is ignored.  A watcher's watches end when it stops.

A ``Terminated`` is put in the mailbox past ``mailbox_capacity`` (there is at most
one per watch), so it is never dropped for a full mailbox.

Remote watches (cap ``"watch"``, frame kind ``FRAME_WATCH``, body in
:mod:`casty.transport.watch_codec`) go over the connection that carries this node's
traffic to the watched node (dialed if there is none).  The watched node answers
*terminated* on the connection the watch came on, keeps at most
``max_remote_watches`` per connection (one more is answered *terminated* at once,
logged at powers of two of the count), and forgets a connection's watches when it
closes.  A *terminated* counts only on the connection its watch went out on, so no
other peer can forge it.  With a peer that does not speak ``"watch"`` (casty 0.21),
only the loss of the connection ends a watch.

>>> import asyncio, casty
>>> async def main() -> str:
...     async with casty.ActorSystem("demo") as system:
...         got = asyncio.get_running_loop().create_future()
...         async def watcher(ctx, msg):
...             if isinstance(msg, casty.Terminated):
...                 got.set_result(msg.ref.address.path)
...             else:
...                 ctx.watch(msg)
...                 await ctx.system.stop(msg)
...             return casty.Behaviors.same()
...         worker = system.spawn(casty.Behaviors.ignore(), "worker")
...         system.spawn(casty.Behaviors.receive(watcher), "watcher").tell(worker)
...         return await asyncio.wait_for(got, 5)
>>> casty.run(main())
'/user/worker'
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from casty.node_events import NodeDown, NodeEvent, NodeRestarted
from casty.ref import ActorRef
from casty.transport.frame_codec import encode_frame
from casty.transport.watch_codec import WatchFrameError, decode_watch, encode_watch
from casty.wire import (
    CAP_WATCH,
    DEFAULT_MAX_REMOTE_WATCHES,
    FRAME_WATCH,
    SYSTEM_PREFIX,
    TEMP_PREFIX,
    WATCH_TAG_TERMINATED,
    WATCH_TAG_UNWATCH,
    WATCH_TAG_WATCH,
)

if TYPE_CHECKING:
    from casty.actor import ActorCell
    from casty.system import ActorSystem
    from casty.transport.node import TcpNode, _Conn

__all__ = ["MAX_BAD_WATCH_FRAMES", "DeathWatch", "RemoteWatch", "Terminated"]

log = logging.getLogger("casty.death_watch")

Key = tuple[str, int]
#: what a watcher watches: (node key, None for this node; the watched actor's path)
Watched = tuple[Key | None, str]
#: bad watch frames a connection may send before it is closed as misbehaving
MAX_BAD_WATCH_FRAMES = 8


@dataclass(frozen=True, slots=True)
class Terminated:
    """The actor at ``ref`` (the ref given to ``ctx.watch``) stopped, never existed, or
    its node was lost."""

    ref: ActorRef[Any]


class DeathWatch:
    """The watches of one ActorSystem (``system.death_watch``); remote ones through
    :attr:`remote` once a RemoteActorSystem sets it."""

    def __init__(self, system: ActorSystem) -> None:
        self._system = system
        #: watcher path -> what it watches -> the ref it gave
        self._watching: dict[str, dict[Watched, ActorRef[Any]]] = {}
        #: path of a local watched actor -> paths of its local watchers
        self._local: dict[str, set[str]] = {}
        self.remote: RemoteWatch | None = None

    def counts(self) -> dict[str, int]:
        """How many entries each table holds (for leak checks)."""
        counts = {
            "watching": sum(len(w) for w in self._watching.values()),
            "local": sum(len(w) for w in self._local.values()),
        }
        if self.remote is not None:
            counts.update(self.remote.counts())
        return counts

    # -- the watcher's side --------------------------------------------------------

    def watch(self, cell: ActorCell[Any], ref: ActorRef[Any]) -> None:
        """``cell`` watches ``ref`` (see the module docstring)."""
        route, path = self._resolve(ref)
        if cell.finalizing or (route is None and path == cell.path):
            return
        key: Watched = (route, path)
        watching = self._watching.setdefault(cell.path, {})
        if key in watching:
            return
        watching[key] = ref
        if route is None:
            if path in self._system._cells:
                self._local.setdefault(path, set()).add(cell.path)
            else:
                self.fire(cell.path, key)
        elif self.remote is not None:
            self.remote.watch(route, path, cell.path)
        else:  # unreachable: only a RemoteActorSystem resolves a ref to a node
            self.fire(cell.path, key)

    def unwatch(self, cell: ActorCell[Any], ref: ActorRef[Any]) -> None:
        """``cell`` no longer watches ``ref``; a queued Terminated for it is taken back."""
        route, path = self._resolve(ref)
        key: Watched = (route, path)
        watching = self._watching.get(cell.path)
        if watching is not None and watching.pop(key, None) is not None:
            if not watching:
                del self._watching[cell.path]
            self._forget(cell.path, key)
        box = cell.mailbox
        if box.space_wanted:
            return  # sized messages are tracked by queue position: none may be removed
        queue = box.queue
        stale = [n for n, msg in enumerate(queue) if type(msg) is Terminated and msg.ref == ref]
        for n in reversed(stale):
            del queue[n]

    def _resolve(self, ref: ActorRef[Any]) -> Watched:
        address = getattr(ref, "address", None)
        path = getattr(address, "path", None)
        if not isinstance(path, str):
            raise ValueError(f"cannot watch {ref!r}: not an actor reference")
        return self._system._watch_route(ref), path

    def _forget(self, watcher: str, key: Watched) -> None:
        route, path = key
        if route is None:
            watchers = self._local.get(path)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._local[path]
        elif self.remote is not None:
            self.remote.unwatch(route, path, watcher)

    def fire(self, watcher: str, key: Watched) -> None:
        """Tell ``watcher`` that what it watches at ``key`` terminated, if it still watches it."""
        watching = self._watching.get(watcher)
        ref = None if watching is None else watching.pop(key, None)
        if ref is None:
            return  # unwatched, told already, or the watcher stopped
        if not watching:
            del self._watching[watcher]
        cell = self._system._cells.get(watcher)
        if cell is not None and not cell.finalizing:
            cell.mailbox.put(Terminated(ref))

    # -- lifecycle hooks (ActorCell._finalize) ----------------------------------------

    def watcher_stopping(self, path: str) -> None:
        """The actor at ``path`` is stopping: its watches end."""
        watching = self._watching.pop(path, None)
        if watching:
            for key in watching:
                self._forget(path, key)

    def stopped(self, path: str) -> None:
        """The actor at ``path`` has stopped: tell its watchers, here and on other nodes."""
        watchers = self._local.pop(path, None)
        if watchers:
            for watcher in list(watchers):
                self.fire(watcher, (None, path))
        if self.remote is not None:
            self.remote.stopped(path)

    def alive(self, path: str) -> bool:
        """True when an actor a peer may watch lives at ``path`` (not a system or reply path)."""
        return path in self._system._cells and not path.startswith((SYSTEM_PREFIX, TEMP_PREFIX))


class RemoteWatch:
    """The remote half of a :class:`DeathWatch`: the watch feature of one TcpNode.

    Watcher side: ``_out[node][(watched, watcher)]`` is the connection the watch went
    out on (None while waiting for one), ``_bound[conn]`` the nodes with watches on it.
    Watched side: ``_in[conn]`` the (watched, watcher) pairs a peer holds over that
    connection, ``_in_by_path[watched]`` the same by watched path.
    """

    def __init__(
        self, watch: DeathWatch, node: TcpNode, *, max_remote_watches: int = DEFAULT_MAX_REMOTE_WATCHES
    ) -> None:
        if isinstance(max_remote_watches, bool) or not isinstance(max_remote_watches, int) or (
            max_remote_watches < 0
        ):
            raise ValueError(f"max_remote_watches must be a non-negative int, got {max_remote_watches!r}")
        self.max_remote_watches = max_remote_watches
        self._watch = watch
        self._node = node
        self._out: dict[Key, dict[tuple[str, str], _Conn | None]] = {}
        self._bound: dict[_Conn, set[Key]] = {}
        self._in: dict[_Conn, set[tuple[str, str]]] = {}
        self._in_by_path: dict[str, set[tuple[_Conn, str]]] = {}
        self._bad: dict[_Conn, int] = {}
        self._refused = 0
        watch.remote = self
        node.add_feature(CAP_WATCH, [FRAME_WATCH], self.on_frame)
        node.add_connect_listener(self._connected)
        node.add_close_listener(self._closed)
        node.add_dial_failure_listener(self._dial_failed)
        node.add_node_listener(self._node_event)

    def counts(self) -> dict[str, int]:
        return {
            "remote_out": sum(len(w) for w in self._out.values()),
            "remote_bound": len(self._bound),
            "remote_in": sum(len(w) for w in self._in.values()),
            "remote_in_by_path": sum(len(w) for w in self._in_by_path.values()),
        }

    # -- watcher side --------------------------------------------------------------

    def watch(self, node: Key, watched: str, watcher: str) -> None:
        entries = self._out.setdefault(node, {})
        conn = self._node.connection_to(node)
        if conn is not None:
            self._send_watch(node, conn, watched, watcher, entries)
            return
        entries[(watched, watcher)] = None
        if not self._node.dial(node):
            self._fire(node, watched, watcher)  # no connection can be made now: the node is lost

    def _send_watch(
        self, node: Key, conn: _Conn, watched: str, watcher: str, entries: dict[tuple[str, str], _Conn | None]
    ) -> None:
        entries[(watched, watcher)] = conn
        self._bound.setdefault(conn, set()).add(node)
        if CAP_WATCH in conn.caps and not conn.proto.send_control(
            _frame(WATCH_TAG_WATCH, watched, watcher)
        ):
            self._fire(node, watched, watcher)  # closed under us: its close listener has run

    def unwatch(self, node: Key, watched: str, watcher: str) -> None:
        entries = self._out.get(node)
        if entries is None or (watched, watcher) not in entries:
            return
        conn = entries.pop((watched, watcher))
        self._drop_empty(node, entries, conn)
        if conn is not None and CAP_WATCH in conn.caps and not conn.proto.closed:
            conn.proto.send_control(_frame(WATCH_TAG_UNWATCH, watched, watcher))

    def _drop_empty(self, node: Key, entries: dict[tuple[str, str], _Conn | None], conn: _Conn | None) -> None:
        if not entries:
            self._out.pop(node, None)
        if conn is not None and not any(c is conn for c in entries.values()):
            nodes = self._bound.get(conn)
            if nodes is not None:
                nodes.discard(node)
                if not nodes:
                    del self._bound[conn]

    def _fire(self, node: Key, watched: str, watcher: str, *, tell_peer: bool = False) -> None:
        """End the watch and tell the watcher; ``tell_peer``: unwatch it on the connection it
        went out on, if that is still open (the peer would otherwise hold it until then)."""
        entries = self._out.get(node)
        if entries is not None and (watched, watcher) in entries:
            conn = entries.pop((watched, watcher))
            self._drop_empty(node, entries, conn)
            if tell_peer and conn is not None and CAP_WATCH in conn.caps and not conn.proto.closed:
                conn.proto.send_control(_frame(WATCH_TAG_UNWATCH, watched, watcher))
        self._watch.fire(watcher, (node, watched))

    def _connected(self, node: Key) -> None:
        """A connection carrying our traffic to ``node`` is up: send the watches waiting for it."""
        entries = self._out.get(node)
        conn = self._node.connection_to(node)
        if not entries or conn is None:
            return
        for (watched, watcher), sent_on in list(entries.items()):
            if sent_on is None:
                self._send_watch(node, conn, watched, watcher, entries)

    def node_lost(self, host: str, port: int, new_uid: int | None = None) -> None:
        """The node at host:port is down, or restarted as ``new_uid``: its watches fire,
        but for those sent on an open connection to the new incarnation (made after it)."""
        node = (host, port)
        entries = self._out.get(node)
        if not entries:
            return
        for (watched, watcher), conn in list(entries.items()):
            if conn is not None and not conn.proto.closed and (new_uid is None or conn.uid == new_uid):
                continue
            self._fire(node, watched, watcher, tell_peer=True)

    def _dial_failed(self, node: Key) -> None:
        """A dial to ``node`` failed: the watches waiting for a connection to it fire."""
        entries = self._out.get(node)
        if entries:
            for (watched, watcher), sent_on in list(entries.items()):
                if sent_on is None:
                    self._fire(node, watched, watcher)

    def _node_event(self, event: NodeEvent) -> None:
        if isinstance(event, NodeDown):
            self.node_lost(event.host, event.port)
        elif isinstance(event, NodeRestarted):
            self.node_lost(event.host, event.port, event.new_uid)

    def _closed(self, conn: _Conn) -> None:
        """A connection is gone: watches sent on it fire; watches held for its peer end."""
        self._bad.pop(conn, None)
        for node in self._bound.pop(conn, ()):
            entries = self._out.get(node)
            if entries is None:
                continue
            for pair, sent_on in list(entries.items()):
                if sent_on is conn:
                    self._fire(node, *pair)
        for watched, watcher in self._in.pop(conn, ()):
            held = self._in_by_path.get(watched)
            if held is not None:
                held.discard((conn, watcher))
                if not held:
                    del self._in_by_path[watched]

    # -- watched side ----------------------------------------------------------------

    def stopped(self, path: str) -> None:
        """The local actor at ``path`` stopped: answer every peer's watch of it."""
        held = self._in_by_path.pop(path, None)
        if not held:
            return
        for conn, watcher in held:
            pairs = self._in.get(conn)
            if pairs is not None:
                pairs.discard((path, watcher))
                if not pairs:
                    del self._in[conn]
            conn.proto.send_control(_frame(WATCH_TAG_TERMINATED, path, watcher))

    def on_frame(self, conn: _Conn, kind: int, body: bytes) -> None:
        """A watch frame from the peer of ``conn`` (the feature handler): never raises."""
        try:
            tag, watched, watcher = decode_watch(body)
        except WatchFrameError as exc:
            bad = self._bad[conn] = self._bad.get(conn, 0) + 1
            log.debug("bad watch frame from %s: %s", conn.proto.peername, exc)
            if bad >= MAX_BAD_WATCH_FRAMES:
                self._node.misbehaving(conn.proto, f"{bad} bad watch frames ({exc})")
            return
        if tag == WATCH_TAG_WATCH:
            self._peer_watches(conn, watched, watcher)
        elif tag == WATCH_TAG_UNWATCH:
            pairs = self._in.get(conn)
            if pairs is not None and (watched, watcher) in pairs:
                pairs.discard((watched, watcher))
                if not pairs:
                    del self._in[conn]
                held = self._in_by_path[watched]
                held.discard((conn, watcher))
                if not held:
                    del self._in_by_path[watched]
        else:
            self._terminated(conn, watched, watcher)

    def _peer_watches(self, conn: _Conn, watched: str, watcher: str) -> None:
        pairs = self._in.get(conn)
        if pairs is not None and (watched, watcher) in pairs:
            return
        if not self._watch.alive(watched):
            conn.proto.send_control(_frame(WATCH_TAG_TERMINATED, watched, watcher))
            return
        if pairs is not None and len(pairs) >= self.max_remote_watches:
            self._refused += 1
            n = self._refused
            if n & (n - 1) == 0:
                log.warning(
                    "refused a watch from %s: it holds %d (max_remote_watches); answered terminated; "
                    "%d refused so far", conn.proto.peername, len(pairs), n,
                )
            conn.proto.send_control(_frame(WATCH_TAG_TERMINATED, watched, watcher))
            return
        if pairs is None:
            if conn.proto.closed:
                return  # its close listener has run: nothing would forget this entry
            pairs = self._in[conn] = set()
        pairs.add((watched, watcher))
        self._in_by_path.setdefault(watched, set()).add((conn, watcher))

    def _terminated(self, conn: _Conn, watched: str, watcher: str) -> None:
        """Taken only for a watch that went out on ``conn``: nothing else can end it."""
        for node in list(self._bound.get(conn, ())):
            entries = self._out.get(node)
            if entries is not None and entries.get((watched, watcher)) is conn:
                self._fire(node, watched, watcher)
                return
        log.debug("terminated for an unknown watch from %s (unwatched meanwhile?)", conn.proto.peername)


def _frame(tag: int, watched: str, watcher: str) -> bytes:
    return encode_frame(FRAME_WATCH, encode_watch(tag, watched, watcher))
