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
  // Canonical JSON writes control characters raw, which strict JSON forbids; otherwise the
  // canonical form is itself JSON and a fixed point.
  for (char c : *canonical) {
    if (static_cast<unsigned char>(c) < 0x20) return 0;
  }
  auto again = upkeep::metadata::ParseJson(*canonical);
  if (!again) std::abort();
  auto twice = upkeep::metadata::Canonicalize(*again);
  if (!twice || *twice != *canonical) std::abort();
  return 0;
}
