"""ActorAddress: where an actor lives, and its ``casty://`` URI form."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ActorAddress"]

_SCHEME = "casty://"
# system: no '/', '@', ':', '[', ']' or whitespace; host: a bracketed IPv6 literal or a
# name.  ASCII digits only for the port ('\d' takes any Unicode digit), and fullmatch (a
# '$' accepts a trailing newline).  Patterns stay linear: URIs come from peers.
_REMOTE = re.compile(
    r"(?P<system>[^/@\[\]:\s]+)@"
    r"(?:\[(?P<ipv6>[^\[\]/@\s]+)\]|(?P<host>[^:/\[\]@\s]+))"
    r":(?P<port>[0-9]{1,5})(?P<path>/.*)?",
    re.S,
)
_LOCAL = re.compile(r"(?P<system>[^/@\[\]:\s]+)(?P<path>/.*)?", re.S)


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
        return ActorAddress(self.system, path, self.host, self.port, self.node_id)

    @staticmethod
    def from_uri(uri: str) -> ActorAddress:
        """Parse a ``casty://`` URI; raise ValueError naming the URI when it is malformed."""
        if not isinstance(uri, str):
            raise ValueError(f"actor URI must be a str, got {type(uri).__name__}: {_show(uri)}")
        if not uri.startswith(_SCHEME):
            raise ValueError(f"not a casty actor URI (expected 'casty://...'): {_show(uri)}")
        rest = uri[len(_SCHEME):]
        m = _REMOTE.fullmatch(rest)
        if m is not None:
            host = m.group("ipv6") or m.group("host")
            if m.group("ipv6") is not None and ":" not in host:
                raise ValueError(
                    f"only an IPv6 address goes in brackets in an actor URI: {_show(uri)}"
                )
            port = int(m.group("port"))
            if port > 65535:
                raise ValueError(f"port out of range in actor URI: {_show(uri)}")
            return ActorAddress(m.group("system"), m.group("path") or "/", host, port)
        m = _LOCAL.fullmatch(rest)
        if m is None:
            raise ValueError(f"malformed casty actor URI: {_show(uri)}")
        return ActorAddress(m.group("system"), m.group("path") or "/")

    def __str__(self) -> str:
        return self.to_uri()


def _show(value: object, limit: int = 200) -> str:
    """``repr(value)``, cut short: a peer can send a URI of megabytes."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"
