// Fuzz target: chunk index parsing (docs/formats/payload.md); what parses must serialize and
// parse back to the same index.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upkeep/install/payload.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace upkeep::install;
  auto index = ParseChunkIndex(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!index) return 0;
  const std::string text = SerializeChunkIndex(*index);
  auto again = ParseChunkIndex(text);
  if (!again || SerializeChunkIndex(*again) != text) std::abort();
  return 0;
}
