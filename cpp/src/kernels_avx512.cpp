// AVX-512 path (F + DQ). Compiled with -mavx512f -mavx512dq -mfma; masked loads handle tails.
// GCC 12's own AVX-512 headers trip -Wuninitialized through _mm512_undefined_ps (GCC bug
// 105593); silence exactly that in this file so the build stays -Wall -Wextra clean.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

#include "memae/kernels.h"

namespace memae {
namespace avx512 {

struct I {
    using V = __m512;
    static constexpr int W = 16;
    static constexpr bool kLdexpSaturates = true;
    static constexpr bool kCompress = true;
    /// Packs the lanes of w selected by mask (and their indices base + lane) to the front and
    /// stores all 16 lanes: the caller's buffers have 16 entries of slack.
    static int compress(V w, unsigned long long mask, int base, std::int32_t* idx, float* val) {
        const __mmask16 m = static_cast<__mmask16>(mask);
        _mm512_storeu_ps(val, _mm512_maskz_compress_ps(m, w));
        const __m512i lanes = _mm512_add_epi32(_mm512_set1_epi32(base),
                                               _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        _mm512_storeu_si512(idx, _mm512_maskz_compress_epi32(m, lanes));
        return __builtin_popcount(static_cast<unsigned>(m));
    }
    /// compress with the indices taken from idx_in (filter_gt compacting a candidate list).
    static int compress_idx(V w, unsigned long long mask, const std::int32_t* idx_in, std::int32_t* idx, float* val) {
        const __mmask16 m = static_cast<__mmask16>(mask);
        const __m512i iv = _mm512_loadu_si512(idx_in);
        _mm512_storeu_ps(val, _mm512_maskz_compress_ps(m, w));
        _mm512_storeu_si512(idx, _mm512_maskz_compress_epi32(m, iv));
        return __builtin_popcount(static_cast<unsigned>(m));
    }
    static constexpr int MR = 8;
    static constexpr int NT = 2;  // 8 x 2 zmm accumulators + 2 panel vectors + 1 broadcast of 32
    static constexpr int kPeakChains = 12;  // FMA latency 4 x 2 ports = 8 in flight, and margin
    static constexpr const char* kName = "avx512_8x32";
    static __mmask16 tail_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
    static V zero() { return _mm512_setzero_ps(); }
    static V set1(float v) { return _mm512_set1_ps(v); }
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    static V loadn(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask(n), p); }
    static void storen(float* p, V v, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), v); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
    static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
    static V div(V a, V b) { return _mm512_div_ps(a, b); }
    static V max(V a, V b) { return _mm512_max_ps(a, b); }
    static V min(V a, V b) { return _mm512_min_ps(a, b); }
    static V round(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
    static V ldexp(V p, V n) { return _mm512_scalef_ps(p, n); }
    static float hsum(V v) { return _mm512_reduce_add_ps(v); }
    static float hmax(V v) { return _mm512_reduce_max_ps(v); }
    static V sign_like(V t, V v) {
        return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(t), _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN))));
    }
    static inline V exp(V x);
    static inline V exp2(V t);
    static unsigned long long gt_mask(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
};

#include "exp_poly.h"
inline I::V I::exp(V x) { return exp_poly(x); }
inline I::V I::exp2(V t) { return exp2_poly(t); }

#include "kernels_impl.h"

}  // namespace avx512

const KernelTable& kernels_avx512() { return avx512::kTable; }

}  // namespace memae
