// Shared by the fuzz targets, their seeds and the small driver that runs them without libFuzzer.
//
// Two targets, two ways into the loader:
//  - fuzz_loader: the bytes of config.json and model.safetensors (layout below), mutated as bytes
//    by libFuzzer and, structure-aware, by LLVMFuzzerCustomMutator: a number of the config or of
//    the safetensors header (a window, a stride, a tensor dimension, an offset) set to a boundary
//    value, or a tensor reshaped with its data re-laid; the integrity id is stamped again after
//    every mutation, so mutants get past the id check to the graph checks and the forward pass.
//  - fuzz_graph: bytes decoded into a small graph (op, channels, kernel, stride, padding, ...),
//    built into a valid bundle and scored against the double reference of graph_builder.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "graph_builder.h"

extern "C" std::size_t LLVMFuzzerMutate(std::uint8_t* data, std::size_t size, std::size_t max_size);

namespace memae::fuzzing {

// fuzz_loader input: u16 little-endian n, then n bytes of config.json, then model.safetensors.
// Bit 15 of n set: keep the config's model_id as it is (test the id check itself); clear: the
// target stamps the right id first.
constexpr std::uint16_t kKeepId = 0x8000;

inline std::vector<std::uint8_t> encode_loader(const std::string& config, const std::vector<std::uint8_t>& tensors,
                                               bool keep_id = false) {
    const std::size_t n = std::min<std::size_t>(config.size(), 0x7fff);
    const std::uint16_t head = static_cast<std::uint16_t>(n | (keep_id ? kKeepId : 0));
    std::vector<std::uint8_t> out(2 + n + tensors.size());
    out[0] = static_cast<std::uint8_t>(head & 0xff);
    out[1] = static_cast<std::uint8_t>(head >> 8);
    if (n) std::memcpy(out.data() + 2, config.data(), n);
    if (!tensors.empty()) std::memcpy(out.data() + 2 + n, tensors.data(), tensors.size());
    return out;
}

struct LoaderInput {
    std::string config;
    std::vector<std::uint8_t> tensors;
    bool keep_id = false;
};

inline LoaderInput decode_loader(const std::uint8_t* data, std::size_t size) {
    LoaderInput in;
    if (size < 2) return in;
    const std::uint16_t head = static_cast<std::uint16_t>(data[0] | (data[1] << 8));
    in.keep_id = head & kKeepId;
    std::size_t n = head & 0x7fff;
    if (n > size - 2) n = size - 2;
    in.config.assign(reinterpret_cast<const char*>(data + 2), n);
    in.tensors.assign(data + 2 + n, data + size);  // its own heap block: ASan sees any read past it
    return in;
}

/// Reads small choices from fuzz bytes (0 when they run out).
class Reader {
public:
    Reader(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
    int next(int mod) { return i_ < n_ ? p_[i_++] % mod : 0; }
    std::size_t used() const { return i_; }

private:
    const std::uint8_t* p_;
    std::size_t n_, i_ = 0;
};

/// Writes the choices a Reader will read back (seeds are specs, encoded).
struct Writer {
    std::vector<std::uint8_t> out;
    void put(int value) { out.push_back(static_cast<std::uint8_t>(value)); }
};

inline const double kTemperatures[] = {0.05, 0.1, 0.3, 1.0, 3.0};
inline const char* kActs[] = {"relu", "tanh", "leaky_relu"};

/// fuzz_graph input -> graph spec. Sizes stay small so one input scores in microseconds.
inline testing::GraphSpec decode_graph(Reader& r) {
    testing::GraphSpec s;
    s.kind = r.next(2) ? "mlp" : "conv";
    s.window = 1 + r.next(10);
    s.sensors = 1 + r.next(4);
    s.memory = r.next(4) != 0;
    s.slots = 1 + r.next(12);
    s.addressing = r.next(2) ? "dot" : "cosine";
    s.temperature = kTemperatures[r.next(5)];
    const double shrinks[] = {0.0, s.slots > 1 ? 1.0 / s.slots : 0.0, 0.02, 0.1, 0.3};
    const int shrink_index = r.next(10);  // 5..9: the same thresholds with epsilon = threshold
    s.shrink = shrinks[shrink_index % 5];
    if (shrink_index >= 5) s.epsilon = s.shrink;
    s.seed = static_cast<unsigned>(r.next(256));
    const bool conv = s.kind == "conv";
    auto layers = [&](int n) {
        std::vector<testing::LayerSpec> out;
        for (int i = 0; i < n; ++i) {
            const int op = r.next(6);
            testing::LayerSpec L;
            if (op >= 4 || (!conv && op == 3)) {
                L.op = kActs[r.next(3)];
                L.slope = r.next(2) ? 0.01 : -0.5;
            } else if (!conv) {
                L.op = "linear";
                L.out = 1 + r.next(12);
            } else {
                L.op = op < 2 ? "conv1d" : "conv_transpose1d";
                L.out = 1 + r.next(6);
                L.kernel = 1 + r.next(7);
                L.stride = 1 + r.next(4);
                L.padding = r.next(L.op == "conv1d" ? 5 : L.kernel);
                L.output_padding = L.op == "conv1d" ? 0 : r.next(L.stride);
            }
            out.push_back(L);
        }
        return out;
    };
    s.encoder = layers(1 + r.next(4));
    s.decoder = layers(r.next(4));
    return s;
}

/// The bytes decode_graph turns into `s` (for seeds). Layer fields must be in decode's ranges.
inline std::vector<std::uint8_t> encode_graph(const testing::GraphSpec& s, int temperature_index, int shrink_index) {
    Writer w;
    const bool conv = s.kind == "conv";
    w.put(conv ? 0 : 1);
    w.put(s.window - 1);
    w.put(s.sensors - 1);
    w.put(s.memory ? 1 : 0);
    w.put(s.slots - 1);
    w.put(s.addressing == "dot" ? 1 : 0);
    w.put(temperature_index);
    w.put(shrink_index);
    w.put(static_cast<int>(s.seed % 256));
    auto layers = [&](const std::vector<testing::LayerSpec>& list) {
        for (const auto& L : list) {
            if (testing::detail::is_act(L.op)) {
                w.put(4);
                w.put(L.op == "relu" ? 0 : L.op == "tanh" ? 1 : 2);
                w.put(L.slope > 0 ? 1 : 0);
            } else if (L.op == "linear") {
                w.put(0);
                w.put(L.out - 1);
            } else {
                w.put(L.op == "conv1d" ? 0 : 2);
                w.put(L.out - 1);
                w.put(L.kernel - 1);
                w.put(L.stride - 1);
                w.put(L.padding);
                if (L.op != "conv1d") w.put(L.output_padding);
            }
        }
    };
    w.put(static_cast<int>(s.encoder.size()) - 1);
    layers(s.encoder);
    w.put(static_cast<int>(s.decoder.size()));
    layers(s.decoder);
    return w.out;
}

/// Seed graphs: every architecture the trainer emits, at small and tiny windows.
inline std::vector<std::vector<std::uint8_t>> graph_seeds() {
    using testing::LayerSpec;
    std::vector<std::vector<std::uint8_t>> seeds;
    for (int window : {1, 2, 3, 4, 5, 8, 10}) {
        testing::GraphSpec s;  // the trainer's conv shape: strided conv down, transposed conv up
        s.window = window;
        s.sensors = 3;
        s.slots = 8;
        s.encoder = {{"conv1d", 4, 5, 2, 2}, {"leaky_relu"}, {"conv1d", 3, 3, 1, 1}};
        s.decoder = {{"conv_transpose1d", 4, 5, 2, 2, window % 2 == 0 ? 1 : 0}, {"leaky_relu"}};
        seeds.push_back(encode_graph(s, 0, 1));
        if (window == 2 || window == 8) seeds.push_back(encode_graph(s, 0, 6));  // epsilon = threshold
        s.memory = false;
        seeds.push_back(encode_graph(s, 0, 0));
        testing::GraphSpec m;  // mlp
        m.kind = "mlp";
        m.window = window;
        m.sensors = 2;
        m.slots = 6;
        m.addressing = window % 2 ? "dot" : "cosine";
        m.encoder = {{"linear", 8}, {"tanh"}, {"linear", 3}};
        m.decoder = {{"linear", 8}, {"relu"}};
        seeds.push_back(encode_graph(m, window % 2 ? 3 : 1, 2));
    }
    return seeds;
}

/// Seed bundles for fuzz_loader: the graph seeds as files, plus the id left wrong once.
inline std::vector<std::vector<std::uint8_t>> loader_seeds() {
    std::vector<std::vector<std::uint8_t>> seeds;
    for (const auto& bytes : graph_seeds()) {
        Reader r(bytes.data(), bytes.size());
        const auto g = testing::build(decode_graph(r));
        if (g) seeds.push_back(encode_loader(g->config, g->tensors));
    }
    const auto tiny = testing::tiny_conv_bundle();
    seeds.push_back(encode_loader(tiny.config, tiny.tensors));
    std::string wrong = tiny.config;
    wrong[wrong.find("\"model_id\": \"") + 13] ^= 1;
    seeds.push_back(encode_loader(wrong, tiny.tensors, true));
    return seeds;
}

}  // namespace memae::fuzzing
