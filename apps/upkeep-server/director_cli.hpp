#pragma once

// upkeep-server director rotate: signs the next director root where the root keys are kept
// (offline), optionally with new root keys and new online keys. The server only reads roots.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "cli.hpp"
#include "upkeep/common/clock.hpp"

namespace upkeep::server {

struct DirectorRotateOptions {
  std::string current_root;
  std::vector<std::string> root_keys;
  std::vector<std::string> new_root_keys;
  std::uint32_t new_root_threshold = 1;
  std::string new_online_dir;
  std::uint32_t expires_days = 3650;
  std::string output;
};

void AddDirectorCommands(CLI::App& app, DirectorRotateOptions& options);
// Runs `director rotate` when it was parsed; nullopt otherwise.
[[nodiscard]] std::optional<int> RunDirectorCommands(const CLI::App& app,
                                                     const DirectorRotateOptions& options,
                                                     const Clock& clock, std::ostream& out,
                                                     std::ostream& err);

}  // namespace upkeep::server
