#!/usr/bin/env bash
# Test-only: Debian's Chromium, for the test that opens the interactive HTML plot in a real
# headless browser (tests/test_plot.py). Chromium needs ~100 shared libraries (NSS, GTK, fonts),
# so unlike prometheus.sh it is installed as a system package with its dependencies, the way
# cpp-test-deps.sh installs GoogleTest. Called by scripts/install-test-tools.sh with the tools
# dir as $1 (unused). Idempotent: when it is installed this is one dpkg query.
set -euo pipefail
packages=(chromium fonts-dejavu-core)
need=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -eq 0 ]; then
    exit 0
fi
command -v apt-get >/dev/null || { echo "chromium.sh: needs apt-get (Debian)" >&2; exit 1; }
echo "installing the headless browser for the plot test: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! $SUDO apt-get install -y --no-install-recommends "${need[@]}"; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi
chromium --version
