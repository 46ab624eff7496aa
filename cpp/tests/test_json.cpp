#include <gtest/gtest.h>

#include <clocale>
#include <cmath>
#include <string>

#include "memae/json.h"
#include "memae/sha256.h"

namespace memae {
namespace {

TEST(Json, ParsesAllValueKinds) {
    const Json j = Json::parse(R"( {"a": [1, -2.5e3, true, false, null], "s": "x\"\\\/\n\u00e9\ud83d\ude00", "o": {}} )");
    const auto& a = j.at("a", "root").items("a");
    ASSERT_EQ(a.size(), 5u);
    EXPECT_EQ(a[0].integer("a0", 0, 10), 1);
    EXPECT_DOUBLE_EQ(a[1].number("a1"), -2500.0);
    EXPECT_TRUE(a[2].boolean("a2"));
    EXPECT_FALSE(a[3].boolean("a3"));
    EXPECT_TRUE(a[4].is_null());
    EXPECT_EQ(j.at("s", "root").string("s"), "x\"\\/\n\xc3\xa9\xf0\x9f\x98\x80");
    EXPECT_TRUE(j.at("o", "root").members("o").empty());
    EXPECT_EQ(j.find("missing"), nullptr);
}

TEST(Json, RejectsMalformedInput) {
    const char* bad[] = {
        "", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "01", "1.", "-", "1e", "+1", "NaN", "Infinity",
        "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"a\x01\"", "[1] 2", "tru", "nul",
        "\"\xff\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xe2\x82\"", "1e999",
    };
    for (const char* text : bad) {
        EXPECT_THROW(Json::parse(text), FormatError) << text;
    }
}

TEST(Json, LimitsNestingDepth) {
    // A top-level container is depth 1; 64 nested levels are accepted, 65 are not (the Python
    // reader draws the same line, tests/test_bundle_json.py).
    const std::string ok = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
    EXPECT_NO_THROW(Json::parse(ok));
    const std::string over = std::string(kMaxJsonDepth + 1, '[') + std::string(kMaxJsonDepth + 1, ']');
    EXPECT_THROW(Json::parse(over), FormatError);
    std::string deep(100000, '[');
    EXPECT_THROW(Json::parse(deep), FormatError);
}

TEST(Json, NeverReadsPastTheBuffer) {
    // The text continues past `size` in memory; the parser must stop at the boundary.
    const std::string text = "{\"a\": 12345}";
    for (std::size_t n = 0; n < text.size(); ++n) {
        EXPECT_THROW(Json::parse(text.data(), n), FormatError) << n;
    }
    EXPECT_EQ(Json::parse(text.data(), text.size()).at("a", "r").integer("a", 0, 99999), 12345);
}

TEST(Json, TypedAccessorsExplainMismatches) {
    const Json j = Json::parse(R"({"n": 1.5, "s": "x"})");
    try {
        j.at("n", "cfg").integer("cfg.n", 0, 10);
        FAIL();
    } catch (const FormatError& e) {
        EXPECT_NE(std::string(e.what()).find("cfg.n must be an integer"), std::string::npos);
    }
    EXPECT_THROW(j.at("s", "cfg").number("cfg.s"), FormatError);
    EXPECT_THROW(j.at("nope", "cfg"), FormatError);
    EXPECT_THROW(j.items("cfg"), FormatError);
}

TEST(Json, RejectsDuplicateKeysAnywhere) {
    // C++ used to keep the first, Python the last: a threshold of 1 in one engine, 1000 in the other.
    for (const char* text : {R"({"value": 1.0, "value": 1000.0})", R"({"a": {"b": 1, "c": 2, "b": 3}})",
                             R"([{"x": 1}, {"y": 2, "y": 2}])", R"({"\u0061": 1, "a": 2})"}) {
        try {
            Json::parse(text);
            FAIL() << text;
        } catch (const FormatError& e) {
            EXPECT_NE(std::string(e.what()).find("duplicate key"), std::string::npos) << e.what();
        }
    }
    EXPECT_NO_THROW(Json::parse(R"({"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]})"));  // same key, other objects
}

TEST(Json, NumbersIgnoreTheProcessLocale) {
    // strtod follows LC_NUMERIC: under de_DE "0.5" stopped at the '.', and every bundle failed.
    const char* names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8"};
    std::string old = std::setlocale(LC_ALL, nullptr);
    const char* used = nullptr;
    for (const char* n : names) {
        if (std::setlocale(LC_ALL, n)) {
            used = n;
            break;
        }
    }
    if (!used) GTEST_SKIP() << "no decimal-comma locale installed (scripts/tools.d/locales.sh installs de_DE.UTF-8)";
    const Json j = Json::parse(R"({"a": 0.5, "b": -2.25e-3, "c": 1234.5})");
    std::setlocale(LC_ALL, old.c_str());
    EXPECT_EQ(j.at("a", "r").number("a"), 0.5) << used;
    EXPECT_EQ(j.at("b", "r").number("b"), -2.25e-3);
    EXPECT_EQ(j.at("c", "r").number("c"), 1234.5);
}

TEST(Json, NumbersAreExactAndBounded) {
    EXPECT_EQ(Json::parse("0.1").number("x"), 0.1);
    EXPECT_EQ(Json::parse("5e-324").number("x"), 5e-324);
    EXPECT_EQ(Json::parse("1.7976931348623157e308").number("x"), 1.7976931348623157e308);
    for (const char* bad : {"1e-400", "-1e-400", "1.8e308", "-1e309"}) EXPECT_THROW(Json::parse(bad), FormatError) << bad;
    EXPECT_THROW(Json::parse(std::string(65, '1')), FormatError);  // literal longer than 64 characters
    EXPECT_EQ(Json::format(0.1), "0.1");
}

TEST(Json, IntegersMustBeWrittenAsIntegers) {
    EXPECT_EQ(Json::parse("12").integer("w", 1, 99), 12);
    EXPECT_EQ(Json::parse("-0").integer("w", 0, 99), 0);
    for (const char* text : {"12.0", "1.2e1", "12e0"}) {
        EXPECT_THROW(Json::parse(text).integer("w", 1, 99), FormatError) << text;
        EXPECT_EQ(Json::parse(text).number("w"), 12.0);
    }
}

TEST(Json, BoundsTheNumberOfValues) {
    std::string many = "[";
    for (std::size_t i = 0; i < kMaxJsonValues; ++i) many += i ? ",0" : "0";
    EXPECT_THROW(Json::parse(many + "]"), FormatError);  // the array itself is one more value
    many.resize(many.size() - 2);
    EXPECT_NO_THROW(Json::parse(many + "]"));
}

TEST(Json, RecordsWhereEachValueIs) {
    const std::string text = R"( {"model_id": "abc", "n": [1, 2]} )";
    const Json j = Json::parse(text);
    const Json& id = j.at("model_id", "r");
    EXPECT_EQ(text.substr(id.begin(), id.end() - id.begin()), "\"abc\"");
    const Json& n = j.at("n", "r");
    EXPECT_EQ(text.substr(n.begin(), n.end() - n.begin()), "[1, 2]");
    EXPECT_EQ(text.substr(j.begin(), j.end() - j.begin()), text.substr(1, text.size() - 2));
}

TEST(Sha256, KnownAnswers) {
    auto hex = [](const std::string& s) {
        Sha256 h;
        h.update(s.data(), s.size());
        return h.hexdigest();
    };
    EXPECT_EQ(hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    // A million 'a' fed in uneven pieces: the buffering across update() calls.
    Sha256 h;
    const std::string chunk(997, 'a');
    std::size_t fed = 0;
    while (fed < 1000000) {
        const std::size_t n = std::min<std::size_t>(chunk.size() - (fed % 7), 1000000 - fed);
        h.update(chunk.data(), n);
        fed += n;
    }
    EXPECT_EQ(h.hexdigest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

}  // namespace
}  // namespace memae
