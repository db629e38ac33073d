// Fuzz target: the agent's TOML configuration. Whatever parses must print (--dump-config) to a
// configuration that parses to the same values.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upkeep/agent/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace upkeep::agent;
  auto config = ParseConfig(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!config) return 0;
  const std::string dumped = DumpConfig(*config);
  auto again = ParseConfig(dumped);
  if (!again || DumpConfig(*again) != dumped) std::abort();
  return 0;
}
