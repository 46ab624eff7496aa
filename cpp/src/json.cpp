#include "memae/json.h"

#include <charconv>
#include <cmath>
#include <set>
#include <string_view>
#include <system_error>

namespace memae {

namespace {

const char* type_name(Json::Type t) {
    switch (t) {
        case Json::Type::Null: return "null";
        case Json::Type::Bool: return "a boolean";
        case Json::Type::Number: return "a number";
        case Json::Type::String: return "a string";
        case Json::Type::Array: return "an array";
        case Json::Type::Object: return "an object";
    }
    return "?";
}
}  // namespace

class JsonParser {
public:
    JsonParser(const char* data, std::size_t size) : p_(data), end_(data + size), begin_(data) {}

    Json document() {
        Json v = value(0);
        skip_ws();
        if (p_ != end_) fail("trailing characters after the JSON value");
        return v;
    }

private:
    const char* p_;
    const char* end_;
    const char* begin_;
    std::size_t values_ = 0;

    [[noreturn]] void fail(const std::string& msg) const {
        throw FormatError("invalid JSON at byte " + std::to_string(p_ - begin_) + ": " + msg);
    }
    void skip_ws() {
        while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
    }
    bool literal(const char* word) {
        const char* q = p_;
        for (const char* w = word; *w; ++w, ++q) {
            if (q == end_ || *q != *w) return false;
        }
        p_ = q;
        return true;
    }

    /// A value; `depth` is the number of containers around it.
    Json value(int depth) {
        skip_ws();
        if (p_ == end_) fail("unexpected end of input");
        if (++values_ > kMaxJsonValues) fail("more than 262144 values");
        Json v;
        v.begin_ = static_cast<std::size_t>(p_ - begin_);
        value_body(v, depth);
        v.end_ = static_cast<std::size_t>(p_ - begin_);
        return v;
    }

    void value_body(Json& v, int depth) {
        const char c = *p_;
        if ((c == '{' || c == '[') && depth + 1 > kMaxJsonDepth) fail("nesting deeper than 64 levels");
        if (c == '{') {
            v.type_ = Json::Type::Object;
            ++p_;
            skip_ws();
            if (p_ != end_ && *p_ == '}') { ++p_; return; }
            std::set<std::string, std::less<>> keys;
            for (;;) {
                skip_ws();
                if (p_ == end_ || *p_ != '"') fail("expected a string key");
                const char* key_at = p_;
                std::string key = string();
                if (!keys.insert(key).second) {
                    p_ = key_at;
                    fail("duplicate key \"" + printable(key) + "\" in one object");
                }
                skip_ws();
                if (p_ == end_ || *p_ != ':') fail("expected ':'");
                ++p_;
                Json member = value(depth + 1);
                v.object_.emplace_back(std::move(key), std::move(member));
                skip_ws();
                if (p_ == end_) fail("unterminated object");
                if (*p_ == ',') { ++p_; continue; }
                if (*p_ == '}') { ++p_; return; }
                fail("expected ',' or '}'");
            }
        }
        if (c == '[') {
            v.type_ = Json::Type::Array;
            ++p_;
            skip_ws();
            if (p_ != end_ && *p_ == ']') { ++p_; return; }
            for (;;) {
                v.array_.push_back(value(depth + 1));
                skip_ws();
                if (p_ == end_) fail("unterminated array");
                if (*p_ == ',') { ++p_; continue; }
                if (*p_ == ']') { ++p_; return; }
                fail("expected ',' or ']'");
            }
        }
        if (c == '"') {
            v.type_ = Json::Type::String;
            v.string_ = string();
            return;
        }
        if (literal("true")) { v.type_ = Json::Type::Bool; v.bool_ = true; return; }
        if (literal("false")) { v.type_ = Json::Type::Bool; return; }
        if (literal("null")) return;
        if (c == '-' || (c >= '0' && c <= '9')) {
            v.type_ = Json::Type::Number;
            v.number_ = number(v.integral_);
            return;
        }
        // Python's json module writes NaN/Infinity; a bundle must never contain them.
        if (literal("NaN") || literal("Infinity")) fail("NaN/Infinity is not a valid number");
        fail(std::string("unexpected character"));
    }

    /// A key for an error message: at most 40 bytes, control bytes shown as '?'.
    static std::string printable(const std::string& key) {
        std::string out;
        for (char ch : key.substr(0, 40)) out += (static_cast<unsigned char>(ch) < 0x20 || ch == '"') ? '?' : ch;
        return key.size() > 40 ? out + "..." : out;
    }

    double number(bool& integral) {
        const char* start = p_;
        if (*p_ == '-') ++p_;
        auto digits = [&]() {
            const char* d = p_;
            while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
            return p_ - d;
        };
        if (p_ == end_) fail("truncated number");
        if (*p_ == '0') {
            ++p_;
        } else if (digits() == 0) {
            fail("invalid number");
        }
        integral = true;
        if (p_ != end_ && *p_ == '.') {
            ++p_;
            integral = false;
            if (digits() == 0) fail("invalid fraction");
        }
        if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
            ++p_;
            integral = false;
            if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
            if (digits() == 0) fail("invalid exponent");
        }
        if (p_ - start > 64) fail("number literal too long");
        // std::from_chars, unlike strtod, ignores the locale (a "de_DE" process reads "0.5" as
        // 0.5, not 0) and needs no terminated copy. The grammar was checked above; from_chars
        // must consume exactly that token.
        double d = 0.0;
        const auto [stop, err] = std::from_chars(start, p_, d);
        if (err == std::errc::result_out_of_range || (err == std::errc() && !std::isfinite(d))) {
            fail("number out of range");
        }
        if (err != std::errc() || stop != p_) fail("invalid number");
        return d;
    }

    static void put_utf8(std::string& out, std::uint32_t cp) {
        if (cp < 0x80) {
            out += static_cast<char>(cp);
        } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
        }
    }

    /// Validates and copies the UTF-8 sequence that starts with `lead` (already consumed).
    void utf8_sequence(unsigned char lead, std::string& out) {
        int extra = 0;
        std::uint32_t cp = 0;
        if (lead >= 0xC2 && lead <= 0xDF) { extra = 1; cp = lead & 0x1Fu; }
        else if (lead >= 0xE0 && lead <= 0xEF) { extra = 2; cp = lead & 0x0Fu; }
        else if (lead >= 0xF0 && lead <= 0xF4) { extra = 3; cp = lead & 0x07u; }
        else fail("invalid UTF-8 in string");
        if (end_ - p_ < extra) fail("truncated UTF-8 sequence");
        out += static_cast<char>(lead);
        for (int i = 0; i < extra; ++i) {
            const unsigned char c = static_cast<unsigned char>(*p_++);
            if ((c & 0xC0u) != 0x80u) fail("invalid UTF-8 in string");
            cp = (cp << 6) | (c & 0x3Fu);
            out += static_cast<char>(c);
        }
        const std::uint32_t min_cp = extra == 1 ? 0x80u : extra == 2 ? 0x800u : 0x10000u;
        if (cp < min_cp || cp > 0x10FFFFu || (cp >= 0xD800u && cp <= 0xDFFFu)) fail("invalid UTF-8 in string");
    }

    std::uint32_t hex4() {
        if (end_ - p_ < 4) fail("truncated \\u escape");
        std::uint32_t v = 0;
        for (int i = 0; i < 4; ++i, ++p_) {
            const char h = *p_;
            v <<= 4;
            if (h >= '0' && h <= '9') v |= static_cast<std::uint32_t>(h - '0');
            else if (h >= 'a' && h <= 'f') v |= static_cast<std::uint32_t>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F') v |= static_cast<std::uint32_t>(h - 'A' + 10);
            else fail("invalid \\u escape");
        }
        return v;
    }

    std::string string() {
        ++p_;  // opening quote
        std::string out;
        for (;;) {
            if (p_ == end_) fail("unterminated string");
            const unsigned char c = static_cast<unsigned char>(*p_++);
            if (c == '"') return out;
            if (c < 0x20) fail("control character in string");
            if (c >= 0x80) {  // must be well-formed UTF-8: names end up in Python str and messages
                utf8_sequence(c, out);
                continue;
            }
            if (c != '\\') { out += static_cast<char>(c); continue; }
            if (p_ == end_) fail("unterminated escape");
            const char e = *p_++;
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    std::uint32_t cp = hex4();
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') fail("lone surrogate");
                        p_ += 2;
                        const std::uint32_t lo = hex4();
                        if (lo < 0xDC00 || lo > 0xDFFF) fail("invalid surrogate pair");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                        fail("lone surrogate");
                    }
                    put_utf8(out, cp);
                    break;
                }
                default: fail("invalid escape");
            }
        }
    }
};

Json Json::parse(const char* data, std::size_t size) {
    JsonParser parser(data, size);
    return parser.document();
}

std::string Json::format(double d) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, d);
    return std::string(buf, r.ptr);
}

const Json* Json::find(const std::string& key) const {
    if (type_ != Type::Object) return nullptr;
    for (const auto& kv : object_) {
        if (kv.first == key) return &kv.second;
    }
    return nullptr;
}

const Json& Json::at(const std::string& key, const std::string& where) const {
    if (type_ != Type::Object) throw FormatError(where + " must be an object, got " + type_name(type_));
    const Json* v = find(key);
    if (!v) throw FormatError(where + " has no key '" + key + "'");
    return *v;
}

const std::vector<Json>& Json::items(const std::string& where) const {
    if (type_ != Type::Array) throw FormatError(where + " must be an array, got " + type_name(type_));
    return array_;
}

const std::vector<std::pair<std::string, Json>>& Json::members(const std::string& where) const {
    if (type_ != Type::Object) throw FormatError(where + " must be an object, got " + type_name(type_));
    return object_;
}

double Json::number(const std::string& where) const {
    if (type_ != Type::Number) throw FormatError(where + " must be a number, got " + type_name(type_));
    return number_;
}

std::int64_t Json::integer(const std::string& where, std::int64_t lo, std::int64_t hi) const {
    const double d = number(where);
    if (!integral_ || d != std::floor(d) || d < static_cast<double>(lo) || d > static_cast<double>(hi)) {
        throw FormatError(where + " must be an integer in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "]");
    }
    return static_cast<std::int64_t>(d);
}

const std::string& Json::string(const std::string& where) const {
    if (type_ != Type::String) throw FormatError(where + " must be a string, got " + type_name(type_));
    return string_;
}

bool Json::boolean(const std::string& where) const {
    if (type_ != Type::Bool) throw FormatError(where + " must be a boolean, got " + type_name(type_));
    return bool_;
}

}  // namespace memae
