#include "upkeep/agent/flow.hpp"

#include <array>
#include <string>

#include "upkeep/agent/config.hpp"
#include "upkeep/install/events.hpp"

namespace upkeep::agent {

namespace {

namespace ev = install::event;
using S = UpdateState;
using T = Trigger;

// Every step of an update and what may follow it. Each `to` state is persisted before the agent
// acts on it, and each action is idempotent, so a restart at any row re-enters that row safely.
constexpr std::array<Transition, 21> kTable = {{
    // Writing the inactive slot. A restart resumes at the journal's durable chunk count.
    {S::Idle, T::Begin, S::Writing, ev::kInstallStarted},
    {S::Writing, T::Begin, S::Writing, ev::kInstallResumed},
    {S::Writing, T::ImageVerified, S::Written, ev::kInstalled},
    {S::Writing, T::Fail, S::Idle, ev::kInstallFailed},
    {S::Writing, T::Cancel, S::Idle, ev::kRolledBack},
    // Image complete: switch the bootloader (after a restart, switch again).
    {S::Written, T::Begin, S::Written, nullptr},
    {S::Written, T::Switch, S::Switched, ev::kRebootRequested},
    {S::Written, T::Cancel, S::Idle, ev::kRolledBack},
    // Waiting for the reboot into the new slot.
    {S::Switched, T::Switch, S::Switched, nullptr},
    {S::Switched, T::BootedNew, S::Trial, ev::kTrialBoot},
    {S::Switched, T::BootedOld, S::Idle, ev::kRolledBack},  // the firmware fell back
    {S::Switched, T::Cancel, S::Idle, ev::kRolledBack},     // reverted before any reboot
    // On trial: health checks decide; the firmware falls back if the agent never commits.
    {S::Trial, T::BootedNew, S::Trial, nullptr},
    {S::Trial, T::HealthPassed, S::Idle, ev::kCommitted},
    {S::Trial, T::HealthFailed, S::Reverting, ev::kHealthFailed},
    {S::Trial, T::Cancel, S::Reverting, ev::kRebootRequested},
    {S::Trial, T::BootedOld, S::Idle, ev::kRolledBack},
    // Back to the old slot on the next boot.
    {S::Reverting, T::Cancel, S::Reverting, nullptr},
    {S::Reverting, T::BootedNew, S::Reverting, nullptr},
    {S::Reverting, T::BootedOld, S::Idle, ev::kRolledBack},
    {S::Idle, T::Fail, S::Idle, ev::kInstallFailed},
}};

}  // namespace

const char* ToString(Trigger t) {
  switch (t) {
    case T::Begin:
      return "begin";
    case T::ImageVerified:
      return "image_verified";
    case T::Fail:
      return "fail";
    case T::Switch:
      return "switch";
    case T::BootedNew:
      return "booted_new";
    case T::BootedOld:
      return "booted_old";
    case T::HealthPassed:
      return "health_passed";
    case T::HealthFailed:
      return "health_failed";
    case T::Cancel:
      return "cancel";
  }
  return "unknown";
}

std::span<const Transition> TransitionTable() { return kTable; }

Result<const Transition*> FindTransition(UpdateState from, Trigger trigger) {
  for (const auto& t : kTable) {
    if (t.from == from && t.trigger == trigger) return &t;
  }
  return Error(Errc::UpdatePending, std::string("no step ") + ToString(trigger) +
                                        " from update state " + ToString(from));
}

}  // namespace upkeep::agent
