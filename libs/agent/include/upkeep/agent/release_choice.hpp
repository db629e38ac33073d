#pragma once

// Which releases a device takes when no fleet server decides for it (a maker publishing only to a
// static mirror or CDN): from the targets the image repository's top-level targets role lists,
// per component the newest release built for this device's hardware that is newer than what is
// installed. With a fleet server the director decides instead (metadata/director.hpp).

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/agent/config.hpp"
#include "upkeep/agent/state.hpp"
#include "upkeep/metadata/model.hpp"
#include "upkeep/metadata/update_metadata.hpp"

namespace upkeep::agent {

struct ReleaseChoice {
  std::string component;
  metadata::TargetFile target;
  metadata::UpdateMetadata update;
};

// Compares release versions: dot- or dash-separated segments, numeric segments by value, others
// as text, a missing segment below any present one ("2.4" < "2.4.1"). <0, 0, >0.
[[nodiscard]] int CompareVersions(std::string_view a, std::string_view b);

// For each component with a candidate, the release to install, ordered by component name. A
// candidate carries update metadata listing `config.device.hardware`, lies in that component's
// namespace (ComponentFor), is not a chunk index, is at or above the component's security floor,
// and is newer than the installed release: a higher security_version, or the same one and a
// higher version. The newest candidate wins (higher security_version, then version). Targets
// without (valid) update metadata or outside every namespace are skipped, never an error: the
// repository may list things for other devices.
[[nodiscard]] std::vector<ReleaseChoice> ChooseReleases(
    const AgentConfig& config, const DeviceState& state,
    const std::map<std::string, metadata::TargetFile, std::less<>>& targets);

}  // namespace upkeep::agent
