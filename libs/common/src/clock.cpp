#include "upkeep/common/clock.hpp"

#include <ctime>
#include <thread>

namespace upkeep {

Clock::TimePoint SystemClock::Now() const {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return TimePoint(std::chrono::seconds(ts.tv_sec));
}

void Clock::SleepFor(std::chrono::milliseconds d) const {
  if (d.count() > 0) std::this_thread::sleep_for(d);
}

SystemClock& SystemClock::Process() {
  static SystemClock clock;
  return clock;
}

void FakeClock::SleepFor(std::chrono::milliseconds d) const {
  if (d.count() < 0) d = std::chrono::milliseconds(0);
  sleeps_.push_back(d);
  slept_ += d;
  carry_ += d;
  const auto whole = std::chrono::duration_cast<std::chrono::seconds>(carry_);
  now_ += whole;
  carry_ -= whole;
}

}  // namespace upkeep
