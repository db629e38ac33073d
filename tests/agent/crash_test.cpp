// Power-loss safety of the update flow: the real upkeep-agent process is killed with SIGKILL at
// every journal write, at image offsets and at random moments, then run again. After every kill,
// and after every restart, the device must be in exactly one of: old slot active, new slot on
// trial boot, new slot active and committed. It must never point the firmware at an incomplete
// image, and the journal must always load. Module installs get the same treatment: killed after
// every journal write and in the middle of every module stage, the component ends at its old
// version (rolled back) or the new one (committed) once the agent runs again, with the journal
// settled and the next install possible.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <set>
#include <thread>

#include "simulated_device.hpp"
#include "test_util.hpp"
#include "upkeep/agent/state.hpp"
#include "upkeep/metadata/canonical_json.hpp"

extern char** environ;

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using testing::MakeImage;
using testing::ReleaseRepo;
using testing::ReleaseSpec;
using testing::SimulatedDevice;

constexpr std::size_t kImageSize = 3 * 1024 * 1024 + 12345;

struct Exit {
  bool killed = false;
  int code = -1;
};

// Runs upkeep-agent with `args`; optional extra environment entries; optionally SIGKILLs it after
// `kill_after`.
Exit RunAgent(const std::vector<std::string>& args, const std::vector<std::string>& extra_env,
              std::optional<std::chrono::microseconds> kill_after = std::nullopt,
              const char* binary = UPKEEP_AGENT_BIN) {
  std::vector<std::string> argv = {binary, "--log-level", "off"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> c_argv;
  for (auto& a : argv) c_argv.push_back(a.data());
  c_argv.push_back(nullptr);
  std::vector<std::string> env = {"PATH=/usr/bin:/bin"};
  env.insert(env.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> c_env;
  for (auto& e : env) c_env.push_back(e.data());
  c_env.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, c_argv[0], &actions, nullptr, c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(rc, 0);
  if (rc != 0) return {};
  if (kill_after) {
    std::this_thread::sleep_for(*kill_after);
    ::kill(pid, SIGKILL);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  Exit e;
  e.killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  e.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return e;
}

class CrashTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new testing::TempDir();
    old_image_ = new std::string(MakeImage(kImageSize, 11));
    release_ = new ReleaseSpec();
    release_->image = MakeImage(kImageSize, 12);
    release_->chunk_size = 64 * 1024;
    repo_ = new ReleaseRepo(tmp_->path() / "release");
    repo_->Add(*release_);
    repo_->Publish();
    bundle_ = new fs::path(repo_->Bundle({*release_}, "update.upkb"));
  }
  static void TearDownTestSuite() {
    delete bundle_;
    delete repo_;
    delete release_;
    delete old_image_;
    delete tmp_;
  }

  // A fresh device running the old image from slot a, with its configuration file written.
  std::unique_ptr<SimulatedDevice> NewDevice(const std::string& name) {
    auto d = std::make_unique<SimulatedDevice>(tmp_->path() / name, repo_->root_path(), *old_image_);
    d->config.install.checkpoint_mib = 1;
    testing::WriteBytes(d->dir() / "agent.toml", DumpConfig(d->config));
    d->Boot();
    return d;
  }
  static std::vector<std::string> Args(const SimulatedDevice& d, const std::string& command) {
    std::vector<std::string> a = {"-c", (d.dir() / "agent.toml").string(), command};
    if (command == "install") a.push_back(bundle_->string());
    return a;
  }

  // Exactly one of the three safe outcomes, with the firmware pointed at a complete image.
  static void ExpectSafe(SimulatedDevice& d, const std::string& where) {
    SCOPED_TRACE(where);
    auto agent = d.Agent();
    auto state = agent.store().Load();
    ASSERT_TRUE(state.has_value()) << "journal: " << state.error().ToString();
    auto boot = agent.bootloader().Status();
    ASSERT_TRUE(boot.has_value()) << boot.error().ToString();
    const bool committed = state->components.contains("rootfs");
    if (boot->slot == "a") {
      // Old slot active (an update may be in progress on b, which nothing boots).
      EXPECT_FALSE(boot->trial);
      EXPECT_FALSE(committed);
      EXPECT_EQ(d.Slot("a"), *old_image_);
    } else {
      // The firmware will boot b: it must hold the whole new image, on trial or committed.
      EXPECT_EQ(d.Slot("b").substr(0, kImageSize), release_->image);
      EXPECT_TRUE(boot->trial || committed);
      if (!boot->trial) {
        EXPECT_EQ(state->components.at("rootfs").slot, "b");
      }
    }
    EXPECT_EQ(d.Slot("a"), *old_image_);  // the running system is never written
  }

  // Restarts until the update is committed (power-cycling when it waits for a reboot), checking
  // safety at every step.
  static void FinishUpdate(SimulatedDevice& d) {
    for (int step = 0; step < 6; ++step) {
      auto state = d.Agent().store().Load();
      ASSERT_TRUE(state.has_value());
      if (state->components.contains("rootfs") && !state->update) break;
      if (!state->update || state->update->state == UpdateState::Writing ||
          state->update->state == UpdateState::Written) {
        const Exit e = RunAgent(Args(d, "install"), {});
        EXPECT_TRUE(e.code == 0 || e.code == 5) << "install exit " << e.code;
      } else if (state->update->state == UpdateState::Switched) {
        const Exit e = RunAgent(Args(d, "commit"), {});
        if (e.code == 5) d.Boot();  // not rebooted yet
      } else {
        const Exit e = RunAgent(Args(d, "commit"), {});
        EXPECT_EQ(e.code, 0);
      }
      ExpectSafe(d, "restart " + std::to_string(step));
    }
    auto state = d.Agent().store().Load();
    ASSERT_TRUE(state.has_value());
    ASSERT_TRUE(state->components.contains("rootfs"));
    EXPECT_EQ(state->components.at("rootfs").version, release_->version);
    EXPECT_EQ(d.Boot(), "b");
    EXPECT_EQ(d.Slot("b").substr(0, kImageSize), release_->image);
  }

  static testing::TempDir* tmp_;
  static std::string* old_image_;
  static ReleaseSpec* release_;
  static ReleaseRepo* repo_;
  static fs::path* bundle_;
};

testing::TempDir* CrashTest::tmp_ = nullptr;
std::string* CrashTest::old_image_ = nullptr;
ReleaseSpec* CrashTest::release_ = nullptr;
ReleaseRepo* CrashTest::repo_ = nullptr;
fs::path* CrashTest::bundle_ = nullptr;

// SIGKILL right after each journal write of `install`, then restart: safe at once, and the
// restarted agent completes the update.
TEST_F(CrashTest, KilledAfterEveryJournalWriteOfInstall) {
  unsigned steps = 0;
  for (unsigned n = 1; n < 64; ++n) {
    SCOPED_TRACE("journal write " + std::to_string(n));
    auto d = NewDevice("install-" + std::to_string(n));
    const Exit e = RunAgent(Args(*d, "install"),
                            {"UPKEEP_KILL_AFTER_JOURNAL_WRITES_FOR_TEST=" + std::to_string(n)});
    ExpectSafe(*d, "after the kill");
    FinishUpdate(*d);
    if (!e.killed) {
      EXPECT_EQ(e.code, 0);
      break;  // past the last journal write of an install
    }
    ++steps;
  }
  // Start, one checkpoint per MiB, written, switched.
  EXPECT_GE(steps, 5u);
}

// The shipped agent has no fault hooks: the crash suite's variables change nothing, and the
// install and commit complete.
TEST_F(CrashTest, ShippedAgentIgnoresFaultInjectionVariables) {
  auto d = NewDevice("shipped");
  const std::vector<std::string> env = {"UPKEEP_KILL_AFTER_JOURNAL_WRITES_FOR_TEST=1",
                                        "UPKEEP_KILL_AT_IMAGE_BYTE_FOR_TEST=0"};
  const Exit installed = RunAgent(Args(*d, "install"), env, std::nullopt, UPKEEP_SHIPPED_AGENT_BIN);
  EXPECT_FALSE(installed.killed);
  EXPECT_EQ(installed.code, 0);
  EXPECT_EQ(d->Boot(), "b");
  const Exit committed = RunAgent(Args(*d, "commit"), env, std::nullopt, UPKEEP_SHIPPED_AGENT_BIN);
  EXPECT_FALSE(committed.killed);
  EXPECT_EQ(committed.code, 0);
  ExpectSafe(*d, "after the shipped agent's update");
}

// The same for the post-boot step: kills during `commit` on the trial system.
TEST_F(CrashTest, KilledAfterEveryJournalWriteOfCommit) {
  unsigned steps = 0;
  for (unsigned n = 1; n < 16; ++n) {
    SCOPED_TRACE("journal write " + std::to_string(n));
    auto d = NewDevice("commit-" + std::to_string(n));
    ASSERT_EQ(RunAgent(Args(*d, "install"), {}).code, 0);
    EXPECT_EQ(d->Boot(), "b");
    const Exit e = RunAgent(Args(*d, "commit"),
                            {"UPKEEP_KILL_AFTER_JOURNAL_WRITES_FOR_TEST=" + std::to_string(n)});
    ExpectSafe(*d, "after the kill");
    FinishUpdate(*d);
    if (!e.killed) {
      EXPECT_EQ(e.code, 0);
      break;
    }
    ++steps;
  }
  EXPECT_GE(steps, 2u);  // trial recorded, committed
}

// Random kill points: at random image offsets (the agent stops itself after the chunk that
// crosses the offset) and at random moments (killed from outside, anywhere: mid-write,
// mid-journal, mid-switch). Some devices also lose power before restarting. UPKEEP_CRASH_POINTS
// sets the count (default 20; the `slow` label runs 200).
TEST_F(CrashTest, RandomKillPoints) {
  int points = 20;
  if (const char* env = std::getenv("UPKEEP_CRASH_POINTS")) points = std::atoi(env);
  std::mt19937 rng(20261123);
  int killed = 0;
  for (int i = 0; i < points; ++i) {
    SCOPED_TRACE("kill point " + std::to_string(i));
    auto d = NewDevice("random-" + std::to_string(i));
    Exit e;
    if (i % 2 == 0) {
      const auto offset = std::uniform_int_distribution<std::size_t>(0, kImageSize - 1)(rng);
      e = RunAgent(Args(*d, "install"),
                   {"UPKEEP_KILL_AT_IMAGE_BYTE_FOR_TEST=" + std::to_string(offset)});
    } else {
      const auto delay = std::chrono::microseconds(
          std::uniform_int_distribution<int>(0, 120'000)(rng));
      e = RunAgent(Args(*d, "install"), {}, delay);
    }
    if (e.killed) ++killed;
    ExpectSafe(*d, "after the kill");
    if (rng() % 3 == 0) {
      d->Boot();  // power cut before the restart
      ExpectSafe(*d, "after power-on");
    }
    FinishUpdate(*d);
  }
  EXPECT_GT(killed, points / 3);
}

// --- Module installs ------------------------------------------------------------------------

// A device whose component "app" (the shipped file module, dest app.conf) runs version 1; the
// releases 1, 2 and 3 are signed, each in a bundle of its own.
class ModuleCrashTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new testing::TempDir();
    repo_ = new ReleaseRepo(tmp_->path() / "release");
    for (int v = 1; v <= 3; ++v) {
      repo_->AddFile(Target(v), Content(v), metadata::Component::Application, std::to_string(v),
                     static_cast<std::uint64_t>(v));
    }
    repo_->Publish();
  }
  static void TearDownTestSuite() {
    delete repo_;
    delete tmp_;
  }
  static std::string Target(int v) { return "app/app-" + std::to_string(v) + ".conf"; }
  static std::string Content(int v) { return "setting=" + std::to_string(v) + "\n"; }
  static fs::path BundleOf(int v) {
    const fs::path b = tmp_->path() / "release" / ("app-" + std::to_string(v) + ".upkb");
    if (!fs::exists(b)) repo_->BundleTargets({Target(v)}, b.filename().string());
    return b;
  }
  static fs::path Dest(const SimulatedDevice& d) { return d.dir() / "app.conf"; }

  // `command` replaces the module's command (a wrapper around the shipped module).
  std::unique_ptr<SimulatedDevice> NewDevice(const std::string& name,
                                             std::vector<std::string> command = {}) {
    auto d = std::make_unique<SimulatedDevice>(tmp_->path() / name, repo_->root_path(),
                                               MakeImage(4096, 3));
    ModuleConfig module;
    module.command = {UPKEEP_MODULE_BIN, "file"};
    module.args_json = metadata::Json{{"dest", Dest(*d).string()}}.dump();
    module.target_namespace = "app/";  // written out explicitly: agent.toml is read back
    d->config.components["app"] = module;
    d->Boot();
    auto first = d->Agent().Install(BundleOf(1).string(), Target(1));
    EXPECT_TRUE(first.has_value()) << first.error().ToString();
    if (!command.empty()) d->config.components["app"].command = std::move(command);
    testing::WriteBytes(d->dir() / "agent.toml", DumpConfig(d->config));
    return d;
  }
  static std::vector<std::string> Args(const SimulatedDevice& d, const std::string& command,
                                       int version = 0) {
    std::vector<std::string> a = {"-c", (d.dir() / "agent.toml").string(), command};
    if (command == "install") a.push_back(BundleOf(version).string());
    return a;
  }

  // Right after a kill: the journal loads; a settled journal agrees with the file; an install
  // in progress is one of the module states and the journal still records version 1.
  static void ExpectConsistent(SimulatedDevice& d, const std::string& where) {
    SCOPED_TRACE(where);
    auto state = d.Agent().store().Load();
    ASSERT_TRUE(state.has_value()) << "journal: " << state.error().ToString();
    ASSERT_TRUE(state->components.contains("app"));
    const std::string recorded = state->components.at("app").version;
    if (state->update) {
      EXPECT_TRUE(IsModuleState(state->update->state)) << ToString(state->update->state);
      EXPECT_EQ(recorded, "1");
    } else {
      EXPECT_EQ(testing::ReadFileOrEmpty(Dest(d)), Content(std::stoi(recorded)));
    }
  }

  // After the agent ran again (status): settled at version 1 (rolled back) or 2 (committed),
  // file and journal agreeing. Returns the version.
  static int ExpectSettled(SimulatedDevice& d, const std::string& where) {
    SCOPED_TRACE(where);
    auto state = d.Agent().store().Load();
    EXPECT_TRUE(state.has_value());
    if (!state) return 0;
    EXPECT_FALSE(state->update.has_value());
    const std::string recorded = state->components.at("app").version;
    EXPECT_TRUE(recorded == "1" || recorded == "2") << recorded;
    EXPECT_EQ(testing::ReadFileOrEmpty(Dest(d)), Content(recorded == "2" ? 2 : 1));
    EXPECT_EQ(state->security.at("app").security_version, recorded == "2" ? 2u : 1u);
    if (recorded == "1") {
      EXPECT_TRUE(state->last.has_value() && state->last->outcome == "rolled_back");
    }
    return recorded == "2" ? 2 : 1;
  }

  // Version 2 installs (or is already there), then version 3 installs: nothing is left stuck.
  static void ExpectLaterInstallsWork(SimulatedDevice& d) {
    const Exit again = RunAgent(Args(d, "install", 2), {});
    EXPECT_TRUE(again.code == 0 || again.code == 5) << "install 2 exit " << again.code;
    const Exit third = RunAgent(Args(d, "install", 3), {});
    EXPECT_EQ(third.code, 0);
    auto state = d.Agent().store().Load();
    ASSERT_TRUE(state.has_value());
    EXPECT_FALSE(state->update.has_value());
    EXPECT_EQ(state->components.at("app").version, "3");
    EXPECT_EQ(testing::ReadFileOrEmpty(Dest(d)), Content(3));
  }

  static testing::TempDir* tmp_;
  static ReleaseRepo* repo_;
};

testing::TempDir* ModuleCrashTest::tmp_ = nullptr;
ReleaseRepo* ModuleCrashTest::repo_ = nullptr;

// SIGKILL right after each journal write of a module install, then the agent runs again
// (status): the component is at version 1, rolled back, or 2, committed; never stuck.
// docs/formats/update-module.md, "Interrupted installations".
TEST_F(ModuleCrashTest, KilledAfterEveryJournalWriteOfModuleInstall) {
  unsigned steps = 0;
  std::set<int> outcomes;
  for (unsigned n = 1; n < 16; ++n) {
    SCOPED_TRACE("journal write " + std::to_string(n));
    auto d = NewDevice("module-" + std::to_string(n));
    const Exit e = RunAgent(Args(*d, "install", 2),
                            {"UPKEEP_KILL_AFTER_JOURNAL_WRITES_FOR_TEST=" + std::to_string(n)});
    ExpectConsistent(*d, "after the kill");
    EXPECT_EQ(RunAgent(Args(*d, "status"), {}).code, 0);
    outcomes.insert(ExpectSettled(*d, "after the restart"));
    ExpectLaterInstallsWork(*d);
    if (!e.killed) {
      EXPECT_EQ(e.code, 0);
      break;  // past the last journal write of the install
    }
    ++steps;
  }
  // module_installing, module_committing, idle.
  EXPECT_EQ(steps, 3u);
  EXPECT_EQ(outcomes, (std::set<int>{1, 2}));
}

// The agent killed while a module stage runs (the module kills its parent, before or after
// doing the stage's work): an interrupted Download or Install is rolled back, an interrupted
// Commit is finished.
TEST_F(ModuleCrashTest, KilledDuringEveryModuleStage) {
  struct Point {
    const char* stage;
    bool after;
    int expected;
  };
  const Point points[] = {{"Download", false, 1}, {"Download", true, 1}, {"Install", false, 1},
                          {"Install", true, 1},   {"Commit", false, 2},  {"Commit", true, 2}};
  for (const Point& p : points) {
    const std::string name = std::string("stage-") + p.stage + (p.after ? "-after" : "-before");
    SCOPED_TRACE(name);
    const fs::path dir = tmp_->path() / name;
    fs::create_directories(dir);
    const fs::path marker = dir / "killed-once";
    const fs::path script = dir / "module.sh";
    const std::string real = std::string(UPKEEP_MODULE_BIN) + " file \"$@\"";
    testing::WriteBytes(script, "#!/bin/sh\nif [ \"$1\" = " + std::string(p.stage) +
                                    " ] && [ ! -e " + marker.string() + " ]; then\n  : > " +
                                    marker.string() + "\n" +
                                    (p.after ? "  " + real + " || exit 1\n" : std::string()) +
                                    "  kill -9 $PPID\n  exit 0\nfi\nexec " + real + "\n");
    fs::permissions(script, fs::perms(0755));
    auto d = NewDevice(name + "-device", {script.string()});
    const Exit e = RunAgent(Args(*d, "install", 2), {});
    EXPECT_TRUE(e.killed);
    ASSERT_TRUE(fs::exists(marker));
    ExpectConsistent(*d, "after the kill");
    EXPECT_EQ(RunAgent(Args(*d, "status"), {}).code, 0);
    EXPECT_EQ(ExpectSettled(*d, "after the restart"), p.expected);
    ExpectLaterInstallsWork(*d);
  }
}

}  // namespace
}  // namespace upkeep::agent
