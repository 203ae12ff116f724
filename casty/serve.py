"""serve_forever: keep a node running until SIGINT or SIGTERM, then shut it down cleanly."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Iterable
from typing import Any

from casty.system import ActorSystem

__all__ = ["serve_forever"]

log = logging.getLogger("casty.serve")

_DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def serve_forever(system: ActorSystem, *, signals: Iterable[int] = _DEFAULT_SIGNALS) -> int:
    """Wait until one of ``signals`` arrives, then shut ``system`` down; return that signal.

    For a node's main coroutine: ``await casty.serve_forever(system)`` after spawning
    its actors.  The signals' previous handlers are put back before it returns.  If the
    wait is cancelled, the system is shut down all the same.  Signal handlers can only
    be set in the main thread, so it must run there.

    >>> import os, signal, casty
    >>> async def main() -> int:
    ...     async with casty.ActorSystem("demo") as system:
    ...         asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
    ...         return await serve_forever(system)
    >>> signal.Signals(casty.run(main())).name
    'SIGTERM'
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "serve_forever() must run in the main thread: signal handlers can only be set there"
        )
    wanted = [signal.Signals(sig) for sig in signals]
    if not wanted:
        raise ValueError("serve_forever() needs at least one signal to wait for")
    loop = asyncio.get_running_loop()
    got: asyncio.Future[int] = loop.create_future()

    def on_signal(sig: int) -> None:
        if not got.done():
            got.set_result(sig)

    restore: list[tuple[signal.Signals, Any, bool]] = []  # (signal, old handler, via the loop)
    try:
        for sig in wanted:
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, on_signal, sig)
                restore.append((sig, previous, True))
            except NotImplementedError:  # loops without add_signal_handler (Windows)
                signal.signal(sig, lambda s, _frame: loop.call_soon_threadsafe(on_signal, s))
                restore.append((sig, previous, False))
        log.info("actor system %s serving until %s", system.name, " or ".join(s.name for s in wanted))
        received = await got
        log.info("actor system %s: %s received, shutting down", system.name, signal.Signals(received).name)
        return received
    finally:
        for sig, previous, via_loop in reversed(restore):
            if via_loop:
                loop.remove_signal_handler(sig)
            if previous is not None:  # None: set outside Python, cannot be put back
                signal.signal(sig, previous)
        await system.shutdown()
