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
from casty.transport.fragment_rules import FIRST, LAST, head_problem, not_open_problem, opening_problem, piece_problem

__all__ = ["Reassembler"]

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
        flags = body[0] if size else 0
        problem = head_problem(size, flags)
        if problem is not None:
            raise FragmentError(problem)
        stream = _U32.unpack_from(body, 1)[0]
        start = 5
        if flags & FIRST:
            total = _U32.unpack_from(body, 5)[0] if size >= 9 else 0
            problem = opening_problem(size, stream, total, stream in self._streams, len(self._streams),
                                      self._max_streams, self._held, self._max_bytes, self._max_message)
            if problem is None:
                problem = piece_problem(stream, size - 9, 0, total, bool(flags & LAST))
            if problem is not None:
                raise FragmentError(problem)
            start = 9
            n = size - start
            if flags & LAST:
                return bytes(body[start:])
            buf = bytearray(total)
            buf[:n] = memoryview(body)[start:]
            self._streams[stream] = [buf, n]
            self._held += total
            return None
        state = self._streams.get(stream)
        if state is None:
            raise FragmentError(not_open_problem(stream))
        buf, got = state
        total = len(buf)
        n = size - start
        problem = piece_problem(stream, n, got, total, bool(flags & LAST))
        if problem is not None:
            raise FragmentError(problem)
        end = got + n
        buf[got:end] = memoryview(body)[start:]
        if not flags & LAST:
            state[1] = end
            return None
        del self._streams[stream]
        self._held -= total
        return bytes(buf)
