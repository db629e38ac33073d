#pragma once

// The administration commands for rollouts: releases, groups (maintenance windows, membership)
// and campaigns. Kept apart from cli.cpp's device and token commands.

#include <CLI/CLI.hpp>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "cli.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/server/campaigns.hpp"
#include "upkeep/storage/database.hpp"

namespace upkeep::server {

struct RolloutOptions {
  bool json = false;
  std::string name;
  std::string device_id;
  std::string group;
  std::string repository;
  std::string root_file;
  std::vector<std::string> targets;
  std::string ca_file;
  std::string window_start;
  std::uint32_t window_minutes = 60;
  std::string release;
  std::string phases = "1,10,50,100";
  double soak_hours = 24;
  std::uint32_t failure_threshold = 5;
  std::string reason;
};

// Adds `admin releases|groups|campaigns ...` and `admin devices set-group`.
void AddRolloutCommands(CLI::App& admin, CLI::App& devices, RolloutOptions& options);
// Runs the one that was parsed; nullopt when none was.
[[nodiscard]] std::optional<int> RunRolloutCommands(const CLI::App& admin,
                                                    const RolloutOptions& options,
                                                    storage::Database& db, const Clock& clock,
                                                    std::ostream& out, std::ostream& err);

}  // namespace upkeep::server
