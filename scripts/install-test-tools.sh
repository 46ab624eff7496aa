#!/usr/bin/env bash
# Installs the real services the tests run against into a project folder (no system change
# except Debian packages for the C++ tests). Idempotent: a second run is fast.
set -euo pipefail
TOOLS_DIR="${1:-.tools}"
mkdir -p "$TOOLS_DIR"
cd "$(dirname "$0")/.."
for part in scripts/tools.d/*.sh; do
    [ -e "$part" ] || continue
    bash "$part" "$(realpath "$TOOLS_DIR")"
done
