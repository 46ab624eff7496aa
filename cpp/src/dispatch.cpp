// Run-time choice of the kernel table from CPU features. MEMAE_SCALAR_ONLY builds without the
// per-ISA translation units (the single-command libFuzzer build in scripts/run-ctest.sh).
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
