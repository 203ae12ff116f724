"""Reconnect backoff: how long a node waits before dialing again an address whose connects fail.

The first failure waits ``base`` (``blacklist_duration``, so casty 0.21 configs keep their
meaning), each further failure in a row twice as long, up to ``cap``
(``reconnect_backoff_max``, or ``base`` when that is larger); every wait is then scaled by
a random factor in [0.75, 1.25] so that nodes which lost the same peer do not redial it in
step.

>>> import random  # the same seed each time: the same factor, 1.17
>>> [round(backoff_delay(n, 1.0, 30.0, random.Random(0)), 2) for n in range(1, 8)]
[1.17, 2.34, 4.69, 9.38, 18.76, 35.17, 35.17]
"""

from __future__ import annotations

import random

__all__ = ["JITTER", "backoff_delay"]

#: each wait is scaled by a factor drawn uniformly in [1 - JITTER, 1 + JITTER]
JITTER = 0.25


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to refuse dials after the ``failures``-th failed connect in a row (1 = first)."""
    if failures < 1:
        raise ValueError(f"failures counts from 1, got {failures!r}")
    top = max(base, cap)
    # The exponent is bounded: past 64 doublings any base is far beyond any cap.
    delay = min(top, base * 2.0 ** min(failures - 1, 64))
    return delay * rng.uniform(1 - JITTER, 1 + JITTER)
