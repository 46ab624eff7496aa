#!/usr/bin/env bash
# Test-only: the real Mosquitto broker (MQTT 5 and 3.1.1) from Debian's package and the shared
# libraries it needs that a minimal image lacks, unpacked into "$1/mosquitto" with `dpkg-deb -x`
# (nothing is installed system-wide, no service is started). The tests start it on a free
# loopback port with a generated config and LD_LIBRARY_PATH pointing into the folder.
# Idempotent: skips when the broker is already there and starts.
set -euo pipefail
TOOLS_DIR="${1:-.tools}"
DEST="$TOOLS_DIR/mosquitto"
BIN="$DEST/usr/sbin/mosquitto"
LIBS="$DEST/usr/lib/$(uname -m)-linux-gnu"
if [ -x "$BIN" ] && LD_LIBRARY_PATH="$LIBS" "$BIN" -h 2>&1 | grep -q "mosquitto version"; then
    exit 0
fi
command -v apt-get >/dev/null || { echo "mosquitto.sh: needs apt-get/dpkg-deb (Debian)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
PACKAGES=(mosquitto libmosquitto1 libcjson1 libdlt2 libwrap0)
if ! apt-get download "${PACKAGES[@]}" >/dev/null 2>&1; then
    # A fresh container has no package lists yet.
    apt-get update -qq >/dev/null
    apt-get download "${PACKAGES[@]}" >/dev/null
fi
mkdir -p "$DEST"
for deb in ./*.deb; do
    dpkg-deb -x "$deb" "$DEST"
done
version="$(LD_LIBRARY_PATH="$LIBS" "$BIN" -h 2>&1 | grep -m1 "mosquitto version" || true)"
[ -n "$version" ] || { LD_LIBRARY_PATH="$LIBS" "$BIN" -h >&2 || true; echo "mosquitto.sh: broker does not start" >&2; exit 1; }
echo "mosquitto.sh: $version"
