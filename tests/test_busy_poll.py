"""Busy polling: the BusyPoller itself, its config knob, and two nodes asking with it on.

The poller is pure Python (no twin); the two-node test runs on whichever framing
twin is live, and the suite runs once per implementation.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from casty import RemoteActorSystem, TcpTransportConfig
from casty.transport.busy_poll import BusyPoller
from tests.remote_helpers import Echo, echo_behavior, node

WINDOW = 0.001


class FakeClock:
    """A clock the test moves by hand, so when the spin stops never depends on timing."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def next_spin(poller: BusyPoller, timeout: float = 1.0) -> None:
    """Return once the spin has run at least one more turn."""
    start = poller.spins
    async with asyncio.timeout(timeout):
        while poller.spins == start:
            await asyncio.sleep(0)


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# -- config ------------------------------------------------------------------------

def test_busy_poll_is_off_by_default() -> None:
    assert TcpTransportConfig("127.0.0.1", 0).busy_poll == 0.0


@pytest.mark.parametrize("value", [0, 0.0, 200e-6, 1])
def test_busy_poll_accepts_non_negative_seconds(value: float) -> None:
    assert TcpTransportConfig("127.0.0.1", 0, busy_poll=value).busy_poll == value


@pytest.mark.parametrize("value", [-1e-6, math.inf, math.nan, True, "0.001", None])
def test_busy_poll_refuses_bad_values(value: Any) -> None:
    with pytest.raises(ValueError, match=r"TcpTransportConfig\.busy_poll must be a non-negative finite number") as err:
        TcpTransportConfig("127.0.0.1", 0, busy_poll=value)
    assert f"got {value!r}" in str(err.value)


def test_busy_poll_reaches_the_config_from_remote_actor_system() -> None:
    assert RemoteActorSystem("a", "127.0.0.1", 0, busy_poll=250e-6).config.busy_poll == 250e-6
    with pytest.raises(ValueError, match="busy_poll"):
        RemoteActorSystem("a", "127.0.0.1", 0, busy_poll=-1)


@pytest.mark.parametrize("window", [0, -1.0, math.inf, math.nan, True, "1"])
def test_poller_refuses_a_bad_window(window: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="BusyPoller window must be a positive finite number"):
            BusyPoller(loop, window)
    finally:
        loop.close()


# -- the poller ----------------------------------------------------------------------

@pytest.mark.parametrize("yield_cpu", [True, False])
async def test_poke_starts_a_spin_that_stops_a_window_after_the_last_poke(yield_cpu: bool) -> None:
    clock = FakeClock()
    poller = BusyPoller(asyncio.get_running_loop(), WINDOW, clock=clock, yield_cpu=yield_cpu)
    assert not poller.spinning and poller.spins == 0
    poller.poke()
    assert poller.spinning
    await next_spin(poller)
    # however many loop turns pass, the spin goes on while the window is open
    await turns(50)
    assert poller.spinning and poller.spins >= 50
    clock.now += WINDOW * 0.9
    await turns(20)
    assert poller.spinning
    clock.now += WINDOW * 0.2
    await asyncio.wait_for(poller.wait_idle(), 1.0)
    assert not poller.spinning
    spins = poller.spins
    await turns(20)
    assert poller.spins == spins  # no callback left behind
    poller.close()


async def test_a_poke_while_spinning_extends_the_window() -> None:
    clock = FakeClock()
    poller = BusyPoller(asyncio.get_running_loop(), WINDOW, clock=clock)
    poller.poke()
    await next_spin(poller)  # the spin saw the poke at t=0
    clock.now += WINDOW * 0.8
    poller.poke()
    await next_spin(poller)  # ... and this one at t=0.8w
    clock.now += WINDOW * 0.7  # 1.5w after the first poke, 0.7w after the last
    await turns(20)
    assert poller.spinning
    clock.now += WINDOW * 0.4
    await asyncio.wait_for(poller.wait_idle(), 1.0)
    assert not poller.spinning
    poller.poke()  # an idle poller starts again
    assert poller.spinning
    await next_spin(poller)
    poller.close()


async def test_the_spin_stops_on_the_real_clock() -> None:
    poller = BusyPoller(asyncio.get_running_loop(), WINDOW)
    poller.poke()
    await asyncio.wait_for(poller.wait_idle(), 1.0)
    assert not poller.spinning and poller.spins > 0
    poller.close()


async def test_close_stops_the_spin_for_good() -> None:
    poller = BusyPoller(asyncio.get_running_loop(), WINDOW, clock=FakeClock())
    poller.poke()
    await next_spin(poller)
    idle = asyncio.ensure_future(poller.wait_idle())
    await turns(2)
    assert not idle.done()
    poller.close()
    assert poller.closed and not poller.spinning
    await asyncio.wait_for(idle, 1.0)  # a waiter is released by close
    spins = poller.spins
    poller.poke()
    assert not poller.spinning
    await turns(20)
    assert poller.spins == spins
    await asyncio.wait_for(poller.wait_idle(), 1.0)
    poller.close()  # twice is harmless
    assert "closed" in repr(poller)


async def test_close_before_the_first_spin_leaves_nothing_scheduled() -> None:
    poller = BusyPoller(asyncio.get_running_loop(), WINDOW, clock=FakeClock())
    poller.poke()
    poller.close()
    await turns(5)
    assert poller.spins == 0 and not poller.spinning


# -- two nodes -----------------------------------------------------------------------

async def test_nodes_without_busy_poll_have_no_poller() -> None:
    async with node("a") as a:
        assert a.node.busy_poller is None


async def test_ask_across_nodes_with_busy_poll_then_both_go_idle() -> None:
    async with node("a", busy_poll=200e-6) as a, node("b", busy_poll=200e-6) as b:
        b.spawn(echo_behavior(), "echo")
        echo = a.ref(b.address.with_path("/user/echo"))
        for i in range(20):
            assert await a.ask(echo, lambda r, i=i: Echo(f"hi {i}", r), timeout=5) == f"hi {i}"
        pa, pb = a.node.busy_poller, b.node.busy_poller
        assert pa is not None and pb is not None
        assert pa.window == pb.window == 200e-6
        # the asker spun after its requests, the echo node after its replies
        assert pa.spins > 0 and pb.spins > 0
        await asyncio.wait_for(asyncio.gather(pa.wait_idle(), pb.wait_idle()), 1.0)
        assert not pa.spinning and not pb.spinning
        # send_frame pokes too (an unknown frame type, which the peer ignores)
        assert a.node.send_frame(b.address.host or "", b.address.port or 0, 0x42, b"x")
        assert pa.spinning
        await asyncio.wait_for(pa.wait_idle(), 1.0)
    assert pa.closed and pb.closed and not pa.spinning and not pb.spinning
