// Fuzz target: strict JSON parsing and canonicalization of untrusted bytes.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upkeep/metadata/canonical_json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = upkeep::metadata::ParseJson(text);
  if (!parsed) return 0;
  auto canonical = upkeep::metadata::Canonicalize(*parsed);
  if (!canonical) return 0;
  // The canonical form is itself valid JSON and a fixed point.
  auto again = upkeep::metadata::ParseJson(*canonical);
  if (!again) std::abort();
  auto twice = upkeep::metadata::Canonicalize(*again);
  if (!twice || *twice != *canonical) std::abort();
  return 0;
}
