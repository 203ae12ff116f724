"""A node in a child process for the failure-model tests: small liveness intervals.

Usage: ``python -m tests.nodes.live_node PORT INTERVAL TIMEOUT [COOKIE [HELLO]]`` (PORT 0:
any free port; COOKIE ``-``: none).  Prints one JSON line ``{"port": ..., "uid": ...}``,
then serves ``/user/sink``, which answers ``Echo`` with its text, until stdin closes.
With HELLO (an actor URI) it first tells that actor ``Ping(0, "hello")``, so it dials
that node itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import casty
from casty import Behavior, Behaviors, RemoteActorSystem
from tests.remote_helpers import Echo, Ping, registry


async def main(port: int, interval: float, timeout: float, cookie: str | None, hello: str | None) -> None:
    async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
        if isinstance(msg, Echo):
            msg.reply_to.tell(msg.text)
        return Behaviors.same()

    async with RemoteActorSystem(
        "live", "127.0.0.1", port, registry=registry(), heartbeat_interval=interval, failure_timeout=timeout,
        cookie=cookie,
    ) as system:
        system.spawn(Behaviors.receive(receive), "sink")
        if hello is not None:
            system.ref(hello).tell(Ping(0, "hello"))
        print(json.dumps({"port": system.address.port, "uid": system.node.uid}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    args = sys.argv[1:]
    casty.run(main(
        int(args[0]), float(args[1]), float(args[2]),
        None if len(args) < 4 or args[3] == "-" else args[3],
        args[4] if len(args) > 4 else None,
    ))
