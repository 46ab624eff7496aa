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

/// Extra entries exp_candidates may write past its count (one full vector of the widest ISA).
constexpr int kSelectSlack = 16;

/// Packs row-major B (K x N, leading dimension ldb) into panels; returns ceil(N/32)*K*32 floats.
std::vector<float> pack_b(int K, int N, const float* B, int ldb);

/// Activation fused into the GEMM epilogue (gemm_act): applied to bias + A.B before the store,
/// bit for bit what the separate leaky_relu / tanh kernels would compute on the stored value.
enum Act : int { kActNone = 0, kActLeaky = 1, kActTanh = 2 };

struct KernelTable {
    /// Kernel family name as ISA_MRxCOLS, the GEMM register tile, e.g. "avx512_8x32".
    const char* name;
    /// C[m*ldc+n] = init + sum_k A[m*lda+k] * B[k][n] with B packed by pack_b; init is
    /// C[m*ldc+n] itself when `accumulate`, else bias[n] (0 when bias is null).
    void (*gemm)(int M, int N, int K, const float* A, int lda, const float* Bp, float* C, int ldc,
                 const float* bias, bool accumulate);
    /// x[i] *= scale * (mul ? mul[i] : 1); returns max_i x[i] (-inf when n == 0).
    float (*scale_max)(float* x, int n, float scale, const float* mul);
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
    /// gemm with an activation in the epilogue: C = act(init + A.B), act one of Act (slope is
    /// the leaky slope; 0 is ReLU). One pass over C instead of a GEMM then an activation pass.
    void (*gemm_act)(int M, int N, int K, const float* A, int lda, const float* Bp, float* C, int ldc,
                     const float* bias, bool accumulate, int act, float slope);
    /// The FP32 peak probe: `iters` rounds of independent register-only FMA chains in this ISA's
    /// widest vectors; sets *flops to the operations done, returns a value depending on all.
    double (*fma_loop)(std::int64_t iters, double* flops);
    /// acc[j] += sum_r w[r] * (a[r*cols+j] - b[r*cols+j])^2: per-row weighted squared error
    /// (the `last_rows` score reduction weights a window's newest rows more).
    void (*wsq_err_cols)(const float* a, const float* b, int rows, int cols, const float* w, float* acc);
    /// The softmax of one similarity row with a first selection: x[i] := e[i] = exp(x[i] * scale -
    /// shift) (as 2^(x[i] * scale log2 e - shift log2 e), one FMA and a degree-5 polynomial:
    /// a few ulp), *sum = sum_i e[i]; writes, in order, idx[k] = i and
    /// val[k] = e[i] for a superset of the i with e[i] * (1 / *sum) > thr (every i when thr < 0)
    /// and returns how many. idx, val: room for n + kSelectSlack.
    int (*exp_candidates)(float* x, int n, float scale, float shift, float thr, std::int32_t* idx, float* val,
                          float* sum);
    /// The exact selection after exp_candidates, in place: keeps, in order, the entries with
    /// w = val[k] * inv_sum > thr, as val = w; returns the count. This is the sparse step after the
    /// softmax: most weights fall under thr.
    int (*filter_gt)(int count, std::int32_t* idx, float* val, float inv_sum, float thr);
    /// With lam > 0 (every val[i] > lam): val[i] = (val[i] - lam) val[i] / (|val[i] - lam| + eps),
    /// the continuous hard shrinkage; then val[i] /= max(sum_i val[i], 1e-12) (L1 renormalisation).
    void (*shrink_normalise)(int count, float* val, float lam, float eps);
    /// Floats per vector (16 AVX-512, 8 AVX2, 4 NEON, 1 scalar): a conv1d with at most lanes / 2
    /// output channels runs two output rows per GEMM row (model.cpp, Layer::w2).
    int lanes;
    /// The similarity GEMM fused with the softmax's exponentials (cosine addressing, shifted by
    /// 1/T): E[m*lde+n] = e = exp(scale[m] * sum_k A[m*lda+k] * B[k][n] - shift) for n < N (B
    /// packed by pack_b), computed as exp_candidates does (2^(dot * scale log2 e - shift log2 e),
    /// the same bits as gemm then exp_candidates on the same table), and sums[m] = sum_n e. The
    /// dot products never reach memory. Nothing is written past column N of a row.
    void (*sim_exp)(int M, int N, int K, const float* A, int lda, const float* Bp, const float* scale, float shift,
                    float* E, int lde, float* sums);
    /// The selection on exponentials already made (sim_exp) with the exact test: writes, in
    /// order, idx[k] = i and val[k] = w = e[i] * (1 / sum) for every i with w > thr (every i
    /// when thr < 0) and returns how many: the same entries and bits as exp_candidates then
    /// filter_gt with that sum. idx, val: room for n + kSelectSlack.
    int (*select_weights)(const float* e, int n, float sum, float thr, std::int32_t* idx, float* val);
    /// Query rows per sim_exp call in the memory addressing: a whole number of GEMM row tiles
    /// near 16, so the block's exponentials (rows x slots floats) stay close to L1 for the
    /// per-row selection after it while each memory panel is still reused by many rows.
    int sim_rows;
};

/// The core's FP32 peak measured with a kernel table's fma_loop (bench/runtime.py prints each
/// model's share of it). Iterations are calibrated until one run lasts >= `min_seconds`/`runs`,
/// then the best of `runs` runs is kept, by wall time and by this thread's CPU time.
struct PeakProbe {
    double gflops_wall = 0.0;  // best run: FLOPs / wall seconds
    double gflops_cpu = 0.0;   // best run: FLOPs / thread CPU seconds
    double flops_per_run = 0.0;
    int runs = 0;
};
PeakProbe measure_fp32_peak(const KernelTable& k, double min_seconds = 0.3, int runs = 7);

/// Opt-in BF16 convolution GEMM (Model::set_precision). The CPU has AVX512_BF16 (and this build
/// has the kernel): only then may gemm_bf16 be called.
bool bf16_supported();
/// B packed by pack_b (K x N, FP32 panels) re-packed as bf16 (round to nearest even) pairs of
/// consecutive k: panel p, pair q holds (B[2q][j], B[2q+1][j]) for its 32 columns j, zero past K
/// and N. ceil(N/32) * ceil(K/2) * 64 values.
std::vector<std::uint16_t> pack_b_bf16(int K, int N, const float* packed);
/// C[m*ldc+n] = bias[n] + sum_k bf16(A[m*lda+k]) * B16[k][n] (bias null: 0): both operands rounded
/// to bf16, products exact, sums in FP32 (`vdpbf16ps`). Activations are the caller's.
void gemm_bf16(int M, int N, int K, const float* A, int lda, const std::uint16_t* Bp, float* C, int ldc,
               const float* bias);
/// FP32 -> bf16 bits, round to nearest even (the reference the kernels are tested against).
inline std::uint16_t to_bf16(float f) {
    std::uint32_t u;
    static_assert(sizeof u == sizeof f, "float is 32 bits");
    __builtin_memcpy(&u, &f, sizeof u);
    if ((u & 0x7F800000u) == 0) u &= 0x80000000u;  // denormals to signed zero, as vcvtneps2bf16
    u += 0x7FFFu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>(u >> 16);
}
inline float from_bf16(std::uint16_t h) {
    const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
    float f;
    __builtin_memcpy(&f, &u, sizeof f);
    return f;
}

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
