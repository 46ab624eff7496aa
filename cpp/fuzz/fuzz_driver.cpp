// Runs a fuzz target without libFuzzer (g++, cross builds under qemu): starts from the target's
// seeds, mutates with its LLVMFuzzerCustomMutator when it has one and with byte edits
// (flips, random and interesting bytes, truncations, insertions, splices) otherwise,
// deterministically from --seed. Under ASan/UBSan via ctest. `--write-seeds DIR` writes the
// seeds as files for a libFuzzer corpus (scripts/run-ctest.sh).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
extern "C" __attribute__((weak)) std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size,
                                                                      std::size_t max_size, unsigned int seed);
std::vector<std::vector<std::uint8_t>> memae_fuzz_seeds();

namespace {

std::mt19937 g_rng;
const std::uint8_t kInteresting[] = {0, 1, 0x7f, 0x80, 0xff, '"', '[', ']', '{', '}', ',', ':', '-', '9', 'e', '\\'};

}  // namespace

/// Byte-level mutation, as libFuzzer's LLVMFuzzerMutate offers custom mutators.
extern "C" std::size_t LLVMFuzzerMutate(std::uint8_t* data, std::size_t size, std::size_t max_size) {
    std::vector<std::uint8_t> input(data, data + size);
    const int edits = 1 + static_cast<int>(g_rng() % 6);
    for (int e = 0; e < edits && !input.empty(); ++e) {
        const std::size_t pos = g_rng() % input.size();
        switch (g_rng() % 6) {
            case 0: input[pos] ^= static_cast<std::uint8_t>(1u << (g_rng() % 8)); break;
            case 1: input[pos] = static_cast<std::uint8_t>(g_rng()); break;
            case 2: input[pos] = kInteresting[g_rng() % sizeof(kInteresting)]; break;
            case 3: input.resize(pos); break;
            case 4: input.insert(input.begin() + static_cast<long>(pos), static_cast<std::uint8_t>(g_rng())); break;
            default: input.erase(input.begin() + static_cast<long>(pos)); break;
        }
    }
    if (input.size() > max_size) input.resize(max_size);
    if (!input.empty()) std::memcpy(data, input.data(), input.size());
    return input.size();
}

int main(int argc, char** argv) {
    long iterations = 10000;
    unsigned seed = 1;
    const char* write_seeds = nullptr;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--iterations") == 0) iterations = std::atol(argv[i + 1]);
        if (std::strcmp(argv[i], "--seed") == 0) seed = static_cast<unsigned>(std::atol(argv[i + 1]));
        if (std::strcmp(argv[i], "--write-seeds") == 0) write_seeds = argv[i + 1];
    }
    std::vector<std::vector<std::uint8_t>> corpus = memae_fuzz_seeds();
    if (write_seeds) {
        for (std::size_t i = 0; i < corpus.size(); ++i) {
            std::ofstream(std::string(write_seeds) + "/seed-" + std::to_string(i), std::ios::binary)
                .write(reinterpret_cast<const char*>(corpus[i].data()), static_cast<std::streamsize>(corpus[i].size()));
        }
        std::printf("%zu seeds written to %s\n", corpus.size(), write_seeds);
        return 0;
    }
    g_rng.seed(seed);
    for (const auto& c : corpus) LLVMFuzzerTestOneInput(c.data(), c.size());
    constexpr std::size_t kMax = 1 << 16;
    std::vector<std::uint8_t> buf(kMax);
    for (long it = 0; it < iterations; ++it) {
        const auto& base = corpus[g_rng() % corpus.size()];
        std::size_t n = std::min(base.size(), kMax);
        if (n) std::memcpy(buf.data(), base.data(), n);
        if (LLVMFuzzerCustomMutator && g_rng() % 2) {
            n = LLVMFuzzerCustomMutator(buf.data(), n, kMax, static_cast<unsigned>(g_rng()));
        } else {
            n = LLVMFuzzerMutate(buf.data(), n, kMax);
        }
        std::vector<std::uint8_t> input(buf.begin(), buf.begin() + static_cast<long>(n));  // exact-size block for ASan
        LLVMFuzzerTestOneInput(input.data(), input.size());
        if (g_rng() % 50 == 0 && corpus.size() < 256 && !input.empty()) corpus.push_back(input);  // keep some mutants
    }
    std::printf("%s: %ld inputs, no crash\n", argv[0], iterations);
    return 0;
}
