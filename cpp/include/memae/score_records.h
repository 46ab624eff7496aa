// Text of the daemon's score records (connectors/messages.py: encode_scores), byte for byte as
// the Python reference writes them: numbers as Python's repr(), shares as Python's '%.4f',
// times as ISO 8601 UTC with 'Z' (microseconds only when present). Locale-independent
// (std::to_chars), never printf. Differential-tested against Python in
// tests/test_score_records_native.py and fuzzed (cpp/fuzz/fuzz_records.cpp).
#pragma once

#include <cstdint>
#include <string>

namespace memae {

/// Appends Python's repr() of a finite double: the shortest digits that read back to the same
/// double, fixed notation for exponents -4..15 (with ".0" when integral), else d.ddde+XX.
void append_repr(std::string& out, double x);

/// Appends repr(x) for a finite x, else "null" (JSON has no NaN or infinity).
void append_json_number(std::string& out, double x);

/// Appends Python's '%.4f' % x (correctly rounded; "nan", "inf", "-inf" as Python writes them).
void append_fixed4(std::string& out, double x);

/// Smallest and largest microseconds since 1970 that format_utc writes (0001-01-01T00:00:00Z,
/// 9999-12-31T23:59:59.999999Z).
constexpr std::int64_t kMinUtcMicros = -62135596800LL * 1000000LL;
constexpr std::int64_t kMaxUtcMicros = 253402300799LL * 1000000LL + 999999LL;

/// Appends YYYY-MM-DDTHH:MM:SS[.ffffff]Z (the fraction only when not zero), as numpy's
/// datetime_as_string does; micros must lie in [kMinUtcMicros, kMaxUtcMicros].
void append_utc(std::string& out, std::int64_t micros);

}  // namespace memae
