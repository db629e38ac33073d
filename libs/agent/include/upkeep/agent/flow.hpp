#pragma once

// The update flow as one transition table (flow.cpp): every persisted step of an update, what may
// follow it, and the lifecycle event each move emits. Agent performs the actions; it may only move
// the journal along a row of this table, so a reviewer reads the whole flow in one place.

#include <span>

#include "upkeep/agent/state.hpp"
#include "upkeep/common/result.hpp"

namespace upkeep::agent {

enum class Trigger {
  Begin,          // install asked for a release (new, or the same one again after a restart)
  ImageVerified,  // the image is complete, synced and matches its digest
  Fail,           // the install failed for good (verification error, bad slot)
  Switch,         // set the bootloader to try the new slot (again, if interrupted)
  BootedNew,      // a new boot, running the new slot
  BootedOld,      // a new boot, running the old slot (fallback, or after reverting)
  HealthPassed,   // every health check passed on the trial system: commit
  HealthFailed,   // a health check failed or timed out on the trial system
  Cancel,         // the user or fleet asked to roll back
};
[[nodiscard]] const char* ToString(Trigger t);

struct Transition {
  UpdateState from;
  Trigger trigger;
  UpdateState to;
  const char* event;  // install::event::k*, or nullptr when the move is silent
};

// The whole table.
[[nodiscard]] std::span<const Transition> TransitionTable();
// The row for (from, trigger); Errc::UpdatePending when the table has none (the operation does
// not fit the update's current step).
[[nodiscard]] Result<const Transition*> FindTransition(UpdateState from, Trigger trigger);

}  // namespace upkeep::agent
