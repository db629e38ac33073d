#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

namespace upkeep {

// Wall-clock time. Expiry checks, scheduling and deferrals take a Clock so tests never sleep.
class Clock {
 public:
  using TimePoint = std::chrono::sys_seconds;
  virtual ~Clock() = default;
  [[nodiscard]] virtual TimePoint Now() const = 0;
  // Waits `d`. Backoff and resume pauses go through here so tests can run them without sleeping;
  // the default really sleeps. Const like Now(): waiting is reading the clock, not setting it.
  virtual void SleepFor(std::chrono::milliseconds d) const;
};

// Reads the time through libc's clock_gettime(CLOCK_REALTIME), so tools like faketime apply.
class SystemClock final : public Clock {
 public:
  [[nodiscard]] TimePoint Now() const override;
  // One instance for the whole process, for callers that are not given a clock.
  [[nodiscard]] static SystemClock& Process();
};

// A clock that only moves when told to. SleepFor returns at once: it records the pause and moves
// the clock forward by it (whole seconds as they accumulate), also through a const reference,
// as a real clock moves while its owner waits.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint now) : now_(now) {}
  [[nodiscard]] TimePoint Now() const override { return now_; }
  void Set(TimePoint now) { now_ = now; }
  void Advance(std::chrono::seconds d) { now_ += d; }
  void SleepFor(std::chrono::milliseconds d) const override;

  // Every pause asked for through SleepFor, in order, and their sum.
  [[nodiscard]] const std::vector<std::chrono::milliseconds>& sleeps() const { return sleeps_; }
  [[nodiscard]] std::chrono::milliseconds slept() const { return slept_; }

 private:
  mutable TimePoint now_;
  mutable std::vector<std::chrono::milliseconds> sleeps_;
  mutable std::chrono::milliseconds slept_{0};
  mutable std::chrono::milliseconds carry_{0};  // slept but not yet a whole second of Now()
};

}  // namespace upkeep
