// The update flow on real block devices: A/B slots on loop devices, with the file bootloader and
// with the U-Boot environment (libubootenv, single and redundant copies) on a loop device. The
// firmware's boot counting is simulated; everything below it is the real kernel block layer.
// Needs root and free loop devices (ctest label `root`); skipped cleanly elsewhere.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "simulated_device.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "uboot_env_image.hpp"
#include "upkeep/agent/agent.hpp"
#include "upkeep/install/bootloader.hpp"
#include "upkeep/install/payload.hpp"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using testing::MakeImage;
using testing::ReleaseRepo;
using testing::ReleaseSpec;
using testing::SimulatedDevice;

constexpr std::uint64_t kSlotSize = 2 << 20;
constexpr std::size_t kImageSize = 1 << 20;
constexpr std::size_t kEnvSize = 0x4000;

std::string ShellQuote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

bool CommandExists(const std::string& name) {
  return std::system(("command -v " + name + " >/dev/null 2>&1").c_str()) == 0;
}

// Standard output of a shell command, or nullopt when it fails.
std::optional<std::string> RunCommand(const std::string& command) {
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return std::nullopt;
  std::string out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  if (::pclose(p) != 0) return std::nullopt;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// A loop device over a backing file, detached when destroyed.
class LoopDevice {
 public:
  // Attaches `backing` (created with `size` zero bytes); nullopt when no loop device is free.
  static std::optional<LoopDevice> Attach(const fs::path& backing, std::uint64_t size) {
    { std::ofstream create(backing, std::ios::binary | std::ios::trunc); }
    fs::resize_file(backing, size);
    auto dev = RunCommand("losetup -f --show " + ShellQuote(backing.string()) + " 2>/dev/null");
    if (!dev || !dev->starts_with("/dev/loop")) return std::nullopt;
    return LoopDevice(*dev);
  }
  LoopDevice(LoopDevice&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  LoopDevice& operator=(LoopDevice&&) = delete;
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  ~LoopDevice() {
    if (!path_.empty()) {
      const int rc = std::system(("losetup -d " + ShellQuote(path_.string())).c_str());
      EXPECT_EQ(rc, 0) << "cannot detach " << path_;
    }
  }
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  explicit LoopDevice(std::string path) : path_(std::move(path)) {}
  fs::path path_;
};

// Writes `bytes` at `offset` straight to a device and flushes it.
void WriteDevice(const fs::path& dev, std::uint64_t offset, const std::string& bytes) {
  const int fd = ::open(dev.c_str(), O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << dev;
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n =
        ::pwrite(fd, bytes.data() + done, bytes.size() - done, static_cast<off_t>(offset + done));
    ASSERT_GT(n, 0) << dev;
    done += static_cast<std::size_t>(n);
  }
  EXPECT_EQ(::fsync(fd), 0);
  ::close(fd);
}

// Exactly `length` bytes at `offset` of a device ("" when they cannot be read).
std::string ReadDevice(const fs::path& dev, std::uint64_t offset, std::size_t length) {
  const int fd = ::open(dev.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string out(length, '\0');
  std::size_t done = 0;
  while (done < length) {
    const ssize_t n =
        ::pread(fd, out.data() + done, length - done, static_cast<off_t>(offset + done));
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return done == length ? out : "";
}

// Two loop-device slots: slot a holds the old image and is booted with the file bootloader.
class LoopDeviceSlotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for loop devices";
    if (!CommandExists("losetup")) GTEST_SKIP() << "losetup is not installed";
    for (const char* s : {"a", "b"}) {
      auto loop = LoopDevice::Attach(tmp_ / (std::string("slot-") + s + ".img"), kSlotSize);
      if (!loop) GTEST_SKIP() << "no free loop device (losetup -f --show failed)";
      loops_.push_back(std::move(*loop));
    }
    old_image_ = MakeImage(kImageSize, 1);
    release_.image = MakeImage(kImageSize, 2);
    ASSERT_NO_FATAL_FAILURE(WriteDevice(slot_a(), 0, old_image_));
    old_slot_a_ = ReadDevice(slot_a(), 0, kSlotSize);
    ASSERT_EQ(old_slot_a_.size(), kSlotSize);

    repo_.emplace(tmp_ / "release");
    ASSERT_NO_FATAL_FAILURE(repo_->Add(release_));
    ASSERT_NO_FATAL_FAILURE(repo_->Publish());
    fs::copy_file(repo_->root_path(), tmp_ / "root.json");
    device_.emplace(tmp_ / "device", tmp_ / "root.json", "");
    device_->config.slots.a = slot_a();
    device_->config.slots.b = slot_b();
  }
  void TearDown() override { loops_.clear(); }

  [[nodiscard]] const fs::path& slot_a() const { return loops_.at(0).path(); }
  [[nodiscard]] const fs::path& slot_b() const { return loops_.at(1).path(); }
  [[nodiscard]] bool HasEvent(const std::string& id) const {
    return std::find(device_->events.begin(), device_->events.end(), id) != device_->events.end();
  }
  // Slot a's whole device is byte-identical to before the update.
  void ExpectSlotAUntouched() {
    EXPECT_TRUE(ReadDevice(slot_a(), 0, kSlotSize) == old_slot_a_) << "slot a was modified";
  }
  std::string Bundle(const ReleaseSpec& r, const std::string& name) {
    return repo_->Bundle({r}, name).string();
  }

  testing::TempDir tmp_;
  std::vector<LoopDevice> loops_;
  std::string old_image_;
  std::string old_slot_a_;
  ReleaseSpec release_;
  std::optional<ReleaseRepo> repo_;
  std::optional<SimulatedDevice> device_;
};

TEST_F(LoopDeviceSlotTest, InstallsIntoBlockDeviceSlotAndCommits) {
  device_->config.slots.read_back = true;  // the read-back drops the block device's cache
  ASSERT_EQ(device_->Boot(), "a");
  auto installed = device_->Agent().Install(Bundle(release_, "u.upkb"), std::nullopt);
  ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
  EXPECT_EQ(installed->to_slot, "b");
  EXPECT_TRUE(installed->reboot_required);
  EXPECT_EQ(installed->report.image_size, kImageSize);
  EXPECT_TRUE(ReadDevice(slot_b(), 0, kImageSize) == release_.image) << "slot b differs";
  ExpectSlotAUntouched();

  EXPECT_ERRC(device_->Agent().Commit(), Errc::NotRebooted);
  EXPECT_EQ(device_->Boot(), "b");
  auto committed = device_->Agent().Commit();
  ASSERT_TRUE(committed.has_value()) << committed.error().ToString();
  EXPECT_FALSE(committed->update.has_value());
  EXPECT_EQ(committed->last->outcome, "committed");
  EXPECT_EQ(committed->components.at("rootfs").version, "2.0");
  EXPECT_EQ(committed->components.at("rootfs").slot, "b");
  EXPECT_EQ(committed->components.at("rootfs").image_size, kImageSize);
  EXPECT_TRUE(HasEvent(install::event::kCommitted));
  EXPECT_EQ(device_->Boot(), "b");
  EXPECT_EQ(device_->Boot(), "b");
  ExpectSlotAUntouched();
}

// An image larger than the inactive block device is refused before anything is switched.
TEST_F(LoopDeviceSlotTest, RefusesImageLargerThanBlockDevice) {
  ReleaseSpec big;
  big.version = "3.0";
  big.image = MakeImage(kSlotSize + (1 << 20), 3);
  ASSERT_NO_FATAL_FAILURE(repo_->Add(big));
  ASSERT_NO_FATAL_FAILURE(repo_->Publish());
  ASSERT_EQ(device_->Boot(), "a");
  EXPECT_ERRC(device_->Agent().Install(Bundle(big, "big.upkb"), std::nullopt),
              install::Errc::SlotTooSmall);
  ExpectSlotAUntouched();
  EXPECT_TRUE(ReadDevice(slot_b(), 0, kSlotSize) == std::string(kSlotSize, '\0'))
      << "slot b was written";
  auto status = device_->Agent().Status();
  ASSERT_TRUE(status.has_value()) << status.error().ToString();
  EXPECT_FALSE(status->state.update.has_value());
  ASSERT_TRUE(status->boot.has_value()) << status->boot_error;
  EXPECT_EQ(status->boot->slot, "a");
  EXPECT_FALSE(status->boot->trial);
  EXPECT_EQ(device_->Boot(), "a");
}

// A new system on a block device that is never committed is abandoned after bootlimit trial
// boots; the device runs the untouched old slot and the agent records the rollback.
TEST_F(LoopDeviceSlotTest, BootCountExhaustionFallsBackToOldBlockDeviceSlot) {
  ASSERT_EQ(device_->Boot(), "a");
  ASSERT_TRUE(device_->Agent().Install(Bundle(release_, "u.upkb"), std::nullopt));
  for (unsigned i = 1; i <= device_->config.bootloader.boot_limit; ++i) {
    EXPECT_EQ(device_->Boot(), "b") << "trial boot " << i;
  }
  EXPECT_EQ(device_->Boot(), "a");
  auto state = device_->Agent().Reconcile();
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  EXPECT_FALSE(state->update.has_value());
  EXPECT_EQ(state->last->outcome, "rolled_back");
  EXPECT_TRUE(HasEvent(install::event::kRolledBack));
  EXPECT_EQ(device_->Boot(), "a");
  ExpectSlotAUntouched();
}

// The same slots, with the U-Boot environment on a third loop device read and written through
// libubootenv. Real U-Boot does not run here: Boot() does what its boot script does.
class UBootEnvTest : public LoopDeviceSlotTest {
 protected:
  virtual bool redundant() const { return false; }

  void SetUp() override {
    LoopDeviceSlotTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto loop = LoopDevice::Attach(tmp_ / "env.img", 2 * kEnvSize);
    if (!loop) GTEST_SKIP() << "no free loop device for the environment";
    loops_.push_back(std::move(*loop));
    const std::vector<std::pair<std::string, std::string>> vars = {
        {"bootcmd", "run upkeep_boot"}, {"bootdelay", "0"}, {"upkeep_slot", "a"}};
    if (redundant()) {
      ASSERT_NO_FATAL_FAILURE(
          WriteDevice(env_dev(), 0, testing::MakeUBootEnvImage(vars, kEnvSize, 1)));
      ASSERT_NO_FATAL_FAILURE(
          WriteDevice(env_dev(), kEnvSize, testing::MakeUBootEnvImage(vars, kEnvSize, 0)));
    } else {
      ASSERT_NO_FATAL_FAILURE(
          WriteDevice(env_dev(), 0, testing::MakeUBootEnvImage(vars, kEnvSize, std::nullopt)));
    }
    std::string config = env_dev().string() + " 0x0 0x4000\n";
    if (redundant()) config += env_dev().string() + " 0x4000 0x4000\n";
    testing::WriteBytes(fw_env_config(), config);
    device_->config.bootloader.type = "uboot";
    device_->config.bootloader.env = fw_env_config();
  }

  [[nodiscard]] const fs::path& env_dev() const { return loops_.at(2).path(); }
  [[nodiscard]] fs::path fw_env_config() const { return tmp_ / "fw_env.config"; }

  // Power on: U-Boot's boot counting picks the slot, the kernel gets `upkeep.slot=` and a new
  // boot ID (what Agent::SimulateBoot writes for the file bootloader).
  std::string Boot() {
    const auto& c = device_->config.bootloader;
    install::BootloaderOptions o;
    o.slot_variable = c.slot_variable;
    o.boot_limit = c.boot_limit;
    auto env = install::MakeUBootEnv(c.env);
    auto slot = install::SimulateFirmwareBoot(*env, o);
    EXPECT_TRUE(slot.has_value()) << slot.error().ToString();
    if (!slot) return "";
    const fs::path dev = *slot == "a" ? slot_a() : slot_b();
    testing::WriteBytes(c.cmdline, "root=" + dev.string() + " upkeep.slot=" + *slot + "\n");
    testing::WriteBytes(c.boot_id, std::to_string(rng_()) + "-" + std::to_string(rng_()) + "\n");
    return *slot;
  }
  // The environment as libubootenv reads it.
  install::BootVars Env() {
    auto vars = install::MakeUBootEnv(fw_env_config())->Read();
    EXPECT_TRUE(vars.has_value()) << vars.error().ToString();
    return vars.value_or(install::BootVars{});
  }
  // A variable as the fw_printenv tool prints it; nullopt when the tool is not installed.
  std::optional<std::string> FwPrintenv(const std::string& name) {
    if (!CommandExists("fw_printenv")) return std::nullopt;
    auto out = RunCommand("fw_printenv -c " + ShellQuote(fw_env_config().string()) + " " +
                          ShellQuote(name) + " 2>&1");
    EXPECT_TRUE(out.has_value()) << "fw_printenv failed for " << name;
    return out.value_or("");
  }

  std::mt19937_64 rng_{std::random_device{}()};
};

TEST_F(UBootEnvTest, InstallsTrialBootsAndCommitsThroughUBootEnv) {
  ASSERT_EQ(Boot(), "a");
  auto installed = device_->Agent().Install(Bundle(release_, "u.upkb"), std::nullopt);
  ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
  EXPECT_TRUE(ReadDevice(slot_b(), 0, kImageSize) == release_.image) << "slot b differs";
  auto env = Env();
  EXPECT_EQ(env["upkeep_slot"], "b");
  EXPECT_EQ(env["upgrade_available"], "1");
  EXPECT_EQ(env["bootcount"], "0");
  EXPECT_EQ(env["bootlimit"], "3");
  EXPECT_FALSE(env["upkeep_update"].empty());
  EXPECT_EQ(env["bootcmd"], "run upkeep_boot");  // the firmware's own variables survive
  if (auto printed = FwPrintenv("upkeep_slot")) {
    EXPECT_EQ(*printed, "upkeep_slot=b");
  }

  EXPECT_ERRC(device_->Agent().Commit(), Errc::NotRebooted);
  EXPECT_EQ(Boot(), "b");
  EXPECT_EQ(Env()["bootcount"], "1");
  auto committed = device_->Agent().Commit();
  ASSERT_TRUE(committed.has_value()) << committed.error().ToString();
  EXPECT_FALSE(committed->update.has_value());
  EXPECT_EQ(committed->last->outcome, "committed");
  EXPECT_EQ(committed->components.at("rootfs").slot, "b");
  env = Env();
  EXPECT_EQ(env["upkeep_slot"], "b");
  EXPECT_EQ(env["upgrade_available"], "0");
  EXPECT_EQ(env["bootcount"], "0");
  if (auto printed = FwPrintenv("upgrade_available")) {
    EXPECT_EQ(*printed, "upgrade_available=0");
  }

  // Committed: the firmware keeps booting b without counting.
  EXPECT_EQ(Boot(), "b");
  EXPECT_EQ(Boot(), "b");
  EXPECT_EQ(Env()["bootcount"], "0");
  ExpectSlotAUntouched();
}

// A new system that never commits is abandoned by U-Boot's boot counting after bootlimit trial
// boots; the agent records the rollback and the old slot's bytes are untouched.
TEST_F(UBootEnvTest, BootCountsDownToRollback) {
  ASSERT_EQ(Boot(), "a");
  ASSERT_TRUE(device_->Agent().Install(Bundle(release_, "u.upkb"), std::nullopt));
  const unsigned limit = device_->config.bootloader.boot_limit;
  for (unsigned i = 1; i <= limit; ++i) {
    EXPECT_EQ(Boot(), "b") << "trial boot " << i;
    auto env = Env();
    EXPECT_EQ(env["upkeep_slot"], "b");
    EXPECT_EQ(env["upgrade_available"], "1");
    EXPECT_EQ(env["bootcount"], std::to_string(i));
    if (auto printed = FwPrintenv("bootcount")) {
      EXPECT_EQ(*printed, "bootcount=" + std::to_string(i));
    }
  }
  EXPECT_EQ(Boot(), "a");
  auto env = Env();
  EXPECT_EQ(env["upkeep_slot"], "a");
  EXPECT_EQ(env["upgrade_available"], "0");
  if (auto printed = FwPrintenv("upkeep_slot")) {
    EXPECT_EQ(*printed, "upkeep_slot=a");
  }

  auto state = device_->Agent().Reconcile();
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  EXPECT_FALSE(state->update.has_value());
  ASSERT_TRUE(state->last.has_value());
  EXPECT_EQ(state->last->outcome, "rolled_back");
  EXPECT_FALSE(state->components.contains("rootfs"));
  EXPECT_TRUE(HasEvent(install::event::kRolledBack));
  EXPECT_EQ(Boot(), "a");
  ExpectSlotAUntouched();
}

// The U-Boot environment with a redundant copy (two fw_env.config lines).
class UBootRedundantEnvTest : public UBootEnvTest {
 protected:
  bool redundant() const override { return true; }
  // Both copies as they are on the device (nullopt for a copy with a bad CRC).
  std::pair<std::optional<testing::UBootEnvCopy>, std::optional<testing::UBootEnvCopy>> Copies() {
    return {testing::ParseUBootEnvImage(ReadDevice(env_dev(), 0, kEnvSize), true),
            testing::ParseUBootEnvImage(ReadDevice(env_dev(), kEnvSize, kEnvSize), true)};
  }
};

// Every store goes to the inactive copy: after the switch one copy still holds the old
// environment, so a power cut during the write leaves a bootable one.
TEST_F(UBootRedundantEnvTest, SwitchWritesInactiveCopyAndCommits) {
  ASSERT_EQ(Boot(), "a");
  auto installed = device_->Agent().Install(Bundle(release_, "u.upkb"), std::nullopt);
  ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
  EXPECT_EQ(Env()["upkeep_slot"], "b");
  EXPECT_EQ(Env()["upgrade_available"], "1");
  auto [first, second] = Copies();
  ASSERT_TRUE(first.has_value()) << "copy 1 has a bad CRC";
  ASSERT_TRUE(second.has_value()) << "copy 2 has a bad CRC";
  EXPECT_NE(first->flag, second->flag);
  // One copy is the trial, the other the environment before it.
  EXPECT_NE(first->vars["upgrade_available"], second->vars["upgrade_available"]);
  if (auto printed = FwPrintenv("upkeep_slot")) {
    EXPECT_EQ(*printed, "upkeep_slot=b");
  }

  EXPECT_EQ(Boot(), "b");
  auto committed = device_->Agent().Commit();
  ASSERT_TRUE(committed.has_value()) << committed.error().ToString();
  EXPECT_EQ(committed->last->outcome, "committed");
  EXPECT_EQ(Env()["upgrade_available"], "0");
  EXPECT_EQ(Boot(), "b");
  ExpectSlotAUntouched();
}

// With a redundant environment too, exhausted trial boots fall back to slot a.
TEST_F(UBootRedundantEnvTest, BootCountsDownToRollback) {
  ASSERT_EQ(Boot(), "a");
  ASSERT_TRUE(device_->Agent().Install(Bundle(release_, "u.upkb"), std::nullopt));
  for (unsigned i = 1; i <= device_->config.bootloader.boot_limit; ++i) {
    EXPECT_EQ(Boot(), "b") << "trial boot " << i;
    EXPECT_EQ(Env()["bootcount"], std::to_string(i));
  }
  EXPECT_EQ(Boot(), "a");
  auto state = device_->Agent().Reconcile();
  ASSERT_TRUE(state.has_value()) << state.error().ToString();
  EXPECT_FALSE(state->update.has_value());
  ASSERT_TRUE(state->last.has_value());
  EXPECT_EQ(state->last->outcome, "rolled_back");
  ExpectSlotAUntouched();
}

}  // namespace
}  // namespace upkeep::agent
