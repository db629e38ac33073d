// Fuzz target: the daemon's check-in counters (data_dir/checkin.json), read at every check-in.
// What parses must serialize and parse back to the same counters.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upkeep/agent/daemon.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace upkeep::agent;
  auto c = ParseCheckInCounters(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!c) return 0;
  auto again = ParseCheckInCounters(SerializeCheckInCounters(*c));
  if (!again || again->counter != c->counter || again->accepted_counter != c->accepted_counter) {
    std::abort();
  }
  return 0;
}
