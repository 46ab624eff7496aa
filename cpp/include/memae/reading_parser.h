// A strict parser of the edge daemon's reading messages (connectors/messages.py: the message
// contract, ReadingParser.parse_batch). It reads only what it can read exactly as the Python
// reference (orjson + parse_timestamp + numpy's float64 conversion) does, and says "not clean"
// for anything else, so the Python path then decides, with the reference's dead letters:
//  - JSON object {"ts": ..., "values": {sensor: number|null, ...}, "asset": ...} (asset optional,
//    null or equal to the key's asset; other top-level fields and extra sensors ignored when
//    scalar) or compact array [ts, v0, v1, ...] with exactly one value per sensor;
//  - strings without escapes or control characters, valid UTF-8 (RFC 3629);
//  - no duplicate ts/values/asset key or sensor, no nesting beyond values, standard JSON
//    whitespace only;
//  - numbers in JSON's grammar; integers of at most 2^53 in magnitude (exactly a float64, as
//    Python's int -> float), other numbers correctly rounded (Clinger's exact fast path, else
//    std::from_chars), finite and not underflowing to zero; "-0" is the integer 0 (+0.0) as
//    orjson reads it, "-0.0" is -0.0;
//  - ts: epoch seconds within the years 1-9999, or ISO 8601 YYYY-MM-DD(T| )HH:MM:SS[.fff|.ffffff]
//    with Z, z, +HH:MM, -HH:MM or no zone (UTC), within |microseconds| <= 2^53 of 1970 (years
//    1685-2255), the value microseconds / 1e6 correctly rounded as Python's timestamp() gives.
// Differential-tested against the Python reference in tests/test_reading_parser_native.py and
// fuzzed (cpp/fuzz/fuzz_readings.cpp).
#pragma once

#include <cstddef>
#include <string_view>
#include <vector>

namespace memae {

class ReadingParser {
public:
    /// `sensors`: the bundle's sensor names (UTF-8) in its order; the views must outlive the
    /// parser. A name listed twice is never filled twice, so such a bundle parses nothing.
    explicit ReadingParser(std::vector<std::string_view> sensors);

    std::size_t n_sensors() const { return sensors_.size(); }

    /// One message with the key's asset name: its time (epoch seconds) and its n_sensors()
    /// values (NaN = null) into `row`. False when it is not certain the message is clean; `ts`
    /// and `row` are then unspecified.
    bool parse(std::string_view message, std::string_view asset, double& ts, double* row) const;

private:
    std::vector<std::string_view> sensors_;
};

/// The ISO 8601 forms above -> epoch seconds; false for any other text.
bool parse_iso_time(std::string_view text, double& seconds);

/// A whole JSON number -> its float64 as the reference reads it; false when not in the forms above.
bool parse_json_number(std::string_view text, double& value);

}  // namespace memae
