// Fetcher::FetchRange's default: a fetcher that cannot seek still serves exact windows.

#include "upkeep/common/fetcher.hpp"

#include <gtest/gtest.h>

#include "memory_fetcher.hpp"
#include "test_util.hpp"

namespace upkeep {
namespace {

std::string Window(testing::MemoryFetcher& f, std::uint64_t offset, std::uint64_t length) {
  std::string got;
  auto r = f.FetchRange("mem:/x", offset, length, [&](std::span<const char> p) -> Result<void> {
    got.append(p.data(), p.size());
    return Ok();
  });
  EXPECT_TRUE(r.has_value()) << r.error().ToString();
  return got;
}

TEST(FetcherTest, DefaultFetchRangeServesExactWindows) {
  testing::MemoryFetcher f;
  f.Set("mem:/x", "0123456789");
  EXPECT_EQ(Window(f, 0, 10), "0123456789");
  EXPECT_EQ(Window(f, 3, 4), "3456");
  EXPECT_EQ(Window(f, 8, 100), "89");
  EXPECT_EQ(Window(f, 12, 5), "");
  EXPECT_ERRC(f.FetchRange("mem:/missing", 0, 1, [](std::span<const char>) { return Ok(); }),
              common::Errc::RemoteNotFound);
}

}  // namespace
}  // namespace upkeep
