// Run-time choice of the kernel table from CPU features. MEMAE_SCALAR_ONLY builds without the
// per-ISA translation units (the single-command libFuzzer build in scripts/run-ctest.sh).
#include <time.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "memae/kernels.h"

namespace memae {

std::vector<const KernelTable*> available_kernels() {
    std::vector<const KernelTable*> out{&kernels_scalar()};
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(MEMAE_SCALAR_ONLY)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        out.push_back(&kernels_avx2());
    }
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) {
        out.push_back(&kernels_avx512());
    }
#endif
#if defined(__aarch64__) && !defined(MEMAE_SCALAR_ONLY)
    out.push_back(&kernels_neon());
#endif
    return out;
}

bool bf16_supported() {
#if (defined(__x86_64__) || defined(_M_X64)) && !defined(MEMAE_SCALAR_ONLY)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

#if !((defined(__x86_64__) || defined(_M_X64)) && !defined(MEMAE_SCALAR_ONLY))
void gemm_bf16(int, int, int, const float*, int, const std::uint16_t*, float*, int, const float*) {
    std::abort();  // never called: bf16_supported() is false in this build
}
#endif

std::vector<std::uint16_t> pack_b_bf16(int K, int N, const float* packed) {
    const int panels = (N + kPanel - 1) / kPanel, K2 = (K + 1) / 2;
    std::vector<std::uint16_t> out(static_cast<std::size_t>(panels) * K2 * 2 * kPanel, 0);
    for (int p = 0; p < panels; ++p)
        for (int k = 0; k < K; ++k)
            for (int j = 0; j < kPanel && p * kPanel + j < N; ++j) {
                const float v = packed[(static_cast<std::size_t>(p) * K + k) * kPanel + j];
                out[((static_cast<std::size_t>(p) * K2 + k / 2) * kPanel + j) * 2 + (k & 1)] = to_bf16(v);
            }
    return out;
}

const KernelTable& select_kernels() {
    const auto tables = available_kernels();
    if (const char* want = std::getenv("MEMAE_TS_ISA")) {
        const std::size_t len = std::strlen(want);
        for (const KernelTable* t : tables) {
            if (std::strncmp(t->name, want, len) == 0 && t->name[len] == '_') return *t;
        }
    }
    return *tables.back();
}

}  // namespace memae

namespace memae {

PeakProbe measure_fp32_peak(const KernelTable& k, double min_seconds, int runs) {
    runs = runs < 1 ? 1 : runs;
    auto cpu_now = [] {
        timespec ts{};
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
        return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
    };
    auto wall_now = [] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    };
    volatile double sink = 0.0;  // the probe's result is used, so no run can be optimised away
    double flops = 0.0;
    // Calibrate: double the iterations until one run lasts at least its share of min_seconds
    // (this also warms the core up to its sustained clock before the kept runs).
    const double per_run = min_seconds / runs;
    std::int64_t iters = 1000;
    for (;;) {
        const double t0 = wall_now();
        sink = sink + k.fma_loop(iters, &flops);
        if (wall_now() - t0 >= per_run || iters > (std::int64_t(1) << 40)) break;
        iters *= 2;
    }
    PeakProbe p;
    p.runs = runs;
    for (int r = 0; r < runs; ++r) {
        const double w0 = wall_now(), c0 = cpu_now();
        sink = sink + k.fma_loop(iters, &flops);
        const double w = wall_now() - w0, c = cpu_now() - c0;
        if (w > 0.0 && flops / w > p.gflops_wall * 1e9) p.gflops_wall = flops / w * 1e-9;
        if (c > 0.0 && flops / c > p.gflops_cpu * 1e9) p.gflops_cpu = flops / c * 1e-9;
    }
    p.flops_per_run = flops;
    return p;
}

std::vector<float> pack_b(int K, int N, const float* B, int ldb) {
    const int panels = (N + kPanel - 1) / kPanel;
    std::vector<float> out(static_cast<std::size_t>(panels) * K * kPanel, 0.0f);
    for (int p = 0; p < panels; ++p) {
        for (int k = 0; k < K; ++k) {
            for (int j = 0; j < kPanel && p * kPanel + j < N; ++j) {
                out[(static_cast<std::size_t>(p) * K + k) * kPanel + j] =
                    B[static_cast<std::size_t>(k) * ldb + p * kPanel + j];
            }
        }
    }
    return out;
}

}  // namespace memae
