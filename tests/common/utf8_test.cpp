#include "upkeep/common/utf8.hpp"

#include <algorithm>

#include "upkeep/common/log.hpp"

#include <gtest/gtest.h>

#include <string>

namespace upkeep {
namespace {

constexpr std::string_view kFffd = "\xEF\xBF\xBD";

TEST(SanitizeUtf8Test, KeepsValidText) {
  const std::string text = "ascii \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 end";
  EXPECT_EQ(SanitizeUtf8(text), text);
  EXPECT_EQ(SanitizeUtf8(""), "");
  EXPECT_EQ(SanitizeUtf8(std::string("nul\0byte", 8)), std::string("nul\0byte", 8));
}

// Every byte that is not part of a well-formed sequence becomes U+FFFD; the rest is kept.
TEST(SanitizeUtf8Test, ReplacesEachInvalidByte) {
  const std::string f(kFffd);
  EXPECT_EQ(SanitizeUtf8("a\xFF"
                         "b"),
            "a" + f + "b");
  EXPECT_EQ(SanitizeUtf8("\x80\x80"), f + f);  // stray continuations
  EXPECT_EQ(SanitizeUtf8("\xC3"), f);          // truncated at the end
  EXPECT_EQ(SanitizeUtf8("\xE2\x82"
                         "x"),
            f + f + "x");                                      // truncated in the middle
  EXPECT_EQ(SanitizeUtf8("\xC0\xAF"), f + f);                  // overlong "/"
  EXPECT_EQ(SanitizeUtf8("\xE0\x80\xAF"), f + f + f);          // overlong, 3 bytes
  EXPECT_EQ(SanitizeUtf8("\xED\xA0\x80"), f + f + f);          // surrogate U+D800
  EXPECT_EQ(SanitizeUtf8("\xF4\x90\x80\x80"), f + f + f + f);  // above U+10FFFF
  EXPECT_EQ(SanitizeUtf8("\xF5\x80"), f + f);                  // invalid lead byte
}

TEST(TruncateUtf8Test, NeverSplitsACharacter) {
  const std::string text =
      "ab\xE2\x82\xAC"
      "cd";  // "ab€cd": € is bytes 2..4
  EXPECT_EQ(TruncateUtf8(text, 100), text);
  EXPECT_EQ(TruncateUtf8(text, 7), text);
  EXPECT_EQ(TruncateUtf8(text, 6),
            "ab\xE2\x82\xAC"
            "c");
  EXPECT_EQ(TruncateUtf8(text, 5), "ab\xE2\x82\xAC");
  EXPECT_EQ(TruncateUtf8(text, 4), "ab");
  EXPECT_EQ(TruncateUtf8(text, 3), "ab");
  EXPECT_EQ(TruncateUtf8(text, 2), "ab");
  EXPECT_EQ(TruncateUtf8(text, 0), "");
  const std::string emoji = "\xF0\x9F\x98\x80\xF0\x9F\x98\x80";
  EXPECT_EQ(TruncateUtf8(emoji, 7), "\xF0\x9F\x98\x80");
  EXPECT_EQ(TruncateUtf8(emoji, 4), "\xF0\x9F\x98\x80");
  EXPECT_EQ(TruncateUtf8(emoji, 3), "");
}

// Bytes that belong to no character are cut at the limit like any other byte.
TEST(TruncateUtf8Test, CutsInvalidBytesAtTheLimit) {
  EXPECT_EQ(TruncateUtf8("a\x80\x80\x80\x80\x80", 3), "a\x80\x80");
  EXPECT_EQ(TruncateUtf8("ab\x80"
                         "c",
                         2),
            "ab");
  EXPECT_EQ(TruncateUtf8("abc\x80", 3), "abc");
  EXPECT_EQ(SanitizeUtf8(TruncateUtf8("x\xC3\xA9\xC3\xA9", 4)), "x\xC3\xA9");
}

// Terminal output from untrusted text: no escape sequence survives, newlines and tabs do, and
// invalid bytes become U+FFFD.
TEST(PrintableTextTest, RemovesControlCharactersAndInvalidBytes) {
  EXPECT_EQ(PrintableText("ok\tline\nnext"), "ok\tline\nnext");
  EXPECT_EQ(PrintableText("\x1b[2J\x1b]0;title\x07\x7f"), "?[2J?]0;title??");
  EXPECT_EQ(PrintableText("bad \xff"), "bad \xEF\xBF\xBD");
  EXPECT_EQ(PrintableText(std::string("nul\0x", 5)), "nul?x");
}

}  // namespace
}  // namespace upkeep

namespace upkeep {
namespace {

// A JSON log line is one valid JSON object whatever the message holds: quotes, newlines, control
// bytes and invalid UTF-8 cannot end the line or the string early.
TEST(JsonLogLineTest, EscapesEverythingThatCouldBreakTheLine) {
  const std::string line = log::JsonLine(std::chrono::system_clock::time_point(
                                             std::chrono::seconds(1764400000)),
                                         "warn", "a \"quote\"\nnew line\x01 \xff end\\");
  EXPECT_EQ(line,
            "{\"time\":\"2025-11-29T07:06:40Z\",\"level\":\"warn\",\"message\":\"a \\\"quote\\\"\\nnew "
            "line\\u0001 \xef\xbf\xbd end\\\\\"}\n");
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1);
}

}  // namespace
}  // namespace upkeep
