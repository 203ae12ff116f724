"""Scaling curves: how the figures move with message size, senders, paths and load.

Five families, each measured on the Cython build and the pure twins in one run:

1. size: remote tell throughput and ask round trip against payload size (64 B .. 1 MiB);
2. senders: 1..64 sender actors on one node telling a remote sink; as many askers;
3. paths: ``LocalTransport.deliver`` to random registered paths against how many there are;
4. memory: bytes per idle connection (each side) and per registered path;
5. hol: small asks alone, and while 1 MiB messages stream to the same peer.

Remote families run in child processes (``bench.scaling_node``), both ends on the
same twin.  Besides the tables, every point goes to ``bench/results/scaling.json``
as ``{"family", "x", "metric", "unit", "cython", "pure"}``; ``bench/plot.py`` draws them.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from itertools import cycle, islice
from pathlib import Path
from types import ModuleType
from typing import Any

from bench._harness import Table, rate
from bench.bench_remote import Child as _Child
from bench.scaling_node import TUNED
from casty._fast import local as fast
from casty.address import ActorAddress
from casty.transport import local as pure

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "scaling.json"
TWINS = (False, True)  # pure?
MSG = ("ping", 1)


def Child(role: str, *args: object, pure: bool) -> _Child:
    """A ``bench.scaling_node`` process; servers print their port first."""
    return _Child(role, *args, pure=pure, module="bench.scaling_node")


class Points:
    """The raw series: one entry per (family, x, metric)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, family: str, x: float, metric: str, unit: str, cython: float, pure: float) -> None:
        self.items.append(
            {"family": family, "x": x, "metric": metric, "unit": unit, "cython": cython, "pure": pure}
        )


def label(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20} MiB"
    if size >= 1 << 10:
        return f"{size >> 10} KiB"
    return f"{size} B"


def count_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else (
        f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)
    )


# -- 1, 2, 5: two processes -----------------------------------------------------------

def remote_runs(quick: bool) -> dict[str, dict[bool, dict[str, Any]]]:
    """Run the sizes, senders and hol clients against a sink of the same twin."""
    q = int(quick)
    out: dict[str, dict[bool, dict[str, Any]]] = {}
    # The last run repeats hol with both ends' malloc tuned (casty.tune_malloc).
    for roles, suffix in ((("sizes", "senders", "hol"), ""), (("hol",), TUNED)):
        sinks = {p: Child("sink" + suffix, pure=p) for p in TWINS}
        try:
            ports = {p: int(s.line()) for p, s in sinks.items()}
            for role in roles:
                for p in TWINS:  # alternate the twins so both see the same machine load
                    t0 = time.perf_counter()
                    run = out.setdefault(role + suffix, {})
                    run[p] = Child(role + suffix, ports[p], q, pure=p).result()
                    run[p]["took"] = time.perf_counter() - t0
        finally:
            for s in sinks.values():
                s.stop()
    return out


def size_table(runs: dict[bool, dict[str, Any]], points: Points) -> Table:
    t = Table("scaling: payload size, remote tell and ask (two processes, loopback)")
    by = {p: runs[p]["points"] for p in TWINS}
    for f, u in zip(by[False], by[True], strict=True):
        size, name = f["size"], label(f["size"])
        for case, metric, key, unit in (
            (f"tell {name} (msgs/s)", "tell msgs/s", "rate", None),
            (f"tell {name} (MB/s)", "tell MB/s", "mb_s", "MB/s"),
            (f"ask {name} p50", "ask p50", "p50_us", "µs"),
            (f"ask {name} p99", "ask p99", "p99_us", "µs"),
        ):
            t.add(case, f[key], u[key], unit)
            points.add("size", size, metric, unit or "msgs/s", f[key], u[key])
    big, small = by[False][-1], by[False][0]
    t.notes = [
        "message = dataclass with one bytes field (payload size = the field); ask reply is an int",
        f"Cython: tells per point {small['n']}..{big['n']}, asks {small['ask_n']}..{big['ask_n']} (bounded by "
        "bytes and time); at most two 2 MiB windows in flight (barrier asks), so nothing is dropped",
        "ratio > 1: Cython better (rates Cython/pure, latencies pure/Cython)",
    ]
    return t


def senders_table(runs: dict[bool, dict[str, Any]], points: Points) -> Table:
    t = Table("scaling: concurrent senders / askers on one node, to one remote sink")
    for f, u in zip(runs[False]["points"], runs[True]["points"], strict=True):
        c = f["senders"]
        t.add(f"tell, {c} senders (msgs/s)", f["rate"], u["rate"])
        t.add(f"ask, {c} askers (asks/s)", f["ask_rate"], u["ask_rate"])
        t.add(f"ask, {c} askers p50", f["p50_us"], u["p50_us"], "µs")
        t.add(f"ask, {c} askers p99", f["p99_us"], u["p99_us"], "µs")
        for metric, key, unit in (
            ("tell msgs/s", "rate", "msgs/s"),
            ("asks/s", "ask_rate", "asks/s"),
            ("ask p50", "p50_us", "µs"),
            ("ask p99", "p99_us", "µs"),
        ):
            points.add("senders", c, metric, unit, f[key], u[key])
    first, last = runs[False]["points"][0], runs[False]["points"][-1]
    t.notes = [
        "senders are actors telling 64-byte Blobs, yielding every 64, in rounds of 8192 closed by a barrier "
        f"ask; Cython told {first['n']}..{last['n']} per point (bounded by count and time)",
        f"askers are tasks each doing sequential system.ask calls; p50/p99 over all of them "
        f"(Cython: {first['ask_n']}..{last['ask_n']} samples)",
        f"Cython: {last['senders']} senders give {last['rate'] / first['rate']:.2f}x the msgs/s of 1; "
        f"pure {runs[True]['points'][-1]['rate'] / runs[True]['points'][0]['rate']:.2f}x",
    ]
    return t


def hol_table(runs: dict[bool, dict[str, Any]], tuned: dict[bool, dict[str, Any]], points: Points) -> Table:
    f, u = runs[False], runs[True]
    t = Table("scaling: small asks behind a 1 MiB message stream to the same peer")
    for phase, name, x in (("alone", "no stream", 0), ("behind", "1 MiB stream", 1 << 20)):
        for q in ("p50", "p99"):
            key = f"{q}_us"
            t.add(f"64 B ask {q}, {name}", f[phase][key], u[phase][key], "µs")
            points.add("hol", x, f"small ask {q}", "µs", f[phase][key], u[phase][key])
    t.add("stream while asking (MB/s)", f["stream_mb_s"], u["stream_mb_s"], "MB/s")
    points.add("hol", 1 << 20, "stream MB/s", "MB/s", f["stream_mb_s"], u["stream_mb_s"])
    tf, tu = tuned[False], tuned[True]
    for q in ("p50", "p99"):
        key = f"{q}_us"
        t.add(f"64 B ask {q}, 1 MiB stream, tune_malloc", tf["behind"][key], tu["behind"][key], "µs")
        points.add("hol", 1 << 20, f"small ask {q}, tune_malloc", "µs", tf["behind"][key], tu["behind"][key])
    t.add("stream while asking, tune_malloc (MB/s)", tf["stream_mb_s"], tu["stream_mb_s"], "MB/s")
    points.add("hol", 1 << 20, "stream MB/s, tune_malloc", "MB/s", tf["stream_mb_s"], tu["stream_mb_s"])
    t.notes = [
        "tune_malloc rows: both processes call casty.tune_malloc() first (glibc keeps freed memory, "
        "so each 1 MiB buffer is not faulted in afresh)",
        f"the stream keeps up to two {label(f['window_bytes'])} windows of 1 MiB tells in flight "
        "from the asking node (barrier asks pace it)",
        f"samples alone/behind: Cython {f['alone']['ask_n']}/{f['behind']['ask_n']}, "
        f"pure {u['alone']['ask_n']}/{u['behind']['ask_n']}",
        f"p50 behind / alone: Cython {f['behind']['p50_us'] / f['alone']['p50_us']:.0f}x, "
        f"pure {u['behind']['p50_us'] / u['alone']['p50_us']:.0f}x; "
        f"p99: Cython {f['behind']['p99_us'] / f['alone']['p99_us']:.0f}x, "
        f"pure {u['behind']['p99_us'] / u['alone']['p99_us']:.0f}x",
    ]
    return t


# -- 3: deliver against the number of registered paths ---------------------------------------

def _copy(s: str) -> str:
    # An equal but distinct string, as a path parsed off the wire is: the lookup has to
    # compare characters, not just identities.
    return s[:1] + s[1:]


_ADDRESSES = 4096  # distinct pre-built addresses per case (random targets: most are distinct paths)


def deliver_runs(quick: bool, points: Points) -> Table:
    counts = [10, 1_000, 100_000] if quick else [10, 1_000, 100_000, 1_000_000]
    n, rounds = (16_384, 3) if quick else (65_536, 7)
    rng = random.Random(1)
    t = Table("scaling: LocalTransport.deliver against registered paths")
    # "hot": a working set of 64 actors among all the registered ones, the usual shape (the
    # algorithm's cost); "random": every registered path equally likely, which mostly
    # measures CPU cache misses once the table outgrows the caches.
    cases: list[tuple[int, str, dict[bool, Callable[[int], None]]]] = []
    for count in counts:
        paths = [f"/user/worker-{i}" for i in range(count)]
        transports = {p: _registered(pure if p else fast, paths) for p in TWINS}
        for mode in ("hot", "random"):
            pool = paths[:64] if mode == "hot" else paths
            # A pool of distinct addresses, sent to over and over: a walk over n cold address
            # objects would measure where the allocator put them, not the lookup.
            addresses = [ActorAddress("bench", _copy(rng.choice(pool))) for _ in range(_ADDRESSES)]
            cases.append((count, mode, {p: _deliver_fn(transports[p], addresses) for p in TWINS}))
        del paths
    gc.collect()
    # Every round measures every case once, so a slow spell of the machine hits all the
    # path counts alike instead of whichever one it happened to fall on.
    best = {(count, mode, p): 0.0 for count, mode, _ in cases for p in TWINS}
    for _ in range(rounds):
        for count, mode, fns in cases:
            for p in TWINS:
                best[count, mode, p] = max(best[count, mode, p], rate(fns[p], n, repeat=1))
    figures: dict[tuple[str, bool], list[float]] = {}
    for count, mode, _ in cases:
        cython, python = best[count, mode, False], best[count, mode, True]
        t.add(f"deliver, {count_label(count)} paths, {mode} targets", cython, python)
        points.add("paths", count, f"deliver ops/s ({mode} targets)", "ops/s", cython, python)
        for p in TWINS:
            figures.setdefault((mode, p), []).append(best[count, mode, p])
    del cases
    gc.collect()
    spread = {k: max(v) / min(v) for k, v in figures.items()}
    t.notes = [
        f"{n} delivers per round over {_ADDRESSES} pre-built addresses, equal-but-distinct path strings; "
        f"handler = list.append; best of {rounds} rounds, each round taking every case in turn; "
        "hot = 64 of the registered paths, random = any registered path",
        f"best/worst over {count_label(counts[0])}..{count_label(counts[-1])} paths, hot targets: "
        f"Cython {spread['hot', False]:.2f}x, pure {spread['hot', True]:.2f}x; random targets: "
        f"Cython {spread['random', False]:.2f}x, pure {spread['random', True]:.2f}x",
    ]
    return t


def _registered(module: ModuleType, paths: list[str]) -> Any:
    """A fresh LocalTransport of ``module`` with ``paths`` registered to one list's append."""
    transport = module.LocalTransport()
    sink: list[Any] = []
    for path in paths:
        transport.register(path, sink.append)
    return transport, sink


def _deliver_fn(registered: Any, addresses: list[ActorAddress]) -> Callable[[int], None]:
    transport, sink = registered
    deliver = transport.deliver

    def run(n: int) -> None:
        sink.clear()
        for address in islice(cycle(addresses), n):
            deliver(address, MSG)
        if len(sink) != n:
            raise AssertionError(f"{type(transport).__module__}: {len(sink)} of {n} delivered")

    return run


# -- 4: memory ----------------------------------------------------------------------------

def path_memory(module: ModuleType, count: int) -> float:
    """tracemalloc bytes per path registered in a fresh LocalTransport (path strings excluded)."""
    paths = [f"/user/worker-{i}" for i in range(count)]
    handler = [].append
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        transport = module.LocalTransport()
        for path in paths:
            transport.register(path, handler)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del transport
    return (after - before) / count


def connection_memory(n: int) -> dict[bool, dict[str, dict[str, float]]]:
    out: dict[bool, dict[str, dict[str, float]]] = {}
    for p in TWINS:
        server = Child("mem-server", n, pure=p)
        try:
            port = int(server.line())
            client = Child("mem-client", port, n, pure=p)
            try:
                out[p] = {"connecting": client.json(), "accepting": server.json()}
            finally:
                client.stop()
        finally:
            server.stop()
    return out


def memory_table(quick: bool, points: Points) -> Table:
    n_conn = 100 if quick else 400
    path_counts = [1_000, 100_000] if quick else [1_000, 10_000, 100_000]
    conns = connection_memory(n_conn)
    t = Table("scaling: memory per idle connection and per registered path")
    for side in ("accepting", "connecting"):
        for how, key in (("tracemalloc", "traced"), ("RSS", "rss")):
            f, u = conns[False][side][key], conns[True][side][key]
            t.add(f"idle connection, {side} side, {how}", f, u, "B")
            points.add("memory", n_conn, f"per connection, {side}, {how}", "B", f, u)
    for count in path_counts:
        f, u = path_memory(fast, count), path_memory(pure, count)
        points.add("memory", count, "per registered path, tracemalloc", "B", f, u)
        if count == path_counts[-1]:
            t.add(f"registered path ({count_label(count)}), tracemalloc", f, u, "B")
    t.notes = [
        f"{n_conn} connections between two processes, each from its own listening node on the "
        "connecting side (nodes started before the baseline); delta / N after gc",
        "RSS deltas include allocator slack and are noisy; tracemalloc sees Python and libuv "
        "(PyMem) allocations, not kernel socket buffers",
        "per path: the LocalTransport's own cost (path strings and the handler exist already)",
    ]
    return t


# -- entry point ----------------------------------------------------------------------------

def took(runs: dict[bool, dict[str, Any]]) -> str:
    return f"took {runs[False]['took']:.1f} s (Cython) + {runs[True]['took']:.1f} s (pure)"


def timed(make: Callable[[bool, Points], Table], quick: bool, points: Points) -> Table:
    t0 = time.perf_counter()
    table = make(quick, points)
    table.notes.append(f"took {time.perf_counter() - t0:.1f} s")
    return table


def collect(quick: bool) -> list[Table]:
    points = Points()
    runs = remote_runs(quick)
    tables = [
        size_table(runs["sizes"], points),
        senders_table(runs["senders"], points),
        timed(deliver_runs, quick, points),
        timed(memory_table, quick, points),
        hol_table(runs["hol"], runs["hol" + TUNED], points),
    ]
    for table, role in ((tables[0], "sizes"), (tables[1], "senders"), (tables[4], "hol"), (tables[4], "hol" + TUNED)):
        table.notes.append(took(runs[role]))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(points.items, indent=1))
    tables[-1].notes.append(f"raw series written to {RESULTS.relative_to(ROOT)}")
    return tables


if __name__ == "__main__":
    for table in collect(quick="--quick" in sys.argv):
        print(table.render(), end="\n\n")
