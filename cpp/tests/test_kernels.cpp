// Every kernel table this CPU can run, against the double-accumulating references, at lengths
// that exercise full vectors, masked tails and single elements.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "memae/kernels.h"
#include "reference.h"

namespace memae {
namespace {

// Named tolerances, relative to the magnitude of what was summed.
constexpr double kSumTol = 2e-6;   // fp32 accumulation (FMA order differs per ISA)
constexpr double kExpTol = 4e-7;   // polynomial exp: a few ulp
constexpr double kTanhTol = 3e-7;  // absolute: tanh via exp(-2|x|)

const int kLengths[] = {1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 257, 1000};

std::vector<float> random_vec(std::size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
}

class Kernels : public ::testing::TestWithParam<std::string> {
protected:
    void SetUp() override {
        for (const KernelTable* t : available_kernels()) {
            if (std::string(t->name).rfind(GetParam() + "_", 0) == 0) k = t;
        }
        if (!k) GTEST_SKIP() << GetParam() << " is not compiled in or this CPU cannot run it";
    }
    const KernelTable* k = nullptr;
};

TEST_P(Kernels, NameTellsIsaAndTile) {
    const std::string name(k->name);
    EXPECT_EQ(name.rfind(GetParam() + "_", 0), 0u);
    // ISA_<rows>x<columns> of the GEMM register tile, e.g. avx512_8x32, neon_5x16.
    const std::string tile = name.substr(GetParam().size() + 1);
    const auto x = tile.find('x');
    ASSERT_NE(x, std::string::npos) << name;
    EXPECT_GT(std::stoi(tile.substr(0, x)), 0) << name;
    EXPECT_EQ(kPanel % std::stoi(tile.substr(x + 1)), 0) << name;
}

// The fused epilogue: act(init + A.B) for every activation, against the double reference
// followed by the activation, at awkward shapes (row tails, narrow and partial tiles), with C's
// padding columns untouched. Leaky and ReLU must equal the separate leaky_relu kernel applied
// to the unfused GEMM's output bit for bit (the same fma on the same float).
TEST_P(Kernels, GemmActFusesBiasAndActivationIntoTheEpilogue) {
    std::mt19937 rng(11);
    for (int M : {1, 2, 4, 5, 6, 7, 8, 9, 17}) {
        for (int N : {1, 3, 8, 15, 16, 17, 31, 32, 33, 64, 65}) {
            for (int K : {0, 1, 3, 16, 96}) {
                for (int act : {kActNone, kActLeaky, kActTanh}) {
                    for (int mode = 0; mode < 3; ++mode) {  // 0: no bias, 1: bias, 2: accumulate
                        const float slope = act == kActLeaky && mode == 0 ? 0.0f : 0.01f;
                        const int lda = K + 1, ldc = N + 3;
                        auto A = random_vec(static_cast<std::size_t>(M) * lda, rng, -2.0f, 2.0f);
                        auto B = random_vec(static_cast<std::size_t>(K) * N + 1, rng);
                        auto bias = random_vec(N, rng);
                        auto C = random_vec(static_cast<std::size_t>(M) * ldc, rng);
                        auto want = C, unfused = C;
                        const auto packed = pack_b(K, N, B.data(), N);
                        const float* b = mode == 1 ? bias.data() : nullptr;
                        k->gemm_act(M, N, K, A.data(), lda, packed.data(), C.data(), ldc, b, mode == 2, act, slope);
                        ref::gemm(M, N, K, A.data(), lda, B.data(), N, want.data(), ldc, b, mode == 2);
                        k->gemm(M, N, K, A.data(), lda, packed.data(), unfused.data(), ldc, b, mode == 2);
                        for (int m = 0; m < M; ++m) {
                            if (act == kActLeaky) k->leaky_relu(unfused.data() + m * ldc, N, slope);
                            for (int n = 0; n < ldc; ++n) {
                                const std::size_t i = static_cast<std::size_t>(m) * ldc + n;
                                const std::string at = "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" +
                                                       std::to_string(K) + " act=" + std::to_string(act) +
                                                       " mode=" + std::to_string(mode);
                                if (n >= N) {
                                    ASSERT_EQ(C[i], want[i]) << "padding column written " << at;
                                    continue;
                                }
                                double w = want[i];
                                if (act == kActLeaky) w = w >= 0.0 ? w : slope * w;
                                if (act == kActTanh) w = std::tanh(w);
                                ASSERT_NEAR(C[i], w, kSumTol * (K + 2) * 2 + kTanhTol) << at;
                                if (act == kActLeaky) {
                                    ASSERT_EQ(C[i], unfused[i]) << "fused != separate pass " << at;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

TEST_P(Kernels, FmaLoopCountsItsFlopsAndComputesTheChains) {
    double flops = 0.0;
    const double a = k->fma_loop(1000, &flops);
    EXPECT_GT(flops, 0.0);
    const double per_iter = flops / 1000.0;
    double flops2 = 0.0;
    const double b = k->fma_loop(2000, &flops2);
    EXPECT_DOUBLE_EQ(flops2, 2 * flops);
    EXPECT_NE(a, b);  // the result depends on the iterations: the loop really ran
    // 2 FLOPs per FMA lane; at least 8 independent chains of one vector.
    EXPECT_GE(per_iter, 16.0);
    EXPECT_TRUE(std::isfinite(a) && std::isfinite(b));
}

TEST_P(Kernels, GemmMatchesReferenceForAllShapesAndModes) {
    std::mt19937 rng(1);
    for (int M : {1, 2, 3, 5, 6, 7, 13}) {
        for (int N : {1, 3, 16, 17, 31, 32, 33, 65}) {
            for (int K : {1, 2, 5, 17, 64}) {
                for (int mode = 0; mode < 3; ++mode) {  // 0: no bias, 1: bias, 2: accumulate
                    const int lda = K + 3, ldc = N + 5;
                    auto A = random_vec(static_cast<std::size_t>(M) * lda, rng);
                    auto B = random_vec(static_cast<std::size_t>(K) * N, rng);
                    auto bias = random_vec(N, rng);
                    auto C = random_vec(static_cast<std::size_t>(M) * ldc, rng);
                    auto want = C;
                    const auto packed = pack_b(K, N, B.data(), N);
                    k->gemm(M, N, K, A.data(), lda, packed.data(), C.data(), ldc, mode == 1 ? bias.data() : nullptr,
                            mode == 2);
                    ref::gemm(M, N, K, A.data(), lda, B.data(), N, want.data(), ldc, mode == 1 ? bias.data() : nullptr,
                              mode == 2);
                    for (int m = 0; m < M; ++m) {
                        for (int n = 0; n < ldc; ++n) {
                            const std::size_t i = static_cast<std::size_t>(m) * ldc + n;
                            // Columns past N (the padding of C) must be left untouched.
                            const double tol = n < N ? kSumTol * (K + 2) : 0.0;
                            ASSERT_NEAR(C[i], want[i], tol) << "M=" << M << " N=" << N << " K=" << K << " mode=" << mode;
                        }
                    }
                }
            }
        }
    }
}

TEST_P(Kernels, DotMatchesReference) {
    std::mt19937 rng(2);
    for (int n : kLengths) {
        auto a = random_vec(n, rng), b = random_vec(n, rng);
        EXPECT_NEAR(k->dot(n, a.data(), b.data()), ref::dot(n, a.data(), b.data()), kSumTol * n) << n;
    }
}

TEST_P(Kernels, ScaleMaxScalesInPlaceAndFindsTheMax) {
    std::mt19937 rng(3);
    for (int n : kLengths) {
        for (bool with_mul : {false, true}) {
            auto x = random_vec(n, rng, -5.0f, -0.5f);  // all negative: a zero-filled tail would win
            auto mul = random_vec(n, rng, 0.5f, 2.0f);
            auto want = x;
            double mx = -INFINITY;
            for (int i = 0; i < n; ++i) {
                want[i] = static_cast<float>(static_cast<double>(x[i]) * 1.5f * (with_mul ? mul[i] : 1.0f));
                mx = std::max(mx, static_cast<double>(want[i]));
            }
            const float got = k->scale_max(x.data(), n, 1.5f, with_mul ? mul.data() : nullptr);
            EXPECT_NEAR(got, mx, 1e-6 * std::fabs(mx)) << n;
            for (int i = 0; i < n; ++i) ASSERT_NEAR(x[i], want[i], 1e-6 * std::fabs(want[i])) << n;
        }
    }
}

// The fused softmax pass and the exact selection after it, against the double reference: with
// thr < 0 every exponential (within the exp tolerance of the reference) and the sum; with a
// threshold, candidates that are those same exponentials bit for bit, in order, a superset of
// the survivors, and after filter_gt exactly the slots with e * (1 / sum) > thr, with that weight.
// Rows as a memory module meets them: flat (an untrained model: ~76 of 1000 survive), sharp with
// the strong slots early, late, or in the vector tail.
TEST_P(Kernels, ExpCandidatesAndFilterGtSelectExactlyTheSoftmaxWeightsAboveThreshold) {
    std::mt19937 rng(12);
    for (int n : kLengths) {
        for (int shape = 0; shape < 4; ++shape) {
            auto x = random_vec(n, rng, -1.0f, 1.0f);
            if (shape > 0) {
                for (float& v : x) v *= 0.3f;
                const int strong = std::max(1, n / 50);
                for (int j = 0; j < strong; ++j) {
                    int at = j;
                    if (shape == 2) at = n - 1 - j;
                    if (shape == 3) at = n - 1 - (j % std::max(1, n % 16));
                    x[static_cast<std::size_t>(std::clamp(at, 0, n - 1))] = 0.9f + 0.1f * static_cast<float>(j % 2);
                }
            }
            if (n > 2) x[1] = -10.0f;  // exp(-220): far below the clamp, must come out (almost) zero
            const float scale = 20.0f, shift = 20.0f;  // cosine logits with T = 0.05, shifted by 1/T
            std::vector<double> ref_e(n);
            for (int i = 0; i < n; ++i) ref_e[i] = static_cast<double>(x[i]) * scale;
            const double ref_sum = ref::exp_sum(ref_e, shift);
            std::vector<std::int32_t> all_idx(n + kSelectSlack + 1, -7);
            std::vector<float> e(n + kSelectSlack + 1, -7.0f);
            float sum = -1.0f;
            auto xe = x;
            ASSERT_EQ(k->exp_candidates(xe.data(), n, scale, shift, -1.0f, all_idx.data(), e.data(), &sum), n)
                << "thr < 0 keeps every slot";
            EXPECT_EQ(all_idx[n + kSelectSlack], -7) << "wrote past the slack";
            for (int i = 0; i < n; ++i) ASSERT_EQ(xe[i], e[i]) << "x holds the exponentials";
            EXPECT_NEAR(sum, ref_sum, (kExpTol * 4 + kSumTol) * ref_sum) << n;
            for (int i = 0; i < n; ++i) {
                ASSERT_EQ(all_idx[i], i);
                // The argument is x * (scale log2 e) - shift log2 e in float: both constants and
                // the FMA rounded, up to 2^-24 * (|x * scale| + shift + |the argument|) more.
                const double arg = static_cast<double>(x[i]) * scale - shift;
                const double tol =
                    (kExpTol + 6e-8 * (std::fabs(arg + shift) + shift + std::fabs(arg))) * ref_e[i] + 1e-37;
                ASSERT_NEAR(e[i], ref_e[i], tol) << n << " " << i;
            }
            const float inv = 1.0f / sum;
            for (float thr : {2.0f, 0.2f, 1.0f / static_cast<float>(n), 0.5f / static_cast<float>(n), 0.0f}) {
                std::vector<std::int32_t> idx(n + kSelectSlack + 1, -7);
                std::vector<float> val(n + kSelectSlack + 1, -7.0f);
                float sum2 = -1.0f;
                auto x2 = x;
                const int cand = k->exp_candidates(x2.data(), n, scale, shift, thr, idx.data(), val.data(), &sum2);
                ASSERT_EQ(sum2, sum) << "the sum does not depend on the threshold";
                ASSERT_LE(cand, n);
                EXPECT_EQ(idx[n + kSelectSlack], -7) << "wrote past the slack";
                for (int c = 0; c < cand; ++c) {
                    ASSERT_TRUE(idx[c] >= 0 && idx[c] < n);
                    if (c > 0) {
                        ASSERT_LT(idx[c - 1], idx[c]) << "candidates in order";
                    }
                    ASSERT_EQ(val[c], e[idx[c]]) << "the same exponential, bit for bit";
                }
                const int count = k->filter_gt(cand, idx.data(), val.data(), inv, thr);
                int j = 0;
                for (int i = 0; i < n; ++i) {
                    const float w = e[i] * inv;
                    if (w > thr) {
                        ASSERT_LT(j, count) << n << " shape " << shape << " thr " << thr << " missed slot " << i;
                        EXPECT_EQ(idx[j], i);
                        EXPECT_EQ(val[j], w);
                        ++j;
                    }
                }
                EXPECT_EQ(count, j) << n << " shape " << shape << " thr " << thr << " candidates " << cand;
                if (shape == 1 && n >= 1000 && thr > 0.0f) {
                    EXPECT_LT(cand, n / 4) << "a sharp row keeps few candidates";
                }
            }
        }
    }
}

// The similarity GEMM with the softmax exponentials in its epilogue: the exponentials bit for bit
// those of gemm then exp_candidates on the same table (the same FMA on the same float dot
// product, the same exp2), within the exp tolerance of the double reference, the row sums
// within the sum tolerance, and nothing written past column N of a row (E's padding) — at row
// tails, narrow and partial tiles, more rows than one block, and the memory's 1000 slots.
// select_weights on those rows: exactly the weights of exp_candidates then filter_gt, and every
// e / sum above the threshold, in order.
TEST_P(Kernels, SimExpFusesTheSoftmaxExponentialsIntoTheSimilarityGemm) {
    std::mt19937 rng(21);
    for (int M : {1, 3, 7, 8, 9, 17, 24, 33}) {
        for (int N : {1, 5, 16, 17, 31, 32, 33, 65, 1000}) {
            for (int K : {1, 7, 32}) {
                const int lda = K + 1, lde = N + 5;
                auto A = random_vec(static_cast<std::size_t>(M) * lda, rng, -1.0f, 1.0f);
                auto B = random_vec(static_cast<std::size_t>(K) * N, rng, -1.0f, 1.0f);
                std::vector<float> scale(M);
                for (int m = 0; m < M; ++m) scale[m] = (m % 3 == 0 ? 20.0f : 2.0f) / static_cast<float>(K);
                const float shift = 15.0f;
                const auto packed = pack_b(K, N, B.data(), N);
                std::vector<float> E(static_cast<std::size_t>(M) * lde, -7.0f), sums(M, -1.0f);
                k->sim_exp(M, N, K, A.data(), lda, packed.data(), scale.data(), shift, E.data(), lde, sums.data());
                std::vector<float> C(static_cast<std::size_t>(M) * N);
                k->gemm(M, N, K, A.data(), lda, packed.data(), C.data(), N, nullptr, false);
                std::vector<double> dots(static_cast<std::size_t>(M) * N), mags(static_cast<std::size_t>(M) * N);
                for (int m = 0; m < M; ++m) {
                    for (int n = 0; n < N; ++n) {
                        double d = 0.0, g = 0.0;
                        for (int kk = 0; kk < K; ++kk) {
                            const double p = static_cast<double>(A[static_cast<std::size_t>(m) * lda + kk]) * B[static_cast<std::size_t>(kk) * N + n];
                            d += p;
                            g += std::fabs(p);
                        }
                        dots[static_cast<std::size_t>(m) * N + n] = d;
                        mags[static_cast<std::size_t>(m) * N + n] = g;
                    }
                }
                const std::string at = "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K);
                for (int m = 0; m < M; ++m) {
                    const float* e = E.data() + static_cast<std::size_t>(m) * lde;
                    for (int n = N; n < lde; ++n) ASSERT_EQ(e[n], -7.0f) << "padding written " << at;
                    std::vector<float> x(C.begin() + static_cast<long>(m) * N, C.begin() + static_cast<long>(m + 1) * N);
                    std::vector<std::int32_t> idx(N + kSelectSlack), idx2(N + kSelectSlack);
                    std::vector<float> val(N + kSelectSlack), val2(N + kSelectSlack);
                    float sum = 0.0f;
                    const float thr = m % 3 == 0 ? -1.0f : (m % 3 == 1 ? 0.01f : 0.001f);
                    const int cand = k->exp_candidates(x.data(), N, scale[m], shift, thr, idx.data(), val.data(), &sum);
                    double mass = 0.0;
                    for (int n = 0; n < N; ++n) {
                        ASSERT_EQ(e[n], x[n]) << "not exp_candidates' exponential " << at << " m=" << m << " n=" << n;
                        const double arg = dots[static_cast<std::size_t>(m) * N + n] * scale[m] - shift;
                        const double want = std::exp(arg);
                        // The float dot product (K terms) and the argument's rounding, as in the
                        // exp_candidates test, scaled by |arg| + shift.
                        const double tol = kExpTol + kSumTol * mags[static_cast<std::size_t>(m) * N + n] * scale[m] +
                                           6e-8 * (std::fabs(arg) + 2 * shift);
                        ASSERT_NEAR(e[n], want, tol * want + 1e-37) << at << " m=" << m << " n=" << n;
                        mass += std::fabs(e[n]);
                    }
                    EXPECT_NEAR(sums[m], mass, kSumTol * mass) << "row sum " << at << " m=" << m;
                    // select_weights on sim_exp's row: exactly exp_candidates then filter_gt with
                    // exp_candidates' sum (the same weights, bit for bit, in order), which the
                    // exp_candidates test checks against the reference.
                    const int count = k->filter_gt(cand, idx.data(), val.data(), 1.0f / sum, thr);
                    const int got = k->select_weights(e, N, sum, thr, idx2.data(), val2.data());
                    ASSERT_EQ(got, count) << at << " m=" << m;
                    for (int c = 0; c < got; ++c) {
                        ASSERT_EQ(idx2[c], idx[c]) << at;
                        ASSERT_EQ(val2[c], val[c]) << at;
                    }
                    if (thr < 0.0f) {
                        ASSERT_EQ(got, N) << "thr < 0 keeps every slot " << at;
                    }
                    // And with sim_exp's own sum, every weight above thr, in order.
                    const int own = k->select_weights(e, N, sums[m], thr, idx2.data(), val2.data());
                    int j = 0;
                    for (int n = 0; n < N; ++n) {
                        const float w = e[n] * (1.0f / sums[m]);
                        if (w > thr) {
                            ASSERT_LT(j, own) << at;
                            ASSERT_EQ(idx2[j], n) << at;
                            ASSERT_EQ(val2[j], w) << at;
                            ++j;
                        }
                    }
                    ASSERT_EQ(j, own) << at;
                }
            }
        }
    }
}

// filter_gt alone, in place, at every length and density (the vector path compacts over
// entries it has already loaded).
TEST_P(Kernels, FilterGtCompactsInPlaceInOrder) {
    std::mt19937 rng(13);
    for (int n : kLengths) {
        for (float thr : {2.0f, 0.45f, 0.25f, 0.05f, -1.0f}) {
            auto v = random_vec(n, rng, 0.0f, 1.0f);
            std::vector<std::int32_t> idx(n);
            for (int i = 0; i < n; ++i) idx[i] = 3 * i + 1;
            auto val = v;
            auto id = idx;
            const int count = k->filter_gt(n, id.data(), val.data(), 0.5f, thr);
            int j = 0;
            for (int i = 0; i < n; ++i) {
                const float w = v[i] * 0.5f;
                if (w > thr) {
                    ASSERT_LT(j, count);
                    EXPECT_EQ(id[j], idx[i]);
                    EXPECT_EQ(val[j], w);
                    ++j;
                }
            }
            EXPECT_EQ(count, j) << n << " thr " << thr;
        }
    }
}

// The shrinkage and renormalisation after the selection, against a double reference, at every
// length (masked tails) and without shrinkage (lam 0: renormalisation only). eps == lam is a
// bundle the loader accepts: a masked-off lane (w = 0) then has w - lam + eps = 0, and a 0/0
// there must not reach the sum (it did, and every weight came out ~1e11).
TEST_P(Kernels, ShrinkNormaliseIsTheContinuousHardShrinkageThenL1) {
    std::mt19937 rng(14);
    for (int n : kLengths) {
        for (float lam : {0.001f, 0.05f, 0.5f, 0.0f}) {
            for (float eps : {1e-12f, lam}) {
                auto v = random_vec(n, rng, lam + 1e-6f, lam + 0.5f);
                if (n > 3) v[2] = lam * (1.0f + 1e-6f);  // just above lambda: shrinks to ~eps-sized
                std::vector<double> want(n);
                double total = 0.0;
                for (int i = 0; i < n; ++i) {
                    const double w = v[i], d = w - lam;
                    want[i] = lam > 0.0f ? d * w / (std::fabs(d) + eps) : w;
                    total += want[i];
                }
                auto got = v;
                got.push_back(-7.0f);
                k->shrink_normalise(n, got.data(), lam, eps);
                EXPECT_EQ(got[n], -7.0f) << "wrote past count";
                for (int i = 0; i < n; ++i) {
                    const double w = want[i] / std::max(total, 1e-12);
                    ASSERT_NEAR(got[i], w, 2e-6 * w + kSumTol * (n + 1) * w + 1e-12)
                        << n << " lam " << lam << " eps " << eps << " " << i;
                }
            }
        }
    }
}

TEST_P(Kernels, GatherRowsIsTheSparseRead) {
    std::mt19937 rng(6);
    for (int dim : kLengths) {
        if (dim > 257) continue;
        const int rows = 50;
        auto M = random_vec(static_cast<std::size_t>(rows) * dim, rng);
        for (int count : {0, 1, 3, 17, 50}) {
            std::vector<std::int32_t> idx(count);
            for (int j = 0; j < count; ++j) idx[j] = (j * 7 + 3) % rows;
            auto w = random_vec(count, rng, 0.0f, 1.0f);
            std::vector<float> out(dim + 1, 42.0f);
            std::vector<double> want(dim);
            k->gather_rows(count, idx.data(), w.data(), M.data(), dim, out.data());
            ref::gather_rows(count, idx.data(), w.data(), M.data(), dim, want.data());
            for (int d = 0; d < dim; ++d) ASSERT_NEAR(out[d], want[d], kSumTol * (count + 1)) << dim << " " << count;
            EXPECT_EQ(out[dim], 42.0f) << "wrote past dim";
        }
    }
}

TEST_P(Kernels, ActivationsMatchReference) {
    std::mt19937 rng(7);
    for (int n : kLengths) {
        auto x = random_vec(n, rng, -12.0f, 12.0f);
        if (n > 3) { x[0] = 0.0f; x[1] = -0.0f; x[2] = 1e-8f; }
        auto t = x, l = x;
        k->tanh(t.data(), n);
        k->leaky_relu(l.data(), n, 0.01f);
        for (int i = 0; i < n; ++i) {
            ASSERT_NEAR(t[i], std::tanh(static_cast<double>(x[i])), kTanhTol) << n << " " << x[i];
            ASSERT_EQ(std::signbit(t[i]) && t[i] != 0.0f, x[i] < 0.0f && t[i] != 0.0f);
            const float want = x[i] >= 0.0f ? x[i] : 0.01f * x[i];
            ASSERT_FLOAT_EQ(l[i], want);
        }
        auto r = x;
        k->leaky_relu(r.data(), n, 0.0f);
        for (int i = 0; i < n; ++i) ASSERT_EQ(r[i], std::max(x[i], 0.0f));
    }
}

TEST_P(Kernels, SquaredErrorPerColumn) {
    std::mt19937 rng(8);
    for (int cols : {1, 3, 5, 8, 16, 17, 33}) {
        for (int rows : {1, 7, 64}) {
            auto a = random_vec(static_cast<std::size_t>(rows) * cols, rng);
            auto b = random_vec(static_cast<std::size_t>(rows) * cols, rng);
            std::vector<float> acc(cols + 1, 0.0f);
            acc[cols] = 7.0f;
            k->sq_err_cols(a.data(), b.data(), rows, cols, acc.data());
            for (int j = 0; j < cols; ++j) {
                double s = 0.0;
                for (int r = 0; r < rows; ++r) {
                    const double d = static_cast<double>(a[r * cols + j]) - b[r * cols + j];
                    s += d * d;
                }
                ASSERT_NEAR(acc[j], s, kSumTol * rows) << cols << " " << rows;
            }
            EXPECT_EQ(acc[cols], 7.0f);
        }
    }
}

TEST_P(Kernels, WeightedSquaredErrorPerColumn) {
    std::mt19937 rng(9);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (int cols : {1, 3, 5, 8, 16, 17, 33}) {
        for (int rows : {1, 7, 64}) {
            auto a = random_vec(static_cast<std::size_t>(rows) * cols, rng);
            auto b = random_vec(static_cast<std::size_t>(rows) * cols, rng);
            std::vector<float> w(static_cast<std::size_t>(rows));
            for (float& v : w) v = u(rng);
            w[0] = 0.0f;  // a row with no weight contributes nothing
            std::vector<float> acc(cols + 1, 0.5f);
            acc[cols] = 7.0f;
            k->wsq_err_cols(a.data(), b.data(), rows, cols, w.data(), acc.data());
            for (int j = 0; j < cols; ++j) {
                double s = 0.5;
                for (int r = 0; r < rows; ++r) {
                    const double d = static_cast<double>(a[r * cols + j]) - b[r * cols + j];
                    s += static_cast<double>(w[r]) * d * d;
                }
                ASSERT_NEAR(acc[j], s, kSumTol * rows) << cols << " " << rows;
            }
            EXPECT_EQ(acc[cols], 7.0f);
        }
    }
}

INSTANTIATE_TEST_SUITE_P(AllIsas, Kernels, ::testing::Values("scalar", "avx2", "avx512", "neon"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// The bf16 GEMM against a double reference on the same bf16-rounded operands: products of two
// bf16 are exact in FP32, so only the FP32 summation differs. Overlapping rows (lda < K, as a
// convolution reads them), odd K (the last pair reads one element past a row), N across and
// below a panel, M below, at and above the 8-row tile, K = 0 (bias only).
TEST(Bf16, GemmMatchesReferenceOnRoundedOperands) {
    if (!bf16_supported()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
    std::mt19937 rng(12);
    for (int M : {1, 5, 8, 13, 31}) {
        for (int N : {3, 16, 32, 45, 64}) {
            for (int K : {0, 1, 6, 15, 40, 161}) {
                for (int lda : {std::max(K, 1), K + 3, std::max(1, K / 3)}) {
                    const int ldc = N + 2;
                    auto A = random_vec(static_cast<std::size_t>(M) * lda + K + 1, rng, -3.0f, 3.0f);
                    auto B = random_vec(static_cast<std::size_t>(K) * N + 1, rng);
                    auto bias = random_vec(N, rng);
                    std::vector<float> C(static_cast<std::size_t>(M) * ldc, 9.0f);
                    const auto packed = pack_b(K, N, B.data(), N);
                    const auto b16 = pack_b_bf16(K, N, packed.data());
                    gemm_bf16(M, N, K, A.data(), lda, b16.data(), C.data(), ldc, bias.data());
                    for (int m = 0; m < M; ++m) {
                        for (int n = 0; n < ldc; ++n) {
                            const float got = C[static_cast<std::size_t>(m) * ldc + n];
                            if (n >= N) {
                                ASSERT_EQ(got, 9.0f) << "wrote past N";
                                continue;
                            }
                            double want = bias[n], mag = std::fabs(bias[n]);
                            for (int k = 0; k < K; ++k) {
                                const double p = static_cast<double>(from_bf16(to_bf16(A[static_cast<std::size_t>(m) * lda + k]))) *
                                                 from_bf16(to_bf16(B[static_cast<std::size_t>(k) * N + n]));
                                want += p;
                                mag += std::fabs(p);
                            }
                            ASSERT_NEAR(got, want, 1e-6 * mag + 1e-7) << M << " " << N << " " << K << " " << lda;
                        }
                    }
                }
            }
        }
    }
}

TEST(Bf16, RoundingIsToNearestEven) {
    EXPECT_EQ(to_bf16(1.0f), 0x3F80);
    EXPECT_EQ(from_bf16(to_bf16(1.0f + 1.0f / 256)), 1.0f);                       // tie: to even (down)
    EXPECT_EQ(from_bf16(to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);          // tie: to even (up)
    EXPECT_EQ(from_bf16(to_bf16(1.0f + 1.0f / 256 + 1e-6f)), 1.0f + 2.0f / 256);  // above the tie
    EXPECT_EQ(from_bf16(to_bf16(-2.5f)), -2.5f);
}

TEST(Dispatch, BestTableIsLastAndScalarAlwaysPresent) {
    const auto tables = available_kernels();
    ASSERT_FALSE(tables.empty());
    EXPECT_EQ(std::string(tables.front()->name).rfind("scalar_", 0), 0u);
    EXPECT_EQ(&select_kernels(), tables.back());
}

TEST(Dispatch, PeakProbeMeasuresAPositiveRate) {
    const PeakProbe p = measure_fp32_peak(select_kernels(), 0.02, 3);
    EXPECT_EQ(p.runs, 3);
    EXPECT_GT(p.flops_per_run, 0.0);
    // No absolute floor: under qemu on a loaded machine the wall rate fell to 0.076 GFLOP/s.
    // What must hold anywhere: finite positive rates, and one thread's CPU time never exceeds
    // its wall time, so the CPU rate is at least the wall rate (10 % for clock granularity).
    EXPECT_TRUE(std::isfinite(p.gflops_wall) && p.gflops_wall > 0.0);
    EXPECT_TRUE(std::isfinite(p.gflops_cpu) && p.gflops_cpu > 0.0);
    EXPECT_GE(p.gflops_cpu, 0.9 * p.gflops_wall);
}

TEST(Dispatch, PackBZeroPadsTheLastPanel) {
    std::vector<float> B = {1, 2, 3, 4, 5, 6};  // K=2, N=3
    const auto p = pack_b(2, 3, B.data(), 3);
    ASSERT_EQ(p.size(), static_cast<std::size_t>(2 * kPanel));
    EXPECT_EQ(p[0], 1);
    EXPECT_EQ(p[2], 3);
    EXPECT_EQ(p[3], 0);
    EXPECT_EQ(p[kPanel], 4);
    EXPECT_EQ(p[kPanel + 2], 6);
    EXPECT_EQ(p[2 * kPanel - 1], 0);
}

}  // namespace
}  // namespace memae
