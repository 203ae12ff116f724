#!/bin/sh
# make test-py314: the whole suite, both twins, on Debian unstable's CPython 3.14.
#
# Not part of `make test` or CI: the first run downloads a Debian system. Needs root
# (debootstrap, chroot, mount) and debootstrap on the host (apt-get install debootstrap;
# the host's apt sources are not touched). The chroot is made once in build/py314/root
# and reused; DEBOOTSTRAP_MIRROR picks the mirror (debootstrap's default otherwise),
# PY314_REBUILD=1 makes it anew. Each run copies the tree into the chroot's /src, runs
# `make test` there with a venv in /opt/venv, then `pip install` of the tree into a
# throwaway venv, which must build and load the extensions. PY314_MAKE=bench runs
# `make bench` there instead (BENCH_ARGS and CASTY_NO_EAGER are passed in).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
dir="$top/build/py314"
root="$dir/root"
packages=python3.14,python3.14-dev,python3.14-venv,build-essential,ca-certificates

if [ "$(id -u)" != 0 ]; then
    echo "test-py314: needs root (debootstrap, chroot, mount)" >&2
    exit 2
fi
if ! command -v debootstrap >/dev/null; then
    echo "test-py314: debootstrap missing on the host; apt-get install debootstrap" >&2
    exit 2
fi

mounted=""
cleanup() {
    for m in $mounted; do umount -R "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${PY314_REBUILD:-0}" = 1 ]; then
    rm -rf "$root"
fi
if [ ! -e "$root/.casty-chroot" ]; then
    # Made aside and renamed when whole, so an interrupted run never leaves half a system.
    rm -rf "$dir/root.tmp"
    mkdir -p "$dir"
    echo "test-py314: debootstrap unstable into $dir/root.tmp (a few minutes)"
    debootstrap --variant=minbase --include="$packages" unstable "$dir/root.tmp" \
        ${DEBOOTSTRAP_MIRROR:+"$DEBOOTSTRAP_MIRROR"} >"$dir/debootstrap.log" 2>&1 || {
        tail -20 "$dir/debootstrap.log" >&2
        exit 1
    }
    touch "$dir/root.tmp/.casty-chroot"
    mv "$dir/root.tmp" "$root"
fi

# The host's name resolution and extra CAs (an HTTPS proxy's), so pip reaches PyPI the same way.
cp /etc/resolv.conf "$root/etc/resolv.conf"
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi

# A copy, not a bind mount: the in-place build writes .c files (another Cython's) and .so
# files into casty/_fast, which would otherwise land in the host's tree.
rm -rf "$root/src"
mkdir "$root/src"
(cd "$top" && tar -cf - --exclude=./.venv --exclude=./build --exclude=./.git --exclude='*.so' \
    --exclude='./casty/_fast/*.c' --exclude='./casty/_fast/*.html' --exclude=__pycache__ \
    --exclude=.pytest_cache --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.hypothesis \
    --exclude='*.egg-info' .) | tar -xf - -C "$root/src"

mount -t proc proc "$root/proc" && mounted="$root/proc $mounted"
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev" && mounted="$root/dev $mounted"

# A clean environment: nothing of the host's Python, pip or certificate settings leaks in.
chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTEST_ARGS="${PYTEST_ARGS:-}" BENCH_ARGS="${BENCH_ARGS:-}" CASTY_NO_EAGER="${CASTY_NO_EAGER:-}" \
    PY314_MAKE="${PY314_MAKE:-test}" /bin/sh -euc '
    update-ca-certificates >/dev/null 2>&1
    python3.14 -VV
    cd /src
    if [ "$PY314_MAKE" = test ]; then
        # The suite in both twins; the casty 0.21 interop tests need a Python 3.12, which this
        # system lacks: they skip here (make test on the host runs them).
        make --no-print-directory PYTHON=python3.14 VENV=/opt/venv build
        make --no-print-directory PYTHON=python3.14 VENV=/opt/venv CASTY021_ENV= test-fast test-pure
    else
        make --no-print-directory PYTHON=python3.14 VENV=/opt/venv "$PY314_MAKE"
        exit 0
    fi
    echo "test-py314: pip install of the tree into a throwaway venv"
    rm -rf /tmp/pipcheck
    python3.14 -m venv /tmp/pipcheck
    CASTY_REQUIRE_EXTENSIONS=1 /tmp/pipcheck/bin/pip install -q /src
    cd /
    /tmp/pipcheck/bin/python -c "import sys, casty; print(sys.version.split()[0], casty.__file__, \"EXTENSIONS_ACTIVE =\", casty.EXTENSIONS_ACTIVE); sys.exit(not casty.EXTENSIONS_ACTIVE)"
'
echo "test-py314: make ${PY314_MAKE:-test} passed on 3.14"
