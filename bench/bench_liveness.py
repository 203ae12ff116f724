"""Liveness: what heartbeats cost a tell stream, and how fast a stopped peer is noticed.

Tell throughput between two processes with heartbeats on and off, for the Cython build
and the pure twin.  Heartbeats cost nothing per message by design (one timer per
interval compares counters), so the question is whether the difference stays inside
the noise; the measurement is made to tell:

* runs come in pairs, one on and one off, back to back, the order alternating from pair
  to pair, so drift in the machine's load and any first-or-second bias hit both alike;
* each pair gives one ratio (on / off); reported: the median of the pairs' ratios, their
  spread (lowest to highest) and the ratio of the best runs (others' load on a shared
  machine only ever slows a run), and the median rate of each side;
* besides wall-clock throughput, the sender's CPU time per tell (``time.process_time``
  in the sending process), which the load of other processes barely moves;
* "on" runs tick every :data:`HB_INTERVAL` (ten times the default 1 s), so every run
  holds several ticks; the sender and the sink are both set alike.

Then the time from SIGSTOP of a peer process to this node's NodeDown("silent"), median
of 5 (Cython build), at the intervals stated.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import time
from typing import Any

from bench._harness import Table
from bench.bench_remote import Child, pair

#: heartbeat_interval of the "on" runs of the throughput pairs (seconds)
HB_INTERVAL = 0.1
#: heartbeat_interval and failure_timeout of the detection runs (seconds)
INTERVAL, TIMEOUT = 0.1, 1.0


def tell_rate(n: int, hb: bool, pure: bool) -> tuple[float, float]:
    """(tells per second of wall time, tells per second of the sender's CPU time)."""
    old = os.environ.get("CASTY_BENCH_HEARTBEATS")
    os.environ["CASTY_BENCH_HEARTBEATS"] = str(HB_INTERVAL) if hb else "0"
    try:
        result = pair("casty-sink", "casty-tell", n, pure=pure)
    finally:
        if old is None:
            del os.environ["CASTY_BENCH_HEARTBEATS"]
        else:
            os.environ["CASTY_BENCH_HEARTBEATS"] = old
    if result["received"] != result["n"] or result["ext"] == pure:
        raise RuntimeError(f"tell benchmark lost messages or ran the wrong twin: {result}")
    return float(result["rate"]), float(result["cpu_rate"])


Rates = list[tuple[float, float]]


def on_off_pairs(n: int, pairs: int, pure: bool) -> tuple[Rates, Rates]:
    """``pairs`` (on, off) rates of ``n`` tells each; the first of each pair alternates."""
    on: Rates = []
    off: Rates = []
    for i in range(pairs):
        if i % 2 == 0:
            on.append(tell_rate(n, True, pure))
            off.append(tell_rate(n, False, pure))
        else:
            off.append(tell_rate(n, False, pure))
            on.append(tell_rate(n, True, pure))
    return on, off


async def detect_once() -> float:
    """Seconds from SIGSTOP of a peer process to NodeDown("silent") here."""
    from casty import NodeDown, RemoteActorSystem
    from tests.remote_helpers import Echo, registry

    child = Child("0", INTERVAL, TIMEOUT, pure=False, module="tests.nodes.live_node")
    try:
        port = int(json.loads(child.line())["port"])
        down: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        def on_event(event: Any) -> None:
            if isinstance(event, NodeDown) and not down.done():
                if event.reason != "silent":
                    down.set_exception(RuntimeError(f"the stopped peer went down {event.reason!r}, not silent"))
                else:
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

    pairs = 3 if quick else 7
    # About half a second of streaming per run on a 2-core machine: several ticks each.
    sizes = {False: 100_000 if quick else 400_000, True: 25_000 if quick else 100_000}
    runs = {pure: on_off_pairs(sizes[pure], pairs, pure) for pure in (False, True)}
    detect = [casty.run(detect_once()) for _ in range(5)]

    t = Table("liveness: tells with heartbeats on and off")
    notes = []
    for pure, label in ((False, "Cython"), (True, "pure twin")):
        on, off = runs[pure]
        for what, i in (("wall-clock rate", 0), ("sender CPU per tell", 1)):
            ratios = sorted(a[i] / b[i] for a, b in zip(on, off, strict=True))
            best = max(a[i] for a in on) / max(b[i] for b in off)
            notes.append(
                f"{label}, {what}: on / off = {statistics.median(ratios):.3f} median of {pairs} interleaved "
                f"pairs of {sizes[pure]} tells (spread {ratios[0]:.3f} .. {ratios[-1]:.3f}); best / best {best:.3f}"
            )
    t.add("tell rate, heartbeats on", *(statistics.median(r[0] for r in runs[p][0]) for p in (False, True)))
    t.add("tell rate, heartbeats off", *(statistics.median(r[0] for r in runs[p][1]) for p in (False, True)))
    t.notes = [
        *notes,
        f"heartbeats on: heartbeat_interval={HB_INTERVAL}s (ten times the default tick rate) on both nodes",
        f"stopped peer (SIGSTOP) to NodeDown('silent'): median of 5 = {statistics.median(detect):.2f}s "
        f"(heartbeat_interval={INTERVAL}s, failure_timeout={TIMEOUT}s; Cython build in both columns); runs "
        + ", ".join(f"{d:.2f}s" for d in detect),
    ]
    return [t]
