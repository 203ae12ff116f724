"""The attacker's side of the wire: frames, handshakes and envelopes built by hand, raw sockets.

Only the documented wire format and public names are used (``casty.MessageEnvelope``,
``casty.MsgpackSerializer``, ``FRAME_HANDSHAKE``/``FRAME_MESSAGE``), so the attacker speaks
to any version of the node.  Every socket is a non-blocking socket on 127.0.0.1 driven by
the loop's ``sock_*`` calls, which send memoryviews in place: a flood of large frames is not
copied into a transport buffer on this side.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

from casty import FRAME_HANDSHAKE, FRAME_MESSAGE, MessageEnvelope, MsgpackSerializer

HOST = "127.0.0.1"
ATTACKER_URI = "casty://attacker@127.0.0.1:1/"
_HEADER = struct.Struct(">IB")


def frame(kind: int, body: bytes) -> bytes:
    return _HEADER.pack(len(body) + 1, kind) + body


def handshake(host: str, port: int) -> bytes:
    """A v1 handshake claiming ``host:port`` (any text: control characters are JSON-escaped)."""
    return frame(FRAME_HANDSHAKE, json.dumps({"host": host, "port": port}).encode())


def raw_handshake(text: str) -> bytes:
    """A handshake frame whose JSON body is ``text`` as given (for ports no int literal fits)."""
    return frame(FRAME_HANDSHAKE, text.encode())


def envelope(target: str, payload: bytes, type_hint: str, sender: str = ATTACKER_URI) -> bytes:
    return MessageEnvelope(target, sender, payload, type_hint).to_bytes()


def message(target: str, payload: bytes, type_hint: str) -> bytes:
    return frame(FRAME_MESSAGE, envelope(target, payload, type_hint))


def message_prefix(target: str, payload_size: int, type_hint: str) -> bytes:
    """A message frame's bytes before a payload of ``payload_size`` bytes (sent separately)."""
    head = envelope(target, b"", type_hint)
    return _HEADER.pack(len(head) + payload_size + 1, FRAME_MESSAGE) + head


PLAIN = MsgpackSerializer()


def encoded(value: Any) -> bytes:
    return PLAIN.serialize(value)


class Raw:
    """One raw TCP connection to the victim, with a frame reader."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self._buf = bytearray()
        self.closed = False  # by the peer (EOF or reset) or by us

    @classmethod
    async def connect(cls, port: int, timeout: float = 5.0) -> Raw:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def send(self, *parts: bytes | memoryview) -> bool:
        """Send every part; False (and ``closed``) once the peer has closed the connection."""
        try:
            for part in parts:
                await self.loop.sock_sendall(self.sock, part)
        except OSError:
            self.closed = True
            return False
        return True

    async def read_frame(self, timeout: float) -> tuple[int, bytes] | None:
        """The next frame; None when the peer closed first or ``timeout`` ran out."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if len(self._buf) >= 5:
                        (length,) = struct.unpack_from(">I", self._buf)
                        if len(self._buf) >= 4 + length:
                            kind, body = self._buf[4], bytes(self._buf[5 : 4 + length])
                            del self._buf[: 4 + length]
                            return kind, body
                    data = await self.loop.sock_recv(self.sock, 1 << 16)
                    if not data:
                        self.closed = True
                        return None
                    self._buf += data
        except TimeoutError:
            return None
        except OSError:
            self.closed = True
            return None

    async def handshake_answered(self, timeout: float = 2.0) -> bool:
        """True when the victim answers with its own handshake (it took ours)."""
        while True:
            got = await self.read_frame(timeout)
            if got is None:
                return False
            if got[0] == FRAME_HANDSHAKE:
                return True

    def peer_closed(self) -> bool:
        """Whether the victim has closed the connection (a non-blocking peek)."""
        if self.closed:
            return True
        try:
            data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            self.closed = True
            return True
        if not data:
            self.closed = True
            return True
        self._buf += data  # frames (a handshake answer); kept for read_frame
        if len(self._buf) > 1 << 20:
            del self._buf[:]  # an idle attacker does not need what it is sent
        return False

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class PortPool:
    """Ports on 127.0.0.1 bound by this process and never listened on: a connect to one is
    refused at once, and nothing else can listen there while the pool holds it.  The claims
    and unreachable reply addresses of the attacks come from here, so the victim never dials
    anything real."""

    def __init__(self) -> None:
        self._socks: list[socket.socket] = []
        self.ports: list[int] = []

    def take(self, n: int) -> list[int]:
        while len(self.ports) < n:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            self._socks.append(sock)
            self.ports.append(sock.getsockname()[1])
        return self.ports[:n]

    def close(self) -> None:
        for sock in self._socks:
            sock.close()
        self._socks.clear()
        self.ports.clear()
