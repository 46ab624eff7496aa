// Kernels written once over a per-ISA vocabulary `I` (lanes, load/store, fma, reductions, exp).
//
// Included by each kernels_<isa>.cpp after it defines the vocabulary struct `I` inside
// namespace memae::<isa>; that translation unit is compiled with the ISA's flags. Everything here
// is static or lives in the ISA namespace, and no std:: inline function is called, so the linker
// can never hand an AVX-512 copy of some helper to the scalar path (an ODR trap of per-ISA TUs).
//
// Naming: the table name is <isa>_<MR>x32, the register tile of the GEMM micro-kernel (MR rows by
// one 32-column packed panel).

using V = I::V;
constexpr int W = I::W;

constexpr int VP = kPanel / W;  // vectors per packed panel

// R rows of A against the first NV vectors of one packed panel: R x NV accumulators live in
// registers for all of K. NV < VP only for the last, narrow panel (e.g. 8 output channels).
template <int R, int NV>
static inline void gemm_tile(int K, const float* A, int lda, const float* bp, float* C, int ldc,
                             const float* bias, int cols, bool accumulate) {
    V acc[R][NV];
    int valid[NV];
    for (int v = 0; v < NV; ++v) {
        const int c = cols - v * W;
        valid[v] = c <= 0 ? 0 : (c >= W ? W : c);
    }
    for (int v = 0; v < NV; ++v) {
        for (int r = 0; r < R; ++r) {
            if (valid[v] == 0) acc[r][v] = I::zero();
            else if (accumulate) acc[r][v] = I::loadn(C + r * ldc + v * W, valid[v]);
            else if (bias) acc[r][v] = I::loadn(bias + v * W, valid[v]);
            else acc[r][v] = I::zero();
        }
    }
    for (int k = 0; k < K; ++k, bp += kPanel) {
        V x[NV];
        for (int v = 0; v < NV; ++v) x[v] = I::load(bp + v * W);
        for (int r = 0; r < R; ++r) {
            const V a = I::set1(A[r * lda + k]);
            for (int v = 0; v < NV; ++v) acc[r][v] = I::fma(a, x[v], acc[r][v]);
        }
    }
    for (int r = 0; r < R; ++r) {
        for (int v = 0; v < NV; ++v) {
            if (valid[v] == W) I::store(C + r * ldc + v * W, acc[r][v]);
            else if (valid[v] > 0) I::storen(C + r * ldc + v * W, acc[r][v], valid[v]);
        }
    }
}

template <int NV>
static void gemm_panel(int M, int K, const float* A, int lda, const float* bp, float* C, int ldc,
                       const float* b, int cols, bool accumulate) {
    constexpr int MR = I::MR;
    int m = 0;
    for (; m + MR <= M; m += MR) gemm_tile<MR, NV>(K, A + static_cast<long>(m) * lda, lda, bp, C + static_cast<long>(m) * ldc, ldc, b, cols, accumulate);
    const float* a = A + static_cast<long>(m) * lda;
    float* c = C + static_cast<long>(m) * ldc;
    switch (M - m) {  // MR <= 8, so at most 7 rows remain
        case 0: break;
        case 1: gemm_tile<1, NV>(K, a, lda, bp, c, ldc, b, cols, accumulate); break;
        case 2: gemm_tile<2, NV>(K, a, lda, bp, c, ldc, b, cols, accumulate); break;
        case 3: gemm_tile<3, NV>(K, a, lda, bp, c, ldc, b, cols, accumulate); break;
        case 4: gemm_tile<4, NV>(K, a, lda, bp, c, ldc, b, cols, accumulate); break;
        case 5: gemm_tile<5, NV>(K, a, lda, bp, c, ldc, b, cols, accumulate); break;
        case 6: gemm_tile<6, NV>(K, a, lda, bp, c, ldc, b, cols, accumulate); break;
        default: gemm_tile<7, NV>(K, a, lda, bp, c, ldc, b, cols, accumulate); break;
    }
}

static void gemm(int M, int N, int K, const float* A, int lda, const float* Bp, float* C, int ldc,
                 const float* bias, bool accumulate) {
    // Panel outer, rows inner: each panel is read from memory once and reused from L1.
    for (int n0 = 0; n0 < N; n0 += kPanel) {
        const int cols = N - n0 < kPanel ? N - n0 : kPanel;
        const float* bp = Bp + static_cast<long>(n0) * K;
        const float* b = bias ? bias + n0 : nullptr;
        float* c = C + n0;
        // Only the vectors that hold real columns (VP is 2 for AVX-512, 4 for AVX2).
        const int nv = VP <= 4 ? (cols + W - 1) / W : VP;
        switch (nv) {
            case 1: gemm_panel<1>(M, K, A, lda, bp, c, ldc, b, cols, accumulate); break;
            case 2: gemm_panel<(VP >= 2 ? 2 : 1)>(M, K, A, lda, bp, c, ldc, b, cols, accumulate); break;
            case 3: gemm_panel<(VP >= 3 ? 3 : 1)>(M, K, A, lda, bp, c, ldc, b, cols, accumulate); break;
            default: gemm_panel<VP>(M, K, A, lda, bp, c, ldc, b, cols, accumulate); break;
        }
    }
}

static float scale_max(float* x, int n, float scale, const float* mul) {
    const V s = I::set1(scale);
    V mx = I::set1(-__builtin_inff());
    int i = 0;
    for (; i + W <= n; i += W) {
        V v = I::mul(I::load(x + i), s);
        if (mul) v = I::mul(v, I::load(mul + i));
        I::store(x + i, v);
        mx = I::max(mx, v);
    }
    float m = I::hmax(mx);
    for (; i < n; ++i) {
        float v = x[i] * scale;
        if (mul) v *= mul[i];
        x[i] = v;
        m = v > m ? v : m;
    }
    return m;
}

static float exp_sum(float* x, int n, float scale, const float* mul, float shift) {
    const V sc = I::set1(scale), sh = I::set1(shift);
    V acc = I::zero();
    int i = 0;
    for (; i + W <= n; i += W) {
        V v = I::mul(I::load(x + i), sc);
        if (mul) v = I::mul(v, I::load(mul + i));
        const V e = I::exp(I::sub(v, sh));
        I::store(x + i, e);
        acc = I::add(acc, e);
    }
    float total = I::hsum(acc);
    if (i < n) {
        const int rem = n - i;
        V v = I::mul(I::loadn(x + i, rem), sc);
        if (mul) v = I::mul(v, I::loadn(mul + i, rem));
        const V e = I::exp(I::sub(v, sh));
        I::storen(x + i, e, rem);
        for (int j = 0; j < rem; ++j) total += x[i + j];
    }
    return total;
}

static int select_gt(const float* x, int n, float inv_sum, float thr, std::int32_t* idx,
                     float* val) {
    const V is = I::set1(inv_sum);
    const V t = I::set1(thr);
    int count = 0;
    int i = 0;
    for (; i + W <= n; i += W) {
        const V w = I::mul(I::load(x + i), is);
        unsigned long long mask = I::gt_mask(w, t);
        if (!mask) continue;  // the common case after softmax: nothing in this vector survives
        if constexpr (I::kCompress) {
            count += I::compress(w, mask, i, idx + count, val + count);  // flat attention stays fast
        } else {
            while (mask) {
                const int j = __builtin_ctzll(mask);
                mask &= mask - 1;
                idx[count] = i + j;
                val[count] = x[i + j] * inv_sum;
                ++count;
            }
        }
    }
    for (; i < n; ++i) {
        const float w = x[i] * inv_sum;
        if (w > thr) { idx[count] = i; val[count] = w; ++count; }
    }
    return count;
}

// NF full vectors of the output (plus an optional masked tail vector) held in registers while
// every selected memory row streams past.
template <int NF>
static inline void gather_block(int count, const std::int32_t* idx, const float* w, const float* M, int dim,
                                int d0, int tail, float* out) {
    V acc[NF + 1];
    for (int v = 0; v <= NF; ++v) acc[v] = I::zero();
    for (int j = 0; j < count; ++j) {
        const V a = I::set1(w[j]);
        const float* row = M + static_cast<long>(idx[j]) * dim + d0;
        for (int v = 0; v < NF; ++v) acc[v] = I::fma(a, I::load(row + v * W), acc[v]);
        if (tail) acc[NF] = I::fma(a, I::loadn(row + NF * W, tail), acc[NF]);
    }
    for (int v = 0; v < NF; ++v) I::store(out + d0 + v * W, acc[v]);
    if (tail) I::storen(out + d0 + NF * W, acc[NF], tail);
}

static void gather_rows(int count, const std::int32_t* idx, const float* w, const float* M, int dim,
                        float* out) {
    int d0 = 0;
    for (; d0 + 4 * W <= dim; d0 += 4 * W) gather_block<4>(count, idx, w, M, dim, d0, 0, out);
    const int rest = dim - d0;
    const int tail = rest % W;
    switch (rest / W) {
        case 0: if (tail) gather_block<0>(count, idx, w, M, dim, d0, tail, out); break;
        case 1: gather_block<1>(count, idx, w, M, dim, d0, tail, out); break;
        case 2: gather_block<2>(count, idx, w, M, dim, d0, tail, out); break;
        default: gather_block<3>(count, idx, w, M, dim, d0, tail, out); break;
    }
}

static float dot(int n, const float* a, const float* b) {
    V acc0 = I::zero(), acc1 = I::zero();
    int i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
        acc0 = I::fma(I::load(a + i), I::load(b + i), acc0);
        acc1 = I::fma(I::load(a + i + W), I::load(b + i + W), acc1);
    }
    for (; i + W <= n; i += W) acc0 = I::fma(I::load(a + i), I::load(b + i), acc0);
    if (i < n) acc1 = I::fma(I::loadn(a + i, n - i), I::loadn(b + i, n - i), acc1);
    return I::hsum(I::add(acc0, acc1));
}

// tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|): no overflow, absolute error ~1e-7.
static void tanh_(float* x, int n) {
    const V one = I::set1(1.0f), m2 = I::set1(-2.0f), z = I::zero();
    int i = 0;
    while (i < n) {
        const int c = n - i < W ? n - i : W;
        const V v = I::loadn(x + i, c);
        const V ax = I::max(v, I::sub(z, v));
        const V e = I::exp(I::mul(m2, ax));
        const V t = I::div(I::sub(one, e), I::add(one, e));
        I::storen(x + i, I::sign_like(t, v), c);
        i += c;
    }
}

static void leaky_relu(float* x, int n, float slope) {
    const V s = I::set1(slope);
    const V z = I::zero();
    int i = 0;
    for (; i + W <= n; i += W) {
        const V v = I::load(x + i);
        I::store(x + i, I::fma(s, I::min(v, z), I::max(v, z)));
    }
    for (; i < n; ++i) x[i] = x[i] >= 0.0f ? x[i] : slope * x[i];
}

static void sq_err_cols(const float* a, const float* b, int rows, int cols, float* acc) {
    int j = 0;
    for (; j + W <= cols; j += W) {
        V s = I::load(acc + j);
        for (int r = 0; r < rows; ++r) {
            const V d = I::sub(I::load(a + r * cols + j), I::load(b + r * cols + j));
            s = I::fma(d, d, s);
        }
        I::store(acc + j, s);
    }
    if (j < cols) {
        const int rem = cols - j;
        V s = I::loadn(acc + j, rem);
        for (int r = 0; r < rows; ++r) {
            const V d = I::sub(I::loadn(a + r * cols + j, rem), I::loadn(b + r * cols + j, rem));
            s = I::fma(d, d, s);
        }
        I::storen(acc + j, s, rem);
    }
}

static const KernelTable kTable = {
    I::kName, gemm, scale_max, exp_sum, select_gt, gather_rows, dot, tanh_, leaky_relu, sq_err_cols,
};
