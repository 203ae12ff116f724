"""Compact headers (cap "hdr"): the per-connection name tables both twins share.

On a connection where both handshakes list ``"hdr"``, a message's target URI, sender
URI and type hint are each sent once as a table entry and then named by their ids:

* entry frame (kind ``FRAME_HDR_ENTRY``, 0x06): ``[id:2, big-endian][name: UTF-8]``; the
  id is the table's next one (entries are numbered 0, 1, 2, ... in the order sent), the
  name 1..``MAX_HDR_NAME_BYTES`` bytes.  An empty body clears the table: numbering
  starts over at 0.
* compact message (kind ``FRAME_COMPACT``, 0x07): ``[target id:2][sender id:2][type hint
  id:2][payload]``, each id naming an entry sent earlier on the same connection.

One table per connection and direction: the sending node chooses the ids
(:class:`HeaderTable`), the receiving one records them (:class:`HeaderNames`).  A
table holds at most ``MAX_HDR_ENTRIES`` names of ``MAX_HDR_BYTES`` UTF-8 bytes in all.
Eviction rule: when a message needs names that do not fit, the sender clears the
whole table (an empty entry frame) and starts over with that message's names; so a
steady set of names stays put and a churning one costs one clear per table's worth.
Ask reply paths (under ``/temp/``), used once, never enter a table: those messages go
as ordinary message frames with the JSON header, as do names longer than
``MAX_HDR_NAME_BYTES`` bytes or not encodable as UTF-8.

A connection's tables start empty, and entries and compact messages are only ever
queued on the connection whose table they belong to (a frame queued while a
connection is being made carries the JSON header), so an entry always precedes its
first use.  The receiver refuses (and the node closes the connection for) an entry
out of order, an entry over a bound, a name that is not UTF-8, a compact message
shorter than its header, and an id naming no entry.

This module imports only neutral ones; the layouts are in docs/architecture.md.
"""

from __future__ import annotations

import struct
from typing import Any

from casty.transport.envelope_codec import encode_header
from casty.transport.frame_codec import encode_frame
from casty.wire import (
    COMPACT_HEADER_SIZE,
    FRAME_HDR_ENTRY,
    MAX_CACHED_HEADERS,
    MAX_HDR_BYTES,
    MAX_HDR_ENTRIES,
    MAX_HDR_NAME_BYTES,
)

__all__ = [
    "COMPACT_HEAD",
    "RESET_FRAME",
    "HeaderNames",
    "HeaderTable",
    "compact_problem",
    "encode_entry",
    "table_name",
]

#: a compact message's header: target, sender and type hint ids
COMPACT_HEAD = struct.Struct(">HHH")
_ID = struct.Struct(">H")
#: the entry frame that clears a table
RESET_FRAME = encode_frame(FRAME_HDR_ENTRY, b"")


def encode_entry(entry_id: int, name: bytes) -> bytes:
    """The whole entry frame giving ``name`` (UTF-8) the id ``entry_id``.

    >>> encode_entry(0, b"casty://s@h:1/user/a")
    b'\\x00\\x00\\x00\\x17\\x06\\x00\\x00casty://s@h:1/user/a'
    """
    return encode_frame(FRAME_HDR_ENTRY, _ID.pack(entry_id) + name)


def table_name(name: str) -> bytes | None:
    """``name`` as a table entry holds it (UTF-8), or None when it cannot be one (empty,
    longer than MAX_HDR_NAME_BYTES bytes, or not encodable)."""
    if type(name) is not str or not name or len(name) > MAX_HDR_NAME_BYTES:
        return None
    try:
        data = name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return None
    return data if len(data) <= MAX_HDR_NAME_BYTES else None


def compact_problem(size: int, ids: tuple[int, int, int] | None, entries: int) -> str:
    """Why a compact message of ``size`` body bytes with ``ids`` (None: too short to
    hold them) cannot be read against a table of ``entries`` entries."""
    if ids is None:
        return f"compact message of {size} bytes is shorter than its {COMPACT_HEADER_SIZE}-byte header"
    bad = next(i for i in ids if i >= entries)
    return f"compact message names header-table entry {bad}, but the table holds {entries}"


class HeaderTable:
    """The names this node gave one connection (the sending side of its compact headers).

    ``proto`` is the connection's FrameProtocol: entry frames go out on it through
    ``send_control`` (never dropped by the queue bound, so an entry cannot be lost
    while a message naming it is queued), compact messages through ``send_message``.
    ``epoch`` grows by one at each start-over: a header cached outside is valid only
    while it is unchanged.

    >>> class Proto:
    ...     def __init__(self): self.frames = []
    ...     def send_control(self, frame): self.frames.append(frame); return True
    >>> t = HeaderTable(Proto())
    >>> t.header("casty://s@h:1/user/a", "casty://c@h:2/", "app.Tick")
    b'\\x00\\x00\\x00\\x01\\x00\\x02'
    >>> len(t.proto.frames), t.entries
    (3, 3)
    """

    __slots__ = ("_bytes", "_headers", "_ids", "_names", "epoch", "proto")

    def __init__(self, proto: Any) -> None:
        self.proto = proto
        self.epoch = 0
        self._ids: dict[str, int] = {}
        self._names: list[str] = []  # by id
        self._bytes = 0
        self._headers: dict[tuple[str, str, str], bytes] = {}

    @property
    def entries(self) -> int:
        """Names in the table."""
        return len(self._ids)

    @property
    def name_bytes(self) -> int:
        """UTF-8 bytes of the names in the table."""
        return self._bytes

    def header(self, target: str, sender: str, hint: str) -> bytes | None:
        """The compact header naming (target, sender, hint), their entries sent first when
        new; None when one of them cannot be an entry (the message then goes with the
        JSON header)."""
        key = (target, sender, hint)
        header = self._headers.get(key)
        if header is not None:
            return header
        new = self._new_names(key)
        if new is None:
            return None
        if len(self._ids) + len(new) > MAX_HDR_ENTRIES or self._bytes + sum(map(len, new.values())) > MAX_HDR_BYTES:
            self._start_over()
            new = self._new_names(key)
            assert new is not None
        ids = self._ids
        send = self.proto.send_control
        for name, data in new.items():
            entry = ids[name] = len(ids)
            self._names.append(name)
            self._bytes += len(data)
            send(encode_entry(entry, data))
        if len(self._headers) >= MAX_CACHED_HEADERS:
            self._headers.clear()
        header = self._headers[key] = COMPACT_HEAD.pack(ids[target], ids[sender], ids[hint])
        return header

    def _new_names(self, key: tuple[str, str, str]) -> dict[str, bytes] | None:
        new: dict[str, bytes] = {}
        for name in key:
            if name not in self._ids and name not in new:
                data = table_name(name)
                if data is None:
                    return None
                new[name] = data
        return new

    def expand(self, body: Any) -> bytes:
        """The compact message ``body`` (bytes, or buffers that joined make it) as the same
        message with its JSON header, named by this table as it is now.

        >>> class Proto:
        ...     def send_control(self, frame): return True
        >>> t = HeaderTable(Proto())
        >>> head = t.header("casty://s@h:1/user/a", "casty://c@h:2/", "int")
        >>> t.expand(head + b"\\x07")[4:]
        b'{"target": "casty://s@h:1/user/a", "sender": "casty://c@h:2/", "type_hint": "int"}\\x07'
        """
        data = b"".join(body) if isinstance(body, list) else bytes(body)
        target, sender, hint = (self._names[i] for i in COMPACT_HEAD.unpack_from(data))
        return encode_header(target, sender, hint) + data[COMPACT_HEAD.size :]

    def _start_over(self) -> None:
        self._ids.clear()
        self._names.clear()
        self._headers.clear()
        self._bytes = 0
        self.epoch += 1
        self.proto.send_control(RESET_FRAME)


class HeaderNames:
    """The names a peer gave this node on one connection (the receiving side).

    ``names[id]`` is the entry with that id.  :meth:`add` takes an entry frame's body
    and returns None, or why it is refused (the caller closes the connection); the
    list object stays the same across clears, so a reader may keep it.

    >>> n = HeaderNames()
    >>> n.add(b"\\x00\\x00casty://s@h:1/user/a"), n.names
    (None, ['casty://s@h:1/user/a'])
    >>> n.add(b"\\x00\\x05x")
    'header-table entry 5 out of order: the next is 1'
    """

    __slots__ = ("_bytes", "names")

    def __init__(self) -> None:
        self.names: list[str] = []
        self._bytes = 0

    @property
    def name_bytes(self) -> int:
        """UTF-8 bytes of the names held."""
        return self._bytes

    def add(self, body: Any) -> str | None:
        """Record the entry frame ``body`` (bytes-like); None, or why it is refused."""
        size = len(body)
        if size == 0:
            self.names.clear()
            self._bytes = 0
            return None
        if size < 3:
            return f"header-table entry of {size} bytes holds no name (an id takes 2, a name at least 1)"
        entry = (body[0] << 8) | body[1]
        count = len(self.names)
        if entry != count:
            return f"header-table entry {entry} out of order: the next is {count}"
        if count >= MAX_HDR_ENTRIES:
            return f"header-table entry {entry} past the bound of {MAX_HDR_ENTRIES} entries"
        nbytes = size - 2
        if nbytes > MAX_HDR_NAME_BYTES:
            return f"header-table entry {entry} of {nbytes} bytes is over the bound of {MAX_HDR_NAME_BYTES}"
        if self._bytes + nbytes > MAX_HDR_BYTES:
            return f"header-table entry {entry} would take the table past its bound of {MAX_HDR_BYTES} bytes"
        try:
            name = bytes(body[2:]).decode("utf-8")
        except UnicodeDecodeError:
            return f"header-table entry {entry} is not UTF-8"
        self.names.append(name)
        self._bytes += nbytes
        return None
