"""Nodes in separate processes: completeness and order over real TCP."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from casty import RemoteActorSystem
from tests.remote_helpers import Count, Echo, Ping, registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def sink_process() -> AsyncIterator[int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.nodes.sink_node",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    try:
        yield int(line)
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.mark.slow
async def test_100k_tells_across_processes_arrive_complete_and_in_order(sink_process: int) -> None:
    n = 100_000
    async with RemoteActorSystem("src", "127.0.0.1", 0, registry=registry()) as system:
        sink = system.ref(f"casty://sink@127.0.0.1:{sink_process}/user/sink")
        for i in range(n):
            sink.tell(Ping(i, "payload"))
            if i % 10_000 == 9_999:
                # Delivery is at-most-once with bounded queues: a sender that outruns its
                # receiver gets drops (reported). An ask per window is the flow control here.
                await system.ask(sink, lambda r: Echo("window", r), timeout=60)
        # Count travels behind every Ping on the same connection, so it sees them all.
        count, out_of_order = await system.ask(sink, lambda r: Count(r), timeout=60)
        assert (count, out_of_order, system.stats().drops) == (n, 0, {})


async def test_ask_across_processes(sink_process: int) -> None:
    async with RemoteActorSystem("src", "127.0.0.1", 0, registry=registry()) as system:
        sink = system.ref(f"casty://sink@127.0.0.1:{sink_process}/user/sink")
        for i in range(20):
            assert await system.ask(sink, lambda r, i=i: Echo(f"m{i}", r), timeout=10) == f"m{i}"
