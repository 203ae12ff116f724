"""What both examples share: run a server role in a child process, a client in this one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import casty


async def serve_until_stdin_closes(system: casty.RemoteActorSystem) -> None:
    """Print the system's port for the parent, then serve until the parent closes stdin."""
    print(system.address.port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def main(
    script: str,
    serve: Callable[[], Coroutine[Any, Any, None]],
    client: Callable[[int], Coroutine[Any, Any, None]],
) -> None:
    """``script --serve`` runs ``serve``; plain ``script`` starts that child and runs ``client(port)``."""
    if sys.argv[1:] == ["--serve"]:
        casty.run(serve())
        return
    child = subprocess.Popen([sys.executable, script, "--serve"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        casty.run(client(int(child.stdout.readline())))
    finally:
        child.stdin.close()
        child.wait(10)
