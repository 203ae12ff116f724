"""A casty 0.21 (v1) peer that keeps one connection per pair, played by raw sockets.

casty 0.21 closes a connection dialed to it, right after its handshake and unread,
when it holds its own connection to the dialer and its (host, port) is the smaller.
Our node then sends over that connection of its own (docs/architecture.md,
"Connections"), but only with that close as the proof: a node that keeps our dial
gets our traffic on it, and no inbound claim is chosen while two make it.
tests/test_interop_021.py runs the same against the real casty 0.21.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from casty import FRAME_HANDSHAKE, FRAME_MESSAGE, MessageEnvelope, MsgpackSerializer, RemoteActorSystem
from tests.remote_helpers import Echo, Failures, Ping, registry
from tests.test_identity import nothing_more
from tests.test_remote import frame, read_frame, wait_until

#: our node's host: larger than 127.0.0.1, so a 0.21 node there keeps its own connection
OURS = "127.0.0.2"
SERIALIZER = MsgpackSerializer(registry())


def v1_hello(host: str, port: int) -> bytes:
    return frame(FRAME_HANDSHAKE, json.dumps({"host": host, "port": port}).encode())


def decode(body: bytes) -> tuple[str, Any]:
    env = MessageEnvelope.from_bytes(body)
    return env.target, SERIALIZER.deserialize(env.payload, ref_factory=lambda address: address)


class FakeV1Node:
    """Listens on 127.0.0.1 and answers every dial with a v1 handshake; then closes it
    unread, as casty 0.21 does (``keep=False``), or keeps it and records its message frames."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.port = 0
        self.closed = 0
        self.received: list[Any] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeV1Node:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            kind, _body = await read_frame(reader)
            assert kind == FRAME_HANDSHAKE
            writer.write(v1_hello("127.0.0.1", self.port))
            await writer.drain()
            if not self.keep:
                self.closed += 1
                return
            while True:
                kind, body = await read_frame(reader)
                if kind == FRAME_MESSAGE:
                    self.received.append(decode(body)[1])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def v1_connection(
    to: RemoteActorSystem, port: int
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection to ``to`` whose v1 handshake claims 127.0.0.1:``port``."""
    reader, writer = await asyncio.open_connection(OURS, to.address.port)
    writer.write(v1_hello("127.0.0.1", port))
    assert (await read_frame(reader))[0] == FRAME_HANDSHAKE
    try:
        yield reader, writer
    finally:
        writer.close()


def ours(**kw: Any) -> RemoteActorSystem:
    return RemoteActorSystem("a", OURS, 0, registry=registry(), **kw)


async def test_a_v1_node_that_closes_our_dial_gets_our_traffic_on_its_own_connection() -> None:
    failures = Failures()
    async with FakeV1Node(keep=False) as x, ours(on_send_failure=failures) as a, v1_connection(a, x.port) as (
        reader,
        writer,
    ):
        base = f"casty://x@127.0.0.1:{x.port}"
        sink = a.ref(f"{base}/user/sink")
        for i in range(50):
            sink.tell(Ping(i))
        asking = asyncio.ensure_future(a.ask(a.ref(f"{base}/user/echo"), lambda r: Echo("hi", r), timeout=10))
        async with asyncio.timeout(10):
            got = [decode((await read_frame(reader))[1]) for _ in range(51)]
        assert [msg.seq for _, msg in got[:50]] == list(range(50))
        target, echo = got[50]
        assert (target, echo.text) == (f"{base}/user/echo", "hi")
        # x answers the ask on the same connection, as 0.21 would
        reply = MessageEnvelope(echo.reply_to.to_uri(), f"{base}/", SERIALIZER.serialize("hi back"), "str")
        writer.write(frame(FRAME_MESSAGE, reply.to_bytes()))
        assert await asyncio.wait_for(asking, 10) == "hi back"
        assert (x.closed, a.stats().drops, list(failures)) == (1, {}, [])


async def test_a_v1_node_that_keeps_our_dial_gets_our_traffic_on_it_and_a_claimant_nothing() -> None:
    async with FakeV1Node(keep=True) as x, ours(handshake_timeout=0.5) as a, v1_connection(a, x.port) as (
        claimant,
        _writer,
    ):
        sink = a.ref(f"casty://x@127.0.0.1:{x.port}/user/sink")
        for i in range(20):
            sink.tell(Ping(i))
        await wait_until(lambda: len(x.received) == 20)
        assert [p.seq for p in x.received] == list(range(20))
        assert await nothing_more(claimant)
        assert a.stats().drops == {}


async def test_two_v1_claims_to_one_address_get_none_of_its_traffic() -> None:
    async with FakeV1Node(keep=False) as x, ours() as a, v1_connection(a, x.port) as (r1, _w1), v1_connection(
        a, x.port
    ) as (r2, _w2):
        sink = a.ref(f"casty://x@127.0.0.1:{x.port}/user/sink")
        for i in range(20):
            sink.tell(Ping(i))
        await wait_until(lambda: x.closed == 1)
        assert await nothing_more(r1)
        assert await nothing_more(r2)
