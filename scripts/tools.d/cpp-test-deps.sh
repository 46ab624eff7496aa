#!/usr/bin/env bash
# C++ test dependencies from Debian: GoogleTest (+ cmake, ninja, g++ if a machine lacks them),
# clang with libFuzzer and the sanitizer runtimes (the bounded fuzz runs), and on x86-64 the
# aarch64 and armhf cross compilers with qemu-user, so the NEON and 32-bit ARM builds are tested.
# Called by scripts/install-test-tools.sh with the tools dir as $1 (unused: these are system
# packages). Idempotent: when everything is installed it only runs dpkg queries.
set -euo pipefail
need=()
packages=(libgtest-dev googletest cmake ninja-build g++ clang libclang-rt-14-dev)
[ "$(uname -m)" = "x86_64" ] && packages+=(g++-aarch64-linux-gnu g++-arm-linux-gnueabihf qemu-user)
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -eq 0 ]; then
    exit 0
fi
echo "installing C++ test dependencies: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! $SUDO apt-get install -y --no-install-recommends "${need[@]}"; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi
