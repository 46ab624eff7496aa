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
/// The newest format this runtime reads: 3 is a format-2 bundle whose "scoring" section asks
/// for a reduction other than `mean` (an older runtime must refuse it, not score it as mean).
constexpr int kMaxFormatVersion = 3;

/// How a window's squared reconstruction errors become its score (config.json "scoring"):
/// contributions are per-sensor errors averaged over the window's rows (`mean`, `max`) or
/// weighted towards its newest rows (`last_rows`, weights halving every half_life_rows rows
/// back, summing to 1); the score is their mean over sensors, or their max for `max`.
enum class Reduction { Mean, Max, LastRows };

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
    std::vector<float> b;
    /// conv_transpose1d split by stride phase (model.cpp, build_layer): the output rows
    /// first, first + stride, ... (`rows` of them) are one stride-1 GEMM over `taps` consecutive
    /// rows of the zero-padded input, starting at padded row `start`, with B at w[offset].
    struct Phase {
        int first = 0, rows = 0, taps = 0, start = 0;
        std::size_t offset = 0;
        std::size_t offset16 = 0;  // into w16
    };
    /// bf16 precision only (Model::set_precision): B re-packed by pack_b_bf16 (for
    /// conv_transpose1d, one block per phase at Phase::offset16). Empty in FP32.
    std::vector<std::uint16_t> w16;
    std::vector<Phase> phases;
    /// conv1d with stride 1, kernel >= 2 and at most 8 output channels: output rows 2u and 2u+1
    /// as one GEMM row u of 2 x out_ch columns (A row 2u of the padded input, K = (kernel + 1) x
    /// in_ch; B packed from [B; 0] beside [0; B], bias twice), so a 16-lane vector holds 16 real
    /// outputs instead of 8. Used when the kernel table's lanes >= 2 x out_ch (the trainer's last
    /// decoder layer for 8 sensors on AVX-512); the C layout is the same. Empty otherwise.
    std::vector<float> w2, b2;
    int lead = 0;  // conv_transpose1d: zero rows before the input in its padded copy
    std::size_t pad_floats = 0;  // floats of the zero-padded input copy (conv1d, conv_transpose1d)
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
    float* novelty = nullptr;         // (B, L): 1 - cos(z, memory read-out) per latent position
    float* encoding = nullptr;        // (B, L, dim): the encoding z before the memory read
    /// Profiling (bench/runtime.py): seconds spent in each of kStageNames, added to
    /// stage_seconds[0:kStages]. Forces one thread; costs a clock read per stage and query.
    double* stage_seconds = nullptr;
};

/// The stages Outputs::stage_seconds times, in order. With the fused similarity softmax (cosine,
/// T >= 1/40: kernels.h, sim_exp) "similarity" includes the exponentials and their sums and
/// "softmax" is the candidate selection alone; otherwise "softmax" is both.
constexpr int kStages = 9;
constexpr const char* kStageNames[kStages] = {"scale",  "encoder", "similarity", "softmax", "select",
                                              "shrink", "read",    "decoder",    "score"};

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
    Reduction reduction() const { return reduction_; }
    /// "mean", "max" or "last_rows", as config.json spells it.
    const char* reduction_name() const;
    /// `last_rows` only: the half-life in rows (0 otherwise).
    double half_life_rows() const { return half_life_rows_; }
    /// The per-row weights of the contributions (window floats, summing to 1; empty for
    /// `mean` and `max`, which divide the plain sum by the window as before).
    const std::vector<float>& row_weights() const { return row_weights_; }
    const std::vector<std::string>& sensors() const { return sensors_; }
    const std::vector<double>& center() const { return center_; }
    const std::vector<double>& scale() const { return scale_; }
    const KernelTable& kernels() const { return *kernels_; }
    /// Use another kernel table (tests compare ISAs on one model).
    void set_kernels(const KernelTable& k) { kernels_ = &k; }
    /// "fp32" (the default) or "bf16": the convolution GEMMs (conv1d, conv_transpose1d) in bf16
    /// with FP32 accumulation (gemm_bf16); scaling, the memory addressing (similarity, softmax,
    /// shrinkage, read), linear layers, activations and the score stay FP32. Throws
    /// std::invalid_argument with one line when the CPU lacks AVX512_BF16, the model has no
    /// convolution, or the name is unknown. Not thread safe with scoring (call after loading).
    void set_precision(const std::string& precision);
    const char* precision() const { return bf16_ ? "bf16" : "fp32"; }
    /// Replace the memory matrix (slots x dim floats, finite), e.g. a drift-followed copy.
    /// Not thread safe with scoring: the caller serialises it (memae_ts.following does).
    void set_memory(const float* m, std::size_t n);
    /// The memory matrix in use, (slots x dim) row-major.
    const std::vector<float>& memory_matrix() const { return memory_.m; }
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
    Reduction reduction_ = Reduction::Mean;
    bool bf16_ = false;
    double half_life_rows_ = 0.0;
    std::vector<float> row_weights_;
    std::vector<Layer> encoder_, decoder_;
    bool has_memory_ = false;
    Memory memory_;
    std::size_t max_act_ = 0;  // largest activation (floats) of one sample
    const KernelTable* kernels_ = nullptr;
};

}  // namespace memae
