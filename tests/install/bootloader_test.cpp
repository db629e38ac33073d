// Boot switching: trial boots with boot counting, commit, revert, the firmware's fallback, and the
// environment formats (plain file, GRUB's environment block).

#include "upkeep/install/bootloader.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <map>

#include "temp_dir.hpp"
#include "test_util.hpp"
#include "uboot_env_image.hpp"
#include "upkeep/common/errc.hpp"
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

// The same boot-counting contract over each environment format: a plain file, GRUB's block, and
// U-Boot's environment (through libubootenv, here on a file: an empty environment of 16 KiB as
// U-Boot would have written it, with a redundant copy).
class BootloaderTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (std::string(GetParam()) == "uboot") {
      const std::string copy = testing::MakeUBootEnvImage({{"bootdelay", "2"}}, 0x4000, 1);
      const std::string older = testing::MakeUBootEnvImage({{"bootdelay", "2"}}, 0x4000, 0);
      std::FILE* f = std::fopen((tmp_ / "uboot.env").c_str(), "wb");
      std::fwrite(copy.data(), 1, copy.size(), f);
      std::fwrite(older.data(), 1, older.size(), f);
      std::fclose(f);
      f = std::fopen((tmp_ / "fw_env.config").c_str(), "w");
      std::fprintf(f, "%s 0x0 0x4000\n%s 0x4000 0x4000\n", (tmp_ / "uboot.env").c_str(),
                   (tmp_ / "uboot.env").c_str());
      std::fclose(f);
    }
  }
  std::unique_ptr<BootEnv> MakeEnv() {
    const std::string kind = GetParam();
    if (kind == "grub") return MakeGrubEnv(tmp_ / "grubenv");
    if (kind == "uboot") return MakeUBootEnv(tmp_ / "fw_env.config");
    return MakeFileBootEnv(tmp_ / "bootenv");
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
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(SimulateFirmwareBoot(*env, BootloaderOptions{}).value_or(""), "b");
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

INSTANTIATE_TEST_SUITE_P(Envs, BootloaderTest, ::testing::Values("file", "grub", "uboot"));

// libubootenv keeps what U-Boot put in the environment and only changes upkeep's variables.
TEST(UBootEnvTest, KeepsFirmwareVariables) {
  testing::TempDir tmp;
  const std::string image =
      testing::MakeUBootEnvImage({{"bootcmd", "run upkeep_boot"}}, 0x2000, std::nullopt);
  std::FILE* f = std::fopen((tmp / "uboot.env").c_str(), "wb");
  std::fwrite(image.data(), 1, image.size(), f);
  std::fclose(f);
  f = std::fopen((tmp / "fw_env.config").c_str(), "w");
  std::fprintf(f, "%s 0x0 0x2000\n", (tmp / "uboot.env").c_str());
  std::fclose(f);
  auto env = MakeUBootEnv(tmp / "fw_env.config");
  ASSERT_TRUE(env->Write({{"upkeep_slot", "b"}, {"upgrade_available", "1"}}).has_value());
  auto vars = env->Read();
  ASSERT_TRUE(vars.has_value()) << vars.error().ToString();
  EXPECT_EQ(vars->at("bootcmd"), "run upkeep_boot");
  EXPECT_EQ(vars->at("upkeep_slot"), "b");
  // A corrupted environment (bad CRC) is an error, not an empty environment.
  f = std::fopen((tmp / "uboot.env").c_str(), "r+b");
  std::fseek(f, 10, SEEK_SET);
  std::fputc('X', f);
  std::fclose(f);
  EXPECT_ERRC(MakeUBootEnv(tmp / "fw_env.config")->Read(), Errc::BootloaderFailed);
}

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
  ASSERT_EQ(
      std::system(("grub-editenv " + (tmp / "grubenv").string() + " set bootcount=2").c_str()), 0);
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
  EXPECT_EQ(
      BootedSlotFromCmdline("console=ttyS0 root=/dev/mmcblk0p3 upkeep.slot=b quiet").value_or(""),
      "b");
  EXPECT_ERRC(BootedSlotFromCmdline("console=ttyS0 root=/dev/mmcblk0p3"), Errc::BootEnvInvalid);
  EXPECT_ERRC(BootedSlotFromCmdline("upkeep.slot="), Errc::BootEnvInvalid);
}

}  // namespace
}  // namespace upkeep::install

namespace upkeep::install {
namespace {

// Files kept in memory: shows which file system an environment goes through.
class MemoryFilesystem final : public Filesystem {
 public:
  Result<std::string> ReadFile(const fs::path& path, std::uint64_t max_bytes) const override {
    auto it = files.find(path);
    if (it == files.end()) return Error(common::Errc::FileNotFound, path.string());
    if (it->second.size() > max_bytes) return Error(common::Errc::FileTooLarge, path.string());
    return it->second;
  }
  Result<void> WriteFileAtomic(const fs::path& path, std::string_view content,
                               Durability) override {
    files[path] = std::string(content);
    return Ok();
  }
  Result<void> SyncDirectory(const fs::path&) override { return Ok(); }
  Result<std::unique_ptr<AtomicFile>> CreateAtomic(const fs::path& path) override {
    return Error(common::Errc::InvalidArgument, path.string());
  }
  Result<void> ReadChunks(const fs::path& path, const ChunkSink& sink) const override {
    UPKEEP_ASSIGN_OR_RETURN(const std::string text, ReadFile(path, ~0ull));
    return sink(std::span<const char>(text.data(), text.size()));
  }
  Result<bool> Exists(const fs::path& path) const override { return files.contains(path); }
  Result<void> Remove(const fs::path& path) override {
    files.erase(path);
    return Ok();
  }
  Result<void> CreateDirectories(const fs::path&) override { return Ok(); }
  Result<void> AppendFile(const fs::path& path, std::string_view data) override {
    files[path].append(data);
    return Ok();
  }
  Result<std::uint64_t> FileSize(const fs::path& path) const override {
    UPKEEP_ASSIGN_OR_RETURN(const std::string text, ReadFile(path, ~0ull));
    return text.size();
  }
  Result<std::vector<std::string>> ListDirectory(const fs::path& dir) const override {
    std::vector<std::string> names;
    for (const auto& [path, _] : files) {
      if (path.parent_path() == dir) names.push_back(path.filename().string());
    }
    return names;
  }
  Result<void> Rename(const fs::path& from, const fs::path& to) override {
    UPKEEP_ASSIGN_OR_RETURN(std::string text, ReadFile(from, ~0ull));
    files.erase(from);
    files[to] = std::move(text);
    return Ok();
  }
  std::map<fs::path, std::string> files;
};

// The file and GRUB environments read and write through the file system they are given.
TEST(BootEnvFilesystemTest, TextEnvironmentsUseTheGivenFilesystem) {
  testing::TempDir tmp;
  MemoryFilesystem memory;
  Bootloader file(MakeFileBootEnv(tmp / "bootenv", memory), BootloaderOptions{});
  Bootloader grub(MakeGrubEnv(tmp / "grubenv", memory), BootloaderOptions{});
  for (Bootloader* b : {&file, &grub}) {
    ASSERT_TRUE(b->Revert("a").has_value());
    ASSERT_TRUE(b->StartTrial("b", "u1").has_value());
    auto status = b->Status();
    ASSERT_TRUE(status.has_value()) << status.error().ToString();
    EXPECT_EQ(status->slot, "b");
    EXPECT_TRUE(status->trial);
  }
  EXPECT_TRUE(memory.files.contains(tmp / "bootenv"));
  EXPECT_EQ(memory.files.at(tmp / "grubenv").size(), 1024u);
  EXPECT_FALSE(fs::exists(tmp / "bootenv"));
  EXPECT_FALSE(fs::exists(tmp / "grubenv"));
}

}  // namespace
}  // namespace upkeep::install
