"""A node in a child process that reports every Ping seq it receives.

Usage: ``python -m tests.nodes.seq_node PORT`` (0: any free port).  Prints its port,
then one line per Ping received (the seq, flushed at once, so a parent that kills
this process knows exactly what it got), and answers ``Count`` with the list of
seqs received so far.  Serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import casty
from casty import Behavior, Behaviors, RemoteActorSystem
from tests.remote_helpers import Count, Echo, Ping, registry


async def main(port: int) -> None:
    seqs: list[int] = []
    out = sys.stdout

    async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
        if isinstance(msg, Ping):
            seqs.append(msg.seq)
            out.write(f"{msg.seq}\n")
            out.flush()
        elif isinstance(msg, Count):
            msg.reply_to.tell(list(seqs))
        elif isinstance(msg, Echo):
            msg.reply_to.tell(msg.text)
        return Behaviors.same()

    async with RemoteActorSystem("seq", "127.0.0.1", port, registry=registry()) as system:
        system.spawn(Behaviors.receive(receive), "sink")
        print(system.address.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    casty.run(main(int(sys.argv[1])))
