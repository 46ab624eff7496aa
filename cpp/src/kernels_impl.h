// Kernels written once over a per-ISA vocabulary `I` (lanes, load/store, fma, reductions, exp).
//
// Included by each kernels_<isa>.cpp after it defines the vocabulary struct `I` inside
// namespace memae::<isa>; that translation unit is compiled with the ISA's flags. Everything here
// is static or lives in the ISA namespace, and no std:: inline function is called, so the linker
// can never hand an AVX-512 copy of some helper to the scalar path (an ODR trap of per-ISA TUs).
//
// Naming: the table name is <isa>_<MR>x<2*lanes>, the register tile of the GEMM micro-kernel.

using V = I::V;
constexpr int W = I::W;

// MR rows by two vectors of columns, accumulated over all of K in registers.
template <int MR>
static inline void gemm_rows(int N, int K, const float* A, int lda, const float* B, int ldb,
                             float* C, int ldc, const float* bias) {
    int n = 0;
    for (; n + 2 * W <= N; n += 2 * W) {
        V acc0[MR], acc1[MR];
        const V b0 = bias ? I::load(bias + n) : I::zero();
        const V b1 = bias ? I::load(bias + n + W) : I::zero();
        for (int r = 0; r < MR; ++r) { acc0[r] = b0; acc1[r] = b1; }
        const float* bp = B + n;
        for (int k = 0; k < K; ++k, bp += ldb) {
            const V x0 = I::load(bp);
            const V x1 = I::load(bp + W);
            for (int r = 0; r < MR; ++r) {
                const V a = I::set1(A[r * lda + k]);
                acc0[r] = I::fma(a, x0, acc0[r]);
                acc1[r] = I::fma(a, x1, acc1[r]);
            }
        }
        for (int r = 0; r < MR; ++r) {
            I::store(C + r * ldc + n, acc0[r]);
            I::store(C + r * ldc + n + W, acc1[r]);
        }
    }
    while (n < N) {
        const int cols = N - n < W ? N - n : W;  // a full vector, then the masked tail
        V acc[MR];
        const V b0 = bias ? I::loadn(bias + n, cols) : I::zero();
        for (int r = 0; r < MR; ++r) acc[r] = b0;
        const float* bp = B + n;
        for (int k = 0; k < K; ++k, bp += ldb) {
            const V x0 = I::loadn(bp, cols);
            for (int r = 0; r < MR; ++r) acc[r] = I::fma(I::set1(A[r * lda + k]), x0, acc[r]);
        }
        for (int r = 0; r < MR; ++r) I::storen(C + r * ldc + n, acc[r], cols);
        n += cols;
    }
}

static void gemm(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
                 int ldc, const float* bias) {
    constexpr int MR = I::MR;
    int m = 0;
    for (; m + MR <= M; m += MR) gemm_rows<MR>(N, K, A + m * lda, lda, B, ldb, C + m * ldc, ldc, bias);
    const float* a = A + m * lda;
    float* c = C + m * ldc;
    switch (M - m) {
        case 0: break;
        case 1: gemm_rows<1>(N, K, a, lda, B, ldb, c, ldc, bias); break;
        case 2: gemm_rows<2>(N, K, a, lda, B, ldb, c, ldc, bias); break;
        case 3: gemm_rows<3>(N, K, a, lda, B, ldb, c, ldc, bias); break;
        case 4: gemm_rows<4>(N, K, a, lda, B, ldb, c, ldc, bias); break;
        default:  // MR is at most 6, so at most 5 rows remain
            gemm_rows<4>(N, K, a, lda, B, ldb, c, ldc, bias);
            gemm_rows<1>(N, K, a + 4 * lda, lda, B, ldb, c + 4 * ldc, ldc, bias);
            break;
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

static float exp_sum(float* x, int n, float shift) {
    const V sh = I::set1(shift);
    V acc = I::zero();
    int i = 0;
    for (; i + W <= n; i += W) {
        const V e = I::exp(I::sub(I::load(x + i), sh));
        I::store(x + i, e);
        acc = I::add(acc, e);
    }
    float total = I::hsum(acc);
    if (i < n) {
        const int rem = n - i;
        const V e = I::exp(I::sub(I::loadn(x + i, rem), sh));
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
        unsigned long long mask = I::gt_mask(I::mul(I::load(x + i), is), t);
        while (mask) {
            const int j = __builtin_ctzll(mask);
            mask &= mask - 1;
            idx[count] = i + j;
            val[count] = x[i + j] * inv_sum;
            ++count;
        }
    }
    for (; i < n; ++i) {
        const float w = x[i] * inv_sum;
        if (w > thr) { idx[count] = i; val[count] = w; ++count; }
    }
    return count;
}

static void axpy(int n, float a, const float* x, float* y) {
    const V av = I::set1(a);
    int i = 0;
    for (; i + W <= n; i += W) I::store(y + i, I::fma(av, I::load(x + i), I::load(y + i)));
    if (i < n) I::storen(y + i, I::fma(av, I::loadn(x + i, n - i), I::loadn(y + i, n - i)), n - i);
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
    I::kName, gemm, scale_max, exp_sum, select_gt, axpy, dot, leaky_relu, sq_err_cols,
};
