"""Child processes for the scaling benchmarks: ``python -m bench.scaling_node ROLE ...``.

Roles (each prints one line of JSON at the end; a server prints its port first):

- ``sink``: a RemoteActorSystem with one actor, ``/user/sink``, that counts Blobs and
  answers Probes; it serves the client roles below one after another;
- ``sizes PORT QUICK``: tell throughput and ask latency for each payload size;
- ``senders PORT QUICK``: 1..64 sender actors telling the sink, then as many askers;
- ``hol PORT QUICK``: small asks alone, then while 1 MiB Blobs stream to the same sink;
- ``mem-server N`` / ``mem-client PORT N``: memory of N idle connections, each side.

A role ending in ``+malloc`` runs after :func:`casty.tune_malloc` (for the sink and hol).

The implementation (Cython or pure twin) is chosen by the CASTY_NO_EXTENSIONS the
parent sets; both ends of a pair run the same one.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

from bench.remote_node import percentiles, wait_stdin

KiB = 1024
MiB = 1024 * KiB
SIZES = [64, KiB, 16 * KiB, 256 * KiB, MiB]
SENDERS = [1, 4, 16, 64]
STREAM_SIZE = MiB
#: small messages told between two yields to the loop (one write carries them all)
YIELD_EVERY = 512
#: bytes told between two barrier asks; at most two windows are in flight, far below
#: the 8 MiB connection queue, so the pacing never makes the transport drop
WINDOW_BYTES = 2 * MiB
WINDOW_MSGS = 16_384
#: tells per round from all sender actors together; a barrier ask closes each round
SENDER_ROUND = 8_192
#: role suffix: run it with glibc malloc tuned to keep freed memory
TUNED = "+malloc"


@dataclass(frozen=True)
class Blob:
    data: bytes


@dataclass(frozen=True)
class Probe:
    """Asks the sink for ``len(data)``: a ``data``-sized request and a small reply."""

    data: bytes
    reply_to: Any


@dataclass(frozen=True)
class Count:
    """Asks the sink for the Blobs it got since the last Count (and resets it)."""

    reply_to: Any


@dataclass(frozen=True)
class Burst:
    """Tells a sender actor to tell ``n`` Blobs to the sink."""

    n: int


def registry() -> Any:
    from casty import TypeRegistry

    reg = TypeRegistry()
    for cls in (Blob, Probe, Count):
        reg.register(cls, f"bench.scaling.{cls.__name__}")
    return reg


def clamp(x: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, x))


def latency(samples: list[float]) -> dict[str, float]:
    """p50/p99 in µs and the sample count, under keys that do not clash with a tell's."""
    out = percentiles(samples)
    out["ask_n"] = out.pop("n")
    return out


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the sink ------------------------------------------------------------------------

async def sink() -> None:
    from casty import Behaviors, RemoteActorSystem

    count = 0

    async def receive(ctx: Any, msg: Any) -> Any:
        nonlocal count
        if type(msg) is Blob:
            count += 1
        elif type(msg) is Probe:
            msg.reply_to.tell(len(msg.data))
        elif type(msg) is Count:
            msg.reply_to.tell(count)
            count = 0
        return Behaviors.same()

    async with RemoteActorSystem("sink", "127.0.0.1", 0, registry=registry()) as system:
        system.spawn(Behaviors.receive(receive), "sink")
        print(system.address.port, flush=True)
        await wait_stdin()


def client() -> Any:
    from casty import RemoteActorSystem

    return RemoteActorSystem("src", "127.0.0.1", 0, registry=registry())


def sink_ref(system: Any, port: int) -> Any:
    return system.ref(f"casty://sink@127.0.0.1:{port}/user/sink")


class Pacer:
    """Keeps at most two windows of tells in flight: a barrier ask closes each window.

    The sink handles messages in order, so the reply to a barrier means every
    message told before it has arrived and been handled.
    """

    def __init__(self, system: Any, sink: Any) -> None:
        self.system = system
        self.sink = sink
        self.barrier: asyncio.Future[Any] | None = None

    async def window_done(self) -> None:
        if self.barrier is not None:
            await self.barrier
        self.barrier = asyncio.ensure_future(self.system.ask(self.sink, lambda r: Probe(b"", r), timeout=120))

    async def drain(self) -> None:
        if self.barrier is not None:
            await self.barrier
            self.barrier = None


async def tell_run(system: Any, sink: Any, msg: Blob, n: int, budget: float) -> dict[str, Any]:
    """Tell up to ``n`` copies of ``msg`` (fewer once ``budget`` seconds are spent, at a window's
    end); the rate counts the time until the sink has counted them all."""
    size = len(msg.data)
    window = clamp(WINDOW_BYTES // size, 1, WINDOW_MSGS)
    every = clamp(256 * KiB // size, 1, YIELD_EVERY)
    await system.ask(sink, lambda r: Count(r), timeout=30)  # connected, counter reset
    drops0 = sum(system.node.drops.values())
    pacer = Pacer(system, sink)
    tell = sink.tell
    t0 = time.perf_counter()
    deadline = t0 + budget
    sent = 0
    for sent in range(1, n + 1):
        tell(msg)
        if sent % window == 0:
            await pacer.window_done()
            if time.perf_counter() > deadline:
                break
        elif sent % every == 0:
            await asyncio.sleep(0)
    await pacer.drain()
    got = await system.ask(sink, lambda r: Count(r), timeout=120)
    dt = time.perf_counter() - t0
    dropped = sum(system.node.drops.values()) - drops0
    if got != sent:
        raise RuntimeError(f"sink counted {got} of {sent} Blobs of {size} B ({dropped} dropped)")
    return {"size": size, "n": sent, "rate": sent / dt, "mb_s": sent * size / dt / 1e6}


async def ask_run(
    system: Any, sink: Any, data: bytes, n: int, budget: float, warmup: int = 20, least: int = 30
) -> list[float]:
    """Up to ``n`` sequential asks carrying ``data`` (fewer once ``budget`` seconds are spent
    and ``least`` were timed); their round trips in seconds."""
    samples: list[float] = []
    for _ in range(warmup):
        await system.ask(sink, lambda r: Probe(data, r), timeout=30)
    deadline = time.perf_counter() + budget
    for _ in range(n):
        t0 = time.perf_counter()
        await system.ask(sink, lambda r: Probe(data, r), timeout=30)
        t1 = time.perf_counter()
        samples.append(t1 - t0)
        if t1 > deadline and len(samples) >= least:
            break
    return samples


# -- family 1: message size -------------------------------------------------------------

async def sizes(port: int, quick: bool) -> dict[str, Any]:
    from casty import EXTENSIONS_ACTIVE

    tell_bytes, tell_max, tell_s = (12 * MiB, 20_000, 0.3) if quick else (48 * MiB, 80_000, 0.8)
    ask_bytes, ask_max, ask_s = (8 * MiB, 300, 0.2) if quick else (32 * MiB, 1_500, 0.5)
    points = []
    async with client() as system:
        target = sink_ref(system, port)
        for size in SIZES:
            data = b"x" * size
            tell = await tell_run(system, target, Blob(data), clamp(tell_bytes // size, 16, tell_max), tell_s)
            samples = await ask_run(system, target, data, clamp(ask_bytes // size, 50, ask_max), ask_s, warmup=5)
            points.append({**tell, **latency(samples)})
    return {"ext": EXTENSIONS_ACTIVE, "points": points}


# -- family 2: concurrent senders -------------------------------------------------------

async def senders(port: int, quick: bool) -> dict[str, Any]:
    from casty import EXTENSIONS_ACTIVE

    n_tell, tell_s = (24_576, 0.25) if quick else (98_304, 0.6)
    n_ask, ask_s = (400, 0.15) if quick else (1_600, 0.4)
    points = []
    async with client() as system:
        target = sink_ref(system, port)
        await system.ask(target, lambda r: Count(r), timeout=30)
        for c in SENDERS:
            sent, dt = await _tell_from_actors(system, target, c, n_tell, tell_s)
            asks, ask_dt, samples = await _concurrent_asks(system, target, c, max(10, n_ask // c), ask_s)
            points.append({"senders": c, "n": sent, "rate": sent / dt, "ask_rate": asks / ask_dt,
                           **latency(samples)})
    return {"ext": EXTENSIONS_ACTIVE, "points": points}


async def _tell_from_actors(system: Any, target: Any, c: int, n_tell: int, budget: float) -> tuple[int, float]:
    """``c`` sender actors tell up to ``n_tell`` 64-byte Blobs in all, in rounds of SENDER_ROUND,
    fewer once ``budget`` seconds are spent; (sent, seconds until all were counted)."""
    from casty import Behaviors

    msg = Blob(b"x" * 64)
    chunk = 64  # a sender tells this many, then lets the others run
    tell = target.tell
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"left": 0, "done": None}

    async def receive(ctx: Any, burst: Burst) -> Any:
        for i in range(1, burst.n + 1):
            tell(msg)
            if i % chunk == 0:
                await asyncio.sleep(0)
        state["left"] -= 1
        if state["left"] == 0:
            state["done"].set_result(None)
        return Behaviors.same()

    refs = [system.spawn(Behaviors.receive(receive), f"sender-{c}-{i}") for i in range(c)]
    per_round = SENDER_ROUND // c
    pacer = Pacer(system, target)
    t0 = time.perf_counter()
    deadline = t0 + budget
    sent = 0
    while sent < n_tell:
        state["left"], state["done"] = c, loop.create_future()
        for ref in refs:
            ref.tell(Burst(per_round))
        await state["done"]
        sent += per_round * c
        await pacer.window_done()
        if time.perf_counter() > deadline:
            break
    await pacer.drain()
    got = await system.ask(target, lambda r: Count(r), timeout=120)
    dt = time.perf_counter() - t0
    if got != sent:
        raise RuntimeError(f"{c} senders: sink counted {got} of {sent}")
    for ref in refs:
        await system.stop(ref)
    return sent, dt


async def _concurrent_asks(
    system: Any, target: Any, c: int, each: int, budget: float
) -> tuple[int, float, list[float]]:
    """``c`` tasks each asking up to ``each`` times in a row (fewer once ``budget`` seconds are
    spent); (asks, seconds, latency samples)."""
    samples: list[float] = []
    warmup = 3

    async def asker() -> None:
        samples.extend(await ask_run(system, target, b"x" * 64, each, budget, warmup=warmup, least=3))

    t0 = time.perf_counter()
    await asyncio.gather(*(asker() for _ in range(c)))
    return len(samples) + warmup * c, time.perf_counter() - t0, samples


# -- family 5: small asks behind large messages -------------------------------------------

async def hol(port: int, quick: bool) -> dict[str, Any]:
    from casty import EXTENSIONS_ACTIVE

    n_ask, alone_s, behind_s = (300, 0.2, 1.0) if quick else (1_000, 0.5, 2.5)
    small = b"x" * 64
    big = Blob(b"y" * STREAM_SIZE)
    window = WINDOW_BYTES // STREAM_SIZE
    async with client() as system:
        target = sink_ref(system, port)
        await system.ask(target, lambda r: Count(r), timeout=30)
        alone = await ask_run(system, target, small, n_ask, alone_s)

        stop = False
        streamed = 0

        async def stream() -> None:
            nonlocal streamed
            pacer = Pacer(system, target)
            while not stop:
                for _ in range(window):
                    target.tell(big)
                    streamed += 1
                    await asyncio.sleep(0)
                await pacer.window_done()
            await pacer.drain()

        task = asyncio.ensure_future(stream())
        await asyncio.sleep(0.05)  # let the stream fill the pipe first
        t0 = time.perf_counter()
        s0 = streamed
        behind = await ask_run(system, target, small, n_ask, behind_s, warmup=0)
        dt = time.perf_counter() - t0
        s1 = streamed
        stop = True
        await task
        got = await system.ask(target, lambda r: Count(r), timeout=120)
        if got != streamed:
            raise RuntimeError(f"stream: sink counted {got} of {streamed}")
        return {"ext": EXTENSIONS_ACTIVE, "alone": latency(alone), "behind": latency(behind),
                "stream_mb_s": (s1 - s0) * STREAM_SIZE / dt / 1e6, "window_bytes": window * STREAM_SIZE}


# -- family 4: memory per idle connection -----------------------------------------------

class _NoInbound:
    async def on_message(self, data: bytes) -> None:
        pass


def _node() -> Any:
    from casty.transport.config import TcpTransportConfig
    from casty.transport.node import TcpNode

    return TcpNode(TcpTransportConfig("127.0.0.1", 0), _NoInbound())


def _memory() -> tuple[int, int]:
    gc.collect()
    return tracemalloc.get_traced_memory()[0], rss_bytes()


async def mem_server(n: int) -> None:
    """Accept ``n`` connections; print the memory they added, then hold them until stdin closes."""
    tracemalloc.start()
    node = _node()
    await node.start()
    traced0, rss0 = _memory()
    print(node.port, flush=True)
    deadline = time.monotonic() + 60
    while len(node.inbound_peers) < n:  # connections peers dialed: ours carry none of our traffic
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(node.inbound_peers)} of {n} peers connected")
        await asyncio.sleep(0.01)
    traced1, rss1 = _memory()
    print(json.dumps({"n": n, "traced": (traced1 - traced0) / n, "rss": (rss1 - rss0) / n}), flush=True)
    await wait_stdin()
    await node.close()


async def mem_client(port: int, n: int) -> None:
    """Start ``n`` listening nodes, then connect each to the server; print the memory added."""
    tracemalloc.start()
    nodes = [_node() for _ in range(n)]
    for node in nodes:
        await node.start()
    traced0, rss0 = _memory()
    batch = 32  # stay inside the server's listen backlog
    for i in range(0, n, batch):
        group = nodes[i:i + batch]
        for node in group:
            node.send_frame("127.0.0.1", port, 0x7F, b"")  # an ignored frame type: connects, then idles
        while not all(node.connected_peers for node in group):
            await asyncio.sleep(0.002)
    traced1, rss1 = _memory()
    print(json.dumps({"n": n, "traced": (traced1 - traced0) / n, "rss": (rss1 - rss0) / n}), flush=True)
    await wait_stdin()
    await asyncio.gather(*(node.close() for node in nodes))


def main() -> None:
    # Benchmarks stop their nodes on purpose: a peer's "connection lost" warning is no news here.
    logging.getLogger("casty.transport").setLevel(logging.ERROR)
    import casty

    role, *args = sys.argv[1:]
    if role.endswith(TUNED):  # e.g. "hol+malloc": the same role after casty.tune_malloc()
        role = role.removesuffix(TUNED)
        if not casty.tune_malloc():
            raise SystemExit("tune_malloc() did not apply on this C library")
    coros = {
        "sink": lambda: sink(),
        "sizes": lambda: sizes(int(args[0]), args[1] == "1"),
        "senders": lambda: senders(int(args[0]), args[1] == "1"),
        "hol": lambda: hol(int(args[0]), args[1] == "1"),
        "mem-server": lambda: mem_server(int(args[0])),
        "mem-client": lambda: mem_client(int(args[0]), int(args[1])),
    }
    result = casty.run(coros[role]())
    if result is not None:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
