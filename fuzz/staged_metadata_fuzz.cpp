// Fuzz targets staged_root and staged_targets: the metadata files a repository reads back
// (REPO/staged/<role>.json, REPO/published-root.json) through the typed model. Whatever parses
// must serialise (ToBytes) and parse back equal, with the same canonical bytes under its
// signatures: the model loses no field a signature covers.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "upkeep/metadata/model.hpp"

namespace {

template <typename Parse>
void RoundTrip(std::string_view input, Parse parse) {
  auto first = parse(input);
  if (!first) return;
  auto bytes = first->ToBytes();
  if (!bytes) std::abort();  // parsed strings are valid UTF-8, so they serialise
  auto second = parse(*bytes);
  if (!second || !(*second == *first)) std::abort();
  auto canonical = first->CanonicalSigned();
  if (!canonical || *canonical != first->canonical_signed) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace upkeep::metadata;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (std::string_view(UPKEEP_FUZZ_ROLE) == "root") {
    RoundTrip(input, [](std::string_view b) { return ParseRoot(b); });
  } else {
    RoundTrip(input, [](std::string_view b) { return ParseTargets(b); });
  }
  return 0;
}
