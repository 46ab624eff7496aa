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

#include <algorithm>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "memae/model.h"
#include "memae/reading_parser.h"
#include "memae/score_records.h"

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

/// Scores, contributions, addressing weights and novelty (1 - cos(z, read-out)) per latent
/// position in one pass: what memae_ts.modes needs for the mode and novelty of each window.
py::tuple analyse(const Model& m, const FloatArray& x, int threads, bool encodings) {
    const int b = check_windows(m, x);
    check_threads(threads);
    if (!m.has_memory()) throw std::invalid_argument("this model has no memory module");
    FloatArray scores(std::vector<py::ssize_t>{b});
    FloatArray contrib(std::vector<py::ssize_t>{b, m.n_sensors()});
    FloatArray att(std::vector<py::ssize_t>{b, m.latent_length(), m.memory_slots()});
    FloatArray nov(std::vector<py::ssize_t>{b, m.latent_length()});
    memae::Outputs out;
    out.scores = scores.mutable_data();
    out.contributions = contrib.mutable_data();
    out.attention = att.mutable_data();
    out.novelty = nov.mutable_data();
    py::object enc = py::none();
    if (encodings) {
        const py::ssize_t dim = static_cast<py::ssize_t>(m.memory_matrix().size()) / m.memory_slots();
        FloatArray e(std::vector<py::ssize_t>{b, m.latent_length(), dim});
        out.encoding = e.mutable_data();
        enc = e;
    }
    const float* in = x.data();
    {
        py::gil_scoped_release release;
        m.run(in, b, out, threads);
    }
    return py::make_tuple(scores, contrib, att, nov, enc);
}

/// Seconds per stage of scoring `x` on one thread (bench/runtime.py); the scores are kept so the
/// work cannot be skipped, and returned under "scores".
py::dict profile(const Model& m, const FloatArray& x) {
    const int b = check_windows(m, x);
    FloatArray scores(std::vector<py::ssize_t>{b});
    double seconds[memae::kStages] = {};
    memae::Outputs out;
    out.scores = scores.mutable_data();
    out.stage_seconds = seconds;
    {
        py::gil_scoped_release release;
        m.run(x.data(), b, out, 1);
    }
    py::dict d;
    for (int i = 0; i < memae::kStages; ++i) d[memae::kStageNames[i]] = seconds[i];
    d["scores"] = scores;
    return d;
}

void set_memory(Model& m, const FloatArray& memory) {
    if (!m.has_memory()) throw std::invalid_argument("this model has no memory module");
    const auto& current = m.memory_matrix();
    const py::ssize_t dim = static_cast<py::ssize_t>(current.size()) / m.memory_slots();
    if (memory.ndim() != 2 || memory.shape(0) != m.memory_slots() || memory.shape(1) != dim) {
        throw std::invalid_argument("memory must have shape (" + std::to_string(m.memory_slots()) + ", " +
                                    std::to_string(dim) + ")");
    }
    m.set_memory(memory.data(), static_cast<std::size_t>(memory.size()));
}

FloatArray memory_matrix(const Model& m) {
    if (!m.has_memory()) throw std::invalid_argument("this model has no memory module");
    const auto& cur = m.memory_matrix();
    const py::ssize_t slots = m.memory_slots();
    FloatArray out(std::vector<py::ssize_t>{slots, static_cast<py::ssize_t>(cur.size()) / slots});
    std::copy(cur.begin(), cur.end(), out.mutable_data());
    return out;
}

std::vector<std::string> isa_names() {
    std::vector<std::string> out;
    for (const auto* t : memae::available_kernels()) out.emplace_back(t->name);
    return out;
}

// ---- score records (connectors/messages.py: encode_scores) -------------------------------------

using F64 = py::array_t<double, py::array::c_style>;
using I64 = py::array_t<std::int64_t, py::array::c_style>;
using Bools = py::array_t<bool, py::array::c_style>;

/// UTF-8 text of each item of a list of str.
std::vector<std::string_view> texts(const py::list& items, const char* what) {
    std::vector<std::string_view> out;
    out.reserve(items.size());
    for (const py::handle item : items) {
        if (!PyUnicode_Check(item.ptr())) throw py::type_error(std::string(what) + " must be a list of str");
        Py_ssize_t size = 0;
        const char* data = PyUnicode_AsUTF8AndSize(item.ptr(), &size);
        if (data == nullptr) throw py::error_already_set();
        out.emplace_back(data, static_cast<std::size_t>(size));
    }
    return out;
}

void check_length(py::ssize_t got, py::ssize_t n, const char* what) {
    if (got != n) throw std::invalid_argument(std::string(what) + " has another length than assets");
}

py::list encode_score_records(const py::list& assets, const I64& micros, const F64& score, const F64& normalised,
                              const Bools& anomaly, const I64& top, const F64& shares, const py::list& sensors,
                              const std::string& constant, const std::optional<I64>& modes,
                              const std::optional<F64>& novelty, const std::optional<Bools>& alarm,
                              const std::optional<F64>& tail) {
    const auto asset_text = texts(assets, "assets");
    const auto sensor_text = texts(sensors, "sensors");
    const py::ssize_t n = static_cast<py::ssize_t>(asset_text.size());
    for (const auto* a : {&micros, &top}) check_length(a->ndim() ? a->shape(0) : -1, n, "an integer column");
    for (const auto* a : {&score, &normalised, &shares}) check_length(a->ndim() ? a->shape(0) : -1, n, "a number column");
    check_length(anomaly.ndim() ? anomaly.shape(0) : -1, n, "anomaly");
    if (micros.ndim() != 1 || score.ndim() != 1 || normalised.ndim() != 1 || anomaly.ndim() != 1) {
        throw std::invalid_argument("micros, score, normalised and anomaly must be 1-D");
    }
    if (top.ndim() != 2 || shares.ndim() != 2 || top.shape(1) != shares.shape(1)) {
        throw std::invalid_argument("top and shares must be (n, k) alike");
    }
    if ((modes.has_value()) != (novelty.has_value())) throw std::invalid_argument("modes and novelty go together");
    if (modes) check_length(modes->ndim() == 1 ? modes->shape(0) : -1, n, "modes");
    if (novelty) check_length(novelty->ndim() == 1 ? novelty->shape(0) : -1, n, "novelty");
    if (alarm) check_length(alarm->ndim() == 1 ? alarm->shape(0) : -1, n, "alarm");
    if (tail) check_length(tail->ndim() == 1 ? tail->shape(0) : -1, n, "tail_probability");
    const py::ssize_t k = top.shape(1);
    const std::int64_t* t = micros.data();
    const std::int64_t* tops = top.data();
    const std::int64_t n_sensors = static_cast<std::int64_t>(sensor_text.size());
    for (py::ssize_t i = 0; i < n; ++i) {
        if (t[i] < memae::kMinUtcMicros || t[i] > memae::kMaxUtcMicros) {
            throw std::invalid_argument("a time is outside the years 1-9999");
        }
    }
    for (py::ssize_t i = 0; i < n * k; ++i) {
        if (tops[i] < 0 || tops[i] >= n_sensors) throw std::invalid_argument("top sensor index out of range");
    }
    py::list out(static_cast<std::size_t>(n));
    std::string rec;
    for (py::ssize_t i = 0; i < n; ++i) {
        rec.clear();
        rec.append("{\"asset\":").append(asset_text[static_cast<std::size_t>(i)]);
        rec.append(",\"ts\":\"");
        memae::append_utc(rec, t[i]);
        rec.append("\",\"score\":");
        memae::append_json_number(rec, score.data()[i]);
        rec.append(",\"normalised_score\":");
        memae::append_json_number(rec, normalised.data()[i]);
        rec.append(anomaly.data()[i] ? ",\"is_anomaly\":true,\"top_sensors\":[" : ",\"is_anomaly\":false,\"top_sensors\":[");
        for (py::ssize_t j = 0; j < k; ++j) {
            if (j) rec.push_back(',');
            rec.append("{\"sensor\":").append(sensor_text[static_cast<std::size_t>(tops[i * k + j])]);
            rec.append(",\"share\":");
            memae::append_fixed4(rec, shares.data()[i * k + j]);
            rec.push_back('}');
        }
        rec.append("]").append(constant);
        if (modes) {
            const std::int64_t m = modes->data()[i];
            rec.append(",\"mode\":");
            if (m >= 0) {
                rec.append(std::to_string(m));
            } else {
                rec.append("null");
            }
            rec.append(",\"novelty_score\":");
            memae::append_json_number(rec, novelty->data()[i]);
        }
        if (alarm) rec.append(alarm->data()[i] ? ",\"alarm\":true" : ",\"alarm\":false");
        if (tail) {
            rec.append(",\"tail_probability\":");
            memae::append_json_number(rec, tail->data()[i]);
        }
        rec.push_back('}');
        PyObject* b = PyBytes_FromStringAndSize(rec.data(), static_cast<Py_ssize_t>(rec.size()));
        if (b == nullptr) throw py::error_already_set();
        PyList_SET_ITEM(out.ptr(), i, b);
    }
    return out;
}

// ---- readings (connectors/messages.py: ReadingParser.parse_batch) -------------------------------

/// (ts, values) of a batch in which every message is clean (memae/reading_parser.h), else None.
/// With `partial`, (ts, values, clean) whatever the messages: `clean` marks the rows read (the
/// others, NaN, are for the Python parser), so one odd message does not send its batch there.
py::object parse_readings(const py::handle& values, const py::list& assets, const py::list& sensors, bool partial) {
    if (!PyList_Check(values.ptr())) return py::none();
    const py::ssize_t n = PyList_GET_SIZE(values.ptr());
    if (static_cast<py::ssize_t>(assets.size()) != n) throw std::invalid_argument("assets has another length than values");
    const auto asset_text = texts(assets, "assets");
    const auto sensor_text = texts(sensors, "sensors");
    const memae::ReadingParser parser(sensor_text);
    const py::ssize_t k = static_cast<py::ssize_t>(parser.n_sensors());
    if (n == 0 || k == 0) return py::none();
    F64 ts(std::vector<py::ssize_t>{n});
    F64 matrix(std::vector<py::ssize_t>{n, k});
    py::array_t<bool> clean(std::vector<py::ssize_t>{n});
    double* t = ts.mutable_data();
    double* row = matrix.mutable_data();
    bool* ok = clean.mutable_data();
    for (py::ssize_t i = 0; i < n; ++i, row += k) {
        PyObject* item = PyList_GET_ITEM(values.ptr(), i);
        ok[i] = PyBytes_Check(item) &&
                parser.parse(std::string_view(PyBytes_AS_STRING(item), static_cast<std::size_t>(PyBytes_GET_SIZE(item))),
                             asset_text[static_cast<std::size_t>(i)], t[i], row);
        if (ok[i]) continue;
        if (!partial) return py::none();
        t[i] = std::numeric_limits<double>::quiet_NaN();
        std::fill(row, row + k, std::numeric_limits<double>::quiet_NaN());
    }
    if (partial) return py::make_tuple(ts, matrix, clean);
    return py::make_tuple(ts, matrix);
}

}  // namespace

PYBIND11_MODULE(_runtime, mod) {
    mod.doc() = "memae-ts C++ inference runtime (use memae_ts.runtime.Runtime, not this module)";
    py::register_exception<memae::FormatError>(mod, "FormatError", PyExc_ValueError);

    mod.attr("FORMAT_VERSION") = memae::kFormatVersion;
    mod.attr("MAX_FORMAT_VERSION") = memae::kMaxFormatVersion;
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
    mod.def(
        "fp32_peak",
        [](double min_seconds, int runs, const std::string& isa) {
            const memae::KernelTable* k = &memae::select_kernels();
            for (const auto* t : memae::available_kernels()) {
                if (isa == t->name) k = t;
            }
            if (!isa.empty() && isa != k->name) {
                throw std::invalid_argument("kernel table '" + isa + "' is not available on this CPU");
            }
            memae::PeakProbe p;
            {
                py::gil_scoped_release release;
                p = memae::measure_fp32_peak(*k, min_seconds, runs);
            }
            py::dict d;
            d["isa"] = k->name;
            d["gflops_wall"] = p.gflops_wall;
            d["gflops_cpu"] = p.gflops_cpu;
            d["flops_per_run"] = p.flops_per_run;
            d["runs"] = p.runs;
            return d;
        },
        py::arg("min_seconds") = 0.3, py::arg("runs") = 7, py::arg("isa") = "",
        "This core's FP32 peak: independent register-only FMA chains in the kernel table's widest "
        "vectors, iterations calibrated to min_seconds/runs a run, best of `runs` by wall and by "
        "thread CPU time (GFLOP/s).");
    mod.def("encode_score_records", &encode_score_records, py::arg("assets"), py::arg("micros"), py::arg("score"),
            py::arg("normalised"), py::arg("anomaly"), py::arg("top"), py::arg("shares"), py::arg("sensors"),
            py::arg("constant"), py::arg("modes") = py::none(), py::arg("novelty") = py::none(),
            py::arg("alarm") = py::none(), py::arg("tail") = py::none(),
            "Score records as bytes, one per row, byte for byte as connectors/messages.py's Python "
            "encoder writes them (assets and sensors: JSON text; constant: the model_version and model "
            "fields).");
    mod.def("parse_readings", &parse_readings, py::arg("values"), py::arg("assets"), py::arg("sensors"),
            py::arg("partial") = false,
            "(ts float64 (n,), values float64 (n, sensors)) of a list of reading messages (bytes) whose "
            "keys name `assets` (str), when every message is certainly clean (memae/reading_parser.h); "
            "else None, and connectors/messages.py's Python parser decides. With partial=True, "
            "(ts, values, clean bool (n,)) for any list: the rows `clean` marks are read, the others "
            "are NaN and left to the Python parser.");
    mod.def("bf16_supported", &memae::bf16_supported, "Whether this CPU (and build) can run precision 'bf16'.");
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
        .def_property_readonly("reduction", [](const Model& m) { return std::string(m.reduction_name()); })
        .def_property_readonly("half_life_rows", &Model::half_life_rows)
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
        .def("set_precision", &Model::set_precision, py::arg("precision"),
             "'fp32' or 'bf16' convolution GEMMs (ValueError naming why when refused).")
        .def_property_readonly("precision", [](const Model& m) { return std::string(m.precision()); })
        .def("score", &score, py::arg("windows").noconvert(), py::arg("threads") = 1,
             "Scores and per-sensor contributions of raw windows (batch, window, sensors).")
        .def("reconstruct", &reconstruct, py::arg("windows").noconvert(), py::arg("threads") = 1,
             "Reconstructions in scaled units, (batch, window, sensors).")
        .def("attention", &attention, py::arg("windows").noconvert(), py::arg("threads") = 1,
             "Memory addressing weights after shrinkage and renormalisation, (batch, latent_length, slots).")
        .def("analyse", &analyse, py::arg("windows").noconvert(), py::arg("threads") = 1,
             py::arg("encodings") = false,
             "(scores, contributions, attention (B, L, slots), novelty (B, L), encodings (B, L, dim) or None) "
             "in one pass; novelty is 1 - cos(encoding, memory read-out) per latent position.")
        .def("profile", &profile, py::arg("windows").noconvert(),
             "Seconds per stage (scale, encoder, similarity, softmax, select, shrink, read, decoder, score) "
             "of scoring the windows on one thread, and the scores; a clock read per stage and query.")
        .def("memory", &memory_matrix, "A copy of the memory matrix in use, (slots, dim).")
        .def("set_memory", &set_memory, py::arg("memory").noconvert(),
             "Replace the memory matrix (slots, dim) float32 (drift following); not thread safe with scoring.");
}
