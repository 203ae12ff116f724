"""Red team: malicious peers against a victim node while a healthy peer works alongside (issue 20).

``python -m tests.redteam.redteam [--attacks spray,claim,...] [--quick] [--json PATH] [--strict]``

For each attack a fresh victim node B and a fresh healthy node A start as subprocesses
(``tests/redteam/node.py``, public API only); A and B ask each other's echo actor and tell
each other's sink every 5 ms (ask timeout 2 s), and B reports every 100 ms its event-loop
stall, RSS, fds and ask counters.  Once both are answering, this process plays the
attacker over raw sockets on 127.0.0.1 (``tests/redteam/attacks.py``: sprayed ask replies,
a handshake claiming A's address, a colliding-int set, memory floods, streams of
undecodable or unknown frames, ``/system/tcp``, hostile handshake fields, idle
connections; where this casty has ``allow_dial``, both nodes dial only the peer
they were told of, the set-up issue 20 asks for against untrusted peers), then lets
B settle (3 s after a memory flood, 2.5 s otherwise: longer than
the ask timeout, so asks the attack made fail are counted).  Each attack gets rows for
spoofed replies (B's asks answered with the attacker's value), B's largest loop stall, B's
RSS at start / peak / after settling, the healthy asks that failed either way and pings
lost, what B logged, and uncaught errors, next to the bar issue 20 sets ("Done when": 0
spoofed replies, 0 traffic to a claimant, no stall over 100 ms, RSS back within 50 MiB of
the start).  It prints one Markdown table (attack | metric | value | bar | met) and writes
the same as JSON to ``build/redteam-<twin>.json``; the twin is the one the nodes run
(``CASTY_NO_EXTENSIONS``, as for the test suite).  Every phase is bounded in time; the
full run takes about 2 minutes per twin.  Exit status: 1 when the harness itself failed
(a node would not start or answer), else 0, or with ``--strict`` 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tests.redteam.attacks import ATTACKS, FORGED_LOG, QUICK, Attack, Ctx, Row
from tests.redteam.wire import PortPool

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
STALL_BAR_MS = 100.0
RSS_BAR = 50 * MiB
BASELINE = 0.5
WARM_ASKS = 10


class StderrStats:
    """Counts what a node logs without keeping it: bytes, lines, forged lines, NULs, tracebacks."""

    PATTERNS = {"forged": b"\n" + FORGED_LOG.encode(), "nul": b"\x00", "traceback": b"Traceback (most recent"}

    def __init__(self) -> None:
        self.bytes = 0
        self.lines = 0
        self.hits = dict.fromkeys(self.PATTERNS, 0)
        self.tail = b""
        self._carry = b""

    def feed(self, data: bytes) -> None:
        self.bytes += len(data)
        self.lines += data.count(b"\n")
        text = self._carry + data
        for key, pat in self.PATTERNS.items():
            self.hits[key] += text.count(pat) - self._carry.count(pat)
        self._carry = text[-32:]
        self.tail = (self.tail + data)[-4000:]

    def snapshot(self) -> dict[str, int]:
        return {"bytes": self.bytes, "lines": self.lines, **self.hits}


class NodeProc:
    """One node subprocess and the reports it printed (receive time, report)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.port = 0
        self.extensions = False
        self.reports: list[tuple[float, dict[str, Any]]] = []
        self.last: dict[str, Any] = {}
        self.stderr = StderrStats()
        self._new_report = asyncio.Event()
        self._pumps: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        loop = asyncio.get_running_loop()
        self._pumps.append(loop.create_task(self._pump_stderr()))
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line:
            raise RuntimeError(f"node {self.name} exited before it was ready: {self.stderr.tail[-1500:]!r}")
        event = json.loads(line)
        self.port, self.extensions = event["port"], event["extensions"]
        self._pumps.append(loop.create_task(self._pump_stdout()))

    async def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            report = json.loads(line)
            self.reports.append((time.monotonic(), report))
            self.last = report
            self._new_report.set()

    async def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        while data := await self.proc.stderr.read(1 << 16):
            self.stderr.feed(data)

    def command(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def report_after(self, t: float, timeout: float) -> bool:
        """Wait until a report received after monotonic time ``t`` is in; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                while not (self.reports and self.reports[-1][0] > t):
                    if self.proc.returncode is not None:
                        return False
                    self._new_report.clear()
                    await self._new_report.wait()
            return True
        except TimeoutError:
            return False

    async def stall_since(self, t: float, wait: float) -> float:
        """The largest stall (ms) reported since ``t``, once a report after now is in."""
        await self.report_after(time.monotonic(), wait)
        return max((r["lag_ms"] for at, r in self.reports if at > t), default=0.0)

    def window(self, t0: float, t1: float) -> list[dict[str, Any]]:
        return [r for at, r in self.reports if t0 < at <= t1]

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        for pump in self._pumps:
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)


async def start_node(name: str) -> NodeProc:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.redteam.node", name,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
    )
    node = NodeProc(name, proc)
    try:
        await node.start()
    except BaseException:
        await node.kill()
        raise
    return node


def failed(asks: dict[str, int]) -> int:
    return asks["forged"] + asks["wrong"] + asks["timeout"] + asks["error"]


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


def mib(n: float) -> str:
    return f"{n / MiB:.0f}"


async def run_attack(attack: Attack, pool: PortPool, quick: bool) -> dict[str, Any]:
    victim_name, healthy_name = "victim", "healthy"
    victim, healthy = await asyncio.gather(start_node(victim_name), start_node(healthy_name))
    try:
        victim.command(cmd="peer", name=healthy_name, port=healthy.port)
        healthy.command(cmd="peer", name=victim_name, port=victim.port)
        async with asyncio.timeout(20):
            while not (victim.last and healthy.last and victim.last["asks"]["ok"] >= WARM_ASKS
                       and healthy.last["asks"]["ok"] >= WARM_ASKS):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2 if quick else BASELINE)
        b0, a0, log0 = victim.last, healthy.last, victim.stderr.snapshot()
        t0 = time.monotonic()
        ctx = Ctx(victim_name, victim.port, healthy_name, healthy.port, victim, pool, quick,
                  budget=min(attack.budget, 1.0) if quick else attack.budget)
        error = None
        try:
            # The attack bounds its own phases by ctx.budget; this is the backstop.
            async with asyncio.timeout(ctx.budget + 45):
                rows = await attack.run(ctx)
        except Exception as exc:  # an attack that breaks is a result too (the victim may have refused it)
            rows, error = [], f"{type(exc).__name__}: {exc}"
        t_attack = time.monotonic()
        # Quick runs only check the harness: no need to outwait the ask timeout.
        settle = 0.5 if quick else 3.0 if attack.memory else 2.5
        await asyncio.sleep(settle)
        # A frozen victim reports late: wait (bounded) for a report from after the settle time.
        fresh = await victim.report_after(time.monotonic(), timeout=30)
        t1 = time.monotonic()
        b1, a1, log1 = victim.last, healthy.last, victim.stderr.snapshot()
        window = victim.window(t0, t1)
        exited = victim.proc.returncode
        return summarize(attack, rows, error, ctx.notes, b0, b1, a0, a1, log0, log1, window,
                         fresh, exited, t_attack - t0, victim.extensions)
    finally:
        await asyncio.gather(victim.kill(), healthy.kill())


def summarize(attack: Attack, rows: list[Row], error: str | None, notes: list[str],
              b0: dict[str, Any], b1: dict[str, Any], a0: dict[str, Any], a1: dict[str, Any],
              log0: dict[str, int], log1: dict[str, int], window: list[dict[str, Any]],
              fresh: bool, exited: int | None, took: float, extensions: bool) -> dict[str, Any]:
    out: list[Row] = list(rows)
    if error is not None:
        out.append(("attack stopped with", error[:200], "", None))
    b_asks, a_asks = delta(b1["asks"], b0["asks"]), delta(a1["asks"], a0["asks"])
    spoofed = b_asks["forged"] + a_asks["forged"]
    out.append(("spoofed replies (asks answered by the attacker)", spoofed, "0", spoofed == 0))
    stall = max((r["lag_ms"] for r in window), default=0.0)
    stall_text = f"{stall:.0f}" + ("" if fresh else " (victim still frozen at the end: no report in 30 s)")
    out.append(("max loop stall of B (ms)", stall_text, f"<= {STALL_BAR_MS:.0f}", fresh and stall <= STALL_BAR_MS))
    rss0 = b0["rss"]
    peak = max([rss0, *(r["rss"] for r in window)])
    rss1 = b1["rss"]
    out.append(("RSS of B start / peak / after (MiB)", f"{mib(rss0)} / {mib(peak)} / {mib(rss1)}",
                "after <= start + 50" if attack.memory else "",
                rss1 - rss0 <= RSS_BAR if attack.memory else None))
    b_n, a_n = sum(b_asks[k] for k in ("ok", "forged", "wrong", "timeout", "error")), 0
    a_n = sum(a_asks[k] for k in ("ok", "forged", "wrong", "timeout", "error"))
    pings = delta(b1["pings"], b0["pings"])
    out.append(("healthy asks failed B->A / A->B", f"{failed(b_asks)} of {b_n} / {failed(a_asks)} of {a_n}", "", None))
    out.append(("healthy pings A->B missing", pings["missing"], "", None))
    log = delta(log1, log0)
    log_bar = attack.key in ("system-tcp", "dial", "bad-host", "long-port")
    out.append(("B's log during the attack", f"{log['bytes'] / MiB:.2f} MiB, {log['lines']:,} lines",
                "<= 1 MiB" if log_bar else "", log["bytes"] <= MiB if log_bar else None))
    if attack.key == "bad-host":
        out.append(("forged log lines / NUL bytes in B's log", f"{log['forged']} / {log['nul']}", "0 / 0",
                    log["forged"] == 0 and log["nul"] == 0))
    uncaught = b1["loop_errors"] - b0["loop_errors"]
    out.append(("uncaught errors (loop handler / tracebacks logged)", f"{uncaught} / {log['traceback']}", "0 / 0",
                uncaught == 0 and log["traceback"] == 0))
    if exited is not None:
        out.append(("victim process exited", f"code {exited}", "no", False))
    return {
        "key": attack.key,
        "attack": attack.title,
        "extensions": extensions,
        "seconds": round(took, 1),
        "notes": notes,
        "rows": [{"metric": m, "value": v, "bar": bar, "met": met} for m, v, bar, met in out],
        "raw": {"victim_asks": b_asks, "healthy_asks": a_asks, "pings": pings, "log": log, "stall_ms": stall,
                "rss_start": rss0, "rss_peak": peak, "rss_after": rss1, "reported_after_settle": fresh},
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| attack | metric | value | bar | met |", "| --- | --- | --- | --- | --- |"]
    for res in results:
        first = True
        for row in res["rows"]:
            met = {True: "yes", False: "**NO**", None: ""}[row["met"]]
            name = res["attack"] if first else ""
            value = str(row["value"]).replace("|", "/")
            lines.append(f"| {name} | {row['metric']} | {value} | {row['bar']} | {met} |")
            first = False
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    keys = QUICK if args.quick and not args.attacks else (args.attacks or [a.key for a in ATTACKS])
    by_key = {a.key: a for a in ATTACKS}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        print(f"unknown attack(s) {unknown}; known: {', '.join(by_key)}", file=sys.stderr)
        return 2
    want_ext = not _truthy("CASTY_NO_EXTENSIONS")
    started = time.monotonic()
    pool = PortPool()
    results = []
    try:
        for key in keys:
            attack = by_key[key]
            print(f"  {attack.title} ...", file=sys.stderr, flush=True)
            res = await run_attack(attack, pool, args.quick)
            results.append(res)
    except (TimeoutError, RuntimeError) as exc:
        print(f"redteam harness failed: {exc!r}", file=sys.stderr)
        return 1
    finally:
        pool.close()
    elapsed = time.monotonic() - started
    extensions = all(r["extensions"] for r in results)
    twin = "cython" if extensions else "pure"
    if _truthy("CASTY_REQUIRE_EXTENSIONS") and want_ext and not extensions:
        print("CASTY_REQUIRE_EXTENSIONS is set but the nodes ran the pure-Python twins", file=sys.stderr)
        return 1
    missed = sum(1 for r in results for row in r["rows"] if row["met"] is False)
    notes = [n for r in results for n in r["notes"]]
    print(f"\ncasty red team: {len(results)} attack(s) against the {twin} twin{' (quick)' if args.quick else ''}, "
          f"{elapsed:.0f}s; {missed} bar(s) of issue 20 missed")
    for note in notes:
        print(f"  note: {note}")
    print()
    print(table(results))
    path = Path(args.json) if args.json else ROOT / "build" / f"redteam-{twin}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"twin": twin, "quick": args.quick, "seconds": round(elapsed, 1),
                                "bars_missed": missed, "notes": notes, "attacks": results}, indent=1))
    print(f"\nwrote {path}")
    return 1 if args.strict and missed else 0


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attacks", type=lambda s: [k for k in s.split(",") if k],
                        help=f"comma-separated, of: {', '.join(a.key for a in ATTACKS)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help=f"small and short: {', '.join(QUICK)} unless --attacks says otherwise")
    parser.add_argument("--json", help="where to write the results (default build/redteam-<twin>.json)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any bar of issue 20 is missed")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
