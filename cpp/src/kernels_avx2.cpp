// AVX2 + FMA path (x86-64-v3). Compiled with -mavx2 -mfma; chosen only when the CPU has both.
#include <immintrin.h>

#include <cstdint>

#include "memae/kernels.h"

namespace memae {
namespace avx2 {

struct I {
    using V = __m256;
    static constexpr int W = 8;
    static constexpr bool kLdexpSaturates = false;
    static constexpr bool kCompress = false;
    static int compress(V, unsigned long long, int, std::int32_t*, float*) { return 0; }
    static constexpr int MR = 3;
    static constexpr const char* kName = "avx2_3x32";
    static __m256i tail_mask(int n) {
        return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    static V zero() { return _mm256_setzero_ps(); }
    static V set1(float v) { return _mm256_set1_ps(v); }
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    static V loadn(const float* p, int n) { return _mm256_maskload_ps(p, tail_mask(n)); }
    static void storen(float* p, V v, int n) { _mm256_maskstore_ps(p, tail_mask(n), v); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
    static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
    static V div(V a, V b) { return _mm256_div_ps(a, b); }
    static V max(V a, V b) { return _mm256_max_ps(a, b); }
    static V min(V a, V b) { return _mm256_min_ps(a, b); }
    static V round(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static V ldexp(V p, V n) {
        const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
        return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    }
    static float hsum(V v) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static float hmax(V v) {
        __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        s = _mm_max_ss(s, _mm_movehdup_ps(s));
        return _mm_cvtss_f32(s);
    }
    static V sign_like(V t, V v) { return _mm256_or_ps(t, _mm256_and_ps(v, _mm256_set1_ps(-0.0f))); }
    static inline V exp(V x);
    static unsigned long long gt_mask(V a, V b) {
        return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ)));
    }
};

#include "exp_poly.h"
inline I::V I::exp(V x) { return exp_poly(x); }

#include "kernels_impl.h"

}  // namespace avx2

const KernelTable& kernels_avx2() { return avx2::kTable; }

}  // namespace memae
