from collections.abc import Callable
from typing import Any

from casty.address import ActorAddress
from casty.ref import ActorRef
from casty.serialization import Serializer

class InboundMessageHandler:
    ref_factory: Callable[[ActorAddress], ActorRef[Any]] | None
    dropped: int
    def __init__(
        self,
        *,
        local: Any,
        serializer: Serializer,
        system_name: str,
        ref_factory: Callable[[ActorAddress], ActorRef[Any]] | None = None,
    ) -> None: ...
    @property
    def cached_targets(self) -> int: ...
    async def on_message(self, data: bytes) -> None: ...
    def on_frame(self, data: Any) -> None: ...
