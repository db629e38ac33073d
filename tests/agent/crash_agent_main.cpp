// upkeep-agent with fault hooks, for the crash suite only (never installed): the same command line
// as the shipped agent, plus SIGKILL at exact points chosen by environment variables.
//   UPKEEP_KILL_AFTER_JOURNAL_WRITES_FOR_TEST=N   after the N-th journal write
//   UPKEEP_KILL_AT_IMAGE_BYTE_FOR_TEST=OFFSET     once the image passes OFFSET bytes

#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "cli.hpp"
#include "upkeep/agent/agent.hpp"
#include "upkeep/common/main_guard.hpp"

namespace {

void InstallCrashHooks(upkeep::agent::Agent& agent,
                       std::function<void(const upkeep::install::ImageProgress&)>& progress) {
  if (const char* n = std::getenv("UPKEEP_KILL_AFTER_JOURNAL_WRITES_FOR_TEST")) {
    const auto limit = static_cast<unsigned>(std::strtoul(n, nullptr, 10));
    agent.store().SetAfterSaveHookForTest([limit](unsigned saves) {
      if (saves >= limit) ::kill(::getpid(), SIGKILL);
    });
  }
  if (const char* n = std::getenv("UPKEEP_KILL_AT_IMAGE_BYTE_FOR_TEST")) {
    const std::uint64_t at = std::strtoull(n, nullptr, 10);
    progress = [inner = progress, at](const upkeep::install::ImageProgress& p) {
      if (inner) inner(p);
      if (p.image_bytes >= at) ::kill(::getpid(), SIGKILL);
    };
  }
}

}  // namespace

int main(int argc, char** argv) {
  return upkeep::GuardMain("upkeep-agent", std::cerr, upkeep::agent::kExitDevice, [&] {
    return upkeep::agent::MainWithHookForTest(argc, argv, std::cout, std::cerr, &InstallCrashHooks);
  });
}
