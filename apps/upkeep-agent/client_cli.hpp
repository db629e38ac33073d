#pragma once

// The `upkeep-agent` commands that talk to a running daemon over the local API
// (docs/local-api.md "Command line"):
//
//   upkeep-agent status
//   upkeep-agent check [--wait] [--timeout SECONDS]
//   upkeep-agent policy
//   upkeep-agent policy set auto-install|notifications|reboot-later on|off
//   upkeep-agent policy set security-auto-install on|off [--confirm]   (off needs --confirm)
//   upkeep-agent postpone UPDATE_ID (--until TIME | --for DURATION)
//   upkeep-agent install BUNDLE [--timeout SECONDS]
//   upkeep-agent notices
//   upkeep-agent events [--after N] [--follow] [--timeout SECONDS]
//
// each with `--json` (one JSON object per line on stdout, as the direct commands print them) and
// `--socket PATH` (default /run/upkeep/agent.sock).
//
// Use:
//   ClientOptions client_options;
//   auto client = AddClientCommands(app, client_options);
//   app.parse(argc, argv);
//   if (client->parsed()) return RunClientCommand(*client, out, err);
//
// The direct commands of cli.cpp named `install` and `status` act on the device without a
// daemon. AddClientCommands registers no subcommand whose name `app` already has; the caller
// keeps its own and, per invocation, calls RunClientInstall / RunClientStatus, falling back to
// the direct implementation when they return kExitDaemonNotRunning.

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>

#include "upkeep/common/error.hpp"

namespace CLI {
class App;
}  // namespace CLI

namespace upkeep::agent {

// Exit status when no daemon serves the socket (no socket file, or nobody listening): nothing
// was done, and the caller may act on the device directly instead. The other exit statuses are
// those of docs/agent.md.
inline constexpr int kExitDaemonNotRunning = 8;

struct ClientOptions {
  std::string socket;  // empty: /run/upkeep/agent.sock
  bool json = false;
  // How long `check --wait`, `install` and `events --follow` follow the daemon (--timeout
  // overrides), and how often they poll it.
  std::chrono::seconds check_timeout{300};
  std::chrono::seconds follow_timeout{3600};
  std::chrono::milliseconds poll_interval{1000};
  // A progress bar on stderr; unset: when stderr is a terminal.
  std::optional<bool> progress_bar;
  // One request's bound (connect and answer).
  std::chrono::milliseconds request_timeout{15000};
  // Print nothing when returning kExitDaemonNotRunning (the caller falls back to acting on the
  // device directly and reports for itself).
  bool silent_if_not_running = false;
};

// The subcommands AddClientCommands registered (nullptr: a name `app` had already) and the
// values they parse into.
struct ClientCommands {
  ClientOptions* options = nullptr;
  CLI::App* status = nullptr;
  CLI::App* check = nullptr;
  CLI::App* policy = nullptr;
  CLI::App* policy_set = nullptr;
  CLI::App* postpone = nullptr;
  CLI::App* install = nullptr;
  CLI::App* notices = nullptr;
  CLI::App* events = nullptr;

  bool wait = false;
  unsigned timeout_seconds = 0;  // --timeout; 0: ClientOptions' bound
  std::string policy_key;
  std::string policy_value;
  bool confirm = false;
  std::string update_id;
  std::string until;
  std::string duration;
  std::string bundle;
  std::uint64_t after = 0;
  bool follow = false;

  // True when one of these subcommands was given on the command line.
  [[nodiscard]] bool parsed() const;
};

// Registers the commands above on `app` (skipping names it has already), plus `--json` and
// `--socket` on `app` itself unless it has options of those names. `o` must outlive the result.
std::unique_ptr<ClientCommands> AddClientCommands(CLI::App& app, ClientOptions& o);

// Adds `--json` and `--socket` (bound to `o`) to `command` unless it has options of those names:
// for the caller's own `install` and `status`, so that they take `--socket` as the others do. An
// existing `--json` stays the caller's: OR it into ClientOptions::json before running.
void AddClientOptions(CLI::App& command, ClientOptions& o);

// Runs the parsed command. Returns an exit status of docs/agent.md, or kExitDaemonNotRunning.
int RunClientCommand(ClientCommands& commands, std::ostream& out, std::ostream& err);

// The daemon's view of the device and the update in progress (GET /v1/device, /v1/support,
// /v1/status).
int RunClientStatus(const ClientOptions& o, std::ostream& out, std::ostream& err);
// Hands BUNDLE (made absolute) to the daemon, then follows the install until it ends. A rejected
// bundle prints only "update rejected" and returns 2.
int RunClientInstall(const ClientOptions& o, const std::string& bundle, std::ostream& out,
                     std::ostream& err, unsigned timeout_seconds = 0);

// The exit status for a local API client error: DaemonNotRunning -> kExitDaemonNotRunning,
// InvalidArgument and NotFound -> 1, Rejected -> 2, Forbidden, Unauthenticated and LockedOut -> 3,
// Conflict and Unavailable -> 5, anything else -> 7.
[[nodiscard]] int ClientExitCode(const Error& error);

}  // namespace upkeep::agent
