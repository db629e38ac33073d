#include "upkeep/common/encoding.hpp"
#include "upkeep/common/paths.hpp"

#include <gtest/gtest.h>

namespace upkeep {
namespace {

TEST(HexTest, RoundTrips) {
  const std::vector<std::uint8_t> bytes{0x00, 0x7f, 0xab, 0xff};
  EXPECT_EQ(HexEncode(bytes), "007fabff");
  EXPECT_EQ(HexDecode("007FABff").value(), bytes);
}

TEST(HexTest, RejectsOddLengthAndNonHex) {
  EXPECT_FALSE(HexDecode("abc"));
  EXPECT_FALSE(HexDecode("zz"));
  EXPECT_FALSE(HexDecode("0x"));
  EXPECT_TRUE(HexDecode("").value().empty());
}

// Python's urllib.parse.quote(s, safe=""): only unreserved characters stay.
TEST(PercentEncodeTest, EncodesEverythingButUnreserved) {
  EXPECT_EQ(PercentEncode("a/b c"), "a%2Fb%20c");
  EXPECT_EQ(PercentEncode("AZaz09_.-~"), "AZaz09_.-~");
  EXPECT_EQ(PercentEncode("ns:1?#%"), "ns%3A1%3F%23%25");
  EXPECT_EQ(PercentEncode("\xC3\xA9"), "%C3%A9");
}

TEST(PercentEncodeTest, EncodesPathSegmentsKeepingSlashes) {
  EXPECT_EQ(PercentEncodePath("dir/nested file.bin"), "dir/nested%20file.bin");
  EXPECT_EQ(PercentEncodePath("a%b/c?d"), "a%25b/c%3Fd");
  EXPECT_EQ(PercentEncodePath("/x/"), "/x/");
}

TEST(SafeRelativePathTest, RefusesPathsThatLeaveTheDirectory) {
  EXPECT_TRUE(IsSafeRelativePath("fw/rootfs.img"));
  EXPECT_TRUE(IsSafeRelativePath("a..b/c"));
  for (const char* bad : {"", "/etc/passwd", "../x", "a/../b", "a//b", "a/", "./a", "a/."}) {
    EXPECT_FALSE(IsSafeRelativePath(bad)) << bad;
  }
  EXPECT_FALSE(IsSafeRelativePath(std::string_view("a\0b", 3)));
  EXPECT_FALSE(IsSafeRelativePath(std::string(1025, 'a')));
}

TEST(PercentDecodeTest, DecodesEscapesAndRefusesNul) {
  EXPECT_EQ(PercentDecode("a%2Fb%20c").value(), "a/b c");
  EXPECT_EQ(PercentDecode("100%").value(), "100%");
  EXPECT_EQ(PercentDecode("%zz").value(), "%zz");
  EXPECT_FALSE(PercentDecode("a%00b"));
}

}  // namespace
}  // namespace upkeep
