"""Ping-pong between two processes.

    python examples/ping_pong.py          # starts the pong node in a child process, then pings it

The child prints the port it listens on; the parent sends Ping(n) and the pong
actor answers each with Pong(n) through the reply ref carried in the message.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import two_process

from casty import ActorRef, Behavior, Behaviors, RemoteActorSystem, TypeRegistry


@dataclass(frozen=True)
class Ping:
    n: int
    reply_to: ActorRef[Any]


@dataclass(frozen=True)
class Pong:
    n: int


def registry() -> TypeRegistry:
    reg = TypeRegistry()
    reg.register(Ping, "example.Ping")
    reg.register(Pong, "example.Pong")
    return reg


async def serve() -> None:
    async def pong(ctx: Any, msg: Ping) -> Behavior[Ping]:
        msg.reply_to.tell(Pong(msg.n))
        return Behaviors.same()

    async with RemoteActorSystem("pong", "127.0.0.1", 0, registry=registry()) as system:
        system.spawn(Behaviors.receive(pong), "pong")
        await two_process.serve_until_stdin_closes(system)


async def ping(port: int, rounds: int = 10_000) -> None:
    done = asyncio.get_running_loop().create_future()

    async def on_pong(ctx: Any, msg: Pong) -> Behavior[Pong]:
        if msg.n + 1 < rounds:
            target.tell(Ping(msg.n + 1, ctx.self))
        else:
            done.set_result(None)
        return Behaviors.same()

    async with RemoteActorSystem("ping", "127.0.0.1", 0, registry=registry()) as system:
        target = system.ref(f"casty://pong@127.0.0.1:{port}/user/pong")
        me = system.spawn(Behaviors.receive(on_pong), "ping")
        t0 = time.perf_counter()
        target.tell(Ping(0, me))
        await asyncio.wait_for(done, 60)
        dt = time.perf_counter() - t0
        print(f"{rounds} ping-pong round trips in {dt:.2f}s: {dt / rounds * 1e6:.0f} µs each")


if __name__ == "__main__":
    two_process.main(__file__, serve, ping)
