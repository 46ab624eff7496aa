#include "memae/model.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <thread>

#include "memae/sha256.h"

// Checked scratch: under AddressSanitizer every per-call buffer, and every layer's output, is
// its own allocation of exactly the size it needs, so a write one element past any of them is
// a heap-buffer-overflow report instead of a silent write into the next buffer. Release builds
// carve everything from one block.
#if defined(__SANITIZE_ADDRESS__)
#define MEMAE_CHECKED_SCRATCH 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MEMAE_CHECKED_SCRATCH 1
#endif
#endif

namespace memae {

namespace {

using namespace limits;
constexpr int kChunk = 16;       // samples per pass through the network (cache-sized scratch)
constexpr int kQueryBlock = 24;  // memory queries per similarity GEMM (multiple of every MR)

/// Whether the addressing runs the fused similarity softmax (kernels.h, sim_exp): cosine with
/// T >= 1/40, where a logit is at most 1/T and shifting by 1/T keeps every exponent above -80.
bool fused_softmax(const Memory& M) { return M.cosine && M.temperature >= 1.0f / 40.0f; }

/// Query rows per similarity GEMM: sim_exp's blocks are k.sim_rows (~16), whose exponentials are
/// read again row by row right after it; 16 rows of 1000 slots with the scratch sized to them
/// measured 7 % faster a window than 24 (AVX-512, trained bench model).
int query_block(const Memory& M, const KernelTable& k) {
    return fused_softmax(M) ? std::max(1, std::min(k.sim_rows, kQueryBlock)) : kQueryBlock;
}
constexpr std::size_t kAlign = 16;  // floats: every scratch buffer starts 64-byte aligned in the block
constexpr std::uint64_t kMaxModelBytes = 512u << 20;  // re-laid weights held by a loaded Model

struct Tensor {
    std::vector<std::int64_t> shape;
    const std::uint8_t* data = nullptr;
    std::size_t nbytes = 0;
};

std::string shape_str(const std::vector<std::int64_t>& s) {
    std::string out = "(";
    for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + (s.size() == 1 ? ",)" : ")");
}

/// Text from a file for an error message: at most 40 bytes, nothing that could break the line.
std::string printable(const std::string& text) {
    std::string out;
    for (char c : text.substr(0, 40)) out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
    return text.size() > 40 ? out + "..." : out;
}

std::string mib(std::uint64_t bytes) { return std::to_string((bytes + (1u << 20) - 1) >> 20) + " MiB"; }

// safetensors: u64 little-endian header length, JSON header, then the byte buffer. As the
// safetensors library requires: tensors lie back to back, in offset order, covering the buffer
// exactly (no overlap, no gap, nothing after). Here also: every tensor is F32 and finite.
std::map<std::string, Tensor> parse_safetensors(const std::uint8_t* p, std::size_t n) {
    if (n < 8) throw FormatError("model.safetensors is truncated: " + std::to_string(n) + " bytes");
    std::uint64_t hlen = 0;
    for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | p[i];
    if (hlen > n - 8) {
        throw FormatError("model.safetensors is truncated or corrupt: header claims " +
                          std::to_string(hlen) + " bytes, file has " + std::to_string(n - 8));
    }
    if (hlen > kMaxHeaderBytes) {
        throw FormatError("model.safetensors header is " + std::to_string(hlen) + " bytes, over the limit of " +
                          mib(kMaxHeaderBytes));
    }
    const Json header = Json::parse(reinterpret_cast<const char*>(p + 8), static_cast<std::size_t>(hlen));
    const std::uint8_t* data = p + 8 + hlen;
    const std::size_t data_size = n - 8 - static_cast<std::size_t>(hlen);
    std::map<std::string, Tensor> out;
    std::vector<std::pair<std::uint64_t, std::pair<std::uint64_t, std::string>>> spans;
    for (const auto& kv : header.members("safetensors header")) {
        if (kv.first == "__metadata__") {
            for (const auto& meta : kv.second.members("safetensors __metadata__")) {
                meta.second.string("safetensors __metadata__ values");
            }
            continue;
        }
        const std::string where = "safetensors tensor '" + printable(kv.first) + "'";
        Tensor t;
        const std::string& dtype = kv.second.at("dtype", where).string(where + ".dtype");
        if (dtype != "F32") throw FormatError(where + " has dtype " + printable(dtype) + ", expected F32");
        std::uint64_t numel = 1;
        const auto& dims = kv.second.at("shape", where).items(where + ".shape");
        if (dims.size() > 8) throw FormatError(where + " has more than 8 dimensions");
        for (const Json& d : dims) {
            const std::int64_t v = d.integer(where + ".shape", 0, std::int64_t(1) << 40);
            t.shape.push_back(v);
            numel *= static_cast<std::uint64_t>(v);
            if (numel > (std::uint64_t(1) << 40)) throw FormatError(where + " is too large");
        }
        const auto& offs = kv.second.at("data_offsets", where).items(where + ".data_offsets");
        if (offs.size() != 2) throw FormatError(where + ".data_offsets must be [begin, end]");
        const auto begin = static_cast<std::uint64_t>(offs[0].integer(where + ".data_offsets", 0, INT64_MAX / 2));
        const auto end = static_cast<std::uint64_t>(offs[1].integer(where + ".data_offsets", 0, INT64_MAX / 2));
        if (begin > end || end > data_size) {
            throw FormatError(where + " lies outside the file (offsets " + std::to_string(begin) +
                              ".." + std::to_string(end) + ", data is " + std::to_string(data_size) +
                              " bytes): the file is truncated or corrupt");
        }
        if (end - begin != numel * 4) {
            throw FormatError(where + " has " + std::to_string(end - begin) + " bytes, shape " +
                              shape_str(t.shape) + " needs " + std::to_string(numel * 4));
        }
        t.data = data + begin;
        t.nbytes = static_cast<std::size_t>(end - begin);
        for (std::size_t i = 0; i < t.nbytes; i += 4) {
            float v;
            std::memcpy(&v, t.data + i, 4);  // the buffer may be unaligned
            if (!std::isfinite(v)) {
                throw FormatError(where + " contains NaN or Inf (element " + std::to_string(i / 4) + ")");
            }
        }
        spans.push_back({begin, {end, kv.first}});
        out[kv.first] = t;
    }
    std::sort(spans.begin(), spans.end());
    std::uint64_t expected = 0;
    for (const auto& sp : spans) {
        if (sp.first != expected) {
            throw FormatError("safetensors tensor '" + printable(sp.second.second) + "' starts at byte " +
                              std::to_string(sp.first) + ", expected " + std::to_string(expected) +
                              ": tensors overlap or leave a gap (corrupt file)");
        }
        expected = sp.second.first;
    }
    if (expected != data_size) {
        throw FormatError("model.safetensors has " + std::to_string(data_size - expected) +
                          " bytes after its last tensor (corrupt file)");
    }
    return out;
}

class Builder {
public:
    explicit Builder(const std::map<std::string, Tensor>& tensors) : tensors_(tensors) {}

    /// Shape of a named tensor (so layer sizes can be read off the weights before taking them).
    std::vector<std::int64_t> shape(const Json& name_json, const std::string& where) const {
        return find(name_json, where).shape;
    }

    /// A float32 tensor of exactly `shape` (finite: parse_safetensors checked every value).
    std::vector<float> take(const Json& name_json, const std::string& where,
                            const std::vector<std::int64_t>& shape) const {
        const Tensor& t = find(name_json, where);
        if (t.shape != shape) {
            throw FormatError("tensor '" + printable(name_json.string(where)) + "' (" + where + ") has shape " +
                              shape_str(t.shape) + ", expected " + shape_str(shape));
        }
        std::vector<float> v(t.nbytes / 4);
        if (t.nbytes) std::memcpy(v.data(), t.data, t.nbytes);  // the buffer may be unaligned
        return v;
    }

private:
    const Tensor& find(const Json& name_json, const std::string& where) const {
        const std::string& name = name_json.string(where);
        auto it = tensors_.find(name);
        if (it == tensors_.end()) {
            throw FormatError("tensor '" + printable(name) + "' (" + where + ") is missing from model.safetensors");
        }
        return it->second;
    }
    const std::map<std::string, Tensor>& tensors_;
};

/// A required integer field in [lo, hi].
int req_int(const Json& obj, const char* key, const std::string& where, std::int64_t lo, std::int64_t hi) {
    return static_cast<int>(obj.at(key, where).integer(where + "." + key, lo, hi));
}

/// An optional integer field in [lo, hi] (absent or null: `fallback`).
int opt_int(const Json& obj, const char* key, const std::string& where, std::int64_t lo, std::int64_t hi,
            int fallback) {
    const Json* v = obj.find(key);
    if (!v || v->is_null()) return fallback;
    return static_cast<int>(v->integer(where + "." + key, lo, hi));
}

/// A required number in [lo, hi] (finite by construction: the JSON reader refuses the rest).
double req_number(const Json& obj, const char* key, const std::string& where, double lo, double hi) {
    const double d = obj.at(key, where).number(where + "." + key);
    if (!(d >= lo && d <= hi)) {
        throw FormatError(where + "." + key + " must be in [" + Json::format(lo) + ", " + Json::format(hi) + "], got " +
                          Json::format(d));
    }
    return d;
}

/// Parses one layer, checks it against the running (channels, length) and re-lays its weights.
Layer build_layer(const Json& j, const std::string& where, bool conv, int& ch, int& len, const Builder& tensors,
                  std::uint64_t& model_bytes) {
    Layer L;
    const std::string op = j.at("op", where).string(where + ".op");
    L.in_ch = ch;
    L.in_len = len;
    L.out_ch = ch;
    L.out_len = len;
    if (op == "relu" || op == "tanh" || op == "leaky_relu") {
        L.op = op == "relu" ? Op::Relu : op == "tanh" ? Op::Tanh : Op::LeakyRelu;
        if (L.op == Op::LeakyRelu) {
            L.slope = static_cast<float>(req_number(j, "negative_slope", where, -kMaxAbsSlope, kMaxAbsSlope));
        }
        return L;
    }
    const Json& wname = j.at("weight", where);
    const std::vector<std::int64_t> wshape = tensors.shape(wname, where + ".weight");
    auto take_bias = [&](int out) { return tensors.take(j.at("bias", where), where + ".bias", {out}); };
    auto dim = [&](std::size_t i, std::int64_t hi) -> int {
        if (wshape[i] < 1 || wshape[i] > hi) {
            throw FormatError(where + ".weight has dimension " + std::to_string(wshape[i]) + " out of range [1, " +
                              std::to_string(hi) + "]");
        }
        return static_cast<int>(wshape[i]);
    };
    auto keep = [&](const std::vector<float>& packed) {
        model_bytes += packed.size() * sizeof(float);
        if (model_bytes > kMaxModelBytes) {
            throw FormatError(where + ": the re-laid weights exceed the limit of " + mib(kMaxModelBytes));
        }
    };
    if (op == "linear") {
        if (conv) throw FormatError(where + ": 'linear' is not allowed in a conv network");
        if (wshape.size() != 2) throw FormatError(where + ".weight must be 2-D (out, in)");
        const int out = dim(0, kMaxFeatures), in = dim(1, kMaxFeatures);
        if (in != ch) {
            throw FormatError(where + " expects " + std::to_string(in) + " inputs, previous layer gives " +
                              std::to_string(ch));
        }
        const std::vector<float> w = tensors.take(wname, where + ".weight", {out, in});
        L.op = Op::Linear;
        L.out_ch = out;
        L.b = take_bias(out);
        // B operand (in, out): y = x . B.
        std::vector<float> b(static_cast<std::size_t>(in) * out);
        for (int o = 0; o < out; ++o)
            for (int i = 0; i < in; ++i) b[static_cast<std::size_t>(i) * out + o] = w[static_cast<std::size_t>(o) * in + i];
        L.w = pack_b(in, out, b.data(), out);
        keep(L.w);
        ch = out;
        if (static_cast<std::int64_t>(out) > kMaxActivation) throw FormatError(where + " output is too large");
        return L;
    }
    if (op != "conv1d" && op != "conv_transpose1d") {
        throw FormatError(where + " has unknown op '" + printable(op) + "'");
    }
    if (!conv) throw FormatError(where + ": '" + op + "' is not allowed in an mlp network");
    if (wshape.size() != 3) throw FormatError(where + ".weight must be 3-D");
    const int k = dim(2, kMaxKernel);
    L.kernel = k;
    L.stride = req_int(j, "stride", where, 1, kMaxStride);
    L.padding = req_int(j, "padding", where, 0, kMaxStride);
    const std::size_t K = static_cast<std::size_t>(k);
    if (op == "conv1d") {
        const int out = dim(0, kMaxFeatures), in = dim(1, kMaxFeatures);
        if (in != ch) {
            throw FormatError(where + " expects " + std::to_string(in) + " input channels, previous layer gives " +
                              std::to_string(ch));
        }
        const std::int64_t span = static_cast<std::int64_t>(len) + 2 * L.padding - k;
        if (span < 0) throw FormatError(where + ": kernel " + std::to_string(k) + " is longer than its padded input");
        const std::int64_t out_len = span / L.stride + 1;
        if (out_len > kMaxLength) throw FormatError(where + " gives output length " + std::to_string(out_len));
        if (static_cast<std::int64_t>(out) * out_len > kMaxActivation) throw FormatError(where + " output is too large");
        const std::vector<float> w = tensors.take(wname, where + ".weight", {out, in, k});
        L.op = Op::Conv1d;
        L.out_ch = out;
        L.out_len = static_cast<int>(out_len);
        L.b = take_bias(out);
        // B operand (k*in, out): row (tap, in-channel) so a window of the channels-last input is a row of A.
        std::vector<float> b(K * in * out);
        for (int o = 0; o < out; ++o)
            for (int c = 0; c < in; ++c)
                for (int t = 0; t < k; ++t)
                    b[(static_cast<std::size_t>(t) * in + c) * out + o] = w[(static_cast<std::size_t>(o) * in + c) * K + t];
        L.w = pack_b(k * in, out, b.data(), out);
        keep(L.w);
        if (L.stride == 1 && k >= 2 && 2 * out <= 16) {  // Layer::w2: two output rows per GEMM row
            const std::size_t K2 = (K + 1) * in, N2 = 2 * static_cast<std::size_t>(out);
            std::vector<float> b2(K2 * N2, 0.0f);
            for (std::size_t r = 0; r < K * in; ++r)
                for (int o = 0; o < out; ++o) {
                    b2[r * N2 + o] = b[r * out + o];                   // row 2u: taps at input rows 2u..
                    b2[(r + in) * N2 + out + o] = b[r * out + o];      // row 2u+1: one input row later
                }
            L.w2 = pack_b(static_cast<int>(K2), static_cast<int>(N2), b2.data(), static_cast<int>(N2));
            keep(L.w2);
            L.b2 = L.b;
            L.b2.insert(L.b2.end(), L.b.begin(), L.b.end());
        }
        L.pad_floats = L.padding > 0 ? static_cast<std::size_t>(len + 2 * L.padding) * in : 0;
    } else {
        const int in = dim(0, kMaxFeatures), out = dim(1, kMaxFeatures);
        if (in != ch) {
            throw FormatError(where + " expects " + std::to_string(in) + " input channels, previous layer gives " +
                              std::to_string(ch));
        }
        L.output_padding = opt_int(j, "output_padding", where, 0, kMaxStride, 0);
        if (L.output_padding >= L.stride) throw FormatError(where + ": output_padding must be smaller than stride");
        // As torch allows and the reference engines implement: the padding trims at most k-1 taps.
        if (L.padding > k - 1) throw FormatError(where + ": padding must be at most kernel - 1");
        const std::int64_t out_len = (static_cast<std::int64_t>(len) - 1) * L.stride - 2 * L.padding + k + L.output_padding;
        if (out_len < 1 || out_len > kMaxLength) throw FormatError(where + " gives output length " + std::to_string(out_len));
        if (static_cast<std::int64_t>(out) * out_len > kMaxActivation) throw FormatError(where + " output is too large");
        const std::vector<float> w = tensors.take(wname, where + ".weight", {in, out, k});
        L.op = Op::ConvTranspose1d;
        L.out_ch = out;
        L.out_len = static_cast<int>(out_len);
        L.b = take_bias(out);
        // Split by stride phase (as XNNPACK does): tap t adds x[i] . W_t to output row
        // o = i*stride - padding + t, so output rows with (o + padding) % stride == p see only the
        // taps t = p, p + stride, ... (Q of them), and row o = j*stride - padding + p is
        // sum_q x[j - q] . W_{p + q*stride}. Over j that is a stride-1 convolution: one GEMM per
        // phase whose A rows are Q consecutive rows of the zero-padded input (B rows in order
        // q = Q-1 .. 0) writing every stride-th output row, with bias and activation in the
        // epilogue, instead of k accumulating GEMMs with K = in channels each.
        const int s = L.stride, plen = static_cast<int>(out_len);
        int lead = 0, last = len - 1;
        for (int p = 0; p < s; ++p) {
            Layer::Phase ph;
            ph.taps = p < k ? (k - 1 - p) / s + 1 : 0;
            ph.first = ((p - L.padding) % s + s) % s;
            ph.rows = ph.first < plen ? (plen - 1 - ph.first) / s + 1 : 0;
            if (ph.rows == 0) continue;
            const int j0 = (ph.first + L.padding - p) / s;  // input row of tap p for output row `first`
            ph.start = j0 - (ph.taps - 1);  // relative to input row 0; shifted by `lead` below
            if (ph.taps > 0) {
                lead = std::max(lead, -ph.start);
                last = std::max(last, j0 + ph.rows - 1);
            }
            ph.offset = L.w.size();
            std::vector<float> b(static_cast<std::size_t>(ph.taps) * in * out);
            for (int r = 0; r < ph.taps; ++r) {
                const int t = p + (ph.taps - 1 - r) * s;
                for (int c = 0; c < in; ++c)
                    for (int o = 0; o < out; ++o)
                        b[(static_cast<std::size_t>(r) * in + c) * out + o] = w[(static_cast<std::size_t>(c) * out + o) * K + t];
            }
            std::vector<float> packed = pack_b(ph.taps * in, out, b.data(), out);
            keep(packed);
            L.w.insert(L.w.end(), packed.begin(), packed.end());
            L.phases.push_back(ph);
        }
        for (Layer::Phase& ph : L.phases) ph.start = ph.taps > 0 ? ph.start + lead : 0;
        L.lead = lead;
        L.pad_floats = static_cast<std::size_t>(lead + last + 1) * in;
    }
    // GEMM strides (stride x channels, kernel x channels) are ints: keep them far from overflow.
    const std::int64_t widest = std::max(L.in_ch, L.out_ch);
    if (widest * std::max(L.stride, L.kernel) > (std::int64_t(1) << 30)) throw FormatError(where + " is too large");
    ch = L.out_ch;
    len = L.out_len;
    return L;
}

/// Reads the whole file `name` in the directory `dir_fd`, at most `limit` bytes; never trusts
/// the size the file system reports. Returns false when the file does not exist.
bool read_file_at(int dir_fd, const std::string& dir, const char* name, std::uint64_t limit, std::vector<char>& data) {
    const int fd = ::openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return false;
        throw FormatError(std::string("cannot open ") + name + " at " + dir + ": " + std::strerror(errno));
    }
    data.clear();
    char buf[1 << 16];
    for (;;) {
        const ssize_t got = ::read(fd, buf, sizeof buf);
        if (got < 0) {
            if (errno == EINTR) continue;
            const int err = errno;
            ::close(fd);
            throw FormatError(std::string("cannot read ") + name + " at " + dir + ": " + std::strerror(err));
        }
        if (got == 0) break;
        data.insert(data.end(), buf, buf + got);
        if (data.size() > limit) {
            ::close(fd);
            throw FormatError(std::string(name) + " is larger than the limit of " + mib(limit));
        }
    }
    ::close(fd);
    return true;
}

bool is_hex_id(const std::string& s) {
    if (s.size() != 16) return false;
    for (char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

}  // namespace

std::string bundle_id(const std::string& config_json, const Json& parsed, const std::uint8_t* tensors,
                      std::size_t tensors_size) {
    if (!parsed.is_object()) throw FormatError("config.json must be a JSON object");
    const Json* id = parsed.find("model_id");
    if (!id || !id->is_string()) throw FormatError("config.json has no string 'model_id'");
    // The id's own value is blanked, so the id can live inside what it hashes; so is the
    // creation time, so the same data and seed give the same id.
    std::vector<const Json*> blank{id};
    const Json* created = parsed.find("created_at");
    if (created && created->is_string()) blank.push_back(created);
    std::sort(blank.begin(), blank.end(), [](const Json* a, const Json* b) { return a->begin() < b->begin(); });
    std::string blanked;
    std::size_t at = 0;
    for (const Json* v : blank) {
        blanked.append(config_json, at, v->begin() - at);
        blanked += "\"\"";
        at = v->end();
    }
    blanked.append(config_json, at, std::string::npos);
    std::uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(blanked.size()) >> (8 * i));
    Sha256 h;
    h.update(len, 8);
    h.update(blanked.data(), blanked.size());
    if (tensors_size) h.update(tensors, tensors_size);
    return h.hexdigest().substr(0, 16);
}

std::string bundle_id(const std::string& config_json, const std::uint8_t* tensors, std::size_t tensors_size) {
    return bundle_id(config_json, Json::parse(config_json), tensors, tensors_size);
}

namespace {

/// Norms and the packed similarity operand of M.m (at load, and again after set_memory).
void pack_memory(Memory& M) {
    std::vector<float> mt(M.m.size());
    M.inv_norm.resize(static_cast<std::size_t>(M.slots));
    for (int i = 0; i < M.slots; ++i) {
        double ss = 0.0;
        for (int c = 0; c < M.dim; ++c) {
            const float v = M.m[static_cast<std::size_t>(i) * M.dim + c];
            mt[static_cast<std::size_t>(c) * M.slots + i] = v;
            ss += static_cast<double>(v) * v;
        }
        M.inv_norm[static_cast<std::size_t>(i)] = static_cast<float>(1.0 / std::max(std::sqrt(ss), 1e-12));
    }
    if (M.cosine) {  // fold 1/|m_i| into the similarity operand: the GEMM then yields z . m_i/|m_i|
        for (int c = 0; c < M.dim; ++c)
            for (int i = 0; i < M.slots; ++i) mt[static_cast<std::size_t>(c) * M.slots + i] *= M.inv_norm[static_cast<std::size_t>(i)];
    }
    M.mt = pack_b(M.dim, M.slots, mt.data(), M.slots);
}

}  // namespace

void Model::set_memory(const float* m, std::size_t n) {
    if (!has_memory_) throw std::invalid_argument("this model has no memory module");
    if (n != memory_.m.size()) {
        throw std::invalid_argument("memory must have " + std::to_string(memory_.slots) + " x " +
                                    std::to_string(memory_.dim) + " values, got " + std::to_string(n));
    }
    for (std::size_t i = 0; i < n; ++i) {
        if (!std::isfinite(m[i])) throw std::invalid_argument("memory contains NaN or Inf");
    }
    memory_.m.assign(m, m + n);
    pack_memory(memory_);
}

void Model::set_precision(const std::string& precision) {
    if (precision != "fp32" && precision != "bf16") {
        throw std::invalid_argument("precision must be 'fp32' or 'bf16', got '" + printable(precision) + "'");
    }
    const bool want = precision == "bf16";
    if (want && !bf16_supported()) {
        throw std::invalid_argument("precision 'bf16' needs a CPU with AVX512_BF16 (this one has none); use 'fp32'");
    }
    bool any = false;
    for (std::vector<Layer>* part : {&encoder_, &decoder_}) {
        for (Layer& L : *part) {
            if (L.op != Op::Conv1d && L.op != Op::ConvTranspose1d) continue;
            any = true;
            L.w16.clear();
            if (!want) continue;
            if (L.op == Op::Conv1d) {
                L.w16 = pack_b_bf16(L.kernel * L.in_ch, L.out_ch, L.w.data());
                continue;
            }
            for (Layer::Phase& ph : L.phases) {
                ph.offset16 = L.w16.size();
                const std::vector<std::uint16_t> p = pack_b_bf16(ph.taps * L.in_ch, L.out_ch, L.w.data() + ph.offset);
                L.w16.insert(L.w16.end(), p.begin(), p.end());
            }
            if (L.w16.empty()) L.w16.push_back(0);  // every phase without taps: still the bf16 path
        }
    }
    if (want && !any) {
        throw std::invalid_argument("precision 'bf16' applies to convolutions, and this " + kind_ +
                                    " model has none; use 'fp32'");
    }
    bf16_ = want;
}

const char* Model::reduction_name() const {
    switch (reduction_) {
        case Reduction::Max: return "max";
        case Reduction::LastRows: return "last_rows";
        default: return "mean";
    }
}

Model Model::load_dir(const std::string& dir) {
    // Both files through one handle on the directory: a bundle replaced by a rename while it is
    // read gives both files of the old bundle or both of the new. The old directory may be
    // deleted meanwhile (a missing file after the first): then read the new one.
    std::vector<char> config, tensors;
    const char* missing = "config.json";
    for (int attempt = 0; attempt < 3; ++attempt) {
        const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0) throw FormatError("cannot open the bundle directory " + dir + ": " + std::strerror(errno));
        bool ok = false;
        try {
            ok = read_file_at(dir_fd, dir, "config.json", kMaxConfigBytes, config);
            if (!ok) missing = "config.json";
            ok = ok && read_file_at(dir_fd, dir, "model.safetensors", kMaxWeightsBytes, tensors);
            if (!ok && !config.empty()) missing = "model.safetensors";
        } catch (...) {
            ::close(dir_fd);
            throw;
        }
        ::close(dir_fd);
        if (ok) {
            return load_bytes(std::string(config.begin(), config.end()),
                              reinterpret_cast<const std::uint8_t*>(tensors.data()), tensors.size());
        }
    }
    throw FormatError(std::string("cannot open ") + missing + " at " + dir + ": no such file");
}

Model Model::load_bytes(const std::string& config_json, const std::uint8_t* tensor_bytes,
                        std::size_t tensors_size) {
    if (config_json.size() > kMaxConfigBytes) throw FormatError("config.json is larger than the limit of " + mib(kMaxConfigBytes));
    if (tensors_size > kMaxWeightsBytes) throw FormatError("model.safetensors is larger than the limit of " + mib(kMaxWeightsBytes));
    const Json cfg = Json::parse(config_json);
    if (!cfg.is_object()) throw FormatError("config.json must be a JSON object");
    const std::string fmt = cfg.at("format", "config.json").string("config.json format");
    if (fmt != "memae-ts-bundle") throw FormatError("config.json format is '" + printable(fmt) + "', expected 'memae-ts-bundle'");
    const std::int64_t version = cfg.at("format_version", "config.json").integer("config.json format_version", 1, INT32_MAX);
    if (version > kMaxFormatVersion) {
        throw FormatError("bundle format_version " + std::to_string(version) +
                          " is newer than this runtime supports (" + std::to_string(kMaxFormatVersion) +
                          "): upgrade memae-ts to load it");
    }
    if (version < kFormatVersion) {
        throw FormatError("bundle format_version " + std::to_string(version) +
                          " has no integrity id; convert it with 'memae-ts upgrade MODEL' (it checks the old id)");
    }
    // Structure of the weights file first (a truncated copy says so), then the integrity id
    // (a mixed or edited bundle says so), then everything the id does not prove sane.
    const std::map<std::string, Tensor> tmap = parse_safetensors(tensor_bytes, tensors_size);
    Model m;
    const std::string stored = cfg.at("model_id", "config.json").string("config.json model_id");
    m.model_id_ = bundle_id(config_json, cfg, tensor_bytes, tensors_size);
    if (stored != m.model_id_) {
        throw FormatError("config.json and model.safetensors do not belong together: config.json names model " +
                          (is_hex_id(stored) ? stored : "'" + printable(stored) + "'") + ", the two files hash to " +
                          m.model_id_ + " (half-copied, mixed or edited bundle; copy the whole bundle again)");
    }
    std::set<std::string> seen;
    for (const Json& s : cfg.at("sensors", "config.json").items("config.json sensors")) {
        const std::string& name = s.string("config.json sensors[]");
        if (name.empty()) throw FormatError("config.json sensors has an empty name");
        if (!seen.insert(name).second) throw FormatError("config.json sensors lists '" + printable(name) + "' twice");
        m.sensors_.push_back(name);
        if (m.sensors_.size() > static_cast<std::size_t>(kMaxSensors)) {
            throw FormatError("config.json sensors lists more than " + std::to_string(kMaxSensors) + " names");
        }
    }
    m.n_sensors_ = static_cast<int>(m.sensors_.size());
    if (m.n_sensors_ < 1) throw FormatError("config.json sensors must list at least one name");
    m.window_ = static_cast<int>(cfg.at("window", "config.json").integer("config.json window", 1, kMaxWindow));
    if (static_cast<std::int64_t>(m.window_) * m.n_sensors_ > kMaxInput) {
        throw FormatError("window x sensors is " + std::to_string(static_cast<std::int64_t>(m.window_) * m.n_sensors_) +
                          ", over the limit of " + std::to_string(kMaxInput));
    }

    const Json& scaler = cfg.at("scaler", "config.json");
    // The runtime needs only center and scale, but refuses what the Python reader refuses.
    const std::string& scaler_kind = scaler.at("kind", "scaler").string("scaler.kind");
    if (scaler_kind != "standard" && scaler_kind != "robust") {
        throw FormatError("scaler.kind must be 'standard' or 'robust', got '" + printable(scaler_kind) + "'");
    }
    const auto& center = scaler.at("center", "scaler").items("scaler.center");
    const auto& scale = scaler.at("scale", "scaler").items("scaler.scale");
    if (center.size() != m.sensors_.size() || scale.size() != m.sensors_.size()) {
        throw FormatError("scaler center/scale must have one value per sensor (" + std::to_string(m.n_sensors_) + ")");
    }
    for (std::size_t i = 0; i < center.size(); ++i) {
        const std::string at = "[" + std::to_string(i) + "]";
        const double c = center[i].number("scaler.center" + at);
        if (!(std::fabs(c) <= kMaxAbsCenter)) throw FormatError("scaler.center" + at + " is beyond +-1e15");
        const double s = scale[i].number("scaler.scale" + at);
        if (!(s >= kMinScale && s <= kMaxScale)) {
            throw FormatError("scaler.scale" + at + " is " + Json::format(s) + ", outside [1e-12, 1e12]");
        }
        m.center_.push_back(c);
        m.scale_.push_back(s);
        m.inv_scale_.push_back(1.0 / s);  // in double: identical to dividing once rounded to float
    }
    m.threshold_ = req_number(cfg.at("threshold", "config.json"), "value", "threshold", kMinThreshold, kMaxThreshold);
    // "scoring": how squared errors become the score (docs/bundle-format.md). Absent or `mean`
    // in a format-2 bundle; any other reduction only in format 3, so that a runtime from before
    // it existed refuses the bundle instead of scoring it silently as `mean`.
    if (const Json* scoring = cfg.find("scoring"); scoring && !scoring->is_null()) {
        const std::string& kind = scoring->at("reduction", "scoring").string("config.json scoring.reduction");
        if (kind == "mean") {
            m.reduction_ = Reduction::Mean;
        } else if (kind == "max") {
            m.reduction_ = Reduction::Max;
        } else if (kind == "last_rows") {
            m.reduction_ = Reduction::LastRows;
        } else {
            throw FormatError("config.json scoring.reduction must be 'mean', 'max' or 'last_rows', got '" +
                              printable(kind) + "'");
        }
        if (m.reduction_ != Reduction::Mean && version < 3) {
            throw FormatError("config.json scoring.reduction '" + kind + "' needs format_version 3, the bundle says " +
                              std::to_string(version));
        }
        if (m.reduction_ == Reduction::LastRows) {
            m.half_life_rows_ = req_number(*scoring, "half_life_rows", "scoring", 0.01, 1e6);
            std::vector<double> w(static_cast<std::size_t>(m.window_));
            double sum = 0.0;
            for (int r = 0; r < m.window_; ++r) {
                w[static_cast<std::size_t>(r)] = std::pow(0.5, (m.window_ - 1 - r) / m.half_life_rows_);
                sum += w[static_cast<std::size_t>(r)];
            }
            for (double v : w) m.row_weights_.push_back(static_cast<float>(v / sum));
        }
    }

    const Builder tensors(tmap);
    const Json& net = cfg.at("network", "config.json");
    m.kind_ = net.at("kind", "network").string("network.kind");
    if (m.kind_ != "conv" && m.kind_ != "mlp") throw FormatError("network.kind '" + printable(m.kind_) + "' is not 'conv' or 'mlp'");
    const bool conv = m.kind_ == "conv";
    if (net.at("window", "network").integer("network.window", 1, kMaxWindow) != m.window_ ||
        net.at("n_sensors", "network").integer("network.n_sensors", 1, kMaxSensors) != m.n_sensors_) {
        throw FormatError("network window/n_sensors disagree with config.json window/sensors");
    }
    int ch = conv ? m.n_sensors_ : m.window_ * m.n_sensors_;
    int len = conv ? m.window_ : 1;
    m.max_act_ = static_cast<std::size_t>(m.window_) * m.n_sensors_;
    std::uint64_t model_bytes = 0;
    const auto& enc = net.at("encoder", "network").items("network.encoder");
    const auto& dec = net.at("decoder", "network").items("network.decoder");
    for (const auto* part : {&enc, &dec}) {
        if (part->empty() || part->size() > static_cast<std::size_t>(kMaxLayers)) {
            throw FormatError("network encoder and decoder must each have 1 to " + std::to_string(kMaxLayers) + " layers");
        }
    }
    for (std::size_t i = 0; i < enc.size(); ++i) {
        m.encoder_.push_back(build_layer(enc[i], "encoder[" + std::to_string(i) + "]", conv, ch, len, tensors, model_bytes));
        m.max_act_ = std::max(m.max_act_, static_cast<std::size_t>(ch) * len);
    }
    m.latent_len_ = len;
    m.latent_dim_ = ch;
    const Json& mem = net.at("memory", "network");
    if (!mem.is_null()) {
        Memory& M = m.memory_;
        const std::string w = "network.memory";
        M.slots = req_int(mem, "slots", w, 1, kMaxSlots);
        M.dim = req_int(mem, "dim", w, 1, kMaxFeatures);
        if (M.dim != ch) {
            throw FormatError("memory dim " + std::to_string(M.dim) + " does not match the encoder output (" +
                              std::to_string(ch) + ")");
        }
        if (static_cast<std::int64_t>(M.slots) * M.dim > kMaxMemoryFloats) throw FormatError(w + " slots x dim is too large");
        const std::string addressing = mem.at("addressing", w).string(w + ".addressing");
        if (addressing != "cosine" && addressing != "dot") throw FormatError(w + ".addressing must be 'cosine' or 'dot'");
        M.cosine = addressing == "cosine";
        M.temperature = static_cast<float>(req_number(mem, "temperature", w, kMinTemperature, kMaxTemperature));
        const double shrink = req_number(mem, "shrink_threshold", w, 0.0, 1.0);
        if (shrink >= 1.0) throw FormatError(w + ".shrink_threshold must be below 1");
        // A positive threshold below float's smallest normal would round to 0 and turn the
        // shrinkage off, where the double reference keeps it on (w^2 / (w + eps) as lambda -> 0;
        // the differential fuzz test found 1e-300): keep it on, at the smallest normal.
        M.shrink = shrink > 0.0 ? std::max(static_cast<float>(shrink), std::numeric_limits<float>::min()) : 0.0f;
        M.epsilon = static_cast<float>(req_number(mem, "epsilon", w, 0.0, 1.0));
        M.m = tensors.take(mem.at("weight", w), w + ".weight", {M.slots, M.dim});
        pack_memory(M);
        model_bytes += (M.mt.size() + M.m.size() + M.inv_norm.size()) * sizeof(float);
        if (model_bytes > kMaxModelBytes) throw FormatError(w + ": the re-laid weights exceed the limit of " + mib(kMaxModelBytes));
        m.has_memory_ = true;
    }
    for (std::size_t i = 0; i < dec.size(); ++i) {
        m.decoder_.push_back(build_layer(dec[i], "decoder[" + std::to_string(i) + "]", conv, ch, len, tensors, model_bytes));
        m.max_act_ = std::max(m.max_act_, static_cast<std::size_t>(ch) * len);
    }
    const bool shape_ok = conv ? (ch == m.n_sensors_ && len == m.window_) : (ch == m.window_ * m.n_sensors_);
    if (!shape_ok) {
        throw FormatError("decoder output (" + std::to_string(ch) + " x " + std::to_string(len) +
                          ") does not match the window (" + std::to_string(m.window_) + " x " +
                          std::to_string(m.n_sensors_) + ")");
    }
    // Per-call scratch is bounded: the most windows per pass that fit the cap, and a model whose
    // single window does not fit is refused here rather than allocating at scoring time.
    const std::uint64_t one = m.scratch_bytes(1);
    if (one > kMaxScratchBytes) {
        throw FormatError("scoring one window would need " + mib(one) + " of scratch memory per thread, over the limit of " +
                          mib(kMaxScratchBytes));
    }
    m.chunk_ = 1;
    while (m.chunk_ < kChunk && m.scratch_bytes(m.chunk_ + 1) <= kMaxScratchBytes) ++m.chunk_;
    m.kernels_ = &select_kernels();
    return m;
}

std::uint64_t Model::scratch_bytes(int chunk) const {
    const std::uint64_t c = static_cast<std::uint64_t>(chunk);
    const std::uint64_t per = static_cast<std::uint64_t>(window_) * n_sensors_;
    const std::uint64_t latent = static_cast<std::uint64_t>(latent_len_) * latent_dim_;
    const bool per_window = kind_ == "conv";
    std::uint64_t pad = 0;
    for (const auto* layers : {&encoder_, &decoder_}) {
        for (const Layer& L : *layers) {
            pad = std::max<std::uint64_t>(pad, L.pad_floats);
        }
    }
    std::uint64_t sims = 0, val = 0;
    if (has_memory_) {
        // kQueryBlock: the most any table's query_block asks (a model may change tables).
        sims = std::min<std::uint64_t>(kQueryBlock, c * latent_len_) * memory_.slots;
        val = static_cast<std::uint64_t>(memory_.slots) + kSelectSlack;
    }
    const std::uint64_t floats = per * c + 2 * max_act_ * (per_window ? 1 : c) + pad + latent * c + sims + val + 7 * kAlign;
    return 4 * (floats + val + kSelectSlack) + 4 * static_cast<std::uint64_t>(n_sensors_);
}

namespace {

/// A view into the per-call scratch block.
template <typename T>
struct Span {
    T* p = nullptr;
    T* data() { return p; }
    T& operator[](std::size_t i) { return p[i]; }
};

/// Per-call buffers, carved from one allocation. Uninitialised on purpose: every element is
/// written before it is read, and zeroing ~100 KB per call would cost as much as a small batch.
/// With MEMAE_CHECKED_SCRATCH (AddressSanitizer builds) every buffer, and every layer output of
/// a forward pass, is instead an allocation of exactly its size.
struct Scratch {
    std::unique_ptr<float[]> block;
    std::unique_ptr<std::int32_t[]> indices;
    Span<float> xs, a, b, pad, z, sims, val;
    Span<std::int32_t> idx;
#if defined(MEMAE_CHECKED_SCRATCH)
    std::vector<std::unique_ptr<float[]>> parts;
    std::vector<std::unique_ptr<float[]>> layer_outs;  // the current forward pass
#endif

    void allocate(std::size_t n_xs, std::size_t n_act, std::size_t n_pad, std::size_t n_z, std::size_t n_sims,
                  std::size_t n_val) {
        const std::pair<Span<float>*, std::size_t> spans[] = {{&xs, n_xs}, {&a, n_act}, {&b, n_act}, {&pad, n_pad},
                                                              {&z, n_z},   {&sims, n_sims}, {&val, n_val}};
#if defined(MEMAE_CHECKED_SCRATCH)
        for (const auto& [span, n] : spans) {
            parts.emplace_back(new float[n]);
            span->p = parts.back().get();
        }
#else
        auto up = [](std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; };
        std::size_t total = 0;
        for (const auto& sp : spans) total += up(sp.second);
        block.reset(new float[total]);
        float* p = block.get();
        for (const auto& [span, n] : spans) {
            span->p = p;
            p += up(n);
        }
#endif
        indices.reset(new std::int32_t[n_val + kSelectSlack]);
        idx.p = indices.get();
    }

    /// Starts a forward pass (checked builds free the previous pass's layer outputs).
    void begin_pass() {
#if defined(MEMAE_CHECKED_SCRATCH)
        layer_outs.clear();
#endif
    }

    /// Where a layer writes its n floats: `buf` (one of the two activation buffers), or in
    /// checked builds a new allocation of exactly n floats.
    float* layer_out(float* buf, std::size_t n) {
#if defined(MEMAE_CHECKED_SCRATCH)
        (void)buf;
        layer_outs.emplace_back(new float[n]);
        return layer_outs.back().get();
#else
        (void)n;
        return buf;
#endif
    }
};

bool is_activation(Op op) { return op == Op::Relu || op == Op::LeakyRelu || op == Op::Tanh; }

void apply_activation(const Layer& L, const KernelTable& k, float* x, std::size_t n) {
    switch (L.op) {
        case Op::Relu: k.leaky_relu(x, static_cast<int>(n), 0.0f); break;
        case Op::LeakyRelu: k.leaky_relu(x, static_cast<int>(n), L.slope); break;
        case Op::Tanh: k.tanh(x, static_cast<int>(n)); break;
        default: break;
    }
}

/// The GEMM epilogue (kernels.h, Act) that computes activation layer `a` (none when null).
std::pair<int, float> epilogue_of(const Layer* a) {
    if (!a) return {kActNone, 0.0f};
    if (a->op == Op::Tanh) return {kActTanh, 0.0f};
    return {kActLeaky, a->op == Op::Relu ? 0.0f : a->slope};
}

/// One layer for `nb` samples, channels-last (length, channels) per sample, from `in` to `out`;
/// `act` (an activation layer, or null) runs in the GEMM epilogue.
void apply_layer(const Layer& L, const KernelTable& k, int nb, const float* in, float* out, Scratch& s,
                 const Layer* act) {
    const std::size_t in_sz = static_cast<std::size_t>(L.in_ch) * L.in_len;
    const std::size_t out_sz = static_cast<std::size_t>(L.out_ch) * L.out_len;
    const auto [ep, slope] = epilogue_of(act);
    switch (L.op) {
        case Op::Linear:
            k.gemm_act(nb, L.out_ch, L.in_ch, in, L.in_ch, L.w.data(), out, L.out_ch, L.b.data(), false, ep, slope);
            return;
        case Op::Conv1d:
            for (int n = 0; n < nb; ++n) {
                const float* x = in + n * in_sz;
                if (L.padding > 0) {
                    // Zero-padded copy, so every output position reads one contiguous A row.
                    const std::size_t off = static_cast<std::size_t>(L.padding) * L.in_ch;
                    float* pad = s.pad.data();
                    std::fill(pad, pad + off, 0.0f);
                    std::copy(x, x + in_sz, pad + off);
                    std::fill(pad + off + in_sz, pad + 2 * off + in_sz, 0.0f);
                    x = pad;
                }
                if (!L.w16.empty()) {  // bf16 precision: activation as a pass of its own
                    gemm_bf16(L.out_len, L.out_ch, L.kernel * L.in_ch, x, L.stride * L.in_ch, L.w16.data(),
                              out + n * out_sz, L.out_ch, L.b.data());
                    if (act) apply_activation(*act, k, out + n * out_sz, out_sz);
                    continue;
                }
                float* y = out + n * out_sz;
                int done = 0;
                if (!L.w2.empty() && k.lanes >= 2 * L.out_ch) {
                    // Output rows 2u, 2u+1 as GEMM row u (Layer::w2): reads padded rows 2u ..
                    // 2u + kernel, inside the input; an odd last row runs below as usual.
                    const int pairs = L.out_len / 2;
                    k.gemm_act(pairs, 2 * L.out_ch, (L.kernel + 1) * L.in_ch, x, 2 * L.in_ch, L.w2.data(), y,
                               2 * L.out_ch, L.b2.data(), false, ep, slope);
                    done = 2 * pairs;
                }
                if (done < L.out_len) {
                    k.gemm_act(L.out_len - done, L.out_ch, L.kernel * L.in_ch, x + static_cast<std::size_t>(done) * L.stride * L.in_ch,
                               L.stride * L.in_ch, L.w.data(), y + static_cast<std::size_t>(done) * L.out_ch, L.out_ch,
                               L.b.data(), false, ep, slope);
                }
            }
            return;
        case Op::ConvTranspose1d:
            for (int n = 0; n < nb; ++n) {
                // Zero-padded copy of the input (L.lead rows before, enough after for every
                // phase), then one GEMM per stride phase into every stride-th output row.
                float* pad = s.pad.data();
                const std::size_t off = static_cast<std::size_t>(L.lead) * L.in_ch;
                std::fill(pad, pad + off, 0.0f);
                std::copy(in + n * in_sz, in + (n + 1) * in_sz, pad + off);
                std::fill(pad + off + in_sz, pad + L.pad_floats, 0.0f);
                float* y = out + n * out_sz;
                if (!L.w16.empty()) {  // bf16 precision: every output row is written, then activated
                    for (const Layer::Phase& ph : L.phases) {
                        gemm_bf16(ph.rows, L.out_ch, ph.taps * L.in_ch, pad + static_cast<std::size_t>(ph.start) * L.in_ch,
                                  L.in_ch, L.w16.data() + ph.offset16, y + static_cast<std::size_t>(ph.first) * L.out_ch,
                                  L.stride * L.out_ch, L.b.data());
                    }
                    if (act) apply_activation(*act, k, y, out_sz);
                    continue;
                }
                for (const Layer::Phase& ph : L.phases) {
                    // taps == 0 (kernel < stride): K = 0, the rows are bias and activation only.
                    k.gemm_act(ph.rows, L.out_ch, ph.taps * L.in_ch, pad + static_cast<std::size_t>(ph.start) * L.in_ch,
                               L.in_ch, L.w.data() + ph.offset, y + static_cast<std::size_t>(ph.first) * L.out_ch,
                               L.stride * L.out_ch, L.b.data(), false, ep, slope);
                }
            }
            return;
        default:  // activations run in place (see run_chunks)
            return;
    }
}

/// Runs `layers` on nb samples read from `in` (never written), alternating between buf0 and
/// buf1; returns where the output is (`in` itself when no layer writes). An activation right
/// after a GEMM layer runs in that GEMM's epilogue: one pass over the output instead of two.
const float* forward(const std::vector<Layer>& layers, const KernelTable& k, int nb, const float* in, float* buf0,
                     float* buf1, Scratch& s) {
    s.begin_pass();
    const float* cur = in;
    float* nxt = buf0;
    float* other = buf1;
    for (std::size_t li = 0; li < layers.size(); ++li) {
        const Layer& L = layers[li];
        const std::size_t n = static_cast<std::size_t>(nb) * L.out_ch * L.out_len;
        if (is_activation(L.op)) {
            if (cur != in) {  // in place on our own buffer
                apply_activation(L, k, const_cast<float*>(cur), n);
                continue;
            }
            float* dst = s.layer_out(nxt, n);
            std::copy(cur, cur + n, dst);
            apply_activation(L, k, dst, n);
            cur = dst;
            std::swap(nxt, other);
            continue;
        }
        const Layer* act = li + 1 < layers.size() && is_activation(layers[li + 1].op) ? &layers[li + 1] : nullptr;
        float* dst = s.layer_out(nxt, n);
        apply_layer(L, k, nb, cur, dst, s, act);
        if (act) ++li;
        cur = dst;
        std::swap(nxt, other);
    }
    return cur;
}

}  // namespace

void Model::run(const float* windows, int batch, const Outputs& out, int threads) const {
    if (batch < 0) throw std::invalid_argument("batch must not be negative");
    const std::size_t per = static_cast<std::size_t>(window_) * n_sensors_;
    const std::size_t total = per * static_cast<std::size_t>(batch);
    // NaN/Inf have an all-ones exponent; an integer OR over the bits vectorises, unlike a branch
    // per value. Only when it fires do we look for the first bad value to name it.
    std::uint32_t bad = 0;
    for (std::size_t i = 0; i < total; ++i) {
        std::uint32_t bits;
        std::memcpy(&bits, windows + i, sizeof bits);
        bad |= static_cast<std::uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (bad) {
        for (std::size_t i = 0; i < total; ++i) {
            if (!std::isfinite(windows[i])) {
                throw std::invalid_argument("windows contain NaN or Inf (window " + std::to_string(i / per) + ", row " +
                                            std::to_string((i % per) / n_sensors_) + ", sensor " +
                                            std::to_string(i % n_sensors_) + "); fill or drop missing values first");
            }
        }
    }
    threads = std::max(1, std::min(threads, batch / chunk_));
    if (out.stage_seconds) threads = 1;  // one set of stage clocks
    // Workers take chunks from a shared counter, so a thread that the OS delays simply takes
    // fewer chunks. Results do not depend on who computes which chunk: windows are independent.
    std::atomic<int> next{0};
    if (threads == 1) {
        run_chunks(windows, batch, out, next);
        return;
    }
    std::vector<std::thread> pool;
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(threads));
    for (int t = 0; t < threads; ++t) {
        auto work = [&, t]() {
            try {
                run_chunks(windows, batch, out, next);
            } catch (...) {
                errors[static_cast<std::size_t>(t)] = std::current_exception();
                next.store(batch);  // stop the others early
            }
        };
        if (t + 1 == threads) work();
        else pool.emplace_back(work);
    }
    for (auto& th : pool) th.join();
    for (auto& e : errors) {
        if (e) std::rethrow_exception(e);
    }
}

void Model::run_chunks(const float* windows, int batch, const Outputs& out, std::atomic<int>& next) const {
    const KernelTable& k = *kernels_;
    const int S = n_sensors_, Wn = window_;
    const std::size_t per = static_cast<std::size_t>(Wn) * S;
    const std::size_t latent = static_cast<std::size_t>(latent_len_) * latent_dim_;
    // Convolutions run one window at a time so its activations stay in L1; linear layers run on
    // the whole chunk so each weight matrix is streamed once per chunk. The memory module always
    // addresses all of the chunk's latent rows together.
    const bool per_window = kind_ == "conv";
    Scratch s;
    std::size_t pad = 0;
    for (const auto* layers : {&encoder_, &decoder_}) {
        for (const Layer& L : *layers) {
            pad = std::max(pad, L.pad_floats);
        }
    }
    const int chunk = std::min(chunk_, std::max(1, batch));
    std::size_t sims = 0, slots = 0;
    if (has_memory_) {
        const int queries = std::min(query_block(memory_, k), chunk * latent_len_);  // 1 row for mlp at batch 1
        sims = static_cast<std::size_t>(queries) * memory_.slots;
        slots = static_cast<std::size_t>(memory_.slots);
    }
    s.allocate(per * chunk, max_act_ * (per_window ? 1 : chunk), pad, latent * chunk, sims, slots + kSelectSlack);
    std::vector<float> acc(static_cast<std::size_t>(S));
    std::vector<float> zq(out.novelty ? static_cast<std::size_t>(memory_.dim) : 0);  // z before the read
    // Profiling only: lap(i) adds the time since the previous lap to stage i (kStageNames).
    auto last = std::chrono::steady_clock::now();
    auto lap = [&](int stage) {
        if (!out.stage_seconds) return;
        const auto now = std::chrono::steady_clock::now();
        out.stage_seconds[stage] += std::chrono::duration<double>(now - last).count();
        last = now;
    };

    // Memory addressing of nq latent rows in place; `first` is the global index of row 0.
    auto address = [&](float* z, int nq, std::size_t first) {
        const Memory& M = memory_;
        // Cosine with T >= 1/40: softmax is shift-invariant and a cosine logit is at most 1/T
        // (memory row norms are folded into mt), so shift by 1/T instead of the row max, and with
        // T >= 1/40 every exponent stays above -2/T >= -80. Then the exponentials need no pass of
        // their own: sim_exp makes them, and their row sums, in the similarity GEMM's epilogue.
        const bool fused = fused_softmax(M);
        // Shrinkage keeps w > lambda only, so select those and work sparsely: the softmax keeps
        // only candidates (a superset: thr * Z less 2^-10 for rounding), and the exact test runs
        // on those few (filter_gt).
        const float thr = M.shrink > 0.0f ? M.shrink : -1.0f;
        // A latent row's logit scale: 1/T, and for cosine also 1/|z| (mt holds unit memory rows).
        auto logit_scale = [&](const float* zr) {
            if (!M.cosine) return 1.0f / M.temperature;
            const float norm = std::sqrt(k.dot(M.dim, zr, zr));
            return 1.0f / (std::max(norm, 1e-12f) * M.temperature);
        };
        float qscale[kQueryBlock], qsum[kQueryBlock];  // per query row of a block (sim_exp)
        const int block = query_block(M, k);
        for (int q0 = 0; q0 < nq; q0 += block) {
            const int qb = std::min(block, nq - q0);
            float* zb = z + static_cast<std::size_t>(q0) * M.dim;
            if (fused) {
                for (int r = 0; r < qb; ++r) qscale[r] = logit_scale(zb + static_cast<std::size_t>(r) * M.dim);
                k.sim_exp(qb, M.slots, M.dim, zb, M.dim, M.mt.data(), qscale, 1.0f / M.temperature, s.sims.data(),
                          M.slots, qsum);
            } else {
                k.gemm(qb, M.slots, M.dim, zb, M.dim, M.mt.data(), s.sims.data(), M.slots, nullptr, false);
            }
            lap(2);
            for (int r = 0; r < qb; ++r) {
                float* zr = z + static_cast<std::size_t>(q0 + r) * M.dim;
                float* row = s.sims.data() + static_cast<std::size_t>(r) * M.slots;
                float sum;
                int cnt;
                if (fused) {  // the selection and the exact test in one pass
                    sum = qsum[r];
                    cnt = k.select_weights(row, M.slots, sum, thr, s.idx.data(), s.val.data());
                    lap(3);
                } else {
                    const float mx = k.scale_max(row, M.slots, logit_scale(zr), nullptr);
                    cnt = k.exp_candidates(row, M.slots, 1.0f, mx, thr, s.idx.data(), s.val.data(), &sum);
                    lap(3);
                    cnt = k.filter_gt(cnt, s.idx.data(), s.val.data(), 1.0f / sum, thr);
                }
                lap(4);
                float* val = s.val.data();
                // Continuous hard shrinkage on the selected weights (all > lambda), then L1
                // renormalisation.
                k.shrink_normalise(cnt, val, M.shrink, M.epsilon);
                lap(5);
                if (out.novelty) std::copy(zr, zr + M.dim, zq.data());
                if (out.encoding) std::copy(zr, zr + M.dim, out.encoding + (first + static_cast<std::size_t>(q0 + r)) * M.dim);
                k.gather_rows(cnt, s.idx.data(), val, M.m.data(), M.dim, zr);
                lap(6);
                if (out.novelty) {  // 1 - cos(z, read-out), in double like the numpy reference
                    double zz = 0.0, rr = 0.0, zrd = 0.0;
                    for (int c = 0; c < M.dim; ++c) {
                        const double a = zq[static_cast<std::size_t>(c)], b = zr[c];
                        zz += a * a;
                        rr += b * b;
                        zrd += a * b;
                    }
                    const double denom = std::max(std::sqrt(zz), 1e-12) * std::max(std::sqrt(rr), 1e-12);
                    out.novelty[first + static_cast<std::size_t>(q0 + r)] = static_cast<float>(1.0 - zrd / denom);
                }
                if (out.attention) {
                    float* att = out.attention + (first + static_cast<std::size_t>(q0 + r)) * M.slots;
                    std::fill(att, att + M.slots, 0.0f);
                    for (int i = 0; i < cnt; ++i) att[s.idx[static_cast<std::size_t>(i)]] = val[i];
                }
            }
        }
    };

    // Reconstruction, contributions and score of window `g` (global index), reduced as the
    // bundle's "scoring" says: `mean` is the same arithmetic, bit for bit, as before it existed.
    const bool weighted = reduction_ == Reduction::LastRows;
    const bool worst = reduction_ == Reduction::Max;
    auto finish = [&](int g, const float* xs, const float* rec) {
        if (out.reconstruction) std::copy(rec, rec + per, out.reconstruction + per * g);
        if (!out.scores && !out.contributions) return;
        std::fill(acc.begin(), acc.end(), 0.0f);
        if (weighted) {
            k.wsq_err_cols(xs, rec, Wn, S, row_weights_.data(), acc.data());
        } else {
            k.sq_err_cols(xs, rec, Wn, S, acc.data());
        }
        double total = 0.0;
        float top = -std::numeric_limits<float>::infinity();
        for (int j = 0; j < S; ++j) {
            const float c = weighted ? acc[static_cast<std::size_t>(j)] : acc[static_cast<std::size_t>(j)] / static_cast<float>(Wn);
            if (out.contributions) out.contributions[static_cast<std::size_t>(g) * S + j] = c;
            total += c;
            top = std::max(top, c);
        }
        if (out.scores) out.scores[g] = worst ? top : static_cast<float>(total / S);
    };

    for (;;) {
        const int b0 = next.fetch_add(chunk);
        if (b0 >= batch) break;
        const int nb = std::min(chunk, batch - b0);
        lap(8);  // nothing is timed before the first chunk; between chunks this is the loop itself
        // Scaling in double, like the numpy reference: raw sensor values can carry large offsets.
        const float* raw = windows + per * b0;
        for (std::size_t r = 0; r < static_cast<std::size_t>(nb) * Wn; ++r) {
            const float* src = raw + r * S;
            float* dst = s.xs.data() + r * S;
            for (int j = 0; j < S; ++j) dst[j] = static_cast<float>((static_cast<double>(src[j]) - center_[j]) * inv_scale_[j]);
        }
        float* z = s.z.data();
        lap(0);
        if (per_window) {
            for (int n = 0; n < nb; ++n) {
                const float* h = forward(encoder_, k, 1, s.xs.data() + per * n, s.a.data(), s.b.data(), s);
                std::copy(h, h + latent, z + latent * n);
            }
        } else {
            const float* h = forward(encoder_, k, nb, s.xs.data(), s.a.data(), s.b.data(), s);
            std::copy(h, h + latent * nb, z);
        }
        lap(1);
        if (has_memory_) address(z, nb * latent_len_, static_cast<std::size_t>(b0) * latent_len_);
        if (per_window) {
            for (int n = 0; n < nb; ++n) {
                const float* rec = forward(decoder_, k, 1, z + latent * n, s.a.data(), s.b.data(), s);
                lap(7);
                finish(b0 + n, s.xs.data() + per * n, rec);
                lap(8);
            }
        } else {
            const float* rec = forward(decoder_, k, nb, z, s.a.data(), s.b.data(), s);
            lap(7);
            for (int n = 0; n < nb; ++n) finish(b0 + n, s.xs.data() + per * n, rec + per * n);
            lap(8);
        }
    }
}

}  // namespace memae
