"""TcpTransportConfig: every knob of the TCP transport, each with a safe default."""

from __future__ import annotations

import inspect
import math
import ssl
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

from casty.transport.handshake import MAX_HANDSHAKE_SIZE

__all__ = ["AddressMap", "DialPolicy", "TcpTransportConfig"]

#: casty 0.21's form takes one ``(host, port)`` tuple, the other host and port as two
#: arguments; both return a ``(host, port)`` tuple
AddressMap = Callable[[tuple[str, int]], tuple[str, int]] | Callable[[str, int], tuple[str, int]]
#: ``allow_dial``: a predicate ``(host, port) -> bool``, or the ``(host, port)`` pairs allowed
DialPolicy = Callable[[str, int], bool] | Collection[tuple[str, int]]

MiB = 1024 * 1024


def _identity_address(address: tuple[str, int]) -> tuple[str, int]:
    return address


def _takes_host_and_port(fn: Callable[..., Any]) -> bool | None:
    """True for an ``address_map`` called as ``fn(host, port)``, False for ``fn((host, port))``,
    None when it can be called neither way.

    Two required positional parameters make the two-argument form; one, or none but
    ``*args`` or a defaulted one, casty 0.21's one-tuple form (so is a callable whose
    signature cannot be read, such as some builtins).
    """
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = inspect.Parameter
    if any(p.kind is kinds.KEYWORD_ONLY and p.default is p.empty for p in params):
        return None
    positional = [p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    required = sum(p.default is p.empty for p in positional)
    if required == 2:
        return True
    if required == 1 or (required == 0 and (positional or any(p.kind is kinds.VAR_POSITIONAL for p in params))):
        return False
    return None


@dataclass(frozen=True)
class TcpTransportConfig:
    """Configuration of one node's TCP transport.

    ``self_address`` is advertised as is in handshakes (for NAT); otherwise the
    bound host and the real port are.  ``address_map`` rewrites every outbound
    connect target (for port forwarding, containers, tests); it takes the target
    either as one ``(host, port)`` tuple (casty 0.21's form; the default is the
    identity) or as two arguments ``host, port`` (a callable with exactly two
    required positional parameters), and returns a ``(host, port)`` tuple.  Which
    form is read once, here, from its signature.

    ``frame_timeout``: a frame whose first bytes arrived must be complete within this
    many seconds, or its connection is closed (a slow-loris defence; ``math.inf`` turns
    it off).  A periodic sweep checks it, so a frame may take up to 1.5x as long.

    ``cookie``: a secret shared by the nodes of one cluster.  When set, every
    handshake is a challenge-response over it (HMAC-SHA256 over both sides' nonces
    and claims), a peer that cannot prove it (casty 0.21 peers included) is
    refused, and a proven inbound connection may carry this node's traffic to the
    address it claims.  Without it, traffic for an address goes only over a
    connection this node dialed to it (or one whose TLS client certificate names
    the claimed host).

    ``busy_poll``: after each send, keep the event loop polling for this many seconds
    instead of sleeping in the kernel, so a reply is picked up without the cost of
    waking the process, most of an idle loopback round trip.  The trade is CPU:
    while messages flow, and for ``busy_poll`` seconds after the last one, the node
    holds a core at 100%.  Use it for latency-bound request/response between a few
    nodes with cores to spare; 0 (the default) turns it off.  A window a little
    longer than the round trip (``200e-6`` on loopback) keeps a steady run of asks
    from ever sleeping.

    Untrusted peers: ``max_handshake_size`` bounds every frame received before the
    handshake (from its length prefix); one read delivers at most
    ``read_budget_frames`` frames before the connection yields to the loop;
    ``max_ignored_frames`` frames of unknown type in a row close a connection.
    ``max_connections`` caps the connections in and out (an inbound one beyond it is
    closed at once, a dial beyond it refused with reason ``"connection_limit"``);
    an established connection that neither received nor sent a byte for
    ``idle_timeout`` seconds is closed (``math.inf``: never), checked by the sweep, so
    it may last up to 1.25x as long.  ``allow_dial`` (None: any address) is a predicate
    ``(host, port) -> bool`` or a collection of allowed ``(host, port)`` pairs, applied
    to the address as named (before ``address_map``); a send that would need a dial
    it refuses is dropped and reported with reason ``"not_allowed"``.

    Liveness (:mod:`casty.transport.liveness`): with ``heartbeats`` (on by default) a
    connection on which nothing was sent for ``heartbeat_interval`` seconds gets a ping, and
    a peer that also speaks heartbeats (a v2 peer) and sends no byte for ``failure_timeout``
    seconds (at least twice the interval; ``math.inf``: never) is declared down and its
    connection closed.  Silence while this node's own loop was blocked is not counted.
    casty 0.21 peers get no heartbeat and are never declared down for silence.

    Reconnects back off: a failed connect refuses dials to that address for
    ``blacklist_duration`` seconds, each further failure for twice as long up to
    ``reconnect_backoff_max`` (or ``blacklist_duration`` when that is larger), each delay
    +-25% at random; a successful handshake or ``ClearNodeBlacklist`` starts over.

    ``max_peer_stats``: the peers :meth:`TcpNode.stats` keeps counters for; past it
    the record of the peer idle longest (no open connection) is let go, since peers,
    and the addresses inbound ones claim, are chosen by others.

    >>> TcpTransportConfig("127.0.0.1", 0).max_frame_size
    16777216
    >>> TcpTransportConfig("127.0.0.1", 70000)
    Traceback (most recent call last):
    ...
    ValueError: TcpTransportConfig.port must be an int in 0..65535, got 70000
    """

    host: str
    port: int
    self_address: tuple[str, int] | None = None
    client_only: bool = False
    server_ssl: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None
    connect_timeout: float = 2.0
    blacklist_duration: float = 5.0
    address_map: AddressMap = field(default_factory=lambda: _identity_address)
    max_frame_size: int = 16 * MiB
    handshake_timeout: float = 5.0
    frame_timeout: float = 30.0
    #: bytes queued for one peer while connecting, or while its socket is not draining
    max_queue_bytes: int = 8 * MiB
    write_high_water: int = 256 * 1024
    write_low_water: int = 64 * 1024
    #: seconds to keep polling after the last send (0: off); costs CPU, see above
    busy_poll: float = 0.0
    max_handshake_size: int = 8 * 1024
    read_budget_frames: int = 1024
    max_ignored_frames: int = 1024
    max_connections: int = 1024
    idle_timeout: float = 300.0
    allow_dial: DialPolicy | None = None
    max_peer_stats: int = 1024
    #: cap "frag": a message frame larger than this (bytes) goes out as fragments of at most
    #: this many bytes each, where the peer speaks "frag" (0: off, whole frames as in v1);
    #: keep it below the peers' max_frame_size
    fragment_size: int = 64 * 1024
    #: fragments sent and not yet acknowledged by the peer, at most: what a small message
    #: written meanwhile may wait behind (larger: more throughput over long round trips)
    fragment_window: int = 2
    #: a peer's fragment streams open at once per connection, and their bytes received (None:
    #: twice max_frame_size), at most; beyond either the connection is closed
    max_fragment_streams: int = 8
    max_fragment_bytes: int | None = None
    #: shared secret of the nodes of one cluster: handshakes then prove it (never shown in repr)
    cookie: str | bytes | None = field(default=None, repr=False)
    #: liveness (cap "hb", see the docstring above): off only for measurements
    heartbeats: bool = True
    heartbeat_interval: float = 1.0
    failure_timeout: float = 10.0
    #: the longest wait before redialing a node whose connects keep failing
    reconnect_backoff_max: float = 30.0
    #: speak compact headers (cap "hdr") with peers that do: a steady stream to one actor
    #: then names its target, sender and type hint by 2-byte ids (docs/architecture.md)
    compact_headers: bool = True
    #: address_map is the two-argument form (set by __post_init__; not a field)
    _address_map_takes_two: ClassVar[bool] = False

    def __post_init__(self) -> None:
        def bad(name: str, what: str) -> ValueError:
            return ValueError(f"TcpTransportConfig.{name} must be {what}, got {getattr(self, name)!r}")

        if not isinstance(self.host, str) or not self.host:
            raise bad("host", "a non-empty str")
        if not _is_port(self.port):
            raise bad("port", "an int in 0..65535")
        if self.self_address is not None:
            sa = self.self_address
            if not (isinstance(sa, tuple) and len(sa) == 2 and isinstance(sa[0], str) and sa[0]
                    and _is_port(sa[1])):
                raise bad("self_address", "None or a (host, port) tuple")
        for name in ("connect_timeout", "blacklist_duration", "handshake_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise bad(name, "a non-negative number of seconds")
        ft = self.frame_timeout
        if isinstance(ft, bool) or not isinstance(ft, (int, float)) or not ft > 0:
            raise bad("frame_timeout", "a positive number of seconds (math.inf: no limit)")
        bp = self.busy_poll
        if isinstance(bp, bool) or not isinstance(bp, (int, float)) or not 0 <= bp < math.inf:
            raise bad("busy_poll", "a non-negative finite number of seconds (0: off)")
        for name in (
            "max_frame_size", "max_queue_bytes", "write_high_water", "max_handshake_size",
            "read_budget_frames", "max_ignored_frames", "max_connections", "max_peer_stats",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "a positive int")
        fs = self.fragment_size
        if isinstance(fs, bool) or not isinstance(fs, int) or not (fs == 0 or 1024 <= fs <= 0x7FFFFFFF):
            raise bad("fragment_size", "0 (off) or an int in 1024..2**31-1")
        for name in ("fragment_window", "max_fragment_streams"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "a positive int")
        mfb = self.max_fragment_bytes
        if mfb is not None and (isinstance(mfb, bool) or not isinstance(mfb, int) or mfb < self.max_frame_size):
            raise bad("max_fragment_bytes", "None (twice max_frame_size) or an int of at least max_frame_size")
        if self.max_handshake_size > MAX_HANDSHAKE_SIZE + 1:
            raise bad("max_handshake_size", f"at most {MAX_HANDSHAKE_SIZE + 1}")
        it = self.idle_timeout
        if isinstance(it, bool) or not isinstance(it, (int, float)) or not it > 0:
            raise bad("idle_timeout", "a positive number of seconds (math.inf: no limit)")
        if not isinstance(self.heartbeats, bool):
            raise bad("heartbeats", "a bool")
        hi = self.heartbeat_interval
        if isinstance(hi, bool) or not isinstance(hi, (int, float)) or not 0 < hi < math.inf:
            raise bad("heartbeat_interval", "a positive finite number of seconds")
        ft = self.failure_timeout
        if isinstance(ft, bool) or not isinstance(ft, (int, float)) or not ft >= 2 * hi:
            # A peer that wrote just after its tick pings two intervals later at most.
            raise bad("failure_timeout", f"a number of seconds of at least 2 x heartbeat_interval ({2 * hi})")
        rb = self.reconnect_backoff_max
        if isinstance(rb, bool) or not isinstance(rb, (int, float)) or not 0 <= rb < math.inf:
            raise bad("reconnect_backoff_max", "a non-negative finite number of seconds")
        _check_dial_policy(self.allow_dial)
        if self.allow_dial is not None and not callable(self.allow_dial):
            # A snapshot with O(1) lookups: a dial is checked against it per new connection.
            object.__setattr__(self, "allow_dial", frozenset(self.allow_dial))
        wl = self.write_low_water
        if isinstance(wl, bool) or not isinstance(wl, int) or not 0 <= wl <= self.write_high_water:
            raise bad("write_low_water", "an int in 0..write_high_water")
        for name in ("server_ssl", "client_ssl"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), ssl.SSLContext):
                raise bad(name, "None or an ssl.SSLContext")
        ck = self.cookie
        if ck is not None and (not isinstance(ck, (str, bytes)) or len(ck) < 8):
            raise ValueError(
                "TcpTransportConfig.cookie must be None or a str/bytes secret of at least 8 "
                f"characters, got a {type(ck).__name__} of length {len(ck) if isinstance(ck, (str, bytes)) else '?'}"
            )
        form = _takes_host_and_port(self.address_map) if callable(self.address_map) else None
        if form is None:
            raise bad("address_map", "a callable taking one (host, port) tuple, or host and port, "
                                     "and returning a (host, port) tuple")
        object.__setattr__(self, "_address_map_takes_two", form)

    @property
    def fragment_bytes_limit(self) -> int:
        """``max_fragment_bytes``, or twice ``max_frame_size`` when it is None."""
        return 2 * self.max_frame_size if self.max_fragment_bytes is None else self.max_fragment_bytes

    def map_address(self, address: tuple[str, int]) -> tuple[str, int]:
        """``address_map`` applied to an outbound connect target, whichever its form.

        >>> TcpTransportConfig("::1", 0, address_map=lambda a: ("10.0.0.1", a[1])).map_address(("h", 7))
        ('10.0.0.1', 7)
        >>> TcpTransportConfig("::1", 0, address_map=lambda h, p: (h, p + 1)).map_address(("h", 7))
        ('h', 8)
        """
        mapper: Callable[..., tuple[str, int]] = self.address_map  # its form was read in __post_init__
        return mapper(*address) if self._address_map_takes_two else mapper(address)


def _check_dial_policy(policy: object) -> None:
    if policy is None or callable(policy):
        return
    what = "None, a callable (host, port) -> bool, or a collection of (host, port) tuples"
    if isinstance(policy, (str, bytes)) or not isinstance(policy, Collection):
        raise ValueError(f"TcpTransportConfig.allow_dial must be {what}, got {policy!r}")
    for item in policy:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and item[0]
                and _is_port(item[1])):
            raise ValueError(
                f"TcpTransportConfig.allow_dial must be {what}; its item {item!r} is not a "
                f"(host, port) tuple"
            )


def dial_allowed(policy: DialPolicy | None, host: str, port: int) -> bool:
    """Whether ``policy`` (``TcpTransportConfig.allow_dial``) lets this node dial host:port."""
    if policy is None:
        return True
    if callable(policy):
        return bool(policy(host, port))
    return (host, port) in policy


def cookie_bytes(config: TcpTransportConfig) -> bytes | None:
    """The configured cookie as bytes (UTF-8 for a str), or None."""
    ck = config.cookie
    return ck.encode("utf-8") if isinstance(ck, str) else ck


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535
