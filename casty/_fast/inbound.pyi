from collections.abc import Callable
from typing import Any

from casty.address import ActorAddress
from casty.ref import ActorRef
from casty.serialization import Serializer
from casty.transport.compact_codec import HeaderNames

__all__ = ["InboundMessageHandler", "OriginSink"]

class InboundMessageHandler:
    ref_factory: Callable[[ActorAddress], ActorRef[Any]] | None
    dropped: int
    reply_check: Callable[[str, Any], str | None] | None
    origin: Any
    read_state: Any
    compact_headers: bool
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
    def on_compact(self, target: str, body: Any) -> None: ...

class OriginSink:
    names: HeaderNames
    def on_frame(self, data: Any) -> None: ...
    def on_entry(self, body: Any) -> None: ...
    def on_compact(self, body: Any) -> None: ...
