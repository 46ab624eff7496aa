#include <gtest/gtest.h>

#include <string>

#include "memae/json.h"

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
    std::string ok(60, '[');
    ok += std::string(60, ']');
    EXPECT_NO_THROW(Json::parse(ok));
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

}  // namespace
}  // namespace memae
