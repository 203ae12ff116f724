from collections.abc import Callable
from typing import Any

from casty.address import ActorAddress
from casty.ref import ActorRef
from casty.serialization import Serializer

__all__ = ["InboundMessageHandler", "OriginSink"]

class InboundMessageHandler:
    ref_factory: Callable[[ActorAddress], ActorRef[Any]] | None
    dropped: int
    reply_check: Callable[[str, Any], str | None] | None
    origin: Any
    read_state: Any
    def __init__(
        self,
        *,
        local: Any,
        serializer: Serializer,
        system_name: str,
        ref_factory: Callable[[ActorAddress], ActorRef[Any]] | None = None,
        allow_system_paths: bool = False,
    ) -> None: ...
    def sink_for(self, origin: Any) -> Callable[[Any], None]: ...
    @property
    def cached_targets(self) -> int: ...
    async def on_message(self, data: bytes) -> None: ...
    def on_frame(self, data: Any) -> None: ...

class OriginSink:
    def on_frame(self, data: Any) -> None: ...
