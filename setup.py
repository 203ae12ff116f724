"""Build the optional Cython extensions in ``casty/_fast``.

Every extension has a pure-Python twin, so a failed compile is a warning, not
an error: the package still installs and runs.  Set ``CASTY_REQUIRE_EXTENSIONS=1``
to make a failed compile fatal (``make`` does), and ``CASTY_CYTHON_CHECKS=1`` to
build with bounds checking and wraparound on (``make fuzz``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
FAST = HERE / "casty" / "_fast"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


class OptionalBuildExt(build_ext):
    """Warn instead of failing when an extension cannot be compiled."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._give_up(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        if _flag("CASTY_REQUIRE_EXTENSIONS"):
            raise exc
        print(
            f"WARNING: casty C extensions not built ({exc}); the pure-Python twins will be used",
            file=sys.stderr,
        )


def _extensions() -> list:  # type: ignore[type-arg]
    if _flag("CASTY_NO_EXTENSIONS"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        if _flag("CASTY_REQUIRE_EXTENSIONS"):
            raise
        print("WARNING: Cython missing; installing the pure-Python twins only", file=sys.stderr)
        return []
    checks = _flag("CASTY_CYTHON_CHECKS")
    sources = sorted(str(p.relative_to(HERE)) for p in FAST.glob("*.pyx"))
    return cythonize(
        sources,
        language_level=3,
        compiler_directives={
            "boundscheck": checks,
            "wraparound": checks,
            "initializedcheck": checks,
            "cdivision": True,
            "embedsignature": True,
        },
        force=checks,
        quiet=True,
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
