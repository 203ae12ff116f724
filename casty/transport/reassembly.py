"""The reassembly of a peer's message fragments (cap ``"frag"``): the pure twin of
``casty._fast.reassembly``.

The rules of a data fragment's body are in ``casty.transport.fragments`` (module
docstring).  A stream's whole body is allocated once, when its FIRST fragment announces
``total``, and every fragment is copied into place: no per-fragment pieces and no join at
the end.  So the bytes a peer makes this node hold are the announced totals of its open
streams: they are what ``max_fragment_bytes`` bounds, checked before anything is
allocated (a FIRST fragment that would pass it is refused).
"""

from __future__ import annotations

import struct
from typing import Any

from casty.errors import FragmentError

__all__ = ["Reassembler"]

_FIRST = 0x01
_LAST = 0x02
_U32 = struct.Struct(">I")


class Reassembler:
    """The open fragment streams of one connection, bounded in count and bytes.

    :meth:`feed` takes a data fragment's body and returns the whole message body once its
    last fragment is in (else None); it raises FragmentError for a body that breaks the
    rules.  After an error the state is cleared: the caller closes the connection.
    """

    __slots__ = ("_held", "_max_bytes", "_max_message", "_max_streams", "_streams")

    def __init__(self, *, max_message: int, max_streams: int, max_bytes: int) -> None:
        self._max_message = max_message
        self._max_streams = max_streams
        self._max_bytes = max_bytes
        # stream -> [buffer of its announced total, bytes received]
        self._streams: dict[int, list[Any]] = {}
        self._held = 0

    @property
    def held_bytes(self) -> int:
        """Bytes held for open streams: the sum of their announced totals."""
        return self._held

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def clear(self) -> None:
        self._streams.clear()
        self._held = 0

    def feed(self, body: Any) -> bytes | None:
        try:
            return self._feed(body)
        except FragmentError:
            self.clear()
            raise

    def _feed(self, body: Any) -> bytes | None:
        size = len(body)
        if size < 5:
            raise FragmentError(f"fragment body of {size} bytes (at least 5: flags and stream)")
        flags = body[0]
        if flags & ~(_FIRST | _LAST):
            raise FragmentError(f"fragment flags 0x{flags:02x} name no known bit pattern")
        stream = _U32.unpack_from(body, 1)[0]
        start = 5
        if flags & _FIRST:
            if size < 9:
                raise FragmentError(f"first fragment body of {size} bytes (at least 9: flags, stream, total)")
            if stream in self._streams:
                raise FragmentError(f"fragment opens stream {stream}, which is open already")
            total = _U32.unpack_from(body, 5)[0]
            if not 0 < total <= self._max_message:
                raise FragmentError(
                    f"fragment stream {stream} announces {total} bytes (1..{self._max_message}: max_frame_size)"
                )
            if len(self._streams) >= self._max_streams:
                raise FragmentError(f"more than {self._max_streams} fragment streams open (max_fragment_streams)")
            if self._held + total > self._max_bytes:
                raise FragmentError(
                    f"fragment stream {stream} announces {total} bytes with {self._held} held: "
                    f"over {self._max_bytes} bytes (max_fragment_bytes)"
                )
            start = 9
            n = size - start
            if n == 0:
                raise FragmentError(f"empty fragment on stream {stream}")
            if n > total:
                raise FragmentError(f"fragment stream {stream} overruns its {total} announced bytes")
            if flags & _LAST:
                if n != total:
                    raise FragmentError(f"fragment stream {stream} ended at {n} of {total} bytes")
                return bytes(body[start:])
            buf = bytearray(total)
            buf[:n] = memoryview(body)[start:]
            self._streams[stream] = [buf, n]
            self._held += total
            return None
        state = self._streams.get(stream)
        if state is None:
            raise FragmentError(f"fragment for stream {stream}, which is not open")
        buf, got = state
        total = len(buf)
        n = size - start
        if n == 0:
            raise FragmentError(f"empty fragment on stream {stream}")
        end = got + n
        if end > total:
            raise FragmentError(f"fragment stream {stream} overruns its {total} announced bytes")
        if flags & _LAST and end != total:
            raise FragmentError(f"fragment stream {stream} ended at {end} of {total} bytes")
        buf[got:end] = memoryview(body)[start:]
        if not flags & _LAST:
            state[1] = end
            return None
        del self._streams[stream]
        self._held -= total
        return bytes(buf)
