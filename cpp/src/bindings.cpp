#include <pybind11/pybind11.h>

PYBIND11_MODULE(_runtime, m) {
    m.doc() = "memae-ts C++ inference runtime";
    m.def("build_info", []() { return std::string("memae-ts runtime (placeholder)"); });
}
