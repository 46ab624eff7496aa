// The opt-in BF16 convolution GEMM (AVX512_BF16, `vdpbf16ps`). Compiled with -mavx512bf16 and
// called only when the CPU has it (bf16_supported(); Model::set_precision refuses otherwise).
//
// A (activations, FP32) is rounded to bf16 once per call into a per-thread buffer; B (weights) was
// rounded and packed once at load (pack_b_bf16: panels of 32 columns, pairs of consecutive k).
// One vdpbf16ps multiplies 16 columns x 2 k exactly and adds both products to FP32 accumulators,
// so the only rounding beyond FP32 is that of the two operands (8 significant bits each).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "memae/kernels.h"

namespace memae {
namespace {

constexpr int kRows = 8;  // 8 rows x 2 zmm accumulators + 2 panel vectors + 1 broadcast

inline __m512bh as_bh(__m512i v) {
    __m512bh out;
    std::memcpy(&out, &v, sizeof out);
    return out;
}

/// Rows r0..r0+R of C for one 32-column panel.
template <int R>
inline void tile(int K2, const std::uint16_t* a, int lda, const std::uint16_t* bp, float* C, int ldc,
                 const float* bias, int cols) {
    __m512 acc[R][2];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int q = 0; q < K2; ++q, bp += 2 * kPanel) {
        const __m512bh b0 = as_bh(_mm512_loadu_si512(bp));
        const __m512bh b1 = as_bh(_mm512_loadu_si512(bp + kPanel));
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            std::uint32_t pair;
            std::memcpy(&pair, a + static_cast<std::size_t>(r) * lda + 2 * q, sizeof pair);
            const __m512bh x = as_bh(_mm512_set1_epi32(static_cast<int>(pair)));
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, b1);
        }
    }
    const __mmask16 m0 = cols >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << cols) - 1u);
    const __mmask16 m1 = cols >= 32 ? __mmask16(0xFFFF)
                         : cols > 16 ? static_cast<__mmask16>((1u << (cols - 16)) - 1u)
                                     : __mmask16(0);
    const __m512 bias0 = bias ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    const __m512 bias1 = bias ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
        float* c = C + static_cast<std::size_t>(r) * ldc;
        _mm512_mask_storeu_ps(c, m0, _mm512_add_ps(acc[r][0], bias0));
        _mm512_mask_storeu_ps(c + 16, m1, _mm512_add_ps(acc[r][1], bias1));
    }
}

}  // namespace

void gemm_bf16(int M, int N, int K, const float* A, int lda, const std::uint16_t* Bp, float* C, int ldc,
               const float* bias) {
    if (M <= 0 || N <= 0) return;
    const int K2 = (K + 1) / 2;
    // Every float the rows of A span, rounded to bf16 (rows may overlap: a convolution's rows
    // are strided windows of one input). One extra zero: with K odd the last pair reads one
    // element past a row, which B's zero row multiplies.
    const std::size_t span = K > 0 ? static_cast<std::size_t>(M - 1) * lda + K : 0;
    thread_local std::vector<std::uint16_t> a16;
    if (a16.size() < span + 1) a16.resize(span + 1);
    std::size_t i = 0;
    for (; i + 16 <= span; i += 16) {
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(A + i));
        std::memcpy(a16.data() + i, &h, sizeof h);
    }
    if (i < span) {
        const __mmask16 m = static_cast<__mmask16>((1u << (span - i)) - 1u);
        const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, A + i));
        _mm256_mask_storeu_epi16(a16.data() + i, m, reinterpret_cast<const __m256i&>(h));
    }
    a16[span] = 0;
    const std::size_t panel_size = static_cast<std::size_t>(K2) * 2 * kPanel;
    for (int n0 = 0; n0 < N; n0 += kPanel) {
        const int cols = N - n0 < kPanel ? N - n0 : kPanel;
        const std::uint16_t* bp = Bp + static_cast<std::size_t>(n0 / kPanel) * panel_size;
        const float* bn = bias ? bias + n0 : nullptr;
        int m = 0;
        for (; m + kRows <= M; m += kRows) {
            tile<kRows>(K2, a16.data() + static_cast<std::size_t>(m) * lda, lda, bp, C + static_cast<std::size_t>(m) * ldc + n0,
                        ldc, bn, cols);
        }
        const std::uint16_t* a = a16.data() + static_cast<std::size_t>(m) * lda;
        float* c = C + static_cast<std::size_t>(m) * ldc + n0;
        switch (M - m) {
            case 1: tile<1>(K2, a, lda, bp, c, ldc, bn, cols); break;
            case 2: tile<2>(K2, a, lda, bp, c, ldc, bn, cols); break;
            case 3: tile<3>(K2, a, lda, bp, c, ldc, bn, cols); break;
            case 4: tile<4>(K2, a, lda, bp, c, ldc, bn, cols); break;
            case 5: tile<5>(K2, a, lda, bp, c, ldc, bn, cols); break;
            case 6: tile<6>(K2, a, lda, bp, c, ldc, bn, cols); break;
            case 7: tile<7>(K2, a, lda, bp, c, ldc, bn, cols); break;
            default: break;
        }
    }
}

}  // namespace memae
