// The agent's update flow on a simulated device: install from a bundle or HTTP, trial boot,
// health checks, commit, rollback, anti-rollback, and every refusal with its exact error, with the
// active slot byte-identical afterwards.

#include "upkeep/agent/agent.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "http_test_server.hpp"
#include "simulated_device.hpp"
#include "test_util.hpp"
#include "upkeep/agent/flow.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/metadata/errc.hpp"
#include "upkeep/modules/module.hpp"
#include "cli.hpp"

#include <sstream>

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using testing::MakeImage;
using testing::ReleaseRepo;
using testing::ReleaseSpec;
using testing::SimulatedDevice;

constexpr std::size_t kImageSize = 600 * 1024;

class AgentTest : public ::testing::Test {
 protected:
  AgentTest()
      : old_image_(MakeImage(kImageSize, 1)),
        repo_(tmp_ / "release"),
        device_(tmp_ / "device", repo_.root_path(), old_image_) {
    release_.image = MakeImage(kImageSize, 2);
  }
  void SetUp() override {
    repo_.Add(release_);
    repo_.Publish();
    fs::copy_file(repo_.root_path(), tmp_ / "root.json");
    device_.config.trust.root = tmp_ / "root.json";
    device_.Boot();
  }
  bool HasEvent(const std::string& id) const {
    return std::find(device_.events.begin(), device_.events.end(), id) != device_.events.end();
  }
  // The active slot must be exactly what it was, whatever was refused.
  void ExpectOldSystemUntouched() {
    EXPECT_EQ(device_.Slot("a"), old_image_);
    auto status = device_.Agent().Status();
    ASSERT_TRUE(status.has_value());
    ASSERT_TRUE(status->boot.has_value());
    EXPECT_EQ(status->boot->slot, "a");
    EXPECT_FALSE(status->boot->trial);
  }

  testing::TempDir tmp_;
  std::string old_image_;
  ReleaseSpec release_;
  ReleaseRepo repo_;
  SimulatedDevice device_;
};

// The whole happy path: bundle → slot b → trial boot → health checks → committed; the floor rises.
TEST_F(AgentTest, InstallsFromBundleAndCommitsAfterHealthyTrialBoot) {
  const auto bundle = repo_.Bundle({release_}, "update.upkb");
  auto installed = device_.Agent().Install(bundle.string(), std::nullopt);
  ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
  EXPECT_EQ(installed->to_slot, "b");
  EXPECT_TRUE(installed->reboot_required);
  EXPECT_EQ(device_.Slot("b"), release_.image);
  EXPECT_TRUE(HasEvent(install::event::kRebootRequested));

  EXPECT_ERRC(device_.Agent().Commit(), Errc::NotRebooted);
  EXPECT_EQ(device_.Boot(), "b");
  auto committed = device_.Agent().Commit();
  ASSERT_TRUE(committed.has_value()) << committed.error().ToString();
  EXPECT_FALSE(committed->update.has_value());
  EXPECT_EQ(committed->components.at("rootfs").version, "2.0");
  EXPECT_EQ(committed->components.at("rootfs").slot, "b");
  EXPECT_EQ(committed->security.at("rootfs").security_version, 7u);
  EXPECT_EQ(committed->last->outcome, "committed");
  EXPECT_TRUE(HasEvent(install::event::kCommitted));
  // Committed: the firmware keeps booting b.
  EXPECT_EQ(device_.Boot(), "b");
  EXPECT_EQ(device_.Boot(), "b");
  EXPECT_ERRC(device_.Agent().Install(bundle.string(), std::nullopt), Errc::AlreadyInstalled);
}

// A trial system that fails its health check is reverted: the next boot runs the old slot.
TEST_F(AgentTest, FailedHealthCheckRevertsToOldSlot) {
  device_.config.health.commands = {{"/bin/true"}, {"/bin/false"}};
  ASSERT_TRUE(device_.Agent().Install(repo_.Bundle({release_}, "u.upkb").string(), std::nullopt));
  EXPECT_EQ(device_.Boot(), "b");
  EXPECT_ERRC(device_.Agent().Commit(), Errc::HealthCheckFailed);
  EXPECT_TRUE(HasEvent(install::event::kHealthFailed));
  EXPECT_EQ(device_.Boot(), "a");
  auto state = device_.Agent().Reconcile();
  ASSERT_TRUE(state.has_value());
  EXPECT_FALSE(state->update.has_value());
  EXPECT_EQ(state->last->outcome, "rolled_back");
  EXPECT_FALSE(state->components.contains("rootfs"));
  EXPECT_FALSE(state->security.contains("rootfs"));  // the floor only rises on commit
  ExpectOldSystemUntouched();
}

// A health check that hangs is killed at the timeout and counts as a failure.
TEST_F(AgentTest, HealthCheckTimeoutIsAFailure) {
  device_.config.health.commands = {{"/bin/sleep", "30"}};
  device_.config.health.timeout = std::chrono::seconds(1);
  ASSERT_TRUE(device_.Agent().Install(repo_.Bundle({release_}, "u.upkb").string(), std::nullopt));
  EXPECT_EQ(device_.Boot(), "b");
  EXPECT_ERRC(device_.Agent().Commit(), Errc::HealthCheckFailed);
  EXPECT_EQ(device_.Boot(), "a");
}

// A new system that never gets committed (it hangs, the agent never runs) is abandoned by the
// firmware after bootlimit trial boots, and the agent records the rollback.
TEST_F(AgentTest, BootCountExhaustionFallsBackAndRecordsRollback) {
  ASSERT_TRUE(device_.Agent().Install(repo_.Bundle({release_}, "u.upkb").string(), std::nullopt));
  for (unsigned i = 1; i <= device_.config.bootloader.boot_limit; ++i) {
    EXPECT_EQ(device_.Boot(), "b") << "trial boot " << i;
  }
  EXPECT_EQ(device_.Boot(), "a");
  auto state = device_.Agent().Reconcile();
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  EXPECT_FALSE(state->update.has_value());
  EXPECT_EQ(state->last->outcome, "rolled_back");
  EXPECT_TRUE(HasEvent(install::event::kRolledBack));
  ExpectOldSystemUntouched();
}

// Rolling back before the reboot puts the bootloader back at once.
TEST_F(AgentTest, RollbackBeforeRebootRestoresBootloader) {
  ASSERT_TRUE(device_.Agent().Install(repo_.Bundle({release_}, "u.upkb").string(), std::nullopt));
  auto state = device_.Agent().Rollback();
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  EXPECT_EQ(state->last->outcome, "cancelled");
  EXPECT_EQ(device_.Boot(), "a");
  EXPECT_ERRC(device_.Agent().Rollback(), Errc::NothingToRollBack);
  EXPECT_ERRC(device_.Agent().Commit(), Errc::NothingToCommit);
  ExpectOldSystemUntouched();
}

// A second install while one waits for its reboot is refused.
TEST_F(AgentTest, RefusesInstallWhileUpdatePending) {
  const auto bundle = repo_.Bundle({release_}, "u.upkb");
  ASSERT_TRUE(device_.Agent().Install(bundle.string(), std::nullopt));
  EXPECT_ERRC(device_.Agent().Install(bundle.string(), std::nullopt), Errc::UpdatePending);
}

// Wrong hardware: refused before any byte is written.
TEST_F(AgentTest, RefusesReleaseForOtherHardware) {
  device_.config.device.hardware = "other-model";
  const auto bundle = repo_.Bundle({release_}, "u.upkb");
  EXPECT_ERRC(device_.Agent().Install(bundle.string(), ReleaseRepo::payload_target(release_)),
              Errc::WrongHardware);
  EXPECT_TRUE(HasEvent(install::event::kInstallRefused));
  EXPECT_EQ(device_.Slot("b"), "");
  ExpectOldSystemUntouched();
}

// Anti-rollback: a release with a lower security_version than installed is refused.
TEST_F(AgentTest, RefusesLowerSecurityVersion) {
  ReleaseSpec old = release_;
  old.version = "1.9";
  old.security_version = 6;
  old.image = MakeImage(kImageSize, 3);
  repo_.Add(old);
  repo_.Publish();
  // Install and commit 2.0 (security version 7), then offer 1.9.
  ASSERT_TRUE(device_.Agent().Install(repo_.Bundle({release_}, "u.upkb").string(), std::nullopt));
  device_.Boot();
  ASSERT_TRUE(device_.Agent().Commit());
  const std::string running = device_.Slot("b");
  const auto bundle = repo_.Bundle({old}, "old.upkb");
  EXPECT_ERRC(device_.Agent().Install(bundle.string(), std::nullopt), Errc::SecurityVersionRollback);
  EXPECT_EQ(device_.Slot("b"), running);
  EXPECT_EQ(device_.Boot(), "b");
}

// NIST IR 8259A authorised rollback: a signed release carrying a rollback sequence above any the
// device used may go below the floor, once; the same release cannot be replayed afterwards.
TEST_F(AgentTest, AuthorisedRollbackIsAcceptedOnce) {
  ASSERT_TRUE(device_.Agent().Install(repo_.Bundle({release_}, "u.upkb").string(), std::nullopt));
  device_.Boot();
  ASSERT_TRUE(device_.Agent().Commit());

  ReleaseSpec back = release_;
  back.version = "1.9-rollback";
  back.security_version = 5;
  back.authorised_rollback_sequence = 1;
  back.image = MakeImage(kImageSize, 4);
  repo_.Add(back);
  repo_.Publish();
  const auto bundle = repo_.Bundle({back}, "back.upkb");
  ASSERT_TRUE(device_.Agent().Install(bundle.string(), std::nullopt));
  EXPECT_EQ(device_.Boot(), "a");
  auto committed = device_.Agent().Commit();
  ASSERT_TRUE(committed.has_value()) << committed.error().ToString();
  EXPECT_EQ(committed->security.at("rootfs").security_version, 5u);
  EXPECT_EQ(committed->security.at("rootfs").rollback_sequence, 1u);

  // 2.0 again (sv 7) is fine; then the captured rollback release is refused.
  ASSERT_TRUE(device_.Agent().Install(repo_.Bundle({release_}, "u2.upkb").string(), std::nullopt));
  EXPECT_EQ(device_.Boot(), "b");
  ASSERT_TRUE(device_.Agent().Commit());
  EXPECT_ERRC(device_.Agent().Install(bundle.string(), std::nullopt), Errc::SecurityVersionRollback);
}

// A chunk changed on the USB stick is rejected before decompression; the install ends, the old
// system stays.
TEST_F(AgentTest, RejectsTamperedChunkAndKeepsActiveSlot) {
  const auto bundle = repo_.Bundle({release_}, "u.upkb");
  auto opened = install::Bundle::Open(bundle);
  ASSERT_TRUE(opened.has_value());
  const install::BundleEntry* payload = nullptr;
  for (const auto& e : opened->entries()) {
    if (e.name.ends_with(".payload")) payload = &e;
  }
  ASSERT_NE(payload, nullptr);
  {
    std::fstream f(bundle, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(payload->offset + payload->length / 2));
    f.put('\x5a');
  }
  EXPECT_ERRC(device_.Agent().Install(bundle.string(), std::nullopt),
              install::Errc::ChunkDigestMismatch);
  EXPECT_TRUE(HasEvent(install::event::kChunkRejected));
  auto state = device_.Agent().Status();
  ASSERT_TRUE(state.has_value());
  EXPECT_FALSE(state->state.update.has_value());
  EXPECT_EQ(state->state.last->outcome, "failed");
  EXPECT_LT(device_.Slot("b").size(), kImageSize);
  ExpectOldSystemUntouched();
}

// The release says one size, the chunk index another: refused before writing.
TEST_F(AgentTest, RejectsImageOfWrongLength) {
  ReleaseSpec wrong = release_;
  wrong.version = "2.1";
  wrong.installed_size = kImageSize + 4096;
  repo_.Add(wrong);
  repo_.Publish();
  EXPECT_ERRC(device_.Agent().Install(repo_.Bundle({wrong}, "w.upkb").string(), std::nullopt),
              install::Errc::ImageSizeMismatch);
  EXPECT_EQ(device_.Slot("b"), "");
  ExpectOldSystemUntouched();
}

// A mirror that serves a truncated payload: PayloadTruncated after the resumes; the journal keeps
// the progress so that a later run continues, and the old system stays.
TEST_F(AgentTest, TruncatedDownloadIsReportedAndResumable) {
  testing::HttpTestServer server(repo_.www());
  for (const auto& e : fs::recursive_directory_iterator(repo_.www() / "targets")) {
    if (e.path().string().ends_with(".payload")) fs::resize_file(e.path(), fs::file_size(e.path()) / 2);
  }
  device_.config.install.max_resumes = 2;
  EXPECT_ERRC(device_.Agent().Install(server.base_url(), ReleaseRepo::payload_target(release_)),
              install::Errc::PayloadTruncated);
  auto status = device_.Agent().Status();
  ASSERT_TRUE(status.has_value());
  ASSERT_TRUE(status->state.update.has_value());
  EXPECT_EQ(status->state.update->state, UpdateState::Writing);
  ExpectOldSystemUntouched();
}

// A dropped connection resumes with a Range request at the byte it stopped: the whole install
// fetches the payload exactly once.
TEST_F(AgentTest, ResumesDroppedConnectionDownloadingOnlyTheRest) {
  testing::HttpTestServer server(repo_.www());
  std::string payload_url;
  for (const auto& e : fs::recursive_directory_iterator(repo_.www() / "targets")) {
    if (e.path().string().ends_with(".payload")) {
      payload_url = "/" + fs::relative(e.path(), repo_.www()).string();
    }
  }
  testing::Fault drop;
  drop.drop_after = 100'000;
  drop.times = 1;
  server.SetFault(payload_url, drop);
  device_.config.install.reuse_chunks = false;
  auto installed = device_.Agent().Install(server.base_url(), ReleaseRepo::payload_target(release_));
  ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
  const auto payload_size = installed->report.downloaded_bytes;
  EXPECT_EQ(installed->report.resumes, 1u);
  EXPECT_TRUE(HasEvent(install::event::kDownloadResumed));
  std::vector<std::string> ranges;
  const auto requests = server.requests();
  const auto all_ranges = server.ranges();
  for (std::size_t i = 0; i < requests.size(); ++i) {
    if (requests[i] == payload_url) ranges.push_back(all_ranges[i]);
  }
  ASSERT_EQ(ranges.size(), 2u);
  EXPECT_EQ(ranges[0], "bytes=0-" + std::to_string(payload_size - 1));
  EXPECT_EQ(ranges[1], "bytes=100000-" + std::to_string(payload_size - 1));
  EXPECT_EQ(device_.Slot("b"), release_.image);
}

// Chunks the active slot already holds are copied, not downloaded.
TEST_F(AgentTest, ReusesChunksTheActiveSlotHolds) {
  ReleaseSpec patch = release_;
  patch.version = "2.0.1";
  patch.image = old_image_;
  patch.image[kImageSize / 4] ^= 0x01;  // one chunk differs from the running system
  repo_.Add(patch);
  repo_.Publish();
  auto installed = device_.Agent().Install(repo_.Bundle({patch}, "p.upkb").string(), std::nullopt);
  ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
  const std::size_t chunks = (kImageSize + patch.chunk_size - 1) / patch.chunk_size;
  EXPECT_EQ(installed->report.reused_chunks, chunks - 1);
  EXPECT_GT(installed->report.reused_bytes, 0u);
  EXPECT_LT(installed->report.downloaded_bytes, installed->report.reused_bytes);
  EXPECT_EQ(device_.Slot("b"), patch.image);
  EXPECT_TRUE(HasEvent(install::event::kChunksReused));
}

// Uncompressed payloads install through the same verified pipeline.
TEST_F(AgentTest, InstallsUncompressedPayload) {
  ReleaseSpec raw = release_;
  raw.version = "2.0-raw";
  raw.compression = install::ChunkCompression::None;
  repo_.Add(raw);
  repo_.Publish();
  ASSERT_TRUE(device_.Agent().Install(repo_.Bundle({raw}, "r.upkb").string(), std::nullopt));
  EXPECT_EQ(device_.Slot("b"), raw.image);
}

// A corrupt journal is an error, never silently replaced (it may describe a pending trial).
TEST_F(AgentTest, CorruptJournalIsReportedAndKept) {
  fs::create_directories(device_.config.device.data_dir);
  const auto journal = device_.config.device.data_dir / "state.json";
  testing::WriteBytes(journal, "{\"format\":1,\"components\":");
  EXPECT_ERRC(device_.Agent().Install(repo_.Bundle({release_}, "u.upkb").string(), std::nullopt),
              Errc::JournalCorrupt);
  EXPECT_EQ(testing::ReadFileOrEmpty(journal), "{\"format\":1,\"components\":");
  EXPECT_EQ(device_.Slot("a"), old_image_);
  EXPECT_EQ(device_.Slot("b"), "");
  EXPECT_EQ(device_.Boot(), "a");
}

// A bundle holding nothing for this model is refused with NoInstallableTarget.
TEST_F(AgentTest, BundleWithoutReleaseForThisModelIsRefused) {
  device_.config.device.hardware = "other-model";
  EXPECT_ERRC(device_.Agent().Install(repo_.Bundle({release_}, "u.upkb").string(), std::nullopt),
              Errc::NoInstallableTarget);
}

// A tampered bundle's metadata fails TUF verification before anything else.
TEST_F(AgentTest, RejectsBundleWithForeignRoot) {
  ReleaseRepo other(tmp_ / "other");
  other.Add(release_);
  other.Publish();
  EXPECT_ERRC(device_.Agent().Install(other.Bundle({release_}, "o.upkb").string(), std::nullopt),
              metadata::Errc::ThresholdNotMet);
  ExpectOldSystemUntouched();
}

// Components other than the root filesystem go through their update module.
TEST_F(AgentTest, ModuleComponentIsInstalledAndRecorded) {
  repo_.AddFile("app/settings.conf", "mode=secure\n", metadata::Component::Configuration, "3");
  repo_.Publish();
  const auto dest = tmp_ / "settings.conf";
  ModuleConfig module;
  module.command = {UPKEEP_MODULE_BIN, "file"};
  module.args_json = metadata::Json{{"dest", dest.string()}}.dump();
  device_.config.components["app"] = module;
  const auto bundle = repo_.BundleTargets({"app/settings.conf"}, "app.upkb");
  auto installed = device_.Agent().Install(bundle.string(), "app/settings.conf");
  ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
  EXPECT_FALSE(installed->reboot_required);
  EXPECT_EQ(testing::ReadFileOrEmpty(dest), "mode=secure\n");
  auto status = device_.Agent().Status();
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(status->state.components.at("app").version, "3");
  EXPECT_TRUE(HasEvent(install::event::kModuleInstalled));
}

// A module that fails is rolled back and reported.
TEST_F(AgentTest, FailingModuleIsReportedAsModuleFailed) {
  repo_.AddFile("app/settings.conf", "mode=secure\n", metadata::Component::Configuration, "3");
  repo_.Publish();
  ModuleConfig module;
  module.command = {UPKEEP_MODULE_BIN, "file"};
  module.args_json = metadata::Json{{"dest", "relative/not/allowed"}}.dump();
  device_.config.components["app"] = module;
  const auto bundle = repo_.BundleTargets({"app/settings.conf"}, "app.upkb");
  EXPECT_ERRC(device_.Agent().Install(bundle.string(), "app/settings.conf"), Errc::ModuleFailed);
  EXPECT_TRUE(HasEvent(install::event::kModuleFailed));
}

// Every refusal of a command in each step of a slot update, with its exact code, and the
// journal left where it was (flow.cpp: the command reaches the step's handler, which refuses).
TEST_F(AgentTest, RefusalsInEachStepOfASlotUpdate) {
  const auto bundle = repo_.Bundle({release_}, "u.upkb");
  // Idle.
  EXPECT_ERRC(device_.Agent().Commit(), Errc::NothingToCommit);
  EXPECT_ERRC(device_.Agent().Rollback(), Errc::NothingToRollBack);
  // Switched, before the reboot.
  ASSERT_TRUE(device_.Agent().Install(bundle.string(), std::nullopt));
  EXPECT_ERRC(device_.Agent().Commit(), Errc::NotRebooted);
  EXPECT_ERRC(device_.Agent().Install(bundle.string(), std::nullopt), Errc::UpdatePending);
  // Trial.
  EXPECT_EQ(device_.Boot(), "b");
  EXPECT_ERRC(device_.Agent().Install(bundle.string(), std::nullopt), Errc::UpdatePending);
  // Reverting (rollback asked on the trial system): commit and install are refused, a second
  // rollback changes nothing, and the next boot finishes it.
  auto reverting = device_.Agent().Rollback();
  ASSERT_TRUE(reverting.has_value()) << reverting.error().ToString();
  ASSERT_TRUE(reverting->update.has_value());
  EXPECT_EQ(reverting->update->state, UpdateState::Reverting);
  EXPECT_ERRC(device_.Agent().Commit(), Errc::NothingToCommit);
  EXPECT_ERRC(device_.Agent().Install(bundle.string(), std::nullopt), Errc::UpdatePending);
  auto again = device_.Agent().Rollback();
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(again->update->state, UpdateState::Reverting);
  EXPECT_EQ(device_.Boot(), "a");
  auto done = device_.Agent().Reconcile();
  ASSERT_TRUE(done.has_value());
  EXPECT_FALSE(done->update.has_value());
  EXPECT_EQ(done->last->outcome, "rolled_back");
  ExpectOldSystemUntouched();
}

// While the image is being written (an interrupted download), commit is refused, a module
// install waits for the slot update, and rollback abandons the write.
TEST_F(AgentTest, RefusalsWhileWritingAndRollbackAbandons) {
  testing::HttpTestServer server(repo_.www());
  for (const auto& e : fs::recursive_directory_iterator(repo_.www() / "targets")) {
    if (e.path().string().ends_with(".payload"))
      fs::resize_file(e.path(), fs::file_size(e.path()) / 2);
  }
  device_.config.install.max_resumes = 1;
  EXPECT_ERRC(device_.Agent().Install(server.base_url(), ReleaseRepo::payload_target(release_)),
              install::Errc::PayloadTruncated);
  EXPECT_ERRC(device_.Agent().Commit(), Errc::NothingToCommit);

  repo_.AddFile("app/settings.conf", "mode=secure\n", metadata::Component::Configuration, "3");
  repo_.Publish();
  ModuleConfig module;
  module.command = {UPKEEP_MODULE_BIN, "file"};
  module.args_json = metadata::Json{{"dest", (tmp_ / "settings.conf").string()}}.dump();
  device_.config.components["app"] = module;
  const auto app = repo_.BundleTargets({"app/settings.conf"}, "app.upkb");
  EXPECT_ERRC(device_.Agent().Install(app.string(), "app/settings.conf"), Errc::UpdatePending);
  EXPECT_FALSE(fs::exists(tmp_ / "settings.conf"));

  auto abandoned = device_.Agent().Rollback();
  ASSERT_TRUE(abandoned.has_value()) << abandoned.error().ToString();
  EXPECT_FALSE(abandoned->update.has_value());
  EXPECT_EQ(abandoned->last->outcome, "cancelled");
  // Now the module installs.
  ASSERT_TRUE(device_.Agent().Install(app.string(), "app/settings.conf").has_value());
  ExpectOldSystemUntouched();
}

// A module install goes through the journal: module_installing and module_committing are
// persisted (journal format 2) before the module runs, and the end is recorded as committed;
// the same release again is AlreadyInstalled.
TEST_F(AgentTest, ModuleInstallIsJournalledAndRepeatIsAlreadyInstalled) {
  repo_.AddFile("app/settings.conf", "mode=secure\n", metadata::Component::Configuration, "3", 4);
  repo_.Publish();
  ModuleConfig module;
  module.command = {UPKEEP_MODULE_BIN, "file"};
  module.args_json = metadata::Json{{"dest", (tmp_ / "settings.conf").string()}}.dump();
  device_.config.components["app"] = module;
  const auto app = repo_.BundleTargets({"app/settings.conf"}, "app.upkb");
  auto agent = device_.Agent();
  std::vector<std::pair<std::string, std::uint64_t>> journal;
  agent.store().SetAfterSaveHookForTest([&](unsigned) {
    const auto text = testing::ReadFileOrEmpty(agent.store().path());
    const auto doc = metadata::Json::parse(text);
    journal.emplace_back(
        doc["update"].is_null() ? "idle" : doc["update"]["state"].get<std::string>(),
        doc["format"].get<std::uint64_t>());
  });
  ASSERT_TRUE(agent.Install(app.string(), "app/settings.conf").has_value());
  const std::vector<std::pair<std::string, std::uint64_t>> expected = {
      {"module_installing", 2}, {"module_committing", 2}, {"idle", 1}};
  EXPECT_EQ(journal, expected);
  auto state = device_.Agent().store().Load();
  ASSERT_TRUE(state.has_value());
  EXPECT_EQ(state->last->outcome, "committed");
  EXPECT_EQ(state->security.at("app").security_version, 4u);
  EXPECT_TRUE(HasEvent(install::event::kInstallStarted));
  EXPECT_ERRC(device_.Agent().Install(app.string(), "app/settings.conf"), Errc::AlreadyInstalled);
}

// The flow table: one row per (state, trigger), and every step has a way back to idle.
TEST(FlowTest, TransitionTableIsDeterministicAndEveryStateCanFinish) {
  std::set<std::pair<UpdateState, Trigger>> seen;
  for (const auto& t : TransitionTable()) {
    EXPECT_TRUE(seen.insert({t.from, t.trigger}).second)
        << ToString(t.from) << " + " << ToString(t.trigger) << " listed twice";
  }
  for (auto s : {UpdateState::Writing, UpdateState::Written, UpdateState::Switched,
                 UpdateState::Trial, UpdateState::Reverting}) {
    // Breadth-first search to Idle.
    std::set<UpdateState> reached = {s};
    bool changed = true;
    while (changed) {
      changed = false;
      for (const auto& t : TransitionTable()) {
        if (reached.contains(t.from) && reached.insert(t.to).second) changed = true;
      }
    }
    EXPECT_TRUE(reached.contains(UpdateState::Idle)) << ToString(s);
  }
  EXPECT_ERRC(FindTransition(UpdateState::Idle, Trigger::HealthPassed), Errc::UpdatePending);
}

}  // namespace
}  // namespace upkeep::agent

namespace upkeep::agent {
namespace {

// The command line: --json lines, documented exit codes, --dump-config.
class AgentCliTest : public AgentTest {
 protected:
  int Cli(std::vector<std::string> args) {
    testing::WriteBytes(tmp_ / "agent.toml", DumpConfig(device_.config));
    std::vector<std::string> argv = {"upkeep-agent", "-c", (tmp_ / "agent.toml").string(),
                                     "--log-level", "off"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<const char*> c;
    for (const auto& a : argv) c.push_back(a.c_str());
    out_.str("");
    err_.str("");
    return Main(static_cast<int>(c.size()), c.data(), out_, err_);
  }
  std::vector<metadata::Json> JsonLines() {
    std::vector<metadata::Json> lines;
    std::istringstream in(out_.str());
    for (std::string line; std::getline(in, line);) lines.push_back(metadata::Json::parse(line));
    return lines;
  }
  std::ostringstream out_, err_;
};

TEST_F(AgentCliTest, JsonInstallReportsEventsProgressAndResult) {
  const auto bundle = repo_.Bundle({release_}, "u.upkb");
  ASSERT_EQ(Cli({"--json", "install", bundle.string()}), kExitOk) << err_.str();
  const auto lines = JsonLines();
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back()["type"], "result");
  EXPECT_EQ(lines.back()["result"]["slot"], "b");
  EXPECT_EQ(lines.back()["result"]["bytes_written"], kImageSize);
  const bool progress = std::any_of(lines.begin(), lines.end(),
                                    [](const auto& l) { return l["type"] == "progress"; });
  EXPECT_TRUE(progress);
  const bool reboot = std::any_of(lines.begin(), lines.end(), [](const auto& l) {
    return l["type"] == "event" && l["id"] == install::event::kRebootRequested;
  });
  EXPECT_TRUE(reboot);
  EXPECT_EQ(Cli({"commit"}), kExitState);  // not rebooted yet
  EXPECT_EQ(Cli({"simulate-boot"}), kExitOk);
  EXPECT_EQ(Cli({"--json", "commit"}), kExitOk) << err_.str();
  EXPECT_EQ(JsonLines().back()["result"]["components"]["rootfs"]["version"], "2.0");
  EXPECT_EQ(Cli({"--json", "status"}), kExitOk);
  EXPECT_EQ(JsonLines().back()["result"]["booted_slot"], "b");
}

TEST_F(AgentCliTest, ExitCodesSayWhatWentWrong) {
  device_.config.device.hardware = "other";
  const auto bundle = repo_.Bundle({release_}, "u.upkb");
  EXPECT_EQ(Cli({"--json", "install", bundle.string(), ReleaseRepo::payload_target(release_)}),
            kExitRefused);
  EXPECT_EQ(JsonLines().back()["code"], "agent.WrongHardware");
  EXPECT_EQ(Cli({"rollback"}), kExitState);
  EXPECT_EQ(Cli({"install", (tmp_ / "missing.upkb").string()}), kExitDownload);
  testing::WriteBytes(tmp_ / "garbage.upkb", std::string(4096, 'x'));
  EXPECT_EQ(Cli({"install", (tmp_ / "garbage.upkb").string()}), kExitRejected);  // BundleMalformed
  testing::WriteBytes(tmp_ / "bad.toml", "[device]\nhardwar = 1\n");
  std::vector<const char*> argv = {"upkeep-agent", "-c", nullptr, "status"};
  const std::string bad = (tmp_ / "bad.toml").string();
  argv[2] = bad.c_str();
  EXPECT_EQ(Main(4, argv.data(), out_, err_), kExitUsage);
  EXPECT_EQ(Cli({"--dump-config"}), kExitOk);
  EXPECT_TRUE(ParseConfig(out_.str()).has_value());
}

// A mirror serves a timestamp.json of bytes that are not UTF-8 (\xff\xfe): the install is
// rejected with a JSON error line and exit code, never an abort; the journal stays loadable and
// the old system untouched.
TEST_F(AgentCliTest, InvalidUtf8FromMirrorGivesJsonErrorNotAbort) {
  testing::WriteBytes(repo_.www() / "metadata" / "timestamp.json", "\xff\xfe");
  testing::HttpTestServer server(repo_.www());
  EXPECT_EQ(Cli({"--json", "install", server.base_url(), ReleaseRepo::payload_target(release_)}),
            kExitRejected);
  const auto lines = JsonLines();
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back()["type"], "error");
  EXPECT_EQ(lines.back()["code"], "metadata.MalformedJson");
  auto state = device_.Agent().store().Load();
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  EXPECT_FALSE(state->update.has_value());
  ExpectOldSystemUntouched();
}

// Whatever bytes an error message carries, the journal, the event log and --json output stay
// valid JSON (invalid bytes recorded as U+FFFD), and the text output holds no control characters.
TEST_F(AgentCliTest, RecordsInvalidUtf8AndControlBytesSafely) {
  DeviceState s;
  s.last = LastResult{"failed", "rootfs/x", "1", std::string("bad \xff\xfe\xc3 byte \x1b[31m")};
  const std::string text = SerializeDeviceState(s);
  auto back = ParseDeviceState(text);
  ASSERT_TRUE(back.has_value()) << back.error().ToString();
  EXPECT_EQ(back->last->detail, "bad \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd byte \x1b[31m");
  fs::create_directories(device_.config.device.data_dir);
  auto saved = device_.Agent().store().Save(s);
  ASSERT_TRUE(saved.has_value()) << saved.error().ToString();
  EXPECT_EQ(Cli({"status"}), kExitOk);
  EXPECT_EQ(out_.str().find('\x1b'), std::string::npos) << out_.str();
  EXPECT_NE(out_.str().find("bad \xef\xbf\xbd"), std::string::npos) << out_.str();
  EXPECT_EQ(Cli({"--json", "status"}), kExitOk);
  EXPECT_EQ(JsonLines().back()["result"]["last"]["detail"], back->last->detail);
}

// The journal is read strictly (one typed reader): a member of the wrong kind, an unknown member
// or a negative number is JournalCorrupt, never a guess.
TEST(JournalFormatTest, RejectsWrongKindsAndUnknownMembers) {
  DeviceState s;
  s.components["rootfs"] = InstalledComponent{"1", "rootfs/a", "", 10, 3, "a"};
  const auto good = metadata::Json::parse(SerializeDeviceState(s));
  ASSERT_TRUE(ParseDeviceState(good.dump()).has_value());
  auto unknown = good;
  unknown["extra"] = 1;
  EXPECT_ERRC(ParseDeviceState(unknown.dump()), Errc::JournalCorrupt);
  auto wrong_kind = good;
  wrong_kind["components"]["rootfs"]["image_size"] = "10";
  EXPECT_ERRC(ParseDeviceState(wrong_kind.dump()), Errc::JournalCorrupt);
  auto negative = good;
  negative["security"]["rootfs"] = {{"security_version", -1}, {"rollback_sequence", 0}};
  EXPECT_ERRC(ParseDeviceState(negative.dump()), Errc::JournalCorrupt);
  auto unknown_nested = good;
  unknown_nested["components"]["rootfs"]["surprise"] = true;
  EXPECT_ERRC(ParseDeviceState(unknown_nested.dump()), Errc::JournalCorrupt);
}

}  // namespace
}  // namespace upkeep::agent
