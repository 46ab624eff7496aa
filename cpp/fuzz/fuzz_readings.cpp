// Strict reading parser fuzz target (memae/reading_parser.h). The first byte picks the bundle's
// sensors (1-4 of a fixed list, one non-ASCII) and the mode:
//  - even: the rest is one message. It never crashes and parses alike twice; when it is clean,
//    the time is finite within the years 1-9999 and every value finite or NaN, and writing it
//    again in both forms (numbers as Python's repr via append_repr, NaN as null; the object with
//    its sensors in reverse and an extra field) parses clean to the same bits.
//  - odd: the rest is read as int64 microseconds and doubles, written as a clean message
//    (ISO time with Z, with an offset, or epoch seconds; compact or object form) that must parse
//    clean to microseconds / 1e6 and the same value bits (a non-finite value: null for NaN, which
//    reads back as NaN; an infinite one must make the message not clean).
// Python's own reading of the same messages (orjson + parse_timestamp) is compared in
// tests/test_reading_parser_native.py.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "memae/reading_parser.h"
#include "memae/score_records.h"

namespace {

const char* const kSensors[] = {"Pressure", "Temp", ("Flow \xc2\xb0" "C"), "x"};
constexpr std::int64_t kExact = std::int64_t{1} << 53;

[[noreturn]] void fail(const char* what, const std::string& message) {
    std::fprintf(stderr, "%s: '%s'\n", what, message.c_str());
    std::abort();
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, 8) == 0; }

struct Parsed {
    bool clean = false;
    double ts = 0.0;
    std::vector<double> row;
};

Parsed parse(const memae::ReadingParser& parser, const std::string& message) {
    Parsed out;
    out.row.assign(parser.n_sensors(), 0.0);
    out.clean = parser.parse(message, "pump-7", out.ts, out.row.data());
    return out;
}

void append_value(std::string& out, double v) {
    if (std::isnan(v)) {
        out.append("null");
    } else if (std::isinf(v)) {
        out.append(v < 0 ? "-1e999" : "1e999");
    } else {
        memae::append_repr(out, v);
    }
}

std::string compact(const std::string& ts, const std::vector<double>& row) {
    std::string m = "[" + ts;
    for (double v : row) {
        m.push_back(',');
        append_value(m, v);
    }
    m.push_back(']');
    return m;
}

std::string object(const std::string& ts, const std::vector<double>& row, bool reverse) {
    std::string m = "{\"asset\":\"pump-7\",\"note\":\"x\",\"values\":{";
    const std::size_t n = row.size();
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t j = reverse ? n - 1 - i : i;
        if (i) m.push_back(',');
        m.append("\"").append(kSensors[j]).append("\":");
        append_value(m, row[j]);
    }
    m.append("},\"ts\":").append(ts).append("}");
    return m;
}

void expect(const memae::ReadingParser& parser, const std::string& message, double ts, const std::vector<double>& row) {
    const Parsed got = parse(parser, message);
    if (!got.clean) fail("a clean message is not clean", message);
    if (!same_bits(got.ts, ts)) fail("time differs", message);
    for (std::size_t j = 0; j < row.size(); ++j) {
        if (std::isnan(row[j]) ? !std::isnan(got.row[j]) : !same_bits(got.row[j], row[j])) fail("value differs", message);
    }
}

void raw(const memae::ReadingParser& parser, const std::string& message) {
    const Parsed a = parse(parser, message);
    const Parsed b = parse(parser, message);
    if (a.clean != b.clean) fail("parses differently twice", message);
    if (!a.clean) return;
    if (!same_bits(a.ts, b.ts)) fail("time differs between two parses", message);
    for (std::size_t j = 0; j < a.row.size(); ++j) {
        if (!same_bits(a.row[j], b.row[j])) fail("value differs between two parses", message);
    }
    if (!(a.ts >= -62135596800.0 && a.ts <= 253402300799.0)) fail("time out of range", message);
    for (double v : a.row) {
        if (std::isinf(v)) fail("an infinite value is clean", message);
    }
    std::string ts;
    memae::append_repr(ts, a.ts);
    expect(parser, compact(ts, a.row), a.ts, a.row);
    expect(parser, object(ts, a.row, true), a.ts, a.row);
}

/// Numbers as printf writes them with `digits` significant digits: parse_json_number agrees with
/// glibc's strtod (correctly rounded) wherever it answers, and answers for every short decimal
/// of a normal double (Clinger's fast path or from_chars) and every integer up to 2^53.
void check_number(double x, int digits) {
    if (!std::isfinite(x)) return;
    char text[512];
    for (const char* format : {"%.*e", "%.*g", "%.*f"}) {
        const int n = std::snprintf(text, sizeof(text), format, digits, x);
        if (n <= 0 || n >= static_cast<int>(sizeof(text))) continue;
        const std::string_view t(text, static_cast<std::size_t>(n));
        double got = 0.0;
        const bool ok = memae::parse_json_number(t, got);
        const bool integer = t.find_first_of(".eE") == std::string_view::npos;
        double want = std::strtod(text, nullptr);
        if (integer) want = want == 0.0 ? 0.0 : want;  // the integer -0 is +0.0 as Python reads it
        const bool must = integer ? std::fabs(want) <= 9007199254740992.0
                                  : std::isfinite(want) && (std::fabs(want) >= 2.2250738585072014e-308 || want == 0.0);
        if (!ok) {
            if (must) fail("a plain number is refused", std::string(t));
            continue;
        }
        if (!same_bits(got, want)) fail("number differs from strtod", std::string(t));
    }
}

void structured(const memae::ReadingParser& parser, const std::uint8_t* data, std::size_t size) {
    if (size < 9) return;
    const unsigned form = data[0];
    std::int64_t micros;
    std::memcpy(&micros, data + 1, 8);
    micros %= kExact;  // |micros| < 2^53: what the ISO reader takes
    std::vector<double> row(parser.n_sensors(), 0.0);
    bool infinite = false;
    for (std::size_t j = 0; j < row.size(); ++j) {
        if (9 + 8 * (j + 1) <= size) std::memcpy(&row[j], data + 9 + 8 * j, 8);
        infinite |= std::isinf(row[j]);
        check_number(row[j], (form >> 5) + 8 * static_cast<int>(j % 3));
    }
    std::string ts;
    double want = static_cast<double>(micros) / 1e6;
    switch (form % 3) {
        case 0:
            ts = "\"";
            memae::append_utc(ts, micros);
            ts.push_back('"');
            break;
        case 1: {  // the same instant as local time at +05:30 or -09:45
            const bool east = form & 8;
            const std::int64_t offset = (east ? 5 * 3600 + 30 * 60 : -(9 * 3600 + 45 * 60)) * std::int64_t{1000000};
            ts = "\"";
            memae::append_utc(ts, micros + offset);
            ts.pop_back();  // the Z
            ts.append(east ? "+05:30\"" : "-09:45\"");
            break;
        }
        default:
            memae::append_repr(ts, want);
            break;
    }
    const std::string message = form & 4 ? object(ts, row, form & 16) : compact(ts, row);
    if (infinite) {
        if (parse(parser, message).clean) fail("an infinite value is clean", message);
        return;
    }
    expect(parser, message, want, row);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    std::vector<std::string_view> sensors;
    const std::size_t n = 1 + (data[0] >> 1) % 4;
    for (std::size_t j = 0; j < n; ++j) sensors.emplace_back(kSensors[j]);
    const memae::ReadingParser parser(sensors);
    if (data[0] & 1) {
        structured(parser, data + 1, size - 1);
    } else {
        raw(parser, std::string(reinterpret_cast<const char*>(data + 1), size - 1));
    }
    return 0;
}

#if defined(MEMAE_FUZZ_SEEDS)
std::vector<std::vector<std::uint8_t>> memae_fuzz_seeds() {
    std::vector<std::vector<std::uint8_t>> seeds;
    auto message = [&](int n_sensors, const std::string& text) {
        const std::string bytes = std::string(1, static_cast<char>((n_sensors - 1) << 1)) + text;
        seeds.emplace_back(bytes.begin(), bytes.end());
    };
    message(3, "{\"asset\":\"pump-7\",\"ts\":\"2026-11-30T04:10:00Z\",\"values\":{\"Pressure\":1.02,\"Temp\":null,"
               "\"Flow \xc2\xb0" "C\":-3}}");
    message(3, "[1796013000.5, 1e-3, -0, 17]");
    message(2, " [\"2026-11-30 04:10:00.123+01:00\",0.30000000000000004,null] ");
    message(1, "{\"ts\":1796013000,\"values\":{\"Extra\":true,\"Pressure\":9007199254740992},\"id\":\"\xe2\x82\xac\"}");
    message(4, "[\"2026-02-29T00:00:00Z\",1,2,3,4]");
    message(2, "{\"ts\":\"1969-12-31T23:59:59.999999-00:00\",\"values\":{\"Temp\":2.5e+300,\"Pressure\":-0.0}}");
    for (unsigned form = 0; form < 32; form += 5) {
        std::vector<std::uint8_t> s(1, static_cast<std::uint8_t>(1 | (form % 4) << 1));
        s.push_back(static_cast<std::uint8_t>(form));
        const std::int64_t micros = 1796013000123456LL - static_cast<std::int64_t>(form) * 86400000000LL * 400;
        const double values[] = {form % 2 ? 1.7976931348623157e308 : 1.5, NAN, form % 3 ? -2.5e-7 : 2.2250738585072014e-308,
                                 form % 4 ? 123456789.0 : 9007199254740993.0};
        s.resize(s.size() + 8);
        std::memcpy(s.data() + 2, &micros, 8);
        for (double v : values) {
            const std::size_t at = s.size();
            s.resize(at + 8);
            std::memcpy(s.data() + at, &v, 8);
        }
        seeds.push_back(s);
    }
    return seeds;
}
#endif
