// Builds small bundles (config.json text + safetensors bytes) in memory for the C++ tests and the
// fuzz seeds, and a naive double-precision forward pass in torch's channels-first layout that the
// runtime's channels-last, packed-GEMM implementation is checked against.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "memae/model.h"

namespace memae::testing {

struct Tensor {
    std::vector<std::int64_t> shape;
    std::vector<float> data;
};

struct TinyBundle {
    std::string config;
    std::vector<std::uint8_t> tensors;
    std::map<std::string, Tensor> weights;
    int window = 12, sensors = 3, latent = 4, slots = 9, hidden = 5;
    double temperature = 0.1, shrink = 0.08;
    std::vector<double> center{1.0, -2.0, 30.0}, scale{0.5, 2.0, 4.0};
};

inline std::vector<std::uint8_t> safetensors_bytes(const std::map<std::string, Tensor>& tensors) {
    std::string header = "{";
    std::size_t offset = 0;
    bool first = true;
    for (const auto& kv : tensors) {
        const std::size_t bytes = kv.second.data.size() * 4;
        header += std::string(first ? "" : ",") + "\"" + kv.first + "\":{\"dtype\":\"F32\",\"shape\":[";
        for (std::size_t i = 0; i < kv.second.shape.size(); ++i) header += (i ? "," : "") + std::to_string(kv.second.shape[i]);
        header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + bytes) + "]}";
        offset += bytes;
        first = false;
    }
    header += "}";
    std::vector<std::uint8_t> out;
    out.reserve(8 + header.size() + offset);
    const std::uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(n >> (8 * i)));
    for (char c : header) out.push_back(static_cast<std::uint8_t>(c));
    for (const auto& kv : tensors) {
        const auto* p = reinterpret_cast<const std::uint8_t*>(kv.second.data.data());
        out.insert(out.end(), p, p + kv.second.data.size() * 4);
    }
    return out;
}

/// Writes the integrity id (docs/bundle-format.md) into a config whose top-level "model_id" is
/// any string, for these tensor bytes. Returns the config unchanged when it has none or is not JSON.
inline std::string stamp(const std::string& config, const std::vector<std::uint8_t>& tensors) {
    try {
        const Json parsed = Json::parse(config);
        const Json* id = parsed.find("model_id");
        if (!id || !id->is_string()) return config;
        const std::string value = bundle_id(config, parsed, tensors.data(), tensors.size());
        return config.substr(0, id->begin()) + "\"" + value + "\"" + config.substr(id->end());
    } catch (const FormatError&) {
        return config;
    }
}

/// A conv network: conv1d(k3,s2,p1) -> tanh -> memory -> conv_transpose1d(k3,s2,p1,op1) -> leaky.
/// Window 12 -> latent length 6 -> 12.
inline TinyBundle tiny_conv_bundle(unsigned seed = 7) {
    TinyBundle b;
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-0.6f, 0.6f);
    auto make = [&](std::vector<std::int64_t> shape) {
        Tensor t{shape, {}};
        std::int64_t n = 1;
        for (auto d : shape) n *= d;
        for (std::int64_t i = 0; i < n; ++i) t.data.push_back(u(rng));
        return t;
    };
    b.weights["enc.w"] = make({b.latent, b.sensors, 3});
    b.weights["enc.b"] = make({b.latent});
    b.weights["mem"] = make({b.slots, b.latent});
    b.weights["dec.w"] = make({b.latent, b.sensors, 3});
    b.weights["dec.b"] = make({b.sensors});
    b.tensors = safetensors_bytes(b.weights);
    auto list = [](const std::vector<double>& v) {
        std::string s = "[";
        for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
        return s + "]";
    };
    b.config = R"({"model_id": "", "format": "memae-ts-bundle", "format_version": 2, "sensors": ["a", "b", "c"], "window": 12,
  "scaler": {"kind": "standard", "center": )" + list(b.center) + R"(, "scale": )" + list(b.scale) + R"(},
  "threshold": {"method": "quantile", "value": 0.5},
  "network": {"kind": "conv", "window": 12, "n_sensors": 3,
    "encoder": [{"op": "conv1d", "weight": "enc.w", "bias": "enc.b", "stride": 2, "padding": 1}, {"op": "tanh"}],
    "memory": {"weight": "mem", "slots": 9, "dim": 4, "addressing": "cosine", "temperature": 0.1,
               "shrink_threshold": 0.08, "epsilon": 1e-12},
    "decoder": [{"op": "conv_transpose1d", "weight": "dec.w", "bias": "dec.b", "stride": 2, "padding": 1,
                 "output_padding": 1}, {"op": "leaky_relu", "negative_slope": 0.2}]}})";
    b.config = stamp(b.config, b.tensors);
    return b;
}

/// Reference forward of tiny_conv_bundle for one raw window (W x S); returns (score, contributions).
inline std::pair<double, std::vector<double>> reference_score(const TinyBundle& b, const float* x) {
    const int W = b.window, S = b.sensors, C = b.latent, L = W / 2;
    std::vector<double> xs(W * S);
    for (int t = 0; t < W; ++t)
        for (int s = 0; s < S; ++s) xs[t * S + s] = (x[t * S + s] - b.center[s]) / b.scale[s];
    const auto& ew = b.weights.at("enc.w").data;
    const auto& eb = b.weights.at("enc.b").data;
    std::vector<double> z(C * L);  // channels-first (C, L)
    for (int o = 0; o < C; ++o)
        for (int t = 0; t < L; ++t) {
            double s = eb[o];
            for (int c = 0; c < S; ++c)
                for (int k = 0; k < 3; ++k) {
                    const int pos = t * 2 - 1 + k;
                    if (pos >= 0 && pos < W) s += ew[(o * S + c) * 3 + k] * xs[pos * S + c];
                }
            z[o * L + t] = std::tanh(s);
        }
    const auto& m = b.weights.at("mem").data;
    std::vector<double> zh(C * L);
    for (int t = 0; t < L; ++t) {
        double zn = 0;
        for (int c = 0; c < C; ++c) zn += z[c * L + t] * z[c * L + t];
        zn = std::max(std::sqrt(zn), 1e-12);
        std::vector<double> w(b.slots);
        double mx = -1e300;
        for (int i = 0; i < b.slots; ++i) {
            double d = 0, mn = 0;
            for (int c = 0; c < C; ++c) {
                d += z[c * L + t] * m[i * C + c];
                mn += m[i * C + c] * m[i * C + c];
            }
            w[i] = d / (zn * std::max(std::sqrt(mn), 1e-12)) / b.temperature;
            mx = std::max(mx, w[i]);
        }
        double sum = 0;
        for (double& v : w) { v = std::exp(v - mx); sum += v; }
        double total = 0;
        for (double& v : w) {
            v /= sum;
            const double d = v - b.shrink;
            v = std::max(d, 0.0) * v / (std::fabs(d) + 1e-12);
            total += v;
        }
        for (int c = 0; c < C; ++c) {
            double s = 0;
            for (int i = 0; i < b.slots; ++i) s += w[i] / std::max(total, 1e-12) * m[i * C + c];
            zh[c * L + t] = s;
        }
    }
    const auto& dw = b.weights.at("dec.w").data;  // (in=C, out=S, k=3)
    const auto& db = b.weights.at("dec.b").data;
    std::vector<double> y(S * W);  // (S, W)
    for (int o = 0; o < S; ++o)
        for (int p = 0; p < W; ++p) y[o * W + p] = db[o];
    for (int c = 0; c < C; ++c)
        for (int t = 0; t < L; ++t)
            for (int o = 0; o < S; ++o)
                for (int k = 0; k < 3; ++k) {
                    const int pos = t * 2 - 1 + k;
                    if (pos >= 0 && pos < W) y[o * W + pos] += zh[c * L + t] * dw[(c * S + o) * 3 + k];
                }
    std::vector<double> contrib(S, 0.0);
    for (int o = 0; o < S; ++o)
        for (int p = 0; p < W; ++p) {
            const double r = y[o * W + p] >= 0 ? y[o * W + p] : 0.2 * y[o * W + p];
            const double d = xs[p * S + o] - r;
            contrib[o] += d * d / W;
        }
    double score = 0;
    for (double c : contrib) score += c / S;
    return {score, contrib};
}

}  // namespace memae::testing
