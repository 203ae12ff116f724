"""No silent vanishing (issue 19, item 2): each drop is counted and logged, rate-limited.

A message to an address naming another actor system, a remote tell of a value that
cannot be serialized, and messages still queued when an actor stops.
"""

from __future__ import annotations

import logging

import pytest

from casty import ActorSystem, AskFailed, Behaviors
from tests.remote_helpers import Collector, Echo, Ping, node


def messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == logger]


async def test_a_tell_naming_another_system_on_this_node_is_dropped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Collector()
    async with node("kv") as kv:
        kv.spawn(sink.behavior(), "sink")
        port = kv.address.port
        wrong = kv.ref(f"casty://other@127.0.0.1:{port}/user/sink")
        hostless = kv.ref("casty://other/user/sink")
        with caplog.at_level(logging.DEBUG, logger="casty.transport.remote"):
            wrong.tell(Ping(1))
            hostless.tell(Ping(2))
            hostless.tell(Ping(3))
            kv.ref("/user/sink").tell(Ping(4))
            assert await sink.wait(1) == [Ping(4)]  # delivered in order: the others were dropped
        assert kv.remote.drops == {"wrong_system": 3}
        assert messages(caplog, "casty.transport.remote") == [
            (logging.WARNING, f"dropped a message (wrong_system: casty://other@127.0.0.1:{port}/user/sink routes "
                              f"to this node, whose actor system is 'kv', not 'other'); 1 dropped for this reason "
                              f"so far"),
            (logging.WARNING, "dropped a message (wrong_system: casty://other/user/sink routes to this node, whose "
                              "actor system is 'kv', not 'other'); 2 dropped for this reason so far"),
            (logging.DEBUG, "dropped a message (wrong_system: casty://other/user/sink routes to this node, whose "
                            "actor system is 'kv', not 'other')"),
        ]


async def test_an_ask_naming_another_system_on_this_node_fails_at_once() -> None:
    async with node("kv") as kv:
        kv.spawn(Behaviors.ignore(), "echo")
        with pytest.raises(AskFailed) as info:
            await kv.ask(kv.ref("casty://other/user/echo"), lambda r: Echo("hi", r), timeout=60)
        assert info.value.reason == "send_failed"
        assert info.value.detail == (
            "wrong_system: casty://other/user/echo routes to this node, whose actor system is 'kv', not 'other'"
        )


async def test_a_message_to_a_peer_naming_another_system_is_logged_there(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Collector()
    async with node("a") as a, node("b") as b:
        b.spawn(sink.behavior(), "sink")
        host, port = b.address.host, b.address.port
        with caplog.at_level(logging.WARNING, logger="casty.transport.inbound"):
            a.ref(f"casty://nope@{host}:{port}/user/sink").tell(Ping(1))
            a.ref(b.address.with_path("/user/sink")).tell(Ping(2))  # same connection, after it
            assert await sink.wait(1) == [Ping(2)]
        assert messages(caplog, "casty.transport.inbound") == [
            (logging.WARNING, f"dropped an inbound message: target 'casty://nope@{host}:{port}/user/sink' is not an "
                              f"actor of system 'b' (1 dropped so far)"),
        ]


async def test_a_remote_tell_that_cannot_be_serialized_is_counted_and_logged_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class NotRegistered:
        pass

    sink = Collector()
    async with node("a") as a, node("b") as b:
        b.spawn(sink.behavior(), "sink")
        target = b.address.with_path("/user/sink")
        ref = a.ref(target)
        with caplog.at_level(logging.DEBUG, logger="casty.transport.remote"):
            for _ in range(3):
                ref.tell(NotRegistered())
        ref.tell(Ping(1))
        assert await sink.wait(1) == [Ping(1)]
        assert a.remote.drops == {"serialization": 3}
        logged = messages(caplog, "casty.transport.remote")
        assert [level for level, _ in logged] == [logging.ERROR, logging.ERROR, logging.DEBUG]
        head = f"dropped a message to {target.to_uri()} (serialization: "
        assert all(text.startswith(head) and "NotRegistered: cannot serialize object of type" in text
                   for _, text in logged), logged
        assert logged[0][1].endswith("; 1 dropped for this reason so far")
        assert logged[1][1].endswith("; 2 dropped for this reason so far")


async def test_messages_queued_when_an_actor_stops_are_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with ActorSystem("stops") as system:
        ref = system.spawn(Behaviors.ignore(), "s")
        with caplog.at_level(logging.WARNING, logger="casty.transport.local"):
            for msg in ("x", "y", "z"):
                ref.tell(msg)  # queued: the actor's task has not run yet
            await system.stop(ref)
        assert system.local.drops["stopped"] == 3
        assert messages(caplog, "casty.transport.local") == [
            (logging.WARNING, "dropped 3 messages to /user/s: the actor stopped before handling them (stopped); "
                              "3 dropped for this reason so far"),
        ]
