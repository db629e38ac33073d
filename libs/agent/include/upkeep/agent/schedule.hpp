#pragma once

// When the device agent checks for updates (EN 303 645 provision 5.3-5, docs/policy.md).
//
// Pure decision logic: no threads, no sleeping, no I/O. Every call takes the current time from
// the caller (read from an upkeep::Clock) and every random draw comes from an injectable
// RandomSource, so a test replays a device's whole life on a FakeClock with a fixed seed.
//
// - After boot: one check after a small random delay (default 30..300 s).
// - Then once per period (default a day): periods are aligned to the Unix epoch, and in each
//   period the device draws a fresh random point inside the check window (default the whole
//   period), so a fleet never checks in at the same moment and no device keeps a bad slot.
// - On failure: exponential backoff with full jitter (random in [1 s, min(cap, base * 2^(n-1))]),
//   base 60 s, cap 6 h; reset on success.
// - On request (local API "check now") or the server's hint (`next_checkin_seconds`, bounded to
//   [hint_min, hint_max]).
//
// What survives a reboot is ScheduleState (failure count and last success, data_dir/schedule.json,
// written by the caller with Filesystem::WriteFileAtomic). The next check time is not persisted:
// every boot checks after the boot delay.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/result.hpp"

namespace upkeep::agent {

// Source of random 64-bit values. The daemon seeds SeededRandom from the OS; tests from a number.
class RandomSource {
 public:
  virtual ~RandomSource() = default;
  virtual std::uint64_t Next() = 0;
};

// SplitMix64: small, fast, and good enough for spreading check times (not for secrets).
class SeededRandom final : public RandomSource {
 public:
  explicit SeededRandom(std::uint64_t seed) : state_(seed) {}
  std::uint64_t Next() override;

 private:
  std::uint64_t state_;
};

// A value uniform in [lo, hi] (inclusive; hi < lo is treated as lo).
[[nodiscard]] std::chrono::seconds UniformSeconds(RandomSource& random, std::chrono::seconds lo,
                                                  std::chrono::seconds hi);

struct ScheduleOptions {
  std::chrono::seconds boot_delay_min{30};
  std::chrono::seconds boot_delay_max{300};
  // Length of a period: one regular check per period.
  std::chrono::seconds period{std::chrono::hours(24)};
  // Where in each period (offset from its start, UTC-aligned) the check window opens, and its
  // length. window_start + window_length <= period. Default: the whole day.
  std::chrono::seconds window_start{0};
  std::chrono::seconds window_length{std::chrono::hours(24)};
  std::chrono::seconds backoff_base{60};
  std::chrono::seconds backoff_cap{std::chrono::hours(6)};
  // Bounds of the server's `next_checkin_seconds` hint (a hostile or buggy 0 or 2^64 is clamped).
  std::chrono::seconds hint_min{60};
  std::chrono::seconds hint_max{std::chrono::hours(24 * 7)};
};

// Errc::InvalidConfig naming the bad option: zero period, empty window, window past the period,
// boot delay min > max, zero backoff base, cap below base, hint_min > hint_max.
[[nodiscard]] Result<void> ValidateScheduleOptions(const ScheduleOptions& options);

// What the schedule persists across reboots (data_dir/schedule.json).
struct ScheduleState {
  std::uint32_t failures = 0;  // consecutive failed checks (backoff continues after a reboot)
  std::optional<Clock::TimePoint> last_success;
};

// Errc::ScheduleCorrupt on anything but the exact format (docs/policy.md).
[[nodiscard]] Result<ScheduleState> ParseScheduleState(std::string_view text);
[[nodiscard]] std::string SerializeScheduleState(const ScheduleState& state);

// Why the next check is when it is.
enum class CheckReason { Boot, Periodic, Backoff, Requested, ServerHint };
[[nodiscard]] const char* ToString(CheckReason reason);

class CheckSchedule {
 public:
  // `options` must pass ValidateScheduleOptions (invalid ones are replaced by the defaults);
  // `random` must outlive the schedule.
  CheckSchedule(ScheduleOptions options, RandomSource& random, ScheduleState state = {});

  // When the next check is due (may be in the past: check at once). Before OnBoot: `now`.
  [[nodiscard]] Clock::TimePoint NextCheck(Clock::TimePoint now) const;
  [[nodiscard]] bool Due(Clock::TimePoint now) const { return NextCheck(now) <= now; }
  [[nodiscard]] CheckReason reason() const { return reason_; }

  // The agent started (network up): check after the boot delay.
  void OnBoot(Clock::TimePoint now);
  // A check succeeded. `server_hint_seconds`: the answer's `next_checkin_seconds`, if any.
  void OnSuccess(Clock::TimePoint now, std::optional<std::uint64_t> server_hint_seconds = {});
  // A check failed (network, server, verification): retry after the backoff.
  void OnFailure(Clock::TimePoint now);
  // Check at once (local API "check now").
  void RequestNow(Clock::TimePoint now);

  // The upper bound of the backoff delay after `failures` consecutive failures.
  [[nodiscard]] std::chrono::seconds BackoffCeiling(std::uint32_t failures) const;
  // The periodic check time for the period after the one holding `t`.
  [[nodiscard]] Clock::TimePoint NextPeriodic(Clock::TimePoint t);

  [[nodiscard]] const ScheduleState& state() const { return state_; }
  [[nodiscard]] const ScheduleOptions& options() const { return options_; }

 private:
  ScheduleOptions options_;
  RandomSource& random_;
  ScheduleState state_;
  std::optional<Clock::TimePoint> next_;
  CheckReason reason_ = CheckReason::Boot;
};

}  // namespace upkeep::agent
