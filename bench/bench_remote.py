"""Two-process benchmarks: remote tell throughput, ask latency, and the raw uvloop ceiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench._harness import Table
from casty.wire import DEFAULT_FRAGMENT_WINDOW

ROOT = Path(__file__).resolve().parents[1]


class Child:
    """A benchmark child process (``python -m MODULE ROLE ...``); a server prints its port first.

    ``cpu``: pin the child to that core (before it starts any thread, so all of its threads are).
    """

    def __init__(
        self, role: str, *args: object, pure: bool, module: str = "bench.remote_node", cpu: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), CASTY_NO_EXTENSIONS="1" if pure else "0", **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, role, *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        if cpu is not None:
            os.sched_setaffinity(self.proc.pid, {cpu})

    def line(self) -> str:
        assert self.proc.stdout is not None
        out = self.proc.stdout.readline()
        if not out:
            raise RuntimeError(f"benchmark child {self.proc.args} printed nothing")
        return out

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.line())
        return data

    def result(self) -> dict[str, Any]:
        data = self.json()
        self.proc.wait(60)
        return data

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


#: the busy_poll window of the "busy_poll" rows, in seconds
BUSY_POLL = 200e-6


def spin_cores() -> tuple[int | None, int | None]:
    """Two distinct cores for two spinning processes, or (None, None) when there are not two.

    Two processes that both spin must not share a core: each would keep the other
    off it for up to a whole window, and the round trip would measure the scheduler.
    """
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (cores[0], cores[1]) if len(cores) >= 2 else (None, None)


def pair(sink_role: str, client_role: str, n: int, *, pure: bool, busy_poll: float = 0.0) -> dict[str, Any]:
    """Run a sink and a client; with ``busy_poll`` > 0 both spin that long after each send, each on its own core."""
    extra = (busy_poll,) if busy_poll else ()
    sink_cpu, client_cpu = spin_cores() if busy_poll else (None, None)
    sink = Child(sink_role, *extra, pure=pure, cpu=sink_cpu)
    try:
        port = int(sink.line())
        return Child(client_role, port, n, *extra, pure=pure, cpu=client_cpu).result()
    finally:
        sink.stop()


def frag_pair(n: int, *, fragment_size: int, window: int, behind: bool, pure: bool,
              tune: bool = False) -> dict[str, Any]:
    """Small asks alone, or behind a stream of 1 MiB messages to another actor on the same peer;
    ``fragment_size`` and ``window`` are the asking (streaming) node's; ``tune``: both
    processes call casty.tune_malloc() first."""
    env = {"CASTY_BENCH_TUNE_MALLOC": "1" if tune else "0"}
    sink = Child("frag-sink", fragment_size, pure=pure, env=env)
    try:
        port = int(sink.line())
        return Child("frag-ask", port, n, fragment_size, int(behind), window, pure=pure, env=env).result()
    finally:
        sink.stop()


#: the fragment_size of the "fragments on" rows (TcpTransportConfig's default)
FRAGMENT_SIZE = 64 * 1024
#: (fragment_size, fragment_window, tune_malloc) of each configuration: the default, a
#: double window, off (fragment_size 0: whole frames, as to a v1 peer), and the default and
#: off again with casty.tune_malloc() in both processes
FRAGMENT_CONFIGS = (
    (FRAGMENT_SIZE, DEFAULT_FRAGMENT_WINDOW, False),
    (FRAGMENT_SIZE, 2 * DEFAULT_FRAGMENT_WINDOW, False),
    (0, DEFAULT_FRAGMENT_WINDOW, False),
    (FRAGMENT_SIZE, DEFAULT_FRAGMENT_WINDOW, True),
    (0, DEFAULT_FRAGMENT_WINDOW, True),
)


def _frag_label(size: int, window: int, tune: bool) -> str:
    label = f"fragments {size // 1024} KiB, window {window}" if size else "fragments off"
    return label + (", tune_malloc" if tune else "")


def fragments_table(quick: bool) -> Table:
    """Small-ask latency alone and behind a 1 MiB stream, per fragment configuration, same run."""
    n = 300 if quick else 1_000
    runs = {
        (size, window, tune, behind, pure): frag_pair(
            n, fragment_size=size, window=window, behind=behind, pure=pure, tune=tune
        )
        for size, window, tune in FRAGMENT_CONFIGS for behind in (False, True) for pure in (False, True)
    }
    t = Table("remote: small asks behind a 1 MiB stream (cap frag)")
    for size, window, tune in FRAGMENT_CONFIGS:
        label = _frag_label(size, window, tune)
        for behind, where in ((False, "alone"), (True, "behind the stream")):
            for q in ("p50_us", "p99_us"):
                t.add(f"small ask {q[:3]}, {where}, {label}", runs[size, window, tune, behind, False][q],
                      runs[size, window, tune, behind, True][q], unit="µs")
        t.add(f"1 MiB stream, {label}", runs[size, window, tune, True, False]["stream_mb_s"],
              runs[size, window, tune, True, True]["stream_mb_s"], unit="MB/s")
    ratios = ", ".join(
        f"{runs[(*c, True, False)]['p99_us'] / runs[(*c, False, False)]['p99_us']:.1f}x {_frag_label(*c)}"
        for c in FRAGMENT_CONFIGS
    )
    t.notes = [
        f"Cython: small-ask p99 behind the stream / p99 alone = {ratios} (issue 17 target: 2x)",
        "the stream: 1 MiB Blob tells to /user/stream, at most 4 in flight (an ask to that actor "
        "every 2 marks a window); the asks go to /user/sink on the same node, over the same connection",
        "size and window are the streaming node's (the sink keeps the default window); "
        "'fragments off' is the same build with fragment_size=0 on both nodes",
        "tune_malloc: both processes call casty.tune_malloc() first; without it the receiving actor's "
        "fresh 1 MiB value page-faults in (and out) on the loop, which is most of the p99 behind the stream",
    ]
    return t


def compact_table(n_tell: int, quick: bool) -> Table:
    """Tell throughput and CPU per tell with compact headers on and off, same build, same run."""
    # Compact headers on and off in turns, best of two each: the two share the machine's
    # noise alike.  "off" is the same build with compact_headers=False on the sender.
    hdr: dict[bool, dict[bool, list[dict[str, Any]]]] = {p: {True: [], False: []} for p in (False, True)}
    for _ in range(2):
        for p in (False, True):
            for on in (True, False):
                hdr[p][on].append(pair("casty-sink", "casty-tell" if on else "casty-tell-json", n_tell, pure=p))
    # The same comparison as CPU time per tell, both nodes in one process: the rate above
    # is wall time on a machine others share; this is what a tell costs the two nodes.
    cpu: dict[bool, dict[bool, list[float]]] = {p: {True: [], False: []} for p in (False, True)}
    n_cpu = n_tell // (1 if quick else 3)
    for _ in range(2):
        for p in (False, True):
            for on in (True, False):
                cpu[p][on].append(Child("tell-cpu", n_cpu // (5 if p else 1), "on" if on else "off",
                                        pure=p).result()["cpu_us"])
    hdr_runs = [(pure, r) for pure, by_on in hdr.items() for runs in by_on.values() for r in runs]
    for p, r in hdr_runs:
        if r["received"] != r["n"]:
            raise RuntimeError(f"tell benchmark lost messages ({'pure' if p else 'Cython'}): {r}")
    best = {p: {on: max(r["rate"] for r in hdr[p][on]) for on in (True, False)} for p in (False, True)}
    h = Table("compact headers (cap hdr) against JSON headers, same build, same run", columns=("hdr on", "hdr off"))
    h.add("tell Tick(int, str), Cython", best[False][True], best[False][False])
    h.add("tell Tick(int, str), pure twin", best[True][True], best[True][False])
    h.add("CPU per tell, both nodes in one process, Cython", min(cpu[False][True]), min(cpu[False][False]),
          unit="µs")
    h.add("CPU per tell, both nodes in one process, pure twin", min(cpu[True][True]), min(cpu[True][False]),
          unit="µs")
    h.add("header bytes per message", hdr[False][True][0]["header_bytes"], hdr[False][False][0]["header_bytes"],
          unit="B")
    h.notes = [
        "ratio: hdr on over hdr off (for CPU and bytes, off over on); each rate the best of two runs taken "
        "in turns, each CPU figure the least of two",
        "CPU per tell: process time of one process running both nodes (send, frame, socket, receive, "
        "decode, the sink actor) over the tells, per tell; other processes on the machine barely move it",
        "header bytes: what the header takes in a frame body once its names are known (JSON: its 4-byte "
        "length prefix and the object; compact: three 2-byte ids); each name's entry is sent once per "
        "connection",
        "every run: " + "; ".join(
            f"{'pure' if p else 'Cython'} {'on' if on else 'off'} "
            + "/".join(f"{r['rate'] / 1e3:.0f}k" for r in hdr[p][on])
            for p in (False, True) for on in (True, False)
        ),
    ]
    return h


def collect(quick: bool) -> list[Table]:
    n_tell = 50_000 if quick else 300_000
    n_ask = 1_000 if quick else 5_000
    n_raw = 2_000_000 if quick else 10_000_000

    raw = pair("raw-sink", "raw-tell", n_raw // 4, pure=False)["rate"]
    raw_bytes = pair("raw-bytes", "raw-tell", n_raw, pure=False)["rate"]
    raw_rtt = pair("raw-echo", "raw-pingpong", n_ask, pure=False)
    raw_spin = pair("raw-echo", "raw-pingpong", n_ask, pure=False, busy_poll=BUSY_POLL)
    tell = {p: pair("casty-sink", "casty-tell", n_tell, pure=p) for p in (False, True)}
    page_tell = {p: pair("casty-sink", "page-tell", n_tell, pure=p) for p in (False, True)}
    ask = {p: pair("casty-sink", "casty-ask", n_ask, pure=p) for p in (False, True)}
    page_ask = {p: pair("casty-sink", "page-ask", n_ask, pure=p) for p in (False, True)}
    busy = {p: pair("casty-sink", "casty-ask", n_ask, pure=p, busy_poll=BUSY_POLL) for p in (False, True)}
    for p, r in [*tell.items(), *page_tell.items()]:
        if r["received"] != r["n"]:
            raise RuntimeError(f"tell benchmark lost messages ({'pure' if p else 'Cython'}): {r}")

    t = Table("remote, two processes on loopback")
    t.add("tell Tick(int, str), msgpack", tell[False]["rate"], tell[True]["rate"])
    t.add("tell, node wired by hand (seed page)", page_tell[False]["rate"], page_tell[True]["rate"])
    t.add("ask round trip p50", ask[False]["p50_us"], ask[True]["p50_us"], unit="µs")
    t.add("ask round trip p50, node wired by hand", page_ask[False]["p50_us"], page_ask[True]["p50_us"], unit="µs")
    t.add("ask round trip p99", ask[False]["p99_us"], ask[True]["p99_us"], unit="µs")
    bp = f"busy_poll={BUSY_POLL * 1e6:.0f} µs"
    t.add(f"ask round trip p50, {bp}", busy[False]["p50_us"], busy[True]["p50_us"], unit="µs")
    t.add(f"ask round trip p99, {bp}", busy[False]["p99_us"], busy[True]["p99_us"], unit="µs")
    t.notes = [
        f"raw uvloop ceiling: pre-built 100-byte frames, each split and handed on by a Python "
        f"Protocol: {raw / 1e6:.2f} M frames/s (the socket alone, bytes moved / 100: "
        f"{raw_bytes / 1e6:.1f} M/s)",
        f"raw uvloop ping-pong of a 100-byte frame: p50 {raw_rtt['p50_us']:.0f} µs, "
        f"p99 {raw_rtt['p99_us']:.0f} µs",
        f"Cython tell = {100 * tell[False]['rate'] / raw:.1f}% of the raw ceiling; "
        f"pure = {100 * tell[True]['rate'] / raw:.1f}%",
        f"ask p50/p99: Cython {ask[False]['p50_us']:.0f}/{ask[False]['p99_us']:.0f} µs, "
        f"pure {ask[True]['p50_us']:.0f}/{ask[True]['p99_us']:.0f} µs; "
        f"Cython p50 = {ask[False]['p50_us'] / raw_rtt['p50_us']:.1f}x raw ping-pong",
        f"raw uvloop ping-pong, both ends spinning {BUSY_POLL * 1e6:.0f} µs after each write (casty's "
        f"BusyPoller): p50 {raw_spin['p50_us']:.0f} µs, p99 {raw_spin['p99_us']:.0f} µs",
        f"ask with {bp} on both nodes: p50 Cython {busy[False]['p50_us']:.0f} µs = "
        f"{busy[False]['p50_us'] / raw_spin['p50_us']:.1f}x spinning raw ping-pong, "
        f"pure {busy[True]['p50_us']:.0f} µs = {busy[True]['p50_us'] / raw_spin['p50_us']:.1f}x "
        f"(Cython p50 without busy_poll / with: {ask[False]['p50_us'] / busy[False]['p50_us']:.1f}x)",
        "'node wired by hand': ActorSystem + LocalTransport + InboundMessageHandler + tcp_transport + "
        "RemoteTransport on the seed page's arguments only (casty 0.21's wiring); the other rows use "
        "RemoteActorSystem",
        "busy_poll rows and the spinning ping-pong pin the two processes to different cores "
        f"({'done' if spin_cores()[0] is not None else 'not possible here'}); the other rows are not "
        "pinned. The price: a core held busy on each node while asks flow",
    ]
    return [t, compact_table(n_tell, quick), fragments_table(quick)]
