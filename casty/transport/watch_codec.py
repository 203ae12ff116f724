"""The body of a death-watch frame (kind ``FRAME_WATCH``, cap ``"watch"``): a neutral codec.

Layout, all big-endian::

    [tag:1][watched_len:2][watched path, UTF-8][watcher_len:2][watcher path, UTF-8]

``tag`` is ``WATCH_TAG_WATCH`` (1, the sender's actor at *watcher* watches the
receiver's at *watched*), ``WATCH_TAG_UNWATCH`` (2, it no longer does) or
``WATCH_TAG_TERMINATED`` (3, the receiver's watch of *watched* on the sender has
fired: that actor stopped, or never existed).  Both paths are actor paths (``/user/a``)
on their own node: the connection says which nodes.  Each is 1..``MAX_WATCH_PATH``
bytes, starts with ``/`` and holds no whitespace or control character; nothing
may follow the second path.

>>> body = encode_watch(WATCH_TAG_WATCH, "/user/b", "/user/a")
>>> body
b'\\x01\\x00\\x07/user/b\\x00\\x07/user/a'
>>> decode_watch(body)
(1, '/user/b', '/user/a')
"""

from __future__ import annotations

from casty.errors import WatchFrameError
from casty.wire import MAX_WATCH_PATH, WATCH_TAG_TERMINATED, WATCH_TAG_UNWATCH, WATCH_TAG_WATCH

__all__ = ["MAX_WATCH_BODY", "WATCH_TAGS", "WatchFrameError", "decode_watch", "encode_watch", "valid_path"]

#: the tags a watch frame may carry
WATCH_TAGS = frozenset({WATCH_TAG_WATCH, WATCH_TAG_UNWATCH, WATCH_TAG_TERMINATED})
#: the longest well-formed body: a longer one is refused before it is copied
MAX_WATCH_BODY = 1 + 2 * (2 + MAX_WATCH_PATH)


def valid_path(path: str) -> bool:
    """True when ``path`` can travel in a watch frame: ``/``-led, printable, no whitespace,
    at most ``MAX_WATCH_PATH`` UTF-8 bytes."""
    return (
        path.startswith("/")
        and path.isprintable()
        and not any(ch.isspace() for ch in path)
        and len(path.encode("utf-8", "surrogatepass")) <= MAX_WATCH_PATH
    )


def encode_watch(tag: int, watched: str, watcher: str) -> bytes:
    """The body of a watch frame; ValueError naming the bad tag or path."""
    if tag not in WATCH_TAGS:
        raise ValueError(f"watch frame tag must be one of {sorted(WATCH_TAGS)}, got {tag!r}")
    parts = [bytes((tag,))]
    for name, path in (("watched", watched), ("watcher", watcher)):
        if not isinstance(path, str) or not valid_path(path):
            raise ValueError(
                f"{name} path {path!r:.200} cannot go in a watch frame: it must start with '/', "
                f"hold no whitespace or control character and be at most {MAX_WATCH_PATH} bytes"
            )
        raw = path.encode("utf-8")
        parts.append(len(raw).to_bytes(2, "big"))
        parts.append(raw)
    return b"".join(parts)


def _path(body: bytes, at: int, name: str) -> tuple[str, int]:
    if at + 2 > len(body):
        raise WatchFrameError(f"watch frame ends before the length of its {name} path")
    size = int.from_bytes(body[at:at + 2], "big")
    at += 2
    if size == 0 or size > MAX_WATCH_PATH:
        raise WatchFrameError(f"watch frame {name} path length {size} is not in 1..{MAX_WATCH_PATH}")
    if at + size > len(body):
        raise WatchFrameError(f"watch frame {name} path of {size} bytes runs past the body")
    try:
        path = body[at:at + size].decode("utf-8")
    except UnicodeDecodeError:
        raise WatchFrameError(f"watch frame {name} path is not UTF-8") from None
    if not valid_path(path):
        raise WatchFrameError(
            f"watch frame {name} path is not an actor path (a '/'-led path without whitespace "
            f"or control characters)"
        )
    return path, at + size


def decode_watch(body: bytes | bytearray | memoryview) -> tuple[int, str, str]:
    """``(tag, watched, watcher)`` of a watch frame body; WatchFrameError saying what is
    wrong (never quoting the peer's bytes).  Linear in the body's length."""
    if len(body) > MAX_WATCH_BODY:
        raise WatchFrameError(f"watch frame of {len(body)} bytes is longer than {MAX_WATCH_BODY}")
    data = bytes(body)
    if not data:
        raise WatchFrameError("empty watch frame")
    tag = data[0]
    if tag not in WATCH_TAGS:
        raise WatchFrameError(f"unknown watch frame tag {tag}")
    watched, at = _path(data, 1, "watched")
    watcher, at = _path(data, at, "watcher")
    if at != len(data):
        raise WatchFrameError(f"{len(data) - at} bytes after the watcher path of a watch frame")
    return tag, watched, watcher
