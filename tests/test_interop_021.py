"""Interoperability with a real casty 0.21.0 node (issue 16, item 6).

A 0.21 node from PyPI runs in a subprocess under Python 3.12 (``make casty021`` builds its
venv; ``make test`` passes it in ``CASTY021_PYTHON``).  Our node speaks 0.21's JSON
payloads through :class:`tests.interop.json021.Json021Serializer`; the frames, the
envelope and the handshake are our own code's.  Tells (in order) and asks go both ways,
with our node dialing first and with the 0.21 node dialing first, and with each node's
address the smaller one: casty 0.21 keeps one connection per pair and, when both dial,
closes the one dialed by the larger (host, port), which decides which connection carries
what.  Loopback only; every test is bounded in time and the subprocess is always killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from casty import Behavior, Behaviors, RemoteActorSystem
from tests.interop.json021 import Json021Serializer
from tests.interop.messages import WIRE_NAMES, Echo, Text

pytestmark = pytest.mark.slow

NODE021 = Path(__file__).resolve().parent / "interop" / "node021.py"
#: seconds for one whole test, and for one command of the 0.21 node
TEST_TIMEOUT = 60.0
CMD_TIMEOUT = 20.0
#: tells each way, per test
N_TELLS = 200


def _python021() -> str:
    python = os.environ.get("CASTY021_PYTHON")
    if not python:
        pytest.skip("CASTY021_PYTHON is not set: run `make casty021` (or `make test`, which sets it)")
    if not os.access(python, os.X_OK):
        pytest.fail(f"CASTY021_PYTHON={python!r} is not an executable: run `make casty021`")
    return python


class Node021:
    """The 0.21 node subprocess: one JSON command line in, one JSON line out."""

    def __init__(self, proc: asyncio.subprocess.Process, host: str, port: int) -> None:
        self.proc = proc
        self.host = host
        self.port = port

    def uri(self, path: str) -> str:
        return f"casty://c021@{self.host}:{self.port}{path}"

    async def cmd(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), CMD_TIMEOUT)
        if not line:
            raise AssertionError(f"the casty 0.21 node exited (code {await self.proc.wait()}) on {command}")
        answer: dict[str, Any] = json.loads(line)
        return answer


@contextlib.asynccontextmanager
async def node021(host: str, stderr: Any) -> AsyncIterator[Node021]:
    """Start the 0.21 node on ``host``; on the way out ask it to exit, and kill it regardless."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = await asyncio.create_subprocess_exec(
        _python021(), "-E", "-s", str(NODE021), host,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), CMD_TIMEOUT)
        assert line, f"the casty 0.21 node did not start (exit code {await proc.wait()})"
        hello = json.loads(line)
        assert hello["version"] == "0.21.0"
        yield Node021(proc, host, hello["port"])
        await Node021(proc, host, hello["port"]).cmd(op="received")  # still alive: it did not crash
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


class Sink:
    """What our sink actor got, and a way to await a count of it."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.others: list[Any] = []
        self._changed = asyncio.Event()

    async def receive(self, ctx: Any, msg: Any) -> Behavior[Any]:
        if isinstance(msg, Text):
            self.texts.append(msg.text)
        else:
            self.others.append(msg)
        self._changed.set()
        return Behaviors.same()

    async def wait_for(self, n: int) -> list[str]:
        while len(self.texts) < n:
            self._changed.clear()
            await self._changed.wait()
        return self.texts


async def echo(ctx: Any, msg: Any) -> Behavior[Any]:
    if isinstance(msg, Echo):
        msg.reply_to.tell(msg.text)
    return Behaviors.same()


async def ours_to_021(system: RemoteActorSystem, node: Node021, tag: str) -> None:
    """Our node tells 0.21's sink N texts, asks its echo, and 0.21 got them all, in order."""
    sink = system.ref(node.uri("/sink"))
    texts = [f"{tag}-{i}" for i in range(N_TELLS)]
    for text in texts:
        sink.tell(Text(text))
    remote_echo = system.ref(node.uri("/echo"))
    for i in range(3):
        assert await system.ask(remote_echo, lambda r, i=i: Echo(f"{tag}-ask-{i}", r), timeout=CMD_TIMEOUT) == (
            f"{tag}-ask-{i}"
        )
    got = await node.cmd(op="received", count=N_TELLS, timeout=CMD_TIMEOUT, clear=True)
    assert got["received"] == texts


async def from_021_to_ours(system: RemoteActorSystem, node: Node021, sink: Sink, tag: str) -> None:
    """0.21 tells our sink N texts, asks our echo; our sink got them all, in order."""
    base = system.address.to_uri().rstrip("/")
    texts = [f"{tag}-{i}" for i in range(N_TELLS)]
    assert await node.cmd(op="tell", uri=f"{base}/user/sink", texts=texts) == {"ok": True}
    for i in range(3):
        answer = await node.cmd(op="ask", uri=f"{base}/user/echo", text=f"{tag}-ask-{i}", timeout=CMD_TIMEOUT)
        assert answer == {"reply": f"{tag}-ask-{i}"}
    assert await sink.wait_for(N_TELLS) == texts
    assert sink.others == []
    sink.texts.clear()


# (our host, the 0.21 node's host): 0.21 compares (host, port) to pick one connection per pair
LAYOUTS = {
    "ours-smaller": ("127.0.0.1", "127.0.0.2"),
    "ours-larger": ("127.0.0.2", "127.0.0.1"),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("first", ["ours-first", "021-first"])
async def test_tells_and_asks_both_ways(first: str, layout: str, tmp_path: Path) -> None:
    our_host, their_host = LAYOUTS[layout]
    sink = Sink()
    with open(tmp_path / "node021.stderr", "w+b") as stderr:
        try:
            async with asyncio.timeout(TEST_TIMEOUT), node021(their_host, stderr) as node:
                system = RemoteActorSystem("ours", our_host, 0, serializer=Json021Serializer(WIRE_NAMES))
                async with system:
                    system.spawn(Behaviors.receive(sink.receive), "sink")
                    system.spawn(Behaviors.receive(echo), "echo")
                    if first == "ours-first":
                        await ours_to_021(system, node, "a")
                        await from_021_to_ours(system, node, sink, "b")
                    else:
                        await from_021_to_ours(system, node, sink, "a")
                        await ours_to_021(system, node, "b")
                    # Both ways again, now that each side has what it dialed (and was dialed).
                    await ours_to_021(system, node, "c")
                    await from_021_to_ours(system, node, sink, "d")
                    assert system.stats().drops == {}
                    assert system.stats().inbound_dropped == 0
            stderr.seek(0)
            complaints = [ln for ln in stderr.read().decode(errors="replace").splitlines() if ln.strip()]
            assert complaints == [], "the casty 0.21 node logged warnings or errors"
        except BaseException:
            stderr.seek(0)
            print("casty 0.21 node stderr:\n" + stderr.read().decode(errors="replace")[-4000:])
            raise
