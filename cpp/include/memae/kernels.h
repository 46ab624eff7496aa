// Hot-path kernels of the runtime, one table per instruction set.
//
// Every table implements the same contract; `select_kernels()` picks the best one the CPU supports
// at run time (x86-64: AVX-512 > AVX2/FMA > scalar; aarch64: NEON). Tests run every table the host
// can execute against the double-accumulating references in reference.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace memae {

/// Packed GEMM operands are panels of kPanel columns: panel p holds B[k][p*kPanel + j] at
/// (p*K + k)*kPanel + j, zero-padded past N. One panel (K x 32 floats) stays in L1 while every
/// row block of A streams past it, whatever the ISA's vector width.
constexpr int kPanel = 32;

/// Extra entries select_gt may write past its count (one full vector of the widest ISA).
constexpr int kSelectSlack = 16;

/// Packs row-major B (K x N, leading dimension ldb) into panels; returns ceil(N/32)*K*32 floats.
std::vector<float> pack_b(int K, int N, const float* B, int ldb);

struct KernelTable {
    /// Kernel family name as ISA_tiling, e.g. "avx512_8x32".
    const char* name;
    /// C[m*ldc+n] = init + sum_k A[m*lda+k] * B[k][n] with B packed by pack_b; init is
    /// C[m*ldc+n] itself when `accumulate`, else bias[n] (0 when bias is null).
    void (*gemm)(int M, int N, int K, const float* A, int lda, const float* Bp, float* C, int ldc,
                 const float* bias, bool accumulate);
    /// x[i] *= scale * (mul ? mul[i] : 1); returns max_i x[i] (-inf when n == 0).
    float (*scale_max)(float* x, int n, float scale, const float* mul);
    /// x[i] = exp(x[i] * scale * (mul ? mul[i] : 1) - shift); returns sum_i x[i].
    float (*exp_sum)(float* x, int n, float scale, const float* mul, float shift);
    /// Writes every i with x[i] * inv_sum > thr as idx[k] = i, val[k] = x[i] * inv_sum, in order;
    /// returns the count. This is the sparse step after softmax: most weights fall under thr.
    /// idx and val need room for n + kSelectSlack entries (vector tails may be stored past count).
    int (*select_gt)(const float* x, int n, float inv_sum, float thr, std::int32_t* idx, float* val);
    /// out[0:dim] = sum_j w[j] * M[idx[j]*dim : (idx[j]+1)*dim]: the sparse memory read. The
    /// output block stays in registers while the selected rows stream past.
    void (*gather_rows)(int count, const std::int32_t* idx, const float* w, const float* M, int dim,
                        float* out);
    /// sum_i a[i] * b[i].
    float (*dot)(int n, const float* a, const float* b);
    /// x[i] = tanh(x[i]).
    void (*tanh)(float* x, int n);
    /// x[i] = x[i] >= 0 ? x[i] : slope * x[i]  (slope 0 is ReLU).
    void (*leaky_relu)(float* x, int n, float slope);
    /// acc[j] += sum_r (a[r*cols+j] - b[r*cols+j])^2.
    void (*sq_err_cols)(const float* a, const float* b, int rows, int cols, float* acc);
};

const KernelTable& kernels_scalar();
#if defined(__x86_64__) || defined(_M_X64)
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();
#endif
#if defined(__aarch64__)
const KernelTable& kernels_neon();
#endif

/// Tables compiled into this build that the running CPU can execute, best last.
std::vector<const KernelTable*> available_kernels();
/// The best table for this CPU. MEMAE_TS_ISA=scalar|avx2|avx512|neon forces one (for tests and
/// benchmarks); an unknown or unsupported name falls back to the best.
const KernelTable& select_kernels();

}  // namespace memae
