// Portable scalar path: always compiled, always available, the fallback on every CPU.
#include <cmath>
#include <cstdint>

#include "memae/kernels.h"

namespace memae {
namespace scalar {

struct I {
    using V = float;
    static constexpr int W = 1;
    static constexpr bool kCompress = false;
    static int compress(V, unsigned long long, int, std::int32_t*, float*) { return 0; }
    static int compress_idx(V, unsigned long long, const std::int32_t*, std::int32_t*, float*) { return 0; }
    static constexpr int MR = 2;
    static constexpr int NT = 32;
    static constexpr int kPeakChains = 8;
    static constexpr const char* kName = "scalar_2x32";
    static V zero() { return 0.0f; }
    static V set1(float v) { return v; }
    static V load(const float* p) { return *p; }
    static void store(float* p, V v) { *p = v; }
    static V loadn(const float* p, int) { return *p; }
    static void storen(float* p, V v, int) { *p = v; }
    static V fma(V a, V b, V c) { return a * b + c; }
    static V add(V a, V b) { return a + b; }
    static V sub(V a, V b) { return a - b; }
    static V mul(V a, V b) { return a * b; }
    static V div(V a, V b) { return a / b; }
    static V max(V a, V b) { return a > b ? a : b; }
    static V min(V a, V b) { return a < b ? a : b; }
    static float hsum(V v) { return v; }
    static float hmax(V v) { return v; }
    static V sign_like(V t, V v) { return v < 0.0f ? -t : t; }
    static V exp(V v) { return std::exp(v); }
    static V exp2(V v) { return std::exp2(v); }
    static unsigned long long gt_mask(V a, V b) { return a > b ? 1ull : 0ull; }
};

#include "kernels_impl.h"

}  // namespace scalar

const KernelTable& kernels_scalar() { return scalar::kTable; }

}  // namespace memae
