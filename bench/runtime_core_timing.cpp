// Before/after timing of the C++ core alone (docs/runtime.md, "What changed"): Model::run on
// distinct windows cycled from a 256 MiB pool, one thread, process CPU time, best of 5 rounds.
// Build against the core library of any two commits and run the binaries alternately:
//   git archive <commit> cpp | tar -x -C /tmp/old
//   cmake -S /tmp/old/cpp -B /tmp/b_old -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/b_old --target memae_core
//   g++ -O2 -std=c++17 -I/tmp/old/cpp/include bench/runtime_core_timing.cpp /tmp/b_old/libmemae_core.a -lpthread -o old
//   ./old BUNDLE_DIR BATCH SECONDS_PER_ROUND [WINDOWS.f32]    (MEMAE_TS_ISA=avx2 forces a kernel table)
// bench/runtime.py's build_bundle writes the untrained bench bundle and trained_bundle the trained
// one (cached under build/bench-runtime/ by `bench/runtime.py --arch conv-trained`); its real demo
// windows go to WINDOWS.f32 as raw float32 (n, window, sensors) with, from the repository root:
//   .venv/bin/python -c "import sys; sys.path.insert(0, 'bench'); from pathlib import Path;
//     import runtime as r; b = r.trained_bundle(Path('build/bench-runtime'));
//     r.real_window_pool(b, 64).astype('float32').tofile(b.parent / 'windows.f32'); print(b)"
// With that file the pool cycles those windows instead of Gaussian noise around the scaler's centre
// (a trained model addresses its memory differently on real data). After the rounds it prints the
// per-stage medians over 600 one-chunk calls (Outputs::stage_seconds) and how many memory slots
// survive the shrinkage per latent row (from Outputs::attention).
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <vector>

#include "memae/model.h"
static double cpu() { timespec t; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
int main(int argc, char** argv) {
    if (argc < 4) { std::fprintf(stderr, "usage: %s BUNDLE_DIR BATCH SECONDS [WINDOWS.f32]\n", argv[0]); return 2; }
    memae::Model m = memae::Model::load_dir(argv[1]);
    const int batch = std::atoi(argv[2]);
    const double seconds = std::atof(argv[3]);
    const std::size_t per = static_cast<std::size_t>(m.window()) * m.n_sensors();
    std::vector<float> real;
    if (argc > 4) {
        std::ifstream f(argv[4], std::ios::binary | std::ios::ate);
        real.resize(static_cast<std::size_t>(f.tellg()) / 4 / per * per);
        f.seekg(0);
        f.read(reinterpret_cast<char*>(real.data()), static_cast<std::streamsize>(real.size() * 4));
        if (real.empty()) { std::fprintf(stderr, "%s holds no whole window\n", argv[4]); return 2; }
    }
    const std::size_t n = (256u << 20) / (per * 4);
    std::vector<float> pool(n * per);
    std::mt19937 rng(1);
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (std::size_t i = 0; i < pool.size(); ++i) {
        pool[i] = real.empty() ? static_cast<float>(m.center()[i % m.n_sensors()] + m.scale()[i % m.n_sensors()] * d(rng))
                               : real[i % real.size()];
    }
    std::vector<float> scores(std::max(batch, m.chunk())), contrib(static_cast<std::size_t>(batch) * m.n_sensors());
    memae::Outputs out; out.scores = scores.data(); out.contributions = contrib.data();
    double best = 1e9;
    std::size_t at = 0; const std::size_t usable = n / batch * batch;
    for (int round = 0; round < 5; ++round) {
        const double c0 = cpu(); long w = 0;
        while (cpu() - c0 < seconds) { m.run(pool.data() + at * per, batch, out, 1); at = (at + batch) % usable; w += batch; }
        const double us = 1e6 * (cpu() - c0) / w; if (us < best) best = us;
    }
    std::printf("%s batch %d: %.2f us CPU per window (best of 5 rounds), score[0] %.6g\n", m.kernels().name, batch, best, scores[0]);
    // Per-stage medians, µs per window, over one-chunk calls of distinct windows.
    const int chunk = m.chunk();
    std::vector<std::vector<double>> per_stage(memae::kStages);
    for (int call = 0; call < 600; ++call) {
        double sec[memae::kStages] = {};
        memae::Outputs o; o.scores = scores.data(); o.stage_seconds = sec;
        m.run(pool.data() + at * per, chunk, o, 1);
        at = (at + chunk) % (n / chunk * chunk);
        for (int s = 0; s < memae::kStages; ++s) per_stage[s].push_back(1e6 * sec[s] / chunk);
    }
    double total = 0.0;
    for (int s = 0; s < memae::kStages; ++s) {
        auto& v = per_stage[s];
        std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
        std::printf("%s %.2f  ", memae::kStageNames[s], v[v.size() / 2]);
        total += v[v.size() / 2];
    }
    std::printf("total %.2f us/window (medians)\n", total);
    if (m.has_memory()) {
        const int b = std::min<int>(256, static_cast<int>(n));
        const std::size_t rows = static_cast<std::size_t>(b) * m.latent_length();
        std::vector<float> att(rows * m.memory_slots()), sc(b);
        memae::Outputs o; o.scores = sc.data(); o.attention = att.data();
        m.run(pool.data(), b, o, 1);
        std::vector<int> kept(rows);
        for (std::size_t r = 0; r < rows; ++r)
            kept[r] = static_cast<int>(std::count_if(att.begin() + r * m.memory_slots(), att.begin() + (r + 1) * m.memory_slots(),
                                                     [](float w) { return w != 0.0f; }));
        std::sort(kept.begin(), kept.end());
        double mean = 0.0;
        for (int c : kept) mean += c;
        std::printf("slots kept per latent row (%zu rows of %d windows, %d slots): median %d, mean %.1f, 90th pct %d, max %d\n",
                    rows, b, m.memory_slots(), kept[rows / 2], mean / rows, kept[rows * 9 / 10], kept.back());
    }
}
