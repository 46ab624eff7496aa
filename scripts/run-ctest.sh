#!/usr/bin/env bash
# Builds and runs the C++ unit tests and the loader fuzz target with ctest, twice: an optimised
# build, then an AddressSanitizer + UndefinedBehaviorSanitizer build. With clang++ on the PATH
# the fuzz target is also built against libFuzzer and run for FUZZ_SECONDS (default 20). On an
# x86-64 host with aarch64-linux-gnu-g++ and qemu-aarch64 (scripts/tools.d/cpp-test-deps.sh
# installs them), the tests are also cross-built and run under qemu to cover the NEON kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d cpp/tests ]; then
    echo "no C++ tests yet"
    exit 0
fi
JOBS="$(nproc 2>/dev/null || echo 2)"
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)

run() {  # run NAME [cmake options...]
    local name="$1"
    shift
    local dir="build/ctest-$name"
    echo "== C++ tests ($name) in $dir"
    cmake -S cpp -B "$dir" "${GENERATOR[@]}" -DMEMAE_BUILD_TESTS=ON "$@" >/dev/null
    cmake --build "$dir" -j "$JOBS"
    (cd "$dir" && ctest --output-on-failure -j "$JOBS")
}

run release -DCMAKE_BUILD_TYPE=Release
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run asan -DCMAKE_BUILD_TYPE=Debug -DMEMAE_SANITIZE=ON

GTEST_SRC=/usr/src/googletest/googletest
if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 && command -v qemu-aarch64 >/dev/null 2>&1 \
    && [ -f "$GTEST_SRC/src/gtest-all.cc" ]; then
    echo "== C++ tests cross-built for aarch64 (NEON kernels), run under qemu"
    dir=build/ctest-aarch64
    mkdir -p "$dir"
    aarch64-linux-gnu-g++ -std=c++17 -O2 -static -Wall -Wextra -Icpp/include -Icpp/tests \
        -I"$GTEST_SRC/include" -I"$GTEST_SRC" cpp/tests/test_kernels.cpp cpp/tests/test_model.cpp \
        cpp/tests/test_json.cpp cpp/src/kernels_neon.cpp cpp/src/kernels_scalar.cpp cpp/src/dispatch.cpp \
        cpp/src/model.cpp cpp/src/json.cpp "$GTEST_SRC/src/gtest-all.cc" "$GTEST_SRC/src/gtest_main.cc" \
        -lpthread -o "$dir/memae_tests" 2> >(grep -v "getaddrinfo" >&2)
    qemu-aarch64 "$dir/memae_tests" --gtest_brief=1
    qemu-aarch64 "$dir/memae_tests" --gtest_filter='*neon*' --gtest_list_tests | grep -q neon
fi

if command -v clang++ >/dev/null 2>&1; then
    echo "== libFuzzer run of the loader (${FUZZ_SECONDS:-20} s)"
    dir=build/ctest-libfuzzer
    mkdir -p "$dir/corpus"
    clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -Icpp/include -Icpp/tests \
        cpp/tests/fuzz_loader.cpp cpp/src/json.cpp cpp/src/model.cpp cpp/src/dispatch.cpp \
        cpp/src/kernels_scalar.cpp -DMEMAE_SCALAR_ONLY -o "$dir/fuzz_loader"
    "$dir/fuzz_loader" -max_total_time="${FUZZ_SECONDS:-20}" -print_final_stats=1 "$dir/corpus" 2>&1 | tail -5 || {
        echo "libFuzzer found a crash"; exit 1; }
fi
