"""Timing helpers and the side-by-side table every benchmark reports into.

Figures are operations per second, best of several repeats; a ratio compares
two figures taken in the same run, which is the only comparison we report.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def rate(fn: Callable[[int], object], n: int, repeat: int = 5) -> float:
    """Best ops/s over ``repeat`` runs of ``fn(n)``, which must perform ``n`` operations."""
    fn(max(1, n // 10))  # warm caches and lazily-built state
    best = float("inf")
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(n)
            best = min(best, time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
    return n / best


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:8.2f} M/s"
    if x >= 1e3:
        return f"{x / 1e3:8.1f} k/s"
    return f"{x:8.1f} /s"


@dataclass
class Table:
    """Rows of (case, Cython figure, pure figure); printed with the ratio."""

    title: str
    unit: str = "ops/s"
    rows: list[tuple[str, float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: labels of the two figure columns (a serializer table compares msgpack with json)
    columns: tuple[str, str] = ("Cython", "pure twin")

    def add(self, case: str, fast: float, pure: float) -> None:
        self.rows.append((case, fast, pure))

    def render(self) -> str:
        width = max([len(r[0]) for r in self.rows] + [20])
        lines = [
            f"== {self.title}",
            f"{'case':<{width}}  {self.columns[0]:>12}  {self.columns[1]:>12}  {'ratio':>7}",
        ]
        for case, fast, pure in self.rows:
            ratio = fast / pure if pure else float("nan")
            lines.append(f"{case:<{width}}  {fmt_rate(fast):>12}  {fmt_rate(pure):>12}  {ratio:6.1f}x")
        lines.extend(f"  - {note}" for note in self.notes)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {
            "title": self.title,
            "unit": self.unit,
            "rows": [{"case": c, "cython": f, "pure": p, "ratio": f / p if p else None} for c, f, p in self.rows],
            "notes": self.notes,
            "columns": {"cython": self.columns[0], "pure": self.columns[1]},
        }
