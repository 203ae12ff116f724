# cython: language_level=3
"""LocalTransport in Cython: the twin of ``casty.transport.local``.

Routing rules (the same as the pure twin, whose module docstring has them in full):

1. a handler is registered for the path: call it with ``msg`` (an actor's Mailbox
   at ``capacity`` messages: ``deliver`` drops the message as ``mailbox_full``;
   ``deliver_path`` always queues it, charging the mailbox ``nbytes`` when known,
   and returns the mailbox when it is now full in messages or bytes, for the peer
   to pause; local senders are charged no bytes);
2. the path was unregistered (a dead actor): drop;
3. the path is under ``/temp/`` (an ask's reply path): drop (``no_such_ask``),
   never buffered, never given to a factory;
4. a path factory's prefix matches: call the factory, then route again once
   (handler, else dead-drop, else on to the buffer);
5. the path's pending buffer has room in messages, paths and total bytes
   (``nbytes``, else the shallow ``sys.getsizeof(msg)``): buffer (flushed in order
   by ``register``, dropped as ``expired`` after ``pending_ttl``: one loop timer
   for the oldest buffer, or lazily at the next deliver/register without a loop);
6. otherwise drop.

Rule 1 is the hot path: one attribute read, one borrowed dict lookup, one call
(a Mailbox is put into at C level, its capacity read from its struct; a peer's
sized message goes through the Mailbox's C-level ``put_sized_c``).  Drops are
counted and logged by the pure module's ``log_drop``, and the rare paths (limit
checks, waking waiters, ``wait_for_path``, buffer bookkeeping) use the pure
module's helpers, so the two twins cannot drift apart there.

Handlers and factories run inline: whatever they raise propagates to the caller
of ``deliver`` (or of ``register``, for a flushed message).  Once ``bind_loop`` named
the handlers' loop, ``deliver`` from another thread is handed to it (the pure twin's
module docstring says how); the check is one C-level thread id read.
"""

from cpython.dict cimport PyDict_GetItemWithError, PyDict_Size
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport PyObject

from casty._fast.mailbox cimport Mailbox, ReadState

from asyncio import AbstractEventLoop, events
from threading import get_ident
from collections import OrderedDict
from math import inf
from sys import getsizeof
from time import monotonic
from types import MemberDescriptorType

from casty.address import TEMP_PREFIX, ActorAddress
from casty.transport.local import (
    DROP_DEAD,
    DROP_EXPIRED,
    DROP_MAILBOX_FULL,
    DROP_NO_SUCH_ASK,
    DROP_OVERFLOW,
    DROP_PENDING_BYTES,
    DROP_REASONS,
    DROP_STOPPED,
    DROP_TOO_MANY_PATHS,
    TIMER_SLACK,
    MessageTransport,
    PendingBuffer,
    check_limit,
    check_ttl,
    hand_to_loop,
    log_drop,
    log_expired,
    log_flush_error,
    wait_registered,
    wake_waiters,
)

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
    ctypedef struct _MemberDef "PyMemberDef":
        int type
        Py_ssize_t offset
    ctypedef struct _MemberDescr "PyMemberDescrObject":
        _MemberDef* d_member
    ctypedef struct _TypeObject "PyTypeObject":
        unsigned int tp_version_tag
    _TypeObject* _type_of "Py_TYPE"(object o)

cdef extern from "structmember.h":
    const int T_OBJECT_EX

# ``address.path`` read straight from its slot when ``address`` is exactly an
# ActorAddress whose class is unchanged since import (same nonzero version tag:
# CPython resets it whenever a class attribute changes).  Anything else --
# subclasses, duck-typed addresses, a patched class -- goes through getattr.
cdef object _ADDRESS_TYPE = ActorAddress
cdef Py_ssize_t _PATH_OFFSET = -1
cdef unsigned int _ADDRESS_TAG = 0


cdef int _init_path_slot() except -1:
    global _PATH_OFFSET, _ADDRESS_TAG
    descr = getattr(ActorAddress, "path", None)  # the lookup also assigns a version tag
    if type(descr) is MemberDescriptorType and (<_MemberDescr*>descr).d_member.type == T_OBJECT_EX:
        _PATH_OFFSET = (<_MemberDescr*>descr).d_member.offset
        _ADDRESS_TAG = (<_TypeObject*>_ADDRESS_TYPE).tp_version_tag
    return 0


_init_path_slot()


cdef inline object _path_of(object address):
    cdef _TypeObject* tp = _type_of(address)
    cdef PyObject* path
    if _ADDRESS_TAG != 0 and tp is <_TypeObject*>_ADDRESS_TYPE and tp.tp_version_tag == _ADDRESS_TAG:
        path = (<PyObject**>((<char*><PyObject*>address) + _PATH_OFFSET))[0]
        if path is not NULL:
            return <object>path
    return address.path  # also raises the AttributeError of an unset slot


__all__ = [
    "DROP_DEAD",
    "DROP_EXPIRED",
    "DROP_MAILBOX_FULL",
    "DROP_NO_SUCH_ASK",
    "DROP_OVERFLOW",
    "DROP_PENDING_BYTES",
    "DROP_STOPPED",
    "DROP_TOO_MANY_PATHS",
    "LocalTransport",
    "MessageTransport",
]


cdef inline object _hand(object handler, object msg, Py_ssize_t nbytes):
    """``handler(msg)``; an actor's Mailbox (the usual handler) is put into at C level,
    charged ``nbytes`` when that is known (>= 0), and returned when it is now full.
    Else None."""
    cdef Mailbox box
    if type(handler) is Mailbox:
        box = <Mailbox>handler
        if nbytes >= 0:
            return box if box.put_sized_c(msg, nbytes) else None
        box.put_c(msg)
        return box if box.full_c() else None
    handler(msg)
    return None


cdef Py_ssize_t _limit(str name, object value) except -1:
    # A limit above what a length can reach behaves exactly like no limit.
    value = check_limit(name, value)
    return PY_SSIZE_T_MAX if value > PY_SSIZE_T_MAX else <Py_ssize_t>value


cdef class LocalTransport:
    """In-process message transport that routes by actor path.

    Messages to unregistered paths are buffered (bounded, expiring: see the module)
    until a handler registers; messages to unregistered (dead) paths are dropped.

    >>> transport = LocalTransport()
    >>> received = []
    >>> transport.register("/user/actor", received.append)
    >>> transport.deliver(ActorAddress(system="sys", path="/user/actor"), "hello")
    >>> received
    ['hello']

    ``max_dead_paths`` bounds the memory of dead paths (the least recently
    unregistered is forgotten first), ``max_pending_paths`` how many distinct
    unregistered paths may hold a buffer, ``max_pending_bytes`` the bytes charged
    to all buffers together, and ``pending_ttl`` how long a buffer waits for its
    handler.  Handlers run inline: an exception a handler raises propagates to the
    caller of :meth:`deliver`.
    """

    cdef dict _handlers
    cdef object _pending  # OrderedDict, oldest first; never holds an empty buffer
    cdef Py_ssize_t _pending_bytes
    cdef object _timer  # expires the oldest buffer
    cdef object _timer_loop
    cdef object _dead  # OrderedDict as an ordered set: oldest evicted first, in O(1)
    cdef list _factories
    cdef readonly dict _waiters  # readable so tests can see cancelled waiters leave nothing
    cdef public dict drops
    cdef readonly ReadState read_state  # set by frame splitters, read by mailboxes (see the pure twin)
    cdef Py_ssize_t _max_pending
    cdef Py_ssize_t _max_pending_paths
    cdef Py_ssize_t _max_dead
    cdef Py_ssize_t _max_pending_bytes
    cdef double _ttl
    cdef object _loop  # the loop handlers run on (bind_loop), or None
    cdef unsigned long _loop_thread  # the thread running it; read only when _loop is set
    cdef object __weakref__

    def __cinit__(self, *args, **kwargs):
        # Set up here too so a subclass that skips __init__ cannot reach a NULL dict.
        self._ttl = 5.0
        self._max_pending_bytes = 8 * 1024 * 1024
        self.read_state = ReadState()
        self._reset()

    def __init__(
        self,
        *,
        max_pending_per_path=64,
        max_pending_paths=10_000,
        max_dead_paths=100_000,
        max_pending_bytes=8 * 1024 * 1024,
        pending_ttl=5.0,
    ):
        self._max_pending = _limit("max_pending_per_path", max_pending_per_path)
        self._max_pending_paths = _limit("max_pending_paths", max_pending_paths)
        self._max_dead = _limit("max_dead_paths", max_dead_paths)
        self._max_pending_bytes = _limit("max_pending_bytes", max_pending_bytes)
        self._ttl = check_ttl(pending_ttl)
        self._reset()

    cdef int _reset(self) except -1:
        self._handlers = {}
        self._pending = OrderedDict()
        self._pending_bytes = 0
        self._timer = self._timer_loop = None
        self._dead = OrderedDict()
        self._factories = []
        self._waiters = {}
        self.drops = dict.fromkeys(DROP_REASONS, 0)
        self._loop = None
        return 0

    @property
    def loop(self):
        """The event loop handlers run on, as :meth:`bind_loop` named it (None: not bound)."""
        return self._loop

    def bind_loop(self, loop):
        """Name the event loop the handlers run on; call it from that loop's thread.

        From then on :meth:`deliver` called from any other thread is handed to
        ``loop`` with ``call_soon_threadsafe`` (in that thread's order) instead of
        running the handler inline.
        """
        if not isinstance(loop, AbstractEventLoop):
            raise TypeError(f"bind_loop needs an asyncio event loop, got {loop!r:.100}")
        # threading.get_ident() is PyThread_get_thread_ident(): the same number.
        self._loop_thread = get_ident()
        self._loop = loop

    @property
    def dropped(self):
        """Total messages dropped, all reasons."""
        return sum(self.drops.values())

    @property
    def pending_bytes(self):
        """Bytes charged to all pending buffers now (see the module for the charge)."""
        return self._pending_bytes

    def register_path_factory(self, prefix, factory):
        """Lazily spawn handlers: ``factory(path)`` runs for unknown paths under ``prefix``.

        The factory should ``register(path, ...)``; if it does not, the message is
        buffered (or dropped as dead if the factory unregistered the path).  Paths
        under ``/temp/`` never reach a factory.
        """
        self._factories.append((prefix, factory))

    def register(self, path, handler):
        """Route ``path`` to ``handler``, flushing any buffered messages to it in order.

        Each buffered message is routed as ``deliver_path`` would route it, so one
        the handler raises on does not lose the rest: after the flush the first
        exception is re-raised (later ones are logged).  Waiters are woken first.
        A buffer past its time to live is dropped, not flushed.
        """
        self._handlers[path] = handler
        self._dead.pop(path, None)
        pending = None
        if self._pending:
            self._expire(monotonic())
            pending = self._take_pending(path)
        if path in self._waiters:
            wake_waiters(self._waiters, path)
        if pending:
            self._flush(path, pending)

    cdef object _take_pending(self, object path):
        """Remove ``path``'s buffer, giving its bytes back; its messages, if it had one."""
        buffer = self._pending.pop(path, None)
        if buffer is None:
            return None
        self._pending_bytes -= <Py_ssize_t>buffer.nbytes
        if not self._pending:
            self._cancel_timer()
        return buffer.msgs

    cdef _flush(self, object path, object pending):
        cdef object error = None
        while pending:
            msg = pending.popleft()
            try:
                # Routed afresh: the handler may unregister or replace itself mid-flush.
                self.deliver_path(path, msg)
            except Exception as exc:
                if error is None:
                    error = exc
                else:
                    log_flush_error(path, exc)
        if error is not None:
            raise error

    def unregister(self, path):
        """Remove the handler for ``path`` and mark it dead; later messages are dropped.

        Messages still buffered for ``path`` are dropped (and counted) too.
        """
        dead = self._dead
        self._handlers.pop(path, None)
        pending = self._take_pending(path) if self._pending else None
        if pending:
            for _ in range(len(pending)):
                log_drop(self.drops, DROP_DEAD, path)
        dead[path] = None
        dead.move_to_end(path)  # the most recently unregistered is kept longest
        if len(dead) > self._max_dead:
            dead.popitem(last=False)

    def is_dead(self, path):
        """True when ``path`` was unregistered (and not registered again): messages to it are dropped."""
        return path in self._dead

    def is_registered(self, path):
        """True when a handler is registered for ``path``."""
        return path in self._handlers

    async def wait_for_path(self, path):
        """Wait until a handler is registered for ``path`` (at once if it already is)."""
        await wait_registered(self._handlers, self._waiters, path)

    def deliver(self, address, msg):
        """Deliver ``msg`` to the handler for ``address.path`` (see the module rules).

        A mailbox at capacity refuses it (dropped as ``mailbox_full``).  The handler
        runs inline; an exception it raises propagates to the caller.  From a thread
        other than the bound loop's, it is handed to that loop instead.
        """
        if self._loop is not None and PyThread_get_thread_ident() != self._loop_thread:
            hand_to_loop(self._loop, self.deliver, address, msg)
            return
        cdef object path = _path_of(address)
        cdef PyObject* found = PyDict_GetItemWithError(self._handlers, path)
        cdef object handler
        cdef Mailbox box
        if found is not NULL:
            # Own a reference: the handler may unregister itself while it runs.
            handler = <object>found
            if type(handler) is Mailbox:
                box = <Mailbox>handler
                if box.capacity and len(box.queue) >= box.capacity:
                    log_drop(self.drops, DROP_MAILBOX_FULL, path)
                else:
                    box.put_c(msg)
            else:
                handler(msg)
            return
        self._deliver_unrouted(path, msg, -1)

    def deliver_path(self, path, msg, Py_ssize_t nbytes=-1):
        """Like :meth:`deliver`, addressed by path alone, for messages from peers.

        ``nbytes`` is the message's wire size, charged to a mailbox while it is
        queued and to a buffer (negative: not known; a buffer is then charged
        ``sys.getsizeof(msg)``, a mailbox nothing).  A mailbox is never refused: it
        is returned when, with ``msg`` queued, it is full; else None.
        """
        cdef PyObject* found = PyDict_GetItemWithError(self._handlers, path)
        cdef object handler
        if found is not NULL:
            handler = <object>found
            return _hand(handler, msg, nbytes)
        self._deliver_unrouted(path, msg, nbytes)
        return None

    cdef _deliver_unrouted(self, object path, object msg, Py_ssize_t nbytes):
        cdef PyObject* found
        cdef object handler
        if path in self._dead:
            log_drop(self.drops, DROP_DEAD, path)
            return
        if isinstance(path, str) and (<str>path).startswith(TEMP_PREFIX):
            # Only ask registers these, before its request leaves: nothing will come later.
            log_drop(self.drops, DROP_NO_SUCH_ASK, path)
            return
        for prefix, factory in self._factories:
            if path.startswith(prefix):
                factory(path)
                found = PyDict_GetItemWithError(self._handlers, path)
                if found is not NULL:
                    handler = <object>found
                    _hand(handler, msg, nbytes)  # a new mailbox: far from full
                    return
                if path in self._dead:
                    log_drop(self.drops, DROP_DEAD, path)
                    return
                break
        self._buffer(path, msg, nbytes if nbytes >= 0 else getsizeof(msg))

    cdef _buffer(self, object path, object msg, Py_ssize_t size):
        cdef object pending = self._pending
        if pending:
            self._expire(monotonic())
        buffer = pending.get(path)
        if buffer is None:
            if len(pending) >= self._max_pending_paths:
                log_drop(self.drops, DROP_TOO_MANY_PATHS, path)
                return
            if self._max_pending == 0:
                log_drop(self.drops, DROP_OVERFLOW, path)
                return
        elif len(buffer.msgs) >= self._max_pending:
            log_drop(self.drops, DROP_OVERFLOW, path)
            return
        if size > self._max_pending_bytes - self._pending_bytes:
            log_drop(self.drops, DROP_PENDING_BYTES, path)
            return
        if buffer is None:
            buffer = PendingBuffer(monotonic() + self._ttl)
            pending[path] = buffer
            self._arm_timer()
        buffer.msgs.append(msg)
        buffer.nbytes += size
        self._pending_bytes += size

    cdef int _expire(self, double now) except -1:
        """Drop every buffer due at ``now`` (they are in creation order, so oldest first)."""
        pending = self._pending
        while pending:
            path = next(iter(pending))
            buffer = pending[path]
            if buffer.expires > now:
                return 0
            del pending[path]
            self._pending_bytes -= <Py_ssize_t>buffer.nbytes
            log_expired(self.drops, path, len(buffer.msgs), self._ttl)
        self._cancel_timer()
        return 0

    cdef int _arm_timer(self) except -1:
        """Set the one expiry timer for the oldest buffer, on the running loop (if any)."""
        if not self._pending or self._ttl == inf:
            return 0
        loop = events._get_running_loop()
        if loop is None:
            return 0  # expired lazily by deliver/register instead
        if self._timer is not None:
            if self._timer_loop is loop:
                return 0
            self._cancel_timer()  # left over from a loop that is gone
        oldest = next(iter(self._pending.values()))
        delay = max(0.0, oldest.expires - monotonic()) + TIMER_SLACK
        self._timer = loop.call_later(delay, self._on_timer)
        self._timer_loop = loop
        return 0

    def _on_timer(self):
        self._timer = self._timer_loop = None
        self._expire(monotonic())
        self._arm_timer()

    cdef int _cancel_timer(self) except -1:
        timer = self._timer
        if timer is not None:
            self._timer = self._timer_loop = None
            timer.cancel()
        return 0
