// Structure-aware fuzz target: the input is a small graph (fuzz_common.h decode_graph), built
// into a valid bundle by graph_builder.h. The loader must accept it (the builder and the loader
// agree on what is valid), and every ISA must score it like the double-precision reference:
// a wrong output row, a tap landing outside its buffer (ASan: every buffer its own exact
// allocation) or a mis-packed weight shows here.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "fuzz_common.h"
#include "memae/model.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    memae::fuzzing::Reader r(data, size);
    const auto spec = memae::fuzzing::decode_graph(r);
    const auto g = memae::testing::build(spec);
    if (!g) return 0;  // a layer does not fit its input: nothing to score
    memae::Model m = [&] {
        try {
            return memae::Model::load_bytes(g->config, g->tensors.data(), g->tensors.size());
        } catch (const memae::FormatError& e) {
            std::fprintf(stderr, "a valid graph was refused: %s\n%s\n", e.what(), g->config.c_str());
            std::abort();
        }
    }();
    const int W = spec.window, S = spec.sensors, batch = 1 + r.next(18);
    std::mt19937 rng(spec.seed);
    std::normal_distribution<float> n(0.0f, 1.5f);
    std::vector<float> x(static_cast<std::size_t>(batch) * W * S);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(g->center[i % S] + g->scale[i % S] * n(rng));
    std::vector<memae::testing::Reference> want;
    for (int b = 0; b < batch; ++b) want.push_back(memae::testing::reference(*g, x.data() + static_cast<std::size_t>(b) * W * S));
    for (const memae::KernelTable* k : memae::available_kernels()) {
        m.set_kernels(*k);
        std::vector<float> scores(batch);
        memae::Outputs out;
        out.scores = scores.data();
        m.run(x.data(), batch, out, 1 + r.next(2));
        for (int b = 0; b < batch; ++b) {
            const auto& ref = want[static_cast<std::size_t>(b)];
            // Shrinkage is discontinuous at the threshold: float32 may keep a slot that double
            // drops. Compare only where every weight is clear of it.
            if (ref.shrink_margin < 1e-4 || !std::isfinite(ref.score)) continue;
            if (!(std::fabs(scores[b] - ref.score) <= 2e-3 * std::fabs(ref.score) + 1e-5)) {
                std::fprintf(stderr, "%s window %d: score %.9g, reference %.9g\n%s\n", k->name, b, scores[b], ref.score,
                             g->config.c_str());
                std::abort();
            }
        }
    }
    return 0;
}

#if defined(MEMAE_FUZZ_SEEDS)
std::vector<std::vector<std::uint8_t>> memae_fuzz_seeds() { return memae::fuzzing::graph_seeds(); }
#endif
