"""Behaviours and the actor cell: factories, state, setup, stop, lifecycle, supervision."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from casty.actor import _Supervision
from casty.ask_deadlines import AskFailed
from casty.behavior import Behavior, Behaviors
from casty.context import ActorContext
from casty.ref import ActorRef
from casty.system import ActorSystem

WAIT = 5.0  # generous bound so a bug fails the test instead of hanging it


@dataclass(frozen=True)
class Get:
    reply_to: ActorRef[Any]


@dataclass(frozen=True)
class Boom:
    text: str = "boom"


def done_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


async def settle(fut: asyncio.Future[Any]) -> Any:
    return await asyncio.wait_for(fut, WAIT)


def stop_signal(fut: asyncio.Future[None]) -> Any:
    async def post_stop(ctx: ActorContext[Any]) -> None:
        if not fut.done():
            fut.set_result(None)

    return post_stop


IGNORE = Behaviors.ignore()


def bad(value: object) -> Any:
    """Pass a wrongly typed argument past the type checker, as untyped callers can."""
    return value


# -- factories -------------------------------------------------------------------------------------


async def _noop(ctx: Any, msg: Any) -> Behavior[Any]:
    return Behaviors.same()


async def _start(ctx: Any) -> Behavior[Any]:
    return Behaviors.ignore()


def test_factories_build_behaviours() -> None:
    for b in (
        Behaviors.receive(_noop),
        Behaviors.setup(_start),
        Behaviors.ignore(),
        Behaviors.same(),
        Behaviors.stopped(),
        Behaviors.unhandled(),
        Behaviors.with_lifecycle(Behaviors.ignore()),
        Behaviors.supervise(Behaviors.receive(_noop)),
    ):
        assert isinstance(b, Behavior)
    assert Behaviors.same() is Behaviors.same()
    assert Behaviors.stopped() is not Behaviors.same()
    assert repr(Behaviors.same()) == "Behaviors.same()"
    assert repr(Behaviors.supervise(Behaviors.setup(_start), max_restarts=2, within=1)) == (
        "Behaviors.supervise(Behaviors.setup(_start), max_restarts=2, within=1.0)"
    )


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: Behaviors.receive(bad(42)), TypeError, "async callable"),
        (lambda: Behaviors.setup(bad(None)), TypeError, "async callable"),
        (lambda: Behaviors.with_lifecycle(bad("x")), TypeError, "needs a Behavior"),
        (lambda: Behaviors.with_lifecycle(Behaviors.same()), TypeError, "directive"),
        (lambda: Behaviors.with_lifecycle(IGNORE, post_stop=bad(1)), TypeError, "post_stop"),
        (lambda: Behaviors.supervise(Behaviors.stopped()), TypeError, "directive"),
        (lambda: Behaviors.supervise(IGNORE, max_restarts=-1), ValueError, "max_restarts"),
        (lambda: Behaviors.supervise(IGNORE, max_restarts=bad(1.5)), ValueError, "max_restarts"),
        (lambda: Behaviors.supervise(IGNORE, within=0), ValueError, "within"),
        (lambda: Behaviors.supervise(IGNORE, within=float("nan")), ValueError, "within"),
    ],
)
def test_factories_reject_bad_arguments(build: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()


# -- state, setup, stop, ignore, unhandled ---------------------------------------------------------


def counter(n: int) -> Behavior[Any]:
    async def receive(ctx: ActorContext[Any], msg: Any) -> Behavior[Any]:
        if isinstance(msg, Get):
            msg.reply_to.tell(n)
            return Behaviors.same()
        return counter(n + 1)  # the state lives in the behaviour

    return Behaviors.receive(receive)


async def test_state_by_returning_new_behaviours() -> None:
    async with ActorSystem("t") as system:
        ref = system.spawn(counter(0), "counter")
        for _ in range(5):
            ref.tell("inc")
        assert await system.ask(ref, Get) == 5
        ref.tell("inc")
        assert await system.ask(ref, Get) == 6


async def test_setup_runs_once_before_messages() -> None:
    calls: list[str] = []

    async def setup(ctx: ActorContext[Any]) -> Behavior[Any]:
        calls.append(f"setup {ctx.self.id}")
        return counter(0)

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.setup(setup), "s")
        ref.tell("inc")  # queued before setup ran
        ref.tell("inc")
        assert await system.ask(ref, Get) == 2
        assert calls == ["setup casty://t/user/s"]


async def test_setup_returning_a_setup_runs_both() -> None:
    calls: list[str] = []

    async def outer(ctx: Any) -> Behavior[Any]:
        calls.append("outer")
        return Behaviors.setup(inner)

    async def inner(ctx: Any) -> Behavior[Any]:
        calls.append("inner")
        return counter(10)

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.setup(outer), "s")
        assert await system.ask(ref, Get) == 10
        assert calls == ["outer", "inner"]


async def test_returned_setup_behaviour_is_started() -> None:
    calls: list[int] = []

    def phase(k: int) -> Behavior[Any]:
        async def setup(ctx: Any) -> Behavior[Any]:
            calls.append(k)
            return counter(100 * k)

        return Behaviors.setup(setup)

    async def first(ctx: Any, msg: Any) -> Behavior[Any]:
        return phase(2)

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.receive(first), "s")
        ref.tell("next")
        assert await system.ask(ref, Get) == 200
        assert calls == [2]


async def test_stopped_stops_and_later_messages_are_dropped() -> None:
    stopped = done_future()
    seen: list[Any] = []

    async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
        seen.append(msg)
        return Behaviors.stopped() if msg == "stop" else Behaviors.same()

    async with ActorSystem("t") as system:
        b = Behaviors.with_lifecycle(Behaviors.receive(receive), post_stop=stop_signal(stopped))
        ref = system.spawn(b, "s")
        ref.tell("a")
        ref.tell("stop")
        ref.tell("after")  # in the mailbox already: discarded at stop
        await settle(stopped)
        assert seen == ["a", "stop"]
        assert not system.local.is_registered("/user/s")
        assert system.lookup("/user/s") is None
        before = system.local.drops["dead"]
        ref.tell("late")
        assert system.local.drops["dead"] == before + 1


async def test_setup_returning_stopped_stops_at_once() -> None:
    stopped = done_future()

    async def setup(ctx: Any) -> Behavior[Any]:
        return Behaviors.stopped()

    async with ActorSystem("t") as system:
        b = Behaviors.with_lifecycle(Behaviors.setup(setup), post_stop=stop_signal(stopped))
        system.spawn(b, "s")
        await settle(stopped)
        assert system.lookup("/user/s") is None


async def test_ignore_swallows_everything() -> None:
    async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
        if isinstance(msg, Get):
            msg.reply_to.tell("awake")
            return Behaviors.same()
        return Behaviors.ignore()

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.receive(receive), "s")
        assert await system.ask(ref, Get) == "awake"
        ref.tell("sleep")
        with pytest.raises(TimeoutError):
            await system.ask(ref, Get, timeout=0.05)
        assert system.lookup("/user/s") is not None  # ignoring, not stopped
        silent = system.spawn(Behaviors.ignore(), "silent")
        with pytest.raises(TimeoutError):
            await system.ask(silent, Get, timeout=0.05)


async def test_unhandled_is_logged_and_behaviour_stays(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="casty.actor")

    async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
        if isinstance(msg, Get):
            msg.reply_to.tell("ok")
            return Behaviors.same()
        return Behaviors.unhandled()

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.receive(receive), "picky")
        ref.tell(Boom())
        assert await system.ask(ref, Get) == "ok"  # handled after the unhandled one
    records = [r for r in caplog.records if r.name == "casty.actor" and r.levelno == logging.DEBUG]
    text = [r.getMessage() for r in records]
    assert any("/user/picky" in t and "Boom" in t for t in text), text


# -- lifecycle -------------------------------------------------------------------------------------


def tracked(events: list[str], label: str, inner: Behavior[Any]) -> Behavior[Any]:
    async def pre_start(ctx: Any) -> None:
        events.append(f"pre_start {label}")

    async def post_stop(ctx: Any) -> None:
        events.append(f"post_stop {label}")

    return Behaviors.with_lifecycle(inner, pre_start=pre_start, post_stop=post_stop)


def family(events: list[str], label: str, children: tuple[str, ...] = ()) -> Behavior[Any]:
    async def setup(ctx: ActorContext[Any]) -> Behavior[Any]:
        events.append(f"setup {label}")
        for child in children:
            ctx.spawn(family(events, f"{label}/{child}", ()), child)
        return counter(0)

    return tracked(events, label, Behaviors.setup(setup))


async def test_lifecycle_order_on_stop_children_first() -> None:
    events: list[str] = []
    async with ActorSystem("t") as system:
        ref = system.spawn(family(events, "p", ("c1", "c2")), "p")
        assert await system.ask(ref, Get) == 0
        assert system.lookup("/user/p/c1") is not None
        await system.stop(ref)
        assert events[:2] == ["pre_start p", "setup p"]
        assert set(events[2:6]) == {"pre_start p/c1", "setup p/c1", "pre_start p/c2", "setup p/c2"}
        assert set(events[6:8]) == {"post_stop p/c1", "post_stop p/c2"}
        assert events[8:] == ["post_stop p"]
        for path in ("/user/p", "/user/p/c1", "/user/p/c2"):
            assert not system.local.is_registered(path)
            assert system.lookup(path) is None


async def test_lifecycle_order_on_shutdown() -> None:
    events: list[str] = []
    system = ActorSystem("t")
    ref = system.spawn(family(events, "p", ("c",)), "p")
    assert await system.ask(ref, Get) == 0
    async with system:
        pass
    assert events == ["pre_start p", "setup p", "pre_start p/c", "setup p/c",
                      "post_stop p/c", "post_stop p"]


async def test_nested_lifecycle_hooks_run_inner_first() -> None:
    events: list[str] = []
    async with ActorSystem("t") as system:
        b = tracked(events, "outer", tracked(events, "inner", counter(0)))
        ref = system.spawn(b, "n")
        assert await system.ask(ref, Get) == 0
    assert events == ["pre_start outer", "pre_start inner", "post_stop inner", "post_stop outer"]


async def test_post_stop_runs_when_ctx_stop_self() -> None:
    stopped = done_future()

    async def receive(ctx: ActorContext[Any], msg: Any) -> Behavior[Any]:
        ctx.stop(ctx.self)
        return Behaviors.same()

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.with_lifecycle(Behaviors.receive(receive),
                                                    post_stop=stop_signal(stopped)), "s")
        ref.tell("anything")
        await settle(stopped)
        assert system.lookup("/user/s") is None


async def test_failing_post_stop_is_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []

    async def bad(ctx: Any) -> None:
        raise RuntimeError("post_stop broke")

    async with ActorSystem("t") as system:
        b = tracked(events, "outer", Behaviors.with_lifecycle(counter(0), post_stop=bad))
        await system.stop(system.spawn(b, "s"))
    assert events == ["pre_start outer", "post_stop outer"]
    assert any("post_stop of actor /user/s failed" in r.getMessage() for r in caplog.records)


async def test_failing_pre_start_stops_without_post_stop(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []

    async def pre_start(ctx: Any) -> None:
        raise RuntimeError("no start")

    async def post_stop(ctx: Any) -> None:
        events.append("post_stop")

    async with ActorSystem("t") as system:
        b = Behaviors.with_lifecycle(counter(0), pre_start=pre_start, post_stop=post_stop)
        ref = system.spawn(b, "s")
        with pytest.raises(AskFailed) as info:  # at once: the actor stopped, nothing will answer
            await system.ask(ref, Get, timeout=60)
        assert info.value.reason in ("target_stopped", "dead_target")
        assert system.lookup("/user/s") is None
    assert events == []
    assert any("/user/s" in r.getMessage() and "starting" in r.getMessage() for r in caplog.records)


# -- context ---------------------------------------------------------------------------------------


async def test_context_children_parent_and_stop() -> None:
    got = done_future()
    child_stopped = done_future()

    async def parent(ctx: ActorContext[Any], msg: Any) -> Behavior[Any]:
        if msg == "spawn":
            kid = Behaviors.with_lifecycle(counter(0), post_stop=stop_signal(child_stopped))
            child = ctx.spawn(kid, "kid")
            with pytest.raises(ValueError, match="'kid'"):
                ctx.spawn(counter(0), "kid")
            with pytest.raises(ValueError, match="invalid actor name"):
                ctx.spawn(counter(0), "bad name")
            got.set_result((child, dict(ctx.children), ctx.parent))
        elif msg == "stop-kid":
            ctx.stop(ctx.children["kid"])
        elif isinstance(msg, ActorRef):
            try:
                ctx.stop(msg)
            except ValueError as exc:
                got_error.set_result(str(exc))
        return Behaviors.same()

    got_error = done_future()
    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.receive(parent), "p")
        other = system.spawn(counter(0), "other")
        ref.tell("spawn")
        child, children, parent_ref = await settle(got)
        assert child.id == "casty://t/user/p/kid"
        assert children == {"kid": child}
        assert parent_ref is None
        assert system.lookup("/user/p/kid") == child
        ref.tell(other)  # not a child: refused
        assert "casty://t/user/other" in await settle(got_error)
        ref.tell("stop-kid")
        await settle(child_stopped)
        assert system.lookup("/user/p/kid") is None
        assert system.lookup("/user/other") is not None


async def test_child_sees_its_parent() -> None:
    async def child_setup(ctx: ActorContext[Any]) -> Behavior[Any]:
        async def receive(c: Any, msg: Get) -> Behavior[Any]:
            msg.reply_to.tell((ctx.parent, ctx.path))
            return Behaviors.same()

        return Behaviors.receive(receive)

    async def parent_setup(ctx: ActorContext[Any]) -> Behavior[Any]:
        kid = ctx.spawn(Behaviors.setup(child_setup), "kid")

        async def receive(c: Any, msg: Get) -> Behavior[Any]:
            kid.tell(msg)
            return Behaviors.same()

        return Behaviors.receive(receive)

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.setup(parent_setup), "p")
        assert await system.ask(ref, Get) == (ref, "/user/p/kid")


async def test_context_log_names_the_actor(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="casty.actor")

    async def receive(ctx: ActorContext[Any], msg: Get) -> Behavior[Any]:
        ctx.log.info("hello %s", "there")
        msg.reply_to.tell(None)
        return Behaviors.same()

    async with ActorSystem("t") as system:
        await system.ask(system.spawn(Behaviors.receive(receive), "talker"), Get)
    [record] = [r for r in caplog.records if "hello" in r.getMessage()]
    assert record.name == "casty.actor"
    assert record.actor_path == "/user/talker"  # type: ignore[attr-defined]
    assert record.getMessage() == "[/user/talker] hello there"


# -- failures and supervision ----------------------------------------------------------------------


def fragile(events: list[str]) -> Behavior[Any]:
    """Counts messages; raises on Boom; records each setup."""

    async def setup(ctx: Any) -> Behavior[Any]:
        events.append("setup")
        return count_from(0)

    def count_from(n: int) -> Behavior[Any]:
        async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
            if isinstance(msg, Boom):
                raise RuntimeError(msg.text)
            if isinstance(msg, Get):
                msg.reply_to.tell(n)
                return Behaviors.same()
            return count_from(n + 1)

        return Behaviors.receive(receive)

    return Behaviors.setup(setup)


async def test_failure_without_supervise_stops_and_logs_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    stopped = done_future()
    async with ActorSystem("t") as system:
        b = Behaviors.with_lifecycle(fragile(events), post_stop=stop_signal(stopped))
        ref = system.spawn(b, "fragile")
        ref.tell("inc")
        ref.tell(Boom("kaput"))
        await settle(stopped)
        assert not system.local.is_registered("/user/fragile")
        assert system.lookup("/user/fragile") is None
    [record] = [r for r in caplog.records if r.name == "casty.actor" and r.levelno == logging.ERROR]
    assert "/user/fragile" in record.getMessage()
    assert "Boom" in record.getMessage()
    assert record.exc_info is not None and str(record.exc_info[1]) == "kaput"
    assert events == ["setup"]


async def test_handler_returning_none_is_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    stopped = done_future()

    async def receive(ctx: Any, msg: Any) -> Any:
        return None  # forgot Behaviors.same()

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.with_lifecycle(Behaviors.receive(receive),
                                                    post_stop=stop_signal(stopped)), "forgetful")
        ref.tell("x")
        await settle(stopped)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "/user/forgetful" in errors[0].getMessage()
    assert "expected a Behavior" in str(errors[0].exc_info[1])  # type: ignore[index]


async def test_setup_returning_same_is_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    stopped = done_future()

    async def setup(ctx: Any) -> Behavior[Any]:
        return Behaviors.same()

    async with ActorSystem("t") as system:
        b = Behaviors.with_lifecycle(Behaviors.setup(setup), post_stop=stop_signal(stopped))
        system.spawn(b, "s")
        await settle(stopped)
    assert any("returned Behaviors.same()" in str(r.exc_info[1]) for r in caplog.records
               if r.exc_info)


async def test_supervise_restarts_and_keeps_processing(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.supervise(fragile(events)), "sup")
        ref.tell("inc")
        ref.tell("inc")
        assert await system.ask(ref, Get) == 2
        ref.tell(Boom())
        ref.tell("inc")  # queued behind the failure: handled by the new incarnation
        assert await system.ask(ref, Get) == 1  # state reset by the restart
        assert events == ["setup", "setup"]
        assert system.lookup("/user/sup") is not None
    restarts = [r for r in caplog.records if "restarting" in r.getMessage()]
    assert len(restarts) == 1 and "/user/sup" in restarts[0].getMessage()


async def test_restart_stops_children_and_runs_incarnation_hooks() -> None:
    events: list[str] = []

    async def setup(ctx: ActorContext[Any]) -> Behavior[Any]:
        ctx.spawn(tracked(events, "kid", counter(0)), "kid")  # same name each incarnation

        async def receive(c: Any, msg: Any) -> Behavior[Any]:
            if isinstance(msg, Boom):
                raise RuntimeError("boom")
            msg.reply_to.tell(sorted(ctx.children))
            return Behaviors.same()

        return Behaviors.receive(receive)

    async with ActorSystem("t") as system:
        inner = tracked(events, "inner", Behaviors.setup(setup))
        ref = system.spawn(tracked(events, "outer", Behaviors.supervise(inner)), "p")
        assert await system.ask(ref, Get) == ["kid"]
        ref.tell(Boom())
        assert await system.ask(ref, Get) == ["kid"]
        assert events == [
            "pre_start outer", "pre_start inner", "pre_start kid",
            "post_stop kid", "post_stop inner",  # the failed incarnation
            "pre_start inner", "pre_start kid",
        ]
    assert events[-3:] == ["post_stop kid", "post_stop inner", "post_stop outer"]


async def test_max_restarts_exceeded_stops(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    stopped = done_future()
    async with ActorSystem("t") as system:
        b = Behaviors.with_lifecycle(Behaviors.supervise(fragile(events), max_restarts=2),
                                     post_stop=stop_signal(stopped))
        ref = system.spawn(b, "sup")
        for _ in range(3):
            ref.tell(Boom())
        ref.tell("never handled")
        await settle(stopped)
        assert system.lookup("/user/sup") is None
        assert not system.local.is_registered("/user/sup")
    assert events == ["setup", "setup", "setup"]
    final = [r for r in caplog.records if "stopping it" in r.getMessage()]
    assert len(final) == 1 and "/user/sup" in final[0].getMessage()


async def test_supervised_setup_failing_forever_gives_up() -> None:
    calls: list[int] = []
    stopped = done_future()

    async def setup(ctx: Any) -> Behavior[Any]:
        calls.append(1)
        raise RuntimeError("cannot start")

    async with ActorSystem("t") as system:
        b = Behaviors.with_lifecycle(Behaviors.supervise(Behaviors.setup(setup), max_restarts=3),
                                     post_stop=stop_signal(stopped))
        system.spawn(b, "s")
        await settle(stopped)
    assert len(calls) == 4  # the first start and three restarts


def test_restart_window_forgets_old_restarts() -> None:
    sup = _Supervision(Behaviors.supervise(Behaviors.ignore(), max_restarts=2, within=10.0), 0)  # type: ignore[arg-type]
    assert sup.may_restart(0.0)
    assert sup.may_restart(1.0)
    assert not sup.may_restart(2.0)  # a third within 10 s
    assert sup.may_restart(10.5)  # the one at 0.0 has left the window
    assert not sup.may_restart(10.6)
    assert sup.may_restart(21.0)


def test_zero_restarts_means_never() -> None:
    sup = _Supervision(Behaviors.supervise(Behaviors.ignore(), max_restarts=0), 0)  # type: ignore[arg-type]
    assert not sup.may_restart(0.0)


async def test_a_handler_that_is_not_async_is_named_with_what_to_do(caplog: pytest.LogCaptureFixture) -> None:
    def plain(ctx: Any, msg: Any) -> Behavior[Any]:
        return Behaviors.same()

    async with ActorSystem("t") as system:
        ref = system.spawn(Behaviors.receive(plain), "plain")  # type: ignore[arg-type]
        cell = system._cells["/user/plain"]
        ref.tell("hi")
        await asyncio.wait_for(cell.terminated, 5)  # the failure stops it
    text = caplog.text
    assert "the handler test_a_handler_that_is_not_async_is_named_with_what_to_do.<locals>.plain" in text
    assert "returned Behaviors.same() instead of an awaitable: define it with 'async def'" in text
    assert "can't be used in 'await' expression" not in text


async def test_a_plain_callable_returning_a_coroutine_still_works() -> None:
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def handle(msg: Any) -> Behavior[Any]:
        got.set_result(msg)
        return Behaviors.same()

    async with ActorSystem("t") as system:
        behavior = Behaviors.receive(lambda ctx, msg: handle(msg))
        assert repr(behavior).startswith("Behaviors.receive(test_a_plain_callable_returning")
        system.spawn(behavior, "lam").tell(1)
        assert await asyncio.wait_for(got, 5) == 1
