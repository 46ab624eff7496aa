// A small mutation driver for LLVMFuzzerTestOneInput when libFuzzer is not available (g++):
// starts from valid bundles and applies byte flips, random bytes, interesting values,
// truncations, insertions and splices, deterministically from --seed. Run under ASan/UBSan by
// scripts/run-ctest.sh. With clang, the same target is linked against libFuzzer instead.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bundle_builder.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

std::vector<std::uint8_t> encode(const std::string& config, const std::vector<std::uint8_t>& tensors) {
    std::vector<std::uint8_t> out{static_cast<std::uint8_t>(config.size() & 0xff),
                                  static_cast<std::uint8_t>(config.size() >> 8)};
    out.insert(out.end(), config.begin(), config.end());
    out.insert(out.end(), tensors.begin(), tensors.end());
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    long iterations = 10000;
    unsigned seed = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--iterations") == 0) iterations = std::atol(argv[i + 1]);
        if (std::strcmp(argv[i], "--seed") == 0) seed = static_cast<unsigned>(std::atol(argv[i + 1]));
    }
    std::vector<std::vector<std::uint8_t>> corpus;
    for (unsigned s : {1u, 2u}) {
        const auto b = memae::testing::tiny_conv_bundle(s);
        corpus.push_back(encode(b.config, b.tensors));
    }
    std::mt19937 rng(seed);
    const std::uint8_t interesting[] = {0, 1, 0x7f, 0x80, 0xff, '"', '[', ']', '{', '}', ',', ':', '-', '9', 'e', '\\'};
    for (const auto& c : corpus) LLVMFuzzerTestOneInput(c.data(), c.size());
    for (long it = 0; it < iterations; ++it) {
        std::vector<std::uint8_t> input = corpus[rng() % corpus.size()];
        const int edits = 1 + static_cast<int>(rng() % 6);
        for (int e = 0; e < edits && !input.empty(); ++e) {
            const std::size_t pos = rng() % input.size();
            switch (rng() % 7) {
                case 0: input[pos] ^= static_cast<std::uint8_t>(1u << (rng() % 8)); break;
                case 1: input[pos] = static_cast<std::uint8_t>(rng()); break;
                case 2: input[pos] = interesting[rng() % sizeof(interesting)]; break;
                case 3: input.resize(pos); break;
                case 4: input.insert(input.begin() + static_cast<long>(pos), static_cast<std::uint8_t>(rng())); break;
                case 5: input.erase(input.begin() + static_cast<long>(pos)); break;
                default: {  // splice a chunk of another corpus entry
                    const auto& other = corpus[rng() % corpus.size()];
                    if (other.empty()) break;
                    const std::size_t from = rng() % other.size();
                    const std::size_t len = std::min<std::size_t>(1 + rng() % 64, other.size() - from);
                    input.insert(input.begin() + static_cast<long>(pos), other.begin() + static_cast<long>(from),
                                 other.begin() + static_cast<long>(from + len));
                }
            }
        }
        LLVMFuzzerTestOneInput(input.data(), input.size());
        if (rng() % 50 == 0 && corpus.size() < 64 && !input.empty()) corpus.push_back(input);  // keep some mutants as seeds
    }
    std::printf("fuzz_loader: %ld inputs, no crash\n", iterations);
    return 0;
}
