// Loader fuzz target (libFuzzer entry point; fuzz_common.h has the input layout). Every input
// must either load, then score windows without fault and identically on one thread and two, or
// be refused with FormatError; sanitizers (separate exact scratch allocations under ASan) catch
// the rest. LLVMFuzzerCustomMutator makes the mutations structure-aware.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "memae/model.h"

using memae::fuzzing::decode_loader;
using memae::fuzzing::encode_loader;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    auto in = decode_loader(data, size);
    if (!in.keep_id) in.config = memae::testing::stamp(in.config, in.tensors);
    try {
        const memae::Model m = memae::Model::load_bytes(in.config, in.tensors.data(), in.tensors.size());
        const std::size_t per = static_cast<std::size_t>(m.window()) * m.n_sensors();
        if (per > 4096) return 0;
        const int batch = m.chunk() + 1;  // crosses a chunk boundary
        std::vector<float> x(per * batch);
        for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(m.center()[i % m.n_sensors()] + (i % 7) - 3.0);
        std::vector<float> one(batch), two(batch), contrib(static_cast<std::size_t>(batch) * m.n_sensors());
        std::vector<float> rec(x.size());
        std::vector<float> att(m.has_memory() ? static_cast<std::size_t>(batch) * m.latent_length() * m.memory_slots() : 0);
        memae::Outputs out;
        out.scores = one.data();
        out.contributions = contrib.data();
        out.reconstruction = rec.data();
        out.attention = m.has_memory() ? att.data() : nullptr;
        m.run(x.data(), batch, out, 1);
        memae::Outputs again;
        again.scores = two.data();
        m.run(x.data(), batch, again, 2);
        if (std::memcmp(one.data(), two.data(), one.size() * sizeof(float)) != 0) {
            std::fprintf(stderr, "scores differ between 1 and 2 threads\n");
            std::abort();
        }
    } catch (const memae::FormatError&) {
    }
    return 0;
}

namespace {

/// Every number in a JSON text: the byte range of its literal.
void number_spans(const memae::Json& j, std::vector<std::pair<std::size_t, std::size_t>>& out) {
    if (j.is_number()) out.emplace_back(j.begin(), j.end());
    if (j.is_array()) for (const auto& v : j.items("")) number_spans(v, out);
    if (j.is_object()) for (const auto& kv : j.members("")) number_spans(kv.second, out);
}

const char* kInteresting[] = {"0", "1", "2", "3", "-1", "4", "7", "8", "15", "16", "17", "31", "32", "33", "63", "64",
                              "65", "1023", "1024", "1025", "4096", "65536", "65537", "1048576", "4194304",
                              "2147483647", "2147483648", "4294967296", "1e-12", "1e-300", "1e12", "0.5", "-0"};

/// Sets one number of the text to a boundary value; false when the text has none.
bool mutate_number(std::string& text, std::mt19937& rng) {
    try {
        const memae::Json j = memae::Json::parse(text);
        std::vector<std::pair<std::size_t, std::size_t>> spans;
        number_spans(j, spans);
        if (spans.empty()) return false;
        const auto sp = spans[rng() % spans.size()];
        std::string value = kInteresting[rng() % (sizeof kInteresting / sizeof *kInteresting)];
        if (rng() % 4 == 0) {  // or the old value +-1
            const long long old = std::atoll(text.substr(sp.first, sp.second - sp.first).c_str());
            value = std::to_string(old + (rng() % 2 ? 1 : -1));
        }
        text = text.substr(0, sp.first) + value + text.substr(sp.second);
        return true;
    } catch (const memae::FormatError&) {
        return false;
    }
}

/// Gives one tensor a new shape (one dimension changed) and re-lays the file around it, so the
/// weights stay a well-formed safetensors file and the graph checks see the mismatch.
bool reshape_tensor(std::vector<std::uint8_t>& tensors, std::mt19937& rng) {
    if (tensors.size() < 8) return false;
    std::uint64_t hlen = 0;
    for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | tensors[i];
    if (hlen > tensors.size() - 8) return false;
    try {
        const memae::Json h = memae::Json::parse(reinterpret_cast<const char*>(tensors.data() + 8), hlen);
        std::map<std::string, memae::testing::Tensor> out;
        for (const auto& kv : h.members("")) {
            if (kv.first == "__metadata__") continue;
            memae::testing::Tensor t;
            for (const auto& d : kv.second.at("shape", "").items("")) t.shape.push_back(d.integer("", 0, 64));
            const auto& offs = kv.second.at("data_offsets", "").items("");
            if (offs.size() != 2) return false;  // a mutated header: not ours to reshape
            const auto begin = static_cast<std::size_t>(offs[0].integer("", 0, 1 << 26));
            const auto end = static_cast<std::size_t>(offs[1].integer("", 0, 1 << 26));
            if (begin > end || 8 + hlen + end > tensors.size()) return false;
            t.data.resize((end - begin) / 4);
            if (!t.data.empty()) std::memcpy(t.data.data(), tensors.data() + 8 + hlen + begin, t.data.size() * 4);
            out[kv.first] = t;
        }
        if (out.empty()) return false;
        auto it = out.begin();
        std::advance(it, static_cast<long>(rng() % out.size()));
        auto& t = it->second;
        if (t.shape.empty() || rng() % 8 == 0) {
            t.shape.push_back(1 + static_cast<std::int64_t>(rng() % 3));
        } else {
            auto& d = t.shape[rng() % t.shape.size()];
            d = std::max<std::int64_t>(0, d + static_cast<std::int64_t>(rng() % 5) - 2);
        }
        std::size_t n = 1;
        for (auto d : t.shape) {
            n *= static_cast<std::size_t>(d);
            if (n > (1u << 16)) return false;  // checked per factor: many dimensions cannot wrap it
        }
        t.data.resize(n, 0.25f);
        tensors = memae::testing::safetensors_bytes(out);
        return true;
    } catch (const memae::FormatError&) {
        return false;
    }
}

}  // namespace

extern "C" std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size, std::size_t max_size,
                                               unsigned int seed) {
    std::mt19937 rng(seed);
    auto in = decode_loader(data, size);
    bool changed = false;
    switch (rng() % 4) {
        case 0: changed = mutate_number(in.config, rng); break;
        case 1: {  // a number of the safetensors header (a shape or an offset), file otherwise intact
            if (in.tensors.size() < 8) break;
            std::uint64_t hlen = 0;
            for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | in.tensors[i];
            if (hlen > in.tensors.size() - 8 || hlen > (1u << 20)) break;
            std::string header(in.tensors.begin() + 8, in.tensors.begin() + 8 + static_cast<long>(hlen));
            if (!mutate_number(header, rng)) break;
            std::vector<std::uint8_t> blob;
            for (int i = 0; i < 8; ++i) blob.push_back(static_cast<std::uint8_t>(header.size() >> (8 * i)));
            blob.insert(blob.end(), header.begin(), header.end());
            blob.insert(blob.end(), in.tensors.begin() + 8 + static_cast<long>(hlen), in.tensors.end());
            in.tensors = blob;
            changed = true;
            break;
        }
        case 2: changed = reshape_tensor(in.tensors, rng); break;
        default: break;
    }
    if (!changed) return LLVMFuzzerMutate(data, size, max_size);  // plain byte mutations
    const auto out = encode_loader(in.config, in.tensors, in.keep_id);
    if (out.size() > max_size) return LLVMFuzzerMutate(data, size, max_size);
    std::memcpy(data, out.data(), out.size());
    return out.size();
}

#if defined(MEMAE_FUZZ_SEEDS)
std::vector<std::vector<std::uint8_t>> memae_fuzz_seeds() { return memae::fuzzing::loader_seeds(); }
#endif
