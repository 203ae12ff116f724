"""Types of the Cython twin of ``casty.transport.local``."""

import asyncio
from collections.abc import Callable
from typing import Any

from casty.address import ActorAddress
from casty.transport.local import DROP_DEAD as DROP_DEAD
from casty.transport.local import DROP_EXPIRED as DROP_EXPIRED
from casty.transport.local import DROP_MAILBOX_FULL as DROP_MAILBOX_FULL
from casty.transport.local import DROP_NO_SUCH_ASK as DROP_NO_SUCH_ASK
from casty.transport.local import DROP_OVERFLOW as DROP_OVERFLOW
from casty.transport.local import DROP_PENDING_BYTES as DROP_PENDING_BYTES
from casty.transport.local import DROP_STOPPED as DROP_STOPPED
from casty.transport.local import DROP_TOO_MANY_PATHS as DROP_TOO_MANY_PATHS
from casty.transport.local import MessageTransport as MessageTransport
from casty.transport.mailbox import Mailbox, ReadState

__all__ = [
    "DROP_DEAD",
    "DROP_EXPIRED",
    "DROP_MAILBOX_FULL",
    "DROP_NO_SUCH_ASK",
    "DROP_OVERFLOW",
    "DROP_PENDING_BYTES",
    "DROP_STOPPED",
    "DROP_TOO_MANY_PATHS",
    "LocalTransport",
    "MessageTransport",
]

class LocalTransport:
    drops: dict[str, int]
    read_state: ReadState
    def __init__(
        self,
        *,
        max_pending_per_path: int = 64,
        max_pending_paths: int = 10_000,
        max_dead_paths: int = 100_000,
        max_pending_bytes: int = 8 * 1024 * 1024,
        pending_ttl: float = 5.0,
    ) -> None: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...
    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None: ...
    @property
    def dropped(self) -> int: ...
    @property
    def pending_bytes(self) -> int: ...
    def register_path_factory(self, prefix: str, factory: Callable[[str], None]) -> None: ...
    def register(self, path: str, handler: Callable[[Any], None]) -> None: ...
    def unregister(self, path: str) -> None: ...
    def is_dead(self, path: str) -> bool: ...
    def is_registered(self, path: str) -> bool: ...
    async def wait_for_path(self, path: str) -> None: ...
    def deliver(self, address: ActorAddress, msg: Any) -> None: ...
    def deliver_path(self, path: str, msg: Any, nbytes: int = -1) -> Mailbox | None: ...
