// Score record text fuzz target (memae/score_records.h). The input is read as 8-byte doubles and
// microsecond times; each is formatted and checked against a second implementation:
//  - append_repr: reads back (strtod) to the same double, and is the shortest such digit string
//    (one significant digit fewer never reads back), in Python's layout (fixed for exponents
//    -4..15 with ".0" when integral, else d.ddde+XX);
//  - append_fixed4: equals glibc's "%.4f" (exact) with Python's spelling of nan/inf;
//  - append_utc: the calendar fields equal gmtime_r's, the fraction the input's.
// Python's own repr and numpy's datetime_as_string are compared in
// tests/test_score_records_native.py.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "memae/score_records.h"

namespace {

[[noreturn]] void fail(const char* what, double x, const std::string& text) {
    std::fprintf(stderr, "%s: %.17g (bits %016llx) -> '%s'\n", what, x,
                 static_cast<unsigned long long>([&] {
                     std::uint64_t b;
                     std::memcpy(&b, &x, 8);
                     return b;
                 }()),
                 text.c_str());
    std::abort();
}

void check_repr(double x) {
    std::string s;
    memae::append_repr(s, x);
    char* end = nullptr;
    const double back = std::strtod(s.c_str(), &end);
    if (end != s.c_str() + s.size() || std::memcmp(&back, &x, 8) != 0) fail("repr does not read back", x, s);
    // Layout: [-]digits with one '.', or [-]d[.ddd]e(+|-)XX.
    const std::size_t epos = s.find('e');
    const std::string mant = s.substr(s[0] == '-', epos == std::string::npos ? std::string::npos : epos - (s[0] == '-'));
    std::string digits;
    for (char c : mant) {
        if (c >= '0' && c <= '9') {
            digits.push_back(c);
        } else if (c != '.') {
            fail("repr has a stray character", x, s);
        }
    }
    if (epos == std::string::npos && mant.find('.') == std::string::npos) fail("repr lacks '.'", x, s);
    if (epos != std::string::npos && (s.size() - epos < 4 || (s[epos + 1] != '+' && s[epos + 1] != '-'))) {
        fail("repr exponent is not e+XX", x, s);
    }
    // Shortest: the significant digits minus one never read back.
    const std::size_t first = digits.find_first_not_of('0');
    if (first == std::string::npos) return;  // zero
    std::size_t last = digits.find_last_not_of('0');
    const int sig = static_cast<int>(last - first + 1);
    if (sig > 17) fail("repr has more than 17 significant digits", x, s);
    if (sig > 1) {
        char shorter[64];
        std::snprintf(shorter, sizeof(shorter), "%.*e", sig - 2, x);
        if (std::strtod(shorter, nullptr) == x) fail("repr is not the shortest", x, s);
    }
}

void check_fixed4(double x) {
    std::string s;
    memae::append_fixed4(s, x);
    std::string want;
    if (std::isnan(x)) {
        want = "nan";
    } else {
        std::vector<char> buf(400);
        std::snprintf(buf.data(), buf.size(), "%.4f", x);
        want = buf.data();
    }
    if (s != want) fail(("fixed4 differs from printf '" + want + "'").c_str(), x, s);
}

void check_utc(std::int64_t micros) {
    const std::int64_t span = memae::kMaxUtcMicros - memae::kMinUtcMicros + 1;
    std::int64_t m = micros % span;
    if (m < 0) m += span;
    m += memae::kMinUtcMicros;
    std::string s;
    memae::append_utc(s, m);
    std::int64_t secs = m / 1000000, frac = m % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    const std::time_t t = static_cast<std::time_t>(secs);
    if (static_cast<std::int64_t>(t) != secs) return;  // a 32-bit time_t (armhf): no second opinion
    std::tm tm{};
    if (gmtime_r(&t, &tm) == nullptr) fail("gmtime_r failed", static_cast<double>(m), s);
    char want[64];
    std::snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec);
    std::string w = want;
    if (frac) {
        char f[16];
        std::snprintf(f, sizeof(f), ".%06lld", static_cast<long long>(frac));
        w += f;
    }
    w += 'Z';
    if (s != w) fail(("utc differs from gmtime_r '" + w + "'").c_str(), static_cast<double>(m), s);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    for (std::size_t i = 0; i + 8 <= size; i += 8) {
        double x;
        std::memcpy(&x, data + i, 8);
        if (std::isfinite(x)) check_repr(x);
        check_fixed4(x);
        std::string j;
        memae::append_json_number(j, x);
        if (!std::isfinite(x) && j != "null") fail("a non-finite number is not null", x, j);
        std::int64_t m;
        std::memcpy(&m, data + i, 8);
        check_utc(m);
    }
    return 0;
}

#if defined(MEMAE_FUZZ_SEEDS)
std::vector<std::vector<std::uint8_t>> memae_fuzz_seeds() {
    const double values[] = {0.0,   -0.0,    1.0,       0.1,     1e16,   9999999999999998.0, 1e-4, 1e-5, 5e-324,
                             2.5e-308, 1.7976931348623157e308, 0.30000000000000004, 123456.789, -2.5, 0.00005,
                             12345.67895, NAN, INFINITY, -INFINITY};
    const std::int64_t times[] = {0, -1, 1, 1500000, memae::kMinUtcMicros, memae::kMaxUtcMicros, 951782400000000LL,
                                  -62135596800000000LL + 86400000000LL * 59};
    std::vector<std::vector<std::uint8_t>> seeds;
    std::vector<std::uint8_t> all;
    for (double v : values) {
        std::vector<std::uint8_t> one(8);
        std::memcpy(one.data(), &v, 8);
        all.insert(all.end(), one.begin(), one.end());
        seeds.push_back(one);
    }
    for (std::int64_t t : times) {
        std::vector<std::uint8_t> one(8);
        std::memcpy(one.data(), &t, 8);
        seeds.push_back(one);
    }
    seeds.push_back(all);
    return seeds;
}
#endif
