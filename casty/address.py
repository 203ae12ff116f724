"""ActorAddress: where an actor lives, and its ``casty://`` URI form."""

from __future__ import annotations

import re
from dataclasses import dataclass

from casty.wire import TEMP_PREFIX

__all__ = ["TEMP_PREFIX", "URI_HEADS", "ActorAddress", "is_temp_uri", "loggable", "split_uri"]

_SCHEME = "casty://"


def is_temp_uri(uri: str) -> bool:
    """True when ``uri``'s path is under :data:`TEMP_PREFIX` (the first ``/`` after the
    scheme starts the path: no other part of a URI holds one).

    >>> is_temp_uri("casty://app@h:1/temp/ask-7"), is_temp_uri("casty://app@h:1/user/temp/x")
    (True, False)
    """
    return uri.startswith(TEMP_PREFIX, uri.find("/", len(_SCHEME)))
# system: no '/', '@', ':', '[', ']' or whitespace; host: a bracketed IPv6 literal or a
# name.  ASCII digits only for the port ('\d' takes any Unicode digit), and fullmatch (a
# '$' accepts a trailing newline).  Patterns stay linear: URIs come from peers.  They
# match the part before the path: the first '/' after the scheme starts the path.
_REMOTE = re.compile(
    r"(?P<system>[^/@\[\]:\s]+)@"
    r"(?:\[(?P<ipv6>[^\[\]/@\s]+)\]|(?P<host>[^:/\[\]@\s]+))"
    r":(?P<port>[0-9]{1,5})",
)
_LOCAL = re.compile(r"(?P<system>[^/@\[\]:\s]+)")


@dataclass(frozen=True, slots=True)
class ActorAddress:
    """The address of an actor: system name, path, and the node it lives on.

    A local address has no host; a remote one has ``host`` and ``port``.  IPv6
    hosts are written in brackets in the URI form.

    >>> a = ActorAddress.from_uri("casty://sys@127.0.0.1:25520/user/a")
    >>> (a.system, a.host, a.port, a.path, a.is_local)
    ('sys', '127.0.0.1', 25520, '/user/a', False)
    >>> ActorAddress(system="sys", path="/user/a", host="::1", port=7).to_uri()
    'casty://sys@[::1]:7/user/a'
    >>> ActorAddress.from_uri("casty://sys/user/a").is_local
    True
    """

    system: str
    path: str
    host: str | None = None
    port: int | None = None
    node_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.system, str) or not self.system:
            raise ValueError(f"actor address needs a non-empty system name, got {self.system!r}")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"actor path must start with '/', got {_show(self.path)}")
        if (self.host is None) != (self.port is None):
            raise ValueError(
                f"actor address needs both host and port or neither, got host={self.host!r} "
                f"port={self.port!r}"
            )
        if self.port is not None and (
            not isinstance(self.port, int)
            or isinstance(self.port, bool)
            or not 0 <= self.port <= 65535
        ):
            raise ValueError(f"actor address port must be an int in 0..65535, got {self.port!r}")

    @property
    def is_local(self) -> bool:
        """True when the address names no host (an actor of this process's system)."""
        return self.host is None

    def to_uri(self) -> str:
        """Format as ``casty://system/path`` or ``casty://system@host:port/path``."""
        if self.host is None:
            return f"{_SCHEME}{self.system}{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{_SCHEME}{self.system}@{host}:{self.port}{self.path}"

    def with_path(self, path: str) -> ActorAddress:
        """The address of another actor on the same node."""
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"actor path must start with '/', got {_show(path)}")
        return _trusted(self.system, path, self.host, self.port, self.node_id)

    @staticmethod
    def from_uri(uri: str) -> ActorAddress:
        """Parse a ``casty://`` URI; raise ValueError naming the URI when it is malformed."""
        system, host, port, path = split_uri(uri)
        return _trusted(system, path, host, port, None)

    def __str__(self) -> str:
        return self.to_uri()


_MAX_HEADS = 1024
_MAX_HEAD_LENGTH = 300
#: :func:`split_uri`'s cache: the part of a URI between scheme and path, mapped to its
#: ``(system, host, port)``, for heads already checked.  Others may read it (the Cython
#: plain codec builds addresses from it) but never write it; it is cleared when full.
URI_HEADS: dict[str, tuple[str, str | None, int | None]] = {}


def split_uri(uri: str) -> tuple[str, str | None, int | None, str]:
    """``(system, host, port, path)`` of a ``casty://`` URI; ValueError naming it when malformed.

    What :meth:`ActorAddress.from_uri` reads, without building the address.

    A URI needs a path, ``/`` at least: ``casty://app`` names no actor (casty 0.21
    refuses it too, and no casty writes one).

    >>> split_uri("casty://app@[::1]:7/user/a"), split_uri("casty://app/")
    (('app', '::1', 7, '/user/a'), ('app', None, None, '/'))
    >>> split_uri("casty://app")
    Traceback (most recent call last):
    ...
    ValueError: actor URI has no path (expected 'casty://system[@host:port]/path'): 'casty://app'
    """
    if not isinstance(uri, str):
        raise ValueError(f"actor URI must be a str, got {type(uri).__name__}: {_show(uri)}")
    if not uri.startswith(_SCHEME):
        raise ValueError(f"not a casty actor URI (expected 'casty://...'): {_show(uri)}")
    # The first '/' after the scheme starts the path (no other part may hold one), so
    # the part before it is parsed once and cached: a node's URIs differ only in paths.
    cut = uri.find("/", _SCHEME_LENGTH)
    if cut < 0:
        raise ValueError(f"actor URI has no path (expected 'casty://system[@host:port]/path'): {_show(uri)}")
    head, path = uri[_SCHEME_LENGTH:cut], uri[cut:]
    parsed = URI_HEADS.get(head)
    if parsed is None:
        parsed = _parse_head(head, uri)
        if len(head) <= _MAX_HEAD_LENGTH:  # a peer may send long ones: keep memory bounded
            if len(URI_HEADS) >= _MAX_HEADS:
                URI_HEADS.clear()
            URI_HEADS[head] = parsed
    return parsed[0], parsed[1], parsed[2], path


_SCHEME_LENGTH = len(_SCHEME)
_new = object.__new__


class _Unfrozen:
    """ActorAddress's memory layout without the frozen ``__setattr__``.

    ``_trusted`` fills one with plain slot stores, then makes it an ActorAddress by
    ``__class__`` assignment (allowed between classes with the same slots): less
    than half the cost of setting the five slots through their descriptors, and
    addresses are made per message and per ask.
    """

    __slots__ = ("system", "path", "host", "port", "node_id")  # noqa: RUF023 (the fields' order)

    system: str
    path: str
    host: str | None
    port: int | None
    node_id: str | None


assert _Unfrozen.__slots__ == ActorAddress.__slots__, "the two layouts must stay the same"


def _trusted(
    system: str, path: str, host: str | None, port: int | None, node_id: str | None
) -> ActorAddress:
    """An ActorAddress from parts already known valid, without __post_init__'s checks."""
    address = _new(_Unfrozen)
    address.system = system
    address.path = path
    address.host = host
    address.port = port
    address.node_id = node_id
    address.__class__ = ActorAddress  # type: ignore[assignment]
    return address  # type: ignore[return-value]


def _parse_head(head: str, uri: str) -> tuple[str, str | None, int | None]:
    """``(system, host, port)`` from the part of a URI between scheme and path."""
    m = _REMOTE.fullmatch(head)
    if m is not None:
        host = m.group("ipv6") or m.group("host")
        if m.group("ipv6") is not None and ":" not in host:
            raise ValueError(f"only an IPv6 address goes in brackets in an actor URI: {_show(uri)}")
        port = int(m.group("port"))
        if port > 65535:
            raise ValueError(f"port out of range in actor URI: {_show(uri)}")
        return m.group("system"), host, port
    m = _LOCAL.fullmatch(head)
    if m is None:
        raise ValueError(
            f"malformed casty actor URI {_show(uri)}: {_wrong_part(head)}; expected "
            f"'casty://system@host:port/path' (or 'casty://system/path' for this process)"
        )
    return m.group("system"), None, None


def _wrong_part(head: str) -> str:
    """Which part of a URI's head (between scheme and path) breaks the form, in words."""
    system, at, node = head.partition("@")
    if not _LOCAL.fullmatch(system):
        return "the system name is empty or holds one of / @ : [ ] or a space"
    if not at:
        return "a node address goes after '@', as system@host:port"
    host, colon, port = node.rpartition(":")
    if not colon:
        return "the node address has no ':port'"
    if not port.isascii() or not port.isdigit() or len(port) > 5:
        return "the port is not a number of up to 5 digits"
    if not host:
        return "the host is empty"
    return "the host is neither a name nor a bracketed IPv6 address"


def loggable(text: str, limit: int = 200) -> str:
    r"""``text`` for a log line: as it is when short and printable, else a bounded, escaped
    repr, so a path or URI a peer chose can neither forge a line nor flood the log.

    >>> loggable("/user/a"), loggable("/user/x\nERROR forged")
    ('/user/a', "'/user/x\\nERROR forged'")
    """
    if len(text) <= limit and text.isprintable():
        return text
    return _show(text, limit)


def _show(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut short: a peer can send a URI of megabytes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"
