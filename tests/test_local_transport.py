"""LocalTransport: every routing rule, its bounds, drops, waiters, and twin agreement."""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import math
import sys
import time
import tracemalloc
import types
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from casty.address import ActorAddress
from casty.transport import local as pure_local

LOGGER = "casty.transport.local"
NO_DROPS = {
    "dead": 0,
    "overflow": 0,
    "too_many_paths": 0,
    "no_such_ask": 0,
    "pending_bytes": 0,
    "expired": 0,
    "mailbox_full": 0,
    "stopped": 0,
}


def addr(path: str) -> ActorAddress:
    return ActorAddress(system="sys", path=path)


class Boom(Exception):
    """What the raising handlers below raise."""


# ---------------------------------------------------------------- basic routing


def test_seed_page_example(impl: types.SimpleNamespace) -> None:
    transport = impl.LocalTransport()
    received: list[Any] = []
    transport.register("/user/actor", received.append)
    transport.deliver(ActorAddress(system="sys", path="/user/actor"), "hello")
    assert received == ["hello"]
    assert transport.drops == NO_DROPS
    assert transport.dropped == 0


def test_deliver_path_and_is_registered(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    got: list[Any] = []
    assert not t.is_registered("/user/a")
    t.register("/user/a", got.append)
    assert t.is_registered("/user/a")
    t.deliver_path("/user/a", 1)
    t.deliver(addr("/user/a"), 2)
    t.deliver(address=addr("/user/a"), msg=3)
    t.deliver_path(path="/user/a", msg=4)
    assert got == [1, 2, 3, 4]
    t.unregister("/user/a")
    assert not t.is_registered("/user/a")


def test_routes_by_path_only(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    a: list[Any] = []
    b: list[Any] = []
    t.register("/user/a", a.append)
    t.register("/user/b", b.append)
    t.deliver(ActorAddress("other", "/user/a", "10.0.0.1", 7), "x")
    t.deliver(addr("/user/b"), "y")
    assert (a, b) == (["x"], ["y"])


def test_register_replaces_handler(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    old: list[Any] = []
    new: list[Any] = []
    t.register("/user/a", old.append)
    t.register("/user/a", new.append)
    t.deliver(addr("/user/a"), 1)
    assert (old, new) == ([], [1])


def test_any_object_with_a_path_is_an_address(impl: types.SimpleNamespace) -> None:
    class SubAddress(ActorAddress):
        __slots__ = ()

        def __getattribute__(self, name: str) -> Any:
            value = super().__getattribute__(name)
            return "/user/b" if name == "path" else value  # not what the slot holds

    t = impl.LocalTransport()
    got: list[Any] = []
    t.register("/user/b", got.append)
    t.deliver(types.SimpleNamespace(path="/user/b"), 1)
    t.deliver(SubAddress("sys", "/user/a"), 2)
    assert got == [1, 2]
    with pytest.raises(AttributeError):
        t.deliver(object(), 3)
    bare = object.__new__(ActorAddress)  # slots never set
    with pytest.raises(AttributeError):
        t.deliver(bare, 4)


# ---------------------------------------------------------------- buffering


def test_buffers_until_register_then_flushes_in_order(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    for i in range(10):
        t.deliver(addr("/user/late"), i)
    t.deliver_path("/user/late", 10)
    got: list[Any] = []
    t.register("/user/late", got.append)
    assert got == list(range(11))
    t.deliver(addr("/user/late"), 11)
    assert got == list(range(12))
    assert t.dropped == 0


def test_buffer_is_bounded_by_default_at_64(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    for i in range(70):
        t.deliver(addr("/user/a"), i)
    assert t.drops == {**NO_DROPS, "overflow": 6}
    assert t.dropped == 6
    got: list[Any] = []
    t.register("/user/a", got.append)
    assert got == list(range(64))


def test_buffer_bound_is_configurable(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport(max_pending_per_path=2)
    for i in range(5):
        t.deliver(addr("/user/a"), i)
    got: list[Any] = []
    t.register("/user/a", got.append)
    assert got == [0, 1]
    assert t.drops["overflow"] == 3


def test_zero_buffer_drops_every_unrouted_message(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport(max_pending_per_path=0)
    t.deliver(addr("/user/a"), 1)
    t.deliver(addr("/user/a"), 2)
    got: list[Any] = []
    t.register("/user/a", got.append)
    assert got == []
    assert t.drops == {**NO_DROPS, "overflow": 2}


def test_flush_empties_the_buffer(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport(max_pending_per_path=3)
    for i in range(3):
        t.deliver(addr("/user/a"), i)
    first: list[Any] = []
    t.register("/user/a", first.append)
    t.unregister("/user/a")
    assert t.drops == NO_DROPS  # nothing was left behind to drop
    second: list[Any] = []
    t.register("/user/a", second.append)
    assert (first, second) == ([0, 1, 2], [])


def test_max_pending_paths_bounds_distinct_buffers(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport(max_pending_paths=2)
    t.deliver(addr("/user/a"), "a")
    t.deliver(addr("/user/b"), "b")
    t.deliver(addr("/user/c"), "c")  # a third buffer would exceed the bound
    t.deliver(addr("/user/a"), "a2")  # an existing buffer still takes messages
    assert t.drops == {**NO_DROPS, "too_many_paths": 1}
    got: list[Any] = []
    t.register("/user/a", got.append)  # frees a buffer
    t.deliver(addr("/user/c"), "c2")
    c: list[Any] = []
    t.register("/user/c", c.append)
    assert (got, c) == (["a", "a2"], ["c2"])


def test_zero_pending_paths_buffers_nothing(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport(max_pending_paths=0)
    t.deliver(addr("/user/a"), 1)
    assert t.drops == {**NO_DROPS, "too_many_paths": 1}


# ---------------------------------------------------------------- dead paths


def test_unregister_marks_dead(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    got: list[Any] = []
    t.register("/user/a", got.append)
    t.deliver(addr("/user/a"), 1)
    t.unregister("/user/a")
    t.deliver(addr("/user/a"), 2)
    t.deliver_path("/user/a", 3)
    assert got == [1]
    assert t.drops == {**NO_DROPS, "dead": 2}
    again: list[Any] = []
    t.register("/user/a", again.append)  # nothing was buffered while dead
    assert again == []


def test_unregister_drops_what_was_buffered(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    for i in range(3):
        t.deliver(addr("/user/a"), i)
    t.unregister("/user/a")
    assert t.drops == {**NO_DROPS, "dead": 3}
    got: list[Any] = []
    t.register("/user/a", got.append)
    assert got == []


def test_register_after_unregister_revives(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    t.register("/user/a", lambda m: None)
    t.unregister("/user/a")
    got: list[Any] = []
    t.register("/user/a", got.append)
    t.deliver(addr("/user/a"), "back")
    assert got == ["back"]
    t.unregister("/user/a")
    t.deliver(addr("/user/a"), "gone")  # and it can die again
    assert t.drops["dead"] == 1


def test_unregister_of_unknown_path_marks_it_dead(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    t.unregister("/user/never")
    t.deliver(addr("/user/never"), 1)
    assert t.drops == {**NO_DROPS, "dead": 1}


def test_max_dead_paths_forgets_least_recently_unregistered(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport(max_dead_paths=2)
    for p in ("/a", "/b", "/a", "/c"):  # /a refreshed, so /b is the oldest
        t.unregister(p)
    t.deliver_path("/a", 1)
    t.deliver_path("/c", 2)
    assert t.drops == {**NO_DROPS, "dead": 2}
    t.deliver_path("/b", 3)  # forgotten: buffered again
    got: list[Any] = []
    t.register("/b", got.append)
    assert got == [3]


def test_dead_paths_stay_the_most_recent_ones_through_long_churn(impl: types.SimpleNamespace) -> None:
    # What asks do: a fresh path registered and unregistered, far past the bound.
    t = impl.LocalTransport(max_dead_paths=100)
    for i in range(5_000):
        t.register(f"/temp/ask-{i}", print)
        t.unregister(f"/temp/ask-{i}")
        if i == 4_950:
            t.unregister("/temp/ask-4000")  # long dead and forgotten: dead again, newest
    for i in (4_000, *range(4_901, 5_000)):
        t.deliver_path(f"/temp/ask-{i}", i)
    assert t.drops == {**NO_DROPS, "dead": 100}
    t.deliver_path("/temp/ask-4900", "forgotten")  # the 101st most recent: no longer dead,
    assert t.drops == {**NO_DROPS, "dead": 100, "no_such_ask": 1}  # but a temp path: dropped
    got: list[Any] = []
    t.register("/temp/ask-4900", got.append)
    assert got == []


def test_zero_dead_paths_remembers_none(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport(max_dead_paths=0)
    t.unregister("/a")
    t.deliver_path("/a", 1)
    got: list[Any] = []
    t.register("/a", got.append)
    assert got == [1]
    assert t.dropped == 0


# ---------------------------------------------------------------- path factories


def test_factory_gets_full_path_and_its_handler_the_message(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    calls: list[str] = []
    got: list[tuple[str, Any]] = []

    def factory(path: str) -> None:
        calls.append(path)
        t.register(path, lambda m: got.append((path, m)))

    t.register_path_factory("/_coord-", factory)
    t.deliver(addr("/_coord-7/x"), "hi")
    t.deliver(addr("/_coord-7/x"), "again")  # registered now: no second factory call
    assert calls == ["/_coord-7/x"]
    assert got == [("/_coord-7/x", "hi"), ("/_coord-7/x", "again")]


def test_factory_that_does_not_register_leaves_it_buffered(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    calls: list[str] = []
    t.register_path_factory("/lazy/", calls.append)
    t.deliver(addr("/lazy/a"), 1)
    t.deliver_path("/lazy/a", 2)
    assert calls == ["/lazy/a", "/lazy/a"]  # asked again on each unrouted message
    got: list[Any] = []
    t.register("/lazy/a", got.append)
    assert got == [1, 2]
    assert t.dropped == 0


def test_factory_that_unregisters_drops_as_dead(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    t.register_path_factory("/lazy/", t.unregister)
    t.deliver(addr("/lazy/a"), 1)
    assert t.drops == {**NO_DROPS, "dead": 1}
    got: list[Any] = []
    t.register("/lazy/a", got.append)
    assert got == []


def test_factory_prefix_must_match(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    calls: list[str] = []
    t.register_path_factory("/_coord-", calls.append)
    t.deliver(addr("/user/_coord-1"), 1)
    t.deliver(addr("/_coord"), 2)
    assert calls == []
    got: list[Any] = []
    t.register("/_coord", got.append)
    assert got == [2]


def test_only_the_first_matching_factory_runs(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    calls: list[tuple[str, str]] = []
    t.register_path_factory("/w", lambda p: calls.append(("first", p)))
    t.register_path_factory("/w/", lambda p: calls.append(("second", p)))
    t.deliver(addr("/w/1"), 1)
    assert calls == [("first", "/w/1")]


def test_dead_path_beats_factory(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    calls: list[str] = []
    t.register_path_factory("/w/", calls.append)
    t.unregister("/w/1")
    t.deliver(addr("/w/1"), 1)
    assert calls == []
    assert t.drops["dead"] == 1


def test_factory_error_propagates(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()

    def factory(path: str) -> None:
        raise Boom(path)

    t.register_path_factory("/w/", factory)
    with pytest.raises(Boom, match="/w/1"):
        t.deliver(addr("/w/1"), 1)


# ---------------------------------------------------------------- handler errors


def test_handler_error_propagates_to_deliver_caller(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    seen: list[Any] = []

    def handler(msg: Any) -> None:
        seen.append(msg)
        if msg == "bad":
            raise Boom(msg)

    t.register("/user/a", handler)
    with pytest.raises(Boom, match="bad"):
        t.deliver(addr("/user/a"), "bad")
    with pytest.raises(Boom):
        t.deliver_path("/user/a", "bad")
    t.deliver(addr("/user/a"), "good")  # still routed afterwards
    assert seen == ["bad", "bad", "good"]
    assert t.dropped == 0


async def test_flush_error_propagates_after_the_whole_flush(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    t = impl.LocalTransport()
    for m in ("ok1", "bad1", "ok2", "bad2", "ok3"):
        t.deliver(addr("/user/a"), m)
    waiter = asyncio.ensure_future(t.wait_for_path("/user/a"))
    await asyncio.sleep(0)  # let the waiter start waiting
    seen: list[Any] = []

    def handler(msg: Any) -> None:
        seen.append(msg)
        if msg.startswith("bad"):
            raise Boom(msg)

    with caplog.at_level(logging.ERROR, logger=LOGGER), pytest.raises(Boom, match="bad1"):
        t.register("/user/a", handler)
    assert seen == ["ok1", "bad1", "ok2", "bad2", "ok3"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == LOGGER]
    assert len(errors) == 1 and "/user/a" in errors[0].getMessage()
    assert errors[0].exc_info is not None and isinstance(errors[0].exc_info[1], Boom)
    await asyncio.wait_for(waiter, 1)  # woken despite the error
    assert t.is_registered("/user/a")


def test_handler_may_unregister_itself_while_running(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    seen: list[Any] = []

    def make() -> Callable[[Any], None]:
        def handler(msg: Any) -> None:
            t.unregister("/user/a")  # drops the transport's only reference to us
            gc.collect()
            seen.append(msg)

        return handler

    t.register("/user/a", make())
    t.deliver(addr("/user/a"), 1)
    t.deliver(addr("/user/a"), 2)
    assert seen == [1]
    assert t.drops["dead"] == 1


def test_unregister_during_flush_drops_the_rest_as_dead(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    for i in range(4):
        t.deliver_path("/user/a", i)
    seen: list[Any] = []

    def handler(msg: Any) -> None:
        seen.append(msg)
        if msg == 1:
            t.unregister("/user/a")

    t.register("/user/a", handler)
    assert seen == [0, 1]
    assert t.drops == {**NO_DROPS, "dead": 2}


# ---------------------------------------------------------------- wait_for_path


async def test_wait_for_path_resolves_on_register(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    waiters = [asyncio.ensure_future(t.wait_for_path("/user/a")) for _ in range(3)]
    other = asyncio.ensure_future(t.wait_for_path("/user/b"))
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    t.register("/user/a", lambda m: None)
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert not other.done()
    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other
    assert t._waiters == {}


async def test_wait_for_path_returns_at_once_when_registered(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    t.register("/user/a", lambda m: None)
    coro = t.wait_for_path("/user/a")
    with pytest.raises(StopIteration):  # completes without ever suspending
        coro.send(None)
    assert t._waiters == {}


async def test_cancelled_waiter_leaves_no_residue(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(t.wait_for_path("/user/a"), 0.001)
    assert t._waiters == {}
    keep = asyncio.ensure_future(t.wait_for_path("/user/a"))
    gone = asyncio.ensure_future(t.wait_for_path("/user/a"))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert len(t._waiters["/user/a"]) == 1  # only the live waiter is left
    t.register("/user/a", lambda m: None)
    await asyncio.wait_for(keep, 1)
    assert t._waiters == {}


async def test_waiters_outlive_unregister(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    t.unregister("/user/a")
    waiter = asyncio.ensure_future(t.wait_for_path("/user/a"))
    await asyncio.sleep(0)
    t.register("/user/a", lambda m: None)
    await asyncio.wait_for(waiter, 1)


# ---------------------------------------------------------------- drops are logged


def test_drops_logged_at_powers_of_two(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    t = impl.LocalTransport()
    t.unregister("/user/dead")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        for i in range(9):
            t.deliver(addr("/user/dead"), i)
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 9
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert [r.args[2] for r in warnings] == [1, 2, 4, 8]  # type: ignore[index]
    assert all("/user/dead" in r.getMessage() and "dead" in r.getMessage() for r in records)
    assert {r.levelno for r in records} == {logging.WARNING, logging.DEBUG}


def test_each_reason_counts_and_logs_separately(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    t = impl.LocalTransport(max_pending_per_path=1, max_pending_paths=1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        t.deliver_path("/a", 1)
        t.deliver_path("/a", 2)  # overflow #1
        t.deliver_path("/b", 3)  # too_many_paths #1
        t.unregister("/a")  # dead #1 (the buffered message)
    assert t.drops == {**NO_DROPS, "dead": 1, "overflow": 1, "too_many_paths": 1}
    assert t.dropped == 3
    reasons = [r.args[1] for r in caplog.records if r.name == LOGGER]  # type: ignore[index]
    assert reasons == ["overflow", "too_many_paths", "dead"]


# ---------------------------------------------------------------- bounds against untrusted peers


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Bounded polling, for state no event announces (a loop timer's effect)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def pass_deadline(seconds: float) -> None:
    """Block until ``seconds`` of monotonic time have gone by (no loop runs meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() <= deadline:
        time.sleep(seconds / 4)


def test_temp_paths_are_never_buffered_nor_given_to_a_factory(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    # A peer's pre-sent "replies" must not answer an ask that registers the path later.
    t = impl.LocalTransport()
    made: list[str] = []
    t.register_path_factory("/", made.append)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        t.deliver_path("/temp/ask-0", "spoofed", 10)
        t.deliver(addr("/temp/ask-1"), "spoofed")
    got: list[Any] = []
    t.register("/temp/ask-0", got.append)
    t.register("/temp/ask-1", got.append)
    assert got == [] and made == []
    assert t.drops == {**NO_DROPS, "no_such_ask": 2}
    assert t.pending_bytes == 0
    assert [r.args[:2] for r in caplog.records] == [  # type: ignore[index]
        ("/temp/ask-0", "no_such_ask"),
        ("/temp/ask-1", "no_such_ask"),
    ]
    t.deliver_path("/temp/ask-0", "reply")  # while registered it is an ordinary path
    assert got == ["reply"]
    t.deliver_path("/user/temporary", 1)  # only the /temp/ prefix is special
    assert made == ["/user/temporary"]


def test_pending_buffers_are_bounded_in_total_bytes(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    t = impl.LocalTransport(max_pending_bytes=1000)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert t.deliver_path("/a", "a1", 600) is None
        t.deliver_path("/b", "b1", 401)  # 1001 > 1000: dropped
        t.deliver_path("/b", "b2", 400)  # exactly 1000: kept
        t.deliver_path("/a", "a2", 0)
        t.deliver_path("/a", "a3", 1)  # nothing is free
    assert t.pending_bytes == 1000
    assert t.drops == {**NO_DROPS, "pending_bytes": 2}
    assert [r.args[1] for r in caplog.records] == ["pending_bytes"] * 2  # type: ignore[index]
    got: list[Any] = []
    t.register("/a", got.append)  # the flush gives the bytes back
    assert got == ["a1", "a2"] and t.pending_bytes == 400
    t.deliver_path("/c", "c1", 600)
    t.unregister("/b")  # so does a drop
    assert t.pending_bytes == 600 and t.drops["dead"] == 1


def test_pending_bytes_default_to_8_mib_and_sizeof_when_size_unknown(
    impl: types.SimpleNamespace,
) -> None:
    t = impl.LocalTransport()
    mib = 1024 * 1024
    for i in range(9):
        t.deliver_path(f"/peer/{i}", i, mib)
    assert t.pending_bytes == 8 * mib and t.drops == {**NO_DROPS, "pending_bytes": 1}
    u = impl.LocalTransport()
    blob = b"x" * 5000
    u.deliver(addr("/a"), blob)  # local: no wire size, the shallow size is charged
    u.deliver_path("/a", [blob, blob])  # shallow: the list, not what it holds
    u.deliver_path("/a", "s", -7)  # any negative size means "not known"
    assert u.pending_bytes == sys.getsizeof(blob) + sys.getsizeof([blob, blob]) + sys.getsizeof("s")


def test_buffers_expire_lazily_without_a_loop(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    t = impl.LocalTransport(pending_ttl=0.02)
    for i in range(3):
        t.deliver_path("/a", i, 100)
    t.deliver_path("/c", "c", 5)
    pass_deadline(0.02)
    assert t.pending_bytes == 305 and t.drops == NO_DROPS  # no loop: nothing ran meanwhile
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        t.deliver_path("/b", "fresh", 10)  # the next deliver expires the due buffers
    assert t.drops == {**NO_DROPS, "expired": 4}
    assert t.pending_bytes == 10
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # one line per buffer, at the 1st and the 4th drop
    assert "3 messages to /a" in warnings[0] and "expired" in warnings[0]
    assert "1 messages to /c" in warnings[1]
    got: list[Any] = []
    t.register("/a", got.append)
    assert got == []
    pass_deadline(0.02)
    t.register("/b", got.append)  # register expires them too: nothing is flushed
    assert got == [] and t.pending_bytes == 0 and t.drops["expired"] == 5


async def test_buffers_expire_on_a_loop_timer_with_no_more_traffic(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    ttl = 0.1
    t = impl.LocalTransport(pending_ttl=ttl)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        t.deliver_path("/a", 1, 10)
        t.deliver_path("/a", 2, 10)
        first = time.monotonic()
        await wait_until(lambda: time.monotonic() > first + ttl / 2)
        t.deliver_path("/b", 3, 10)  # due later than /a: the timer is set again for it
        await wait_until(lambda: t.pending_bytes == 0)
    assert t.drops == {**NO_DROPS, "expired": 3}
    assert [r.args[:2] for r in caplog.records] == [(2, "/a"), (1, "/b")]  # type: ignore[index]
    t.deliver_path("/c", 4, 10)  # a buffer after all expired starts a new timer
    await wait_until(lambda: t.drops["expired"] == 4)
    assert t.pending_bytes == 0


async def test_expired_buffers_give_their_memory_back(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport(pending_ttl=0.1, max_pending_bytes=64 * 1024 * 1024)
    size = 64 * 1024
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(200):
            t.deliver_path(f"/peer/{i}", bytes(size), size)  # only the buffer holds them
        held = tracemalloc.get_traced_memory()[0] - before
        await wait_until(lambda: t.pending_bytes == 0)
        after = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held > 200 * size
    assert after < 256 * 1024, f"{after} bytes still held after expiry"
    assert t.drops["expired"] == 200


def test_an_infinite_ttl_never_expires(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport(pending_ttl=math.inf)
    t.deliver_path("/a", 1)
    pass_deadline(0.01)
    t.deliver_path("/b", 2)
    got: list[Any] = []
    t.register("/a", got.append)
    assert got == [1] and t.drops == NO_DROPS


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, True, "5", None])
def test_bad_pending_ttl_is_named(impl: types.SimpleNamespace, bad: object) -> None:
    with pytest.raises(ValueError, match="pending_ttl"):
        impl.LocalTransport(pending_ttl=bad)


def test_local_senders_are_refused_by_a_full_mailbox(
    impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    t = impl.LocalTransport()
    box = impl.Mailbox(capacity=2)
    t.register("/user/a", box)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i in range(4):
            t.deliver(addr("/user/a"), i)
    assert list(box.queue) == [0, 1]
    assert t.drops == {**NO_DROPS, "mailbox_full": 2}
    assert [r.args[:2] for r in caplog.records] == [  # type: ignore[index]
        ("/user/a", "mailbox_full"),
        ("/user/a", "mailbox_full"),
    ]
    box.queue.popleft()
    t.deliver(addr("/user/a"), 4)
    assert list(box.queue) == [1, 4]


def test_deliver_path_queues_and_returns_a_full_mailbox(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    box = impl.Mailbox(capacity=2)
    t.register("/user/a", box)
    assert t.deliver_path("/user/a", 1, 10) is None
    assert t.deliver_path("/user/a", 2, 10) is box  # at capacity: the peer should pause
    assert t.deliver_path("/user/a", 3) is box  # never refused: peers are paused, not dropped
    assert list(box.queue) == [1, 2, 3] and t.dropped == 0
    unbounded = impl.Mailbox()
    t.register("/user/b", unbounded)
    assert all(t.deliver_path("/user/b", i) is None for i in range(100))
    got: list[Any] = []
    t.register("/user/c", got.append)
    assert t.deliver_path("/user/c", 1) is None  # not a mailbox: always None


def test_deliver_path_returns_a_mailbox_full_of_bytes(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    box = impl.Mailbox(capacity=100, byte_capacity=1000)
    t.register("/user/a", box)
    assert t.deliver_path("/user/a", 1, 400) is None
    assert t.deliver_path("/user/a", 2, 500) is None and box.queued_bytes == 900
    assert t.deliver_path("/user/a", 3, 100) is box  # 1000 bytes: the peer should pause
    assert t.deliver_path("/user/a", 4, 400) is box  # never refused
    assert t.deliver_path("/user/a", 5) is box  # size not known: charged nothing, still full
    t.deliver(addr("/user/a"), "local")  # local senders are not refused for peers' bytes
    assert list(box.queue) == [1, 2, 3, 4, 5, "local"] and box.queued_bytes == 1400
    assert t.dropped == 0
    box.queue.popleft()
    box.taken()
    assert box.queued_bytes == 1000 and t.deliver_path("/user/a", 6, 0) is box
    for _ in range(2):
        box.queue.popleft()
        box.taken()
    assert box.queued_bytes == 400 and t.deliver_path("/user/a", 7, 100) is None


def test_a_factory_made_mailbox_is_charged_its_first_message(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    boxes: list[Any] = []

    def spawn(path: str) -> None:
        boxes.append(impl.Mailbox(byte_capacity=100))
        t.register(path, boxes[-1])

    t.register_path_factory("/user/", spawn)
    assert t.deliver_path("/user/new", "first", 60) is None
    assert t.deliver_path("/user/new", "second", 60) is boxes[0]
    assert boxes[0].queued_bytes == 120 and list(boxes[0].queue) == ["first", "second"]


def test_flush_into_a_mailbox_is_not_refused(impl: types.SimpleNamespace) -> None:
    t = impl.LocalTransport()
    for i in range(5):
        t.deliver(addr("/user/a"), i)
    box = impl.Mailbox(capacity=2)
    t.register("/user/a", box)
    assert list(box.queue) == [0, 1, 2, 3, 4] and t.dropped == 0


# ---------------------------------------------------------------- protocol, construction, class


def test_message_transport_protocol(impl: types.SimpleNamespace) -> None:
    class NullTransport:
        def deliver(self, address: ActorAddress, msg: object) -> None:
            pass

    assert isinstance(impl.LocalTransport(), pure_local.MessageTransport)
    assert isinstance(NullTransport(), pure_local.MessageTransport)
    assert not isinstance(object(), pure_local.MessageTransport)
    module = importlib.import_module(impl.LocalTransport.__module__)
    assert module.MessageTransport is pure_local.MessageTransport
    assert (module.DROP_DEAD, module.DROP_OVERFLOW, module.DROP_TOO_MANY_PATHS) == (
        "dead",
        "overflow",
        "too_many_paths",
    )


@pytest.mark.parametrize(
    "name", ["max_pending_per_path", "max_pending_paths", "max_dead_paths", "max_pending_bytes"]
)
@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_bad_constructor_args_name_the_argument(
    impl: types.SimpleNamespace, name: str, bad: object
) -> None:
    with pytest.raises(ValueError, match=name):
        impl.LocalTransport(**{name: bad})


def test_constructor_is_keyword_only_and_accepts_huge_limits(impl: types.SimpleNamespace) -> None:
    with pytest.raises(TypeError):
        impl.LocalTransport(64)
    huge = 2**70
    t = impl.LocalTransport(max_pending_per_path=huge, max_pending_paths=huge, max_dead_paths=huge)
    t.deliver_path("/a", 1)
    got: list[Any] = []
    t.register("/a", got.append)
    assert got == [1]


def test_drops_dict_is_per_instance_and_replaceable(impl: types.SimpleNamespace) -> None:
    a, b = impl.LocalTransport(), impl.LocalTransport()
    a.unregister("/x")
    a.deliver_path("/x", 1)
    assert (a.drops["dead"], b.drops["dead"]) == (1, 0)
    a.drops = dict(NO_DROPS)
    a.deliver_path("/x", 2)
    assert a.drops["dead"] == 1 and a.dropped == 1


def test_subclassable_and_weakrefable(impl: types.SimpleNamespace) -> None:
    class Counting(impl.LocalTransport):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__(max_pending_per_path=4)
            self.routed: list[str] = []

        def deliver_path(self, path: str, msg: Any) -> None:
            self.routed.append(path)
            super().deliver_path(path, msg)

    t = Counting()
    ref = weakref.ref(t)
    assert ref() is t
    got: list[Any] = []
    t.deliver_path("/a", 1)
    t.register("/a", got.append)  # the flush routes through the override
    t.deliver(addr("/a"), 2)  # deliver does not go through deliver_path
    assert got == [1, 2]
    assert t.routed == ["/a", "/a"]
    del t
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------- the twins agree


def _fast_module() -> types.ModuleType | None:
    try:
        return importlib.import_module("casty._fast.local")
    except ImportError:
        return None


FAST = _fast_module()
PATHS = ["/a", "/b", "/w/1", "/w/2", "/x/1", "/temp/1"]
LIMIT = st.integers(min_value=0, max_value=3)
MAILBOXES = [importlib.import_module("casty._fast.mailbox") if FAST else None, importlib.import_module(
    "casty.transport.mailbox"
)]


class TwinsAgree(RuleBasedStateMachine):
    """The same random operations on both twins give the same deliveries and drops."""

    def __init__(self) -> None:
        super().__init__()
        self.twins: list[Any] = []
        self.logs: list[list[tuple[Any, ...]]] = []

    @initialize(per_path=LIMIT, paths=LIMIT, dead=LIMIT, nbytes=st.integers(0, 40))
    def make(self, per_path: int, paths: int, dead: int, nbytes: int) -> None:
        assert FAST is not None
        self.boxes: list[list[Any]] = [[], []]
        for module in (FAST, pure_local):
            t = module.LocalTransport(
                max_pending_per_path=per_path,
                max_pending_paths=paths,
                max_dead_paths=dead,
                max_pending_bytes=nbytes,
                pending_ttl=math.inf,  # time must not tell the twins apart
            )
            self.twins.append(t)
            self.logs.append([])

    def _handler(self, i: int, name: str, raises: bool) -> Callable[[Any], None]:
        log = self.logs[i]

        def handler(msg: Any) -> None:
            log.append((name, msg))
            if raises:
                raise Boom(name)

        return handler

    def _each(self, op: Callable[[int, Any], None]) -> None:
        for i, t in enumerate(self.twins):
            try:
                op(i, t)
            except Boom as exc:
                self.logs[i].append(("raised", str(exc)))

    @rule(path=st.sampled_from(PATHS), name=st.sampled_from("hk"), raises=st.booleans())
    def register(self, path: str, name: str, raises: bool) -> None:
        self._each(lambda i, t: t.register(path, self._handler(i, f"{name}{path}", raises)))

    @rule(path=st.sampled_from(PATHS), capacity=LIMIT, byte_capacity=st.integers(0, 30))
    def register_mailbox(self, path: str, capacity: int, byte_capacity: int) -> None:
        def install(i: int, t: Any) -> None:
            box = MAILBOXES[i].Mailbox(capacity, byte_capacity)  # type: ignore[union-attr]
            self.boxes[i].append(box)
            t.register(path, box)

        self._each(install)

    @rule(which=st.integers(0, 5))
    def take(self, which: int) -> None:
        """The actor's loop takes a message from a mailbox; on_space callbacks are logged."""
        for i, boxes in enumerate(self.boxes):
            if not boxes:
                return
            n = which % len(boxes)
            box = boxes[n]
            if box.queue:
                box.queue.popleft()
                if box.space_wanted:
                    box.taken()
            if box.full:
                box.on_space(lambda i=i, n=n: self.logs[i].append(("space", n)))

    @rule(path=st.sampled_from(PATHS))
    def unregister(self, path: str) -> None:
        self._each(lambda i, t: t.unregister(path))

    @rule(
        path=st.sampled_from(PATHS),
        msg=st.integers(0, 99),
        by_path=st.booleans(),
        nbytes=st.integers(-1, 15),
    )
    def deliver(self, path: str, msg: int, by_path: bool, nbytes: int) -> None:
        if by_path:
            def send(i: int, t: Any) -> None:
                full = t.deliver_path(path, msg, nbytes)
                self.logs[i].append(("full", None if full is None else self.boxes[i].index(full)))

            self._each(send)
        else:
            self._each(lambda i, t: t.deliver(addr(path), msg))

    @rule(prefix=st.sampled_from(["/w/", "/x", "/"]), mode=st.sampled_from(["reg", "noop", "kill"]))
    def factory(self, prefix: str, mode: str) -> None:
        def install(i: int, t: Any) -> None:
            log = self.logs[i]

            def factory(path: str) -> None:
                log.append(("factory", mode, path))
                if mode == "reg":
                    t.register(path, self._handler(i, f"f{path}", False))
                elif mode == "kill":
                    t.unregister(path)

            t.register_path_factory(prefix, factory)

        self._each(install)

    @invariant()
    def same(self) -> None:
        if not self.twins:
            return
        fast, pure = self.twins
        assert self.logs[0] == self.logs[1]
        assert fast.drops == pure.drops
        assert fast.dropped == pure.dropped
        assert fast.pending_bytes == pure.pending_bytes
        assert [list(b.queue) for b in self.boxes[0]] == [list(b.queue) for b in self.boxes[1]]
        state = [[(b.queued_bytes, b.full, b.space_wanted) for b in boxes] for boxes in self.boxes]
        assert state[0] == state[1]
        assert [fast.is_registered(p) for p in PATHS] == [pure.is_registered(p) for p in PATHS]


@pytest.mark.skipif(FAST is None, reason="casty._fast.local is not built")
def test_twins_agree() -> None:
    state = TwinsAgree.TestCase
    state.settings = settings(
        max_examples=150,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    state().runTest()


def test_drop_lines_escape_a_path_a_peer_chose(impl: types.SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    t = impl.LocalTransport()
    forged = "/user/x\nERROR casty: forged line"
    t.register(forged, print)
    t.unregister(forged)
    t.deliver_path(forged, 1)
    [line] = [r.getMessage() for r in caplog.records if "dropped a message" in r.getMessage()]
    assert "\n" not in line and "'/user/x\\nERROR casty: forged line'" in line
