"""A node in a child process for the failure-model tests: small liveness intervals.

Usage: ``python -m tests.nodes.live_node PORT INTERVAL TIMEOUT`` (PORT 0: any free port).
Prints one JSON line ``{"port": ..., "uid": ...}``, then serves ``/user/sink``, which
answers ``Echo`` with its text, until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import casty
from casty import Behavior, Behaviors, RemoteActorSystem
from tests.remote_helpers import Echo, registry


async def main(port: int, interval: float, timeout: float) -> None:
    async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
        if isinstance(msg, Echo):
            msg.reply_to.tell(msg.text)
        return Behaviors.same()

    async with RemoteActorSystem(
        "live", "127.0.0.1", port, registry=registry(), heartbeat_interval=interval, failure_timeout=timeout,
    ) as system:
        system.spawn(Behaviors.receive(receive), "sink")
        print(json.dumps({"port": system.address.port, "uid": system.node.uid}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    casty.run(main(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])))
