// Kernels written once over a per-ISA vocabulary `I` (lanes, load/store, fma, reductions, exp).
//
// Included by each kernels_<isa>.cpp after it defines the vocabulary struct `I` inside
// namespace memae::<isa>; that translation unit is compiled with the ISA's flags. Everything here
// is static or lives in the ISA namespace, and no std:: inline function is called, so the linker
// can never hand an AVX-512 copy of some helper to the scalar path (an ODR trap of per-ISA TUs).
//
// Naming: the table name is <isa>_<MR>x<NT*W>, the register tile of the GEMM micro-kernel (MR rows
// by NT vectors of a 32-column packed panel: avx512_8x32, avx2_3x32, neon_5x16, scalar_2x32).

using V = I::V;
constexpr int W = I::W;

constexpr int VP = kPanel / W;  // vectors per packed panel

// W ones then W zeros: a plain load at v + W - n is 1 in the first n lanes and 0 in the others
// (0 <= n <= W), from constant memory (a mask stored on the stack and loaded back would cost a
// failed store-forward each time).
struct OnesZeros {
    float v[2 * W];
    constexpr OnesZeros() : v() {
        for (int j = 0; j < W; ++j) v[j] = 1.0f;
    }
};
static constexpr OnesZeros kOnesZeros{};
static inline V lane_mask(int n) {
    if constexpr (W == 1) {  // never a partial vector (and no out-of-bounds pointer to warn of)
        (void)n;
        return I::set1(1.0f);
    } else {
        return I::load(kOnesZeros.v + W - n);
    }
}

// Vectors per register tile: NT <= VP columns of the panel at a time (NEON runs a 32-column
// panel as two 16-column tiles so MR x NT accumulators, NT panel vectors and one broadcast fit
// its 32 registers without spills; checked in the cross-compiled assembly by
// tests/test_neon_gemm_spills.py).
constexpr int NT = I::NT;
static_assert(VP % NT == 0, "a tile is a whole fraction of the panel");

// Output activation applied in the GEMM epilogue (kernels.h, Act), before the only store.
static inline V leaky_v(V v, V s) { return I::fma(s, I::min(v, I::zero()), I::max(v, I::zero())); }

// tanh(x) = sign(x) (1 - e) / (1 + e) with e = exp(-2|x|): no overflow, absolute error ~1e-7.
static inline V tanh_v(V v) {
    const V one = I::set1(1.0f);
    const V ax = I::max(v, I::sub(I::zero(), v));
    const V e = I::exp(I::mul(I::set1(-2.0f), ax));
    return I::sign_like(I::div(I::sub(one, e), I::add(one, e)), v);
}

static inline V epilogue(V v, int act, V slope) {
    if (act == kActLeaky) return leaky_v(v, slope);
    if (act == kActTanh) return tanh_v(v);
    return v;
}

// The k loop of a register tile, shared by gemm_tile and sim_exp_tile: acc = A's R rows times
// the panel's NV vectors over all of K, started from zero. Always inlined, so acc stays in
// registers in each caller (tests/test_neon_gemm_spills.py checks both callers' loops).
template <int R, int NV>
__attribute__((always_inline)) static inline void tile_products(int K, const float* A, int lda, const float* bp,
                                                               V (&acc)[R][NV]) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) acc[r][v] = I::zero();
    for (int k = 0; k < K; ++k, bp += kPanel) {
        V x[NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) x[v] = I::load(bp + v * W);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            const V a = I::set1(A[r * lda + k]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) acc[r][v] = I::fma(a, x[v], acc[r][v]);
        }
    }
}

// R rows of A against NV vectors of one packed panel: R x NV accumulators live in registers for
// all of K. They start at zero, so the k loop touches nothing but A, the panel and registers;
// the initial value (bias, C itself, or 0) is added once in the epilogue with the activation.
// NV < NT only for the last, narrow tile (e.g. 8 output channels).
// PLAIN: no bias, no accumulation, no activation and every column real (the memory similarity,
// K = 32): the epilogue is the R x NV stores alone, with no run-time test in it; at K = 32 the
// general epilogue's tests were a fifth of the tile's time.
template <int R, int NV, bool PLAIN = false>
static inline void gemm_tile(int K, const float* A, int lda, const float* bp, float* C, int ldc,
                             const float* bias, int cols, bool accumulate, int act, float slope) {
    V acc[R][NV];
    tile_products<R, NV>(K, A, lda, bp, acc);
    if constexpr (PLAIN) {
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) I::store(C + r * ldc + v * W, acc[r][v]);
        return;
    }
    // Fully unrolled like the k loop (no variable index into acc, which would force the whole
    // array into memory and make the k loop spill).
    const V s = I::set1(slope);
#pragma GCC unroll 16
    for (int v = 0; v < NV; ++v) {
        const int c = cols - v * W;
        if (c <= 0) continue;
        const int n = c >= W ? W : c;
        const V b = (!accumulate && bias) ? (n == W ? I::load(bias + v * W) : I::loadn(bias + v * W, n)) : I::zero();
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            float* out = C + r * ldc + v * W;
            V y = acc[r][v];
            if (accumulate) y = I::add(y, n == W ? I::load(out) : I::loadn(out, n));
            else y = I::add(y, b);
            y = epilogue(y, act, s);
            if (n == W) I::store(out, y);
            else I::storen(out, y, n);
        }
    }
}

template <int NV>
static void gemm_panel(int M, int K, const float* A, int lda, const float* bp, float* C, int ldc,
                       const float* b, int cols, bool accumulate, int act, float slope) {
    constexpr int MR = I::MR;
    int m = 0;
    if (!accumulate && !b && act == kActNone && cols >= NV * W) {
        for (; m + MR <= M; m += MR) {
            gemm_tile<MR, NV, true>(K, A + static_cast<long>(m) * lda, lda, bp, C + static_cast<long>(m) * ldc, ldc,
                                    b, cols, accumulate, act, slope);
        }
    }
    for (; m + MR <= M; m += MR) {
        gemm_tile<MR, NV>(K, A + static_cast<long>(m) * lda, lda, bp, C + static_cast<long>(m) * ldc, ldc, b, cols,
                          accumulate, act, slope);
    }
    const float* a = A + static_cast<long>(m) * lda;
    float* c = C + static_cast<long>(m) * ldc;
    switch (M - m) {  // MR <= 8, so at most 7 rows remain (no tile taller than MR is built)
        case 0: break;
        case 1: gemm_tile<(1 < MR ? 1 : 1), NV>(K, a, lda, bp, c, ldc, b, cols, accumulate, act, slope); break;
        case 2: gemm_tile<(2 < MR ? 2 : 1), NV>(K, a, lda, bp, c, ldc, b, cols, accumulate, act, slope); break;
        case 3: gemm_tile<(3 < MR ? 3 : 1), NV>(K, a, lda, bp, c, ldc, b, cols, accumulate, act, slope); break;
        case 4: gemm_tile<(4 < MR ? 4 : 1), NV>(K, a, lda, bp, c, ldc, b, cols, accumulate, act, slope); break;
        case 5: gemm_tile<(5 < MR ? 5 : 1), NV>(K, a, lda, bp, c, ldc, b, cols, accumulate, act, slope); break;
        case 6: gemm_tile<(6 < MR ? 6 : 1), NV>(K, a, lda, bp, c, ldc, b, cols, accumulate, act, slope); break;
        default: gemm_tile<(7 < MR ? 7 : 1), NV>(K, a, lda, bp, c, ldc, b, cols, accumulate, act, slope); break;
    }
}

static void gemm_act(int M, int N, int K, const float* A, int lda, const float* Bp, float* C, int ldc,
                     const float* bias, bool accumulate, int act, float slope) {
    // Panel outer, rows inner: each panel is read from memory once and reused from L1.
    for (int n0 = 0; n0 < N; n0 += kPanel) {
        const float* bp = Bp + static_cast<long>(n0) * K;
        for (int t0 = 0; t0 < kPanel && n0 + t0 < N; t0 += NT * W) {
            const int cols = N - n0 - t0;  // may exceed the tile: the tile stores only its own
            const float* b = bias ? bias + n0 + t0 : nullptr;
            float* c = C + n0 + t0;
            // Only the vectors that hold real columns (NT is 2 for AVX-512, 4 for AVX2 and NEON).
            int nv = NT <= 4 ? (cols + W - 1) / W : NT;
            nv = nv < NT ? nv : NT;
            switch (nv) {
                case 1: gemm_panel<1>(M, K, A, lda, bp + t0, c, ldc, b, cols, accumulate, act, slope); break;
                case 2: gemm_panel<(NT >= 2 ? 2 : 1)>(M, K, A, lda, bp + t0, c, ldc, b, cols, accumulate, act, slope); break;
                case 3: gemm_panel<(NT >= 3 ? 3 : 1)>(M, K, A, lda, bp + t0, c, ldc, b, cols, accumulate, act, slope); break;
                default: gemm_panel<NT>(M, K, A, lda, bp + t0, c, ldc, b, cols, accumulate, act, slope); break;
            }
        }
    }
}

static void gemm(int M, int N, int K, const float* A, int lda, const float* Bp, float* C, int ldc,
                 const float* bias, bool accumulate) {
    gemm_act(M, N, K, A, lda, Bp, C, ldc, bias, accumulate, kActNone, 0.0f);
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

// Writes the lanes of w selected by mask (and their indices base + lane) at idx/val; returns how
// many. Without a compress instruction every lane is written and the count advances by its bit.
static inline int emit(V w, unsigned long long mask, int base, std::int32_t* idx, float* val) {
    if constexpr (I::kCompress) {
        return I::compress(w, mask, base, idx, val);
    } else {
        float lanes[W];
        I::store(lanes, w);
        int count = 0;
        for (int j = 0; j < W; ++j) {
            idx[count] = base + j;
            val[count] = lanes[j];
            count += static_cast<int>((mask >> j) & 1u);
        }
        return count;
    }
}

// Bit v set when vector v of x[0 : nv W] (nv <= 64) has a lane above t; no branch. Four vectors
// a step with constant shifts (a variable shift is three uops on x86): 20 % less time a row.
static inline unsigned long long hit_bits(const float* x, int nv, V t) {
    unsigned long long hit = 0;
    int v = 0;
    for (; v + 4 <= nv; v += 4) {
        const unsigned long long a = I::gt_mask(I::load(x + v * W), t) != 0;
        const unsigned long long b = I::gt_mask(I::load(x + (v + 1) * W), t) != 0;
        const unsigned long long c = I::gt_mask(I::load(x + (v + 2) * W), t) != 0;
        const unsigned long long d = I::gt_mask(I::load(x + (v + 3) * W), t) != 0;
        hit |= (a | b << 1 | c << 2 | d << 3) << v;
    }
    for (; v < nv; ++v) hit |= static_cast<unsigned long long>(I::gt_mask(I::load(x + v * W), t) != 0) << v;
    return hit;
}

// The bit-mask walk of select_candidates and select_weights: for each run of up to 64 whole
// vectors of x, the hit mask of those with a lane above t (hit_bits), then pick(vector, its
// first index, idx + count, val + count) for just those, in order; pick returns how many it
// wrote. Leaves i at the first slot of the last n mod W (the callers' tails differ) and returns
// the count. Always inlined: it takes a vector, and each caller's pick stays in its loop.
template <class Pick>
__attribute__((always_inline)) static inline int walk_hits(const float* x, int n, V t, int& i, Pick pick,
                                                           std::int32_t* idx, float* val) {
    int count = 0;
    while (i + W <= n) {
        const int nv = (n - i) / W < 64 ? (n - i) / W : 64;
        unsigned long long hit = hit_bits(x + i, nv, t);
        while (hit) {
            const int v = __builtin_ctzll(hit);
            hit &= hit - 1;
            count += pick(I::load(x + i + v * W), i + v * W, idx + count, val + count);
        }
        i += nv * W;
    }
    return count;
}

// Writes, in order, idx/val for the entries of x[0:n] above t (every lane of t equal), and the
// last n mod W entries whatever their value; returns how many. A trained model keeps ~16 of 1000
// slots a row, scattered: nearly every block of a few vectors holds one, so a test per block
// still emitted (compressed and stored) every vector. Here a first loop only compares, one
// vector at a time, and records which of up to 64 vectors hold a candidate in one bit each
// (no branch); a second loop emits just those vectors, walking the set bits (its exit is the
// only unpredictable branch, once per 64 vectors). Emitting 4 vectors per block measured 59 %
// of the softmax pass on the trained bench model (AVX-512).
static int select_candidates(const float* x, int n, float threshold, std::int32_t* idx, float* val) {
    // The threshold is a float, not a vector: a function that takes a vector argument returns
    // without vzeroupper (GCC leaves that to its caller), and the SSE code of model.cpp after it
    // then ran with dirty upper halves (measured +2 us a window on the trained model).
    const V t = I::set1(threshold);
    int i = 0;
    int count = walk_hits(x, n, t, i, [&](V e, int at, std::int32_t* ix, float* vx) {
        return emit(e, I::gt_mask(e, t), at, ix, vx);
    }, idx, val);
    for (; i < n; ++i) {  // the last n mod W slots: every one is a candidate
        idx[count] = i;
        val[count] = x[i];
        ++count;
    }
    return count;
}

// The softmax of one similarity row and a first, conservative selection (kernels.h,
// exp_candidates), in two passes over the row while it is in L1. The first computes and stores
// the exponentials and their sum and makes no comparison: a running threshold from the partial
// sum (Z only grows) needs a horizontal sum per block, which measured twice the cost of the
// exponentials themselves. The second (select_candidates) compares every vector with thr * Z
// (less 2^-10 for rounding, so the candidates hold every survivor) and writes only the vectors
// that have a candidate; filter_gt then applies the exact test.
static int exp_candidates(float* x, int n, float scale, float shift, float thr, std::int32_t* idx, float* val,
                          float* sum) {
    // exp(x * scale - shift) = 2^(x * a - b): one FMA for the argument, then exp2_poly.
    const V sc = I::set1(scale * 1.44269504088896341f), sh = I::set1(-shift * 1.44269504088896341f);
    V acc[4] = {I::zero(), I::zero(), I::zero(), I::zero()};
    int i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
#pragma GCC unroll 4
        for (int b = 0; b < 4; ++b) {
            const V e = I::exp2(I::fma(I::load(x + i + b * W), sc, sh));
            I::store(x + i + b * W, e);
            acc[b] = I::add(acc[b], e);
        }
    }
    for (; i + W <= n; i += W) {
        const V e = I::exp2(I::fma(I::load(x + i), sc, sh));
        I::store(x + i, e);
        acc[0] = I::add(acc[0], e);
    }
    float total = I::hsum(I::add(I::add(acc[0], acc[1]), I::add(acc[2], acc[3])));
    if (i < n) {
        const int rem = n - i;
        I::storen(x + i, I::exp2(I::fma(I::loadn(x + i, rem), sc, sh)), rem);
        for (int j = i; j < n; ++j) total += x[j];
    }
    *sum = total;
    const bool all = !(thr >= 0.0f);
    return select_candidates(x, n, all ? -1.0f : thr * (1.0f - 1.0f / 1024.0f) * total, idx, val);
}

// The selection on sim_exp's exponentials and the exact test in one pass (kernels.h,
// select_weights): the same bit-mask walk as select_candidates with the same conservative
// threshold t = thr (1 - 2^-10) sum, but a vector that holds a candidate is scaled by 1/sum and
// tested against thr right away, so only survivors are written (once) and no candidate list is
// stored and read back by filter_gt. Same weights, same order as exp_candidates then filter_gt:
// every survivor's vector holds a candidate (w > thr implies e > t).
static int select_weights(const float* e, int n, float sum, float thr, std::int32_t* idx, float* val) {
    const float inv_sum = 1.0f / sum;
    const bool all = !(thr >= 0.0f);
    const V t = I::set1(all ? -1.0f : thr * (1.0f - 1.0f / 1024.0f) * sum);
    const V is = I::set1(inv_sum), th = I::set1(thr);
    int i = 0;
    int count = walk_hits(e, n, t, i, [&](V x, int at, std::int32_t* ix, float* vx) {
        const V w = I::mul(x, is);
        return emit(w, I::gt_mask(w, th), at, ix, vx);
    }, idx, val);
    for (; i < n; ++i) {  // the last n mod W slots, tested one by one
        const float w = e[i] * inv_sum;
        idx[count] = i;
        val[count] = w;
        count += w > thr ? 1 : 0;
    }
    return count;
}

// One register tile of the fused similarity softmax (kernels.h, sim_exp): R rows of A against NV
// vectors of a packed panel, the k loop of gemm_tile, then in the epilogue, while the dot
// products are still in registers, e = 2^(dot * sc[r] + sh) (the FMA and exp2_poly of
// exp_candidates, so the same bits as the separate pass on the same ISA), the store of e and its
// addition to the row's W-lane partial sums S[r * W]. Columns past `cols` are neither stored nor
// summed (a partial vector is multiplied by a 1/0 lane mask before the sum).
// Not inlined: on its own the k loop gets the registers gemm_tile's does (GCC inlined it into
// sim_exp on aarch64, and one function holding every tile shape and the epilogue constants
// spilled).
template <int R, int NV>
__attribute__((noinline)) static void sim_exp_tile(int K, const float* A, int lda, const float* bp, float* E, int lde, int cols,
                                const float* sc, V sh, float* S) {
    V acc[R][NV];
    tile_products<R, NV>(K, A, lda, bp, acc);
    if (cols >= NV * W) {
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            const V s = I::set1(sc[r]);
            // The tile's exponentials summed first, then added to the row's partial sums: with
            // one lane (scalar) a running sum of 1000 terms drifted 2e-6 from the double sum.
            V sum = I::exp2(I::fma(acc[r][0], s, sh));
            I::store(E + r * lde, sum);
#pragma GCC unroll 16
            for (int v = 1; v < NV; ++v) {
                const V e = I::exp2(I::fma(acc[r][v], s, sh));
                I::store(E + r * lde + v * W, e);
                sum = I::add(sum, e);
            }
            I::store(S + r * W, I::add(I::load(S + r * W), sum));
        }
        return;
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
        const V s = I::set1(sc[r]);
        V sum = I::zero();
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) {
            const int c = cols - v * W;
            if (c <= 0) continue;
            V e = I::exp2(I::fma(acc[r][v], s, sh));
            if (c >= W) {
                I::store(E + r * lde + v * W, e);
            } else {
                I::storen(E + r * lde + v * W, e, c);
                e = I::mul(e, lane_mask(c));
            }
            sum = I::add(sum, e);
        }
        I::store(S + r * W, I::add(I::load(S + r * W), sum));
    }
}

template <int NV>
static void sim_exp_panel(int M, int K, const float* A, int lda, const float* bp, float* E, int lde, int cols,
                          const float* sc, V sh, float* S) {
    constexpr int MR = I::MR;
    int m = 0;
    for (; m + MR <= M; m += MR) {
        sim_exp_tile<MR, NV>(K, A + static_cast<long>(m) * lda, lda, bp, E + static_cast<long>(m) * lde, lde, cols,
                             sc + m, sh, S + m * W);
    }
    const float* a = A + static_cast<long>(m) * lda;
    float* e = E + static_cast<long>(m) * lde;
    switch (M - m) {  // MR <= 8, so at most 7 rows remain
        case 0: break;
        case 1: sim_exp_tile<(1 < MR ? 1 : 1), NV>(K, a, lda, bp, e, lde, cols, sc + m, sh, S + m * W); break;
        case 2: sim_exp_tile<(2 < MR ? 2 : 1), NV>(K, a, lda, bp, e, lde, cols, sc + m, sh, S + m * W); break;
        case 3: sim_exp_tile<(3 < MR ? 3 : 1), NV>(K, a, lda, bp, e, lde, cols, sc + m, sh, S + m * W); break;
        case 4: sim_exp_tile<(4 < MR ? 4 : 1), NV>(K, a, lda, bp, e, lde, cols, sc + m, sh, S + m * W); break;
        case 5: sim_exp_tile<(5 < MR ? 5 : 1), NV>(K, a, lda, bp, e, lde, cols, sc + m, sh, S + m * W); break;
        case 6: sim_exp_tile<(6 < MR ? 6 : 1), NV>(K, a, lda, bp, e, lde, cols, sc + m, sh, S + m * W); break;
        default: sim_exp_tile<(7 < MR ? 7 : 1), NV>(K, a, lda, bp, e, lde, cols, sc + m, sh, S + m * W); break;
    }
}

// The similarity GEMM with the softmax's exponentials in its epilogue (kernels.h, sim_exp): the
// dot products never go to memory, only their exponentials, and the row sums come out of the
// same registers, so the separate pass that re-read a 4 KB row to exponentiate it is gone.
// Rows in blocks of up to kSimRows, each block panel by panel (a panel is read once a block).
constexpr int kSimRows = 32;
static void sim_exp(int M, int N, int K, const float* A, int lda, const float* Bp, const float* scale, float shift,
                    float* E, int lde, float* sums) {
    float sc[kSimRows];
    float S[kSimRows * W];
    const V sh = I::set1(-shift * 1.44269504088896341f);
    for (int m0 = 0; m0 < M; m0 += kSimRows) {
        const int mb = M - m0 < kSimRows ? M - m0 : kSimRows;
        for (int r = 0; r < mb; ++r) sc[r] = scale[m0 + r] * 1.44269504088896341f;
        for (int i = 0; i < mb * W; ++i) S[i] = 0.0f;
        const float* a = A + static_cast<long>(m0) * lda;
        float* e = E + static_cast<long>(m0) * lde;
        for (int n0 = 0; n0 < N; n0 += kPanel) {
            const float* bp = Bp + static_cast<long>(n0) * K;
            for (int t0 = 0; t0 < kPanel && n0 + t0 < N; t0 += NT * W) {
                const int cols = N - n0 - t0;
                int nv = NT <= 4 ? (cols + W - 1) / W : NT;
                nv = nv < NT ? nv : NT;
                float* c = e + n0 + t0;
                switch (nv) {
                    case 1: sim_exp_panel<1>(mb, K, a, lda, bp + t0, c, lde, cols, sc, sh, S); break;
                    case 2: sim_exp_panel<(NT >= 2 ? 2 : 1)>(mb, K, a, lda, bp + t0, c, lde, cols, sc, sh, S); break;
                    case 3: sim_exp_panel<(NT >= 3 ? 3 : 1)>(mb, K, a, lda, bp + t0, c, lde, cols, sc, sh, S); break;
                    default: sim_exp_panel<NT>(mb, K, a, lda, bp + t0, c, lde, cols, sc, sh, S); break;
                }
            }
        }
        for (int r = 0; r < mb; ++r) sums[m0 + r] = I::hsum(I::load(S + r * W));
    }
}

// The exact selection over exp_candidates' output, in place and in order (kernels.h, filter_gt).
// A vector is loaded before the compressed store that may overwrite it, and that store ends at
// most where the loaded vector did, so compacting in place is safe.
static int filter_gt(int count, std::int32_t* idx, float* val, float inv_sum, float thr) {
    const V is = I::set1(inv_sum), t = I::set1(thr);
    int k = 0, c = 0;
    if constexpr (I::kCompress) {
        for (; c + W <= count; c += W) {
            const V w = I::mul(I::load(val + c), is);
            k += I::compress_idx(w, I::gt_mask(w, t), idx + c, idx + k, val + k);
        }
    }
    for (; c < count; ++c) {
        const float w = val[c] * inv_sum;
        idx[k] = idx[c];
        val[k] = w;
        k += w > thr ? 1 : 0;
    }
    return k;
}

// Continuous hard shrinkage and L1 renormalisation of the selected weights (kernels.h,
// shrink_normalise): all of them are above lam (filter_gt kept only those), so w - lam > 0 and
// the shrinkage (w - lam) w / (|w - lam| + eps) needs no abs. A masked tail's zero lanes are
// not selected weights: with eps == lam they would compute 0/0, so their denominator gets 1
// added (1 - lane_mask: exactly 0 in the real lanes) and they contribute -0 to the sum. The sum
// is FP32 in W lanes. Up to two vectors of weights (a trained model keeps ~16) stay in registers
// between the shrinkage and the normalisation: storing a masked tail and loading it back, as
// this did, fails store-forwarding twice a row.
static inline V shrink_v(V w, int c, V l, V e) {
    const V d = I::sub(w, l);
    const V den = c < W ? I::add(I::add(d, e), I::sub(I::set1(1.0f), lane_mask(c))) : I::add(d, e);
    return I::div(I::mul(d, w), den);
}

static void shrink_normalise(int count, float* val, float lam, float eps) {
    const V l = I::set1(lam), e = I::set1(eps);
    const bool shrink = lam > 0.0f;
    if (count <= 2 * W) {
        if (count <= 0) return;
        const int c0 = count < W ? count : W, c1 = count - c0;
        V w0 = I::loadn(val, c0);
        V w1 = c1 > 0 ? I::loadn(val + W, c1) : I::zero();
        if (shrink) {
            w0 = shrink_v(w0, c0, l, e);
            if (c1 > 0) w1 = shrink_v(w1, c1, l, e);
        }
        const float total = I::hsum(I::add(w0, w1));
        const V inv = I::set1(1.0f / (total > 1e-12f ? total : 1e-12f));
        I::storen(val, I::mul(w0, inv), c0);
        if (c1 > 0) I::storen(val + W, I::mul(w1, inv), c1);
        return;
    }
    V acc = I::zero();
    for (int i = 0; i < count; i += W) {
        const int c = count - i < W ? count - i : W;
        V w = I::loadn(val + i, c);
        if (shrink) {
            w = shrink_v(w, c, l, e);
            I::storen(val + i, w, c);
        }
        acc = I::add(acc, w);
    }
    const float total = I::hsum(acc);
    const V inv = I::set1(1.0f / (total > 1e-12f ? total : 1e-12f));
    for (int i = 0; i < count; i += W) {
        const int c = count - i < W ? count - i : W;
        I::storen(val + i, I::mul(I::loadn(val + i, c), inv), c);
    }
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

static void tanh_(float* x, int n) {
    int i = 0;
    while (i < n) {
        const int c = n - i < W ? n - i : W;
        I::storen(x + i, tanh_v(I::loadn(x + i, c)), c);
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

// acc[j] += sum_r w[r] * (a - b)^2: sq_err_cols with a weight per row (the `last_rows` score
// reduction). The weight multiplies the difference once, then one FMA, as sq_err_cols.
static void wsq_err_cols(const float* a, const float* b, int rows, int cols, const float* w, float* acc) {
    int j = 0;
    for (; j + W <= cols; j += W) {
        V s = I::load(acc + j);
        for (int r = 0; r < rows; ++r) {
            const V d = I::sub(I::load(a + r * cols + j), I::load(b + r * cols + j));
            s = I::fma(I::mul(d, I::set1(w[r])), d, s);
        }
        I::store(acc + j, s);
    }
    if (j < cols) {
        const int rem = cols - j;
        V s = I::loadn(acc + j, rem);
        for (int r = 0; r < rows; ++r) {
            const V d = I::sub(I::loadn(a + r * cols + j, rem), I::loadn(b + r * cols + j, rem));
            s = I::fma(I::mul(d, I::set1(w[r])), d, s);
        }
        I::storen(acc + j, s, rem);
    }
}

// The FP32 peak probe: kPeakChains independent FMA chains (enough to cover FMA latency times
// the FMA ports), nothing but registers. Returns a value that depends on every FMA so none can
// be dropped; *flops is the number of floating-point operations done (2 per FMA lane).
static double fma_loop(std::int64_t iters, double* flops) {
    constexpr int C = I::kPeakChains;
    V acc[C];
    for (int c = 0; c < C; ++c) acc[c] = I::set1(2.0f + 0.1f * static_cast<float>(c));
    const V m = I::set1(0.999f), a = I::set1(1e-3f);  // converges to 1, never overflows
    for (std::int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
        for (int c = 0; c < C; ++c) acc[c] = I::fma(acc[c], m, a);
    }
    V s = acc[0];
    for (int c = 1; c < C; ++c) s = I::add(s, acc[c]);
    *flops = 2.0 * W * C * static_cast<double>(iters);
    return static_cast<double>(I::hsum(s));
}

static const KernelTable kTable = {
    I::kName, gemm, scale_max, gather_rows, dot, tanh_, leaky_relu, sq_err_cols,
    gemm_act, fma_loop, wsq_err_cols, exp_candidates, filter_gt, shrink_normalise, W, sim_exp, select_weights,
    16 / I::MR * I::MR,  // sim_rows: 16 (AVX-512, scalar), 15 (AVX2, NEON)
};
