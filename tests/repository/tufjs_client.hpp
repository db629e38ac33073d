#pragma once

// Runs the independent tuf-js client (tools/tufjs/client-download.js) for the repository tests.

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

namespace upkeep::testing {

// Downloads `target` from `base_url` (serving metadata/ and targets/) with tuf-js, trusting
// `root`. Returns the exit status, or nullopt when node or the tuf-js tooling is not installed.
inline std::optional<int> TufJsDownload(const std::string& base_url,
                                        const std::filesystem::path& root,
                                        const std::string& target) {
  const std::filesystem::path tufjs = std::filesystem::path(UPKEEP_SOURCE_DIR) / "tools" / "tufjs";
  if (!std::filesystem::exists(tufjs / "node_modules" / "tuf-js") ||
      std::system("command -v node >/dev/null 2>&1") != 0) {
    return std::nullopt;
  }
  const std::string cmd = "timeout 60 node " + (tufjs / "client-download.js").string() + " " +
                          base_url + "/metadata/ " + base_url + "/targets/ " + root.string() +
                          " " + target + " >/dev/null 2>&1";
  return std::system(cmd.c_str());
}

}  // namespace upkeep::testing
