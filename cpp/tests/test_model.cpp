// The whole forward pass against an independent channels-first double implementation, and the
// loader's refusals at the C++ level (the Python tests cover the same through the bindings).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>

#include "bundle_builder.h"
#include "graph_builder.h"
#include "memae/model.h"

namespace memae {
namespace {

using testing::tiny_conv_bundle;

Model load(const testing::TinyBundle& b) { return Model::load_bytes(b.config, b.tensors.data(), b.tensors.size()); }

TEST(Model, ForwardMatchesIndependentReferenceOnEveryIsa) {
    const auto b = tiny_conv_bundle();
    Model m = load(b);
    EXPECT_EQ(m.window(), 12);
    EXPECT_EQ(m.latent_length(), 6);
    std::mt19937 rng(3);
    std::normal_distribution<float> n(0.0f, 1.0f);
    const int batch = 37;  // more than one chunk, odd tail
    std::vector<float> x(static_cast<std::size_t>(batch) * 12 * 3);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(b.center[i % 3] + b.scale[i % 3] * n(rng));
    for (const KernelTable* k : available_kernels()) {
        m.set_kernels(*k);
        std::vector<float> scores(batch), contrib(batch * 3);
        Outputs out;
        out.scores = scores.data();
        out.contributions = contrib.data();
        m.run(x.data(), batch, out, 2);
        for (int i = 0; i < batch; ++i) {
            const auto want = testing::reference_score(b, x.data() + i * 36);
            ASSERT_NEAR(scores[i], want.first, 1e-5 * want.first) << k->name << " window " << i;
            for (int s = 0; s < 3; ++s) ASSERT_NEAR(contrib[i * 3 + s], want.second[s], 1e-5 * want.second[s] + 1e-9);
        }
    }
}

// The stage profiler (bench/runtime.py): same scores as an ordinary run, every stage of a conv
// model with memory gets time, and asking for 2 threads still profiles on one.
TEST(Model, StageProfileKeepsTheScoresAndTimesEveryStage) {
    const auto b = tiny_conv_bundle();
    Model m = load(b);
    const int batch = 37;
    std::mt19937 rng(4);
    std::normal_distribution<float> n(0.0f, 1.0f);
    std::vector<float> x(static_cast<std::size_t>(batch) * 12 * 3);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(b.center[i % 3] + b.scale[i % 3] * n(rng));
    std::vector<float> plain(batch), profiled(batch);
    Outputs o1;
    o1.scores = plain.data();
    m.run(x.data(), batch, o1, 1);
    double seconds[kStages] = {};
    Outputs o2;
    o2.scores = profiled.data();
    o2.stage_seconds = seconds;
    m.run(x.data(), batch, o2, 2);
    EXPECT_EQ(plain, profiled);
    for (int i = 0; i < kStages; ++i) EXPECT_GT(seconds[i], 0.0) << kStageNames[i];
}

TEST(Model, RejectsNonFiniteInput) {
    const auto b = tiny_conv_bundle();
    Model m = load(b);
    std::vector<float> x(2 * 36, 1.0f);
    x[36 + 5] = NAN;
    float scores[2];
    Outputs out;
    out.scores = scores;
    EXPECT_THROW(m.run(x.data(), 2, out), std::invalid_argument);
}

TEST(Model, RefusesEveryTruncation) {
    const auto b = tiny_conv_bundle();
    for (std::size_t keep = 0; keep < b.tensors.size(); ++keep) {
        EXPECT_THROW(Model::load_bytes(b.config, b.tensors.data(), keep), FormatError) << keep;
    }
    for (std::size_t keep = 0; keep < b.config.size(); keep += 7) {
        EXPECT_THROW(Model::load_bytes(b.config.substr(0, keep), b.tensors.data(), b.tensors.size()), FormatError);
    }
}

TEST(Model, RefusesBadWeights) {
    auto b = tiny_conv_bundle();
    b.weights["mem"].data[3] = INFINITY;
    b.tensors = testing::safetensors_bytes(b.weights);
    b.config = testing::stamp(b.config, b.tensors);
    EXPECT_THROW(load(b), FormatError);
    b = tiny_conv_bundle();
    b.weights["enc.w"].shape = {4, 3, 1};
    b.weights["enc.w"].data.resize(12);
    b.tensors = testing::safetensors_bytes(b.weights);
    b.config = testing::stamp(b.config, b.tensors);
    EXPECT_THROW(load(b), FormatError);
}

TEST(Model, RefusesNewerFormatWithAClearMessage) {
    auto b = tiny_conv_bundle();
    b.config.replace(b.config.find("\"format_version\": 2"), 19, "\"format_version\": 7");
    b.config = testing::stamp(b.config, b.tensors);
    try {
        load(b);
        FAIL();
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("newer than this runtime supports"), std::string::npos) << e.what();
    }
}

/// tiny_conv_bundle with a "scoring" section and the format version it needs, stamped again.
testing::TinyBundle with_scoring(const std::string& scoring, int version) {
    auto b = tiny_conv_bundle();
    b.config.replace(b.config.find("\"format_version\": 2"), 19, "\"format_version\": " + std::to_string(version));
    b.config.insert(b.config.find("\"threshold\""), "\"scoring\": " + scoring + ", ");
    b.config = testing::stamp(b.config, b.tensors);
    return b;
}

// The score reductions on every ISA against a double reduction of the same run's
// reconstruction: `last_rows` weights the rows (halving every half_life_rows back, sum 1) and
// scores the mean over sensors; `max` keeps the per-sensor means and scores the worst sensor.
TEST(Model, ScoreReductionsMatchADoubleReductionOnEveryIsa) {
    const int batch = 21, W = 12, S = 3;
    for (const std::string kind : {"mean", "max", "last_rows"}) {
        const auto b = kind == "mean" ? with_scoring(R"({"reduction": "mean"})", 2)
                       : kind == "max" ? with_scoring(R"({"reduction": "max"})", 3)
                                       : with_scoring(R"({"reduction": "last_rows", "half_life_rows": 3.0})", 3);
        Model m = load(b);
        EXPECT_EQ(std::string(m.reduction_name()), kind);
        std::vector<double> w(W, 1.0 / W);
        if (kind == "last_rows") {
            double sum = 0.0;
            for (int r = 0; r < W; ++r) sum += w[r] = std::pow(0.5, (W - 1 - r) / 3.0);
            for (double& v : w) v /= sum;
        }
        std::mt19937 rng(5);
        std::normal_distribution<float> n(0.0f, 1.0f);
        std::vector<float> x(static_cast<std::size_t>(batch) * W * S);
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(b.center[i % 3] + b.scale[i % 3] * n(rng));
        for (const KernelTable* k : available_kernels()) {
            m.set_kernels(*k);
            std::vector<float> scores(batch), contrib(batch * S), rec(x.size());
            Outputs out;
            out.scores = scores.data();
            out.contributions = contrib.data();
            out.reconstruction = rec.data();
            m.run(x.data(), batch, out, 2);
            for (int i = 0; i < batch; ++i) {
                std::vector<double> c(S, 0.0);
                for (int r = 0; r < W; ++r)
                    for (int s = 0; s < S; ++s) {
                        const std::size_t at = (static_cast<std::size_t>(i) * W + r) * S + s;
                        const double xs = static_cast<float>((x[at] - b.center[s]) / b.scale[s]);
                        const double d = xs - rec[at];
                        c[s] += w[r] * d * d;
                    }
                double want = kind == "max" ? -1.0 : 0.0;
                for (int s = 0; s < S; ++s) {
                    ASSERT_NEAR(contrib[i * S + s], c[s], 1e-5 * c[s] + 1e-9) << kind << " " << k->name;
                    want = kind == "max" ? std::max(want, c[s]) : want + c[s] / S;
                }
                ASSERT_NEAR(scores[i], want, 1e-5 * want) << kind << " " << k->name << " window " << i;
            }
        }
    }
    // `mean` written out scores bit for bit as a bundle without the section.
    Model plain = load(tiny_conv_bundle()), mean = load(with_scoring(R"({"reduction": "mean"})", 2));
    std::vector<float> x(static_cast<std::size_t>(batch) * W * S, 0.3f);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += 0.01f * static_cast<float>(i % 17);
    std::vector<float> s1(batch), s2(batch);
    Outputs o1, o2;
    o1.scores = s1.data();
    o2.scores = s2.data();
    plain.run(x.data(), batch, o1);
    mean.run(x.data(), batch, o2);
    EXPECT_EQ(s1, s2);
}

// bf16 convolutions: scores within a stated bound of FP32 (tiny random model, standard-normal
// inputs), set back to fp32 gives the FP32 bits again, and the refusals name their reason.
TEST(Model, Bf16ConvolutionsStayCloseToFp32) {
    Model m = load(tiny_conv_bundle());
    EXPECT_THROW(m.set_precision("fp16"), std::invalid_argument);
    if (!bf16_supported()) {
        EXPECT_THROW(m.set_precision("bf16"), std::invalid_argument);
        GTEST_SKIP() << "no AVX512_BF16 on this CPU";
    }
    const int batch = 40, per = 12 * 3;
    std::mt19937 rng(6);
    std::normal_distribution<float> n(0.0f, 1.0f);
    const auto b = tiny_conv_bundle();
    std::vector<float> x(static_cast<std::size_t>(batch) * per);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(b.center[i % 3] + b.scale[i % 3] * n(rng));
    auto scores = [&](Model& model) {
        std::vector<float> s(batch);
        Outputs o;
        o.scores = s.data();
        model.run(x.data(), batch, o, 2);
        return s;
    };
    const auto fp32 = scores(m);
    m.set_precision("bf16");
    EXPECT_STREQ(m.precision(), "bf16");
    const auto bf16 = scores(m);
    double worst = 0.0;
    for (int i = 0; i < batch; ++i) worst = std::max(worst, std::fabs(static_cast<double>(bf16[i]) - fp32[i]) / fp32[i]);
    EXPECT_LT(worst, 0.02) << "bf16 vs fp32 relative score error";
    EXPECT_GT(worst, 0.0) << "bf16 did not change anything: is the bf16 path running?";
    m.set_precision("fp32");
    EXPECT_EQ(scores(m), fp32);
}

TEST(Model, RefusesABadScoringSection) {
    auto refused = [](const testing::TinyBundle& b, const std::string& says) {
        try {
            load(b);
            ADD_FAILURE() << "loaded";
        } catch (const FormatError& e) {
            EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
        }
    };
    // an older runtime ignores the section, so a non-mean reduction must come in format 3
    refused(with_scoring(R"({"reduction": "max"})", 2), "needs format_version 3");
    refused(with_scoring(R"({"reduction": "median"})", 3), "scoring.reduction must be");
    refused(with_scoring(R"({"reduction": "last_rows"})", 3), "half_life_rows");
    refused(with_scoring(R"({"reduction": "last_rows", "half_life_rows": 0})", 3), "half_life_rows must be in");
}

}  // namespace
}  // namespace memae

namespace memae {
namespace {

/// Scores `g` on a few random windows on every ISA and compares with the double reference.
void expect_matches_reference(const testing::Graph& g, const std::string& what) {
    Model m = Model::load_bytes(g.config, g.tensors.data(), g.tensors.size());
    const int W = g.spec.window, S = g.spec.sensors, batch = 3;
    std::mt19937 rng(g.spec.seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    std::vector<float> x(static_cast<std::size_t>(batch) * W * S);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(g.center[i % S] + g.scale[i % S] * n(rng));
    for (const KernelTable* k : available_kernels()) {
        m.set_kernels(*k);
        std::vector<float> scores(batch);
        Outputs out;
        out.scores = scores.data();
        m.run(x.data(), batch, out);
        for (int i = 0; i < batch; ++i) {
            const auto want = testing::reference(g, x.data() + static_cast<std::size_t>(i) * W * S);
            ASSERT_NEAR(scores[i], want.score, 1e-4 * want.score + 1e-6) << what << " " << k->name << " window " << i;
        }
    }
}

// Every (window, kernel, stride, padding, output_padding) the loader accepts for a transposed
// convolution, in the decoder (full-length input) and in the encoder (it sets the latent length).
// Before the fix, a tap landing past the end for every input row (tap - padding >= out_len,
// stride >= 2) wrote one output row past the layer's buffer; the ASan build (separate exact
// scratch allocations) reports it as a heap-buffer-overflow, and the output is checked against
// the double reference on every ISA.
TEST(Model, TransposedConvolutionStaysInsideItsOutputForEveryAcceptedShape) {
    int built = 0;
    for (int window = 1; window <= 6; ++window)
        for (int kernel = 1; kernel <= 6; ++kernel)
            for (int stride = 1; stride <= 4; ++stride)
                for (int padding = 0; padding < kernel; ++padding)
                    for (int op = 0; op < stride; ++op)
                        for (int where = 0; where < 2; ++where) {
                            testing::GraphSpec spec;
                            spec.window = window;
                            spec.sensors = 2;
                            spec.slots = 3;
                            spec.seed = static_cast<unsigned>(built + 1);
                            testing::LayerSpec t{"conv_transpose1d", 2, kernel, stride, padding, op};
                            if (where == 0) {
                                spec.encoder = {{"conv1d", 3}, {"tanh"}};
                                spec.decoder = {t};
                            } else {
                                spec.encoder = {t, {"relu"}};
                                spec.decoder = {{"leaky_relu"}};
                            }
                            const auto g = testing::build(spec);
                            if (!g) continue;  // output length < 1: the loader refuses it (tested elsewhere)
                            ++built;
                            const std::string what = "window " + std::to_string(window) + " k" + std::to_string(kernel) +
                                                     " s" + std::to_string(stride) + " p" + std::to_string(padding) +
                                                     " op" + std::to_string(op) + (where ? " encoder" : " decoder");
                            ASSERT_NO_FATAL_FAILURE(expect_matches_reference(*g, what));
                        }
    EXPECT_GT(built, 1000);
}

// A conv1d with at most lanes / 2 output channels runs two output rows per GEMM row where the
// kernel table's vectors are wide enough (Layer::w2: the trainer's last decoder layer for 8
// sensors on AVX-512, 4 on AVX2): odd and even output lengths (the odd last row runs unpaired),
// with and without padding (without, A is read straight from the previous layer's output, an
// exact allocation under ASan), an activation in the epilogue or none, in the decoder and in the
// encoder, on every ISA against the double reference.
TEST(Model, NarrowConvolutionPairingOutputRowsMatchesTheReference) {
    int built = 0;
    for (int sensors : {8, 4, 3})
        for (int window = 1; window <= 9; ++window)
            for (int kernel = 2; kernel <= 5; ++kernel)
                for (int padding = 0; padding < kernel; ++padding)
                    for (int act = 0; act < 2; ++act) {
                        testing::GraphSpec spec;
                        spec.window = window;
                        spec.sensors = sensors;
                        spec.slots = 7;
                        spec.seed = static_cast<unsigned>(built + 1);
                        testing::LayerSpec narrow{"conv1d", 8, kernel, 1, padding};
                        spec.encoder = {narrow};
                        if (act) spec.encoder.push_back({"tanh"});
                        testing::LayerSpec last{"conv1d", sensors, kernel, 1, padding};
                        const auto latent = testing::detail::conv_len(narrow, window);
                        if (!latent) continue;
                        // Back to the window length: the last layer is the narrow one under test.
                        const int before = window - 2 * padding + kernel - 1;
                        if (before < 1) continue;
                        spec.decoder = {testing::detail::fit_length(*latent, before, 6), {"leaky_relu"}, last};
                        if (act) spec.decoder.push_back({"tanh"});
                        const auto g = testing::build(spec);
                        if (!g) continue;
                        ++built;
                        const std::string what = "sensors " + std::to_string(sensors) + " window " + std::to_string(window) +
                                                 " k" + std::to_string(kernel) + " p" + std::to_string(padding) +
                                                 (act ? " tanh" : "");
                        ASSERT_NO_FATAL_FAILURE(expect_matches_reference(*g, what));
                    }
    EXPECT_GT(built, 100);
}

// The trainer's default conv network (kernel 5, stride 2, padding 2, two levels) at windows 1-4:
// its decoder wrote one row out of bounds before the fix.
TEST(Model, TrainerDefaultConvNetworkAtTinyWindows) {
    for (int window = 1; window <= 8; ++window) {
        testing::GraphSpec spec;
        spec.window = window;
        spec.sensors = 3;
        spec.slots = 20;
        spec.temperature = 0.05;
        spec.shrink = 0.0;
        spec.encoder = {{"conv1d", 8, 5, 2, 2}, {"leaky_relu"}, {"conv1d", 16, 5, 2, 2}, {"leaky_relu"}, {"conv1d", 6, 3, 1, 1}};
        std::vector<int> lengths{window};
        for (int i = 0; i < 2; ++i) lengths.push_back((lengths.back() + 4 - 5) / 2 + 1);
        for (int level = 2; level >= 1; --level) {
            const int produced = (lengths[level] - 1) * 2 - 4 + 5;
            spec.decoder.push_back({"conv_transpose1d", level == 2 ? 16 : 8, 5, 2, 2, lengths[level - 1] - produced});
            spec.decoder.push_back({"leaky_relu"});
        }
        spec.decoder.push_back({"conv1d", 3, 3, 1, 1});
        const auto g = testing::build(spec);
        ASSERT_TRUE(g) << window;
        ASSERT_NO_FATAL_FAILURE(expect_matches_reference(*g, "default network, window " + std::to_string(window)));
    }
}

}  // namespace
}  // namespace memae
