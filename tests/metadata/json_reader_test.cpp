// JsonReader: one set of typed-read rules for every JSON format, failures as errors with the
// member's path, never exceptions.

#include "upkeep/metadata/json_reader.hpp"

#include <gtest/gtest.h>

#include "test_util.hpp"

namespace upkeep::metadata {
namespace {

Json Doc() {
  return Json::parse(R"({"name": "cam", "count": 3, "on": true, "list": ["a", "b"],
                         "inner": {"n": 1}, "extra": null})");
}

TEST(JsonReaderTest, ReadsTypedMembersAndKeepsUnreadOnes) {
  const Json doc = Doc();
  JsonReader r(doc, Errc::InvalidMetadata, "doc");
  EXPECT_EQ(r.String("name").value(), "cam");
  EXPECT_EQ(r.Uint("count", {.min = 1, .max = 3}).value(), 3u);
  EXPECT_EQ(r.Bool("on").value(), true);
  EXPECT_EQ(r.Strings("list", {.unique = true}).value(), (std::vector<std::string>{"a", "b"}));
  auto inner = r.Object("inner");
  ASSERT_TRUE(inner);
  EXPECT_EQ(inner->Uint("n").value(), 1u);
  EXPECT_FALSE(r.OptionalString("absent").value().has_value());
  EXPECT_EQ(r.Unrecognized(), Json({{"extra", nullptr}}));
  EXPECT_ERRC(r.NoUnknownKeys(), Errc::InvalidMetadata);
  r.MarkRead("extra");
  EXPECT_TRUE(r.NoUnknownKeys());
}

// Wrong kinds, out-of-range numbers, floats, empty or non-UTF-8 strings and duplicates each fail
// with the reader's code and the member's path in the message.
TEST(JsonReaderTest, RefusesWrongKindsWithPathInMessage) {
  Json doc = Doc();
  doc["float"] = 1.5;
  doc["negative"] = -1;
  doc["empty"] = "";
  doc["dup"] = {"x", "x"};
  doc["bad_utf8"] = std::string("\xff");  // only values built in code can hold this
  JsonReader r(doc, Errc::InvalidUpdateMetadata, "custom.upkeep");
  EXPECT_ERRC(r.Uint("name"), Errc::InvalidUpdateMetadata);
  EXPECT_ERRC(r.Uint("float"), Errc::InvalidUpdateMetadata);
  EXPECT_ERRC(r.Uint("negative"), Errc::InvalidUpdateMetadata);
  EXPECT_ERRC(r.Uint("count", {.max = 2}), Errc::InvalidUpdateMetadata);
  EXPECT_ERRC(r.String("count"), Errc::InvalidUpdateMetadata);
  EXPECT_ERRC(r.String("empty"), Errc::InvalidUpdateMetadata);
  EXPECT_TRUE(r.String("empty", {.allow_empty = true}));
  EXPECT_ERRC(r.String("bad_utf8"), Errc::InvalidUpdateMetadata);
  EXPECT_ERRC(r.Strings("dup", {.unique = true}), Errc::InvalidUpdateMetadata);
  EXPECT_ERRC(r.Bool("count"), Errc::InvalidUpdateMetadata);
  EXPECT_ERRC(r.Object("list"), Errc::InvalidUpdateMetadata);
  EXPECT_ERRC(r.Array("inner"), Errc::InvalidUpdateMetadata);
  auto missing = r.String("absent");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().message(), "custom.upkeep.absent: missing");
  auto nested = r.Object("inner").value().String("n");
  ASSERT_FALSE(nested);
  EXPECT_EQ(nested.error().message(), "custom.upkeep.inner.n: must be a string");
  EXPECT_ERRC(JsonReader::Of(Json::array(), Errc::InvalidMetadata, "x"), Errc::InvalidMetadata);
}

TEST(JsonReaderTest, ChecksUtf8) {
  EXPECT_TRUE(IsValidUtf8("caf\xc3\xa9 \xf0\x9f\x98\x80"));
  for (const char* bad : {"\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82"}) {
    EXPECT_FALSE(IsValidUtf8(bad)) << bad;
  }
}

}  // namespace
}  // namespace upkeep::metadata
