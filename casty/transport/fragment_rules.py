"""The rules a peer's data fragment must keep, and their error texts: a neutral module that
both reassembler twins (``casty.transport.reassembly``, ``casty._fast.reassembly``) import,
so they refuse the same fragments in the same words.  The body layout is in
``casty.transport.fragments`` and docs/architecture.md ("Fragments").

>>> piece_problem(7, 0, 0, 10, False)
'empty fragment on stream 7'
>>> piece_problem(7, 4, 8, 10, False)
'fragment stream 7 overruns its 10 announced bytes'
>>> piece_problem(7, 2, 0, 10, True)
'fragment stream 7 ended at 2 of 10 bytes'
"""

from __future__ import annotations

__all__ = ["FIRST", "LAST", "head_problem", "not_open_problem", "opening_problem", "piece_problem"]

#: flag bits of a data fragment: FIRST opens a stream (and announces its total), LAST ends it
FIRST = 0x01
LAST = 0x02


def head_problem(size: int, flags: int) -> str | None:
    """Why a data fragment body of ``size`` bytes starting with ``flags`` is refused before
    its stream is looked at (``flags`` is read only when ``size`` > 0), else None."""
    if size < 5:
        return f"fragment body of {size} bytes (at least 5: flags and stream)"
    if flags & ~(FIRST | LAST):
        return f"fragment flags 0x{flags:02x} name no known bit pattern"
    return None


def opening_problem(
    size: int, stream: int, total: int, is_open: bool, open_streams: int, max_streams: int,
    held: int, max_bytes: int, max_message: int,
) -> str | None:
    """Why a FIRST fragment (``size`` body bytes, ``total`` announced) may not open
    ``stream``, else None; checked before anything is allocated (``total`` is read only
    when ``size`` >= 9)."""
    if size < 9:
        return f"first fragment body of {size} bytes (at least 9: flags, stream, total)"
    if is_open:
        return f"fragment opens stream {stream}, which is open already"
    if not 0 < total <= max_message:
        return f"fragment stream {stream} announces {total} bytes (1..{max_message}: max_frame_size)"
    if open_streams >= max_streams:
        return f"more than {max_streams} fragment streams open (max_fragment_streams)"
    if held + total > max_bytes:
        return (f"fragment stream {stream} announces {total} bytes with {held} held: "
                f"over {max_bytes} bytes (max_fragment_bytes)")
    return None


def piece_problem(stream: int, n: int, got: int, total: int, last: bool) -> str | None:
    """Why ``n`` more data bytes for ``stream`` (``got`` of ``total`` in so far; ``last``:
    the LAST flag is set) are refused, else None."""
    if n == 0:
        return f"empty fragment on stream {stream}"
    if got + n > total:
        return f"fragment stream {stream} overruns its {total} announced bytes"
    if last and got + n != total:
        return f"fragment stream {stream} ended at {got + n} of {total} bytes"
    return None


def not_open_problem(stream: int) -> str:
    return f"fragment for stream {stream}, which is not open"
