"""What packaging promises a user: a missing build is visible at import, a wheel without
extensions is pure, release builds carry no debug info, serve_forever keeps a node up."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import casty
import casty._impl as impl_mod

ROOT = Path(__file__).resolve().parent.parent

# Makes every casty._fast import fail, as a failed or missing build would.
_BLOCK_FAST = """
import sys
class _NoFast:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("casty._fast."):
            raise ImportError(f"no {name} here")
sys.meta_path.insert(0, _NoFast())
import casty
print("active", casty.EXTENSIONS_ACTIVE)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASTY_") and k != "PYTHONWARNINGS"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _import_without_fast(**extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCK_FAST], env=_env(**extra), capture_output=True,
                          text=True, timeout=60)


@pytest.mark.slow
def test_missing_extensions_warn_at_import_naming_what_to_set() -> None:
    out = _import_without_fast()
    assert out.returncode == 0, out.stderr
    assert out.stdout == "active False\n"
    assert "RuntimeWarning: casty's compiled extensions did not load (no casty._fast.envelope here); " \
        "running on the pure-Python twins" in out.stderr
    assert "set CASTY_REQUIRE_EXTENSIONS=1 to make this an error" in out.stderr
    assert "CASTY_NO_EXTENSIONS=1 to choose the pure twins and silence this warning" in out.stderr


@pytest.mark.slow
def test_require_extensions_makes_a_missing_build_an_import_error() -> None:
    out = _import_without_fast(CASTY_REQUIRE_EXTENSIONS="1")
    assert out.returncode != 0
    assert out.stdout == ""
    assert ("ImportError: casty's compiled extensions were required (CASTY_REQUIRE_EXTENSIONS is set) "
            "but did not load: no casty._fast.envelope here") in out.stderr


@pytest.mark.slow
def test_choosing_the_pure_twins_is_silent() -> None:
    out = _import_without_fast(CASTY_NO_EXTENSIONS="1")
    assert (out.returncode, out.stdout, out.stderr) == (0, "active False\n", "")


def test_the_warning_text_names_the_error_and_both_variables() -> None:
    text = impl_mod.missing_extensions_message(ImportError("boom"))
    assert text.startswith("casty's compiled extensions did not load (boom); ")
    assert "CASTY_REQUIRE_EXTENSIONS=1" in text and "CASTY_NO_EXTENSIONS=1" in text


def _elf_sections(path: Path) -> list[str]:
    """Section names of a 64-bit little-endian ELF file."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, f"{path} is no ELF64 LE file"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off, strtab_size = headers[shstrndx][4], headers[shstrndx][5]
    strtab = data[strtab_off:strtab_off + strtab_size]
    return [strtab[h[0]:strtab.index(b"\0", h[0])].decode() for h in headers]


def test_compiled_extensions_carry_no_debug_info() -> None:
    if not casty.EXTENSIONS_ACTIVE:
        pytest.skip("the pure twins are running: no compiled extension to look at")
    if not sys.platform.startswith("linux"):
        pytest.skip("reads ELF section headers")
    if os.environ.get("CASTY_DEBUG_INFO", "").strip().lower() in {"1", "true", "yes"}:
        pytest.skip("built with CASTY_DEBUG_INFO: debug info kept on purpose")
    import casty._fast.framing as framing

    assert framing.__file__ is not None
    sections = _elf_sections(Path(framing.__file__))
    assert ".text" in sections
    assert [s for s in sections if s.startswith(".debug")] == [], (
        f"{framing.__file__} has debug info: rebuild it (make clean build)")


@pytest.mark.slow
def test_a_wheel_whose_extensions_failed_to_compile_is_pure(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "casty", src / "casty",
                    ignore=shutil.ignore_patterns("*.so", "*.html", "__pycache__"))
    # A compiler that always fails: every extension fails to build, as without a toolchain.
    out = subprocess.run([sys.executable, "setup.py", "-q", "bdist_wheel", "-d", str(tmp_path / "dist")],
                         cwd=src, env={**_env(), "CC": "false"}, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "WARNING: casty C extensions not built (casty._fast." in out.stderr
    wheels = [p.name for p in (tmp_path / "dist").iterdir()]
    assert wheels == ["casty-2.0.0.dev0-py3-none-any.whl"] or (
        len(wheels) == 1 and wheels[0].endswith("-py3-none-any.whl")), wheels
    with zipfile.ZipFile(tmp_path / "dist" / wheels[0]) as whl:
        names = whl.namelist()
        wheel_meta = next(n for n in names if n.endswith(".dist-info/WHEEL"))
        assert "Root-Is-Purelib: true" in whl.read(wheel_meta).decode()
    assert [n for n in names if n.endswith((".so", ".pyd"))] == []
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


# -- serve_forever ---------------------------------------------------------------------

_NODE = """
import asyncio, logging, signal, casty
from casty import ActorSystem, Behaviors

logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")

async def post_stop(ctx):
    print("post_stop", ctx.path, flush=True)

async def echo(ctx, msg):
    return Behaviors.same()

async def main():
    async with ActorSystem("node") as system:
        system.spawn(Behaviors.with_lifecycle(Behaviors.receive(echo), post_stop=post_stop), "a")
        got = await casty.serve_forever(system)
        print("returned", signal.Signals(got).name, system.lookup("/user/a"), flush=True)
    print("handler restored", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)

casty.run(main())
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_forever_shuts_down_cleanly_on_a_signal(sig: signal.Signals) -> None:
    child = subprocess.Popen([sys.executable, "-c", _NODE], env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stderr is not None
        # Logged once its handlers are in place: a signal sent earlier would kill it.
        assert child.stderr.readline() == "casty.serve actor system node serving until SIGINT or SIGTERM\n"
        child.send_signal(sig)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert err == f"casty.serve actor system node: {sig.name} received, shutting down\n"
    assert out == f"post_stop /user/a\nreturned {sig.name} None\nhandler restored True\n"


async def test_serve_forever_cancelled_still_shuts_the_system_down() -> None:
    system = casty.ActorSystem("cancelled")
    stopped = asyncio.get_running_loop().create_future()

    async def post_stop(ctx: object) -> None:
        stopped.set_result(None)

    async def idle(ctx: object, msg: object) -> casty.Behavior[object]:
        return casty.Behaviors.same()

    system.spawn(casty.Behaviors.with_lifecycle(casty.Behaviors.receive(idle), post_stop=post_stop), "a")
    before = signal.getsignal(signal.SIGTERM)
    serving = asyncio.ensure_future(casty.serve_forever(system))
    await asyncio.sleep(0)  # one loop turn: it has installed its handlers
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert stopped.done()
    assert system.lookup("/user/a") is None
    assert signal.getsignal(signal.SIGTERM) is before


async def test_serve_forever_refuses_no_signals() -> None:
    async with casty.ActorSystem("none") as system:
        with pytest.raises(ValueError, match="needs at least one signal"):
            await casty.serve_forever(system, signals=())
