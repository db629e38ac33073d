// Fuzz target: update metadata ("custom" of a target) from untrusted JSON; what parses must
// survive a round trip through ToCustomJson unchanged.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upkeep/metadata/update_metadata.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace upkeep::metadata;
  auto json = ParseJson(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!json) return 0;
  auto m = ParseUpdateMetadata(*json);
  if (!m) return 0;
  auto again = ParseUpdateMetadata(ToCustomJson(*m));
  if (!again || ToCustomJson(*again) != ToCustomJson(*m)) std::abort();
  return 0;
}
