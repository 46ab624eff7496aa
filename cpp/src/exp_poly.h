// Cephes-style single-precision exp on any vocabulary I with fma/round/ldexp (about 1-2 ulp).
// Where ldexp is built from exponent bits, inputs are clamped to [-87.3, 88] first (below -87.3
// gives ~1e-38 instead of 0, irrelevant after softmax normalisation); AVX-512's scalef
// saturates to 0 / inf by itself, so that path skips the clamp.
static inline I::V exp_poly(I::V x) {
    if (!I::kLdexpSaturates) x = I::min(I::max(x, I::set1(-87.3365448f)), I::set1(88.0f));
    const I::V n = I::round(I::mul(x, I::set1(1.44269504088896341f)));
    I::V r = I::fma(n, I::set1(-0.693359375f), x);
    r = I::fma(n, I::set1(2.12194440e-4f), r);
    I::V p = I::set1(1.9875691500e-4f);
    p = I::fma(p, r, I::set1(1.3981999507e-3f));
    p = I::fma(p, r, I::set1(8.3334519073e-3f));
    p = I::fma(p, r, I::set1(4.1665795894e-2f));
    p = I::fma(p, r, I::set1(1.6666665459e-1f));
    p = I::fma(p, r, I::set1(5.0000001201e-1f));
    p = I::fma(p, I::mul(r, r), I::add(r, I::set1(1.0f)));
    return I::ldexp(p, n);
}

// 2^t for the softmax pass (exp_candidates folds the scale, the shift and log2(e) into one FMA
// before it): t = n + f with n = round(t), |f| <= 1/2, 2^f by a degree-5 polynomial fitted for
// relative error (1.9e-7 evaluated in float), then 2^n by ldexp. 9 operations against exp_poly's
// 12 plus the separate scale and shift. Clamped to [-126, 127] where ldexp is built from
// exponent bits (2^-126 instead of 0 is irrelevant after softmax normalisation).
static inline I::V exp2_poly(I::V t) {
    if (!I::kLdexpSaturates) t = I::min(I::max(t, I::set1(-126.0f)), I::set1(127.0f));
    const I::V n = I::round(t);
    const I::V f = I::sub(t, n);
    I::V p = I::set1(1.326472731307149e-3f);
    p = I::fma(p, f, I::set1(9.671512991189957e-3f));
    p = I::fma(p, f, I::set1(5.550733581185341e-2f));
    p = I::fma(p, f, I::set1(2.4022242426872253e-1f));
    p = I::fma(p, f, I::set1(6.931470036506653e-1f));
    p = I::fma(p, f, I::set1(1.0f));
    return I::ldexp(p, n);
}
