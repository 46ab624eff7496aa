#!/usr/bin/env bash
# Cross-build the memae-ts wheel for aarch64 gateways (Raspberry Pi 4/5, Jetson, ARM industrial
# PCs) on this x86_64 machine, then import its extension under qemu-aarch64 with Debian's arm64
# CPython and check it scores two bundles exactly as this machine's runtime does (issue #16.1).
#
#   bash scripts/build-wheel-aarch64.sh [OUT_DIR]     (make wheel-aarch64: OUT_DIR=dist)
#
# Needs the cross toolchain and qemu-user of scripts/tools.d/cpp-test-deps.sh (g++-aarch64-linux-gnu,
# qemu-user). The usual blocker, Python headers for aarch64, is solved without touching the
# system's dpkg: Debian's arm64 python3.X, libpython3.X-dev and the few libraries they load are
# downloaded with apt-get into a private apt state and unpacked (dpkg -x) into
# $TOOLS/aarch64-python; numpy and safetensors come as aarch64 wheels from PyPI. The headers must
# be of the same Python minor version as the venv (the wheel's cp3X tag): Debian 12 has 3.11.
set -euo pipefail
OUT=${1:-dist}
PY=${PY:-.venv/bin/python}
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
TOOLS=${MEMAE_TS_TOOLS:-$PWD/.tools}
ROOT=$TOOLS/aarch64-python/root
SITE=$TOOLS/aarch64-python/site
PYV=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
for tool in aarch64-linux-gnu-g++ qemu-aarch64 apt-get dpkg; do
    command -v "$tool" >/dev/null || { echo "build-wheel-aarch64: $tool not found (make tools installs it)" >&2; exit 2; }
done

# 1. Debian's arm64 CPython (interpreter for qemu, headers for the build), unpacked, not installed.
if [ ! -x "$ROOT/usr/bin/python$PYV" ]; then
    . /etc/os-release
    APT=$TOOLS/aarch64-python/apt
    mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs" "$ROOT"
    : >"$APT/status"
    echo "deb [arch=arm64] http://deb.debian.org/debian $VERSION_CODENAME main" >"$APT/sources.list"
    opts=(-o "Dir::Etc::SourceList=$APT/sources.list" -o Dir::Etc::SourceParts=/nonexistent
          -o "Dir::State::Lists=$APT/lists" -o "Dir::Cache=$APT/cache" -o "Dir::State::status=$APT/status"
          -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o APT::Sandbox::User=root)
    apt-get -qq "${opts[@]}" update
    if ! apt-cache "${opts[@]}" show "libpython$PYV-dev" >/dev/null 2>&1; then
        echo "build-wheel-aarch64: Debian $VERSION_CODENAME has no arm64 Python $PYV (the venv's); build with that Python" >&2
        exit 2
    fi
    (cd "$APT/debs" && apt-get -qq "${opts[@]}" download "python$PYV-minimal" "libpython$PYV-minimal" \
        "libpython$PYV-stdlib" "libpython$PYV" "libpython$PYV-dev" libc6 libstdc++6 libgcc-s1 zlib1g \
        libexpat1 libcrypt1 libffi8 libbz2-1.0 liblzma5)
    for deb in "$APT"/debs/*.deb; do dpkg -x "$deb" "$ROOT"; done
fi
if [ ! -d "$SITE/numpy" ]; then
    mkdir -p "$SITE"
    pins=$("$PY" -c 'import numpy, safetensors; print(f"numpy=={numpy.__version__} safetensors=={safetensors.__version__}")')
    # shellcheck disable=SC2086
    "$PY" -m pip download --quiet --only-binary=:all: --no-deps --implementation cp --python-version "$PYV" \
        --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 -d "$SITE/wheels" $pins
    for whl in "$SITE"/wheels/*.whl; do "$PY" -m zipfile -e "$whl" "$SITE"; done
fi

# 2. Cross-build with the C++ tests' toolchain file; the arm64 headers, the host's pybind11.
mkdir -p "$OUT"
RAW=$(mktemp -d)
trap 'rm -rf "$RAW"' EXIT
PYBIND11_DIR=$("$PY" -c 'import pybind11; print(pybind11.get_cmake_dir())')
_PYTHON_HOST_PLATFORM=linux-aarch64 nice "$PY" -m pip wheel --no-deps --no-build-isolation --quiet -w "$RAW" \
    -C build-dir=build/wheel-aarch64 \
    -C cmake.toolchain-file=cpp/cmake/aarch64.cmake \
    -C cmake.python-hints=false \
    -C "cmake.define.Python_EXECUTABLE=$PY" \
    -C "cmake.define.Python_INCLUDE_DIR=$ROOT/usr/include/python$PYV" \
    -C "cmake.define.CMAKE_CXX_FLAGS=-I$ROOT/usr/include" \
    -C "cmake.define.pybind11_DIR=$PYBIND11_DIR" \
    -C "cmake.define.PYTHON_MODULE_EXTENSION=.cpython-${PYV/./}-aarch64-linux-gnu.so" \
    -C cmake.define.PYTHON_MODULE_DEBUG_POSTFIX= \
    .
PATH="$(dirname "$PY"):$PATH" "$PY" -m auditwheel repair --wheel-dir "$OUT" "$RAW"/memae_ts-*aarch64.whl 2>&1 \
    | grep -E "Fixed-up|ERROR" || true
WHEEL=$(cd "$OUT" && pwd)/$(cd "$OUT" && ls -t memae_ts-*manylinux*_aarch64.whl | head -1)

# 3. Under qemu: the wheel's extension scores a conv and an MLP bundle like this machine's runtime.
CHECK=$(mktemp -d)
trap 'rm -rf "$RAW" "$CHECK"' EXIT
"$PY" -m zipfile -e "$WHEEL" "$CHECK/site"
"$PY" - "$CHECK" <<'EOF'
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, "tests")
from runtime_bundles import random_bundle, random_windows, write_bundle  # noqa: E402

from memae_ts.engines.runtime import Runtime  # noqa: E402

out = Path(sys.argv[1])
for kind in ("conv", "mlp"):
    config, weights = random_bundle(kind)
    write_bundle(out / kind, config, weights)
    windows = random_windows(config, 33)
    np.save(out / f"{kind}-windows.npy", windows)
    np.save(out / f"{kind}-x86.npy", Runtime.load(out / kind).score(windows)[0])
EOF
# from $CHECK: the source tree's memae_ts/ (no aarch64 extension) must not shadow the wheel's
cd "$CHECK"
PYTHONPATH="$CHECK/site:$SITE" qemu-aarch64 -L "$ROOT" "$ROOT/usr/bin/python$PYV" - "$CHECK" <<'EOF'
import platform
import sys
from pathlib import Path

import numpy as np

from memae_ts import _runtime
from memae_ts.engines.runtime import Runtime

out = Path(sys.argv[1])
assert platform.machine() == "aarch64", platform.machine()
assert Path(_runtime.__file__).is_relative_to(out / "site"), _runtime.__file__
for kind in ("conv", "mlp"):
    runtime = Runtime.load(out / kind)
    scores = runtime.score(np.load(out / f"{kind}-windows.npy"))[0]
    reference = np.load(out / f"{kind}-x86.npy")
    worst = float(np.max(np.abs(scores - reference) / np.maximum(np.abs(reference), 1e-30)))
    print(f"aarch64 {kind}: isa {runtime.isa} of {_runtime.available_isas()}, "
          f"max relative difference to x86_64 {worst:.2e}")
    assert worst < 1e-4, worst
EOF
echo "$WHEEL"
