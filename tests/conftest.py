"""Shared fixtures: both implementations of every twin, and a uvloop event loop."""

from __future__ import annotations

import asyncio
import importlib
import os
import types

import pytest
import uvloop
from hypothesis import HealthCheck, settings

import casty._impl as impl_mod


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


# Hypothesis profiles.  The fuzzers in test_fuzz.py take their example count from the active
# profile: "default" (the suite: 100 each, Hypothesis' own default, so other tests see no
# change) or "fuzz" (`make fuzz`: 10000 each, no deadline), picked by CASTY_FUZZ=1 or by
# HYPOTHESIS_PROFILE=<name>.  With neither set, Hypothesis keeps its choice ("ci" on CI).
settings.register_profile("default", settings.get_profile("default"), max_examples=100)
settings.register_profile(
    "fuzz",
    max_examples=10_000,
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
if _truthy("CASTY_FUZZ"):
    settings.load_profile("fuzz")
elif os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


def pytest_report_header(config: pytest.Config) -> str:
    which = "Cython extensions" if impl_mod.EXTENSIONS_ACTIVE else "pure-Python twins"
    return f"casty implementation: {which}"


def pytest_sessionstart(session: pytest.Session) -> None:
    if _truthy("CASTY_REQUIRE_EXTENSIONS") and not impl_mod.NO_EXTENSIONS and not impl_mod.EXTENSIONS_ACTIVE:
        pytest.exit(f"casty extensions were required but did not load: {impl_mod.IMPORT_ERROR}", returncode=3)


# name in casty._impl -> (pure module, fast module): casty._impl's own table of twins.
TWINS = impl_mod.TWINS


def _namespace(kind: str) -> types.SimpleNamespace:
    ns = types.SimpleNamespace(kind=kind)
    for name, (pure, fast) in TWINS.items():
        module = importlib.import_module(fast if kind == "fast" else pure)
        setattr(ns, name, getattr(module, name))
    mailbox = TWINS["Mailbox"]
    ns.mailbox = importlib.import_module(mailbox[1] if kind == "fast" else mailbox[0])  # its helpers
    return ns


def _fast_importable() -> bool:
    try:
        _namespace("fast")
    except ImportError:
        return False
    return True


_KINDS = ["fast", "pure"] if _fast_importable() or _truthy("CASTY_REQUIRE_EXTENSIONS") else ["pure"]


@pytest.fixture(params=_KINDS)
def impl(request: pytest.FixtureRequest) -> types.SimpleNamespace:
    """Both implementations of every twin: each test using it runs once per kind."""
    return _namespace(request.param)


# Every async test runs on uvloop, as production does (pytest-asyncio uses the current policy).
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
