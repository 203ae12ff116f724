"""A node in a child process: counts Pings at /user/sink, checks their order, answers Count.

Prints its port on stdout, then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import casty
from casty import Behavior, Behaviors, RemoteActorSystem
from tests.remote_helpers import Count, Echo, Ping, registry


async def main() -> None:
    state = {"count": 0, "next": 0, "out_of_order": 0}

    async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
        if isinstance(msg, Ping):
            if msg.seq != state["next"]:
                state["out_of_order"] += 1
            state["next"] = msg.seq + 1
            state["count"] += 1
        elif isinstance(msg, Count):
            msg.reply_to.tell((state["count"], state["out_of_order"]))
        elif isinstance(msg, Echo):
            msg.reply_to.tell(msg.text)
        return Behaviors.same()

    async with RemoteActorSystem("sink", "127.0.0.1", 0, registry=registry()) as system:
        system.spawn(Behaviors.receive(receive), "sink")
        print(system.address.port, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    casty.run(main())
