// The whole forward pass against an independent channels-first double implementation, and the
// loader's refusals at the C++ level (the Python tests cover the same through the bindings).
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "bundle_builder.h"
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
    EXPECT_THROW(load(b), FormatError);
    b = tiny_conv_bundle();
    b.weights["enc.w"].shape = {4, 3, 1};
    b.weights["enc.w"].data.resize(12);
    b.tensors = testing::safetensors_bytes(b.weights);
    EXPECT_THROW(load(b), FormatError);
}

TEST(Model, RefusesNewerFormatWithAClearMessage) {
    auto b = tiny_conv_bundle();
    b.config.replace(b.config.find("\"format_version\": 1"), 19, "\"format_version\": 7");
    try {
        load(b);
        FAIL();
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("newer than this runtime supports"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace memae
