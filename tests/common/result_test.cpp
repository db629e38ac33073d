#include "upkeep/common/result.hpp"

#include <gtest/gtest.h>

#include "upkeep/common/errc.hpp"

namespace upkeep {
namespace {

Result<int> Half(int v) {
  if (v % 2 != 0) return Error(common::Errc::InvalidArgument, "odd");
  return v / 2;
}

Result<int> Quarter(int v) {
  UPKEEP_ASSIGN_OR_RETURN(int half, Half(v));
  return Half(half);
}

Result<void> CheckEven(int v) {
  UPKEEP_TRY(Half(v));
  return Ok();
}

TEST(ResultTest, HoldsValueOrError) {
  auto ok = Half(4);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(*ok, 2);
  auto bad = Half(3);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), common::Errc::InvalidArgument);
  EXPECT_EQ(bad.error().message(), "odd");
  EXPECT_EQ(bad.value_or(-1), -1);
}

TEST(ResultTest, PropagatesErrorsThroughMacros) {
  EXPECT_EQ(Quarter(8).value(), 2);
  EXPECT_EQ(Quarter(6).error().code(), common::Errc::InvalidArgument);
  EXPECT_TRUE(CheckEven(2));
  EXPECT_EQ(CheckEven(1).error().code(), common::Errc::InvalidArgument);
}

TEST(ResultTest, ChainsWithAndThenAndTransform) {
  EXPECT_EQ(Half(8).and_then(Half).value(), 2);
  EXPECT_FALSE(Half(6).and_then(Half));
  EXPECT_EQ(Half(8).transform([](int v) { return v + 1; }).value(), 5);
  EXPECT_EQ(Half(7).transform([](int v) { return v + 1; }).error().message(), "odd");
}

TEST(ErrorTest, AddsContextAndNamesCategory) {
  Error e(common::Errc::RemoteNotFound, "timestamp.json");
  EXPECT_EQ(e.WithContext("refresh").message(), "refresh: timestamp.json");
  EXPECT_EQ(e.ToString(), "common.RemoteNotFound: timestamp.json");
  EXPECT_NE(e.code(), common::Errc::Timeout);
}

}  // namespace
}  // namespace upkeep
