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
    EXPECT_EQ(std::string(k->name).rfind(GetParam() + "_", 0), 0u);
    EXPECT_NE(std::string(k->name).find("x32"), std::string::npos);
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

TEST_P(Kernels, ExpSumMatchesReferenceIncludingUnderflow) {
    std::mt19937 rng(4);
    for (int n : kLengths) {
        auto x = random_vec(n, rng, -30.0f, 0.0f);
        if (n > 2) x[1] = -200.0f;  // far below the clamp: must come out (almost) zero
        auto mul = random_vec(n, rng, 0.5f, 1.0f);
        for (bool with_mul : {false, true}) {
            auto y = x;
            std::vector<double> want(n);
            for (int i = 0; i < n; ++i) want[i] = static_cast<double>(x[i]) * 0.75f * (with_mul ? mul[i] : 1.0f);
            const double want_sum = ref::exp_sum(want, -0.25);
            const float got_sum = k->exp_sum(y.data(), n, 0.75f, with_mul ? mul.data() : nullptr, -0.25f);
            EXPECT_NEAR(got_sum, want_sum, kExpTol * want_sum * 4) << n;
            for (int i = 0; i < n; ++i) {
                // The argument x*scale*mul is rounded twice in float: up to 2 * 2^-24 * |arg| more.
                const double tol = (kExpTol + 1.5e-7 * std::fabs(std::log(want[i] + 1e-300))) * want[i] + 1e-37;
                ASSERT_NEAR(y[i], want[i], tol) << n << " " << i;
            }
        }
    }
}

TEST_P(Kernels, SelectGtKeepsOrderAndExactlyTheEntriesAboveThreshold) {
    std::mt19937 rng(5);
    for (int n : kLengths) {
        auto x = random_vec(n, rng, 0.0f, 1.0f);
        std::vector<std::int32_t> idx(n + kSelectSlack);
        std::vector<float> val(n + kSelectSlack);
        const float inv = 0.5f, thr = 0.3f;
        const int count = k->select_gt(x.data(), n, inv, thr, idx.data(), val.data());
        int j = 0;
        for (int i = 0; i < n; ++i) {
            const float w = x[i] * inv;
            if (w > thr) {
                ASSERT_LT(j, count);
                EXPECT_EQ(idx[j], i);
                EXPECT_EQ(val[j], w);
                ++j;
            }
        }
        EXPECT_EQ(count, j) << n;
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

INSTANTIATE_TEST_SUITE_P(AllIsas, Kernels, ::testing::Values("scalar", "avx2", "avx512", "neon"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(Dispatch, BestTableIsLastAndScalarAlwaysPresent) {
    const auto tables = available_kernels();
    ASSERT_FALSE(tables.empty());
    EXPECT_EQ(std::string(tables.front()->name).rfind("scalar_", 0), 0u);
    EXPECT_EQ(&select_kernels(), tables.back());
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
