#pragma once

// The update flow in one place (flow.cpp): every persisted step of an update (root filesystem or
// module component), what may follow it, the lifecycle event and outcome each move records, and
// the handler that acts in each step. RunFlow is the only code that moves the journal:
//
//   journal at state S → S's handler decides a trigger → the row (S, trigger) names `to` →
//   `to` is persisted (and its event emitted) → `to`'s handler runs → ...
//
// until a handler decides to wait (for a reboot, a command, a source to write from) or the update
// is back at Idle. Each handler is idempotent and reads the journal and the device as they are,
// so it is the same code whether the step was just entered or the agent restarted in it.

#include <optional>
#include <span>
#include <string>

#include "upkeep/agent/state.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/result.hpp"
#include "upkeep/metadata/canonical_json.hpp"

namespace upkeep::agent {

enum class Trigger {
  Begin,             // install asked for a release (new, or the same one again after a restart)
  ImageVerified,     // the image is complete, synced and matches its digest
  Fail,              // the install failed for good (verification error, bad slot, module failure
                     // whose rollback failed too)
  Switch,            // set the bootloader to try the new slot (again, if interrupted)
  BootedNew,         // a new boot, running the new slot
  BootedOld,         // a new boot, running the old slot (fallback, or after reverting)
  HealthPassed,      // every health check passed on the trial system: commit
  HealthFailed,      // a health check failed or timed out on the trial system
  Cancel,            // the user or fleet asked to roll back
  BeginModule,       // install asked for a module component's release (artifact verified, work
                     // directory prepared)
  ModuleInstalled,   // the module's Download and Install stages succeeded
  ModuleCommitted,   // the module's Commit stage succeeded: the new version is permanent
  ModuleRolledBack,  // a stage failed, or the install was interrupted, and the module's
                     // Rollback stage restored the previous version
};
[[nodiscard]] const char* ToString(Trigger t);

struct Transition {
  UpdateState from;
  Trigger trigger;
  UpdateState to;
  const char* event;    // install::event::k*, or nullptr when the move is silent
  const char* outcome;  // rows to Idle: LastResult::outcome recorded; otherwise nullptr
};

// The whole table.
[[nodiscard]] std::span<const Transition> TransitionTable();
// The row for (from, trigger); Errc::UpdatePending when the table has none (the operation does
// not fit the update's current step).
[[nodiscard]] Result<const Transition*> FindTransition(UpdateState from, Trigger trigger);

// What started a pass of the flow. It applies to the step the journal is at when it is given;
// after the first move the flow continues on its own (Continue).
enum class Command {
  Continue,  // apply what the device tells (reboots, an interrupted install); act on nothing else
  Commit,    // the trial system is to be health-checked and committed
  Rollback,  // the update in progress is to be abandoned or reverted
};
[[nodiscard]] const char* ToString(Command c);

// A handler's decision.
struct Step {
  std::optional<Trigger> trigger;                   // the move to make; nullopt: stay (wait)
  std::string detail;                               // why, for the event and LastResult::detail
  metadata::Json extra = metadata::Json::object();  // more event data
  std::optional<Error> error;  // returned to the caller once the move is persisted
};

// The actions of the flow: one handler per state that has one, and the journal write. Agent
// implements it; tests drive the table with fakes.
class FlowHandlers {
 public:
  virtual ~FlowHandlers() = default;

  // Root filesystem.
  virtual Result<Step> OnWriting(DeviceState& state, Command command) = 0;
  virtual Result<Step> OnWritten(DeviceState& state, Command command) = 0;
  virtual Result<Step> OnSwitched(DeviceState& state, Command command) = 0;
  virtual Result<Step> OnTrial(DeviceState& state, Command command) = 0;
  virtual Result<Step> OnReverting(DeviceState& state, Command command) = 0;
  // Module components.
  virtual Result<Step> OnModuleInstalling(DeviceState& state, Command command) = 0;
  virtual Result<Step> OnModuleCommitting(DeviceState& state, Command command) = 0;

  // Moves the journal along `row` (with `step`'s detail), saves it durably and emits the row's
  // event.
  virtual Result<void> Persist(DeviceState& state, const Transition& row, const Step& step) = 0;
};

using StateHandler = Result<Step> (FlowHandlers::*)(DeviceState&, Command);

// The handler acting in `state`; nullptr for Idle (nothing to do).
[[nodiscard]] StateHandler HandlerFor(UpdateState state);

// Most moves one pass of the flow makes; a pass that needs more is a defect (Errc::FlowStuck).
inline constexpr unsigned kMaxFlowSteps = 16;

// The driver. With `first`, that step (its trigger, detail and event data) is taken from the
// journal's state before any handler runs (an install's Begin or BeginModule); then the handlers
// decide until one waits or the update is Idle. Errors: the first handler or journal error; a
// Step's error after its move is persisted; UpdatePending when a handler's trigger has no row;
// FlowStuck past kMaxFlowSteps moves.
[[nodiscard]] Result<void> RunFlow(FlowHandlers& handlers, DeviceState& state, Command command,
                                   std::optional<Step> first = std::nullopt);

}  // namespace upkeep::agent
