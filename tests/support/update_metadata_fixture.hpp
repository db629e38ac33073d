#pragma once

// Update metadata (`custom` of an image-repository target) for tests that only need a valid
// release for some hardware: a raw 100-byte root filesystem payload, version 2.5.0.

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace upkeep::testing {

inline nlohmann::json ImageUpdateCustom(const std::vector<std::string>& hardware) {
  return nlohmann::json{{"upkeep",
                         {{"schema", 1},
                          {"component", "rootfs"},
                          {"version", "2.5.0"},
                          {"hardware", hardware},
                          {"security_version", 3},
                          {"kind", nlohmann::json::array({"feature"})},
                          {"disruption",
                           {{"reboot", true},
                            {"downtime_seconds", 30},
                            {"available_during_update", nlohmann::json::array({"motion alerts"})}}},
                          {"settings_impact", {{"effect", "none"}, {"note", ""}}},
                          {"payload", {{"format", "raw"}, {"installed_size", 100}}}}}};
}

// The same for a release of `version` whose kind is "security" (with a security section) or
// "feature".
inline nlohmann::json ReleaseCustom(const std::string& kind, const std::string& version,
                                    const std::vector<std::string>& hardware) {
  nlohmann::json c = ImageUpdateCustom(hardware);
  c["upkeep"]["version"] = version;
  c["upkeep"]["kind"] = nlohmann::json::array({kind});
  if (kind == "security") {
    c["upkeep"]["security"] = {{"severity", "high"},
                               {"cves", nlohmann::json::array({"CVE-2026-12345"})},
                               {"risks_mitigated", "Stops attackers viewing the camera feed."}};
  }
  return c;
}

}  // namespace upkeep::testing
