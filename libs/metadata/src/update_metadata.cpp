#include "upkeep/metadata/update_metadata.hpp"

#include <array>
#include <set>
#include <utility>

#include "upkeep/metadata/json_reader.hpp"

namespace upkeep::metadata {

namespace {

constexpr std::array<std::pair<Component, const char*>, 5> kComponents{{
    {Component::Rootfs, "rootfs"},
    {Component::Bootloader, "bootloader"},
    {Component::Application, "application"},
    {Component::Configuration, "configuration"},
    {Component::PeripheralFirmware, "peripheral-firmware"},
}};
constexpr std::array<std::pair<Severity, const char*>, 4> kSeverities{{
    {Severity::Low, "low"},
    {Severity::Medium, "medium"},
    {Severity::High, "high"},
    {Severity::Critical, "critical"},
}};
constexpr std::array<std::pair<SettingsEffect, const char*>, 3> kEffects{{
    {SettingsEffect::None, "none"},
    {SettingsEffect::Migrated, "migrated"},
    {SettingsEffect::Reset, "reset"},
}};
constexpr std::array<std::pair<PayloadFormat, const char*>, 3> kFormats{{
    {PayloadFormat::Raw, "raw"},
    {PayloadFormat::Zstd, "zstd"},
    {PayloadFormat::Chunked, "chunked"},
}};

template <typename E, std::size_t N>
const char* NameOf(const std::array<std::pair<E, const char*>, N>& table, E value) {
  for (const auto& [v, name] : table) {
    if (v == value) return name;
  }
  return "?";
}

Error Bad(const std::string& field, const std::string& what) {
  return Error(Errc::InvalidUpdateMetadata, "custom.upkeep." + field + ": " + what);
}

// Lists of names: at least one entry unless said otherwise, none empty, none twice.
constexpr StringListRules kNames{.allow_empty_list = false, .unique = true};
constexpr StringListRules kNamesOrNone{.allow_empty_list = true, .unique = true};

// A member holding one of `table`'s names.
template <typename E, std::size_t N>
Result<E> Enum(JsonReader& r, const char* key,
               const std::array<std::pair<E, const char*>, N>& table) {
  UPKEEP_ASSIGN_OR_RETURN(std::string name, r.String(key));
  for (const auto& [value, text] : table) {
    if (name == text) return value;
  }
  std::string allowed;
  for (const auto& [value, text] : table)
    allowed += std::string(allowed.empty() ? "" : ", ") + text;
  return r.Fail(key, "\"" + name + "\" is not one of " + allowed);
}

bool IsCveId(const std::string& s) {
  // CVE-YYYY-NNNN with four or more digits in the sequence number.
  if (s.size() < 13 || s.compare(0, 4, "CVE-") != 0 || s[8] != '-') return false;
  for (std::size_t i = 4; i < s.size(); ++i) {
    if (i == 8) continue;
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return true;
}

Result<SecurityInfo> ParseSecurity(JsonReader r) {
  SecurityInfo out;
  UPKEEP_ASSIGN_OR_RETURN(out.severity, Enum(r, "severity", kSeverities));
  UPKEEP_ASSIGN_OR_RETURN(out.cves, r.Strings("cves", kNamesOrNone));
  for (std::size_t i = 0; i < out.cves.size(); ++i) {
    if (!IsCveId(out.cves[i])) {
      return r.Fail("cves[" + std::to_string(i) + "]",
                    "\"" + out.cves[i] + "\" is not a CVE ID (CVE-YYYY-NNNN)");
    }
  }
  UPKEEP_ASSIGN_OR_RETURN(out.risks_mitigated, r.String("risks_mitigated"));
  UPKEEP_TRY(r.NoUnknownKeys());
  return out;
}

}  // namespace

const char* ToString(Component c) { return NameOf(kComponents, c); }
const char* ToString(Severity s) { return NameOf(kSeverities, s); }
const char* ToString(SettingsEffect e) { return NameOf(kEffects, e); }
const char* ToString(PayloadFormat f) { return NameOf(kFormats, f); }

Result<UpdateMetadata> ParseUpdateMetadata(const Json& custom) {
  if (!custom.is_object() || !custom.contains("upkeep")) {
    return Error(Errc::NoUpdateMetadata, "target has no custom.upkeep update metadata");
  }
  const Json& u = custom["upkeep"];
  if (!u.is_object()) return Error(Errc::InvalidUpdateMetadata, "custom.upkeep: must be an object");
  JsonReader r(u, Errc::InvalidUpdateMetadata, "custom.upkeep");
  UpdateMetadata m;

  UPKEEP_ASSIGN_OR_RETURN(m.schema, r.Uint("schema"));
  if (m.schema != kUpdateMetadataSchema) {
    return Error(Errc::UnsupportedUpdateMetadataSchema,
                 "custom.upkeep.schema " + std::to_string(m.schema) + " (this upkeep reads " +
                     std::to_string(kUpdateMetadataSchema) + ")");
  }
  UPKEEP_ASSIGN_OR_RETURN(m.component, Enum(r, "component", kComponents));
  UPKEEP_ASSIGN_OR_RETURN(m.version, r.String("version"));
  UPKEEP_ASSIGN_OR_RETURN(m.hardware, r.Strings("hardware", kNames));
  UPKEEP_ASSIGN_OR_RETURN(m.security_version, r.Uint("security_version"));

  UPKEEP_ASSIGN_OR_RETURN(auto kinds, r.Strings("kind", kNames));
  for (const auto& k : kinds) {
    if (k == "security")
      m.is_security = true;
    else if (k == "feature")
      m.is_feature = true;
    else
      return Bad("kind", "\"" + k + "\" is not one of security, feature");
  }
  const Json* security = r.Optional("security");
  if (m.is_security && security == nullptr) {
    return Bad("security", "required when kind includes security");
  }
  if (!m.is_security && security != nullptr) {
    return Bad("security", "only allowed when kind includes security");
  }
  if (security != nullptr) {
    UPKEEP_ASSIGN_OR_RETURN(JsonReader sr, r.Object("security"));
    UPKEEP_ASSIGN_OR_RETURN(m.security, ParseSecurity(std::move(sr)));
  }

  UPKEEP_ASSIGN_OR_RETURN(JsonReader d, r.Object("disruption"));
  UPKEEP_ASSIGN_OR_RETURN(m.disruption.reboot, d.Bool("reboot"));
  UPKEEP_ASSIGN_OR_RETURN(m.disruption.downtime_seconds, d.Uint("downtime_seconds"));
  if (m.disruption.downtime_seconds > kMaxDowntimeSeconds) {
    return Bad("disruption.downtime_seconds", "more than a week");
  }
  UPKEEP_ASSIGN_OR_RETURN(m.disruption.available_during_update,
                          d.Strings("available_during_update", kNamesOrNone));
  UPKEEP_TRY(d.NoUnknownKeys());

  UPKEEP_ASSIGN_OR_RETURN(JsonReader s, r.Object("settings_impact"));
  UPKEEP_ASSIGN_OR_RETURN(m.settings_impact.effect, Enum(s, "effect", kEffects));
  UPKEEP_ASSIGN_OR_RETURN(m.settings_impact.note, s.String("note", {.allow_empty = true}));
  if (m.settings_impact.effect != SettingsEffect::None && m.settings_impact.note.empty()) {
    return Bad("settings_impact.note", "must tell users what happens to their settings");
  }
  UPKEEP_TRY(s.NoUnknownKeys());

  UPKEEP_ASSIGN_OR_RETURN(JsonReader p, r.Object("payload"));
  UPKEEP_ASSIGN_OR_RETURN(m.payload.format, Enum(p, "format", kFormats));
  UPKEEP_ASSIGN_OR_RETURN(m.payload.installed_size, p.Uint("installed_size"));
  const Json* index = p.Optional("chunk_index");
  if (m.payload.format == PayloadFormat::Chunked) {
    if (index == nullptr) return Bad("payload.chunk_index", "required for chunked payloads");
    UPKEEP_ASSIGN_OR_RETURN(m.payload.chunk_index, p.String("chunk_index"));
  } else if (index != nullptr) {
    return Bad("payload.chunk_index", "only allowed for chunked payloads");
  }
  UPKEEP_TRY(p.NoUnknownKeys());

  const Json* rollback = r.Optional("authorised_rollback");
  if (rollback != nullptr) {
    UPKEEP_ASSIGN_OR_RETURN(JsonReader ar, r.Object("authorised_rollback"));
    UPKEEP_ASSIGN_OR_RETURN(const std::uint64_t sequence, ar.Uint("sequence"));
    if (sequence == 0) return Bad("authorised_rollback.sequence", "must be at least 1");
    m.authorised_rollback_sequence = sequence;
    UPKEEP_TRY(ar.NoUnknownKeys());
  }

  UPKEEP_TRY(r.NoUnknownKeys());
  return m;
}

Result<UpdateMetadata> UpdateMetadataOf(const TargetFile& target) {
  auto m = ParseUpdateMetadata(target.custom);
  if (!m) return std::move(m).error().WithContext(target.path);
  return m;
}

Json ToCustomJson(const UpdateMetadata& m) {
  Json kind = Json::array();
  if (m.is_security) kind.push_back("security");
  if (m.is_feature) kind.push_back("feature");
  Json u = {
      {"schema", m.schema},
      {"component", ToString(m.component)},
      {"version", m.version},
      {"hardware", m.hardware},
      {"security_version", m.security_version},
      {"kind", kind},
      {"disruption",
       {{"reboot", m.disruption.reboot},
        {"downtime_seconds", m.disruption.downtime_seconds},
        {"available_during_update", m.disruption.available_during_update}}},
      {"settings_impact",
       {{"effect", ToString(m.settings_impact.effect)}, {"note", m.settings_impact.note}}},
      {"payload",
       {{"format", ToString(m.payload.format)}, {"installed_size", m.payload.installed_size}}},
  };
  if (m.security) {
    u["security"] = {{"severity", ToString(m.security->severity)},
                     {"cves", m.security->cves},
                     {"risks_mitigated", m.security->risks_mitigated}};
  }
  if (m.payload.chunk_index) u["payload"]["chunk_index"] = *m.payload.chunk_index;
  if (m.authorised_rollback_sequence) {
    u["authorised_rollback"] = {{"sequence", *m.authorised_rollback_sequence}};
  }
  return Json{{"upkeep", u}};
}

}  // namespace upkeep::metadata
