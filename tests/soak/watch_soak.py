"""Soak phase for death watch: watched node processes killed and stopped, watchers told.

The orchestrator runs a RemoteActorSystem with ``watchers`` actors; each watches
every target of ``nodes`` child processes (``tests/nodes/watched_node.py``, ``targets``
actors each), plus one path that does not exist on each.  Then, in a seeded random
order, each node is SIGKILLed or SIGSTOPped.  The orchestrator runs real heartbeats
(``heartbeat_interval`` 0.2 s, ``failure_timeout`` 1 s): a stopped node is found by its
silence, as in production.  Checked: every watcher gets exactly one Terminated per
watched ref, all within the deadline; each node makes exactly one NodeDown, reason
``"silent"`` for a stopped one (a killed one closes its connections: ``"closed"`` or
``"reset"``); and every death-watch table of the orchestrator is empty at the end (no
leaked entry).  The summary line gives the slowest stop-to-NodeDown time.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

from casty import Behaviors, NodeDown, RemoteActorSystem, Terminated

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0


async def _start(targets: int) -> tuple[asyncio.subprocess.Process, int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.nodes.watched_node", "0", str(targets),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
    )
    assert proc.stdout is not None
    return proc, int(await asyncio.wait_for(proc.stdout.readline(), 30))


async def run_watch_phase(
    *, nodes: int = 3, targets: int = 20, watchers: int = 5, seed: int = 1,
    heartbeat_interval: float = 0.2, failure_timeout: float = 1.0,
) -> list[str]:
    """Run the phase; the problems found (empty: passed).  Prints one summary line."""
    rng = random.Random(seed)
    started = time.monotonic()
    procs: list[tuple[asyncio.subprocess.Process, int]] = []
    problems: list[str] = []
    try:
        for _ in range(nodes):
            procs.append(await _start(targets))
        async with RemoteActorSystem(
            "observer", "127.0.0.1", 0, heartbeat_interval=heartbeat_interval, failure_timeout=failure_timeout,
        ) as system:
            downs: dict[int, list[tuple[str, float]]] = {}  # port -> (reason, when) of each NodeDown

            def on_node_event(event: Any) -> None:
                if isinstance(event, NodeDown):
                    downs.setdefault(event.port, []).append((event.reason, time.monotonic()))

            system.subscribe_nodes(on_node_event)
            got: dict[str, list[str]] = {}
            expected = nodes * (targets + 1)
            all_in = asyncio.get_running_loop().create_future()

            def watcher(name: str) -> Any:
                seen = got.setdefault(name, [])

                async def receive(ctx: Any, msg: Any) -> Any:
                    if isinstance(msg, Terminated):
                        seen.append(msg.ref.id)
                        if sum(map(len, got.values())) >= expected * watchers and not all_in.done():
                            all_in.set_result(None)
                    else:
                        for ref in msg:
                            ctx.watch(ref)
                    return Behaviors.same()

                return Behaviors.receive(receive)

            refs = []
            for _, port in procs:
                names = ["target"] if targets == 1 else [f"t{n}" for n in range(targets)]
                refs.extend(system.ref(f"casty://watched@127.0.0.1:{port}/user/{n}") for n in [*names, "ghost"])
            for w in range(watchers):
                system.spawn(watcher(f"w{w}"), f"w{w}").tell(refs)
            ghosts = watchers * nodes
            async with asyncio.timeout(DEADLINE):
                while sum(map(len, got.values())) < ghosts or system.death_watch.counts()["remote_bound"] < nodes:
                    await asyncio.sleep(0.01)  # the ghosts answered, every node bound: all watches are in
                order = list(range(nodes))
                rng.shuffle(order)
                kills = stops = 0
                stopped_at: dict[int, float] = {}
                for i in order:
                    proc, port = procs[i]
                    if rng.random() < 0.5:
                        proc.send_signal(signal.SIGKILL)
                        kills += 1
                    else:
                        proc.send_signal(signal.SIGSTOP)
                        stopped_at[port] = time.monotonic()
                        stops += 1
                    await asyncio.sleep(rng.uniform(0, 0.2))
                await all_in
            detect = []
            for _, port in procs:
                seen_down = downs.get(port, [])
                if len(seen_down) != 1:
                    problems.append(f"watch soak: node :{port} made {len(seen_down)} NodeDown, not 1: "
                                    f"{[r for r, _ in seen_down]}")
                elif port in stopped_at:
                    reason, when = seen_down[0]
                    detect.append(when - stopped_at[port])
                    if reason != "silent":
                        problems.append(f"watch soak: stopped node :{port} went down {reason!r}, not 'silent'")
                elif seen_down[0][0] not in ("closed", "reset"):
                    problems.append(f"watch soak: killed node :{port} went down {seen_down[0][0]!r}")
            for name, seen in got.items():
                if sorted(seen) != sorted(r.id for r in refs):
                    problems.append(f"watch soak: {name} got {len(seen)} Terminated "
                                    f"({len(set(seen))} distinct) for {len(refs)} watched refs")
            left = {k: v for k, v in system.death_watch.counts().items() if v}
            if left:
                problems.append(f"watch soak: death-watch entries left: {left}")
            print(f"  watch soak: {nodes} nodes x {targets} targets, {watchers} watchers, "
                  f"{kills} killed / {stops} stopped, {sum(map(len, got.values()))} Terminated, "
                  f"stopped found silent in {max(detect, default=0.0):.2f}s at most "
                  f"(heartbeat_interval {heartbeat_interval}s, failure_timeout {failure_timeout}s), "
                  f"{time.monotonic() - started:.1f}s")
    except TimeoutError:
        problems.append(f"watch soak: not every Terminated arrived within {DEADLINE}s")
    finally:
        for proc, _ in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
            await proc.wait()
    return problems
