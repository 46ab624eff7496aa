// Loader fuzz target (libFuzzer entry point). Input layout: 2 bytes little-endian config length,
// the config.json bytes, then the model.safetensors bytes. Every input must either load (and
// then score a window without fault) or be refused with FormatError; sanitizers catch the rest.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "memae/model.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    std::size_t n = static_cast<std::size_t>(data[0]) | (static_cast<std::size_t>(data[1]) << 8);
    if (n > size - 2) n = size - 2;
    const std::string config(reinterpret_cast<const char*>(data + 2), n);
    // Copy the tensor bytes to an exact-size heap block so ASan sees any read past the end.
    std::vector<std::uint8_t> tensors(data + 2 + n, data + size);
    try {
        const memae::Model m = memae::Model::load_bytes(config, tensors.data(), tensors.size());
        if (static_cast<long>(m.window()) * m.n_sensors() <= 4096) {
            std::vector<float> x(static_cast<std::size_t>(m.window()) * m.n_sensors(), 0.5f);
            float score = 0.0f;
            memae::Outputs out;
            out.scores = &score;
            m.run(x.data(), 1, out);
        }
    } catch (const memae::FormatError&) {
    }
    return 0;
}
