"""A request/reply service in one process, a client asking it from another.

    python examples/request_reply.py      # starts the service in a child process, then asks it

The service keeps a key-value store; the client uses ``system.ask`` across nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import two_process

from casty import ActorRef, Behavior, Behaviors, RemoteActorSystem, TypeRegistry


@dataclass(frozen=True)
class Put:
    key: str
    value: int
    reply_to: ActorRef[Any]


@dataclass(frozen=True)
class Get:
    key: str
    reply_to: ActorRef[Any]


def registry() -> TypeRegistry:
    reg = TypeRegistry()
    reg.register(Put, "example.Put")
    reg.register(Get, "example.Get")
    return reg


def store(data: dict[str, int]) -> Behavior[Put | Get]:
    async def receive(ctx: Any, msg: Put | Get) -> Behavior[Put | Get]:
        if isinstance(msg, Put):
            msg.reply_to.tell("ok")
            return store({**data, msg.key: msg.value})  # state lives in the behaviour
        msg.reply_to.tell(data.get(msg.key))
        return Behaviors.same()

    return Behaviors.receive(receive)


async def serve() -> None:
    async with RemoteActorSystem("kv", "127.0.0.1", 0, registry=registry()) as system:
        system.spawn(store({}), "store")
        await two_process.serve_until_stdin_closes(system)


async def client(port: int) -> None:
    async with RemoteActorSystem("client", "127.0.0.1", 0, registry=registry()) as system:
        kv = system.ref(f"casty://kv@127.0.0.1:{port}/user/store")
        print("put a=1:", await system.ask(kv, lambda r: Put("a", 1, r), timeout=5))
        print("put b=2:", await system.ask(kv, lambda r: Put("b", 2, r), timeout=5))
        print("get a  :", await system.ask(kv, lambda r: Get("a", r), timeout=5))
        print("get zz :", await system.ask(kv, lambda r: Get("zz", r), timeout=5))


if __name__ == "__main__":
    two_process.main(__file__, serve, client)
