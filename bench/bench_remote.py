"""Two-process benchmarks: remote tell throughput, ask latency, and the raw uvloop ceiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench._harness import Table

ROOT = Path(__file__).resolve().parents[1]


class Child:
    """A benchmark child process (``python -m MODULE ROLE ...``); a server prints its port first."""

    def __init__(self, role: str, *args: object, pure: bool, module: str = "bench.remote_node") -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), CASTY_NO_EXTENSIONS="1" if pure else "0")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, role, *map(str, args)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )

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


def pair(sink_role: str, client_role: str, n: int, *, pure: bool) -> dict[str, Any]:
    sink = Child(sink_role, pure=pure)
    try:
        port = int(sink.line())
        return Child(client_role, port, n, pure=pure).result()
    finally:
        sink.stop()


def collect(quick: bool) -> list[Table]:
    n_tell = 50_000 if quick else 300_000
    n_ask = 1_000 if quick else 5_000
    n_raw = 2_000_000 if quick else 10_000_000

    raw = pair("raw-sink", "raw-tell", n_raw // 4, pure=False)["rate"]
    raw_bytes = pair("raw-bytes", "raw-tell", n_raw, pure=False)["rate"]
    raw_rtt = pair("raw-echo", "raw-pingpong", n_ask, pure=False)
    tell = {p: pair("casty-sink", "casty-tell", n_tell, pure=p) for p in (False, True)}
    ask = {p: pair("casty-sink", "casty-ask", n_ask, pure=p) for p in (False, True)}
    for p, r in tell.items():
        if r["received"] != r["n"]:
            raise RuntimeError(f"tell benchmark lost messages ({'pure' if p else 'Cython'}): {r}")

    t = Table("remote, two processes on loopback")
    t.add("tell Tick(int, str), msgpack", tell[False]["rate"], tell[True]["rate"])
    t.add("ask round trip p50", ask[False]["p50_us"], ask[True]["p50_us"], unit="µs")
    t.add("ask round trip p99", ask[False]["p99_us"], ask[True]["p99_us"], unit="µs")
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
    ]
    return [t]
