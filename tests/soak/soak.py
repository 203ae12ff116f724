"""Soak: N node processes, all-to-all numbered tells and asks, connections killed at random.

``python -m tests.soak.soak [--nodes 3] [--tells 100000] [--ask-every 250] [--kills 20] [--seed 1]
[--watch-nodes 3]``

Each node (``tests/soak/node.py``) sends ``--tells`` numbered tells to every other
node, asks each of them every ``--ask-every`` seqs, and fences at the end.  While
they run, the orchestrator tells random nodes to drop their connection to a random
peer.  At the end every node reports what it sent, what was reported dropped (each
drop charged to its exact seq) and what it received, and this script checks, per
ordered pair:

* received seqs are strictly increasing (order holds, no duplicates);
* nothing reported dropped was delivered, nothing was delivered that was not sent;
* every tell sent and not reported dropped was received, except tells in flight on a
  connection when it broke: bytes already handed to the kernel cannot be reported
  by an at-most-once transport.  Those are only accepted as the tail of a connection
  that did break (no later tell of the same connection arrived): a gap anywhere else
  is a lost-and-unreported violation.

Then a death-watch phase (``tests/soak/watch_soak.py``): watchers of actors on
``--watch-nodes`` processes that are killed or stopped (found by real heartbeats) get
exactly one Terminated each, and no watch entry is left.  It prints the totals and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.soak.watch_soak import run_watch_phase

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 150.0  # seconds for the whole run


class Node:
    """One node process and the events it printed."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, report: Path) -> None:
        self.name = name
        self.proc = proc
        self.report_path = report
        self.port = 0
        self.extensions = False
        self.progress = 0
        self.done = asyncio.Event()
        self.reported = asyncio.Event()
        self.error: str | None = None
        self.kills = 0

    def command(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        event = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 30))
        assert event["event"] == "ready", event
        self.port, self.extensions = event["port"], event["extensions"]

    async def pump(self, on_progress: Any) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            event = json.loads(line)
            match event["event"]:
                case "progress":
                    self.progress = event["seq"]
                    on_progress(self)
                case "killed":
                    self.kills += 1
                case "done":
                    self.error = event.get("error")
                    self.done.set()
                case "reported":
                    self.reported.set()


async def start_node(name: str, args: argparse.Namespace, tmp: Path) -> Node:
    report = tmp / f"{name}.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.soak.node", name, str(args.tells), str(args.ask_every), str(report),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
    )
    node = Node(name, proc, report)
    await node.ready()
    return node


def check_pair(sent: dict[str, Any], received: list[int]) -> dict[str, int]:
    """Totals and violations for one ordered pair (see the module docstring)."""
    tells: list[int] = sent["tells"]
    epochs: list[int] = sent["epochs"]
    dropped = set(sent["dropped"])
    got = set(received)
    out = {
        "received": len(received),
        "duplicates": len(received) - len(got),
        "out_of_order": sum(1 for a, b in itertools.pairwise(received) if b <= a),
        "dropped_but_delivered": len(got & dropped),
        "delivered_never_sent": len(got - set(tells) - dropped),
    }
    # Per connection (epoch), the newest tell that arrived: a loss before it is a gap.
    newest: dict[int, int] = {}
    for seq, epoch in zip(tells, epochs, strict=True):
        if seq in got:
            newest[epoch] = seq
    last_epoch = epochs[-1] if epochs else -1
    in_flight = unreported = 0
    unexplained: list[tuple[int, int]] = []
    for seq, epoch in zip(tells, epochs, strict=True):
        if seq in got or seq in dropped:
            continue
        broke = epoch != last_epoch or sent["last_epoch_ended"]
        if broke and seq > newest.get(epoch, -1):
            in_flight += 1
        else:
            unreported += 1
            unexplained.append((seq, epoch))
    if unexplained:
        seq, epoch = unexplained[0]
        print(f"    first unexplained loss: seq {seq} (connection {epoch}), {len(unexplained)} in all; "
              f"newest arrival on that connection: {newest.get(epoch)}; "
              f"connections sent on: {sorted(set(epochs))[-5:]}", file=sys.stderr)
    out["lost_in_flight"] = in_flight
    out["lost_unreported"] = unreported
    return out


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    names = [f"n{i}" for i in range(args.nodes)]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="casty-soak-") as tmpdir:
        nodes = {name: await start_node(name, args, Path(tmpdir)) for name in names}
        # kill schedule: (killer, victim, progress of the killer's send loop)
        schedule = []
        for _ in range(args.kills):
            killer = rng.choice(names)
            victim = rng.choice([n for n in names if n != killer])
            schedule.append((rng.randrange(args.tells // 10, args.tells * 9 // 10 + 1), killer, victim))
        pending = sorted(schedule)

        def on_progress(node: Node) -> None:
            for item in list(pending):
                at, killer, victim = item
                if killer == node.name and node.progress >= at:
                    pending.remove(item)
                    node.command(cmd="kill", peer=victim)

        pumps = [asyncio.create_task(n.pump(on_progress)) for n in nodes.values()]
        try:
            for node in nodes.values():
                node.command(cmd="start", peers={p.name: p.port for p in nodes.values() if p is not node})
            async with asyncio.timeout(DEADLINE):
                for node in nodes.values():
                    await node.done.wait()
                for node in nodes.values():
                    node.command(cmd="report")
                for node in nodes.values():
                    await node.reported.wait()
            for node in nodes.values():
                node.command(cmd="exit")
            for node in nodes.values():
                await asyncio.wait_for(node.proc.wait(), 30)
        finally:
            for node in nodes.values():
                if node.proc.returncode is None:
                    node.proc.kill()
                    await node.proc.wait()
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        reports = {name: json.loads(node.report_path.read_text()) for name, node in nodes.items()}
    elapsed = time.monotonic() - started

    totals: dict[str, int] = {}
    problems: list[str] = []
    for src, report in reports.items():
        for dst, sent in report["sent"].items():
            pair = check_pair(sent, reports[dst]["received"].get(src, []))
            pair["sent"] = args.tells
            pair["reported_dropped"] = len(set(sent["dropped"]))
            for k, v in pair.items():
                totals[k] = totals.get(k, 0) + v
            accounted = pair["received"] - pair["duplicates"] + pair["reported_dropped"] + pair["lost_in_flight"]
            accounted += pair["lost_unreported"] - pair["dropped_but_delivered"]
            if accounted != args.tells:
                problems.append(f"{src}->{dst}: {accounted} accounted for, {args.tells} sent")
            for k in ("duplicates", "out_of_order", "dropped_but_delivered", "delivered_never_sent",
                      "lost_unreported"):
                if pair[k]:
                    problems.append(f"{src}->{dst}: {k} = {pair[k]}")
        for a in report["anomalies"]:
            problems.append(f"{src}: {a}")
        if report["connections"] != report["connected_peers"] + report["receive_only"]:
            problems.append(f"{src}: {report['connections']} connections open for "
                            f"{report['connected_peers']} connected peers and {report['receive_only']} "
                            f"receive-only ones at the end: {report['stray_connections']}")
        for peer, st in report["stats"].items():
            told = len(reports[peer]["received"].get(src, [])) if peer in reports else 0
            # What the sink got from a peer came in messages the node counted (tells, asks, replies).
            if st["messages_received"] < len(report["received"].get(peer, [])):
                problems.append(f"{src}: stats count {st['messages_received']} messages from {peer}, "
                                f"its sink got {len(report['received'].get(peer, []))} tells")
            if st["messages_sent"] < told:
                problems.append(f"{src}: stats count {st['messages_sent']} messages sent to {peer}, "
                                f"which received {told} tells")
        # An ask failed at once on its connection's loss may still get its reply, over the
        # peer's own connection: dropped as late, one at most per such ask.
        late_ok = report["counts"].get("asks_node_down", 0)
        if report["inbound_dropped"] > late_ok or report["local_drops"]:
            problems.append(f"{src}: inbound dropped {report['inbound_dropped']}, local drops {report['local_drops']}")
    counts = {k: sum(r["counts"][k] for r in reports.values()) for k in next(iter(reports.values()))["counts"]}
    reasons: dict[str, int] = {}
    for r in reports.values():
        for k, v in r["node_drops"].items():
            reasons[k] = reasons.get(k, 0) + v
    st_totals = {k: sum(p[k] for r in reports.values() for p in r["stats"].values())
                 for k in ("messages_sent", "messages_received", "bytes_sent", "bytes_received", "reconnects")}
    if st_totals["messages_received"] > st_totals["messages_sent"]:
        problems.append(f"stats: {st_totals['messages_received']} messages received, only "
                        f"{st_totals['messages_sent']} sent")
    for node in nodes.values():
        if node.error:
            problems.append(f"{node.name}: send loop failed: {node.error}")

    impl = "Cython extensions" if all(n.extensions for n in nodes.values()) else "pure-Python twins"
    if _truthy("CASTY_REQUIRE_EXTENSIONS") and not _truthy("CASTY_NO_EXTENSIONS") and impl != "Cython extensions":
        problems.append("CASTY_REQUIRE_EXTENSIONS is set but the nodes ran the pure-Python twins")
    print(f"casty soak: {args.nodes} nodes ({impl}), {args.tells} tells per ordered pair, "
          f"{args.kills} kills scheduled, seed {args.seed}, {elapsed:.1f}s")
    print(f"  tells sent             {totals['sent']}")
    print(f"  received               {totals['received']}")
    print(f"  reported dropped       {totals['reported_dropped']}")
    print(f"  lost in flight at kill {totals['lost_in_flight']}  (on a broken connection, after its last arrival)")
    print(f"  lost and unreported    {totals['lost_unreported']}")
    print(f"  duplicates             {totals['duplicates']}")
    print(f"  out of order           {totals['out_of_order']}")
    print(f"  asks ok / failed       {counts['asks_ok']} / {counts['asks_failed']}  "
          f"(fence retries {counts['fence_retries']})")
    print(f"  connections killed     {counts['kills']}  (skipped: {counts['kills_skipped']})")
    print(f"  frames dropped by the nodes, by reason: {reasons or 'none'}")
    print(f"  stats(): messages sent / received {st_totals['messages_sent']} / {st_totals['messages_received']}, "
          f"bytes {st_totals['bytes_sent']} / {st_totals['bytes_received']}, reconnects {st_totals['reconnects']}")
    if args.watch_nodes:
        problems.extend(await run_watch_phase(nodes=args.watch_nodes, seed=args.seed))
    if problems:
        print(f"FAILED: {len(problems)} violation(s)")
        for p in problems[:50]:
            print(f"  {p}")
        return 1
    print("OK")
    return 0


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--tells", type=int, default=100_000)
    parser.add_argument("--ask-every", type=int, default=250)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--watch-nodes", type=int, default=3,
                        help="watched node processes killed/stopped in the death-watch phase (0: skip)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.nodes < 2 or args.tells < 1 or args.ask_every < 1 or args.kills < 0 or args.watch_nodes < 0:
        parser.error("need --nodes >= 2, --tells >= 1, --ask-every >= 1, --kills >= 0, --watch-nodes >= 0")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
