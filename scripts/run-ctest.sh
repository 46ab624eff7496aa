#!/usr/bin/env bash
# Builds and runs the C++ unit tests and the loader fuzz target with ctest, twice: an optimised
# build, then an AddressSanitizer + UndefinedBehaviorSanitizer build. With clang++ on the PATH
# the fuzz target is also built against libFuzzer and run for FUZZ_SECONDS (default 20).
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
