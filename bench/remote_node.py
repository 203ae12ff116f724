"""Child processes for the two-process benchmarks: ``python -m bench.remote_node ROLE ...``.

Roles print one line of JSON (a sink prints its port first).  The implementation
(Cython or pure twin) is chosen by the CASTY_NO_EXTENSIONS the parent sets.
``casty-tell-json`` is ``casty-tell`` with compact headers off (every message carries the
JSON header).  ``tell-cpu N on|off`` runs both nodes in its one process and prints the CPU
time per tell, compact headers on or off.  ``page-tell``/``page-ask`` are
``casty-tell``/``casty-ask`` from a node wired by hand from the seed page's pieces (the
casty 0.21 way) instead of a RemoteActorSystem.
``casty-sink``/``casty-ask`` take an optional busy_poll window in seconds (default 0,
off); ``raw-echo``/``raw-pingpong`` take one too and then poke a BusyPoller on every
write, the same spin casty uses, so the two compare like for like.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import statistics
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

FRAME = (96).to_bytes(4, "big") + b"\x01" + b"x" * 95  # 100 bytes on the wire


@dataclass(frozen=True)
class Tick:
    seq: int
    text: str


@dataclass(frozen=True)
class Done:
    reply_to: Any


@dataclass(frozen=True)
class Echo:
    seq: int
    reply_to: Any


@dataclass(frozen=True)
class Blob:
    data: bytes


def registry() -> Any:
    from casty import TypeRegistry

    reg = TypeRegistry()
    for cls in (Tick, Done, Echo, Blob):
        reg.register(cls, f"bench.{cls.__name__}")
    return reg


def liveness() -> dict[str, Any]:
    """The liveness options of the casty nodes (bench_liveness compares them): heartbeats on
    with the defaults, off with CASTY_BENCH_HEARTBEATS=0, or on every that many seconds
    (a float) with CASTY_BENCH_HEARTBEATS=0.1 and the like ("1": the defaults)."""
    value = os.environ.get("CASTY_BENCH_HEARTBEATS", "1")
    if value == "0":
        return {"heartbeats": False}
    if value == "1":
        return {}
    return {"heartbeat_interval": float(value)}


async def wait_stdin() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# -- casty -------------------------------------------------------------------------

async def casty_sink(busy_poll: float = 0.0, fragment_size: int | None = None) -> None:
    """The sink node: ``/user/sink`` counts Ticks and answers Echo and Done; ``/user/stream``
    counts the bytes of Blobs and answers Done with that count."""
    from casty import Behaviors, RemoteActorSystem

    count = 0
    streamed = 0

    async def stream(ctx: Any, msg: Any) -> Any:
        nonlocal streamed
        if type(msg) is Blob:
            streamed += len(msg.data)
        else:
            msg.reply_to.tell(streamed)
        return Behaviors.same()

    async def receive(ctx: Any, msg: Any) -> Any:
        nonlocal count
        if type(msg) is Tick:
            count += 1
        elif type(msg) is Done:
            msg.reply_to.tell(count)
            count = 0
        else:
            msg.reply_to.tell(msg.seq)
        return Behaviors.same()

    frag = {} if fragment_size is None else {"fragment_size": fragment_size}
    async with RemoteActorSystem("sink", "127.0.0.1", 0, registry=registry(), busy_poll=busy_poll,
                                 **liveness(), **frag) as system:
        system.spawn(Behaviors.receive(receive), "sink")
        system.spawn(Behaviors.receive(stream), "stream")
        print(system.address.port, flush=True)
        await wait_stdin()


@contextlib.asynccontextmanager
async def client_system(page: bool, compact: bool = True) -> AsyncIterator[tuple[Any, Callable[[str], Any]]]:
    """(system, ref by URI): a RemoteActorSystem, or with ``page`` an ActorSystem wired by
    hand from the seed page's pieces as casty 0.21's clustered system does (RemoteTransport
    on the page's arguments only, so it sends with tcp_transport's serializer).
    ``compact``: offer compact headers (cap "hdr"); off, every message has the JSON header."""
    from casty import (
        ActorAddress,
        ActorSystem,
        GetPort,
        InboundMessageHandler,
        LocalTransport,
        MsgpackSerializer,
        RemoteActorSystem,
        RemoteTransport,
        TcpTransportConfig,
        tcp_transport,
    )

    if not page:
        async with RemoteActorSystem("src", "127.0.0.1", 0, registry=registry(), **liveness(),
                                     compact_headers=compact) as remote_system:
            yield remote_system, remote_system.ref
        return

    class PageSystem(ActorSystem):
        # Refs that travel name this node, as casty 0.21's clustered system stamps them.
        remote: Any = None
        port = 0

        def address_of(self, path: str) -> Any:
            return super().address_of(path) if self.remote is None else (
                ActorAddress(self.name, path, "127.0.0.1", self.port))

        def make_ref(self, address: Any) -> Any:
            return super().make_ref(address) if self.remote is None else self.remote.make_ref(address)

    ser = MsgpackSerializer(registry())
    system = PageSystem("src", local_transport=LocalTransport())
    inbound = InboundMessageHandler(local=system.local, serializer=ser, system_name="src")
    tcp = system.spawn(tcp_transport(TcpTransportConfig("127.0.0.1", 0, compact_headers=compact), inbound,
                                     serializer=ser), "tcp")
    system.port = await system.ask(tcp, lambda r: GetPort(r), timeout=5)
    remote = RemoteTransport(local=system.local, tcp=tcp, local_host="127.0.0.1", local_port=system.port,
                             system_name="src")
    inbound.ref_factory = remote.make_ref
    system.remote = remote
    async with system:
        yield system, lambda uri: remote.make_ref(ActorAddress.from_uri(uri))


def header_bytes(system: Any, target: str, msg: Any, compact: bool) -> int:
    """Bytes a message's header takes in the frame body, once its names are known: the
    JSON header with its length prefix, or the compact header's ids."""
    from casty._impl import EnvelopeWriter
    from casty.transport.compact_codec import HeaderTable

    class Sink:
        def send_control(self, frame: bytes) -> bool:
            return True

    writer = EnvelopeWriter(system.serializer)
    sender = system.address.with_path("/").to_uri()
    payload = len(system.serializer.serialize(msg))
    body = writer.encode_compact(HeaderTable(Sink()), target, sender, msg) if compact else None
    if body is None:
        body = writer.encode_parts(target, sender, msg)
    return len(b"".join(body) if isinstance(body, list) else body) - payload


async def casty_tell(port: int, n: int, page: bool = False, compact: bool = True) -> dict[str, Any]:
    from casty import EXTENSIONS_ACTIVE

    async with client_system(page, compact) as (system, ref):
        sink = ref(f"casty://sink@127.0.0.1:{port}/user/sink")
        await system.ask(sink, lambda r: Done(r), timeout=30)  # connect before timing
        msg = Tick(1, "hello")
        window: asyncio.Task[Any] | None = None
        t0 = time.perf_counter()
        c0 = time.process_time()
        for i in range(n):
            sink.tell(msg)
            if i & 511 == 511:
                # Yield so the queued frames leave in one write while we go on producing.
                # Every 16k an ask marks a window; we wait for the one before it, so at
                # most two windows are in flight and the receiver sets the pace without
                # the pipe ever running dry.
                if i % 16_384 == 16_383:
                    if window is not None:
                        await window
                    window = asyncio.ensure_future(system.ask(sink, lambda r, i=i: Echo(i, r), timeout=120))
                else:
                    await asyncio.sleep(0)
        if window is not None:
            await window
        got = await system.ask(sink, lambda r: Done(r), timeout=120)
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0  # the sender's own CPU: what others' load on the machine barely moves
        hdr = header_bytes(system, f"casty://sink@127.0.0.1:{port}/user/sink", msg, compact) if not page else None
        return {"ext": EXTENSIONS_ACTIVE, "n": n, "received": got, "rate": n / dt, "cpu_rate": n / cpu,
                "header_bytes": hdr}


async def tell_cpu(n: int, compact: bool) -> dict[str, Any]:
    """Both nodes in this process, over loopback: CPU seconds (process time, so the other
    processes on the machine count little) per tell, sending and receiving, per message."""
    from casty import EXTENSIONS_ACTIVE, Behaviors, RemoteActorSystem

    done = asyncio.Event()
    count = 0

    async def receive(ctx: Any, msg: Any) -> Any:
        nonlocal count
        if type(msg) is Tick:
            count += 1
            if count == n:
                done.set()
        else:
            msg.reply_to.tell(count)
        return Behaviors.same()

    async with RemoteActorSystem("sink", "127.0.0.1", 0, registry=registry(), **liveness()) as sink_system, \
            RemoteActorSystem("src", "127.0.0.1", 0, registry=registry(), **liveness(),
                              compact_headers=compact) as system:
        sink_system.spawn(Behaviors.receive(receive), "sink")
        sink = system.ref(sink_system.address.with_path("/user/sink").to_uri())
        await system.ask(sink, lambda r: Done(r), timeout=30)  # connect before timing
        count = 0
        msg = Tick(1, "hello")
        c0 = time.process_time()
        for i in range(n):
            sink.tell(msg)
            if i & 511 == 511:
                await asyncio.sleep(0)  # let the frames leave and the sink take them
        await asyncio.wait_for(done.wait(), 120)
        cpu = time.process_time() - c0
        return {"ext": EXTENSIONS_ACTIVE, "n": n, "cpu_us": 1e6 * cpu / n}


async def casty_ask(port: int, n: int, busy_poll: float = 0.0) -> dict[str, Any]:
    from casty import EXTENSIONS_ACTIVE, RemoteActorSystem

    async with RemoteActorSystem("src", "127.0.0.1", 0, registry=registry(), busy_poll=busy_poll) as system:
        sink = system.ref(f"casty://sink@127.0.0.1:{port}/user/sink")
        p = await ask_round_trips(system, sink, n)
        poller = system.node.busy_poller
        return {"ext": EXTENSIONS_ACTIVE, **p, "spins": poller.spins if poller else 0}


async def page_ask(port: int, n: int) -> dict[str, Any]:
    from casty import EXTENSIONS_ACTIVE

    async with client_system(page=True) as (system, ref):
        p = await ask_round_trips(system, ref(f"casty://sink@127.0.0.1:{port}/user/sink"), n)
        return {"ext": EXTENSIONS_ACTIVE, **p}


async def ask_round_trips(system: Any, sink: Any, n: int) -> dict[str, float]:
    """p50/p99 of ``n`` asks to ``sink``, after a warm-up."""
    for i in range(200):  # warm up: connection, caches
        await system.ask(sink, lambda r, i=i: Echo(i, r), timeout=30)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        await system.ask(sink, lambda r, i=i: Echo(i, r), timeout=30)
        samples.append(time.perf_counter() - t0)
    return percentiles(samples)


#: the blob of the stream rows, and how many of them may be in flight (told, not yet counted)
BLOB = 1024 * 1024
BLOBS_IN_FLIGHT = 4


async def frag_ask(port: int, n: int, fragment_size: int, behind: int, window: int = 4) -> dict[str, Any]:
    """Small asks to ``/user/sink``, alone (``behind`` 0) or while this node streams 1 MiB
    Blobs to ``/user/stream`` on the same peer; ``fragment_size`` 0 turns fragments off."""
    from casty import EXTENSIONS_ACTIVE, RemoteActorSystem

    async with RemoteActorSystem("src", "127.0.0.1", 0, registry=registry(), fragment_size=fragment_size,
                                 fragment_window=window) as system:
        sink = system.ref(f"casty://sink@127.0.0.1:{port}/user/sink")
        target = system.ref(f"casty://sink@127.0.0.1:{port}/user/stream")
        base = await system.ask(target, lambda r: Done(r), timeout=30)
        blob = Blob(b"b" * BLOB)
        running = True
        sent = 0

        async def streamer() -> None:
            # Up to BLOBS_IN_FLIGHT blobs ahead of what the stream actor has counted; the Done
            # asks go to the stream actor too, so they follow its blobs.
            nonlocal sent
            window: asyncio.Future[Any] | None = None
            while running:
                for _ in range(BLOBS_IN_FLIGHT // 2):
                    target.tell(blob)
                    sent += 1
                if window is not None:
                    await window
                window = asyncio.ensure_future(system.ask(target, lambda r: Done(r), timeout=60))
            if window is not None:
                await window

        task = asyncio.ensure_future(streamer()) if behind else None
        if task is not None:
            while sent < BLOBS_IN_FLIGHT:  # the stream is flowing before the first sample
                await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        p = await ask_round_trips(system, sink, n)
        dt = time.perf_counter() - t0
        running = False
        mbps = 0.0
        if task is not None:
            await task
            got = await system.ask(target, lambda r: Done(r), timeout=60) - base
            mbps = got / dt / 1e6
        return {"ext": EXTENSIONS_ACTIVE, **p, "stream_mb_s": mbps}


def percentiles(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100)
    return {"p50_us": q[49] * 1e6, "p99_us": q[98] * 1e6, "n": len(samples)}


# -- raw uvloop ceiling --------------------------------------------------------------

class RawSink(asyncio.Protocol):
    """A raw uvloop Protocol taking casty-shaped frames: split each, hand its body on.

    ``mode`` "frames" splits on the length prefixes in Python and passes every body
    to a callback (the least a frame protocol does); "bytes" only counts bytes, the
    socket's own ceiling; "echo" sends each 100-byte frame back (ping-pong).
    """

    def __init__(self, mode: str, poller: Any = None) -> None:
        self.mode = mode
        self.poller = poller
        self.received = 0
        self.frames = 0
        self.buf = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def on_body(self, body: bytes) -> None:
        self.frames += 1

    def data_received(self, data: bytes) -> None:
        if self.mode == "bytes":
            self.received += len(data)
            return
        if self.mode == "echo":
            self.buf += data
            while len(self.buf) >= 100:
                self.transport.write(self.buf[:100])
                self.buf = self.buf[100:]
                if self.poller is not None:
                    self.poller.poke()
            return
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        unpack, on_body = _LENGTH.unpack_from, self.on_body
        while end - pos >= 4:
            stop = pos + 4 + unpack(buf, pos)[0]
            if stop > end:
                break
            on_body(buf[pos + 5:stop])
            pos = stop
        self.buf = buf[pos:]


_LENGTH = struct.Struct(">I")


def busy_poller(window: float) -> Any:
    """A casty BusyPoller on the running loop, or None for a window of 0."""
    from casty.transport.busy_poll import BusyPoller

    return BusyPoller(asyncio.get_running_loop(), window) if window > 0 else None


async def raw_sink(mode: str, busy_poll: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    protos: list[RawSink] = []
    poller = busy_poller(busy_poll)

    def factory() -> RawSink:
        p = RawSink(mode, poller)
        protos.append(p)
        return p

    server = await loop.create_server(factory, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await wait_stdin()
    if poller is not None:
        poller.close()
    server.close()


class RawSender(asyncio.Protocol):
    def __init__(self) -> None:
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.inbox = b""
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: Any) -> None:
        transport.set_write_buffer_limits(256 * 1024, 64 * 1024)
        self.transport = transport

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.inbox += data
        if len(self.inbox) >= 100 and self.waiter is not None and not self.waiter.done():
            self.inbox = self.inbox[100:]
            self.waiter.set_result(None)


async def raw_tell(port: int, n: int) -> dict[str, Any]:
    """Frames/s the sink can take: n pre-built 100-byte frames, written in 64 KiB batches."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(RawSender, "127.0.0.1", port)
    batch = FRAME * 655
    per = 655
    t0 = time.perf_counter()
    sent = 0
    while sent < n:
        await proto.can_write.wait()
        proto.transport.write(batch)
        sent += per
    # the sink has taken everything when our buffer is empty and a ping comes back
    while proto.transport.get_write_buffer_size():
        await asyncio.sleep(0)
    dt = time.perf_counter() - t0
    proto.transport.close()
    return {"rate": sent / dt}


async def raw_pingpong(port: int, n: int, busy_poll: float = 0.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(RawSender, "127.0.0.1", port)
    poller = busy_poller(busy_poll)
    samples = []
    for i in range(n + 200):
        proto.waiter = loop.create_future()
        t0 = time.perf_counter()
        proto.transport.write(FRAME)
        if poller is not None:
            poller.poke()
        await proto.waiter
        if i >= 200:
            samples.append(time.perf_counter() - t0)
    proto.transport.close()
    if poller is not None:
        poller.close()
    return percentiles(samples)


def main() -> None:
    # Benchmarks stop their nodes on purpose: a peer's "connection lost" warning is no news here.
    logging.getLogger("casty.transport").setLevel(logging.ERROR)
    import casty

    role, *args = sys.argv[1:]
    if os.environ.get("CASTY_BENCH_TUNE_MALLOC") == "1":
        casty.tune_malloc()  # keep freed memory: large messages stop page-faulting

    def busy(i: int) -> float:  # the optional busy_poll window, argument i
        return float(args[i]) if len(args) > i else 0.0

    coros = {
        "casty-sink": lambda: casty_sink(busy(0)),
        "frag-sink": lambda: casty_sink(0.0, int(args[0])),
        "frag-ask": lambda: frag_ask(*map(int, args)),
        "casty-tell": lambda: casty_tell(int(args[0]), int(args[1])),
        "casty-tell-json": lambda: casty_tell(int(args[0]), int(args[1]), compact=False),
        "tell-cpu": lambda: tell_cpu(int(args[0]), args[1] == "on"),
        "casty-ask": lambda: casty_ask(int(args[0]), int(args[1]), busy(2)),
        "page-tell": lambda: casty_tell(int(args[0]), int(args[1]), page=True),
        "page-ask": lambda: page_ask(int(args[0]), int(args[1])),
        "raw-sink": lambda: raw_sink("frames"),
        "raw-bytes": lambda: raw_sink("bytes"),
        "raw-echo": lambda: raw_sink("echo", busy(0)),
        "raw-tell": lambda: raw_tell(int(args[0]), int(args[1])),
        "raw-pingpong": lambda: raw_pingpong(int(args[0]), int(args[1]), busy(2)),
    }
    result = casty.run(coros[role]())
    if result is not None:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
