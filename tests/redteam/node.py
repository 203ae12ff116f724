"""One red-team node: a RemoteActorSystem that asks and tells its peer and reports every 100 ms.

Run by ``tests/redteam/redteam.py`` as ``python -m tests.redteam.node NAME``, in JSON lines:

* prints ``{"event": "ready", "port": P, "extensions": bool}``; it serves ``/user/echo``
  (answers ``Echo(text, reply_to)`` with ``text``), ``/user/sink`` (counts ``Ping(seq)``
  and the gaps in their seqs) and ``/user/slow`` (takes 50 ms per message);
* ``{"cmd": "peer", "name": N, "port": P}`` starts the healthy traffic to that peer: every
  5 ms one ask of its echo (timeout 2 s, each ask its own task, at most 1,000 in flight) and
  one ``Ping`` told to its sink;
* ``{"cmd": "exit"}`` shuts the node down.

Every ~100 ms it prints a report: the largest lateness of its own 10 ms timer since the
last report (the event loop's stall), RSS from ``/proc/self/statm``, open fds, counters of
its asks (answered right, answered with the attacker's ``FORGED`` value, answered with
anything else wrong, timed out, failed otherwise), pings received and missing, errors that
reached the loop's exception handler, and the send failures its node reported, by reason.
Only public API is used, so the same program runs before and after the issue 20 fixes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

import casty
from casty import Behavior, Behaviors, RemoteActorSystem, SendFailure, TcpTransportConfig
from tests.remote_helpers import Echo, Ping, registry

ASK_EVERY = 0.005
ASK_TIMEOUT = 2.0
MAX_IN_FLIGHT = 1000
TICK = 0.01
REPORT_EVERY = 0.1
SLOW_SECONDS = 0.05
#: what attackers answer asks with: a reply equal to it is a spoofed one
FORGED = "FORGED"

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.failures: dict[str, int] = {}
        #: the peers this node was told of: with an allow_dial policy (where this casty has
        #: one), the only addresses it dials, so a peer cannot make it dial others
        self.peers: set[tuple[str, int]] = set()
        policy: dict[str, Any] = {}
        if "allow_dial" in getattr(TcpTransportConfig, "__dataclass_fields__", {}):
            policy["allow_dial"] = self._may_dial
        self.system = RemoteActorSystem(
            name, "127.0.0.1", 0, registry=registry(), connect_timeout=2.0,
            on_send_failure=self._on_failure, **policy,
        )
        self.asks = {"started": 0, "ok": 0, "forged": 0, "wrong": 0, "timeout": 0, "error": 0, "skipped": 0}
        self.in_flight = 0
        self.pings = {"sent": 0, "received": 0, "missing": 0}
        self._last_ping = -1
        self.loop_errors = 0
        self.slow_handled = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _may_dial(self, host: str, port: int) -> bool:
        return (host, port) in self.peers

    def _on_failure(self, failure: SendFailure) -> None:
        self.failures[failure.reason] = self.failures.get(failure.reason, 0) + failure.count

    def echo(self) -> Behavior[Any]:
        async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
            if isinstance(msg, Echo):
                msg.reply_to.tell(msg.text)
            return Behaviors.same()

        return Behaviors.receive(receive)

    def sink(self) -> Behavior[Any]:
        async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
            if isinstance(msg, Ping):
                self.pings["received"] += 1
                # a gap in the seqs: pings lost on the way (the transport keeps their order)
                if msg.seq > self._last_ping + 1:
                    self.pings["missing"] += msg.seq - self._last_ping - 1
                self._last_ping = max(self._last_ping, msg.seq)
            return Behaviors.same()

        return Behaviors.receive(receive)

    def slow(self) -> Behavior[Any]:
        async def receive(ctx: Any, msg: Any) -> Behavior[Any]:
            await asyncio.sleep(SLOW_SECONDS)
            self.slow_handled += 1
            return Behaviors.same()

        return Behaviors.receive(receive)

    async def ask_once(self, echo: Any, n: int) -> None:
        text = f"q{n}"
        try:
            got: object = await self.system.ask(echo, lambda r: Echo(text, r), timeout=ASK_TIMEOUT)
        except TimeoutError:
            self.asks["timeout"] += 1
        except Exception:
            self.asks["error"] += 1
        else:
            key = "ok" if got == text else "forged" if got == FORGED else "wrong"
            self.asks[key] += 1
        finally:
            self.in_flight -= 1

    async def traffic(self, peer: str, port: int) -> None:
        """Every ASK_EVERY: one ask of the peer's echo, one Ping to its sink."""
        echo = self.system.ref(f"casty://{peer}@127.0.0.1:{port}/user/echo")
        sink = self.system.ref(f"casty://{peer}@127.0.0.1:{port}/user/sink")
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if self.in_flight < MAX_IN_FLIGHT:
                n = self.asks["started"]
                self.asks["started"] += 1
                self.in_flight += 1
                task = loop.create_task(self.ask_once(echo, n))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                self.asks["skipped"] += 1
            sink.tell(Ping(self.pings["sent"]))
            self.pings["sent"] += 1
            due += ASK_EVERY
            delay = due - loop.time()
            if delay < 0:  # after a stall: carry on from now, no burst to catch up
                due, delay = loop.time(), 0
            await asyncio.sleep(delay)

    async def report(self) -> None:
        """Measure the loop's lateness on a TICK timer; print a report every REPORT_EVERY."""
        max_lag = 0.0
        last = time.monotonic()
        while True:
            before = time.monotonic()
            await asyncio.sleep(TICK)
            now = time.monotonic()
            max_lag = max(max_lag, now - before - TICK)
            if now - last >= REPORT_EVERY:
                emit(
                    event="report", lag_ms=round(max_lag * 1000, 1), rss=rss_bytes(), fds=open_fds(),
                    asks=self.asks, in_flight=self.in_flight, pings=self.pings,
                    loop_errors=self.loop_errors, failures=self.failures, slow_handled=self.slow_handled,
                )
                max_lag, last = 0.0, now


async def main(name: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"[{name}] %(levelname)s %(name)s: %(message)s")
    node = Node(name)
    loop = asyncio.get_running_loop()

    def on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        node.loop_errors += 1
        loop.default_exception_handler(context)

    loop.set_exception_handler(on_loop_error)
    async with node.system as system:
        system.spawn(node.echo(), "echo")
        system.spawn(node.sink(), "sink")
        system.spawn(node.slow(), "slow")
        emit(event="ready", port=system.address.port, extensions=casty.EXTENSIONS_ACTIVE)
        background = [loop.create_task(node.report())]
        try:
            while True:
                line = await loop.run_in_executor(None, sys.stdin.readline)
                if not line:
                    break
                cmd = json.loads(line)
                if cmd["cmd"] == "peer":
                    node.peers.add(("127.0.0.1", cmd["port"]))
                    background.append(loop.create_task(node.traffic(cmd["name"], cmd["port"])))
                elif cmd["cmd"] == "exit":
                    break
        finally:
            for task in [*background, *node._tasks]:
                task.cancel()
            await asyncio.gather(*background, *node._tasks, return_exceptions=True)


if __name__ == "__main__":
    casty.run(main(sys.argv[1]))
