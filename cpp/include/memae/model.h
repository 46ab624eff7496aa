// A loaded MemAE bundle (docs/bundle-format.md) and its forward pass.
//
// Loading validates everything up front (sizes, JSON, safetensors bounds, the integrity id that
// ties config.json to model.safetensors, graph shapes, finite weights, resource limits) and
// re-lays the weights out for the kernels, so scoring can trust the model and never checks
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

constexpr int kFormatVersion = 2;

/// Load-time limits (docs/bundle-format.md, "Limits"). Far above any sensor model, low enough
/// that a crafted 1 KB bundle cannot make a gateway allocate more than kMaxScratchBytes per
/// scoring call and thread, or overflow an `int` size anywhere.
namespace limits {
constexpr std::uint64_t kMaxConfigBytes = 8u << 20;      // config.json
constexpr std::uint64_t kMaxWeightsBytes = 1u << 30;     // model.safetensors
constexpr std::uint64_t kMaxHeaderBytes = 1u << 20;      // safetensors JSON header
constexpr int kMaxSensors = 4096;
constexpr int kMaxWindow = 16384;
constexpr std::int64_t kMaxInput = 1 << 20;              // window x sensors
constexpr int kMaxFeatures = 1 << 20;                    // channels (conv) or features (linear)
constexpr int kMaxKernel = 1024;
constexpr int kMaxStride = 1024;                         // also padding and output_padding
constexpr int kMaxLength = 1 << 20;                      // time length of any activation
constexpr std::int64_t kMaxActivation = 1 << 22;         // floats of one layer output, one window
constexpr int kMaxLayers = 64;                           // per encoder / decoder
constexpr int kMaxSlots = 65536;
constexpr std::int64_t kMaxMemoryFloats = 1 << 24;       // slots x dim
constexpr std::uint64_t kMaxScratchBytes = 64u << 20;    // per scoring call and thread
constexpr double kMinScale = 1e-12, kMaxScale = 1e12;    // scaler.scale
constexpr double kMaxAbsCenter = 1e15;                   // |scaler.center|
constexpr double kMinThreshold = 1e-12, kMaxThreshold = 1e12;
constexpr double kMinTemperature = 1e-4, kMaxTemperature = 1e4;
constexpr double kMaxAbsSlope = 1e3;                     // leaky_relu negative_slope
}  // namespace limits

/// The integrity id of a bundle (docs/bundle-format.md, "Integrity"): the first 16 hex digits of
/// SHA-256 over the length of C (u64, little-endian), C, then model.safetensors, where C is
/// config.json with the values of its top-level "model_id" and (when a string) "created_at"
/// replaced by "". Throws FormatError when the
/// config is not a JSON object with a string "model_id".
std::string bundle_id(const std::string& config_json, const std::uint8_t* tensors, std::size_t tensors_size);
/// Same, from an already parsed config (the caller's buffer).
std::string bundle_id(const std::string& config_json, const Json& parsed, const std::uint8_t* tensors,
                      std::size_t tensors_size);
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

    const std::string& model_id() const { return model_id_; }
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
    /// Windows per pass through the network (at most 16; fewer when the scratch cap demands).
    int chunk() const { return chunk_; }
    /// Bytes of per-call scratch one thread needs at `chunk` windows per pass.
    std::uint64_t scratch_bytes(int chunk) const;

    /// Scores `batch` raw windows (batch, window, sensors), row-major, finite. `threads` > 1
    /// splits the batch over that many threads.
    void run(const float* windows, int batch, const Outputs& out, int threads = 1) const;

private:
    /// Scores chunks of kChunk windows taken from `next` until the batch is done.
    void run_chunks(const float* windows, int batch, const Outputs& out, std::atomic<int>& next) const;

    std::string kind_, model_id_;
    int chunk_ = 1;
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
