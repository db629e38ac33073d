// The update flow's table and driver (flow.cpp) on their own: the table is complete (every state
// has a handler and a way back to Idle, none is unreachable, outcomes are recorded exactly on the
// moves to Idle), and RunFlow persists before it runs a handler, refuses a move the table lacks,
// and stops a flow that never settles. Also the journal's two formats.

#include "upkeep/agent/flow.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "upkeep/agent/config.hpp"
#include "upkeep/agent/state.hpp"

namespace upkeep::agent {
namespace {

using S = UpdateState;
using T = Trigger;

std::set<S> ReachableFrom(S start) {
  std::set<S> reached = {start};
  for (bool changed = true; changed;) {
    changed = false;
    for (const auto& t : TransitionTable()) {
      if (reached.contains(t.from) && reached.insert(t.to).second) changed = true;
    }
  }
  return reached;
}

// One row per (state, trigger): the flow never has to choose.
TEST(FlowTableTest, IsDeterministic) {
  std::set<std::pair<S, T>> seen;
  for (const auto& t : TransitionTable()) {
    EXPECT_TRUE(seen.insert({t.from, t.trigger}).second)
        << ToString(t.from) << " + " << ToString(t.trigger) << " listed twice";
  }
}

// Every state but Idle has a handler; Idle has none (nothing in progress).
TEST(FlowTableTest, EveryStateHasAHandler) {
  ASSERT_EQ(AllUpdateStates().front(), S::Idle);
  for (const S s : AllUpdateStates()) {
    if (s == S::Idle) {
      EXPECT_EQ(HandlerFor(s), nullptr);
    } else {
      EXPECT_NE(HandlerFor(s), nullptr) << ToString(s);
    }
  }
}

// Every state is reachable from Idle, and Idle is reachable from every state: no step is dead
// code and no update can be stuck by the table.
TEST(FlowTableTest, NoStateIsUnreachableAndEveryStateCanFinish) {
  const std::set<S> from_idle = ReachableFrom(S::Idle);
  for (const S s : AllUpdateStates()) {
    EXPECT_TRUE(from_idle.contains(s)) << ToString(s) << " is unreachable";
    EXPECT_TRUE(ReachableFrom(s).contains(S::Idle)) << ToString(s) << " never finishes";
  }
  const std::set<S> all(AllUpdateStates().begin(), AllUpdateStates().end());
  EXPECT_EQ(all.size(), AllUpdateStates().size());
  for (const auto& t : TransitionTable()) {
    EXPECT_TRUE(all.contains(t.from) && all.contains(t.to));
  }
}

// A move to Idle from an update records its outcome in `last`; no other move does, and the
// outcomes are the four the journal format names.
TEST(FlowTableTest, OutcomesAreRecordedExactlyOnMovesToIdle) {
  const std::set<std::string> outcomes = {"committed", "rolled_back", "failed", "cancelled"};
  for (const auto& t : TransitionTable()) {
    SCOPED_TRACE(std::string(ToString(t.from)) + " + " + ToString(t.trigger));
    if (t.to == S::Idle && t.from != S::Idle) {
      ASSERT_NE(t.outcome, nullptr);
      EXPECT_TRUE(outcomes.contains(t.outcome)) << t.outcome;
      EXPECT_NE(t.event, nullptr);  // the end of an update is always reported
    } else {
      EXPECT_EQ(t.outcome, nullptr);
    }
  }
}

// A module install never enters the slot states and a slot update never enters the module
// states: the two share only Idle.
TEST(FlowTableTest, ModuleAndSlotFlowsMeetOnlyAtIdle) {
  for (const auto& t : TransitionTable()) {
    if (t.from == S::Idle || t.to == S::Idle) continue;
    EXPECT_EQ(IsModuleState(t.from), IsModuleState(t.to))
        << ToString(t.from) << " -> " << ToString(t.to);
  }
  EXPECT_EQ(FindTransition(S::Idle, T::BeginModule).value()->to, S::ModuleInstalling);
  EXPECT_EQ(FindTransition(S::Idle, T::Begin).value()->to, S::Writing);
}

// Moves the table lacks are refused with UpdatePending: commit before the trial, a second
// install over a module install, a module result during a slot update.
TEST(FlowTableTest, RefusesMovesTheTableLacks) {
  EXPECT_ERRC(FindTransition(S::Idle, T::HealthPassed), Errc::UpdatePending);
  EXPECT_ERRC(FindTransition(S::Writing, T::HealthPassed), Errc::UpdatePending);
  EXPECT_ERRC(FindTransition(S::Switched, T::ImageVerified), Errc::UpdatePending);
  EXPECT_ERRC(FindTransition(S::ModuleInstalling, T::Begin), Errc::UpdatePending);
  EXPECT_ERRC(FindTransition(S::ModuleInstalling, T::BeginModule), Errc::UpdatePending);
  EXPECT_ERRC(FindTransition(S::ModuleCommitting, T::Cancel), Errc::UpdatePending);
  EXPECT_ERRC(FindTransition(S::Writing, T::ModuleCommitted), Errc::UpdatePending);
  EXPECT_ERRC(FindTransition(S::Trial, T::ModuleRolledBack), Errc::UpdatePending);
}

TEST(FlowTableTest, NamesRoundTrip) {
  for (const S s : AllUpdateStates()) {
    const auto parsed = UpdateStateFromString(ToString(s));
    ASSERT_TRUE(parsed.has_value()) << ToString(s);
    EXPECT_EQ(*parsed, s);
  }
  EXPECT_FALSE(UpdateStateFromString("Writing").has_value());
  EXPECT_STREQ(ToString(Command::Continue), "continue");
}

// Handlers scripted per state: each call takes the next step from its state's queue (an empty
// queue waits); every call and every persisted move is recorded.
class ScriptedFlow : public FlowHandlers {
 public:
  std::map<S, std::vector<Result<Step>>> script;
  std::vector<std::string> calls;
  std::optional<Error> persist_error;

  Result<Step> OnWriting(DeviceState& s, Command c) override { return Next(S::Writing, s, c); }
  Result<Step> OnWritten(DeviceState& s, Command c) override { return Next(S::Written, s, c); }
  Result<Step> OnSwitched(DeviceState& s, Command c) override { return Next(S::Switched, s, c); }
  Result<Step> OnTrial(DeviceState& s, Command c) override { return Next(S::Trial, s, c); }
  Result<Step> OnReverting(DeviceState& s, Command c) override { return Next(S::Reverting, s, c); }
  Result<Step> OnModuleInstalling(DeviceState& s, Command c) override {
    return Next(S::ModuleInstalling, s, c);
  }
  Result<Step> OnModuleCommitting(DeviceState& s, Command c) override {
    return Next(S::ModuleCommitting, s, c);
  }
  Result<void> Persist(DeviceState& state, const Transition& row, const Step& step) override {
    calls.push_back(std::string("persist ") + ToString(row.to) +
                    (step.detail.empty() ? "" : " " + step.detail));
    if (persist_error) return *persist_error;
    if (row.to == S::Idle) {
      state.update.reset();
    } else {
      state.update->state = row.to;
    }
    return Ok();
  }

 private:
  Result<Step> Next(S s, DeviceState& state, Command c) {
    EXPECT_TRUE(state.update && state.update->state == s);  // the journal is there first
    calls.push_back(std::string("handle ") + ToString(s) + " " + ToString(c));
    auto& queue = script[s];
    if (queue.empty()) return Step{};
    Result<Step> r = std::move(queue.front());
    queue.erase(queue.begin());
    return r;
  }
};

Step Go(T t, std::string detail = "") {
  Step s;
  s.trigger = t;
  s.detail = std::move(detail);
  return s;
}

DeviceState Pending(S s) {
  DeviceState state;
  state.update = PendingUpdate{};
  state.update->state = s;
  return state;
}

// The first move is persisted before its `to` handler runs; the command reaches only the first
// handler, the later ones continue; the flow stops when a handler waits.
TEST(RunFlowTest, PersistsBeforeEachHandlerAndHandsTheCommandOnlyToTheFirst) {
  ScriptedFlow flow;
  flow.script[S::Trial].push_back(Go(T::Cancel, "asked"));
  DeviceState state = Pending(S::Trial);
  ASSERT_TRUE(RunFlow(flow, state, Command::Rollback).has_value());
  EXPECT_EQ(flow.calls,
            (std::vector<std::string>{"handle trial rollback", "persist reverting asked",
                                      "handle reverting continue"}));
  EXPECT_EQ(state.update->state, S::Reverting);
}

// An install's first step is taken from Idle without a handler, then the handlers run to Idle.
TEST(RunFlowTest, FirstStepThenHandlersUntilIdle) {
  ScriptedFlow flow;
  flow.script[S::ModuleInstalling].push_back(Go(T::ModuleInstalled));
  flow.script[S::ModuleCommitting].push_back(Go(T::ModuleCommitted));
  DeviceState state = Pending(S::Idle);
  ASSERT_TRUE(RunFlow(flow, state, Command::Continue, Go(T::BeginModule)).has_value());
  EXPECT_EQ(flow.calls,
            (std::vector<std::string>{
                "persist module_installing", "handle module_installing continue",
                "persist module_committing", "handle module_committing continue", "persist idle"}));
  EXPECT_FALSE(state.update.has_value());
}

// A step's error reaches the caller after its move is persisted, and no later handler runs.
TEST(RunFlowTest, StepErrorIsReturnedAfterItsMoveIsPersisted) {
  ScriptedFlow flow;
  Step failed = Go(T::HealthFailed, "check");
  failed.error = Error(Errc::HealthCheckFailed, "check failed");
  flow.script[S::Trial].push_back(failed);
  DeviceState state = Pending(S::Trial);
  EXPECT_ERRC(RunFlow(flow, state, Command::Commit), Errc::HealthCheckFailed);
  EXPECT_EQ(flow.calls,
            (std::vector<std::string>{"handle trial commit", "persist reverting check"}));
  EXPECT_EQ(state.update->state, S::Reverting);
}

// A handler's error (a refusal) moves nothing.
TEST(RunFlowTest, HandlerErrorMovesNothing) {
  ScriptedFlow flow;
  flow.script[S::Switched].push_back(Error(Errc::NotRebooted, "reboot first"));
  DeviceState state = Pending(S::Switched);
  EXPECT_ERRC(RunFlow(flow, state, Command::Commit), Errc::NotRebooted);
  EXPECT_EQ(flow.calls, (std::vector<std::string>{"handle switched commit"}));
  EXPECT_EQ(state.update->state, S::Switched);
}

// A trigger the table has no row for is refused (UpdatePending) and the journal stays.
TEST(RunFlowTest, TriggerWithoutRowIsRefusedAndJournalStays) {
  ScriptedFlow flow;
  flow.script[S::Writing].push_back(Go(T::HealthPassed));
  DeviceState state = Pending(S::Writing);
  EXPECT_ERRC(RunFlow(flow, state, Command::Continue), Errc::UpdatePending);
  EXPECT_EQ(flow.calls, (std::vector<std::string>{"handle writing continue"}));
  EXPECT_EQ(state.update->state, S::Writing);
}

// A journal write that fails stops the flow before the next handler acts.
TEST(RunFlowTest, FailedJournalWriteStopsTheFlow) {
  ScriptedFlow flow;
  flow.persist_error = Error(Errc::JournalWriteFailed, "disk full");
  DeviceState state = Pending(S::Idle);
  EXPECT_ERRC(RunFlow(flow, state, Command::Continue, Go(T::Begin)), Errc::JournalWriteFailed);
  EXPECT_EQ(flow.calls, (std::vector<std::string>{"persist writing"}));
}

// A flow that keeps moving (a handler that always loops) ends with FlowStuck after
// kMaxFlowSteps moves instead of spinning.
TEST(RunFlowTest, EndlessSelfLoopIsFlowStuck) {
  ScriptedFlow flow;
  for (unsigned i = 0; i < kMaxFlowSteps + 5; ++i)
    flow.script[S::Switched].push_back(Go(T::Switch));
  DeviceState state = Pending(S::Switched);
  EXPECT_ERRC(RunFlow(flow, state, Command::Continue), Errc::FlowStuck);
  unsigned persisted = 0;
  for (const auto& c : flow.calls) persisted += c.starts_with("persist") ? 1u : 0u;
  EXPECT_EQ(persisted, kMaxFlowSteps);
}

// With nothing in progress the flow does nothing.
TEST(RunFlowTest, IdleDoesNothing) {
  ScriptedFlow flow;
  DeviceState state;
  ASSERT_TRUE(RunFlow(flow, state, Command::Commit).has_value());
  EXPECT_TRUE(flow.calls.empty());
}

// A journal written before module installs were journalled (format 1) still loads.
TEST(JournalCompatibilityTest, ReadsFormatOneAsWrittenBefore) {
  const std::string old = R"({
 "components": {"rootfs": {"image_sha256": "ab", "image_size": 10, "security_version": 3,
                           "slot": "a", "target": "rootfs/x", "version": "1"}},
 "format": 1,
 "last": {"detail": "", "outcome": "committed", "target": "rootfs/x", "version": "1"},
 "security": {"rootfs": {"rollback_sequence": 0, "security_version": 3}},
 "update": {"boot_id": "", "component": "rootfs", "durable_chunks": 2, "from_slot": "a",
            "id": "0123", "image_sha256": "cd", "image_size": 20, "security_version": 4,
            "state": "writing", "target": "rootfs/y", "to_slot": "b", "version": "2"}
})";
  auto state = ParseDeviceState(old);
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  ASSERT_TRUE(state->update.has_value());
  EXPECT_EQ(state->update->state, S::Writing);
  EXPECT_EQ(state->update->durable_chunks, 2u);
  EXPECT_EQ(state->components.at("rootfs").slot, "a");
}

// Slot updates are still written as format 1 (an older agent on a fallen-back slot reads them);
// a module install in progress is format 2; a module state in a format 1 journal, or an unknown
// format, is JournalCorrupt.
TEST(JournalCompatibilityTest, FormatTwoOnlyForModuleStates) {
  DeviceState slot = Pending(S::Trial);
  EXPECT_EQ(metadata::Json::parse(SerializeDeviceState(slot))["format"], 1);
  EXPECT_EQ(metadata::Json::parse(SerializeDeviceState(DeviceState{}))["format"], 1);
  for (const S s : {S::ModuleInstalling, S::ModuleCommitting}) {
    DeviceState module = Pending(s);
    module.update->component = "app";
    auto doc = metadata::Json::parse(SerializeDeviceState(module));
    EXPECT_EQ(doc["format"], 2);
    auto back = ParseDeviceState(doc.dump());
    ASSERT_TRUE(back.has_value()) << back.error().ToString();
    EXPECT_EQ(back->update->state, s);
    EXPECT_EQ(back->update->component, "app");
    doc["format"] = 1;
    EXPECT_ERRC(ParseDeviceState(doc.dump()), Errc::JournalCorrupt);
    doc["format"] = 3;
    EXPECT_ERRC(ParseDeviceState(doc.dump()), Errc::JournalCorrupt);
  }
  auto idle_update = metadata::Json::parse(SerializeDeviceState(slot));
  idle_update["update"]["state"] = "idle";
  EXPECT_ERRC(ParseDeviceState(idle_update.dump()), Errc::JournalCorrupt);
}

}  // namespace
}  // namespace upkeep::agent
