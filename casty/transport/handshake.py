"""The handshake frame's body: v1 (``host``/``port``) and the negotiated v2 keys.

A neutral module: both framing twins and the node import it, it imports neither (only
``casty.wire`` and ``casty.errors``).

v1 (casty 0.21) is the UTF-8 JSON ``{"host": str, "port": int}``.  v2 adds
``uid`` (the sender's incarnation, a random 64-bit integer), ``proto`` (2) and
``caps`` (the optional features it speaks); with a shared cookie configured,
``nonce`` and ``mac`` carry a challenge-response (see docs/architecture.md,
"Handshake").  casty 0.21 reads only ``host``/``port``, so it keeps working; a
peer whose handshake has no ``proto`` is v1 and is answered with v1 bytes.

Everything here reads peer bytes, so it is strict: a host must be a hostname or an
IP literal (no control characters can reach a log line), a port an int in
0..65535, and every v2 key has a type and a bounded size.

>>> hs = parse_handshake(b'{"host": "10.0.0.1", "port": 7001, "uid": 5, "proto": 2, "caps": ["hb"]}')
>>> (hs.host, hs.port, hs.uid, hs.proto, sorted(hs.caps))
('10.0.0.1', 7001, 5, 2, ['hb'])
>>> parse_handshake(b'{"host": "10.0.0.1", "port": 7001}').proto
1
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import struct
from dataclasses import dataclass

from casty.errors import HandshakeError
from casty.wire import FRAME_HANDSHAKE

__all__ = [
    "MAX_HANDSHAKE_SIZE",
    "MAX_HOST_LENGTH",
    "PROTOCOL_VERSION",
    "Handshake",
    "HandshakeError",
    "decode_handshake",
    "encode_handshake",
    "encode_hello",
    "handshake_mac",
    "host_problem",
    "macs_equal",
    "new_nonce",
    "new_uid",
    "parse_handshake",
]

#: the newest protocol this node speaks
PROTOCOL_VERSION = 2
#: a handshake body longer than this is refused before it is parsed
MAX_HANDSHAKE_SIZE = 64 * 1024
MAX_HOST_LENGTH = 255
_MAX_CAPS = 64
_MAX_CAP_LENGTH = 32
_NONCE_HEX = 32  # 128 random bits
_MAC_HEX = 64  # HMAC-SHA256
_HEADER = struct.Struct(">IB")
# A DNS name: labels of letters, digits, '-' and '_' (seen in container names), 1..63 long,
# not starting or ending with '-'; a trailing dot is allowed.  Letters may be any
# Unicode letters (casty v1 sent such names as they are), never space or control.
_LABEL = r"(?!-)[\w-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True, slots=True)
class Handshake:
    """What one side says of itself in a handshake.

    ``proto`` is 1 for a casty 0.21 peer (no ``uid``, no ``caps``); ``nonce`` and
    ``mac`` are set only in a cookie challenge-response.
    """

    host: str
    port: int
    uid: int | None = None
    proto: int = 1
    caps: frozenset[str] = frozenset()
    nonce: str | None = None
    mac: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        """``(host, port)``: the address the sender claims."""
        return self.host, self.port


def host_problem(host: object) -> str | None:
    """Why ``host`` is no acceptable handshake host, or None.

    A hostname, an IPv4 literal or an IPv6 literal (no brackets), at most 255
    characters.

    >>> host_problem("10.0.0.1"), host_problem("::1"), host_problem("node-1.example")
    (None, None, None)
    >>> host_problem("evil\\nINFO forged")
    "handshake host 'evil\\\\nINFO forged' is neither a hostname nor an IP address"
    """
    if type(host) is not str:
        return f"handshake host must be a string, got {type(host).__name__}"
    if not host:
        return "handshake host is empty"
    if len(host) > MAX_HOST_LENGTH:
        return f"handshake host is {len(host)} characters long (at most {MAX_HOST_LENGTH})"
    if _HOSTNAME.fullmatch(host) is not None and len(host.rstrip(".")) <= 253:
        return None
    if ":" in host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            if host.isascii() and host.isprintable():
                return None
    shown = repr(host) if len(host) <= 64 else f"{host[:64]!r}... ({len(host)} chars)"
    return f"handshake host {shown} is neither a hostname nor an IP address"


def _address_problem(host: object, port: object) -> str | None:
    problem = host_problem(host)
    if problem is not None:
        return problem
    if type(port) is not int:  # bool is an int subclass: refused too
        return f"handshake port must be an integer, got {type(port).__name__}"
    if not 0 <= port <= 65535:
        return f"handshake port {port} is out of range 0..65535"
    return None


def encode_handshake(host: str, port: int) -> bytes:
    """The v1 handshake frame a node at ``(host, port)`` sends, byte for byte as casty v1.

    >>> encode_handshake("10.0.0.1", 7001)
    b'\\x00\\x00\\x00#\\x00{"host": "10.0.0.1", "port": 7001}'
    """
    problem = _address_problem(host, port)
    if problem is not None:
        raise HandshakeError(problem)
    return _frame(json.dumps({"host": host, "port": port}).encode("ascii"))


def encode_hello(hs: Handshake) -> bytes:
    """The v2 handshake frame for ``hs`` (``uid`` required): v1's keys first, then the v2 ones.

    >>> encode_hello(Handshake("h", 1, uid=7, proto=2))[5:]
    b'{"host": "h", "port": 1, "uid": 7, "proto": 2, "caps": []}'
    """
    problem = _address_problem(hs.host, hs.port)
    if problem is not None:
        raise HandshakeError(problem)
    if type(hs.uid) is not int or not 0 <= hs.uid < 2**64:
        raise HandshakeError(f"a v2 handshake needs a uid in 0..2**64-1, got {hs.uid!r}")
    obj: dict[str, object] = {
        "host": hs.host, "port": hs.port, "uid": hs.uid, "proto": PROTOCOL_VERSION,
        "caps": sorted(hs.caps),
    }
    if hs.nonce is not None:
        obj["nonce"] = hs.nonce
    if hs.mac is not None:
        obj["mac"] = hs.mac
    return _frame(json.dumps(obj).encode("ascii"))


def _frame(body: bytes) -> bytes:
    return _HEADER.pack(len(body) + 1, FRAME_HANDSHAKE) + body


def parse_handshake(body: bytes | bytearray | memoryview) -> Handshake:
    """The :class:`Handshake` in a handshake frame's body; HandshakeError when malformed.

    Unknown keys and unknown caps are ignored; a ``proto`` above ours is read as ours.
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"handshake body must be bytes-like, got {type(body).__name__}")
    raw = bytes(body)
    if len(raw) > MAX_HANDSHAKE_SIZE:
        raise HandshakeError(
            f"handshake body is {len(raw)} bytes long (at most {MAX_HANDSHAKE_SIZE})"
        )
    try:
        text = raw.decode("utf-8")  # strict: json.loads on bytes would guess other encodings
    except UnicodeDecodeError as exc:
        raise HandshakeError(
            f"handshake is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HandshakeError(f"handshake is not valid JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise HandshakeError("handshake JSON is nested too deeply") from None
    except ValueError:  # an integer past int's digit limit (4300 digits)
        raise HandshakeError("handshake holds an integer with too many digits") from None
    if not isinstance(obj, dict):
        raise HandshakeError(f"handshake must be a JSON object, got {type(obj).__name__}")
    if "host" not in obj:
        raise HandshakeError("handshake has no 'host'")
    if "port" not in obj:
        raise HandshakeError("handshake has no 'port'")
    host, port = obj["host"], obj["port"]
    problem = _address_problem(host, port)
    if problem is not None:
        raise HandshakeError(problem)
    if "proto" not in obj:
        return Handshake(host, port)
    proto = obj["proto"]
    if type(proto) is not int or proto < 2:
        raise HandshakeError(f"handshake proto must be an integer of at least 2, got {_short(proto)}")
    uid = obj.get("uid")
    if type(uid) is not int or not 0 <= uid < 2**64:
        raise HandshakeError(f"a v2 handshake needs a uid in 0..2**64-1, got {_short(uid)}")
    return Handshake(
        host, port, uid, min(proto, PROTOCOL_VERSION), _caps(obj.get("caps", [])),
        _hex_field(obj, "nonce", _NONCE_HEX), _hex_field(obj, "mac", _MAC_HEX),
    )


def decode_handshake(body: bytes | bytearray | memoryview) -> tuple[str, int]:
    """``(host, port)`` from a handshake frame's body; HandshakeError when it is malformed.

    >>> decode_handshake(b'{"host": "10.0.0.1", "port": 7001, "v": 2}')
    ('10.0.0.1', 7001)
    >>> decode_handshake(b'{"host": "a", "port": true}')
    Traceback (most recent call last):
    ...
    casty.errors.HandshakeError: handshake port must be an integer, got bool
    """
    return parse_handshake(body).key


def _caps(value: object) -> frozenset[str]:
    if not isinstance(value, list) or len(value) > _MAX_CAPS:
        raise HandshakeError(f"handshake caps must be a list of at most {_MAX_CAPS} names")
    for cap in value:
        if type(cap) is not str or not 0 < len(cap) <= _MAX_CAP_LENGTH:
            raise HandshakeError(
                f"handshake caps must be names of 1..{_MAX_CAP_LENGTH} characters, got {_short(cap)}"
            )
    return frozenset(value)


def _hex_field(obj: dict[str, object], name: str, size: int) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if type(value) is not str or len(value) != size or _HEX.fullmatch(value) is None:
        raise HandshakeError(f"handshake {name} must be {size} lowercase hex digits")
    return value


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}..."


# -- the cookie challenge-response -----------------------------------------------------


def new_uid() -> int:
    """A node's incarnation: 64 random bits, drawn once at start."""
    return secrets.randbits(64)


def new_nonce() -> str:
    """A handshake nonce: 128 random bits as hex."""
    return secrets.token_hex(_NONCE_HEX // 2)


def handshake_mac(cookie: bytes, role: str, first: str, second: str, hs: Handshake) -> str:
    """HMAC-SHA256 under ``cookie`` over the role, both nonces and the claims of ``hs``.

    The acceptor proves itself with role ``"accept"`` over (connector's nonce, its
    own); the connector answers with ``"connect"`` over (acceptor's nonce, its own).
    Binding the role and the claims stops a proof being replayed or reflected.
    """
    text = f"casty-handshake\n{role}\n{first}\n{second}\n{hs.host}\n{hs.port}\n{hs.uid}"
    return hmac.new(cookie, text.encode("utf-8"), hashlib.sha256).hexdigest()


def macs_equal(a: str | None, b: str) -> bool:
    """Constant-time comparison of a received MAC with the expected one."""
    return a is not None and hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))
