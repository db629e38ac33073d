#pragma once

#include <iosfwd>

#include "upkeep/agent/config.hpp"

namespace upkeep::agent {

// Exit codes of `upkeep-agent run` (docs/agent.md): 0 after SIGTERM, SIGINT or SIGHUP.
inline constexpr int kDaemonExitConfig = 1;   // the configuration or a file it names is unusable
inline constexpr int kDaemonExitRuntime = 7;  // the socket, data directory or journal is unusable

// `upkeep-agent run`: the daemon (libs/agent/daemon.hpp) with its local API, until a
// termination signal.
int RunDaemon(const AgentConfig& config, std::ostream& out, std::ostream& err);

}  // namespace upkeep::agent
