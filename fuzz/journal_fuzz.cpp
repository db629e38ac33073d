// Fuzz target: the agent's state journal (state.json), as read after a crash. What parses must
// serialize and parse back to the same journal.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upkeep/agent/state.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace upkeep::agent;
  auto state = ParseDeviceState(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!state) return 0;
  const std::string text = SerializeDeviceState(*state);
  auto again = ParseDeviceState(text);
  if (!again || SerializeDeviceState(*again) != text) std::abort();
  return 0;
}
