// Arbitrary small graphs as bundles, with an independent double-precision forward pass.
//
// A GraphSpec names layers by op and size; build() walks the shapes, draws weights, appends a
// last layer that brings the output back to the window when needed, and writes config.json and
// model.safetensors exactly as docs/bundle-format.md says (integrity id included). reference()
// computes scores in channels-first double, the torch layout, with no shared code with the
// runtime. The transposed-convolution sweep, the structure-aware fuzz target and its seeds all
// use it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bundle_builder.h"

namespace memae::testing {

struct LayerSpec {
    std::string op;  // conv1d, conv_transpose1d, linear, relu, leaky_relu, tanh
    int out = 1;     // output channels (conv) or features (linear)
    int kernel = 1, stride = 1, padding = 0, output_padding = 0;
    double slope = 0.01;
};

struct GraphSpec {
    std::string kind = "conv";
    int window = 8, sensors = 2;
    std::vector<LayerSpec> encoder, decoder;
    bool memory = true;
    int slots = 5;
    std::string addressing = "cosine";
    double temperature = 0.1, shrink = 0.0;
    double epsilon = 1e-12;  // of the shrinkage; the trainer's 1e-12, or e.g. = shrink (a 0/0 in masked lanes)
    unsigned seed = 1;
    float weight_range = 0.5f;
};

struct BuiltLayer {
    LayerSpec spec;
    int in = 0, in_len = 1, out_len = 1;
    std::vector<double> w, b;  // torch layouts: conv1d (out,in,k), conv_transpose1d (in,out,k), linear (out,in)
};

struct Graph {
    GraphSpec spec;
    std::vector<BuiltLayer> encoder, decoder;
    int latent_dim = 0, latent_len = 1;
    std::vector<double> memory;  // (slots, latent_dim)
    std::vector<double> center, scale;
    std::string config;
    std::vector<std::uint8_t> tensors;
};

namespace detail {

inline std::string num(double v) { return Json::format(v); }

/// Output length of a conv layer on `len`, or nullopt when the layer does not fit.
inline std::optional<int> conv_len(const LayerSpec& L, int len) {
    if (L.op == "conv1d") {
        const long span = static_cast<long>(len) + 2L * L.padding - L.kernel;
        if (span < 0) return std::nullopt;
        return static_cast<int>(span / L.stride + 1);
    }
    if (L.padding > L.kernel - 1 || L.output_padding >= L.stride) return std::nullopt;
    const long out = (static_cast<long>(len) - 1) * L.stride - 2L * L.padding + L.kernel + L.output_padding;
    if (out < 1) return std::nullopt;
    return static_cast<int>(out);
}

/// The conv1d (stride 1) that turns length `len` into `want`.
inline LayerSpec fit_length(int len, int want, int out) {
    LayerSpec L{"conv1d", out};
    L.padding = want > len ? (want - len + 1) / 2 : 0;
    L.kernel = len + 2 * L.padding - want + 1;
    return L;
}

inline bool is_act(const std::string& op) { return op == "relu" || op == "leaky_relu" || op == "tanh"; }

inline void apply(const BuiltLayer& L, bool conv, std::vector<double>& h) {  // h: channels-first (in, in_len)
    const LayerSpec& s = L.spec;
    if (s.op == "relu") {
        for (double& v : h) v = std::max(v, 0.0);
        return;
    }
    if (s.op == "leaky_relu") {
        for (double& v : h) v = v >= 0 ? v : s.slope * v;
        return;
    }
    if (s.op == "tanh") {
        for (double& v : h) v = std::tanh(v);
        return;
    }
    std::vector<double> y(static_cast<std::size_t>(s.out) * L.out_len);
    if (s.op == "linear" || !conv) {
        for (int o = 0; o < s.out; ++o) {
            double acc = L.b[o];
            for (int i = 0; i < L.in; ++i) acc += L.w[static_cast<std::size_t>(o) * L.in + i] * h[i];
            y[o] = acc;
        }
    } else if (s.op == "conv1d") {
        for (int o = 0; o < s.out; ++o)
            for (int t = 0; t < L.out_len; ++t) {
                double acc = L.b[o];
                for (int c = 0; c < L.in; ++c)
                    for (int k = 0; k < s.kernel; ++k) {
                        const int pos = t * s.stride - s.padding + k;
                        if (pos >= 0 && pos < L.in_len)
                            acc += L.w[(static_cast<std::size_t>(o) * L.in + c) * s.kernel + k] * h[static_cast<std::size_t>(c) * L.in_len + pos];
                    }
                y[static_cast<std::size_t>(o) * L.out_len + t] = acc;
            }
    } else {  // conv_transpose1d: input t scatters into output t*stride - padding + k
        for (int o = 0; o < s.out; ++o)
            for (int p = 0; p < L.out_len; ++p) y[static_cast<std::size_t>(o) * L.out_len + p] = L.b[o];
        for (int c = 0; c < L.in; ++c)
            for (int t = 0; t < L.in_len; ++t)
                for (int o = 0; o < s.out; ++o)
                    for (int k = 0; k < s.kernel; ++k) {
                        const int pos = t * s.stride - s.padding + k;
                        if (pos >= 0 && pos < L.out_len)
                            y[static_cast<std::size_t>(o) * L.out_len + pos] +=
                                h[static_cast<std::size_t>(c) * L.in_len + t] * L.w[(static_cast<std::size_t>(c) * s.out + o) * s.kernel + k];
                    }
    }
    h.swap(y);
}

}  // namespace detail

/// Builds the bundle of `spec`, or nullopt when a layer does not fit its input.
inline std::optional<Graph> build(const GraphSpec& spec) {
    Graph g;
    g.spec = spec;
    const bool conv = spec.kind == "conv";
    std::mt19937 rng(spec.seed);
    std::uniform_real_distribution<double> u(-spec.weight_range, spec.weight_range);
    std::map<std::string, Tensor> tensors;
    auto rand_vec = [&](std::size_t n) {
        std::vector<double> v(n);
        for (double& x : v) x = static_cast<float>(u(rng));  // exactly representable in float32
        return v;
    };
    auto add_tensor = [&](const std::string& name, std::vector<std::int64_t> shape, const std::vector<double>& v) {
        Tensor t{std::move(shape), {}};
        for (double x : v) t.data.push_back(static_cast<float>(x));
        tensors[name] = t;
    };
    int ch = conv ? spec.sensors : spec.window * spec.sensors;
    int len = conv ? spec.window : 1;
    std::string json_layers[2];
    auto walk = [&](const std::vector<LayerSpec>& layers, std::vector<BuiltLayer>& out, const std::string& part,
                    bool last) -> bool {
        std::vector<LayerSpec> list = layers;
        if (last) {  // bring the output back to the window's shape
            int c = ch, l = len;
            for (const LayerSpec& L : list) {
                if (detail::is_act(L.op)) continue;
                if (conv) {
                    const auto n = detail::conv_len(L, l);
                    if (!n) return false;
                    l = *n;
                }
                c = L.out;
            }
            if (conv && (c != spec.sensors || l != spec.window)) list.push_back(detail::fit_length(l, spec.window, spec.sensors));
            if (!conv && c != spec.window * spec.sensors) list.push_back(LayerSpec{"linear", spec.window * spec.sensors});
            if (!list.empty() && list.back().kernel > limits::kMaxKernel) return false;  // too long to crop back
            if (list.empty()) {  // a decoder has at least one layer
                list.push_back(conv ? detail::fit_length(l, spec.window, spec.sensors) : LayerSpec{"linear", c});
            }
        }
        std::string js;
        for (std::size_t i = 0; i < list.size(); ++i) {
            const LayerSpec& L = list[i];
            BuiltLayer B{L, ch, len, len, {}, {}};
            const std::string name = part + "." + std::to_string(i);
            std::string entry;
            if (detail::is_act(L.op)) {
                entry = "{\"op\": \"" + L.op + "\"" + (L.op == "leaky_relu" ? ", \"negative_slope\": " + detail::num(L.slope) : "") + "}";
                B.spec.out = ch;
            } else if (L.op == "linear") {
                B.w = rand_vec(static_cast<std::size_t>(L.out) * ch);
                B.b = rand_vec(static_cast<std::size_t>(L.out));
                add_tensor(name + ".w", {L.out, ch}, B.w);
                add_tensor(name + ".b", {L.out}, B.b);
                entry = "{\"op\": \"linear\", \"weight\": \"" + name + ".w\", \"bias\": \"" + name + ".b\"}";
                ch = L.out;
            } else {
                const auto n = detail::conv_len(L, len);
                if (!n) return false;
                B.out_len = *n;
                B.w = rand_vec(static_cast<std::size_t>(L.out) * ch * L.kernel);
                B.b = rand_vec(static_cast<std::size_t>(L.out));
                if (L.op == "conv1d") add_tensor(name + ".w", {L.out, ch, L.kernel}, B.w);
                else add_tensor(name + ".w", {ch, L.out, L.kernel}, B.w);
                add_tensor(name + ".b", {L.out}, B.b);
                entry = "{\"op\": \"" + L.op + "\", \"weight\": \"" + name + ".w\", \"bias\": \"" + name +
                        ".b\", \"stride\": " + std::to_string(L.stride) + ", \"padding\": " + std::to_string(L.padding) +
                        (L.op == "conv_transpose1d" ? ", \"output_padding\": " + std::to_string(L.output_padding) : "") + "}";
                ch = L.out;
                len = *n;
            }
            out.push_back(B);
            js += (i ? ", " : "") + entry;
        }
        json_layers[part == "enc" ? 0 : 1] = "[" + js + "]";
        return true;
    };
    if (!walk(spec.encoder, g.encoder, "enc", false)) return std::nullopt;
    if (g.encoder.empty()) return std::nullopt;
    g.latent_dim = ch;
    g.latent_len = len;
    std::string memory = "null";
    if (spec.memory) {
        std::normal_distribution<double> n01(0.0, 1.0);
        g.memory.resize(static_cast<std::size_t>(spec.slots) * ch);
        for (double& x : g.memory) x = static_cast<float>(n01(rng));
        add_tensor("mem", {spec.slots, ch}, g.memory);
        memory = "{\"weight\": \"mem\", \"slots\": " + std::to_string(spec.slots) + ", \"dim\": " + std::to_string(ch) +
                 ", \"addressing\": \"" + spec.addressing + "\", \"temperature\": " + detail::num(spec.temperature) +
                 ", \"shrink_threshold\": " + detail::num(spec.shrink) + ", \"epsilon\": " + detail::num(spec.epsilon) + "}";
    }
    if (!walk(spec.decoder, g.decoder, "dec", true)) return std::nullopt;
    std::string sensors, center, scale;
    for (int s = 0; s < spec.sensors; ++s) {
        g.center.push_back(static_cast<double>(s) - 1.5);
        g.scale.push_back(0.5 + s);
        sensors += (s ? ", " : "") + std::string("\"s") + std::to_string(s) + "\"";
        center += (s ? ", " : "") + detail::num(g.center.back());
        scale += (s ? ", " : "") + detail::num(g.scale.back());
    }
    g.tensors = safetensors_bytes(tensors);
    g.config = "{\"model_id\": \"\", \"format\": \"memae-ts-bundle\", \"format_version\": 2, \"sensors\": [" + sensors +
               "], \"window\": " + std::to_string(spec.window) + ", \"scaler\": {\"kind\": \"standard\", \"center\": [" +
               center + "], \"scale\": [" + scale + "]}, \"threshold\": {\"method\": \"quantile\", \"value\": 0.5}, " +
               "\"network\": {\"kind\": \"" + spec.kind + "\", \"window\": " + std::to_string(spec.window) +
               ", \"n_sensors\": " + std::to_string(spec.sensors) + ", \"encoder\": " + json_layers[0] +
               ", \"memory\": " + memory + ", \"decoder\": " + json_layers[1] + "}}";
    g.config = stamp(g.config, g.tensors);
    return g;
}

struct Reference {
    double score = 0.0;
    std::vector<double> contributions;
    /// Smallest |w - shrink| over all addressing weights: near 0 the shrinkage step is
    /// discontinuous and float32 may legitimately keep a slot that double drops.
    double shrink_margin = 1e300;
};

/// Score of one raw window (W x S, row-major) in double, channels-first.
inline Reference reference(const Graph& g, const float* x) {
    const GraphSpec& s = g.spec;
    const bool conv = s.kind == "conv";
    const int W = s.window, S = s.sensors;
    std::vector<double> xs(static_cast<std::size_t>(W) * S);
    for (int t = 0; t < W; ++t)
        for (int j = 0; j < S; ++j) xs[t * S + j] = (x[t * S + j] - g.center[j]) / g.scale[j];
    std::vector<double> h(xs.size());
    for (int t = 0; t < W; ++t)
        for (int j = 0; j < S; ++j) h[conv ? static_cast<std::size_t>(j) * W + t : static_cast<std::size_t>(t) * S + j] = xs[t * S + j];
    for (const auto& L : g.encoder) detail::apply(L, conv, h);
    Reference r;
    if (s.memory) {
        const int C = g.latent_dim, Ln = g.latent_len;
        std::vector<double> out(h.size());
        for (int t = 0; t < Ln; ++t) {
            std::vector<double> z(C);
            for (int c = 0; c < C; ++c) z[c] = h[static_cast<std::size_t>(c) * Ln + t];
            double zn = 0;
            for (double v : z) zn += v * v;
            zn = std::max(std::sqrt(zn), 1e-12);
            std::vector<double> w(s.slots);
            double mx = -1e300;
            for (int i = 0; i < s.slots; ++i) {
                double d = 0, mn = 0;
                for (int c = 0; c < C; ++c) {
                    d += z[c] * g.memory[static_cast<std::size_t>(i) * C + c];
                    mn += g.memory[static_cast<std::size_t>(i) * C + c] * g.memory[static_cast<std::size_t>(i) * C + c];
                }
                w[i] = (s.addressing == "cosine" ? d / (zn * std::max(std::sqrt(mn), 1e-12)) : d) / s.temperature;
                mx = std::max(mx, w[i]);
            }
            double sum = 0;
            for (double& v : w) sum += (v = std::exp(v - mx));
            double total = 0;
            for (double& v : w) {
                v /= sum;
                if (s.shrink > 0) {
                    const double d = v - s.shrink;
                    r.shrink_margin = std::min(r.shrink_margin, std::fabs(d));
                    v = std::max(d, 0.0) * v / (std::fabs(d) + s.epsilon);
                }
                total += v;
            }
            for (int c = 0; c < C; ++c) {
                double acc = 0;
                for (int i = 0; i < s.slots; ++i) {
                    const double wi = s.shrink > 0 ? w[i] / std::max(total, 1e-12) : w[i];
                    acc += wi * g.memory[static_cast<std::size_t>(i) * C + c];
                }
                out[static_cast<std::size_t>(c) * Ln + t] = acc;
            }
        }
        h.swap(out);
    }
    for (const auto& L : g.decoder) detail::apply(L, conv, h);
    r.contributions.assign(S, 0.0);
    for (int t = 0; t < W; ++t)
        for (int j = 0; j < S; ++j) {
            const double rec = h[conv ? static_cast<std::size_t>(j) * W + t : static_cast<std::size_t>(t) * S + j];
            const double d = xs[t * S + j] - rec;
            r.contributions[j] += d * d / W;
        }
    for (double c : r.contributions) r.score += c / S;
    return r;
}

}  // namespace memae::testing
