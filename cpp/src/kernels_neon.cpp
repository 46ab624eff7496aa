// NEON path for aarch64 (NEON is part of the base ISA there, so no run-time check is needed).
#if defined(__aarch64__)
#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "memae/kernels.h"

namespace memae {
namespace neon {

struct I {
    using V = float32x4_t;
    static constexpr int W = 4;
    static constexpr bool kLdexpSaturates = false;
    static constexpr bool kCompress = false;
    static int compress(V, unsigned long long, int, std::int32_t*, float*) { return 0; }
    static int compress_idx(V, unsigned long long, const std::int32_t*, std::int32_t*, float*) { return 0; }
    // 5 x 16: 20 accumulators + 4 panel vectors + the 5 A values (GCC loads a tile's A column
    // at once) = 29 of the 32 q registers, so the inner loop never spills. The former 3 x 32
    // tile needed 24 + 8 + 3 and spilled 18 stores and 7 loads per 24 fmla; 6 x 16 needs 34 and
    // spills 2. tests/test_neon_gemm_spills.py checks the cross-compiled loop.
    static constexpr int MR = 5;
    static constexpr int NT = 4;
    static constexpr int kPeakChains = 16;
    static constexpr const char* kName = "neon_5x16";
    static V zero() { return vdupq_n_f32(0.0f); }
    static V set1(float v) { return vdupq_n_f32(v); }
    static V load(const float* p) { return vld1q_f32(p); }
    static void store(float* p, V v) { vst1q_f32(p, v); }
    // Lane by lane (no stack buffer, so a partial tile's accumulators stay in registers).
    static V loadn(const float* p, int n) {
        if (n >= 4) return vld1q_f32(p);
        V v = vdupq_n_f32(0.0f);
        v = vsetq_lane_f32(p[0], v, 0);
        if (n > 1) v = vsetq_lane_f32(p[1], v, 1);
        if (n > 2) v = vsetq_lane_f32(p[2], v, 2);
        return v;
    }
    static void storen(float* p, V v, int n) {
        if (n >= 4) return vst1q_f32(p, v);
        vst1q_lane_f32(p, v, 0);
        if (n > 1) vst1q_lane_f32(p + 1, v, 1);
        if (n > 2) vst1q_lane_f32(p + 2, v, 2);
    }
    static V fma(V a, V b, V c) { return vfmaq_f32(c, a, b); }
    static V add(V a, V b) { return vaddq_f32(a, b); }
    static V sub(V a, V b) { return vsubq_f32(a, b); }
    static V mul(V a, V b) { return vmulq_f32(a, b); }
    static V div(V a, V b) { return vdivq_f32(a, b); }
    static V max(V a, V b) { return vmaxq_f32(a, b); }
    static V min(V a, V b) { return vminq_f32(a, b); }
    static V round(V a) { return vrndnq_f32(a); }
    static V ldexp(V p, V n) {
        const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
        return vmulq_f32(p, vreinterpretq_f32_s32(e));
    }
    static float hsum(V v) { return vaddvq_f32(v); }
    static float hmax(V v) { return vmaxvq_f32(v); }
    static V sign_like(V t, V v) { return vbslq_f32(vdupq_n_u32(0x80000000u), v, t); }
    static inline V exp(V x);
    static inline V exp2(V t);
    static unsigned long long gt_mask(V a, V b) {
        const uint32x4_t m = vcgtq_f32(a, b);
        return (vgetq_lane_u32(m, 0) & 1u) | ((vgetq_lane_u32(m, 1) & 1u) << 1) |
               ((vgetq_lane_u32(m, 2) & 1u) << 2) | ((vgetq_lane_u32(m, 3) & 1u) << 3);
    }
};

#include "exp_poly.h"
inline I::V I::exp(V x) { return exp_poly(x); }
inline I::V I::exp2(V t) { return exp2_poly(t); }

#include "kernels_impl.h"

}  // namespace neon

const KernelTable& kernels_neon() { return neon::kTable; }

}  // namespace memae
#endif
