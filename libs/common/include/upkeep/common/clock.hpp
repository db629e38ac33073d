#pragma once

#include <chrono>
#include <cstdint>

namespace upkeep {

// Wall-clock time. Expiry checks, scheduling and deferrals take a Clock so tests never sleep.
class Clock {
 public:
  using TimePoint = std::chrono::sys_seconds;
  virtual ~Clock() = default;
  [[nodiscard]] virtual TimePoint Now() const = 0;
};

// Reads the time through libc's clock_gettime(CLOCK_REALTIME), so tools like faketime apply.
class SystemClock final : public Clock {
 public:
  [[nodiscard]] TimePoint Now() const override;
};

// A clock that only moves when told to.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint now) : now_(now) {}
  [[nodiscard]] TimePoint Now() const override { return now_; }
  void Set(TimePoint now) { now_ = now; }
  void Advance(std::chrono::seconds d) { now_ += d; }

 private:
  TimePoint now_;
};

}  // namespace upkeep
