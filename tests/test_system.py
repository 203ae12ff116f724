"""ActorSystem: spawn, ordering, ask, lookup, shutdown, and casty.run."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import casty
from casty import AskFailed
from casty.actor import BATCH
from casty.address import ActorAddress
from casty.behavior import Behavior, Behaviors
from casty.context import ActorContext
from casty.ref import ActorRef, LocalActorRef
from casty.system import ActorSystem

WAIT = 5.0


@dataclass(frozen=True)
class Get:
    reply_to: ActorRef[Any]


@dataclass(frozen=True)
class Echo:
    text: str
    reply_to: ActorRef[Any]


def echo() -> Behavior[Any]:
    async def receive(ctx: Any, msg: Echo) -> Behavior[Any]:
        msg.reply_to.tell(msg.text)
        return Behaviors.same()

    return Behaviors.receive(receive)


def recorder(into: list[Any], done: asyncio.Future[None], count: int) -> Behavior[Any]:
    async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
        into.append(msg)
        if len(into) == count:
            done.set_result(None)
        return Behaviors.same()

    return Behaviors.receive(receive)


def future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


# -- ordering --------------------------------------------------------------------------------------


async def test_thousand_messages_arrive_in_order() -> None:
    got: list[int] = []
    done = future()
    async with ActorSystem("t") as system:
        ref = system.spawn(recorder(got, done, 1000), "r")
        for i in range(1000):
            ref.tell(i)
        await asyncio.wait_for(done, WAIT)
    assert got == list(range(1000))


async def test_order_holds_when_handlers_await() -> None:
    got: list[int] = []
    done = future()

    async def receive(ctx: Any, msg: int) -> Behavior[Any]:
        if msg % 7 == 0:
            await asyncio.sleep(0)  # a suspension in the middle must not reorder
        got.append(msg)
        if len(got) == 1000:
            done.set_result(None)
        return Behaviors.same()

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.receive(receive), "r")
        for i in range(500):
            ref.tell(i)
        await asyncio.sleep(0)
        for i in range(500, 1000):
            ref.tell(i)
        await asyncio.wait_for(done, WAIT)
    assert got == list(range(1000))


async def test_one_message_at_a_time() -> None:
    active = 0
    peak = 0
    done = future()

    async def receive(ctx: Any, msg: int) -> Behavior[Any]:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0)
        active -= 1
        if msg == 99:
            done.set_result(None)
        return Behaviors.same()

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.receive(receive), "r")
        for i in range(100):
            ref.tell(i)
        await asyncio.wait_for(done, WAIT)
    assert peak == 1


async def test_messages_told_before_spawn_are_delivered() -> None:
    got: list[str] = []
    done = future()
    async with ActorSystem("t") as system:
        early: LocalActorRef[str] = LocalActorRef(system.address_of("/user/late"), system.local)
        early.tell("first")
        early.tell("second")
        system.spawn(recorder(got, done, 2), "late")
        await asyncio.wait_for(done, WAIT)
    assert got == ["first", "second"]


async def test_self_feeding_actor_does_not_starve_the_loop() -> None:
    ticked = future()
    verdict = future()
    count = 0

    async def spin(ctx: ActorContext[Any], msg: Any) -> Behavior[Any]:
        nonlocal count
        count += 1
        if ticked.done() or count == 50_000:  # a starved loop never runs the callback
            verdict.set_result(ticked.done())
            return Behaviors.stopped()
        ctx.self.tell(msg)  # the mailbox never empties
        return Behaviors.same()

    async with ActorSystem("t") as system:
        system.spawn(Behaviors.receive(spin), "spinner").tell("go")
        asyncio.get_running_loop().call_soon(ticked.set_result, None)
        assert await asyncio.wait_for(verdict, WAIT) is True
        assert count <= 2 * BATCH


# -- ask -------------------------------------------------------------------------------------------

#: an ask's reply URI under a node's URI head: a sequence number and 64 random bits
ASK_URI = r"{}/temp/ask-[0-9]+-[0-9a-f]{{16}}"


async def test_reply_paths_are_unguessable_and_never_reused() -> None:
    async with ActorSystem("t") as system:
        ref = system.spawn(echo(), "echo")
        paths: list[str] = []
        for i in range(600):  # past one batch of drawn randomness
            await system.ask(ref, lambda r, i=i: paths.append(r.address.path) or Echo(i, r))
        assert len(set(paths)) == 600
        tokens = [int(p.rsplit("-", 1)[1], 16) for p in paths]
        assert len(set(tokens)) == 600
        # not a counter: the random parts of consecutive asks are not close to each other
        assert sum(abs(a - b) < 2**32 for a, b in itertools.pairwise(tokens)) < 3


async def test_ask_returns_the_reply_and_cleans_up() -> None:
    async with ActorSystem("t") as system:
        ref = system.spawn(echo(), "echo")
        paths: list[str] = []

        def make(text: str) -> Callable[[ActorRef[Any]], Echo]:
            def build(r: ActorRef[Any]) -> Echo:
                paths.append(r.address.path)
                return Echo(text, r)
            return build

        assert await system.ask(ref, make("hello")) == "hello"
        assert await system.ask(ref, make("again"), timeout=1) == "again"
        assert len(set(paths)) == 2
        assert not any(system.local.is_registered(p) for p in paths)


async def test_ask_reply_ref_is_built_by_the_system() -> None:
    seen = future()

    async def receive(ctx: Any, msg: Get) -> Behavior[Any]:
        seen.set_result(msg.reply_to)
        msg.reply_to.tell("ok")
        return Behaviors.same()

    async with ActorSystem("t") as system:
        assert await system.ask(system.spawn(Behaviors.receive(receive), "a"), Get) == "ok"
        reply_to = seen.result()
        assert isinstance(reply_to, LocalActorRef)
        assert re.fullmatch(ASK_URI.format("casty://t"), reply_to.id), reply_to.id


async def test_ask_timeout_names_target_and_cleans_up() -> None:
    async with ActorSystem("t") as system:
        silent = system.spawn(Behaviors.ignore(), "silent")
        registered: list[bool] = []

        seen_paths: list[str] = []

        def make(reply_to: ActorRef[Any]) -> Get:
            registered.append(system.local.is_registered(reply_to.address.path))
            seen_paths.append(reply_to.address.path)
            return Get(reply_to)

        with pytest.raises(TimeoutError) as info:
            await system.ask(silent, make, timeout=0.05)
        assert "casty://t/user/silent" in str(info.value)
        assert "0.05" in str(info.value)
        assert isinstance(info.value, asyncio.TimeoutError)
        assert registered == [True]
        [path] = seen_paths
        assert not system.local.is_registered(path)
        # a late reply to the expired path is dropped, and counted
        before = system.local.drops["dead"]
        late: LocalActorRef[str] = LocalActorRef(system.address_of(path), system.local)
        late.tell("late")
        assert system.local.drops["dead"] == before + 1


async def test_ask_to_a_dead_actor_fails_at_once() -> None:
    async with ActorSystem("t") as system:
        ref = system.spawn(echo(), "echo")
        await system.stop(ref)
        before = system.local.drops["dead"]
        made: list[Any] = []
        with pytest.raises(AskFailed) as info:
            await system.ask(ref, lambda r: made.append(r) or Echo("anyone?", r), timeout=60)
        assert (info.value.target, info.value.reason) == ("casty://t/user/echo", "dead_target")
        assert str(info.value) == "ask to casty://t/user/echo failed (dead_target): no actor lives at /user/echo"
        assert made == [] and system.local.drops["dead"] == before  # nothing was sent


async def test_an_ask_fails_at_once_when_the_asked_actor_stops() -> None:
    async def quit_on_ask(ctx: Any, msg: Any) -> Behavior[Any]:
        return Behaviors.stopped()

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.receive(quit_on_ask), "quitter")
        with pytest.raises(AskFailed) as info:
            await asyncio.wait_for(system.ask(ref, lambda r: Echo("bye", r), timeout=60), 5)
        assert info.value.reason == "target_stopped"
        assert "/user/quitter stopped before it replied" in str(info.value)
        # an ask answered before its actor stops is not failed
        assert await system.ask(system.spawn(echo(), "e"), lambda r: Echo("ok", r)) == "ok"


def test_ask_failed_pickles_and_is_a_runtime_error() -> None:
    import pickle

    err = AskFailed("casty://a/user/x", "send_failed", "connect_failed: refused")
    back = pickle.loads(pickle.dumps(err))
    assert (back.target, back.reason, back.detail, str(back)) == (err.target, err.reason, err.detail, str(err))
    assert isinstance(err, RuntimeError) and not isinstance(err, TimeoutError)


async def test_ask_cleans_up_when_message_factory_raises() -> None:
    paths: list[str] = []

    def broken(reply_to: ActorRef[Any]) -> Any:
        paths.append(reply_to.address.path)
        raise KeyError("nope")

    async with ActorSystem("t") as system:
        with pytest.raises(KeyError):
            await system.ask(system.spawn(echo(), "e"), broken)
        assert paths and not system.local.is_registered(paths[0])


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), True, "1"])
async def test_ask_rejects_bad_timeout(timeout: Any) -> None:
    async with ActorSystem("t") as system:
        with pytest.raises(ValueError, match="timeout"):
            await system.ask(system.spawn(echo(), "e"), lambda r: Echo("x", r), timeout=timeout)


# -- lookup, spawn names, system names -------------------------------------------------------------


async def test_lookup() -> None:
    async def setup(ctx: ActorContext[Any]) -> Behavior[Any]:
        ctx.spawn(echo(), "kid")
        return echo()

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.setup(setup), "p")
        assert await system.ask(ref, lambda r: Echo("up", r)) == "up"  # setup has run
        assert system.lookup("/user/p") == ref
        kid = system.lookup("/user/p/kid")
        assert kid is not None and kid.id == "casty://t/user/p/kid"
        assert await system.ask(kid, lambda r: Echo("kid", r)) == "kid"
        assert system.lookup("/user/nobody") is None
        await system.stop(ref)
        assert system.lookup("/user/p") is None
        assert system.lookup("/user/p/kid") is None


@pytest.mark.parametrize("name", ["", "a/b", "/a", "a b", " a", "a\tb", "a\nb", "a\x00b", 7, None])
async def test_spawn_rejects_bad_names(name: Any) -> None:
    async with ActorSystem("t") as system:
        with pytest.raises(ValueError) as info:
            system.spawn(echo(), name)
        assert repr(name) in str(info.value)


async def test_spawn_rejects_a_live_duplicate_then_allows_reuse() -> None:
    async with ActorSystem("t") as system:
        first = system.spawn(echo(), "one")
        with pytest.raises(ValueError, match="'one'"):
            system.spawn(echo(), "one")
        await system.stop(first)
        again = system.spawn(echo(), "one")
        assert again == first  # same address, new actor
        assert await system.ask(again, lambda r: Echo("reborn", r)) == "reborn"


async def test_spawn_rejects_non_behaviours() -> None:
    async with ActorSystem("t") as system:
        for bad in (Behaviors.same(), Behaviors.unhandled(), "echo"):
            with pytest.raises(TypeError, match="behaviour"):
                system.spawn(bad, "x")  # type: ignore[arg-type]
        assert system.lookup("/user/x") is None


def test_spawn_needs_a_running_loop() -> None:
    system = ActorSystem("t")
    with pytest.raises(RuntimeError, match="running event loop"):
        system.spawn(echo(), "e")


async def test_spawn_after_shutdown_is_refused() -> None:
    system = ActorSystem("t")
    await system.shutdown()
    with pytest.raises(RuntimeError, match="shutting down"):
        system.spawn(echo(), "e")


@pytest.mark.parametrize("name", ["", "a/b", "a@b", "a:b", "a b", "[a]", "a\n", 3])
def test_system_name_is_validated(name: Any) -> None:
    with pytest.raises(ValueError) as info:
        ActorSystem(name)
    assert repr(name) in str(info.value)


def test_default_name_and_injected_transport() -> None:
    local = casty._impl.LocalTransport()
    system = ActorSystem(local_transport=local)
    assert system.name == "casty-system"
    assert system.local is local
    assert type(ActorSystem().local) is casty._impl.LocalTransport


# -- hooks for subclasses --------------------------------------------------------------------------


class TaggingSystem(ActorSystem):
    """Builds refs its own way, as RemoteActorSystem does."""

    def address_of(self, path: str) -> ActorAddress:
        return ActorAddress(self.name, path, "10.1.2.3", 4000)

    def make_ref(self, address: ActorAddress) -> ActorRef[Any]:
        return TaggedRef(address, self.local)


class TaggedRef(LocalActorRef[Any]):
    __slots__ = ()


async def test_every_ref_comes_from_address_of_and_make_ref() -> None:
    selves = future()

    async def setup(ctx: ActorContext[Any]) -> Behavior[Any]:
        kid = ctx.spawn(echo(), "kid")
        selves.set_result((ctx.self, kid))
        return echo()

    async with TaggingSystem("t") as system:
        ref = system.spawn(Behaviors.setup(setup), "p")
        assert isinstance(ref, TaggedRef)
        assert ref.id == "casty://t@10.1.2.3:4000/user/p"
        me, kid = await asyncio.wait_for(selves, WAIT)
        assert me == ref and isinstance(me, TaggedRef)
        assert kid.id == "casty://t@10.1.2.3:4000/user/p/kid"
        assert isinstance(system.lookup("/user/p/kid"), TaggedRef)
        # the reply path of ask too; the LocalTransport routes by path alone
        assert re.fullmatch(ASK_URI.format("casty://t@10.1.2.3:4000"), await system.ask(ref, lambda r: Echo(r.id, r)))


async def test_the_reply_ref_of_an_ask_is_what_make_ref_and_address_of_give() -> None:
    handed: list[Any] = []

    def make(reply_to: Any) -> Echo:
        handed.append(reply_to)
        return Echo("hi", reply_to)

    async with ActorSystem("s") as system:
        assert await system.ask(system.spawn(echo(), "e"), make, timeout=WAIT) == "hi"
        (reply_to,) = handed
        expected = system.make_ref(system.address_of(reply_to.address.path))
        assert type(reply_to) is type(expected) and reply_to == expected
        assert re.fullmatch(ASK_URI.format("casty://s"), reply_to.id), reply_to.id


# -- shutdown --------------------------------------------------------------------------------------


async def test_shutdown_leaves_no_tasks_and_runs_post_stop() -> None:
    before = asyncio.all_tasks()
    stopped: list[str] = []

    def tracked(label: str, inner: Behavior[Any]) -> Behavior[Any]:
        async def post_stop(ctx: Any) -> None:
            stopped.append(label)

        return Behaviors.with_lifecycle(inner, post_stop=post_stop)

    async def setup(ctx: ActorContext[Any]) -> Behavior[Any]:
        for i in range(3):
            ctx.spawn(tracked(f"kid{i}", echo()), f"kid{i}")
        return echo()

    system = ActorSystem("t")
    refs = [system.spawn(tracked(f"p{i}", Behaviors.setup(setup)), f"p{i}") for i in range(3)]
    for ref in refs:
        assert await system.ask(ref, lambda r: Echo("up", r)) == "up"
    assert len(asyncio.all_tasks() - before) == 12
    await system.shutdown()
    assert asyncio.all_tasks() == before
    expected = [f"p{i}" for i in range(3)] + [f"kid{i}" for i in range(3)] * 3
    assert sorted(stopped) == sorted(expected)
    for i in range(3):  # children before their parent
        assert stopped.index(f"p{i}") >= 3
    for path in ("/user/p0", "/user/p0/kid0", "/user/p2/kid2"):
        assert not system.local.is_registered(path)
    await system.shutdown()  # idempotent
    assert asyncio.all_tasks() == before


async def test_concurrent_shutdowns_all_wait() -> None:
    stopped = future()

    async def post_stop(ctx: Any) -> None:
        await asyncio.sleep(0)
        stopped.set_result(None)

    system = ActorSystem("t")
    system.spawn(Behaviors.with_lifecycle(echo(), post_stop=post_stop), "e")
    await asyncio.gather(system.shutdown(), system.shutdown())
    assert stopped.done()


async def test_shutdown_stops_user_actors_before_system_actors() -> None:
    order: list[str] = []

    def tracked(label: str) -> Behavior[Any]:
        async def post_stop(ctx: Any) -> None:
            order.append(label)

        return Behaviors.with_lifecycle(echo(), post_stop=post_stop)

    system = ActorSystem("t")
    sys_ref = system._spawn_system_actor(tracked("system"), "infra")
    assert sys_ref.id == "casty://t/system/infra"
    system.spawn(tracked("user"), "app")
    await system.shutdown()
    assert order == ["user", "system"]


async def test_shutdown_cancels_an_actor_stuck_in_a_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = asyncio.all_tasks()
    entered = future()
    stopped = future()

    async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
        entered.set_result(None)
        await asyncio.get_running_loop().create_future()  # never resolves
        return Behaviors.same()

    async def post_stop(ctx: Any) -> None:
        stopped.set_result(None)

    system = ActorSystem("t", stop_timeout=0.05)
    b = Behaviors.with_lifecycle(Behaviors.receive(receive), post_stop=post_stop)
    ref = system.spawn(b, "stuck")
    ref.tell("go")
    await asyncio.wait_for(entered, WAIT)
    await system.shutdown()
    assert stopped.done()
    assert asyncio.all_tasks() == before
    assert any("/user/stuck" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


async def test_shutdown_from_inside_an_actor_is_refused() -> None:
    result = future()

    async def receive(ctx: ActorContext[Any], msg: Any) -> Behavior[Any]:
        try:
            await ctx.system.shutdown()
        except RuntimeError as exc:
            result.set_result(str(exc))
        return Behaviors.same()

    async with ActorSystem("t") as system:
        system.spawn(Behaviors.receive(receive), "a").tell("go")
        assert "/user/a" in await asyncio.wait_for(result, WAIT)


# -- casty.run -------------------------------------------------------------------------------------


def test_run_uses_uvloop() -> None:
    import uvloop

    async def main() -> tuple[bool, str]:
        is_uvloop = isinstance(asyncio.get_running_loop(), uvloop.Loop)
        async with ActorSystem("t") as system:
            reply: str = await system.ask(system.spawn(echo(), "e"), lambda r: Echo("on uvloop", r))
        return is_uvloop, reply

    assert casty.run(main()) == (True, "on uvloop")


def test_run_falls_back_to_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError

    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__

    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(None)  # the suite installs uvloop's policy globally
    try:
        assert casty.run(main()).startswith("asyncio")
    finally:
        asyncio.set_event_loop_policy(policy)


async def test_system_stop_of_own_ancestor_from_inside_is_refused() -> None:
    result = future()

    async def receive(ctx: ActorContext[Any], msg: Any) -> Behavior[Any]:
        try:
            await ctx.system.stop(msg)
        except RuntimeError as exc:
            result.set_result(str(exc))
        return Behaviors.same()

    async def setup(ctx: ActorContext[Any]) -> Behavior[Any]:
        ctx.spawn(Behaviors.receive(receive), "kid").tell(ctx.self)
        return Behaviors.ignore()

    async with ActorSystem("t") as system:
        system.spawn(Behaviors.setup(setup), "p")
        assert "use ctx.stop()" in await asyncio.wait_for(result, WAIT)


# ---------------------------------------------------------------- mailbox capacity


@pytest.mark.parametrize("bad", [-1, 2.0, True, "8", None])
def test_mailbox_capacity_is_validated(bad: Any) -> None:
    with pytest.raises(ValueError, match="mailbox_capacity"):
        ActorSystem("t", mailbox_capacity=bad)


@pytest.mark.parametrize("bad", [-1, 2.0, True, "8", None])
def test_mailbox_bytes_is_validated(bad: Any) -> None:
    with pytest.raises(ValueError, match="mailbox_bytes"):
        ActorSystem("t", mailbox_bytes=bad)


async def test_each_mailbox_gets_the_byte_capacity() -> None:
    assert ActorSystem("u").mailbox_bytes == 64 * 1024 * 1024
    async with ActorSystem("t", mailbox_bytes=1000) as system, ActorSystem("n", mailbox_bytes=0) as none:
        system.spawn(gated(asyncio.Event(), []), "a")
        none.spawn(gated(asyncio.Event(), []), "a")
        assert system._cells["/user/a"].mailbox.byte_capacity == 1000
        assert none._cells["/user/a"].mailbox.byte_capacity == 0


def gated(gate: asyncio.Event, got: list[Any], entered: asyncio.Event | None = None) -> Behavior[Any]:
    """Records each message once ``gate`` is set (the first one waits for it); sets
    ``entered`` when a handler runs."""

    async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
        if entered is not None:
            entered.set()
        await gate.wait()
        got.append(msg)
        return Behaviors.same()

    return Behaviors.receive(receive)


async def test_local_tells_beyond_the_mailbox_capacity_are_dropped_and_counted() -> None:
    gate = asyncio.Event()
    got: list[Any] = []
    async with ActorSystem("t", mailbox_capacity=4) as system:
        assert ActorSystem("u").mailbox_capacity == 65_536
        ref = system.spawn(gated(gate, got), "slow")
        for i in range(10):
            ref.tell(i)  # from inside a task: queued, none handled yet
        assert system.local.drops["mailbox_full"] == 6
        gate.set()
        while len(got) < 4:
            await asyncio.sleep(0)
        ref.tell("after")  # room again
        while len(got) < 5:
            await asyncio.sleep(0)
    assert got == [0, 1, 2, 3, "after"]


async def test_a_peer_is_told_to_pause_and_on_space_fires_once_drained() -> None:
    gate = asyncio.Event()
    got: list[Any] = []
    async with ActorSystem("t", mailbox_capacity=4) as system:
        system.spawn(gated(gate, got), "slow")
        returned = [system.local.deliver_path("/user/slow", i, 8) for i in range(6)]
        box = returned[-1]
        assert returned[:3] == [None] * 3 and all(r is box for r in returned[3:])
        assert box is system._cells["/user/slow"].mailbox and system.local.dropped == 0
        resumed = asyncio.get_running_loop().create_future()
        lengths: list[int] = []

        def on_space() -> None:
            lengths.append(len(box.queue))
            resumed.set_result(None)

        box.on_space(on_space)
        await asyncio.sleep(0)
        assert not resumed.done()  # nothing drained while the handler waits
        gate.set()
        await asyncio.wait_for(resumed, WAIT)
        assert lengths == [2]  # capacity // 2
        while len(got) < 6:
            await asyncio.sleep(0)
    assert got == list(range(6)) and lengths == [2]


async def test_on_space_fires_when_the_actor_stops() -> None:
    gate = asyncio.Event()
    got: list[Any] = []
    async with ActorSystem("t", mailbox_capacity=2) as system:
        entered = asyncio.Event()
        ref = system.spawn(gated(gate, got, entered), "slow")
        for i in range(5):
            box = system.local.deliver_path("/user/slow", i)
        assert box is not None
        await asyncio.wait_for(entered.wait(), WAIT)  # handling message 0
        fired = asyncio.get_running_loop().create_future()
        box.on_space(lambda: fired.set_result(len(box.queue)))
        stopping = asyncio.ensure_future(system.stop(ref))
        gate.set()  # the message being handled finishes; the rest are dropped
        assert await asyncio.wait_for(fired, WAIT) == 0
        await asyncio.wait_for(stopping, WAIT)
    assert got == [0]
