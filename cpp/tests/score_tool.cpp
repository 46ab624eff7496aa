// memae_score BUNDLE_DIR WINDOWS.f32 OUT.f32: scores raw float32 windows (batch, window, sensors)
// with the best kernels of this build and writes the float32 scores. The cross-built copies run
// under qemu, so tests/test_runtime_cross.py can hold NEON and armhf scores of trained bundles
// to the x86 ones.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

#include "memae/model.h"

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: memae_score BUNDLE_DIR WINDOWS.f32 OUT.f32\n");
        return 2;
    }
    try {
        const memae::Model m = memae::Model::load_dir(argv[1]);
        std::ifstream in(argv[2], std::ios::binary);
        std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        const std::size_t per = static_cast<std::size_t>(m.window()) * m.n_sensors() * sizeof(float);
        if (!in || raw.size() % per != 0) {
            std::fprintf(stderr, "%s: not a whole number of windows\n", argv[2]);
            return 2;
        }
        const int batch = static_cast<int>(raw.size() / per);
        std::vector<float> x(raw.size() / sizeof(float)), scores(static_cast<std::size_t>(batch));
        std::copy(raw.begin(), raw.end(), reinterpret_cast<char*>(x.data()));
        memae::Outputs out;
        out.scores = scores.data();
        m.run(x.data(), batch, out, 2);
        std::ofstream(argv[3], std::ios::binary)
            .write(reinterpret_cast<const char*>(scores.data()), static_cast<std::streamsize>(scores.size() * sizeof(float)));
        std::printf("%s %d\n", m.kernels().name, batch);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "memae_score: %s\n", e.what());
        return 2;
    }
    return 0;
}
