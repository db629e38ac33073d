#pragma once

#include <iosfwd>
#include <string>

#include "upkeep/agent/config.hpp"

namespace upkeep::agent {

// Exit codes of `upkeep-agent run` (docs/agent.md): 0 after SIGTERM, SIGINT or SIGHUP.
inline constexpr int kDaemonExitConfig = 1;   // the configuration or a file it names is unusable
inline constexpr int kDaemonExitRuntime = 7;  // the socket, data directory or journal is unusable

// `upkeep-agent run`: the daemon (libs/agent/daemon.hpp) with its local API, until a
// termination signal.
int RunDaemon(const AgentConfig& config, std::ostream& out, std::ostream& err);

// `upkeep-agent check` and `policy` when no daemon runs: the same work on the device directly.
// Returns an exit code (docs/agent.md).
int RunStandaloneCheck(const AgentConfig& config, bool json, std::ostream& out, std::ostream& err);
// `policy` (key empty: show) or `policy set KEY on|off [--confirm]` on data_dir/policy.json.
int RunStandalonePolicy(const AgentConfig& config, const std::string& key, const std::string& value,
                        bool confirm, bool json, std::ostream& out, std::ostream& err);

}  // namespace upkeep::agent
