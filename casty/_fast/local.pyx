# cython: language_level=3
"""LocalTransport in Cython: the twin of ``casty.transport.local``.

Routing rules for ``deliver(address, msg)``, in order (the same as the pure twin):

1. a handler is registered for ``address.path``: call it with ``msg``;
2. the path was unregistered (a dead actor): drop;
3. a path factory's prefix matches: call the factory, then route again once
   (handler, else dead-drop, else on to the buffer);
4. the path's pending buffer has room: buffer (flushed in order by ``register``);
5. otherwise drop.

Rule 1 is the hot path: one attribute read, one borrowed dict lookup, one call.
Drops are counted and logged by the pure module's ``log_drop``, and the rare
paths (limit checks, waking waiters, ``wait_for_path``) are the pure module's
helpers, so the two twins cannot drift apart there.

Handlers and factories run inline: whatever they raise propagates to the caller
of ``deliver`` (or of ``register``, for a flushed message).
"""

from cpython.dict cimport PyDict_GetItemWithError, PyDict_Size
from cpython.ref cimport PyObject

from casty._fast.mailbox cimport Mailbox

from collections import OrderedDict, deque
from types import MemberDescriptorType

from casty.address import ActorAddress
from casty.transport.local import (
    DROP_DEAD,
    DROP_OVERFLOW,
    DROP_TOO_MANY_PATHS,
    MessageTransport,
    check_limit,
    log_drop,
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
    "DROP_OVERFLOW",
    "DROP_TOO_MANY_PATHS",
    "LocalTransport",
    "MessageTransport",
]


cdef inline int _hand(object handler, object msg) except -1:
    """``handler(msg)``; an actor's Mailbox (the usual handler) is put into at C level."""
    if type(handler) is Mailbox:
        (<Mailbox>handler).put_c(msg)
    else:
        handler(msg)
    return 0


cdef Py_ssize_t _limit(str name, object value) except -1:
    # A limit above what a length can reach behaves exactly like no limit.
    value = check_limit(name, value)
    return PY_SSIZE_T_MAX if value > PY_SSIZE_T_MAX else <Py_ssize_t>value


cdef class LocalTransport:
    """In-process message transport that routes by actor path.

    Messages to unregistered paths are buffered (up to ``max_pending_per_path``)
    until a handler registers; messages to unregistered (dead) paths are dropped.

    >>> transport = LocalTransport()
    >>> received = []
    >>> transport.register("/user/actor", received.append)
    >>> transport.deliver(ActorAddress(system="sys", path="/user/actor"), "hello")
    >>> received
    ['hello']

    ``max_dead_paths`` bounds the memory of dead paths (the least recently
    unregistered is forgotten first) and ``max_pending_paths`` bounds how many
    distinct unregistered paths may hold a buffer.  Handlers run inline: an
    exception a handler raises propagates to the caller of :meth:`deliver`.
    """

    cdef dict _handlers
    cdef dict _pending  # never holds an empty buffer
    cdef object _dead  # OrderedDict as an ordered set: oldest evicted first, in O(1)
    cdef list _factories
    cdef readonly dict _waiters  # readable so tests can see cancelled waiters leave nothing
    cdef public dict drops
    cdef Py_ssize_t _max_pending
    cdef Py_ssize_t _max_pending_paths
    cdef Py_ssize_t _max_dead
    cdef object __weakref__

    def __cinit__(self, *args, **kwargs):
        # Set up here too so a subclass that skips __init__ cannot reach a NULL dict.
        self._reset()

    def __init__(
        self,
        *,
        max_pending_per_path=64,
        max_pending_paths=10_000,
        max_dead_paths=100_000,
    ):
        self._max_pending = _limit("max_pending_per_path", max_pending_per_path)
        self._max_pending_paths = _limit("max_pending_paths", max_pending_paths)
        self._max_dead = _limit("max_dead_paths", max_dead_paths)
        self._reset()

    cdef int _reset(self) except -1:
        self._handlers = {}
        self._pending = {}
        self._dead = OrderedDict()
        self._factories = []
        self._waiters = {}
        self.drops = {DROP_DEAD: 0, DROP_OVERFLOW: 0, DROP_TOO_MANY_PATHS: 0}
        return 0

    @property
    def dropped(self):
        """Total messages dropped, all reasons."""
        return sum(self.drops.values())

    def register_path_factory(self, prefix, factory):
        """Lazily spawn handlers: ``factory(path)`` runs for unknown paths under ``prefix``.

        The factory should ``register(path, ...)``; if it does not, the message is
        buffered (or dropped as dead if the factory unregistered the path).
        """
        self._factories.append((prefix, factory))

    def register(self, path, handler):
        """Route ``path`` to ``handler``, flushing any buffered messages to it in order.

        Each buffered message is routed as ``deliver_path`` would route it, so one
        the handler raises on does not lose the rest: after the flush the first
        exception is re-raised (later ones are logged).  Waiters are woken first.
        """
        self._handlers[path] = handler
        self._dead.pop(path, None)
        pending = self._pending.pop(path, None)
        if path in self._waiters:
            wake_waiters(self._waiters, path)
        if pending:
            self._flush(path, pending)

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
        pending = self._pending.pop(path, None)
        if pending:
            for _ in range(len(pending)):
                log_drop(self.drops, DROP_DEAD, path)
        dead[path] = None
        dead.move_to_end(path)  # the most recently unregistered is kept longest
        if len(dead) > self._max_dead:
            dead.popitem(last=False)

    def is_registered(self, path):
        """True when a handler is registered for ``path``."""
        return path in self._handlers

    async def wait_for_path(self, path):
        """Wait until a handler is registered for ``path`` (at once if it already is)."""
        await wait_registered(self._handlers, self._waiters, path)

    def deliver(self, address, msg):
        """Deliver ``msg`` to the handler for ``address.path`` (see the module rules).

        The handler runs inline; an exception it raises propagates to the caller.
        """
        cdef object path = _path_of(address)
        cdef PyObject* found = PyDict_GetItemWithError(self._handlers, path)
        cdef object handler
        if found is not NULL:
            # Own a reference: the handler may unregister itself while it runs.
            handler = <object>found
            _hand(handler, msg)
            return
        self._deliver_unrouted(path, msg)

    cpdef deliver_path(self, path, msg):
        """Like :meth:`deliver`, addressed by path alone."""
        cdef PyObject* found = PyDict_GetItemWithError(self._handlers, path)
        cdef object handler
        if found is not NULL:
            handler = <object>found
            _hand(handler, msg)
            return
        self._deliver_unrouted(path, msg)

    cdef _deliver_unrouted(self, object path, object msg):
        cdef PyObject* found
        cdef object handler, pending
        if path in self._dead:
            log_drop(self.drops, DROP_DEAD, path)
            return
        for prefix, factory in self._factories:
            if path.startswith(prefix):
                factory(path)
                found = PyDict_GetItemWithError(self._handlers, path)
                if found is not NULL:
                    handler = <object>found
                    _hand(handler, msg)
                    return
                if path in self._dead:
                    log_drop(self.drops, DROP_DEAD, path)
                    return
                break
        found = PyDict_GetItemWithError(self._pending, path)
        if found is NULL:
            if PyDict_Size(self._pending) >= self._max_pending_paths:
                log_drop(self.drops, DROP_TOO_MANY_PATHS, path)
                return
            if self._max_pending == 0:
                log_drop(self.drops, DROP_OVERFLOW, path)
                return
            pending = deque()
            self._pending[path] = pending
        else:
            pending = <object>found
            if len(pending) >= self._max_pending:
                log_drop(self.drops, DROP_OVERFLOW, path)
                return
        pending.append(msg)
