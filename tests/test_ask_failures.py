"""Asks that cannot succeed fail at once with AskFailed, saying why; only unanswered ones time out."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from casty import ActorAddress, AskFailed
from tests.remote_helpers import Echo, Failures, echo_behavior, node

SOON = 5.0  # far below the asks' timeout of 60 s: a failure must come at once


def closed_port() -> int:
    """A port on 127.0.0.1 that refuses connections (bound, never listened on, kept bound)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _KEEP.append(sock)
    return int(sock.getsockname()[1])


_KEEP: list[socket.socket] = []


async def ask_soon(system: Any, ref: Any, message: Any = None) -> Any:
    make = message or (lambda r: Echo("hi", r))
    return await asyncio.wait_for(system.ask(ref, make, timeout=60), SOON)


async def test_a_request_that_cannot_be_serialized_fails_the_ask() -> None:
    class NotRegistered:
        def __init__(self, reply_to: Any) -> None:
            self.reply_to = reply_to

    async with node("a") as a, node("b") as b:
        b.spawn(echo_behavior(), "echo")
        with pytest.raises(AskFailed) as info:
            await ask_soon(a, a.ref(b.address.with_path("/user/echo")), NotRegistered)
        assert info.value.reason == "send_failed"
        assert info.value.detail.startswith("serialization: ") and "NotRegistered" in info.value.detail


async def test_a_refused_connect_fails_the_asks_waiting_for_it() -> None:
    failures = Failures()
    port = closed_port()
    async with node("a", on_send_failure=failures) as a:
        ref = a.ref(f"casty://b@127.0.0.1:{port}/user/echo")
        results = await asyncio.gather(*(ask_soon(a, ref) for _ in range(3)), return_exceptions=True)
        assert [type(r) for r in results] == [AskFailed] * 3
        assert all(r.reason == "send_failed" and r.detail.startswith("connect_failed") for r in results)
        # and while the address is blacklisted, at once too
        with pytest.raises(AskFailed, match=r"failed \(send_failed\): blacklisted"):
            await ask_soon(a, ref)
        assert [f.reason for f in failures] == ["connect_failed", "blacklisted"]  # the user hears too


async def test_an_unknown_node_id_fails_the_ask() -> None:
    async with node("a") as a:
        ref = a.remote.make_ref(ActorAddress("b", "/user/echo", node_id="nobody"))
        with pytest.raises(AskFailed) as info:
            await ask_soon(a, ref)
        assert info.value.reason == "send_failed" and "unknown_node" in info.value.detail


async def test_a_dial_policy_refusal_fails_the_ask() -> None:
    async with node("a", allow_dial=lambda host, port: False) as a:
        with pytest.raises(AskFailed, match="not_allowed"):
            await ask_soon(a, a.ref(f"casty://b@127.0.0.1:{closed_port()}/user/echo"))


async def test_an_ask_sent_over_a_live_connection_is_not_failed_by_a_later_failure() -> None:
    async with node("a") as a, node("b") as b:
        b.spawn(echo_behavior(), "echo")
        echo = a.ref(b.address.with_path("/user/echo"))
        assert await ask_soon(a, echo) == "hi"
        port = closed_port()
        with pytest.raises(AskFailed):  # another node's failure ...
            await ask_soon(a, a.ref(f"casty://c@127.0.0.1:{port}/user/echo"))
        assert await ask_soon(a, echo) == "hi"  # ... fails nothing sent elsewhere


async def test_an_unanswered_ask_still_times_out() -> None:
    async with node("a") as a, node("b") as b:
        b.spawn(echo_behavior(), "echo")
        silent = a.ref(b.address.with_path("/user/nobody-here"))
        with pytest.raises(TimeoutError):
            await a.ask(silent, lambda r: Echo("hi", r), timeout=0.3)
