// Number and time text of score records; see memae/score_records.h for why each form.
#include "memae/score_records.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <system_error>

namespace memae {

void append_repr(std::string& out, double x) {
    // Shortest round-trip digits from to_chars in scientific form: [-]d[.ddd]e(+|-)XX.
    char buf[64];
    const auto res = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::scientific);
    if (res.ec != std::errc()) throw std::runtime_error("to_chars failed");
    const char* p = buf;
    const char* end = res.ptr;
    if (*p == '-') {
        out.push_back('-');
        ++p;
    }
    char digits[32];
    int n = 0;
    const char* e = p;
    while (e < end && *e != 'e') {
        if (*e != '.') digits[n++] = *e;
        ++e;
    }
    int exp10 = 0;
    std::from_chars(e + 1 + (e[1] == '+'), end, exp10);
    while (n > 1 && digits[n - 1] == '0') --n;  // to_chars writes no trailing zeros; be sure
    // Python (Objects/floatobject.c, 'r' mode): value = 0.d1d2...dn x 10^decpt.
    const int decpt = exp10 + 1;
    if (decpt <= -4 || decpt > 16) {
        out.push_back(digits[0]);
        if (n > 1) {
            out.push_back('.');
            out.append(digits + 1, static_cast<std::size_t>(n - 1));
        }
        out.push_back('e');
        const int a = exp10 < 0 ? -exp10 : exp10;
        out.push_back(exp10 < 0 ? '-' : '+');
        if (a < 10) out.push_back('0');
        char eb[8];
        const auto r = std::to_chars(eb, eb + sizeof(eb), a);
        out.append(eb, r.ptr);
        return;
    }
    if (decpt <= 0) {  // 0.000ddd
        out.append("0.");
        out.append(static_cast<std::size_t>(-decpt), '0');
        out.append(digits, static_cast<std::size_t>(n));
        return;
    }
    if (n <= decpt) {  // an integer: digits, zeros, ".0"
        out.append(digits, static_cast<std::size_t>(n));
        out.append(static_cast<std::size_t>(decpt - n), '0');
        out.append(".0");
        return;
    }
    out.append(digits, static_cast<std::size_t>(decpt));
    out.push_back('.');
    out.append(digits + decpt, static_cast<std::size_t>(n - decpt));
}

void append_json_number(std::string& out, double x) {
    if (std::isfinite(x)) {
        append_repr(out, x);
    } else {
        out.append("null");
    }
}

void append_fixed4(std::string& out, double x) {
    if (std::isnan(x)) {
        out.append("nan");  // Python writes no sign for a NaN
        return;
    }
    if (std::isinf(x)) {
        out.append(x < 0 ? "-inf" : "inf");
        return;
    }
    char buf[400];  // 1.8e308 with 4 decimals fits
    const auto res = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::fixed, 4);
    if (res.ec != std::errc()) throw std::runtime_error("to_chars failed");
    out.append(buf, res.ptr);
}

namespace {

void two(std::string& out, unsigned v) {
    out.push_back(static_cast<char>('0' + v / 10));
    out.push_back(static_cast<char>('0' + v % 10));
}

}  // namespace

void append_utc(std::string& out, std::int64_t micros) {
    if (micros < kMinUtcMicros || micros > kMaxUtcMicros) throw std::invalid_argument("time outside the years 1-9999");
    // Floor division: times before 1970 are negative.
    std::int64_t secs = micros / 1000000;
    std::int64_t frac = micros % 1000000;
    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    std::int64_t days = secs / 86400;
    std::int64_t sod = secs % 86400;
    if (sod < 0) {
        sod += 86400;
        days -= 1;
    }
    // Civil date from days since 1970-01-01 (H. Hinnant, "chrono-compatible low-level date algorithms").
    const std::int64_t z = days + 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    const unsigned day = doy - (153 * mp + 2) / 5 + 1;
    const unsigned month = mp < 10 ? mp + 3 : mp - 9;
    const std::int64_t year = static_cast<std::int64_t>(yoe) + era * 400 + (month <= 2);
    const unsigned y = static_cast<unsigned>(year);
    two(out, y / 100);
    two(out, y % 100);
    out.push_back('-');
    two(out, month);
    out.push_back('-');
    two(out, day);
    out.push_back('T');
    two(out, static_cast<unsigned>(sod / 3600));
    out.push_back(':');
    two(out, static_cast<unsigned>(sod / 60 % 60));
    out.push_back(':');
    two(out, static_cast<unsigned>(sod % 60));
    if (frac) {
        out.push_back('.');
        char f[7];
        unsigned v = static_cast<unsigned>(frac);
        for (int i = 5; i >= 0; --i) {
            f[i] = static_cast<char>('0' + v % 10);
            v /= 10;
        }
        out.append(f, 6);
    }
    out.push_back('Z');
}

}  // namespace memae
