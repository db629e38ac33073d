// Power-loss safety of the update flow: the real upkeep-agent process is killed with SIGKILL at
// every journal write, at image offsets and at random moments, then run again. After every kill,
// and after every restart, the device must be in exactly one of: old slot active, new slot on
// trial boot, new slot active and committed. It must never point the firmware at an incomplete
// image, and the journal must always load.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "simulated_device.hpp"
#include "upkeep/agent/state.hpp"

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

}  // namespace
}  // namespace upkeep::agent
