#include <sys/stat.h>

#include "module_test_util.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/modules/module.hpp"

namespace upkeep::modules {
namespace {

namespace fs = std::filesystem;
using testing::ReadFileOrEmpty;
using testing::ShippedModule;
using testing::TempDir;
using testing::WriteTextFile;

struct FileFixture {
  TempDir tmp;
  fs::path dest = tmp / "etc" / "app.conf";
  fs::path work;

  explicit FileFixture(const std::string& extra_args = "") {
    WriteTextFile(tmp / "artifact" / "app.conf", "new content\n");
    work = testing::MakeWorkDir(tmp / "work",
                                R"({"dest": ")" + dest.string() + "\"" + extra_args + "}",
                                {tmp / "artifact" / "app.conf"});
  }
  Result<StageResult> Run(Stage stage) const {
    return RunStage(ShippedModule("file"), stage, work);
  }
};

unsigned Mode(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

// Only dest itself is in its directory: no temporary file is left behind.
void ExpectNoLeftovers(const fs::path& dest) {
  for (const auto& e : fs::directory_iterator(dest.parent_path())) {
    EXPECT_EQ(e.path(), dest) << "leftover " << e.path();
  }
}

TEST(FileModuleTest, ReplacesAtomicallyAndRollsBack) {
  FileFixture f;
  WriteTextFile(f.dest, "old content\n", fs::perms(0640));
  auto install = f.Run(Stage::Install);
  ASSERT_TRUE(install) << install.error().ToString();
  EXPECT_EQ(ReadFileOrEmpty(f.dest), "new content\n");
  EXPECT_EQ(Mode(f.dest), 0640u) << "the previous mode is kept";
  ExpectNoLeftovers(f.dest);

  auto rollback = f.Run(Stage::Rollback);
  ASSERT_TRUE(rollback) << rollback.error().ToString();
  EXPECT_EQ(ReadFileOrEmpty(f.dest), "old content\n");
  EXPECT_EQ(Mode(f.dest), 0640u);
  ExpectNoLeftovers(f.dest);
  // Rollback is idempotent.
  ASSERT_TRUE(f.Run(Stage::Rollback));
  EXPECT_EQ(ReadFileOrEmpty(f.dest), "old content\n");
}

TEST(FileModuleTest, InstallComponentCommitsAndDropsBackup) {
  FileFixture f;
  WriteTextFile(f.dest, "old content\n");
  auto r = InstallComponent(ShippedModule("file"), f.work);
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(ReadFileOrEmpty(f.dest), "new content\n");
  EXPECT_FALSE(fs::exists(f.work / "file.backup"));
  // After Commit there is nothing left to roll back to.
  ASSERT_TRUE(f.Run(Stage::Rollback));
  EXPECT_EQ(ReadFileOrEmpty(f.dest), "new content\n");
}

TEST(FileModuleTest, FailedCommitRestoresPreviousFile) {
  FileFixture f;
  WriteTextFile(f.dest, "old content\n");
  auto r = InstallComponent(testing::FailingAt(f.tmp.path(), "file", "Commit"), f.work);
  EXPECT_ERRC(r, Errc::RolledBack);
  EXPECT_NE(r.error().message().find("forced failure"), std::string::npos);
  EXPECT_EQ(ReadFileOrEmpty(f.dest), "old content\n");
  ExpectNoLeftovers(f.dest);
}

TEST(FileModuleTest, RollbackRemovesFileThatDidNotExist) {
  FileFixture f;
  fs::create_directories(f.dest.parent_path());
  ASSERT_TRUE(f.Run(Stage::Install));
  EXPECT_EQ(ReadFileOrEmpty(f.dest), "new content\n");
  EXPECT_EQ(Mode(f.dest), 0644u);
  ASSERT_TRUE(f.Run(Stage::Rollback));
  EXPECT_FALSE(fs::exists(f.dest));
}

// Install run twice (a retry after a crash) must not back up the new content.
TEST(FileModuleTest, InstallTwiceKeepsTheOriginalBackup) {
  FileFixture f;
  WriteTextFile(f.dest, "old content\n");
  ASSERT_TRUE(f.Run(Stage::Install));
  ASSERT_TRUE(f.Run(Stage::Install));
  EXPECT_EQ(ReadFileOrEmpty(f.dest), "new content\n");
  ASSERT_TRUE(f.Run(Stage::Rollback));
  EXPECT_EQ(ReadFileOrEmpty(f.dest), "old content\n");
}

// A crash after the backup and during the write of the temporary file: Rollback restores.
TEST(FileModuleTest, RollbackAfterCrashDuringInstall) {
  FileFixture f;
  WriteTextFile(f.dest, "old content\n");
  WriteTextFile(f.work / "file.backup", "old content\n");
  WriteTextFile(f.dest.parent_path() / ".app.conf.upkeep-tmp-Xy12Zw", "new cont");
  ASSERT_TRUE(f.Run(Stage::Rollback));
  EXPECT_EQ(ReadFileOrEmpty(f.dest), "old content\n");
  ExpectNoLeftovers(f.dest);
}

// A link planted at the temporary name earlier versions used (".NAME.upkeep-tmp" next to
// dest) does not redirect the write: the file it points to keeps its content, and Cleanup
// removes the link.
TEST(FileModuleTest, PlantedLinkAtOldTemporaryNameRedirectsNothing) {
  FileFixture f;
  WriteTextFile(f.dest, "old content\n");
  TempDir outside;
  WriteTextFile(outside / "victim", "precious\n");
  const fs::path planted = f.dest.parent_path() / ".app.conf.upkeep-tmp";
  fs::create_symlink(outside / "victim", planted);
  auto r = InstallComponent(ShippedModule("file"), f.work);
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(ReadFileOrEmpty(f.dest), "new content\n");
  EXPECT_EQ(ReadFileOrEmpty(outside / "victim"), "precious\n");
  EXPECT_FALSE(fs::exists(fs::symlink_status(planted)));
  ExpectNoLeftovers(f.dest);
}

// A link planted at WORKDIR/tmp is removed at Cleanup, not followed: the directory it points
// to is not emptied.
TEST(FileModuleTest, CleanupDoesNotEmptyDirectoryBehindLinkedTmp) {
  FileFixture f;
  TempDir outside;
  WriteTextFile(outside / "precious", "keep");
  fs::remove(f.work / "tmp");
  fs::create_directory_symlink(outside.path(), f.work / "tmp");
  ASSERT_TRUE(f.Run(Stage::Cleanup));
  EXPECT_EQ(ReadFileOrEmpty(outside / "precious"), "keep");
  EXPECT_FALSE(fs::is_symlink(f.work / "tmp"));
  EXPECT_TRUE(fs::is_directory(f.work / "tmp"));
}

TEST(FileModuleTest, AppliesModeFromModuleArgs) {
  FileFixture f(R"(, "mode": "0600")");
  WriteTextFile(f.dest, "old content\n", fs::perms(0644));
  ASSERT_TRUE(f.Run(Stage::Install));
  EXPECT_EQ(Mode(f.dest), 0600u);
}

TEST(FileModuleTest, RejectsBadModuleArgs) {
  for (const char* args : {R"({"dest": "relative/path"})", R"({"dest": "/a/../b"})", R"({})",
                           R"({"dest": "/x", "mode": "rw"})", R"({"dest": "/x", "typo": 1})"}) {
    TempDir tmp;
    WriteTextFile(tmp / "a" / "f", "x");
    auto work = testing::MakeWorkDir(tmp / "work", args, {tmp / "a" / "f"});
    EXPECT_ERRC(RunStage(ShippedModule("file"), Stage::Install, work), Errc::ModuleFailed);
  }
}

TEST(FileModuleTest, RefusesToReplaceADirectory) {
  FileFixture f;
  fs::create_directories(f.dest);
  EXPECT_ERRC(f.Run(Stage::Install), Errc::ModuleFailed);
  EXPECT_TRUE(fs::is_directory(f.dest));
}

}  // namespace
}  // namespace upkeep::modules
