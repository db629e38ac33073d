// Canonical JSON (OLPC), byte-identical to @tufjs/canonical-json on a committed corpus, plus the
// strict parsing rules for untrusted metadata.

#include "upkeep/metadata/canonical_json.hpp"

#include <gtest/gtest.h>

#include "test_util.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

namespace upkeep::metadata {
namespace {

std::string Canon(std::string_view text) {
  auto parsed = ParseJson(text);
  if (!parsed) return "parse error: " + parsed.error().ToString();
  auto c = Canonicalize(*parsed);
  return c ? *c : "canonicalize error: " + c.error().ToString();
}

// Every corpus input canonicalizes to exactly the bytes @tufjs/canonical-json produced.
TEST(CanonicalJsonTest, MatchesTufJsOnCorpus) {
  const std::filesystem::path dir = std::filesystem::path(UPKEEP_TESTDATA_DIR) / "canonical-json";
  ASSERT_TRUE(std::filesystem::exists(dir / "inputs")) << dir;
  int cases = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir / "inputs")) {
    const auto expected_path = dir / "expected" / (entry.path().stem().string() + ".canon");
    ASSERT_TRUE(std::filesystem::exists(expected_path)) << expected_path;
    EXPECT_EQ(Canon(testing::ReadFileOrEmpty(entry.path())), testing::ReadFileOrEmpty(expected_path)) << entry.path().filename();
    ++cases;
  }
  EXPECT_GE(cases, 40);
}

TEST(CanonicalJsonTest, SortsKeysAndDropsWhitespace) {
  EXPECT_EQ(Canon(R"( { "b" : 1 , "a" : [ true , false , null ] } )"),
            R"({"a":[true,false,null],"b":1})");
}

// Only '"' and '\' are escaped; control characters are written raw.
TEST(CanonicalJsonTest, EscapesOnlyQuoteAndBackslash) {
  EXPECT_EQ(Canon(R"(["a\"b\\c\n\u0001/\/"])"), std::string("[\"a\\\"b\\\\c\n\x01//\"]"));
}

// Keys order by UTF-16 code units (JavaScript), not by code points: U+1F600 (surrogates
// D83D DE00) sorts before U+FF21.
TEST(CanonicalJsonTest, OrdersAstralKeysByUtf16CodeUnits) {
  EXPECT_EQ(Canon("{\"\xEF\xBC\xA1\":1,\"\xF0\x9F\x98\x80\":2}"),
            "{\"\xF0\x9F\x98\x80\":2,\"\xEF\xBC\xA1\":1}");
}

TEST(CanonicalJsonTest, WritesLargeIntegersExactly) {
  EXPECT_EQ(Canon("[9007199254740991,-9007199254740991,18446744073709551615]"),
            "[9007199254740991,-9007199254740991,18446744073709551615]");
}

TEST(CanonicalJsonTest, RejectsFloats) {
  auto parsed = ParseJson("{\"a\":1.5}");
  ASSERT_TRUE(parsed);
  auto c = Canonicalize(*parsed);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code(), Errc::NotCanonicalizable);
}

TEST(CanonicalJsonTest, RejectsDuplicateKeys) {
  auto r = ParseJson(R"({"a":1,"b":{"c":1,"c":2}})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::MalformedJson);
  EXPECT_TRUE(ParseJson(R"({"a":{"c":1},"b":{"c":2}})"));  // same key in different objects
}

TEST(CanonicalJsonTest, RejectsInvalidUtf8AndLoneSurrogates) {
  for (const std::string& bad : {std::string("[\"\xC3\x28\"]"), std::string("[\"\xFF\"]"),
                                std::string(R"(["\ud800"])"), std::string(R"(["\udc00x"])")}) {
    auto r = ParseJson(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code(), Errc::MalformedJson);
  }
}

TEST(CanonicalJsonTest, RejectsExcessiveNesting) {
  std::string deep(kMaxJsonDepth + 1, '[');
  deep += std::string(kMaxJsonDepth + 1, ']');
  auto r = ParseJson(deep);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::MalformedJson);
  std::string ok(kMaxJsonDepth, '[');
  ok += std::string(kMaxJsonDepth, ']');
  EXPECT_TRUE(ParseJson(ok));
}

TEST(CanonicalJsonTest, RejectsTrailingGarbageAndComments) {
  EXPECT_ERRC(ParseJson("{} x"), Errc::MalformedJson);
  EXPECT_ERRC(ParseJson("{/* c */}"), Errc::MalformedJson);
  EXPECT_ERRC(ParseJson(""), Errc::MalformedJson);
}

}  // namespace
}  // namespace upkeep::metadata

namespace upkeep::metadata {
namespace {

// Long arrays are handed over element by element and not kept; the parsing rules still apply.
TEST(ParseJsonStreamingTest, HandsOverElementsOfTheNamedArrayOnly) {
  std::vector<Json> seen;
  auto doc = ParseJsonStreaming(R"({"a":[1,2],"items":[{"x":1},[2],"s",{"y":{"z":[3]}}],"b":0})",
                                "items", [&](const Json& e) -> Result<void> {
                                  seen.push_back(e);
                                  return Ok();
                                });
  ASSERT_TRUE(doc.has_value()) << doc.error().ToString();
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[0], Json::parse(R"({"x":1})"));
  EXPECT_EQ(seen[1], Json::parse("[2]"));
  EXPECT_EQ(seen[2], "s");
  EXPECT_EQ(seen[3], Json::parse(R"({"y":{"z":[3]}})"));
  EXPECT_EQ((*doc)["items"], Json::array());
  EXPECT_EQ((*doc)["a"], Json::parse("[1,2]"));
  EXPECT_EQ((*doc)["b"], 0);
}

TEST(ParseJsonStreamingTest, KeepsTheRulesAndStopsAtAHandlerError) {
  auto ok = [](const Json&) -> Result<void> { return Ok(); };
  EXPECT_ERRC(ParseJsonStreaming(R"({"items":[{"x":1,"x":2}]})", "items", ok),
              Errc::MalformedJson);
  int calls = 0;
  auto r = ParseJsonStreaming(R"({"items":[1,2,3]})", "items", [&](const Json&) -> Result<void> {
    if (++calls == 2) return Error(Errc::InvalidMetadata, "second");
    return Ok();
  });
  EXPECT_ERRC(r, Errc::InvalidMetadata);
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace upkeep::metadata
