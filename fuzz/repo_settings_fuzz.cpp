// Fuzz target: REPO/repo.json, the repository's settings, read back by `upkeep repo` after any
// hand edit. Whatever parses must be written by SettingsToBytes and parse back the same.

#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "upkeep/repository/repository.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace upkeep::repository;
  auto settings = ParseSettings(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!settings) return 0;
  const std::string bytes = SettingsToBytes(*settings);
  auto again = ParseSettings(bytes);
  if (!again || SettingsToBytes(*again) != bytes) std::abort();
  return 0;
}
