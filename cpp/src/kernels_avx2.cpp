// AVX2 + FMA path (x86-64-v3). Compiled with -mavx2 -mfma; chosen only when the CPU has both.
#include <immintrin.h>

#include <cstdint>

#include "memae/kernels.h"

namespace memae {
namespace avx2 {

// For each 8-bit mask, the numbers of the selected lanes packed as nibbles (I::compress).
struct LaneTable {
    std::uint32_t v[256];
    constexpr LaneTable() : v() {
        for (unsigned m = 0; m < 256; ++m) {
            std::uint32_t packed = 0;
            int k = 0;
            for (unsigned j = 0; j < 8; ++j) {
                if ((m >> j) & 1u) packed |= j << (4 * k++);
            }
            v[m] = packed;
        }
    }
};
constexpr LaneTable kLanes{};

struct I {
    using V = __m256;
    static constexpr int W = 8;
    static constexpr bool kLdexpSaturates = false;
    static constexpr bool kCompress = true;
    /// AVX2 has no compress instruction: a 256-entry table gives, for each 8-bit mask, the
    /// selected lane numbers packed as nibbles; they become a permutation of w and the indices.
    /// Stores all 8 lanes: the caller's buffers have kSelectSlack entries of slack.
    static int compress(V w, unsigned long long mask, int base, std::int32_t* idx, float* val) {
        const __m256i perm = _mm256_and_si256(
            _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(kLanes.v[mask & 0xffu])),
                              _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
            _mm256_set1_epi32(0xf));
        _mm256_storeu_ps(val, _mm256_permutevar8x32_ps(w, perm));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx), _mm256_add_epi32(_mm256_set1_epi32(base), perm));
        return __builtin_popcount(static_cast<unsigned>(mask & 0xffu));
    }
    /// compress with the indices taken from idx_in (filter_gt compacting a candidate list).
    static int compress_idx(V w, unsigned long long mask, const std::int32_t* idx_in, std::int32_t* idx, float* val) {
        const __m256i perm = _mm256_and_si256(
            _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(kLanes.v[mask & 0xffu])),
                              _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
            _mm256_set1_epi32(0xf));
        const __m256i iv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx_in));
        _mm256_storeu_ps(val, _mm256_permutevar8x32_ps(w, perm));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(idx), _mm256_permutevar8x32_epi32(iv, perm));
        return __builtin_popcount(static_cast<unsigned>(mask & 0xffu));
    }
    static constexpr int MR = 3;
    static constexpr int NT = 4;  // 3 x 4 ymm accumulators + 4 panel vectors + 1 broadcast of 16
    static constexpr int kPeakChains = 12;
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
    static inline V exp2(V t);
    static unsigned long long gt_mask(V a, V b) {
        return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ)));
    }
};

#include "exp_poly.h"
inline I::V I::exp(V x) { return exp_poly(x); }
inline I::V I::exp2(V t) { return exp2_poly(t); }

#include "kernels_impl.h"

}  // namespace avx2

const KernelTable& kernels_avx2() { return avx2::kTable; }

}  // namespace memae
