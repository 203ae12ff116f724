"""tune_malloc: argument checks, and (in a child process, since it is process-wide) its effect."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from casty import tune_malloc

CHILD = textwrap.dedent(
    """
    import ctypes, sys
    from casty import tune_malloc

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    size = 8 * 1024 * 1024
    if sys.argv[1] == "tuned":
        assert tune_malloc() is True
    before = libc.mallinfo2().hblkhd
    blob = bytearray(size)
    mapped = libc.mallinfo2().hblkhd - before
    del blob
    print(mapped >= size, libc.mallinfo2().fordblks >= size)
    """
)


def child(mode: str) -> str:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tune_malloc acts on glibc only")
def test_large_buffers_come_from_the_heap_and_stay_after_free() -> None:
    # Untuned, an 8 MiB buffer is mmapped and unmapped when freed; tuned, it is carved
    # from the heap and its memory stays there for the next one.
    assert child("default") == "True False"
    assert child("tuned") == "False True"


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"mmap_threshold": 0}, "mmap_threshold must be an int in 1..33554432, got 0"),
        ({"mmap_threshold": 64 << 20}, "mmap_threshold must be an int in 1..33554432, got 67108864"),
        ({"trim_threshold": True}, "trim_threshold must be an int in 1..2147483647, got True"),
        ({"trim_threshold": 1.5}, "trim_threshold must be an int in 1..2147483647, got 1.5"),
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, object], text: str) -> None:
    with pytest.raises(ValueError, match=text.replace(".", r"\.")):
        tune_malloc(**kwargs)  # type: ignore[arg-type]
