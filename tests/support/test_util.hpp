#pragma once

// Small helpers shared by upkeep's test suites.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

// Asserts that a Result holds an error with exactly `errc`.
#define EXPECT_ERRC(result, errc)                                          \
  do {                                                                     \
    auto&& upkeep_r_ = (result);                                           \
    ASSERT_FALSE(upkeep_r_.has_value()) << "expected " #errc;              \
    EXPECT_EQ(upkeep_r_.error().code(), errc) << upkeep_r_.error().ToString(); \
  } while (false)

namespace upkeep::testing {

// The whole file, or an empty string when it cannot be read.
inline std::string ReadFileOrEmpty(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace upkeep::testing
