// Minimal strict JSON reader for bundle configs and safetensors headers.
//
// Why hand-written: the runtime must build from PyPI/Debian packages alone and the loader must be
// safe on hostile bytes (it is fuzzed). This parser works on a bounded buffer, never reads past
// it, limits nesting depth, and rejects anything RFC 8259 does not allow, plus what RFC 8259
// leaves to the reader: a repeated key in one object is an error (readers disagree on which one
// wins), and numbers are read with std::from_chars, so the process locale (a German "," decimal
// mark) never changes a value. docs/bundle-format.md states the accepted subset; the Python
// reader (memae_ts/bundle.py) accepts exactly the same one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace memae {

/// Every problem with a model file (JSON, safetensors, graph, weights) raises this.
class FormatError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Containers (arrays/objects) may nest at most this deep; a top-level object is depth 1.
constexpr int kMaxJsonDepth = 64;
/// At most this many values (of any kind) in one document: bounds the parser's memory (~120
/// bytes a value) whatever the bytes are.
constexpr std::size_t kMaxJsonValues = 1 << 18;

class Json {
public:
    enum class Type { Null, Bool, Number, String, Array, Object };

    Json() = default;
    static Json parse(const char* data, std::size_t size);
    static Json parse(const std::string& text) { return parse(text.data(), text.size()); }
    /// Shortest round-trip text of a double, locale-independent (for messages).
    static std::string format(double d);

    Type type() const { return type_; }
    bool is_null() const { return type_ == Type::Null; }
    bool is_number() const { return type_ == Type::Number; }
    bool is_string() const { return type_ == Type::String; }
    bool is_array() const { return type_ == Type::Array; }
    bool is_object() const { return type_ == Type::Object; }

    /// Object member or nullptr; `what` names the owner in error messages.
    const Json* find(const std::string& key) const;
    /// Object member, or FormatError naming `where` and `key`.
    const Json& at(const std::string& key, const std::string& where) const;
    const std::vector<Json>& items(const std::string& where) const;
    const std::vector<std::pair<std::string, Json>>& members(const std::string& where) const;

    double number(const std::string& where) const;
    /// A number written as an integer literal (no fraction, no exponent) within [lo, hi].
    std::int64_t integer(const std::string& where, std::int64_t lo, std::int64_t hi) const;
    const std::string& string(const std::string& where) const;
    bool boolean(const std::string& where) const;
    /// Byte range [begin, end) of this value's text in the parsed buffer (a string's quotes included).
    std::size_t begin() const { return begin_; }
    std::size_t end() const { return end_; }

private:
    friend class JsonParser;
    Type type_ = Type::Null;
    bool bool_ = false;
    bool integral_ = false;  // a number literal without fraction or exponent
    double number_ = 0.0;
    std::size_t begin_ = 0, end_ = 0;
    std::string string_;
    std::vector<Json> array_;
    std::vector<std::pair<std::string, Json>> object_;
};

}  // namespace memae
