// The check scheduler: boot delay, daily spread over the window, backoff, check now, server hint
// (EN 303 645 provision 5.3-5, docs/policy.md). All on FakeClock times, never sleeping.

#include "upkeep/agent/schedule.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <limits>
#include <set>

#include "test_util.hpp"
#include "upkeep/agent/config.hpp"

namespace upkeep::agent {
namespace {

using std::chrono::hours;
using std::chrono::seconds;

// 2026-12-07T00:00:00Z, the start of a period (a multiple of a day).
const Clock::TimePoint kMidnight{seconds(1796601600)};

TEST(ScheduleTest, BootCheckFallsWithinTheBootDelay) {
  FakeClock clock(kMidnight + hours(5) + seconds(17));
  std::set<std::int64_t> delays;
  for (std::uint64_t seed = 0; seed < 2000; ++seed) {
    SeededRandom random(seed);
    CheckSchedule schedule({}, random);
    schedule.OnBoot(clock.Now());
    const auto delay = (schedule.NextCheck(clock.Now()) - clock.Now()).count();
    ASSERT_GE(delay, 30);
    ASSERT_LE(delay, 300);
    EXPECT_EQ(schedule.reason(), CheckReason::Boot);
    delays.insert(delay);
  }
  // Random, not one fixed delay: most of the 271 possible values occur over 2000 boots.
  EXPECT_GT(delays.size(), 200u);
  EXPECT_EQ(*delays.begin(), 30);
  EXPECT_EQ(*delays.rbegin(), 300);
}

TEST(ScheduleTest, NotDueBeforeTheBootDelayAndDueAfter) {
  FakeClock clock(kMidnight);
  SeededRandom random(7);
  CheckSchedule schedule({}, random);
  EXPECT_TRUE(schedule.Due(clock.Now()));  // never booted: check at once
  schedule.OnBoot(clock.Now());
  EXPECT_FALSE(schedule.Due(clock.Now()));
  clock.Advance(seconds(29));
  EXPECT_FALSE(schedule.Due(clock.Now()));
  clock.Advance(seconds(271));
  EXPECT_TRUE(schedule.Due(clock.Now()));
}

// 10,000 devices that all boot at the same moment (power restored to a building) check in spread
// over the whole day: no hour holds more than twice its share, and the first and last hour are hit.
TEST(ScheduleTest, TenThousandDevicesSpreadAcrossTheDailyWindow) {
  constexpr int kDevices = 10000;
  std::array<int, 24> buckets{};
  std::int64_t earliest = std::numeric_limits<std::int64_t>::max();
  std::int64_t latest = 0;
  const Clock::TimePoint boot = kMidnight + hours(9);
  for (int device = 0; device < kDevices; ++device) {
    FakeClock clock(boot);
    const std::uint64_t seed = std::uint64_t{0x5eed0000} + static_cast<std::uint64_t>(device);
    SeededRandom random(seed);
    CheckSchedule schedule({}, random);
    schedule.OnBoot(clock.Now());
    clock.Set(schedule.NextCheck(clock.Now()));
    schedule.OnSuccess(clock.Now());
    ASSERT_EQ(schedule.reason(), CheckReason::Periodic);
    const Clock::TimePoint next = schedule.NextCheck(clock.Now());
    // The next day's window: [next midnight, the one after).
    const std::int64_t offset = (next - (kMidnight + hours(24))).count();
    ASSERT_GE(offset, 0);
    ASSERT_LT(offset, 86400);
    ++buckets[static_cast<std::size_t>(offset / 3600)];
    earliest = std::min(earliest, offset);
    latest = std::max(latest, offset);
  }
  const int share = kDevices / 24;
  for (int count : buckets) {
    EXPECT_LE(count, 2 * share);
    EXPECT_GE(count, share / 2);
  }
  EXPECT_LT(earliest, 3600);
  EXPECT_GE(latest, 86400 - 3600);
}

// A configured window (01:00..05:00 UTC) holds every periodic check, spread over its 4 hours.
TEST(ScheduleTest, ChecksStayInsideAConfiguredWindow) {
  ScheduleOptions options;
  options.window_start = hours(1);
  options.window_length = hours(4);
  std::array<int, 4> buckets{};
  for (std::uint64_t seed = 0; seed < 4000; ++seed) {
    SeededRandom random(seed);
    CheckSchedule schedule(options, random);
    const Clock::TimePoint now = kMidnight + hours(13);
    schedule.OnSuccess(now);
    const std::int64_t offset = (schedule.NextCheck(now) - (kMidnight + hours(24))).count();
    ASSERT_GE(offset, 3600);
    ASSERT_LT(offset, 5 * 3600);
    ++buckets[static_cast<std::size_t>((offset - 3600) / 3600)];
  }
  for (int count : buckets) EXPECT_LE(count, 2 * 1000);
  for (int count : buckets) EXPECT_GE(count, 500);
}

// The point in the window is drawn again every day: a device does not keep one time for ever.
TEST(ScheduleTest, CheckTimeIsRedrawnEachPeriod) {
  SeededRandom random(42);
  CheckSchedule schedule({}, random);
  Clock::TimePoint now = kMidnight;
  std::set<std::int64_t> times_of_day;
  for (int day = 0; day < 30; ++day) {
    schedule.OnSuccess(now);
    const Clock::TimePoint next = schedule.NextCheck(now);
    // Once per period: always in the period after the success.
    const std::int64_t day_of_now = now.time_since_epoch().count() / 86400;
    ASSERT_EQ(next.time_since_epoch().count() / 86400, day_of_now + 1);
    times_of_day.insert(next.time_since_epoch().count() % 86400);
    now = next;
  }
  EXPECT_GT(times_of_day.size(), 25u);
}

TEST(ScheduleTest, SameSeedGivesTheSameSchedule) {
  SeededRandom a(99);
  SeededRandom b(99);
  CheckSchedule sa({}, a);
  CheckSchedule sb({}, b);
  sa.OnBoot(kMidnight);
  sb.OnBoot(kMidnight);
  EXPECT_EQ(sa.NextCheck(kMidnight), sb.NextCheck(kMidnight));
  sa.OnFailure(kMidnight);
  sb.OnFailure(kMidnight);
  EXPECT_EQ(sa.NextCheck(kMidnight), sb.NextCheck(kMidnight));
}

// Backoff: the ceiling doubles from 60 s up to the 6 h cap and no further.
TEST(ScheduleTest, BackoffCeilingGrowsAndIsCapped) {
  SeededRandom random(1);
  CheckSchedule schedule({}, random);
  EXPECT_EQ(schedule.BackoffCeiling(1), seconds(60));
  EXPECT_EQ(schedule.BackoffCeiling(2), seconds(120));
  EXPECT_EQ(schedule.BackoffCeiling(3), seconds(240));
  EXPECT_EQ(schedule.BackoffCeiling(9), seconds(15360));
  EXPECT_EQ(schedule.BackoffCeiling(10), hours(6));
  EXPECT_EQ(schedule.BackoffCeiling(64), hours(6));
  EXPECT_EQ(schedule.BackoffCeiling(std::numeric_limits<std::uint32_t>::max()), hours(6));
}

// Full jitter: each retry is random in [1 s, ceiling]; delays grow with the failures, never pass
// the cap, and differ between devices.
TEST(ScheduleTest, BackoffIsJitteredGrowsAndIsCapped) {
  constexpr int kDevices = 500;
  constexpr std::uint32_t kFailures = 20;
  std::array<std::int64_t, kFailures + 1> max_delay{};
  std::array<std::int64_t, kFailures + 1> sum_delay{};
  std::array<std::set<std::int64_t>, kFailures + 1> distinct;
  for (int device = 0; device < kDevices; ++device) {
    SeededRandom random(static_cast<std::uint64_t>(device));
    CheckSchedule schedule({}, random);
    FakeClock clock(kMidnight);
    for (std::uint32_t n = 1; n <= kFailures; ++n) {
      schedule.OnFailure(clock.Now());
      ASSERT_EQ(schedule.reason(), CheckReason::Backoff);
      ASSERT_EQ(schedule.state().failures, n);
      const std::int64_t delay = (schedule.NextCheck(clock.Now()) - clock.Now()).count();
      ASSERT_GE(delay, 1);
      ASSERT_LE(delay, schedule.BackoffCeiling(n).count());
      ASSERT_LE(delay, 6 * 3600);
      max_delay[n] = std::max(max_delay[n], delay);
      sum_delay[n] += delay;
      distinct[n].insert(delay);
      clock.Set(schedule.NextCheck(clock.Now()));
    }
  }
  // Grows: the mean delay after 8 failures is well above the mean after 1.
  EXPECT_GT(sum_delay[8], 20 * sum_delay[1]);
  // Capped: from 10 failures on, the largest delay seen is close to, but not over, 6 h.
  EXPECT_GT(max_delay[kFailures], 5 * 3600);
  // Jittered: the devices' delays differ.
  EXPECT_GT(distinct[1].size(), 40u);
  EXPECT_GT(distinct[kFailures].size(), 400u);
}

TEST(ScheduleTest, SuccessResetsTheBackoff) {
  SeededRandom random(3);
  CheckSchedule schedule({}, random);
  for (int i = 0; i < 12; ++i) schedule.OnFailure(kMidnight);
  EXPECT_EQ(schedule.state().failures, 12u);
  schedule.OnSuccess(kMidnight + hours(1));
  EXPECT_EQ(schedule.state().failures, 0u);
  EXPECT_EQ(schedule.state().last_success, kMidnight + hours(1));
  EXPECT_EQ(schedule.reason(), CheckReason::Periodic);
  schedule.OnFailure(kMidnight + hours(2));
  EXPECT_EQ(schedule.state().failures, 1u);
  EXPECT_LE(schedule.NextCheck(kMidnight) - (kMidnight + hours(2)), seconds(60));
}

TEST(ScheduleTest, RequestNowIsDueAtOnce) {
  SeededRandom random(5);
  CheckSchedule schedule({}, random);
  const Clock::TimePoint now = kMidnight + hours(3);
  schedule.OnSuccess(now);
  EXPECT_FALSE(schedule.Due(now + seconds(1)));
  schedule.RequestNow(now + seconds(1));
  EXPECT_TRUE(schedule.Due(now + seconds(1)));
  EXPECT_EQ(schedule.NextCheck(now + seconds(1)), now + seconds(1));
  EXPECT_EQ(schedule.reason(), CheckReason::Requested);
  // Also in the middle of a backoff.
  for (int i = 0; i < 8; ++i) schedule.OnFailure(now);
  schedule.RequestNow(now);
  EXPECT_TRUE(schedule.Due(now));
}

TEST(ScheduleTest, ServerHintIsHonouredWithinBounds) {
  SeededRandom random(6);
  CheckSchedule schedule({}, random);
  schedule.OnSuccess(kMidnight, 3600);
  EXPECT_EQ(schedule.NextCheck(kMidnight), kMidnight + seconds(3600));
  EXPECT_EQ(schedule.reason(), CheckReason::ServerHint);
  schedule.OnSuccess(kMidnight, 86400);
  EXPECT_EQ(schedule.NextCheck(kMidnight), kMidnight + seconds(86400));
}

// A hostile or buggy server cannot make a device hammer it (0) or never check again (2^64-1).
TEST(ScheduleTest, HostileServerHintIsClamped) {
  SeededRandom random(6);
  CheckSchedule schedule({}, random);
  schedule.OnSuccess(kMidnight, 0);
  EXPECT_EQ(schedule.NextCheck(kMidnight), kMidnight + seconds(60));
  schedule.OnSuccess(kMidnight, 1);
  EXPECT_EQ(schedule.NextCheck(kMidnight), kMidnight + seconds(60));
  schedule.OnSuccess(kMidnight, std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(schedule.NextCheck(kMidnight), kMidnight + hours(24 * 7));
  schedule.OnSuccess(kMidnight, 1ULL << 63);
  EXPECT_EQ(schedule.NextCheck(kMidnight), kMidnight + hours(24 * 7));
}

TEST(ScheduleTest, RejectsInvalidOptions) {
  ScheduleOptions o;
  o.window_start = hours(20);
  o.window_length = hours(5);
  EXPECT_ERRC(ValidateScheduleOptions(o), Errc::InvalidConfig);
  o = {};
  o.period = seconds(0);
  EXPECT_ERRC(ValidateScheduleOptions(o), Errc::InvalidConfig);
  o = {};
  o.boot_delay_min = seconds(400);
  EXPECT_ERRC(ValidateScheduleOptions(o), Errc::InvalidConfig);
  o = {};
  o.backoff_cap = seconds(10);
  EXPECT_ERRC(ValidateScheduleOptions(o), Errc::InvalidConfig);
  o = {};
  o.hint_min = seconds(0);
  EXPECT_ERRC(ValidateScheduleOptions(o), Errc::InvalidConfig);
  EXPECT_TRUE(ValidateScheduleOptions({}).has_value());
}

// The failure count survives a reboot: a device restarted during an outage keeps backing off.
TEST(ScheduleTest, StateRoundTripsAndBackoffContinuesAfterReboot) {
  SeededRandom random(8);
  CheckSchedule before({}, random);
  before.OnSuccess(kMidnight);
  for (int i = 0; i < 5; ++i) before.OnFailure(kMidnight + hours(1));
  const std::string text = SerializeScheduleState(before.state());
  auto state = ParseScheduleState(text);
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  EXPECT_EQ(state->failures, 5u);
  EXPECT_EQ(state->last_success, kMidnight);
  CheckSchedule after({}, random, *state);
  after.OnBoot(kMidnight + hours(2));
  after.OnFailure(kMidnight + hours(2));
  EXPECT_EQ(after.state().failures, 6u);

  auto empty = ParseScheduleState(SerializeScheduleState({}));
  ASSERT_TRUE(empty.has_value());
  EXPECT_FALSE(empty->last_success.has_value());
}

TEST(ScheduleTest, RejectsCorruptStateFile) {
  EXPECT_ERRC(ParseScheduleState(""), Errc::ScheduleCorrupt);
  EXPECT_ERRC(ParseScheduleState("{\"format\":1,\"failures\":0}"), Errc::ScheduleCorrupt);
  EXPECT_ERRC(ParseScheduleState("{\"format\":2,\"failures\":0,\"last_success\":null}"),
              Errc::ScheduleCorrupt);
  EXPECT_ERRC(ParseScheduleState("{\"format\":1,\"failures\":0,\"last_success\":null,\"x\":1}"),
              Errc::ScheduleCorrupt);
  EXPECT_ERRC(ParseScheduleState("{\"format\":1,\"failures\":4294967296,\"last_success\":null}"),
              Errc::ScheduleCorrupt);
  EXPECT_ERRC(
      ParseScheduleState("{\"format\":1,\"failures\":0,\"last_success\":99999999999999999999}"),
      Errc::ScheduleCorrupt);
  EXPECT_ERRC(ParseScheduleState("{\"format\":1,\"failures\":-1,\"last_success\":null}"),
              Errc::ScheduleCorrupt);
}

}  // namespace
}  // namespace upkeep::agent
