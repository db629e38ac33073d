// Repeated updates of one module component through the real Agent: every version replaces the
// previous one, a failed update leaves the last good version in place (content and journal),
// and the next update still works. An install interrupted in either journalled step
// (module_installing, module_committing) is finished or rolled back at the next start.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "simulated_device.hpp"
#include "test_util.hpp"
#include "upkeep/agent/agent.hpp"
#include "upkeep/install/events.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/modules/module.hpp"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using testing::MakeImage;
using testing::ReadFileOrEmpty;
using testing::ReleaseRepo;
using testing::SimulatedDevice;

// A ustar archive of regular files (name -> content), as a dir module release carries.
std::string Tarball(const std::map<std::string, std::string>& files) {
  std::string out;
  for (const auto& [name, content] : files) {
    char header[512] = {};
    std::snprintf(header, 100, "%s", name.c_str());
    std::snprintf(header + 100, 8, "%07o", 0644);
    std::snprintf(header + 108, 8, "%07o", 0);
    std::snprintf(header + 116, 8, "%07o", 0);
    std::snprintf(header + 124, 12, "%011o", static_cast<unsigned>(content.size()));
    std::snprintf(header + 136, 12, "%011o", 1700000000u);
    header[156] = '0';
    std::memcpy(header + 257, "ustar", 6);
    std::memcpy(header + 263, "00", 2);
    std::memset(header + 148, ' ', 8);
    unsigned sum = 0;
    for (char c : header) sum += static_cast<unsigned char>(c);
    std::snprintf(header + 148, 8, "%06o", sum);
    out.append(header, sizeof header);
    out += content;
    out.append((512 - content.size() % 512) % 512, '\0');
  }
  out.append(1024, '\0');
  return out;
}

// The dir module release of version `n`: "version" holds n, and "only-in-N" exists in this
// version only.
std::string TreeVersion(int n) {
  const std::string v = std::to_string(n);
  return Tarball({{"version", v + "\n"}, {"only-in-" + v, v + "\n"}});
}

void ExpectTreeVersion(const fs::path& dir, int n, int versions) {
  EXPECT_EQ(ReadFileOrEmpty(dir / "version"), std::to_string(n) + "\n");
  for (int other = 1; other <= versions; ++other) {
    EXPECT_EQ(fs::exists(dir / ("only-in-" + std::to_string(other))), other == n)
        << "only-in-" << other << " after version " << n;
  }
}

class ModuleUpdateTest : public ::testing::Test {
 protected:
  ModuleUpdateTest()
      : repo_(tmp_ / "release"), device_(tmp_ / "device", repo_.root_path(), MakeImage(4096, 1)) {}
  void SetUp() override {
    repo_.Publish();
    fs::copy_file(repo_.root_path(), tmp_ / "root.json");
    device_.config.trust.root = tmp_ / "root.json";
    device_.Boot();
  }

  // Configures component "app" with the shipped module `type` and `args`.
  void UseModule(const std::string& type, const metadata::Json& args) {
    ModuleConfig module;
    module.command = {UPKEEP_MODULE_BIN, type};
    module.args_json = args.dump();
    device_.config.components["app"] = module;
  }

  // Signs `bytes` as app/<file> at `version` (security_version = version) and installs it from
  // a bundle with a fresh agent.
  Result<InstallOutcome> Release(const std::string& file, const std::string& bytes, int version) {
    const std::string target = "app/" + file;
    repo_.AddFile(target, bytes, metadata::Component::Application, std::to_string(version),
                  static_cast<std::uint64_t>(version));
    repo_.Publish();
    const auto bundle = repo_.BundleTargets({target}, "app-" + std::to_string(version) + ".upkb");
    return device_.Agent().Install(bundle.string(), target);
  }

  // The journal records `version` for "app" and a security floor of `version`.
  void ExpectJournal(int version) {
    auto status = device_.Agent().Status();
    ASSERT_TRUE(status.has_value()) << status.error().ToString();
    ASSERT_EQ(status->state.components.count("app"), 1u);
    EXPECT_EQ(status->state.components.at("app").version, std::to_string(version));
    ASSERT_EQ(status->state.security.count("app"), 1u);
    EXPECT_EQ(status->state.security.at("app").security_version,
              static_cast<std::uint64_t>(version));
  }

  // Leaves the device as an agent killed while installing app/<file> at `version` would: the
  // release signed, the work directory prepared, the module run through `stages`, and the
  // journal at `state`.
  void Interrupt(const std::string& file, const std::string& bytes, int version, UpdateState state,
                 const std::vector<modules::Stage>& stages) {
    const std::string target = "app/" + file;
    repo_.AddFile(target, bytes, metadata::Component::Application, std::to_string(version),
                  static_cast<std::uint64_t>(version));
    repo_.Publish();
    const fs::path artifact = tmp_ / file;
    testing::WriteBytes(artifact, bytes);
    modules::ComponentHeader header;
    header.component = "app";
    header.version = std::to_string(version);
    header.target = target;
    header.module_args_json = device_.config.components["app"].args_json;
    const fs::path work = device_.config.device.data_dir / "modules" / "app";
    const fs::path artifacts[] = {artifact};
    ASSERT_TRUE(modules::PrepareWorkDir(work, header, artifacts).has_value());
    modules::ModuleSpec spec;
    spec.command = device_.config.components["app"].command;
    for (const auto stage : stages) {
      auto ran = modules::RunStage(spec, stage, work);
      ASSERT_TRUE(ran.has_value()) << ran.error().ToString();
    }
    auto agent = device_.Agent();
    auto journal = agent.store().Load();
    ASSERT_TRUE(journal.has_value());
    PendingUpdate u;
    u.state = state;
    u.id = "0123456789abcdef0123456789abcdef";
    u.component = "app";
    u.target = target;
    u.version = std::to_string(version);
    u.security_version = static_cast<std::uint64_t>(version);
    u.image_size = bytes.size();
    journal->update = u;
    ASSERT_TRUE(agent.store().Save(*journal).has_value());
  }

  // After the restart: nothing in progress, `last` says `outcome` for `version`.
  void ExpectSettled(const std::string& outcome, int version) {
    auto journal = device_.Agent().store().Load();
    ASSERT_TRUE(journal.has_value());
    EXPECT_FALSE(journal->update.has_value());
    ASSERT_TRUE(journal->last.has_value());
    EXPECT_EQ(journal->last->outcome, outcome);
    EXPECT_EQ(journal->last->version, std::to_string(version));
  }

  bool HasEvent(const char* id) const {
    return std::find(device_.events.begin(), device_.events.end(), id) != device_.events.end();
  }

  // Two good file versions of "app" at `dest`.
  void TwoFileVersions(const fs::path& dest) {
    fs::create_directories(dest.parent_path());
    UseModule("file", {{"dest", dest.string()}});
    for (int v = 1; v <= 2; ++v) {
      ASSERT_TRUE(
          Release("app-" + std::to_string(v) + ".conf", "setting=" + std::to_string(v) + "\n", v)
              .has_value());
    }
  }

  testing::TempDir tmp_;
  ReleaseRepo repo_;
  SimulatedDevice device_;
};

// An agent that died while the module's Install stage ran (the new file already in place) is
// rolled back at the next start: the old file, the old journal entry, `last` rolled_back, and a
// module.failed event; the next update installs normally (docs/formats/update-module.md).
TEST_F(ModuleUpdateTest, InterruptedInstallIsRolledBackAtRestart) {
  const fs::path dest = tmp_ / "etc" / "app.conf";
  TwoFileVersions(dest);
  Interrupt("app-3.conf", "setting=3\n", 3, UpdateState::ModuleInstalling,
            {modules::Stage::Download, modules::Stage::Install});
  ASSERT_EQ(ReadFileOrEmpty(dest), "setting=3\n");
  device_.events.clear();
  auto reconciled = device_.Agent().Reconcile();
  ASSERT_TRUE(reconciled.has_value()) << reconciled.error().ToString();
  EXPECT_EQ(ReadFileOrEmpty(dest), "setting=2\n");
  ExpectSettled("rolled_back", 3);
  ExpectJournal(2);
  EXPECT_TRUE(HasEvent(install::event::kModuleFailed));
  auto next = Release("app-4.conf", "setting=4\n", 4);
  ASSERT_TRUE(next.has_value()) << next.error().ToString();
  EXPECT_EQ(ReadFileOrEmpty(dest), "setting=4\n");
  ExpectJournal(4);
}

// Killed right after the journal named the install, before any stage: the Rollback stage finds
// nothing to undo; the same release then installs when asked again.
TEST_F(ModuleUpdateTest, InterruptedBeforeAnyStageIsRolledBackAndCanBeRetried) {
  const fs::path dest = tmp_ / "etc" / "app.conf";
  TwoFileVersions(dest);
  Interrupt("app-3.conf", "setting=3\n", 3, UpdateState::ModuleInstalling, {});
  // The next install reconciles first, then installs the release again.
  const auto bundle = repo_.BundleTargets({"app/app-3.conf"}, "app-3-again.upkb");
  auto again = device_.Agent().Install(bundle.string(), "app/app-3.conf");
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(ReadFileOrEmpty(dest), "setting=3\n");
  ExpectSettled("committed", 3);
  ExpectJournal(3);
}

// Killed once Install had succeeded (journal module_committing, before or after the Commit
// stage ran): the next start runs Commit (again) and records the new version and its floor.
TEST_F(ModuleUpdateTest, InterruptedCommitIsFinishedAtRestart) {
  const fs::path dest = tmp_ / "etc" / "app.conf";
  TwoFileVersions(dest);
  Interrupt("app-3.conf", "setting=3\n", 3, UpdateState::ModuleCommitting,
            {modules::Stage::Download, modules::Stage::Install});
  device_.events.clear();
  auto status = device_.Agent().Status();  // status applies it too
  ASSERT_TRUE(status.has_value()) << status.error().ToString();
  EXPECT_FALSE(status->state.update.has_value());
  EXPECT_EQ(ReadFileOrEmpty(dest), "setting=3\n");
  ExpectSettled("committed", 3);
  ExpectJournal(3);
  EXPECT_TRUE(HasEvent(install::event::kModuleInstalled));

  Interrupt("app-4.conf", "setting=4\n", 4, UpdateState::ModuleCommitting,
            {modules::Stage::Download, modules::Stage::Install, modules::Stage::Commit});
  ASSERT_TRUE(device_.Agent().Reconcile().has_value());
  EXPECT_EQ(ReadFileOrEmpty(dest), "setting=4\n");
  ExpectSettled("committed", 4);
  ExpectJournal(4);
  // The committed version's backup is gone: a rollback now would not bring version 3 back.
  EXPECT_FALSE(fs::exists(device_.config.device.data_dir / "modules" / "app" / "file.backup"));
}

// The dir module interrupted mid-install: the previous tree comes back whole.
TEST_F(ModuleUpdateTest, InterruptedDirInstallRestoresTheTree) {
  const fs::path dest = tmp_ / "srv" / "app";
  fs::create_directories(dest.parent_path());
  UseModule("dir", {{"dest", dest.string()}});
  for (int v = 1; v <= 2; ++v) {
    ASSERT_TRUE(Release("tree-" + std::to_string(v) + ".tar", TreeVersion(v), v).has_value());
  }
  Interrupt("tree-3.tar", TreeVersion(3), 3, UpdateState::ModuleInstalling,
            {modules::Stage::Download, modules::Stage::Install});
  ExpectTreeVersion(dest, 3, 3);
  ASSERT_TRUE(device_.Agent().Reconcile().has_value());
  ExpectTreeVersion(dest, 2, 3);
  ExpectSettled("rolled_back", 3);
  ExpectJournal(2);
}

// A Rollback that fails at the restart does not leave the journal stuck: `last` says failed
// (the component may be between versions) and the next update installs.
TEST_F(ModuleUpdateTest, FailedRecoveryRollbackIsRecordedAndDoesNotBlock) {
  const fs::path dest = tmp_ / "etc" / "app.conf";
  TwoFileVersions(dest);
  Interrupt("app-3.conf", "setting=3\n", 3, UpdateState::ModuleInstalling,
            {modules::Stage::Install});
  const fs::path script = tmp_ / "fail-at-rollback.sh";
  testing::WriteBytes(script, std::string("#!/bin/sh\n") +
                                  "if [ \"$1\" = Rollback ]; then echo forced; exit 1; fi\n"
                                  "exec " +
                                  UPKEEP_MODULE_BIN + " file \"$@\"\n");
  fs::permissions(script, fs::perms(0755));
  device_.config.components["app"].command = {script.string()};
  device_.events.clear();
  ASSERT_TRUE(device_.Agent().Reconcile().has_value());
  ExpectSettled("failed", 3);
  ExpectJournal(2);  // the journal records only committed versions
  EXPECT_TRUE(HasEvent(install::event::kModuleFailed));
  UseModule("file", {{"dest", dest.string()}});
  auto next = Release("app-4.conf", "setting=4\n", 4);
  ASSERT_TRUE(next.has_value()) << next.error().ToString();
  EXPECT_EQ(ReadFileOrEmpty(dest), "setting=4\n");
  ExpectJournal(4);
}

// A component whose module was removed from the configuration while its install was
// interrupted: nothing can run, the journal records the failure and moves on.
TEST_F(ModuleUpdateTest, InterruptedInstallOfUnconfiguredComponentIsRecordedAsFailed) {
  const fs::path dest = tmp_ / "etc" / "app.conf";
  TwoFileVersions(dest);
  Interrupt("app-3.conf", "setting=3\n", 3, UpdateState::ModuleCommitting,
            {modules::Stage::Install});
  device_.config.components.clear();
  ASSERT_TRUE(device_.Agent().Reconcile().has_value());
  ExpectSettled("failed", 3);
  auto journal = device_.Agent().store().Load();
  ASSERT_TRUE(journal.has_value());
  EXPECT_NE(journal->last->detail.find("between versions"), std::string::npos)
      << journal->last->detail;
}

// Three updates of a dir component in a row each replace the tree: a later update is neither
// skipped (stale swap state taken as done) nor recorded without its content.
TEST_F(ModuleUpdateTest, SecondAndThirdDirUpdateReplaceTheTree) {
  const fs::path dest = tmp_ / "srv" / "app";
  fs::create_directories(dest.parent_path());
  UseModule("dir", {{"dest", dest.string()}});
  for (int v = 1; v <= 3; ++v) {
    SCOPED_TRACE("version " + std::to_string(v));
    auto installed = Release("tree-" + std::to_string(v) + ".tar", TreeVersion(v), v);
    ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
    ExpectTreeVersion(dest, v, 3);
    ExpectJournal(v);
  }
}

// A refused dir update after several good ones leaves the last good tree and journal entry;
// the next update installs normally.
TEST_F(ModuleUpdateTest, FailedDirUpdateKeepsPreviousTreeAndNextUpdateSucceeds) {
  const fs::path dest = tmp_ / "srv" / "app";
  fs::create_directories(dest.parent_path());
  UseModule("dir", {{"dest", dest.string()}});
  for (int v = 1; v <= 3; ++v) {
    ASSERT_TRUE(Release("tree-" + std::to_string(v) + ".tar", TreeVersion(v), v).has_value());
  }
  // Version 4 is not a tar archive: the module refuses it at Install and rolls back.
  EXPECT_ERRC(Release("tree-4.tar", "#mtree\n./version type=file contents=/etc/hostname\n", 4),
              Errc::ModuleFailed);
  ExpectTreeVersion(dest, 3, 5);
  ExpectJournal(3);
  auto fifth = Release("tree-5.tar", TreeVersion(5), 5);
  ASSERT_TRUE(fifth.has_value()) << fifth.error().ToString();
  ExpectTreeVersion(dest, 5, 5);
  ExpectJournal(5);
}

// Three updates of a file component in a row, each with its own artifact name: every one
// installs (no leftover artifact of an earlier update makes the module fail).
TEST_F(ModuleUpdateTest, SecondAndThirdFileUpdateReplaceTheFile) {
  const fs::path dest = tmp_ / "etc" / "app.conf";
  fs::create_directories(dest.parent_path());
  UseModule("file", {{"dest", dest.string()}});
  for (int v = 1; v <= 3; ++v) {
    SCOPED_TRACE("version " + std::to_string(v));
    auto installed =
        Release("app-" + std::to_string(v) + ".conf", "setting=" + std::to_string(v) + "\n", v);
    ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
    EXPECT_EQ(ReadFileOrEmpty(dest), "setting=" + std::to_string(v) + "\n");
    ExpectJournal(v);
  }
}

// A file update whose Commit fails is rolled back to the previous version (content and
// journal); the next update installs normally.
TEST_F(ModuleUpdateTest, FailedFileUpdateKeepsPreviousFileAndNextUpdateSucceeds) {
  const fs::path dest = tmp_ / "etc" / "app.conf";
  fs::create_directories(dest.parent_path());
  UseModule("file", {{"dest", dest.string()}});
  for (int v = 1; v <= 3; ++v) {
    ASSERT_TRUE(
        Release("app-" + std::to_string(v) + ".conf", "setting=" + std::to_string(v) + "\n", v)
            .has_value());
  }
  // The shipped module, except that its Commit stage fails.
  const fs::path script = tmp_ / "fail-at-commit.sh";
  testing::WriteBytes(script, std::string("#!/bin/sh\n") +
                                  "if [ \"$1\" = Commit ]; then echo forced failure; exit 1; fi\n"
                                  "exec " +
                                  UPKEEP_MODULE_BIN + " file \"$@\"\n");
  fs::permissions(script, fs::perms(0755));
  device_.config.components["app"].command = {script.string()};
  EXPECT_ERRC(Release("app-4.conf", "setting=4\n", 4), Errc::ModuleFailed);
  EXPECT_EQ(ReadFileOrEmpty(dest), "setting=3\n");
  ExpectJournal(3);

  UseModule("file", {{"dest", dest.string()}});
  auto fifth = Release("app-5.conf", "setting=5\n", 5);
  ASSERT_TRUE(fifth.has_value()) << fifth.error().ToString();
  EXPECT_EQ(ReadFileOrEmpty(dest), "setting=5\n");
  ExpectJournal(5);
}

}  // namespace
}  // namespace upkeep::agent
