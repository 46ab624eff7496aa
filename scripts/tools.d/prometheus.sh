#!/usr/bin/env bash
# Test-only: the real `prometheus` and `promtool` binaries from Debian's package, unpacked into
# "$1/prometheus" with `dpkg-deb -x` (nothing is installed system-wide, no service is started).
# Idempotent: skips when both binaries are already there.
set -euo pipefail
TOOLS_DIR="${1:-.tools}"
DEST="$TOOLS_DIR/prometheus"
BIN="$DEST/usr/bin"
if [ -x "$BIN/prometheus" ] && [ -x "$BIN/promtool" ]; then
    exit 0
fi
command -v apt-get >/dev/null || { echo "prometheus.sh: needs apt-get/dpkg-deb (Debian)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download prometheus >/dev/null 2>&1; then
    # A fresh container has no package lists yet.
    apt-get update -qq >/dev/null
    apt-get download prometheus >/dev/null
fi
mkdir -p "$DEST"
dpkg-deb -x prometheus_*.deb "$DEST"
"$BIN/promtool" --version >/dev/null
echo "prometheus.sh: $("$BIN/prometheus" --version 2>&1 | head -1)"
