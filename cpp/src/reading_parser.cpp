// Strict reading parser; see memae/reading_parser.h for what it accepts and why.
#include "memae/reading_parser.h"

#include <charconv>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <system_error>
#include <utility>

namespace memae {

namespace {

constexpr double kEpochMin = -62135596800.0;  // 0001-01-01T00:00:00Z
constexpr double kEpochMax = 253402300799.0;  // 9999-12-31T23:59:59Z
constexpr std::uint64_t kExactInt = std::uint64_t{1} << 53;

/// A cursor over one message.
struct Cursor {
    const char* p;
    const char* end;

    void ws() {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) ++p;
    }
    bool eat(char c) {
        if (p < end && *p == c) {
            ++p;
            return true;
        }
        return false;
    }
    /// `ch` with any whitespace around it.
    bool punct(char ch) {
        ws();
        if (!eat(ch)) return false;
        ws();
        return true;
    }
    /// After an object member: 1 at the object's closing brace, 0 past a comma, -1 otherwise.
    int after_member() {
        ws();
        if (eat('}')) return 1;
        return punct(',') ? 0 : -1;
    }
    bool word(std::string_view w) {
        if (static_cast<std::size_t>(end - p) < w.size() || std::string_view(p, w.size()) != w) return false;
        p += w.size();
        return true;
    }
};

bool cont(unsigned char c) { return (c & 0xC0) == 0x80; }

/// A string without escapes or control characters, valid UTF-8; `out` is its text.
bool read_string(Cursor& c, std::string_view& out) {
    if (!c.eat('"')) return false;
    const char* start = c.p;
    const char* p = c.p;
    const char* end = c.end;
    while (p < end) {
        // Eight plain bytes at a time (none a quote, backslash, control or non-ASCII byte).
        while (end - p >= 8) {
            std::uint64_t x;
            std::memcpy(&x, p, 8);
            constexpr std::uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
            const std::uint64_t quote = x ^ (ones * '"'), slash = x ^ (ones * '\\');
            const std::uint64_t special = ((quote - ones) & ~quote) | ((slash - ones) & ~slash) | ((x - ones * 0x20) & ~x) | x;
            if (special & highs) break;
            p += 8;
        }
        if (p == end) break;
        const unsigned char b = static_cast<unsigned char>(*p);
        if (b == '"') {
            out = std::string_view(start, static_cast<std::size_t>(p - start));
            c.p = p + 1;
            return true;
        }
        if (b < 0x20 || b == '\\') return false;
        if (b < 0x80) {
            ++p;
            continue;
        }
        const std::size_t left = static_cast<std::size_t>(end - p);
        const unsigned char b1 = left > 1 ? static_cast<unsigned char>(p[1]) : 0;
        const unsigned char b2 = left > 2 ? static_cast<unsigned char>(p[2]) : 0;
        const unsigned char b3 = left > 3 ? static_cast<unsigned char>(p[3]) : 0;
        if (b >= 0xC2 && b <= 0xDF) {
            if (!cont(b1)) return false;
            p += 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            const unsigned char lo = b == 0xE0 ? 0xA0 : 0x80;
            const unsigned char hi = b == 0xED ? 0x9F : 0xBF;  // no surrogates
            if (b1 < lo || b1 > hi || !cont(b2)) return false;
            p += 3;
        } else if (b >= 0xF0 && b <= 0xF4) {
            const unsigned char lo = b == 0xF0 ? 0x90 : 0x80;
            const unsigned char hi = b == 0xF4 ? 0x8F : 0xBF;  // at most U+10FFFF
            if (b1 < lo || b1 > hi || !cont(b2) || !cont(b3)) return false;
            p += 4;
        } else {
            return false;
        }
    }
    return false;
}

bool digit(char ch) { return ch >= '0' && ch <= '9'; }

// Exact powers of ten as doubles (10^22 is the largest one).
constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                             1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/// A number in JSON's grammar at the cursor; `value` as the reference reads it.
bool read_number(Cursor& c, double& value) {
    const char* start = c.p;
    const char* p = c.p;
    const char* end = c.end;
    const bool negative = p < end && *p == '-';
    if (negative) ++p;
    if (p == end || !digit(*p)) return false;
    // The digits as an integer (while it has at most 19) and the decimal exponent of its last.
    std::uint64_t mantissa = 0;
    int n_digits = 0;  // significant digits (leading zeros not counted)
    bool nonzero = false;
    auto take = [&](char ch) {
        if (ch != '0' || nonzero) {
            nonzero = true;
            if (n_digits < 19) mantissa = mantissa * 10 + static_cast<std::uint64_t>(ch - '0');
            ++n_digits;
        }
    };
    if (*p == '0') {
        ++p;
    } else {
        while (p < end && digit(*p)) take(*p++);
    }
    const int int_digits = n_digits;
    bool is_int = true;
    int fraction_digits = 0;
    if (p < end && *p == '.') {
        ++p;
        if (p == end || !digit(*p)) return false;
        while (p < end && digit(*p)) {
            take(*p++);
            ++fraction_digits;
        }
        is_int = false;
    }
    long exp10 = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        ++p;
        bool exp_negative = false;
        if (p < end && (*p == '+' || *p == '-')) exp_negative = *p++ == '-';
        if (p == end || !digit(*p)) return false;
        while (p < end && digit(*p)) {
            if (exp10 < 100000) exp10 = exp10 * 10 + (*p - '0');
            ++p;
        }
        if (exp_negative) exp10 = -exp10;
        is_int = false;
    }
    if (is_int) {
        // orjson gives a Python int; float(int) is exact up to 2^53 (and "-0" is +0.0).
        if (int_digits > 16 || mantissa > kExactInt) return false;
        value = static_cast<double>(mantissa);
        if (negative && mantissa != 0) value = -value;
        c.p = p;
        return true;
    }
    double v = 0.0;
    exp10 -= fraction_digits;
#if FLT_EVAL_METHOD == 0
    // Clinger's fast path: an integer and a power of ten both exact doubles, so one IEEE
    // multiplication or division is the correctly rounded value (what any exact parser gives).
    if (n_digits <= 19 && mantissa <= kExactInt && exp10 >= -22 && exp10 <= 22) {
        const double m = static_cast<double>(mantissa);
        v = exp10 < 0 ? m / kPow10[-exp10] : m * kPow10[exp10];
        value = negative ? -v : v;
        c.p = p;
        return true;
    }
#endif
    const auto res = std::from_chars(start, p, v, std::chars_format::general);
    if (res.ec != std::errc() || res.ptr != p || !std::isfinite(v)) return false;
    if (v == 0.0 && nonzero) return false;  // underflow: leave it to the reference
    value = v;
    c.p = p;
    return true;
}

/// A sensor value: a number, or null (NaN, a missing value).
bool read_value(Cursor& c, double& value) {
    if (c.p < c.end && *c.p == 'n') {
        if (!c.word("null")) return false;
        value = std::numeric_limits<double>::quiet_NaN();
        return true;
    }
    return read_number(c, value);
}

/// A value the reference ignores: a scalar only (no nesting to reason about).
bool skip_scalar(Cursor& c) {
    if (c.p == c.end) return false;
    switch (*c.p) {
        case '"': {
            std::string_view s;
            return read_string(c, s);
        }
        case 'n': return c.word("null");
        case 't': return c.word("true");
        case 'f': return c.word("false");
        default: {
            double v;
            // Any number in the grammar; its value does not matter, but ours is strict, so a
            // big one falls back (the reference decides).
            return read_number(c, v);
        }
    }
}

bool read_ts(Cursor& c, double& ts) {
    if (c.p < c.end && *c.p == '"') {
        std::string_view s;
        return read_string(c, s) && parse_iso_time(s, ts);
    }
    double v;
    if (!read_number(c, v) || !(v >= kEpochMin && v <= kEpochMax)) return false;
    ts = v;
    return true;
}

bool fixed_digits(const char* p, int n, int& out) {
    int v = 0;
    for (int i = 0; i < n; ++i) {
        if (!digit(p[i])) return false;
        v = v * 10 + (p[i] - '0');
    }
    out = v;
    return true;
}

std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
    // H. Hinnant, "chrono-compatible low-level date algorithms".
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

}  // namespace

bool parse_json_number(std::string_view text, double& value) {
    Cursor c{text.data(), text.data() + text.size()};
    double v;
    if (!read_number(c, v) || c.p != c.end) return false;
    value = v;
    return true;
}

bool parse_iso_time(std::string_view s, double& seconds) {
    // YYYY-MM-DD?HH:MM:SS  (19 chars), then [.fff|.ffffff], then [Z|z|+HH:MM|-HH:MM].
    if (s.size() < 19) return false;
    const char* p = s.data();
    int year, month, day, hour, minute, second;
    if (!fixed_digits(p, 4, year) || p[4] != '-' || !fixed_digits(p + 5, 2, month) || p[7] != '-' ||
        !fixed_digits(p + 8, 2, day) || (p[10] != 'T' && p[10] != ' ') || !fixed_digits(p + 11, 2, hour) ||
        p[13] != ':' || !fixed_digits(p + 14, 2, minute) || p[16] != ':' || !fixed_digits(p + 17, 2, second)) {
        return false;
    }
    std::size_t i = 19;
    int micros = 0;
    if (i < s.size() && s[i] == '.') {
        std::size_t n = 0;
        while (i + 1 + n < s.size() && digit(s[i + 1 + n])) ++n;
        if (n != 3 && n != 6) return false;  // what every Python version reads alike
        int f = 0;
        fixed_digits(p + i + 1, static_cast<int>(n), f);
        micros = n == 3 ? f * 1000 : f;
        i += 1 + n;
    }
    int offset = 0;  // seconds east of UTC
    if (i < s.size()) {
        if (s.size() - i == 1 && (s[i] == 'Z' || s[i] == 'z')) {
            i += 1;
        } else if (s.size() - i == 6 && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
            int oh, om;
            if (!fixed_digits(p + i + 1, 2, oh) || !fixed_digits(p + i + 4, 2, om) || oh > 23 || om > 59) return false;
            offset = (oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
            i += 6;
        } else {
            return false;
        }
    }
    if (i != s.size()) return false;
    if (year < 1 || month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || second > 59) return false;
    static constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const unsigned month_days = kDays[month - 1] + (month == 2 && leap ? 1 : 0);
    if (static_cast<unsigned>(day) > month_days) return false;
    const std::int64_t secs = days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 +
                              hour * 3600 + minute * 60 + second - offset;
    const std::int64_t total = secs * 1000000 + micros;
    const std::int64_t limit = static_cast<std::int64_t>(kExactInt);
    if (total > limit || total < -limit) return false;
    // Python: timedelta.total_seconds() = microseconds / 10**6, an int division correctly
    // rounded; both are exact doubles here, so one IEEE division gives the same double.
    seconds = static_cast<double>(total) / 1e6;
    return true;
}

ReadingParser::ReadingParser(std::vector<std::string_view> sensors) : sensors_(std::move(sensors)) {}

bool ReadingParser::parse(std::string_view message, std::string_view asset, double& ts, double* row) const {
    const std::size_t n = sensors_.size();
    if (n == 0) return false;
    Cursor c{message.data(), message.data() + message.size()};
    c.ws();
    if (c.eat('[')) {  // [ts, v0, ..., v(n-1)]
        c.ws();
        if (!read_ts(c, ts)) return false;
        for (std::size_t j = 0; j < n; ++j) {
            if (!c.punct(',')) return false;
            if (!read_value(c, row[j])) return false;
        }
        c.ws();
        if (!c.eat(']')) return false;
    } else if (c.eat('{')) {
        bool seen_ts = false, seen_values = false, seen_asset = false;
        c.ws();
        if (c.eat('}')) return false;  // neither ts nor values
        while (true) {
            std::string_view key;
            if (!read_string(c, key)) return false;
            if (!c.punct(':')) return false;
            if (key == "ts") {
                if (seen_ts || !read_ts(c, ts)) return false;
                seen_ts = true;
            } else if (key == "asset") {
                if (seen_asset) return false;
                seen_asset = true;
                if (!c.word("null")) {
                    std::string_view body_asset;
                    if (!read_string(c, body_asset) || body_asset != asset) return false;
                }
            } else if (key == "values") {
                if (seen_values || !c.eat('{')) return false;
                seen_values = true;
                // found[j]: sensor j seen; producers mostly write the bundle's order, so
                // the next sensor is tried first.
                unsigned char small[256] = {};
                std::vector<unsigned char> big;
                unsigned char* found = small;
                if (n > sizeof(small)) {
                    big.assign(n, 0);
                    found = big.data();
                }
                std::size_t count = 0, hint = 0;
                c.ws();
                if (!c.eat('}')) {
                    while (true) {
                        std::string_view name;
                        if (!read_string(c, name)) return false;
                        if (!c.punct(':')) return false;
                        std::size_t j = n;
                        if (hint < n && sensors_[hint] == name) {
                            j = hint;
                        } else {
                            for (std::size_t k = 0; k < n; ++k) {
                                if (sensors_[k] == name) {
                                    j = k;
                                    break;
                                }
                            }
                        }
                        if (j < n) {
                            if (found[j] || !read_value(c, row[j])) return false;
                            found[j] = 1;
                            ++count;
                            hint = j + 1;
                        } else if (!skip_scalar(c)) {
                            return false;
                        }
                        const int closed = c.after_member();
                        if (closed < 0) return false;
                        if (closed > 0) break;
                    }
                }
                if (count != n) return false;
            } else if (!skip_scalar(c)) {
                return false;
            }
            const int closed = c.after_member();
            if (closed < 0) return false;
            if (closed > 0) break;
        }
        if (!seen_ts || !seen_values) return false;
    } else {
        return false;
    }
    c.ws();
    return c.p == c.end;
}

}  // namespace memae
