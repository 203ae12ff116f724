"""Liveness: what heartbeats cost a tell stream, and how fast a stopped peer is noticed.

Tell throughput (Cython build, two processes) with heartbeats on and off, in interleaved
runs, reported as the ratio of the medians; then the time from SIGSTOP of a peer process
to this node's NodeDown("silent"), median of 5, with the intervals used stated.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import time
from typing import Any

from bench._harness import Table
from bench.bench_remote import Child, pair

#: heartbeat_interval and failure_timeout of the detection runs (seconds)
INTERVAL, TIMEOUT = 0.1, 1.0


def tell_rate(n: int, hb: bool) -> float:
    old = os.environ.get("CASTY_BENCH_HEARTBEATS")
    os.environ["CASTY_BENCH_HEARTBEATS"] = "1" if hb else "0"
    try:
        result = pair("casty-sink", "casty-tell", n, pure=False)
    finally:
        if old is None:
            del os.environ["CASTY_BENCH_HEARTBEATS"]
        else:
            os.environ["CASTY_BENCH_HEARTBEATS"] = old
    if result["received"] != result["n"]:
        raise RuntimeError(f"tell benchmark lost messages: {result}")
    return float(result["rate"])


async def detect_once() -> float:
    """Seconds from SIGSTOP of a peer process to NodeDown("silent") here."""
    from casty import NodeDown, RemoteActorSystem
    from tests.remote_helpers import Echo, registry

    child = Child("0", INTERVAL, TIMEOUT, pure=False, module="tests.nodes.live_node")
    try:
        port = int(__import__("json").loads(child.line())["port"])
        down: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        def on_event(event: Any) -> None:
            if isinstance(event, NodeDown) and not down.done():
                down.set_result(time.monotonic())

        async with RemoteActorSystem(
            "bench", "127.0.0.1", 0, registry=registry(), heartbeat_interval=INTERVAL, failure_timeout=TIMEOUT
        ) as system:
            system.subscribe_nodes(on_event)
            ref = system.ref(f"casty://live@127.0.0.1:{port}/user/sink")
            await system.ask(ref, lambda r: Echo("hi", r), timeout=10)
            child.proc.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            return await asyncio.wait_for(down, 10 * TIMEOUT) - stopped
    finally:
        child.proc.send_signal(signal.SIGCONT)
        child.proc.kill()
        try:
            child.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def collect(quick: bool) -> list[Table]:
    import casty

    n = 50_000 if quick else 200_000
    rounds = 2 if quick else 3
    on: list[float] = []
    off: list[float] = []
    for _ in range(rounds):  # interleaved, so drift in the machine's load hits both alike
        on.append(tell_rate(n, True))
        off.append(tell_rate(n, False))
    detect = [casty.run(detect_once()) for _ in range(5)]
    t = Table("liveness (Cython build)")
    t.add("tell rate, heartbeats on", statistics.median(on), statistics.median(on))
    t.add("tell rate, heartbeats off", statistics.median(off), statistics.median(off))
    t.notes = [
        f"heartbeats on / off: {statistics.median(on) / statistics.median(off):.3f} "
        f"(median of {rounds} interleaved runs of {n} tells each)",
        f"stopped peer (SIGSTOP) detected in {statistics.median(detect):.2f}s, median of 5 "
        f"(heartbeat_interval={INTERVAL}s, failure_timeout={TIMEOUT}s); runs "
        + ", ".join(f"{d:.2f}s" for d in detect),
        "both columns show the Cython build: the pure twin is not measured here",
    ]
    return [t]
