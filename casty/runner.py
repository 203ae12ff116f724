"""casty.run: run a coroutine on uvloop when it is installed, on plain asyncio otherwise."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """Run ``main`` to completion in a new event loop and return its result.

    Like :func:`asyncio.run` (pending tasks are cancelled and async generators
    closed at the end), but on uvloop when it can be imported.

    >>> async def answer() -> int:
    ...     return 42
    >>> run(answer())
    42
    """
    with asyncio.Runner(debug=debug, loop_factory=_uvloop_factory()) as runner:
        return runner.run(main)
