"""Mailbox twins: what the LocalTransport delivers into, and how it wakes an idle actor."""

from __future__ import annotations

import asyncio
import types

from casty.address import ActorAddress


async def test_put_appends_in_order_and_wakes_the_waiter_once(impl: types.SimpleNamespace) -> None:
    box = impl.Mailbox()
    loop = asyncio.get_running_loop()
    waiter = box.wait(loop)
    assert not waiter.done()
    box.put(1)
    assert waiter.done() and list(box.queue) == [1]
    box(2)  # calling it is putting
    assert list(box.queue) == [1, 2]
    again = box.wait(loop)
    box.wake()
    assert again.done() and list(box.queue) == [1, 2]  # woken without a message
    box.wake()  # nothing waits: no effect


async def test_a_settled_or_forgotten_waiter_is_left_alone(impl: types.SimpleNamespace) -> None:
    box = impl.Mailbox()
    loop = asyncio.get_running_loop()
    cancelled = box.wait(loop)
    cancelled.cancel()
    box.put("a")  # must not raise on the cancelled future
    forgotten = box.wait(loop)
    box.forget_waiter()
    box.put("b")
    assert cancelled.cancelled() and not forgotten.done()
    assert list(box.queue) == ["a", "b"]


async def test_eager_is_offered_only_what_reaches_a_waiting_mailbox(impl: types.SimpleNamespace) -> None:
    box = impl.Mailbox()
    transport = impl.LocalTransport()
    transport.register("/user/a", box)
    offered: list[str] = []
    box.eager = lambda msg: offered.append(msg) or msg.startswith("taken")
    transport.deliver_path("/user/a", "busy")  # nothing waits: queued, not offered
    waiter = box.wait(asyncio.get_running_loop())
    transport.deliver_path("/user/a", "taken")  # taken: not queued, the waiter still waits
    box.put("taken too")
    assert offered == ["taken", "taken too"] and not waiter.done()
    transport.deliver_path("/user/a", "declined")  # declined: queued, and the waiter woken
    assert offered == ["taken", "taken too", "declined"] and waiter.done()
    assert list(box.queue) == ["busy", "declined"]
    box.eager = None
    again = box.wait(asyncio.get_running_loop())
    box.put("plain")
    assert again.done() and list(box.queue) == ["busy", "declined", "plain"]


async def test_the_local_transport_delivers_into_a_mailbox(impl: types.SimpleNamespace) -> None:
    transport = impl.LocalTransport()
    box = impl.Mailbox()
    transport.register("/user/a", box)
    waiter = box.wait(asyncio.get_running_loop())
    transport.deliver(ActorAddress("s", "/user/a"), "one")
    transport.deliver_path("/user/a", "two")
    assert waiter.done() and list(box.queue) == ["one", "two"]
    transport.deliver(ActorAddress("s", "/user/b"), "early")  # buffered until registered
    late = impl.Mailbox()
    transport.register("/user/b", late)
    assert list(late.queue) == ["early"]


async def test_actors_run_on_the_chosen_mailbox() -> None:
    from casty import _impl
    from casty.behavior import Behaviors
    from casty.system import ActorSystem

    async def echo(ctx: object, msg: tuple[str, object]) -> object:
        msg[1].tell(msg[0])  # type: ignore[attr-defined]
        return Behaviors.same()

    async with ActorSystem("boxes") as system:
        ref = system.spawn(Behaviors.receive(echo), "echo")
        assert type(system._cells["/user/echo"].mailbox) is _impl.Mailbox
        assert [await system.ask(ref, lambda r, i=i: (i, r)) for i in range(3)] == [0, 1, 2]
