// Scalar references for the kernels, accumulating in double: the truth every ISA is held to.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace memae::ref {

/// C = init + A.B with B row-major (K x N); init is C (accumulate), bias or 0.
inline void gemm(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                 const float* bias, bool accumulate) {
    for (int m = 0; m < M; ++m) {
        for (int n = 0; n < N; ++n) {
            double s = accumulate ? C[m * ldc + n] : (bias ? bias[n] : 0.0);
            for (int k = 0; k < K; ++k) s += static_cast<double>(A[m * lda + k]) * B[k * ldb + n];
            C[m * ldc + n] = static_cast<float>(s);
        }
    }
}

inline double dot(int n, const float* a, const float* b) {
    double s = 0.0;
    for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
    return s;
}

inline double exp_sum(std::vector<double>& x, double shift) {
    double s = 0.0;
    for (double& v : x) {
        v = std::exp(v - shift);
        s += v;
    }
    return s;
}

inline void gather_rows(int count, const std::int32_t* idx, const float* w, const float* M, int dim, double* out) {
    for (int d = 0; d < dim; ++d) {
        double s = 0.0;
        for (int j = 0; j < count; ++j) s += static_cast<double>(w[j]) * M[static_cast<long>(idx[j]) * dim + d];
        out[d] = s;
    }
}

}  // namespace memae::ref
