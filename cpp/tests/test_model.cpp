// The whole forward pass against an independent channels-first double implementation, and the
// loader's refusals at the C++ level (the Python tests cover the same through the bindings).
#include <gtest/gtest.h>

#include <random>
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
