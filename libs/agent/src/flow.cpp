#include "upkeep/agent/flow.hpp"

#include <array>
#include <string>
#include <utility>

#include "upkeep/agent/config.hpp"
#include "upkeep/install/events.hpp"

namespace upkeep::agent {

namespace {

namespace ev = install::event;
using S = UpdateState;
using T = Trigger;

constexpr const char* kCommitted = "committed";
constexpr const char* kRolledBack = "rolled_back";
constexpr const char* kFailed = "failed";
constexpr const char* kCancelled = "cancelled";

// Every step of an update and what may follow it. Each `to` state is persisted before its
// handler acts on it, and each handler is idempotent, so a restart at any row re-enters that
// row's `to` safely. Rows to Idle name the outcome recorded in `last`.
constexpr std::array<Transition, 28> kTable = {{
    // --- Root filesystem: A/B slots -------------------------------------------------------------
    // Writing the inactive slot. A restart resumes at the journal's durable chunk count.
    {S::Idle, T::Begin, S::Writing, ev::kInstallStarted, nullptr},
    {S::Writing, T::Begin, S::Writing, ev::kInstallResumed, nullptr},
    {S::Writing, T::ImageVerified, S::Written, ev::kInstalled, nullptr},
    {S::Writing, T::Fail, S::Idle, ev::kInstallFailed, kFailed},
    {S::Writing, T::Cancel, S::Idle, ev::kRolledBack, kCancelled},
    // Image complete: switch the bootloader (after a restart, switch again).
    {S::Written, T::Begin, S::Written, nullptr, nullptr},
    {S::Written, T::Switch, S::Switched, ev::kRebootRequested, nullptr},
    {S::Written, T::Cancel, S::Idle, ev::kRolledBack, kCancelled},
    // Waiting for the reboot into the new slot.
    {S::Switched, T::Switch, S::Switched, nullptr, nullptr},
    {S::Switched, T::BootedNew, S::Trial, ev::kTrialBoot, nullptr},
    {S::Switched, T::BootedOld, S::Idle, ev::kRolledBack, kRolledBack},  // the firmware fell back
    {S::Switched, T::Cancel, S::Idle, ev::kRolledBack, kCancelled},  // reverted before any reboot
    // On trial: health checks decide; the firmware falls back if the agent never commits.
    {S::Trial, T::BootedNew, S::Trial, nullptr, nullptr},
    {S::Trial, T::HealthPassed, S::Idle, ev::kCommitted, kCommitted},
    {S::Trial, T::HealthFailed, S::Reverting, ev::kHealthFailed, nullptr},
    {S::Trial, T::Cancel, S::Reverting, ev::kRebootRequested, nullptr},
    {S::Trial, T::BootedOld, S::Idle, ev::kRolledBack, kRolledBack},
    // Back to the old slot on the next boot.
    {S::Reverting, T::Cancel, S::Reverting, nullptr, nullptr},
    {S::Reverting, T::BootedNew, S::Reverting, nullptr, nullptr},
    {S::Reverting, T::BootedOld, S::Idle, ev::kRolledBack, kRolledBack},
    {S::Idle, T::Fail, S::Idle, ev::kInstallFailed, nullptr},
    // --- Module components (docs/formats/update-module.md) --------------------------------------
    // The artifact is verified and in the work directory: Download and Install run. A restart
    // here runs the module's Rollback: an interrupted install is undone, never guessed finished.
    {S::Idle, T::BeginModule, S::ModuleInstalling, ev::kInstallStarted, nullptr},
    {S::ModuleInstalling, T::ModuleInstalled, S::ModuleCommitting, nullptr, nullptr},
    {S::ModuleInstalling, T::ModuleRolledBack, S::Idle, ev::kModuleFailed, kRolledBack},
    {S::ModuleInstalling, T::Fail, S::Idle, ev::kModuleFailed, kFailed},
    // Install succeeded: Commit (idempotent) runs, and runs again after a restart.
    {S::ModuleCommitting, T::ModuleCommitted, S::Idle, ev::kModuleInstalled, kCommitted},
    {S::ModuleCommitting, T::ModuleRolledBack, S::Idle, ev::kModuleFailed, kRolledBack},
    {S::ModuleCommitting, T::Fail, S::Idle, ev::kModuleFailed, kFailed},
}};

// The handler of each state: what the agent does while the journal is there.
struct StateRow {
  UpdateState state;
  StateHandler handler;
};
constexpr std::array<StateRow, 8> kHandlers = {{
    {S::Idle, nullptr},                          // nothing in progress
    {S::Writing, &FlowHandlers::OnWriting},      // write the image (with a source)
    {S::Written, &FlowHandlers::OnWritten},      // record the boot, then switch
    {S::Switched, &FlowHandlers::OnSwitched},    // set the bootloader; read the reboot
    {S::Trial, &FlowHandlers::OnTrial},          // health checks on commit
    {S::Reverting, &FlowHandlers::OnReverting},  // set the bootloader back
    {S::ModuleInstalling, &FlowHandlers::OnModuleInstalling},  // Download, Install (or Rollback)
    {S::ModuleCommitting, &FlowHandlers::OnModuleCommitting},  // Commit, Cleanup
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
    case T::BeginModule:
      return "begin_module";
    case T::ModuleInstalled:
      return "module_installed";
    case T::ModuleCommitted:
      return "module_committed";
    case T::ModuleRolledBack:
      return "module_rolled_back";
  }
  return "unknown";
}

const char* ToString(Command c) {
  switch (c) {
    case Command::Continue:
      return "continue";
    case Command::Commit:
      return "commit";
    case Command::Rollback:
      return "rollback";
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

StateHandler HandlerFor(UpdateState state) {
  for (const auto& row : kHandlers) {
    if (row.state == state) return row.handler;
  }
  return nullptr;
}

Result<void> RunFlow(FlowHandlers& handlers, DeviceState& state, Command command,
                     std::optional<Step> first) {
  for (unsigned moves = 0; moves < kMaxFlowSteps; ++moves) {
    const UpdateState from = state.update ? state.update->state : UpdateState::Idle;
    Step step;
    if (first) {
      step = std::move(*first);
      first.reset();
    } else {
      const StateHandler handler = HandlerFor(from);
      if (handler == nullptr) return Ok();  // Idle: the update is over
      UPKEEP_ASSIGN_OR_RETURN(step, (handlers.*handler)(state, command));
    }
    if (!step.trigger) {
      if (step.error) return *step.error;
      return Ok();  // the step waits (a reboot, a command, a source)
    }
    UPKEEP_ASSIGN_OR_RETURN(const Transition* row, FindTransition(from, *step.trigger));
    UPKEEP_TRY(handlers.Persist(state, *row, step));
    if (step.error) return *step.error;
    command = Command::Continue;  // a command applies to the step it was given in
  }
  return Error(Errc::FlowStuck, "the update flow made " + std::to_string(kMaxFlowSteps) +
                                    " moves without settling (at " +
                                    (state.update ? ToString(state.update->state) : "idle") + ")");
}

}  // namespace upkeep::agent
