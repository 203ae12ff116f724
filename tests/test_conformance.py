"""Seed conformance (issue 14): a program written for casty 0.21's transport runs unchanged.

Every piece of the reference page (``seed/transport-api.txt``) is wired by hand, as casty
0.21's clustered system does: ``ActorSystem`` + ``LocalTransport`` +
``InboundMessageHandler(local=, serializer=, system_name=)`` + ``tcp_transport(cfg, inbound,
serializer=ser)`` spawned as an actor + ``RemoteTransport`` with exactly the page's keyword
arguments.  Two such nodes talk over loopback with each serializer, on uvloop and on plain
asyncio: tells (in order, across the RemoteTransport's switch to the direct send path), asks,
refs inside messages and ``node_id``-addressed messages.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

from casty import (
    ActorAddress,
    ActorRef,
    ActorSystem,
    GetPort,
    InboundMessageHandler,
    JsonSerializer,
    LocalTransport,
    MessageEnvelope,
    MsgpackSerializer,
    RemoteTransport,
    SendFailure,
    TcpTransportConfig,
    tcp_transport,
)
from tests.remote_helpers import Collector, Echo, Ping, echo_behavior, registry

SERIALIZERS = {"msgpack": MsgpackSerializer, "json": JsonSerializer}
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.SelectorEventLoop,
}


class PageSystem(ActorSystem):
    """An ActorSystem whose refs carry its host:port once its RemoteTransport is wired,
    as casty 0.21's clustered system stamps them (a ref that travels must name its node)."""

    remote: RemoteTransport | None = None
    port = 0

    def address_of(self, path: str) -> ActorAddress:
        if self.remote is None:
            return super().address_of(path)
        return ActorAddress(self.name, path, "127.0.0.1", self.port)

    def make_ref(self, address: ActorAddress) -> ActorRef[Any]:
        return super().make_ref(address) if self.remote is None else self.remote.make_ref(address)


async def page_node(
    name: str, serializer: str, *, address_map: Any = None, **remote_kw: Any
) -> tuple[PageSystem, RemoteTransport]:
    """One node wired from the page's pieces, with the page's RemoteTransport arguments only.

    Returns right after building the RemoteTransport (no await after it), so a caller that
    sends at once sends before the TCP actor has shared its node.
    """
    ser = SERIALIZERS[serializer](registry())
    system = PageSystem(name, local_transport=LocalTransport())
    inbound = InboundMessageHandler(local=system.local, serializer=ser, system_name=name)
    cfg = TcpTransportConfig("127.0.0.1", 0, connect_timeout=2.0,
                             **({} if address_map is None else {"address_map": address_map}))
    tcp = system.spawn(tcp_transport(cfg, inbound, serializer=ser), "tcp")
    system.port = await system.ask(tcp, lambda r: GetPort(r), timeout=5)
    remote = RemoteTransport(local=system.local, tcp=tcp, local_host="127.0.0.1", local_port=system.port,
                             system_name=name, **remote_kw)
    inbound.ref_factory = remote.make_ref
    system.remote = remote
    return system, remote


def run(loop: str, main: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(main(), 30))


@pytest.fixture(params=sorted(LOOPS))
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=sorted(SERIALIZERS))
def serializer(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- point 1: the serializer given to tcp_transport is the one that sends ----------------------


def test_tells_asks_refs_and_node_ids_across_two_hand_wired_nodes(loop: str, serializer: str) -> None:
    async def main() -> None:
        b, _ = await page_node("b", serializer)
        sink = Collector()
        b.spawn(sink.behavior(), "sink")
        b.spawn(echo_behavior(), "echo")
        a, remote = await page_node("a", serializer)
        to_sink = remote.make_ref(ActorAddress("b", "/user/sink", "127.0.0.1", b.port))
        # Tells in order while the transport moves from DeliverToNode (the actor serializes)
        # to the direct path: the first ones go before the actor has shared its node.
        for i in range(300):
            to_sink.tell(Ping(i, "x" * (i % 7)))
            if i % 25 == 24:
                await asyncio.sleep(0)
        received = await sink.wait(300)
        assert [(p.seq, p.text) for p in received] == [(i, "x" * (i % 7)) for i in range(300)]
        assert remote._relayed > 0 and remote._node is not None  # both paths were taken

        # An ask: its reply ref travels inside the message and is rebuilt by b's ref_factory.
        echo = remote.make_ref(ActorAddress("b", "/user/echo", "127.0.0.1", b.port))
        assert await a.ask(echo, lambda r: Echo("hi", r), timeout=5) == "hi"

        # A ref to one of a's actors inside a message: b's echo answers into it.
        replies = Collector()
        reply_ref = a.spawn(replies.behavior(), "replies")
        for text in ("one", "two", "three"):
            echo.tell(Echo(text, reply_ref))
        assert await replies.wait(3) == ["one", "two", "three"]

        # node_id-addressed messages resolve through the node index.
        remote.update_node_index({"node-b": ("127.0.0.1", b.port)})
        by_id = remote.make_ref(ActorAddress("b", "/user/sink", node_id="node-b"))
        by_id.tell(Ping(1000))
        assert (await sink.wait(301))[-1] == Ping(1000)
        assert await a.ask(remote.make_ref(ActorAddress("b", "/user/echo", node_id="node-b")),
                           lambda r: Echo("by id", r), timeout=5) == "by id"
        await a.shutdown()
        await b.shutdown()

    run(loop, main)


def test_the_page_path_reports_what_it_cannot_serialize(caplog: pytest.LogCaptureFixture) -> None:
    class NotRegistered:
        pass

    async def main() -> None:
        failures: list[SendFailure] = []
        b, _ = await page_node("b", "msgpack")
        sink = Collector()
        b.spawn(sink.behavior(), "sink")
        a, remote = await page_node("a", "msgpack", on_send_failure=failures.append)
        target = ActorAddress("b", "/user/sink", "127.0.0.1", b.port)
        remote.deliver(target, NotRegistered())  # before the handover: the actor serializes
        remote.deliver(target, Ping(1))
        await sink.wait(1)
        remote.deliver(target, NotRegistered())  # after it: serialized here
        remote.deliver(target, Ping(2))
        assert await sink.wait(2) == [Ping(1), Ping(2)]
        assert [f.reason for f in failures] == ["serialization", "serialization"]
        assert all("NotRegistered" in f.detail for f in failures)
        await a.shutdown()
        await b.shutdown()

    with caplog.at_level(logging.WARNING, logger="casty"):
        run("uvloop", main)
    assert sum("NotRegistered" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR) >= 2


class _FakeNode:
    """Records what reaches the node, in order, as the messages it carried."""

    def __init__(self, ser: Any) -> None:
        self.ser = ser
        self.sent: list[Any] = []

    def add_failure_listener(self, listener: Any) -> None:
        pass

    def connection_table(self) -> None:
        return None  # no routes to write to directly: every message reaches send_message_to

    def header_table(self, key: tuple[str, int]) -> None:
        return None  # no compact headers

    def send_message_to(self, key: tuple[str, int], envelope: Any, kind: int = 1) -> bool:
        assert kind == 1  # header_table said no compact headers
        data = b"".join(envelope) if isinstance(envelope, list) else envelope
        self.sent.append(self.ser.deserialize(MessageEnvelope.from_bytes(data).payload))
        return True


@pytest.mark.parametrize("node_given", [False, True])
def test_the_handover_to_the_direct_path_keeps_send_order(node_given: bool) -> None:
    # Each step of the handover, driven by hand: messages told as DeliverToNode before the
    # actor shared its serializer (and node), then held until those reached the node, then
    # sent direct.  Given a node but no serializer, the transport keeps that node.
    from casty import DeliverToNode
    from casty._impl import EnvelopeWriter
    from casty.transport.messages import ShareNode

    ser = MsgpackSerializer(registry())
    node = _FakeNode(ser)
    told: list[Any] = []
    tcp = type("Tcp", (), {"tell": staticmethod(told.append)})()
    remote = RemoteTransport(local=None, tcp=tcp, local_host="127.0.0.1", local_port=1, system_name="a",
                             **({"node": node} if node_given else {}))  # type: ignore[arg-type]
    target = ActorAddress("b", "/user/x", "127.0.0.1", 2)
    assert [type(m) for m in told] == [ShareNode]
    remote.deliver(target, Ping(0))
    remote.deliver(target, Ping(1))
    assert [type(m) for m in told] == [ShareNode, DeliverToNode, DeliverToNode]

    actor_node = _FakeNode(ser) if node_given else node
    told.pop(0).receiver(actor_node, EnvelopeWriter(ser))  # the actor handles ShareNode: first in its mailbox
    remote.deliver(target, Ping(2))  # must not overtake Ping(0), Ping(1), still in the mailbox
    assert node.sent == [] and [type(m) for m in told] == [DeliverToNode, DeliverToNode, ShareNode]
    for relayed in told[:2]:  # the actor hands them to its node, then answers the second ShareNode
        actor_node.send_message_to((relayed.host, relayed.port), EnvelopeWriter(ser).encode(
            relayed.target, relayed.sender, relayed.msg))
    assert node.sent == ([] if node_given else [Ping(0), Ping(1)])
    told[2].receiver(actor_node, EnvelopeWriter(ser))
    remote.deliver(target, Ping(3))
    assert actor_node.sent[:2] == [Ping(0), Ping(1)]
    assert node.sent[-2:] == [Ping(2), Ping(3)] and len(node.sent) == (2 if node_given else 4)
    assert len(told) == 3  # nothing more went through the actor


def test_a_tcp_actor_that_does_not_share_its_node_keeps_getting_deliver_to_node() -> None:
    # A casty 0.21-style TCP actor knows DeliverToNode only: the transport never goes direct.
    from casty import Behaviors, DeliverToNode

    async def main() -> None:
        system = ActorSystem("a")
        got: list[Any] = []
        four = asyncio.Event()

        async def receive(ctx: Any, msg: Any) -> Any:
            got.append(msg)
            if len(got) == 4:
                four.set()
            return Behaviors.same()

        tcp = system.spawn(Behaviors.receive(receive), "tcp")
        remote = RemoteTransport(local=system.local, tcp=tcp, local_host="127.0.0.1", local_port=1,
                                 system_name="a")
        for i in range(3):
            remote.deliver(ActorAddress("b", "/user/x", "127.0.0.1", 2), Ping(i))
        await asyncio.wait_for(four.wait(), 5)  # ShareNode, which it does not know, then the three
        delivers = [m for m in got if isinstance(m, DeliverToNode)]
        assert [(m.host, m.port, m.msg, m.target, m.sender) for m in delivers] == [
            ("127.0.0.1", 2, Ping(i), "casty://b@127.0.0.1:2/user/x", "casty://a@127.0.0.1:1/")
            for i in range(3)
        ]
        await system.shutdown()

    run("uvloop", main)


# -- point 2: address_map in casty 0.21's form (one tuple) and the two-argument form -----------


def test_address_map_default_is_the_identity_on_one_tuple() -> None:
    cfg = TcpTransportConfig("127.0.0.1", 0)
    assert cfg.address_map(("h", 1)) == ("h", 1)  # type: ignore[call-arg,arg-type]
    assert cfg.map_address(("h", 1)) == ("h", 1)


def _two(host: str, port: int) -> tuple[str, int]:
    return f"{host}.two", port + 2


def _one(address: tuple[str, int]) -> tuple[str, int]:
    return f"{address[0]}.one", address[1] + 1


class _Mapper:
    def method(self, address: tuple[str, int]) -> tuple[str, int]:
        return _one(address)

    def __call__(self, host: str, port: int) -> tuple[str, int]:
        return _two(host, port)


@pytest.mark.parametrize(
    ("address_map", "expected"),
    [
        (_one, ("h.one", 8)),
        (lambda address: _one(address), ("h.one", 8)),
        (_Mapper().method, ("h.one", 8)),
        (lambda *address: _one(address[0]), ("h.one", 8)),  # *args: casty 0.21's form
        (_two, ("h.two", 9)),
        (_Mapper(), ("h.two", 9)),
        (functools.partial(lambda tag, h, p: _two(h, p), "x"), ("h.two", 9)),
        (lambda h, p, extra=0: _two(h, p), ("h.two", 9)),
    ],
)
def test_address_map_forms(address_map: Any, expected: tuple[str, int]) -> None:
    assert TcpTransportConfig("127.0.0.1", 0, address_map=address_map).map_address(("h", 7)) == expected


@pytest.mark.parametrize("address_map", [lambda: ("h", 1), lambda a, b, c: ("h", 1), lambda a, *, k: a, "h:1"])
def test_address_map_that_fits_neither_form_is_refused_at_config_time(address_map: Any) -> None:
    with pytest.raises(ValueError, match=r"TcpTransportConfig\.address_map must be a callable taking one") as err:
        TcpTransportConfig("127.0.0.1", 0, address_map=address_map)
    assert repr(address_map) in str(err.value)


def test_address_map_form_is_read_once_not_per_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    reads: list[object] = []
    real = inspect.signature

    def counting(fn: Any, *args: Any, **kw: Any) -> inspect.Signature:
        reads.append(fn)
        return real(fn, *args, **kw)

    cfg = TcpTransportConfig("127.0.0.1", 0, address_map=_two)
    monkeypatch.setattr(inspect, "signature", counting)
    for port in range(5):
        assert cfg.map_address(("h", port)) == ("h.two", port + 2)
    assert reads == []


def test_a_casty_021_address_map_rewrites_outbound_connects(loop: str) -> None:
    async def main() -> None:
        b, _ = await page_node("b", "msgpack")
        sink = Collector()
        b.spawn(sink.behavior(), "sink")
        mapping = {("b.example.invalid", 1): ("127.0.0.1", b.port)}
        seen: list[tuple[str, int]] = []

        def address_map(address: tuple[str, int]) -> tuple[str, int]:
            seen.append(address)
            return mapping.get(address, address)

        a, remote = await page_node("a", "msgpack", address_map=address_map)
        remote.make_ref(ActorAddress.from_uri("casty://b@b.example.invalid:1/user/sink")).tell(Ping(5))
        assert await sink.wait(1) == [Ping(5)]
        assert seen == [("b.example.invalid", 1)]
        await a.shutdown()
        await b.shutdown()

    run(loop, main)


# -- point 3: a message for an unknown node_id is logged, callback or not ----------------------


@pytest.mark.parametrize("with_callback", [False, True])
def test_unknown_node_id_is_logged_with_or_without_a_callback(
    caplog: pytest.LogCaptureFixture, with_callback: bool
) -> None:
    failures: list[SendFailure] = []

    async def main() -> None:
        kw = {"on_send_failure": failures.append} if with_callback else {}
        a, remote = await page_node("a", "msgpack", **kw)
        remote.update_node_index({"node-b": ("127.0.0.1", 1)})
        remote.make_ref(ActorAddress("b", "/user/sink", node_id="node-x")).tell(Ping(1))
        await a.shutdown()

    with caplog.at_level(logging.WARNING, logger="casty"):
        run("uvloop", main)
    drops = [r for r in caplog.records if r.levelno >= logging.WARNING and "'node-x'" in r.getMessage()]
    assert len(drops) == 1 and "unknown_node" in drops[0].getMessage()
    assert drops[0].name.startswith("casty.")
    assert [f.reason for f in failures] == (["unknown_node"] if with_callback else [])
