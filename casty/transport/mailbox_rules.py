"""What both mailbox twins share: capacity checks, the charge threshold, callbacks.

Neutral: ``casty.transport.mailbox`` and ``casty._fast.mailbox`` import it, it imports
neither (see docs/architecture.md, "Twins").
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

__all__ = ["SpaceCallback", "charge_from", "check_capacity", "read_state_error", "run_space_callbacks"]

log = logging.getLogger("casty.transport.mailbox")

SpaceCallback = Callable[[], object]


def check_capacity(value: object, name: str = "mailbox capacity") -> int:
    """``value`` as a capacity: a non-negative int (0 = unbounded), at most ``sys.maxsize``
    (a larger one cannot be reached by a queue length); else ValueError naming ``name``.

    >>> check_capacity(8), check_capacity(2**70) == sys.maxsize
    (8, True)
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative int (0 = unbounded), got {value!r}")
    return min(value, sys.maxsize)


def run_space_callbacks(callbacks: list[SpaceCallback]) -> None:
    """Call each of ``callbacks`` in order; one that raises is logged, not propagated."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("a mailbox on_space callback raised")


def charge_from(capacity: int, byte_capacity: int) -> int:
    """The smallest sized message a mailbox charges to ``queued_bytes``.

    Charging costs a record per message and a call per message taken, which a stream
    of small messages would pay on every one.  A message under ``byte_capacity //
    capacity`` bytes is not charged: ``capacity`` bounds how many there can be, so
    together they hold less than ``byte_capacity``, and the bytes queued stay under
    twice ``byte_capacity``.  With no message bound every sized message is charged.

    >>> charge_from(65_536, 64 * 1024 * 1024), charge_from(0, 1024)
    (1024, 1)
    """
    return max(byte_capacity // capacity, 1) if capacity else 1


def read_state_error(expected: type, value: object) -> TypeError:
    """The error for a ``read_state`` argument that is not an ``expected`` (each twin
    takes only its own ReadState: the Cython one is read at C level)."""
    return TypeError(
        f"read_state must be a {expected.__module__}.{expected.__qualname__}, "
        f"got {type(value).__qualname__}: {value!r}"
    )
