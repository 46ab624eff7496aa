// A loaded MemAE bundle (docs/bundle-format.md) and its forward pass.
//
// Loading validates everything up front (JSON, safetensors bounds, graph shapes, finite weights)
// and re-lays the weights out for the kernels, so scoring can trust the model and never checks
// again. A Model is immutable after loading: every call gets its own scratch, so one Model can
// be used from many threads at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "memae/json.h"
#include "memae/kernels.h"

namespace memae {

constexpr int kFormatVersion = 1;

enum class Op { Conv1d, ConvTranspose1d, Linear, Relu, LeakyRelu, Tanh };

struct Layer {
    Op op = Op::Relu;
    int in_ch = 0, out_ch = 0;    // channels (conv) or features (linear)
    int in_len = 1, out_len = 1;  // time length (1 for linear)
    int kernel = 1, stride = 1, padding = 0, output_padding = 0;
    float slope = 0.0f;
    std::vector<float> w;  // the GEMM's B operand, packed (pack_b); see model.cpp
    std::size_t tap_size = 0;  // conv_transpose1d: one packed (in, out) matrix per kernel tap
    std::vector<float> b;
};

struct Memory {
    int slots = 0, dim = 0;
    bool cosine = true;
    float temperature = 1.0f, shrink = 0.0f, epsilon = 1e-12f;
    std::vector<float> m;         // (slots, dim) as trained: rows read by the sparse read
    std::vector<float> mt;        // (dim, slots) packed B operand of the similarity GEMM; for
                                  // cosine each column is pre-divided by its row norm
    std::vector<float> inv_norm;  // 1 / max(|m_i|, 1e-12), precomputed at load
};

/// What one call should produce; null pointers are skipped.
struct Outputs {
    float* scores = nullptr;          // (B,)
    float* contributions = nullptr;   // (B, S)
    float* reconstruction = nullptr;  // (B, W, S), scaled units
    float* attention = nullptr;       // (B, L, slots): addressing weights after shrink + renorm
};

class Model {
public:
    /// Reads `<dir>/config.json` and `<dir>/model.safetensors`.
    static Model load_dir(const std::string& dir);
    /// Same from bytes in memory (tests and the fuzz target use this).
    static Model load_bytes(const std::string& config_json, const std::uint8_t* tensors,
                            std::size_t tensors_size);

    int window() const { return window_; }
    int n_sensors() const { return n_sensors_; }
    const std::string& kind() const { return kind_; }
    int latent_length() const { return latent_len_; }
    int memory_slots() const { return memory_.slots; }
    bool has_memory() const { return has_memory_; }
    double threshold() const { return threshold_; }
    const std::vector<std::string>& sensors() const { return sensors_; }
    const std::vector<double>& center() const { return center_; }
    const std::vector<double>& scale() const { return scale_; }
    const KernelTable& kernels() const { return *kernels_; }
    /// Use another kernel table (tests compare ISAs on one model).
    void set_kernels(const KernelTable& k) { kernels_ = &k; }

    /// Scores `batch` raw windows (batch, window, sensors), row-major, finite. `threads` > 1
    /// splits the batch over that many threads.
    void run(const float* windows, int batch, const Outputs& out, int threads = 1) const;

private:
    /// Scores chunks of kChunk windows taken from `next` until the batch is done.
    void run_chunks(const float* windows, int batch, const Outputs& out, std::atomic<int>& next) const;

    std::string kind_;
    int window_ = 0, n_sensors_ = 0, latent_len_ = 1, latent_dim_ = 0;
    std::vector<std::string> sensors_;
    std::vector<double> center_, scale_, inv_scale_;  // double: sensor offsets can be large
    double threshold_ = 0.0;
    std::vector<Layer> encoder_, decoder_;
    bool has_memory_ = false;
    Memory memory_;
    std::size_t max_act_ = 0;  // largest activation (floats) of one sample
    const KernelTable* kernels_ = nullptr;
};

}  // namespace memae
