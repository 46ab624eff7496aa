#!/usr/bin/env bash
# The C++ tests, everything bounded in time (CI runs this from `make test`):
#  1. release build: GoogleTest suite + both fuzz targets driven for MEMAE_FUZZ_ITERATIONS inputs;
#  2. AddressSanitizer + UndefinedBehaviorSanitizer build of the same (every scratch buffer and
#     layer output its own exact allocation, so one element out of bounds is a report);
#  3. cross builds with CMake toolchains (cpp/cmake/aarch64.cmake: NEON + scalar kernels;
#     cpp/cmake/armhf.cmake: 32-bit ARM, scalar), their ctest run under qemu-user;
#  4. libFuzzer (clang): both targets coverage-guided under ASan/UBSan for FUZZ_SECONDS each
#     (default 30), from the seeds of every architecture; the corpora stay in build/fuzz-corpus
#     for tests/test_fuzz_differential.py (C++ vs numpy on every bundle the loader accepts).
# scripts/tools.d/cpp-test-deps.sh installs what this needs (GoogleTest, clang, cross g++, qemu).
# CROSS=0 or FUZZ_SECONDS=0 skip parts 3 or 4 (they are required in CI: a missing tool fails).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d cpp/tests ]; then
    echo "no C++ tests yet"
    exit 0
fi
JOBS="$(nproc 2>/dev/null || echo 2)"
GENERATOR=()
command -v ninja >/dev/null 2>&1 && GENERATOR=(-G Ninja)
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
CROSS="${CROSS:-1}"
GTEST_SRC=/usr/src/googletest
required() {  # in CI a missing tool is a failure, on a laptop a skip
    if [ "${CI:-}" = "true" ]; then
        echo "run-ctest.sh: $1 is missing (scripts/tools.d/cpp-test-deps.sh installs it)" >&2
        exit 1
    fi
    echo "== skipped: $1 is missing (scripts/tools.d/cpp-test-deps.sh installs it)"
}

run() {  # run NAME [cmake options...]
    local name="$1"
    shift
    local dir="build/ctest-$name"
    echo "== C++ tests ($name) in $dir"
    cmake -S cpp -B "$dir" "${GENERATOR[@]}" -DMEMAE_BUILD_TESTS=ON "$@" >/dev/null
    cmake --build "$dir" -j "$JOBS"
    (cd "$dir" && ctest --output-on-failure -j "$JOBS")
}

start=$SECONDS
run release -DCMAKE_BUILD_TYPE=Release
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run asan -DCMAKE_BUILD_TYPE=Debug -DMEMAE_SANITIZE=ON
echo "== native and sanitizer builds: $((SECONDS - start)) s"

if [ "$CROSS" != "0" ]; then
    for arch in aarch64 armhf; do
        case "$arch" in
            aarch64) triple=aarch64-linux-gnu qemu=qemu-aarch64 ;;
            armhf) triple=arm-linux-gnueabihf qemu=qemu-arm ;;
        esac
        if ! command -v "$triple-g++" >/dev/null 2>&1 || ! command -v "$qemu" >/dev/null 2>&1 \
            || [ ! -f "$GTEST_SRC/CMakeLists.txt" ]; then
            required "$triple-g++, $qemu or $GTEST_SRC"
            continue
        fi
        start=$SECONDS
        run "$arch" -DCMAKE_BUILD_TYPE=Release -DCMAKE_TOOLCHAIN_FILE="$PWD/cpp/cmake/$arch.cmake" \
            -DMEMAE_GTEST_SOURCE="$GTEST_SRC" -DMEMAE_FUZZ_ITERATIONS=3000
        if [ "$arch" = aarch64 ]; then  # the NEON kernels really ran
            "$qemu" -L "/usr/$triple" "build/ctest-$arch/memae_tests" --gtest_filter='*neon*' --gtest_brief=1 \
                | grep -q "PASSED.*[1-9]" || { echo "no NEON test ran under qemu" >&2; exit 1; }
        fi
        echo "== $arch under $qemu: $((SECONDS - start)) s"
    done
fi

if [ "$FUZZ_SECONDS" != "0" ]; then
    if ! command -v clang++ >/dev/null 2>&1; then
        required clang++
        exit 0
    fi
    dir=build/ctest-libfuzzer
    mkdir -p "$dir"
    for target in fuzz_loader fuzz_graph fuzz_records fuzz_readings; do
        echo "== libFuzzer: $target for $FUZZ_SECONDS s (ASan + UBSan)"
        clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
            -Icpp/include -Icpp/tests "cpp/fuzz/$target.cpp" cpp/src/json.cpp cpp/src/sha256.cpp \
            cpp/src/model.cpp cpp/src/dispatch.cpp cpp/src/kernels_scalar.cpp cpp/src/score_records.cpp \
            cpp/src/reading_parser.cpp \
            -DMEMAE_SCALAR_ONLY \
            -o "$dir/$target"
        corpus="build/fuzz-corpus/$target"
        mkdir -p "$corpus"
        "build/ctest-release/$target" --write-seeds "$corpus" >/dev/null  # seeds of every architecture
        if ! "$dir/$target" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -max_len=65536 \
            -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$dir/" "$corpus" >"$dir/$target.log" 2>&1; then
            tail -40 "$dir/$target.log"
            echo "libFuzzer found a crash in $target: $(ls "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* 2>/dev/null)"
            exit 1
        fi
        grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$dir/$target.log" | tr '\n' ' '
        echo "corpus: $(ls "$corpus" | wc -l) inputs"
    done
fi
