// Fuzz targets for each role's parser and verifier: the input is offered to a
// TrustedMetadataSet at the stage named by UPKEEP_FUZZ_ROLE (root, timestamp, snapshot,
// targets), preceded by a fixed good chain so the verifier's later rules are reached.

#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_chain.hpp"  // generated: kRoot, kTimestamp, kSnapshot (a good chain)
#include "upkeep/metadata/trusted_set.hpp"

namespace {
using upkeep::metadata::ParseDateTime;
using upkeep::metadata::TrustedMetadataSet;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto now = *ParseDateTime("2030-01-01T00:00:00Z");
  auto set = TrustedMetadataSet::Create(upkeep_fuzz::kRoot, now);
  if (!set) return 0;
  const std::string role = UPKEEP_FUZZ_ROLE;
  if (role == "root") {
    (void)set->UpdateRoot(input);
    return 0;
  }
  if (role == "timestamp") {
    (void)set->UpdateTimestamp(input);
    return 0;
  }
  if (!set->UpdateTimestamp(upkeep_fuzz::kTimestamp)) return 0;
  if (role == "snapshot") {
    (void)set->UpdateSnapshot(input, false);
    (void)upkeep::metadata::ParseSnapshot(input);
    return 0;
  }
  if (!set->UpdateSnapshot(upkeep_fuzz::kSnapshot, false)) return 0;
  (void)set->UpdateTargets(input);
  (void)upkeep::metadata::ParseTargets(input);
  return 0;
}
