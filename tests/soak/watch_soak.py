"""Soak phase for death watch: watched node processes killed and stopped, watchers told.

The orchestrator runs a RemoteActorSystem with ``watchers`` actors; each watches
every target of ``nodes`` child processes (``tests/nodes/watched_node.py``, ``targets``
actors each), plus one path that does not exist on each.  Then, in a seeded random
order, each node is SIGKILLed, or SIGSTOPped and then killed.  A stopped node is
declared lost after ``stop_grace`` seconds (``peer_down``, standing in for the liveness
timeout, so the phase needs no heartbeats).  Checked: every watcher gets exactly one
Terminated per watched ref, all within the deadline, and every death-watch table of
the orchestrator is empty at the end (no leaked entry).
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

from casty import Behaviors, RemoteActorSystem, Terminated

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
    *, nodes: int = 3, targets: int = 20, watchers: int = 5, seed: int = 1, stop_grace: float = 0.5
) -> list[str]:
    """Run the phase; the problems found (empty: passed).  Prints one summary line."""
    rng = random.Random(seed)
    started = time.monotonic()
    procs: list[tuple[asyncio.subprocess.Process, int]] = []
    problems: list[str] = []
    try:
        for _ in range(nodes):
            procs.append(await _start(targets))
        async with RemoteActorSystem("observer", "127.0.0.1", 0) as system:
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
                for i in order:
                    proc, port = procs[i]
                    if rng.random() < 0.5:
                        proc.send_signal(signal.SIGKILL)
                        kills += 1
                    else:
                        proc.send_signal(signal.SIGSTOP)
                        stops += 1
                        await asyncio.sleep(stop_grace)
                        system.node.peer_down("127.0.0.1", port, "stopped (soak)")
                    await asyncio.sleep(rng.uniform(0, 0.2))
                await all_in
            for name, seen in got.items():
                if sorted(seen) != sorted(r.id for r in refs):
                    problems.append(f"watch soak: {name} got {len(seen)} Terminated "
                                    f"({len(set(seen))} distinct) for {len(refs)} watched refs")
            left = {k: v for k, v in system.death_watch.counts().items() if v}
            if left:
                problems.append(f"watch soak: death-watch entries left: {left}")
            print(f"  watch soak: {nodes} nodes x {targets} targets, {watchers} watchers, "
                  f"{kills} killed / {stops} stopped, {sum(map(len, got.values()))} Terminated, "
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
