// Boot switching: trial boots with boot counting, commit, revert, the firmware's fallback, and the
// environment formats (plain file, GRUB's environment block).

#include "upkeep/install/bootloader.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/install/payload.hpp"

namespace upkeep::install {
namespace {

namespace fs = std::filesystem;

std::string Capture(const std::string& command) {
  std::string out;
  if (FILE* p = ::popen(command.c_str(), "r")) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
    ::pclose(p);
  }
  return out;
}

class BootloaderTest : public ::testing::TestWithParam<const char*> {
 protected:
  std::unique_ptr<BootEnv> MakeEnv() {
    return std::string(GetParam()) == "grub" ? MakeGrubEnv(tmp_ / "grubenv")
                                             : MakeFileBootEnv(tmp_ / "bootenv");
  }
  Bootloader Make() {
    auto env = MakeEnv();
    EXPECT_TRUE(env->Write({{"upkeep_slot", "a"}}).has_value());
    return Bootloader(std::move(env), BootloaderOptions{});
  }
  testing::TempDir tmp_;
};

TEST_P(BootloaderTest, TrialBootThenCommitKeepsNewSlot) {
  auto boot = Make();
  ASSERT_TRUE(boot.StartTrial("b", "id-1").has_value());
  auto s = boot.Status();
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->slot, "b");
  EXPECT_TRUE(s->trial);
  EXPECT_EQ(s->boot_limit, 3u);
  EXPECT_EQ(boot.TrialUpdateId().value_or(""), "id-1");
  auto env = MakeEnv();
  EXPECT_EQ(SimulateFirmwareBoot(*env, BootloaderOptions{}).value_or(""), "b");
  EXPECT_EQ(boot.Status()->boot_count, 1u);
  ASSERT_TRUE(boot.Commit().has_value());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(SimulateFirmwareBoot(*env, BootloaderOptions{}).value_or(""), "b");
  EXPECT_FALSE(boot.Status()->trial);
}

// The firmware falls back to the other slot once bootlimit trial boots went by uncommitted.
TEST_P(BootloaderTest, FirmwareFallsBackAfterBootLimit) {
  auto boot = Make();
  ASSERT_TRUE(boot.StartTrial("b", "id-2").has_value());
  auto env = MakeEnv();
  for (unsigned i = 1; i <= 3; ++i) {
    EXPECT_EQ(SimulateFirmwareBoot(*env, BootloaderOptions{}).value_or(""), "b");
    EXPECT_EQ(boot.Status()->boot_count, i);
  }
  EXPECT_EQ(SimulateFirmwareBoot(*env, BootloaderOptions{}).value_or(""), "a");
  auto s = boot.Status();
  EXPECT_EQ(s->slot, "a");
  EXPECT_FALSE(s->trial);
  // The marker stays: the agent can tell the trial happened.
  EXPECT_EQ(boot.TrialUpdateId().value_or(""), "id-2");
}

TEST_P(BootloaderTest, RevertReturnsToOldSlotWithoutTrial) {
  auto boot = Make();
  ASSERT_TRUE(boot.StartTrial("b", "id-3").has_value());
  ASSERT_TRUE(boot.Revert("a").has_value());
  auto env = MakeEnv();
  EXPECT_EQ(SimulateFirmwareBoot(*env, BootloaderOptions{}).value_or(""), "a");
  EXPECT_FALSE(boot.Status()->trial);
}

TEST_P(BootloaderTest, RejectsUnknownSlotsAndValues) {
  auto boot = Make();
  EXPECT_ERRC(boot.StartTrial("c", "x"), Errc::BootEnvInvalid);
  EXPECT_ERRC(boot.Revert("../a"), Errc::BootEnvInvalid);
  auto env = MakeEnv();
  EXPECT_ERRC(env->Write({{"bad name", "1"}}), Errc::BootEnvInvalid);
  EXPECT_ERRC(env->Write({{"x", "line\nbreak"}}), Errc::BootEnvInvalid);
  ASSERT_TRUE(env->Write({{"upkeep_slot", "z"}}).has_value());
  EXPECT_ERRC(boot.Status(), Errc::BootEnvInvalid);
  EXPECT_ERRC(SimulateFirmwareBoot(*env, BootloaderOptions{}), Errc::BootEnvInvalid);
}

INSTANTIATE_TEST_SUITE_P(Envs, BootloaderTest, ::testing::Values("file", "grub"));

TEST(GrubEnvTest, WritesTheBlockGrubReads) {
  testing::TempDir tmp;
  auto env = MakeGrubEnv(tmp / "grubenv");
  ASSERT_TRUE(env->Write({{"upkeep_slot", "b"}, {"upgrade_available", "1"}}).has_value());
  const std::string block = testing::ReadFileOrEmpty(tmp / "grubenv");
  ASSERT_EQ(block.size(), 1024u);
  EXPECT_TRUE(block.starts_with("# GRUB Environment Block\n"));
  EXPECT_EQ(block.back(), '#');
  if (std::system("command -v grub-editenv >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "grub-editenv not installed";
  }
  const std::string listed = Capture("grub-editenv " + (tmp / "grubenv").string() + " list");
  EXPECT_NE(listed.find("upkeep_slot=b"), std::string::npos) << listed;
  ASSERT_EQ(std::system(("grub-editenv " + (tmp / "grubenv").string() + " set bootcount=2").c_str()), 0);
  auto vars = env->Read();
  ASSERT_TRUE(vars.has_value());
  EXPECT_EQ(vars->at("bootcount"), "2");
  EXPECT_EQ(vars->at("upkeep_slot"), "b");
}

TEST(GrubEnvTest, RejectsBlocksThatAreNotGrubEnvironments) {
  testing::TempDir tmp;
  std::FILE* f = std::fopen((tmp / "grubenv").c_str(), "w");
  std::fputs("upkeep_slot=a\n", f);
  std::fclose(f);
  EXPECT_ERRC(MakeGrubEnv(tmp / "grubenv")->Read(), Errc::BootEnvInvalid);
  auto env = MakeGrubEnv(tmp / "big");
  EXPECT_ERRC(env->Write({{"x", std::string(1100, 'v')}}), Errc::BootEnvInvalid);
}

TEST(UBootEnvTest, MissingConfigurationIsBootloaderFailed) {
  testing::TempDir tmp;
  EXPECT_ERRC(MakeUBootEnv(tmp / "missing.config")->Read(), Errc::BootloaderFailed);
}

TEST(CmdlineTest, FindsTheBootedSlot) {
  EXPECT_EQ(BootedSlotFromCmdline("console=ttyS0 root=/dev/mmcblk0p3 upkeep.slot=b quiet").value_or(""),
            "b");
  EXPECT_ERRC(BootedSlotFromCmdline("console=ttyS0 root=/dev/mmcblk0p3"), Errc::BootEnvInvalid);
  EXPECT_ERRC(BootedSlotFromCmdline("upkeep.slot="), Errc::BootEnvInvalid);
}

}  // namespace
}  // namespace upkeep::install
