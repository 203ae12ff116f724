"""Draw the benchmark results as PNG charts: ``python -m bench.plot`` (or ``make bench-plot``).

Reads ``bench/results/scaling.json`` (written by the ``scaling`` benchmark) and draws
one chart per family into ``bench/results/scaling_<family>.png``: a panel per metric,
Cython and pure twin as two lines over a log x axis (or as bars where a metric has a
single point or a zero x).  When ``bench/results/latest.json`` is there too, the
Cython / pure ratio of every row in it goes to ``bench/results/ratios.png``.

matplotlib is optional (``pip install casty[plot]``): without it this prints one line
and exits 0.
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"

FAMILIES = {
    "size": ("Remote tell and ask against payload size", "payload size"),
    "senders": ("Concurrent senders / askers on one node", "senders (askers)"),
    "paths": ("LocalTransport.deliver against registered paths", "registered paths"),
    "memory": ("Memory per idle connection and per registered path", "connections / paths measured"),
    "hol": ("Small asks behind a 1 MiB stream to the same peer", "streamed message size"),
}
COLORS = {"cython": "tab:blue", "pure": "tab:orange"}
LABELS = {"cython": "Cython", "pure": "pure twin"}


def human(x: float, family: str) -> str:
    """Axis label for ``x``: bytes for sizes, short counts otherwise."""
    if family in ("size", "hol"):
        if x == 0:
            return "none"
        for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
            if x >= scale:
                return f"{x / scale:g} {unit}"
        return f"{x:g} B"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:g}{unit}"
    return f"{x:g}"


def draw_family(plt: Any, family: str, points: list[dict[str, Any]], out: Path) -> None:
    by_metric: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        by_metric[p["metric"]].append(p)
    n = len(by_metric)
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    title, xlabel = FAMILIES.get(family, (family, "x"))
    fig.suptitle(title)
    for ax, (metric, series) in zip(axes.flat, by_metric.items(), strict=False):
        series.sort(key=lambda p: p["x"])
        xs = [p["x"] for p in series]
        unit = series[0].get("unit", "")
        ax.set_title(f"{metric} ({unit})" if unit and unit not in metric else metric, fontsize=10)
        if len(set(xs)) >= 2 and min(xs) > 0:
            for kind in ("cython", "pure"):
                ax.plot(xs, [p[kind] for p in series], marker="o", color=COLORS[kind], label=LABELS[kind])
            ax.set_xscale("log")
            ax.set_xticks(xs, [human(x, family) for x in xs])
            ax.minorticks_off()
            values = [p[k] for p in series for k in ("cython", "pure") if p[k] > 0]
            if values and max(values) / min(values) > 20:
                ax.set_yscale("log")
        else:
            width = 0.38
            idx = range(len(series))
            for off, kind in ((-width / 2, "cython"), (width / 2, "pure")):
                ax.bar([i + off for i in idx], [p[kind] for p in series], width, color=COLORS[kind],
                       label=LABELS[kind])
            ax.set_xticks(list(idx), [human(x, family) for x in xs])
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def draw_ratios(plt: Any, tables: list[dict[str, Any]], out: Path) -> bool:
    """A bar per row of latest.json: how many times better Cython is; False if nothing to draw."""
    rows = [
        (f"{t['title'][:28]}: {r['case']}", r["ratio"])
        for t in tables
        if t.get("columns", {}).get("cython", "Cython") == "Cython"
        for r in t["rows"]
        if r.get("ratio")
    ]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.2))
    names, ratios = zip(*reversed(rows), strict=True)
    ax.barh(range(len(rows)), ratios, color=["tab:blue" if r >= 1 else "tab:red" for r in ratios])
    ax.set_yticks(range(len(rows)), names, fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("Cython advantage (x, log scale; > 1: Cython better)")
    ax.set_title("latest benchmark run: Cython vs pure twin")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def main() -> int:
    try:
        import matplotlib
    except ImportError:
        print("bench-plot: matplotlib is not installed (pip install 'casty[plot]'); no charts drawn")
        return 0
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source = RESULTS / "scaling.json"
    if not source.exists():
        print(f"bench-plot: {source} not found; run 'make bench' (or 'python -m bench scaling') first",
              file=sys.stderr)
        return 1
    by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for point in json.loads(source.read_text()):
        by_family[point["family"]].append(point)
    written = []
    for family, points in by_family.items():
        out = RESULTS / f"scaling_{family}.png"
        draw_family(plt, family, points, out)
        written.append(out)
    latest = RESULTS / "latest.json"
    if latest.exists() and draw_ratios(plt, json.loads(latest.read_text()), RESULTS / "ratios.png"):
        written.append(RESULTS / "ratios.png")
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
