"""Run every benchmark: ``python -m bench [--quick] [name ...]``.

Each module measures the Cython build and the pure twin side by side in one run;
the tables are printed and written to ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import platform
import sys
import time
from pathlib import Path

MODULES = ["envelope", "local", "framing", "serialization", "remote", "scaling", "liveness"]


def main() -> int:
    # Benchmarks stop their nodes on purpose: a peer's "connection lost" warning is no news here.
    logging.getLogger("casty.transport").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer iterations, for a smoke run")
    parser.add_argument("names", nargs="*", metavar="name", help=f"any of {', '.join(MODULES)}")
    args = parser.parse_args()
    unknown = set(args.names) - set(MODULES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    import casty

    if not casty.EXTENSIONS_ACTIVE:
        print("casty extensions are not built: run 'make build' first", file=sys.stderr)
        return 2
    print(f"casty benchmarks on Python {platform.python_version()}, {platform.machine()}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}\n")
    results = []
    for name in args.names or MODULES:
        module = importlib.import_module(f"bench.bench_{name}")
        for table in module.collect(args.quick):
            print(table.render(), end="\n\n", flush=True)
            results.append(table.as_dict())
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1))
    print(f"written to {out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
