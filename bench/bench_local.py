"""LocalTransport.deliver: the Cython twin against the pure twin.

Three routes through ``deliver``:

- registered: the path has a handler (``list.append``), the hot path, with the
  transport bound to a loop of this thread as a running system's is (so each deliver
  pays the thread check and runs inline);
- buffered: the path has no handler yet; batches of 32 delivers, each batch then
  flushed by ``register`` and forgotten by ``unregister`` (``max_dead_paths=0``),
  so every deliver lands in the buffer and the flush is part of its cost;
- dead: the path was unregistered, so every deliver is a counted, logged drop.

One more row is not a deliver: a register and unregister of a fresh path, what
every ask does for its reply path, with the set of dead paths already full (the
default 100,000), so each unregister also forgets the oldest dead path.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import repeat
from types import ModuleType
from typing import Any

from bench._harness import Table, rate
from casty._fast import local as fast
from casty.address import ActorAddress
from casty.transport import local as pure

BATCH = 32  # half the default buffer: never overflows
PATH = "/user/bench"
ADDRESS = ActorAddress(system="bench", path=PATH)
MSG = ("ping", 1)


def _registered(module: ModuleType) -> Callable[[int], None]:
    transport = module.LocalTransport()
    loop = asyncio.new_event_loop()
    transport.bind_loop(loop)  # from this thread, the loop's: delivers stay inline
    loop.close()
    sink: list[Any] = []
    transport.register(PATH, sink.append)
    deliver = transport.deliver

    def run(n: int) -> None:
        sink.clear()
        for _ in repeat(None, n):
            deliver(ADDRESS, MSG)
        if len(sink) != n:
            raise AssertionError(f"{module.__name__}: {len(sink)} of {n} delivered")

    return run


def _registered_path(module: ModuleType) -> Callable[[int], None]:
    transport = module.LocalTransport()
    sink: list[Any] = []
    transport.register(PATH, sink.append)
    deliver_path = transport.deliver_path

    def run(n: int) -> None:
        sink.clear()
        for _ in repeat(None, n):
            deliver_path(PATH, MSG)

    return run


def _buffered(module: ModuleType) -> Callable[[int], None]:
    transport = module.LocalTransport(max_dead_paths=0)
    sink: list[Any] = []
    deliver, register, unregister = transport.deliver, transport.register, transport.unregister
    handler = sink.append

    def run(n: int) -> None:
        sink.clear()
        for _ in repeat(None, n // BATCH):
            for _ in repeat(None, BATCH):
                deliver(ADDRESS, MSG)
            register(PATH, handler)
            unregister(PATH)
        if transport.dropped or len(sink) != n // BATCH * BATCH:
            raise AssertionError(f"{module.__name__}: buffered deliveries were lost")

    return run


def _dead(module: ModuleType) -> Callable[[int], None]:
    transport = module.LocalTransport()
    transport.unregister(PATH)
    deliver = transport.deliver

    def run(n: int) -> None:
        before = transport.drops[module.DROP_DEAD]
        for _ in repeat(None, n):
            deliver(ADDRESS, MSG)
        if transport.drops[module.DROP_DEAD] - before != n:
            raise AssertionError(f"{module.__name__}: dead-path drops were not all counted")

    return run


def _ask_paths(module: ModuleType) -> Callable[[int], None]:
    transport = module.LocalTransport()
    register, unregister = transport.register, transport.unregister
    names = (f"/temp/ask-{i}" for i in itertools.count())
    for _ in repeat(None, 150_000):  # past the bound: the oldest dead paths are evicted
        unregister(next(names))

    def run(n: int) -> None:
        for _ in repeat(None, n):
            path = next(names)
            register(path, None)
            unregister(path)

    return run


@contextmanager
def _quiet_drop_log() -> Iterator[None]:
    # The dead row logs a WARNING at every power of two; keep it off the terminal
    # without disabling the level check the real code pays for.
    logger = logging.getLogger("casty.transport.local")
    handler = logging.NullHandler()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


CASES: dict[str, Callable[[ModuleType], Callable[[int], None]]] = {
    "deliver, registered handler": _registered,
    "deliver_path, registered handler": _registered_path,
    "deliver, buffered path (+flush)": _buffered,
    "deliver, dead path (drop)": _dead,
    "register+unregister, 100k dead paths": _ask_paths,
}


def _side_by_side(
    fast_fn: Callable[[int], None], pure_fn: Callable[[int], None], n: int, rounds: int
) -> tuple[float, float]:
    # Alternate the twins, best run of each: on a shared machine both then see
    # the same quiet and busy spells, which keeps their ratio honest.
    best_fast = best_pure = 0.0
    for _ in range(rounds):
        best_fast = max(best_fast, rate(fast_fn, n, repeat=1))
        best_pure = max(best_pure, rate(pure_fn, n, repeat=1))
    return best_fast, best_pure


def collect(quick: bool) -> list[Table]:
    n, rounds = (8 * 1024, 3) if quick else (96 * 1024, 25)  # n is a multiple of BATCH
    table = Table("LocalTransport.deliver")
    with _quiet_drop_log():
        for case, make in CASES.items():
            table.add(case, *_side_by_side(make(fast), make(pure), n, rounds))
    table.notes.append("handler = list.append; one op = one deliver; address read once per op")
    table.notes.append(
        f"buffered: {BATCH} delivers per register+unregister cycle, flush time included"
    )
    return [table]


if __name__ == "__main__":
    for t in collect(quick=False):
        print(t.render())
