#pragma once

// Update metadata: what a release is, carried signed in each target's "custom" object under the
// key "upkeep" (schema in docs/formats/update-metadata.md). The installer reads the component,
// hardware, security version and payload; the agent tells the user the kind, the risks mitigated,
// the expected downtime and whether settings change.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "upkeep/common/result.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/model.hpp"

namespace upkeep::metadata {

inline constexpr std::uint64_t kUpdateMetadataSchema = 1;
inline constexpr std::uint64_t kMaxDowntimeSeconds = 7 * 24 * 3600;

enum class Component { Rootfs, Bootloader, Application, Configuration, PeripheralFirmware };
enum class Severity { Low, Medium, High, Critical };
enum class SettingsEffect { None, Migrated, Reset };
enum class PayloadFormat { Raw, Zstd, Chunked };

struct SecurityInfo {
  Severity severity = Severity::Low;
  std::vector<std::string> cves;    // "CVE-YYYY-NNNN…", may be empty (e.g. hardening)
  std::string risks_mitigated;      // plain language, meant for users (no notice shows it yet)
};

struct Disruption {
  bool reboot = false;
  std::uint64_t downtime_seconds = 0;
  std::vector<std::string> available_during_update;  // functions that keep working
};

struct SettingsImpact {
  SettingsEffect effect = SettingsEffect::None;
  std::string note;  // meant for users (no notice shows it yet); required unless effect is none
};

struct Payload {
  PayloadFormat format = PayloadFormat::Raw;
  std::uint64_t installed_size = 0;       // bytes written to the device
  std::optional<std::string> chunk_index;  // target path of the chunk index (chunked only)
};

struct UpdateMetadata {
  std::uint64_t schema = kUpdateMetadataSchema;
  Component component = Component::Rootfs;
  std::string version;                // release version as users see it
  std::vector<std::string> hardware;  // compatible models
  std::uint64_t security_version = 0; // monotonic anti-rollback counter
  bool is_security = false;           // "kind" contains "security"
  bool is_feature = false;            // "kind" contains "feature"
  std::optional<SecurityInfo> security;  // present exactly when is_security
  Disruption disruption;
  SettingsImpact settings_impact;
  Payload payload;
  // A signed permission to install a lower security_version than the device has (NIST IR 8259A's
  // authorised rollback). Each device accepts a given sequence once: it must exceed the highest
  // sequence the device has used, so a captured rollback target cannot be replayed.
  std::optional<std::uint64_t> authorised_rollback_sequence;
};

// Validates `custom["upkeep"]`. Unknown keys are rejected. Errors: Errc::InvalidUpdateMetadata
// (message names the field), Errc::UnsupportedUpdateMetadataSchema, Errc::NoUpdateMetadata when
// the target carries none.
[[nodiscard]] Result<UpdateMetadata> ParseUpdateMetadata(const Json& custom);
[[nodiscard]] Result<UpdateMetadata> UpdateMetadataOf(const TargetFile& target);

// The "custom" object for `m` ({"upkeep": {...}}); ParseUpdateMetadata(ToCustomJson(m)) == m.
[[nodiscard]] Json ToCustomJson(const UpdateMetadata& m);

[[nodiscard]] const char* ToString(Component c);
[[nodiscard]] const char* ToString(Severity s);
[[nodiscard]] const char* ToString(SettingsEffect e);
[[nodiscard]] const char* ToString(PayloadFormat f);

}  // namespace upkeep::metadata
