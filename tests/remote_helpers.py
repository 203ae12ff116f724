"""Message types and actors shared by the remote tests and their child processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from casty import ActorRef, Behavior, Behaviors, RemoteActorSystem, SendFailure, TypeRegistry
from casty.wire import FRAME_MESSAGE


@dataclass(frozen=True)
class Ping:
    seq: int
    text: str = ""


@dataclass(frozen=True)
class Echo:
    text: str
    reply_to: ActorRef[Any]


@dataclass(frozen=True)
class Count:
    reply_to: ActorRef[Any]


@dataclass(frozen=True)
class Chunk:
    seq: int
    data: bytes
    tail: bytes = b""


def registry() -> TypeRegistry:
    reg = TypeRegistry()
    for cls in (Ping, Echo, Count, Chunk):
        reg.register(cls)
    return reg


class Collector:
    """Collects what an actor receives; ``wait(n)`` returns once n messages arrived."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def behavior(self) -> Behavior[Any]:
        async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
            if isinstance(msg, Count):
                msg.reply_to.tell(len(self.items))
                return Behaviors.same()
            self.items.append(msg)
            for n, fut in self._waiters:
                if len(self.items) >= n and not fut.done():
                    fut.set_result(None)
            return Behaviors.same()

        return Behaviors.receive(receive)

    async def wait(self, n: int, timeout: float = 10.0) -> list[Any]:
        if len(self.items) < n:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append((n, fut))
            await asyncio.wait_for(fut, timeout)
        return self.items


def echo_behavior() -> Behavior[Any]:
    async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
        if isinstance(msg, Echo):
            msg.reply_to.tell(msg.text)
        return Behaviors.same()

    return Behaviors.receive(receive)


def node(name: str, **kw: Any) -> RemoteActorSystem:
    """A RemoteActorSystem on 127.0.0.1, a free port, the test registry, a 2 s connect timeout."""
    kw.setdefault("registry", registry())
    kw.setdefault("connect_timeout", 2.0)
    return RemoteActorSystem(name, "127.0.0.1", 0, **kw)


class KindSpy:
    """Stands in, while entered, for the established connection ``node`` sends to ``key``
    on: records each message body written to it with its kind, and passes it on."""

    def __init__(self, node: Any, key: tuple[str, int]) -> None:
        self.peer = node._peers[key]
        self.proto = self.peer.proto
        self.context = self.proto.context
        self.sent: list[tuple[Any, int]] = []

    @property
    def kinds(self) -> list[int]:
        return [kind for _, kind in self.sent]

    def send_message(self, data: Any, kind: int = FRAME_MESSAGE) -> bool:
        self.sent.append((data, kind))
        return bool(self.proto.send_message(data, kind))

    def __enter__(self) -> KindSpy:
        self.peer.proto = self
        return self

    def __exit__(self, *exc: object) -> None:
        self.peer.proto = self.proto


class Failures(list[SendFailure]):
    """An on_send_failure callback that can be awaited until enough reports came."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def __call__(self, failure: SendFailure) -> None:
        self.append(failure)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[list[SendFailure]], bool], timeout: float = 10.0) -> None:
        """Return once ``predicate(reports)`` holds; TimeoutError after ``timeout`` s."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

    async def wait(self, n: int, timeout: float = 10.0) -> list[SendFailure]:
        """The reports, once there are at least ``n``."""
        await self.wait_for(lambda reports: len(reports) >= n, timeout)
        return self


class Events:
    """A node listener (``subscribe_nodes`` / ``add_node_listener``) that queues what it is told."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.seen: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.seen.append(event)
        self.queue.put_nowait(event)

    async def next(self) -> Any:
        return await asyncio.wait_for(self.queue.get(), 10)
