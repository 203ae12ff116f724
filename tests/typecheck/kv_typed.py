"""Typed use of casty, checked by mypy in tests/test_typing.py (never run, only checked).

A line that mypy must reject ends with ``# E: <error code>``; every other line must
pass ``mypy --strict``.  ``assert_type`` lines pin what mypy infers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, assert_type

from casty import ActorContext, ActorRef, ActorSystem, Behavior, Behaviors, RemoteActorSystem


@dataclass(frozen=True)
class Get:
    key: str
    reply_to: ActorRef[str | None]


@dataclass(frozen=True)
class Put:
    key: str
    value: str
    reply_to: ActorRef[bool]


KvMsg = Get | Put


@dataclass(frozen=True)
class Job:
    n: int
    reply_to: ActorRef[int]


def kv_store() -> Behavior[KvMsg]:
    data: dict[str, str] = {}

    async def receive(ctx: ActorContext[KvMsg], msg: KvMsg) -> Behavior[KvMsg]:
        if isinstance(msg, Get):
            msg.reply_to.tell(data.get(msg.key))
        else:
            data[msg.key] = msg.value
            msg.reply_to.tell(True)
        return Behaviors.same()

    return Behaviors.receive(receive)


def make_get(reply_to: ActorRef[str | None]) -> Get:
    return Get("k", reply_to)


async def good(system: ActorSystem) -> None:
    kv = system.spawn(kv_store(), "kv")
    assert_type(kv, ActorRef[KvMsg])
    value: str | None = await system.ask(kv, lambda r: Get("k", r))
    stored: bool = await system.ask(kv, lambda r: Put("k", "v", r))
    anything = await system.ask(kv, lambda r: Get("k", r))  # a lambda, unannotated: Any
    assert_type(anything, Any)
    assert_type(await system.ask(kv, make_get), str | None)  # a typed factory: its reply type
    print(value, stored, anything)


async def good_remote(system: RemoteActorSystem) -> None:
    jobs = system.ref("casty://w@127.0.0.1:25520/user/jobs", Job)
    assert_type(jobs, ActorRef[Job])
    done: int = await system.ask(jobs, lambda r: Job(3, r))
    kv: ActorRef[KvMsg] = system.ref("casty://kv@127.0.0.1:25520/user/kv")
    assert_type(system.ref("/user/x"), ActorRef[Any])
    print(done, kv)


async def bad(system: ActorSystem, remote: RemoteActorSystem) -> None:
    kv = system.spawn(kv_store(), "kv")
    await system.ask(kv, lambda r: Job(1, r))  # E: arg-type, return-value
    wrong: int = await system.ask(kv, lambda r: Get("k", r))  # E: arg-type
    kv.tell(Job(1, system.spawn(Behaviors.ignore(), "sink")))  # E: arg-type
    jobs = remote.ref("casty://w@127.0.0.1:25520/user/jobs", Job)
    jobs.tell(Get("k", system.spawn(Behaviors.ignore(), "sink2")))  # E: arg-type
    await system.ask(jobs, make_get)  # E: arg-type
    print(wrong)
