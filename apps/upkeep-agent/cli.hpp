#pragma once

#include <functional>
#include <iosfwd>

#include "upkeep/common/error.hpp"
#include "upkeep/install/image_installer.hpp"

namespace upkeep::agent {

class Agent;

// upkeep-agent: the device side (docs/agent.md).
//   upkeep-agent [--config FILE] [--json] install SOURCE [TARGET] [--reboot]
//   upkeep-agent [--config FILE] [--json] status
//   upkeep-agent [--config FILE] [--json] commit
//   upkeep-agent [--config FILE] [--json] rollback
//   upkeep-agent [--config FILE] simulate-boot      (bootloader type "file" only)
//   upkeep-agent [--config FILE] --dump-config
// Exit status: see ExitCode.
int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

// Test builds only: called with the agent and its progress callback before a command runs, so a
// test binary can install fault hooks (tests/agent/crash_agent_main.cpp). The shipped binary
// passes none and has no way to enable them.
using AgentHookForTest =
    std::function<void(Agent&, std::function<void(const install::ImageProgress&)>& progress)>;
int MainWithHookForTest(int argc, const char* const* argv, std::ostream& out, std::ostream& err,
                        const AgentHookForTest& hook);

// Documented exit codes (docs/agent.md); scripts and the daemon rely on them.
enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 1,     // bad command line or configuration
  kExitRejected = 2,  // verification failed: metadata, signatures, chunks, digests, bundle
  kExitRefused = 3,   // policy: wrong hardware, security version rollback, unusable release
  kExitDownload = 4,  // the source could not be read; the install resumes when run again
  kExitState = 5,     // not now: an update is pending, nothing to commit or roll back
  kExitHealth = 6,    // the trial system failed its health checks; reboot to roll back
  kExitDevice = 7,    // slot, bootloader, journal or module failure on the device
};

// The exit code for an error.
[[nodiscard]] int ExitCodeFor(const Error& error);

}  // namespace upkeep::agent
