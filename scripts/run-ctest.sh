#!/usr/bin/env bash
# Builds and runs the C++ unit tests (normal and ASan/UBSan) when cpp/tests exists.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d cpp/tests ]; then
    echo "no C++ tests yet"
    exit 0
fi
