"""A node in a child process with actors to watch: ``/user/target``, ``/user/t1``...

``python -m tests.nodes.watched_node [port] [targets]``: listens on ``port`` (0: a free
one), spawns ``targets`` idle actors (``/user/target`` when 1, else ``/user/t0``...),
prints its port, then serves until stdin closes.
"""

from __future__ import annotations

import asyncio
import sys

import casty
from casty import Behaviors, RemoteActorSystem
from tests.remote_helpers import registry


async def main(port: int, targets: int) -> None:
    async with RemoteActorSystem("watched", "127.0.0.1", port, registry=registry()) as system:
        for n in range(targets):
            system.spawn(Behaviors.ignore(), "target" if targets == 1 else f"t{n}")
        print(system.address.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    casty.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0, int(sys.argv[2]) if len(sys.argv) > 2 else 1))
