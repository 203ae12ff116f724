"""Build the optional Cython extensions in ``casty/_fast``.

Every extension has a pure-Python twin, so a failed compile is a warning, not
an error: the package still installs and runs (``import casty`` then warns).
The extensions are all or nothing: if one fails, none is installed, and a wheel
built that way, like one built with ``CASTY_NO_EXTENSIONS=1``, is pure
(``py3-none-any``).

Environment variables read here:

- ``CASTY_REQUIRE_EXTENSIONS=1``: a failed compile (or no Cython) is fatal (``make`` sets it).
- ``CASTY_NO_EXTENSIONS=1``: build no extensions at all; wheels are ``py3-none-any``.
- ``CASTY_CYTHON_CHECKS=1``: bounds checking and wraparound on (``make fuzz``).
- ``CASTY_DEBUG_INFO=1``: keep the compiler's debug info; by default the extensions
  are compiled with ``-g0`` (a release wheel carries no ``.debug_*`` sections).
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
    """Warn instead of failing when an extension cannot be compiled; all or none."""

    def run(self) -> None:
        self._failed: list[str] = []
        try:
            super().run()
        except Exception as exc:
            self._give_up("the extensions", exc)
        if self._failed:
            self._drop_all()

    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix" and not _flag("CASTY_DEBUG_INFO"):
            # -g0 comes after the interpreter's own CFLAGS (which often hold -g), so it wins.
            for ext in self.extensions:
                ext.extra_compile_args = [*ext.extra_compile_args, "-g0"]
        super().build_extensions()

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._give_up(ext.name, exc)

    def _give_up(self, what: str, exc: Exception) -> None:
        if _flag("CASTY_REQUIRE_EXTENSIONS"):
            raise exc
        self._failed.append(what)
        print(
            f"WARNING: casty C extensions not built ({what}: {exc}); the pure-Python twins will be used",
            file=sys.stderr,
        )

    def _drop_all(self) -> None:
        """casty loads the extensions together, so a partial set is removed, and a wheel
        being built becomes pure: no platform tag for a wheel with no compiled code."""
        for path in self.get_outputs():
            if os.path.exists(path):
                os.remove(path)
        wheel = self.distribution.command_obj.get("bdist_wheel")
        if wheel is not None:
            wheel.root_is_pure = True  # read by bdist_wheel after its build step, for the tag


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
    extensions = cythonize(
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
    for ext in extensions:
        # The compile flags live here: a change to them rebuilds extensions built before it.
        ext.depends.append("setup.py")
    return extensions


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
