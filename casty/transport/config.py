"""TcpTransportConfig: every knob of the TCP transport, each with a safe default."""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["AddressMap", "TcpTransportConfig"]

AddressMap = Callable[[str, int], tuple[str, int]]

MiB = 1024 * 1024


def _identity_address(host: str, port: int) -> tuple[str, int]:
    return host, port


@dataclass(frozen=True)
class TcpTransportConfig:
    """Configuration of one node's TCP transport.

    ``self_address`` is advertised as is in handshakes (for NAT); otherwise the
    bound host and the real port are.  ``address_map`` rewrites every outbound
    connect target (for port forwarding, containers, tests).

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
    #: shared secret of the nodes of one cluster: handshakes then prove it (never shown in repr)
    cookie: str | bytes | None = field(default=None, repr=False)

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
        for name in ("max_frame_size", "max_queue_bytes", "write_high_water"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "a positive int")
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
        if not callable(self.address_map):
            raise bad("address_map", "a callable (host, port) -> (host, port)")


def cookie_bytes(config: TcpTransportConfig) -> bytes | None:
    """The configured cookie as bytes (UTF-8 for a str), or None."""
    ck = config.cookie
    return ck.encode("utf-8") if isinstance(ck, str) else ck


def _is_port(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535
