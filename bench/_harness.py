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


#: row units where a smaller figure is the better one; their ratio is pure / Cython
LOWER_IS_BETTER = frozenset({"µs", "B"})


def fmt_value(x: float, unit: str | None) -> str:
    """Format a figure in a row's own ``unit`` (None: a rate, as :func:`fmt_rate`)."""
    if unit == "µs":
        return f"{x / 1e3:8.2f} ms" if x >= 10_000 else f"{x:8.1f} µs"
    if unit == "B":
        return f"{x / 1024:8.1f} KiB" if x >= 10_240 else f"{x:8.0f} B"
    if unit == "MB/s":
        return f"{x:8.1f} MB/s"
    return fmt_rate(x)


@dataclass
class Table:
    """Rows of (case, Cython figure, pure figure); printed with the ratio."""

    title: str
    unit: str = "ops/s"
    rows: list[tuple[str, float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: labels of the two figure columns (a serializer table compares msgpack with json)
    columns: tuple[str, str] = ("Cython", "pure twin")
    #: case -> unit, for rows not in the table's rate unit (see :func:`fmt_value`)
    row_units: dict[str, str] = field(default_factory=dict)

    def add(self, case: str, fast: float, pure: float, unit: str | None = None) -> None:
        self.rows.append((case, fast, pure))
        if unit is not None:
            self.row_units[case] = unit

    def ratio(self, case: str, fast: float, pure: float) -> float | None:
        """How many times better the Cython figure is (for rates: Cython / pure)."""
        if self.row_units.get(case) in LOWER_IS_BETTER:
            return pure / fast if fast else None
        return fast / pure if pure else None

    def render(self) -> str:
        width = max([len(r[0]) for r in self.rows] + [20])
        lines = [
            f"== {self.title}",
            f"{'case':<{width}}  {self.columns[0]:>12}  {self.columns[1]:>12}  {'ratio':>7}",
        ]
        for case, fast, pure in self.rows:
            ratio = self.ratio(case, fast, pure)
            unit = self.row_units.get(case)
            lines.append(
                f"{case:<{width}}  {fmt_value(fast, unit):>12}  {fmt_value(pure, unit):>12}  "
                f"{ratio if ratio is not None else float('nan'):6.1f}x"
            )
        lines.extend(f"  - {note}" for note in self.notes)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {
            "title": self.title,
            "unit": self.unit,
            "rows": [
                {"case": c, "cython": f, "pure": p, "ratio": self.ratio(c, f, p)}
                | ({"unit": self.row_units[c]} if c in self.row_units else {})
                for c, f, p in self.rows
            ],
            "notes": self.notes,
            "columns": {"cython": self.columns[0], "pure": self.columns[1]},
        }
