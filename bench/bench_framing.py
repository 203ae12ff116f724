"""FrameProtocol: splitting received chunks and queueing + flushing sends, Cython vs pure.

``split`` feeds 64 KiB chunks of back-to-back message frames (100-byte bodies,
so frames straddle chunk edges as they do on a socket) to ``data_received``
with a no-op sink.  ``send`` calls ``send_message`` 64 times per flush, the
flush writing to a transport that only counts bytes; the 64 ``call_soon``
flush handles this schedules run (as no-ops) once the measure is over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from itertools import repeat
from types import ModuleType
from typing import Any

import uvloop

from bench._harness import Table, rate
from casty._fast import framing as fast
from casty.transport import framing as pure

BODY = b"b" * 100
CHUNK = 64 * 1024
STREAM_FRAMES = 6400  # ~10 chunks
BATCH = 64


class _Owner:
    def frame_connection_made(self, proto: Any) -> None:
        pass

    def frame_handshake(self, proto: Any, body: bytes) -> None:
        pass

    def frame_message(self, proto: Any, body: bytes) -> None:
        pass

    def frame_error(self, proto: Any, reason: str) -> None:
        raise AssertionError(reason)

    def frame_connection_lost(self, proto: Any, exc: BaseException | None, unsent: int) -> None:
        pass


class _CountingTransport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False


def _split_op(module: ModuleType) -> Callable[[int], None]:
    stream = pure.encode_frame(pure.FRAME_MESSAGE, BODY) * STREAM_FRAMES
    chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]
    proto = module.FrameProtocol(_Owner())
    proto.set_message_sink(lambda body: None)
    feed = proto.data_received

    def split(n: int) -> None:
        for _ in repeat(None, max(1, n // STREAM_FRAMES)):
            for chunk in chunks:
                feed(chunk)

    return split


def _send_op(module: ModuleType) -> tuple[Callable[[int], None], _CountingTransport]:
    proto = module.FrameProtocol(_Owner())
    transport = _CountingTransport()
    proto.connection_made(transport)
    send, flush = proto.send_message, proto._flush

    def send_and_flush(n: int) -> None:
        for _ in repeat(None, max(1, n // BATCH)):
            for _ in repeat(None, BATCH):
                send(BODY)
            flush()

    return send_and_flush, transport


async def _measure(quick: bool) -> Table:
    n_fast, n_pure = (64_000, 12_800) if quick else (1_280_000, 192_000)
    table = Table("framing", unit="frames/s")
    split_fast, split_pure = _split_op(fast), _split_op(pure)
    table.add("split 100-byte frames", rate(split_fast, n_fast), rate(split_pure, n_pure))
    (send_fast, t_fast), (send_pure, t_pure) = _send_op(fast), _send_op(pure)
    table.add(
        "send_message + flush (fake transport)", rate(send_fast, n_fast), rate(send_pure, n_pure)
    )
    await asyncio.sleep(0)  # run the piled-up (no-op) flush handles
    assert t_fast.written and t_pure.written
    table.notes.append(
        f"split: 64 KiB chunks of 105-byte frames, no-op sink; send: {BATCH} send_message "
        f"calls (100-byte envelopes) per flush, one transport.write each"
    )
    return table


def collect(quick: bool) -> list[Table]:
    loop = uvloop.new_event_loop()
    try:
        return [loop.run_until_complete(_measure(quick))]
    finally:
        loop.close()


if __name__ == "__main__":
    for t in collect(quick=False):
        print(t.render())
