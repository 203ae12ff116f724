"""A casty 0.21.0 node on loopback, driven over stdin (run by the 0.21 venv's Python 3.12).

Started by tests/test_interop_021.py as ``python -E -s node021.py [HOST]`` (HOST a
loopback address, 127.0.0.1 by default; the port is picked by the OS): the script's own
directory is on ``sys.path`` (for ``messages``) and this tree's ``casty`` is not, so
``import casty`` is the installed 0.21.0.

It runs a ``ClusteredActorSystem`` named ``c021`` without seeds (0.21's own wiring of
``tcp_transport`` + ``RemoteTransport`` + ``InboundMessageHandler``) with 0.21's
``JsonSerializer``, spawns ``/echo`` (tells ``msg.text`` to ``msg.reply_to``) and
``/sink`` (records every message), prints ``{"port": N, "version": ...}`` as a JSON
line, then answers one JSON line per JSON command read from stdin:

* ``{"op": "tell", "uri": U, "texts": [T, ...]}`` -> ``{"ok": true}`` once each ``Text(T)``
  is told, in order
* ``{"op": "ask", "uri": U, "text": T, "timeout": S}`` -> ``{"reply": R}`` or
  ``{"error": "..."}`` (``Echo(T, reply_to)``)
* ``{"op": "received", "count": N, "timeout": S}`` -> ``{"received": [...]}``: the sink's
  texts in arrival order, once it has N of them or S seconds passed (a message that is
  not a ``Text`` is recorded as ``"<type name>"``); with ``"clear": true`` the record
  starts over
* ``{"op": "exit"}`` (or end of input) -> the node shuts down and the process exits
"""

# ruff: noqa: I001  (this casty is 0.21.0, with modules this tree lacks: ruff sorts it as ours)
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from typing import Any

import casty
from casty import Behaviors, ClusteredActorSystem
from casty.core.address import ActorAddress
from casty.remote.serialization import JsonSerializer, TypeRegistry
from messages import WIRE_NAMES, Echo, Text


class NamedRegistry(TypeRegistry):
    """0.21's registry names a class ``module.QualName`` only; this one takes a name.

    ``TypeRegistry.type_name`` and ``resolve`` read these two maps first, so the
    classes travel (and are found) under :data:`messages.WIRE_NAMES`.
    """

    def register_as(self, cls: type, name: str) -> None:
        self._name_to_type[name] = cls
        self._type_to_name[cls] = name


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(host: str) -> None:
    registry = NamedRegistry()
    for cls, name in WIRE_NAMES.items():
        registry.register_as(cls, name)
    received: list[str] = []
    changed = asyncio.Event()

    async def echo(ctx: Any, msg: Any) -> Any:
        if isinstance(msg, Echo):
            msg.reply_to.tell(msg.text)
        return Behaviors.same()

    async def sink(ctx: Any, msg: Any) -> Any:
        received.append(msg.text if isinstance(msg, Text) else f"<{type(msg).__name__}>")
        changed.set()
        return Behaviors.same()

    system = ClusteredActorSystem(
        name="c021", host=host, port=0, node_id="c021", serializer=JsonSerializer(registry)
    )
    async with system:
        system.spawn(Behaviors.receive(echo), "echo")
        system.spawn(Behaviors.receive(sink), "sink")
        emit({"port": system.self_node.port, "version": casty.__version__})

        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        while line := await stdin.readline():
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "exit":
                break
            if op == "received":
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(cmd.get("timeout", 0)):
                        while len(received) < cmd.get("count", 0):
                            changed.clear()
                            await changed.wait()
                emit({"received": list(received)})
                if cmd.get("clear"):
                    received.clear()
                continue
            ref = system._remote.make_ref(ActorAddress.from_uri(cmd["uri"]))
            if op == "tell":
                for text in cmd["texts"]:
                    ref.tell(Text(text))
                emit({"ok": True})
            elif op == "ask":
                text = cmd["text"]
                try:
                    reply = await system.ask(ref, lambda r, t=text: Echo(t, r), timeout=cmd.get("timeout", 10.0))
                except Exception as exc:  # reported to the test, which fails on it
                    emit({"error": f"{type(exc).__name__}: {exc}"})
                else:
                    emit({"reply": reply})
            else:
                emit({"error": f"unknown op {op!r}"})


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="node021 %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"))
