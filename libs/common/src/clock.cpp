#include "upkeep/common/clock.hpp"

#include <ctime>

namespace upkeep {

Clock::TimePoint SystemClock::Now() const {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return TimePoint(std::chrono::seconds(ts.tv_sec));
}

}  // namespace upkeep
