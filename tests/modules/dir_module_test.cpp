#include <archive.h>
#include <archive_entry.h>

#include <memory>

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

struct TarEntry {
  enum Kind { kFile, kDir, kSymlink, kHardlink, kFifo };
  Kind kind;
  std::string name;
  std::string content;  // file content, or the link target
};

// Writes a tarball (pax; gzip-compressed when `gzip`) with libarchive's writer, which keeps
// names exactly as given (including "../" and absolute names).
void WriteTar(const fs::path& path, const std::vector<TarEntry>& entries, bool gzip = false) {
  std::unique_ptr<archive, decltype(&archive_write_free)> a(archive_write_new(),
                                                            &archive_write_free);
  archive_write_set_format_pax_restricted(a.get());
  if (gzip) archive_write_add_filter_gzip(a.get());
  fs::create_directories(path.parent_path());
  ASSERT_EQ(archive_write_open_filename(a.get(), path.c_str()), ARCHIVE_OK);
  for (const auto& e : entries) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, e.name.c_str());
    archive_entry_set_mtime(entry, 1700000000, 0);
    switch (e.kind) {
      case TarEntry::kFile:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_perm(entry, 0644);
        archive_entry_set_size(entry, static_cast<la_int64_t>(e.content.size()));
        break;
      case TarEntry::kDir:
        archive_entry_set_filetype(entry, AE_IFDIR);
        archive_entry_set_perm(entry, 0755);
        break;
      case TarEntry::kSymlink:
        archive_entry_set_filetype(entry, AE_IFLNK);
        archive_entry_set_perm(entry, 0777);
        archive_entry_set_symlink(entry, e.content.c_str());
        break;
      case TarEntry::kHardlink:
        archive_entry_set_filetype(entry, AE_IFREG);
        archive_entry_set_perm(entry, 0644);
        archive_entry_set_hardlink(entry, e.content.c_str());
        break;
      case TarEntry::kFifo:
        archive_entry_set_filetype(entry, AE_IFIFO);
        archive_entry_set_perm(entry, 0644);
        break;
    }
    ASSERT_EQ(archive_write_header(a.get(), entry), ARCHIVE_OK) << e.name;
    if (e.kind == TarEntry::kFile && !e.content.empty()) {
      archive_write_data(a.get(), e.content.data(), e.content.size());
    }
    archive_entry_free(entry);
  }
  ASSERT_EQ(archive_write_close(a.get()), ARCHIVE_OK);
}

struct DirFixture {
  TempDir tmp;
  fs::path dest = tmp / "srv" / "app";
  fs::path next = tmp / "srv" / "app.upkeep-new";
  fs::path old = tmp / "srv" / "app.upkeep-old";
  fs::path work = tmp / "work";

  // A tarball artifact (tree.tar or tree.tar.gz) and a work directory for it.
  void Prepare(const std::vector<TarEntry>& entries, bool gzip = false) {
    fs::path tarball = tmp / "artifact" / (gzip ? "tree.tar.gz" : "tree.tar");
    WriteTar(tarball, entries, gzip);
    testing::MakeWorkDir(work, R"({"dest": ")" + dest.string() + "\"}", {tarball});
  }
  void PrepareNewTree() {
    Prepare({{TarEntry::kDir, "./", ""},
             {TarEntry::kFile, "./version", "2\n"},
             {TarEntry::kDir, "./lib", ""},
             {TarEntry::kFile, "./lib/data", "new data\n"},
             {TarEntry::kSymlink, "./lib/current", "../version"},
             {TarEntry::kHardlink, "./version.hard", "version"}});
  }
  void MakeOldTree() const {
    WriteTextFile(dest / "version", "1\n");
    WriteTextFile(dest / "only-in-old", "old\n");
  }
  Result<StageResult> Run(Stage stage) const { return RunStage(ShippedModule("dir"), stage, work); }
};

void ExpectNewTree(const fs::path& dir) {
  EXPECT_EQ(ReadFileOrEmpty(dir / "version"), "2\n");
  EXPECT_EQ(ReadFileOrEmpty(dir / "lib" / "data"), "new data\n");
  EXPECT_EQ(ReadFileOrEmpty(dir / "lib" / "current"), "2\n");
  EXPECT_EQ(ReadFileOrEmpty(dir / "version.hard"), "2\n");
  EXPECT_FALSE(fs::exists(dir / "only-in-old"));
}

void ExpectOldTree(const fs::path& dir) {
  EXPECT_EQ(ReadFileOrEmpty(dir / "version"), "1\n");
  EXPECT_EQ(ReadFileOrEmpty(dir / "only-in-old"), "old\n");
  EXPECT_FALSE(fs::exists(dir / "lib"));
}

TEST(DirModuleTest, ReplacesTreeAndCommits) {
  DirFixture f;
  f.MakeOldTree();
  f.PrepareNewTree();
  auto install = f.Run(Stage::Install);
  ASSERT_TRUE(install) << install.error().ToString();
  ExpectNewTree(f.dest);
  ExpectOldTree(f.old);
  EXPECT_FALSE(fs::exists(f.next));
  ASSERT_TRUE(f.Run(Stage::Commit));
  EXPECT_FALSE(fs::exists(f.old));
  ExpectNewTree(f.dest);
  ASSERT_TRUE(f.Run(Stage::Cleanup));
}

TEST(DirModuleTest, RollbackRestoresOldTree) {
  DirFixture f;
  f.MakeOldTree();
  f.PrepareNewTree();
  ASSERT_TRUE(f.Run(Stage::Install));
  ASSERT_TRUE(f.Run(Stage::Rollback));
  ExpectOldTree(f.dest);
  EXPECT_FALSE(fs::exists(f.old));
  EXPECT_FALSE(fs::exists(f.next));
  ASSERT_TRUE(f.Run(Stage::Rollback));  // idempotent
  ExpectOldTree(f.dest);
}

TEST(DirModuleTest, FailedCommitRestoresOldTree) {
  DirFixture f;
  f.MakeOldTree();
  f.PrepareNewTree();
  EXPECT_ERRC(InstallComponent(testing::FailingAt(f.tmp.path(), "dir", "Commit"), f.work),
              Errc::RolledBack);
  ExpectOldTree(f.dest);
  EXPECT_FALSE(fs::exists(f.old));
}

TEST(DirModuleTest, InstallsWhereNoTreeExistedAndRollbackRemovesIt) {
  DirFixture f;
  f.PrepareNewTree();
  fs::create_directories(f.dest.parent_path());
  ASSERT_TRUE(f.Run(Stage::Install));
  ExpectNewTree(f.dest);
  ASSERT_TRUE(f.Run(Stage::Rollback));
  EXPECT_FALSE(fs::exists(f.dest));
}

TEST(DirModuleTest, InstallTwiceThenRollbackRestoresOriginal) {
  DirFixture f;
  f.MakeOldTree();
  f.PrepareNewTree();
  ASSERT_TRUE(f.Run(Stage::Install));
  ASSERT_TRUE(f.Run(Stage::Install));
  ExpectNewTree(f.dest);
  ExpectOldTree(f.old);
  ASSERT_TRUE(f.Run(Stage::Rollback));
  ExpectOldTree(f.dest);
}

TEST(DirModuleTest, ReadsGzipCompressedTarballs) {
  DirFixture f;
  f.MakeOldTree();
  f.Prepare({{TarEntry::kFile, "version", "2\n"}}, /*gzip=*/true);
  ASSERT_TRUE(f.Run(Stage::Install));
  EXPECT_EQ(ReadFileOrEmpty(f.dest / "version"), "2\n");
}

// Entries that would be written outside the new tree are refused; nothing is written and the
// current tree stays in place.
TEST(DirModuleTest, RejectsPathTraversal) {
  const std::vector<std::vector<TarEntry>> attacks = {
      {{TarEntry::kFile, "ok", "x"}, {TarEntry::kFile, "../evil", "pwned"}},
      {{TarEntry::kFile, "sub/../../evil", "pwned"}},
      {{TarEntry::kFile, "/tmp/upkeep-dir-module-evil", "pwned"}},
      {{TarEntry::kFile, "ok", "x"}, {TarEntry::kHardlink, "hard", "../evil"}},
  };
  for (const auto& entries : attacks) {
    DirFixture f;
    f.MakeOldTree();
    f.Prepare(entries);
    auto r = f.Run(Stage::Install);
    EXPECT_ERRC(r, Errc::ModuleFailed);
    EXPECT_FALSE(fs::exists(f.tmp / "srv" / "evil"));
    EXPECT_FALSE(fs::exists(f.tmp / "evil"));
    EXPECT_FALSE(fs::exists("/tmp/upkeep-dir-module-evil"));
    EXPECT_FALSE(fs::exists(f.next));
    ExpectOldTree(f.dest);
    ASSERT_TRUE(f.Run(Stage::Rollback));
    ExpectOldTree(f.dest);
  }
}

// Symlinks whose target leaves the tree are refused (absolute, too many "..", or ".." after a
// name that may itself be a link), as are a link followed by an entry written through it.
TEST(DirModuleTest, RejectsLinksThatLeaveTheTree) {
  const std::vector<std::vector<TarEntry>> attacks = {
      {{TarEntry::kSymlink, "etc", "/etc"}},
      {{TarEntry::kSymlink, "up", ".."}},
      {{TarEntry::kSymlink, "sub/up", "../../srv"}},
      {{TarEntry::kSymlink, "d", "."}, {TarEntry::kSymlink, "e", "d/.."}},
      {{TarEntry::kSymlink, "link", "sub"},
       {TarEntry::kDir, "sub", ""},
       {TarEntry::kFile, "link/../../evil", "pwned"}},
      {{TarEntry::kSymlink, "link", "sub"},
       {TarEntry::kDir, "sub", ""},
       {TarEntry::kFile, "link/through", "x"}},
      {{TarEntry::kFifo, "fifo", ""}},
  };
  for (const auto& entries : attacks) {
    DirFixture f;
    f.MakeOldTree();
    f.Prepare(entries);
    SCOPED_TRACE(entries.back().name);
    EXPECT_ERRC(f.Run(Stage::Install), Errc::ModuleFailed);
    EXPECT_FALSE(fs::exists(f.tmp / "srv" / "evil"));
    EXPECT_FALSE(fs::exists(f.next));
    ExpectOldTree(f.dest);
  }
}

// A crash between the two renames leaves OLD and NEW but no DEST: Install completes the swap.
TEST(DirModuleTest, RecoversFromCrashBetweenRenames) {
  DirFixture f;
  f.MakeOldTree();
  f.PrepareNewTree();
  ASSERT_TRUE(f.Run(Stage::Install));
  // Recreate the intermediate state: DEST -> OLD done, NEW -> DEST not yet.
  fs::rename(f.dest, f.next);
  ASSERT_TRUE(fs::exists(f.old));
  ASSERT_FALSE(fs::exists(f.dest));
  ASSERT_TRUE(f.Run(Stage::Install));
  ExpectNewTree(f.dest);
  ExpectOldTree(f.old);
  EXPECT_FALSE(fs::exists(f.next));
}

// The same intermediate state, resolved the other way: Rollback puts the old tree back.
TEST(DirModuleTest, RollbackFromCrashBetweenRenames) {
  DirFixture f;
  f.MakeOldTree();
  f.PrepareNewTree();
  ASSERT_TRUE(f.Run(Stage::Install));
  fs::rename(f.dest, f.next);
  ASSERT_TRUE(f.Run(Stage::Rollback));
  ExpectOldTree(f.dest);
  EXPECT_FALSE(fs::exists(f.next));
  EXPECT_FALSE(fs::exists(f.old));
}

// A crash during extraction leaves a partial NEW: Rollback removes it, DEST is untouched, and
// a new Install starts from scratch.
TEST(DirModuleTest, RecoversFromCrashDuringExtraction) {
  DirFixture f;
  f.MakeOldTree();
  f.PrepareNewTree();
  WriteTextFile(f.next / "partial", "half");
  ASSERT_TRUE(f.Run(Stage::Rollback));
  ExpectOldTree(f.dest);
  EXPECT_FALSE(fs::exists(f.next));
  WriteTextFile(f.next / "partial", "half");
  ASSERT_TRUE(f.Run(Stage::Install));
  ExpectNewTree(f.dest);
  EXPECT_FALSE(fs::exists(f.dest / "partial"));
}

TEST(DirModuleTest, CommitBeforeInstallFails) {
  DirFixture f;
  f.MakeOldTree();
  f.PrepareNewTree();
  EXPECT_ERRC(f.Run(Stage::Commit), Errc::ModuleFailed);
  ExpectOldTree(f.dest);
}

}  // namespace
}  // namespace upkeep::modules
