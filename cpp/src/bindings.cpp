// memae_ts._runtime: the pybind11 face of the C++ runtime.
//
// Inputs are taken as py::array_t<float, c_style> with noconvert(), so a C-contiguous float32
// array is read in place (no copy) and anything else is rejected instead of silently copied; the
// Python wrapper (memae_ts/runtime.py) turns those cases into clear ValueErrors first. Compute
// runs with the GIL released; the Model is immutable and each call allocates its own scratch, so
// any number of Python threads may score concurrently.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "memae/model.h"

namespace py = pybind11;
using memae::Model;

namespace {

using FloatArray = py::array_t<float, py::array::c_style>;

/// Checks (batch, window, sensors) and returns the batch size.
int check_windows(const Model& m, const FloatArray& x) {
    if (x.ndim() != 3 || x.shape(1) != m.window() || x.shape(2) != m.n_sensors()) {
        std::string got = "(";
        for (py::ssize_t i = 0; i < x.ndim(); ++i) got += (i ? ", " : "") + std::to_string(x.shape(i));
        got += ")";
        throw std::invalid_argument("windows must have shape (batch, " + std::to_string(m.window()) + ", " +
                                    std::to_string(m.n_sensors()) + "), got " + got);
    }
    if (x.shape(0) > (1 << 30)) throw std::invalid_argument("batch is too large");
    return static_cast<int>(x.shape(0));
}

int check_threads(int threads) {
    if (threads < 1) throw std::invalid_argument("threads must be at least 1");
    return threads;
}

py::tuple score(const Model& m, const FloatArray& x, int threads) {
    const int b = check_windows(m, x);
    check_threads(threads);
    FloatArray scores(std::vector<py::ssize_t>{b});
    FloatArray contrib(std::vector<py::ssize_t>{b, m.n_sensors()});
    memae::Outputs out;
    out.scores = scores.mutable_data();
    out.contributions = contrib.mutable_data();
    const float* in = x.data();
    {
        py::gil_scoped_release release;
        m.run(in, b, out, threads);
    }
    return py::make_tuple(scores, contrib);
}

FloatArray reconstruct(const Model& m, const FloatArray& x, int threads) {
    const int b = check_windows(m, x);
    check_threads(threads);
    FloatArray rec(std::vector<py::ssize_t>{b, m.window(), m.n_sensors()});
    memae::Outputs out;
    out.reconstruction = rec.mutable_data();
    const float* in = x.data();
    {
        py::gil_scoped_release release;
        m.run(in, b, out, threads);
    }
    return rec;
}

FloatArray attention(const Model& m, const FloatArray& x, int threads) {
    const int b = check_windows(m, x);
    check_threads(threads);
    if (!m.has_memory()) throw std::invalid_argument("this model has no memory module");
    FloatArray att(std::vector<py::ssize_t>{b, m.latent_length(), m.memory_slots()});
    memae::Outputs out;
    out.attention = att.mutable_data();
    const float* in = x.data();
    {
        py::gil_scoped_release release;
        m.run(in, b, out, threads);
    }
    return att;
}

std::vector<std::string> isa_names() {
    std::vector<std::string> out;
    for (const auto* t : memae::available_kernels()) out.emplace_back(t->name);
    return out;
}

}  // namespace

PYBIND11_MODULE(_runtime, mod) {
    mod.doc() = "memae-ts C++ inference runtime (use memae_ts.runtime.Runtime, not this module)";
    py::register_exception<memae::FormatError>(mod, "FormatError", PyExc_ValueError);

    mod.attr("FORMAT_VERSION") = memae::kFormatVersion;
    {
        namespace L = memae::limits;
        py::dict limits;
        limits["CONFIG_BYTES"] = L::kMaxConfigBytes;
        limits["WEIGHTS_BYTES"] = L::kMaxWeightsBytes;
        limits["HEADER_BYTES"] = L::kMaxHeaderBytes;
        limits["JSON_DEPTH"] = memae::kMaxJsonDepth;
        limits["JSON_VALUES"] = memae::kMaxJsonValues;
        limits["SENSORS"] = L::kMaxSensors;
        limits["WINDOW"] = L::kMaxWindow;
        limits["INPUT"] = L::kMaxInput;
        limits["FEATURES"] = L::kMaxFeatures;
        limits["KERNEL"] = L::kMaxKernel;
        limits["STRIDE"] = L::kMaxStride;
        limits["LENGTH"] = L::kMaxLength;
        limits["ACTIVATION"] = L::kMaxActivation;
        limits["LAYERS"] = L::kMaxLayers;
        limits["SLOTS"] = L::kMaxSlots;
        limits["MEMORY_FLOATS"] = L::kMaxMemoryFloats;
        limits["SCRATCH_BYTES"] = L::kMaxScratchBytes;
        limits["SCALE"] = py::make_tuple(L::kMinScale, L::kMaxScale);
        limits["ABS_CENTER"] = L::kMaxAbsCenter;
        limits["THRESHOLD"] = py::make_tuple(L::kMinThreshold, L::kMaxThreshold);
        limits["TEMPERATURE"] = py::make_tuple(L::kMinTemperature, L::kMaxTemperature);
        limits["ABS_SLOPE"] = L::kMaxAbsSlope;
        mod.attr("LIMITS") = limits;
    }
    mod.def(
        "bundle_id",
        [](const py::bytes& config, const py::bytes& tensors) {
            const std::string c = config;
            const std::string t = tensors;
            return memae::bundle_id(c, reinterpret_cast<const std::uint8_t*>(t.data()), t.size());
        },
        py::arg("config"), py::arg("tensors"),
        "The integrity id of a bundle's two files, as the loader computes it (docs/bundle-format.md).");
    mod.def("available_isas", &isa_names,
            "Kernel tables this CPU can run, best last (e.g. ['scalar_4x2', 'avx2_6x16']).");
    mod.def(
        "_buffer_address", [](const FloatArray& x) { return reinterpret_cast<std::uintptr_t>(x.data()); },
        py::arg("x").noconvert(), "Address the runtime reads for `x` (tests use it to prove zero copy).");

    py::class_<Model, std::shared_ptr<Model>>(mod, "Model")
        .def_static(
            "load",
            [](const std::string& path) {
                py::gil_scoped_release release;
                return std::make_shared<Model>(Model::load_dir(path));
            },
            py::arg("path"), "Load and validate a bundle directory (config.json + model.safetensors).")
        .def_static(
            "from_bytes",
            [](const py::bytes& config, const py::bytes& tensors) {
                const std::string c = config;
                const std::string t = tensors;
                py::gil_scoped_release release;
                return std::make_shared<Model>(Model::load_bytes(
                    c, reinterpret_cast<const std::uint8_t*>(t.data()), t.size()));
            },
            py::arg("config"), py::arg("tensors"),
            "Load a bundle from the bytes of config.json and model.safetensors.")
        .def_property_readonly("model_id", &Model::model_id)
        .def_property_readonly("chunk", &Model::chunk)
        .def("scratch_bytes", &Model::scratch_bytes, py::arg("chunk"), "Per-call scratch of one thread at `chunk` windows a pass.")
        .def_property_readonly("window", &Model::window)
        .def_property_readonly("n_sensors", &Model::n_sensors)
        .def_property_readonly("sensors", &Model::sensors)
        .def_property_readonly("kind", &Model::kind)
        .def_property_readonly("latent_length", &Model::latent_length)
        .def_property_readonly("memory_slots", &Model::memory_slots)
        .def_property_readonly("threshold", &Model::threshold)
        .def_property_readonly("isa", [](const Model& m) { return std::string(m.kernels().name); })
        .def(
            "set_isa",
            [](Model& m, const std::string& name) {
                for (const auto* t : memae::available_kernels()) {
                    if (name == t->name) { m.set_kernels(*t); return; }
                }
                throw std::invalid_argument("kernel table '" + name + "' is not available on this CPU");
            },
            py::arg("name"), "Switch kernel table (tests compare ISAs; not thread safe with scoring).")
        .def("score", &score, py::arg("windows").noconvert(), py::arg("threads") = 1,
             "Scores and per-sensor contributions of raw windows (batch, window, sensors).")
        .def("reconstruct", &reconstruct, py::arg("windows").noconvert(), py::arg("threads") = 1,
             "Reconstructions in scaled units, (batch, window, sensors).")
        .def("attention", &attention, py::arg("windows").noconvert(), py::arg("threads") = 1,
             "Memory addressing weights after shrinkage and renormalisation, (batch, latent_length, slots).");
}
