#include <archive.h>
#include <archive_entry.h>
#include <sys/stat.h>
#include <unistd.h>

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
  unsigned mode = 0;    // permission bits; 0: the kind's usual mode
};

// Archive formats and compression filters besides pax and gzip.
enum class ArchiveFormat { kPax, kGnuTar, kZip, kCpio };
enum class Filter { kNone, kGzip, kXz, kZstd, kBzip2 };

// Writes a tarball (pax; gzip-compressed when `gzip`) with libarchive's writer, which keeps
// names exactly as given (including "../" and absolute names).
void WriteArchive(const fs::path& path, const std::vector<TarEntry>& entries, ArchiveFormat format,
                  Filter filter) {
  std::unique_ptr<archive, decltype(&archive_write_free)> a(archive_write_new(),
                                                            &archive_write_free);
  switch (format) {
    case ArchiveFormat::kPax:
      archive_write_set_format_pax_restricted(a.get());
      break;
    case ArchiveFormat::kGnuTar:
      archive_write_set_format_gnutar(a.get());
      break;
    case ArchiveFormat::kZip:
      archive_write_set_format_zip(a.get());
      break;
    case ArchiveFormat::kCpio:
      archive_write_set_format_cpio_newc(a.get());
      break;
  }
  switch (filter) {
    case Filter::kNone:
      break;
    case Filter::kGzip:
      ASSERT_EQ(archive_write_add_filter_gzip(a.get()), ARCHIVE_OK);
      break;
    case Filter::kXz:
      ASSERT_EQ(archive_write_add_filter_xz(a.get()), ARCHIVE_OK);
      break;
    case Filter::kZstd:
      ASSERT_EQ(archive_write_add_filter_zstd(a.get()), ARCHIVE_OK);
      break;
    case Filter::kBzip2:
      ASSERT_EQ(archive_write_add_filter_bzip2(a.get()), ARCHIVE_OK);
      break;
  }
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
    if (e.mode != 0) archive_entry_set_perm(entry, e.mode);
    ASSERT_EQ(archive_write_header(a.get(), entry), ARCHIVE_OK) << e.name;
    if (e.kind == TarEntry::kFile && !e.content.empty()) {
      archive_write_data(a.get(), e.content.data(), e.content.size());
    }
    archive_entry_free(entry);
  }
  ASSERT_EQ(archive_write_close(a.get()), ARCHIVE_OK);
}

// A pax tarball, gzip-compressed when `gzip`.
void WriteTar(const fs::path& path, const std::vector<TarEntry>& entries, bool gzip = false) {
  WriteArchive(path, entries, ArchiveFormat::kPax, gzip ? Filter::kGzip : Filter::kNone);
}

struct DirFixture {
  TempDir tmp;
  fs::path dest = tmp / "srv" / "app";
  fs::path next = tmp / "srv" / "app.upkeep-new";
  fs::path old = tmp / "srv" / "app.upkeep-old";
  fs::path work = tmp / "work";

  // A tarball artifact (tree.tar or tree.tar.gz) and a work directory for it.
  void Prepare(const std::vector<TarEntry>& entries, bool gzip = false,
               const std::string& extra_args = "") {
    fs::path tarball = tmp / "artifact" / (gzip ? "tree.tar.gz" : "tree.tar");
    WriteTar(tarball, entries, gzip);
    PrepareArtifact(tarball, extra_args);
  }
  void PrepareArtifact(const fs::path& artifact, const std::string& extra_args = "",
                       const std::string& version = "1.0") {
    testing::MakeWorkDir(work, R"({"dest": ")" + dest.string() + "\"" + extra_args + "}",
                         {artifact}, version);
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

// Formats other than tar are refused before anything is extracted: an mtree "archive" would
// copy any file of the device (contents=) into the tree, zip and cpio readers are needless
// attack surface. The current tree stays.
TEST(DirModuleTest, RejectsMtreeZipAndCpioArchives) {
  TempDir outside;
  WriteTextFile(outside / "shadow", "root:secret-hash:19000::::::\n");
  const std::string mtree =
      "#mtree\n./leak type=file mode=0644 contents=" + (outside / "shadow").string() + "\n";
  for (const std::string kind : {"mtree", "zip", "cpio"}) {
    SCOPED_TRACE(kind);
    DirFixture f;
    f.MakeOldTree();
    const fs::path artifact = f.tmp / "artifact" / ("tree." + kind);
    if (kind == "mtree") {
      WriteTextFile(artifact, mtree);
    } else {
      WriteArchive(artifact, {{TarEntry::kFile, "leak", "payload"}},
                   kind == "zip" ? ArchiveFormat::kZip : ArchiveFormat::kCpio, Filter::kNone);
    }
    f.PrepareArtifact(artifact);
    EXPECT_ERRC(f.Run(Stage::Install), Errc::ModuleFailed);
    EXPECT_FALSE(fs::exists(f.dest / "leak"));
    EXPECT_FALSE(fs::exists(f.next));
    ExpectOldTree(f.dest);
    EXPECT_ERRC(InstallComponent(ShippedModule("dir"), f.work), Errc::RolledBack);
    ExpectOldTree(f.dest);
  }
}

// The tar family (pax, GNU) with each supported compression is read.
TEST(DirModuleTest, ReadsTarWithEachSupportedFilter) {
  for (Filter filter : {Filter::kNone, Filter::kGzip, Filter::kXz, Filter::kZstd, Filter::kBzip2}) {
    SCOPED_TRACE(static_cast<int>(filter));
    DirFixture f;
    f.MakeOldTree();
    const fs::path artifact = f.tmp / "artifact" / "tree.tar";
    WriteArchive(artifact, {{TarEntry::kFile, "version", "2\n"}}, ArchiveFormat::kGnuTar, filter);
    f.PrepareArtifact(artifact);
    auto r = f.Run(Stage::Install);
    ASSERT_TRUE(r) << r.error().ToString();
    EXPECT_EQ(ReadFileOrEmpty(f.dest / "version"), "2\n");
  }
}

unsigned ModeOf(const fs::path& p) {
  struct stat st {};
  if (::lstat(p.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

std::vector<TarEntry> SpecialModeEntries() {
  return {{TarEntry::kFile, "setuid", "x", 04755},
          {TarEntry::kFile, "setgid", "x", 02755},
          {TarEntry::kFile, "shared", "x", 0666},
          {TarEntry::kDir, "sticky", "", 01777},
          {TarEntry::kDir, "group-dir", "", 02775}};
}

// Extracted entries lose setuid, setgid, sticky and world-writable bits: an archive cannot
// plant a setuid program or a file anyone may change.
TEST(DirModuleTest, StripsSetuidSetgidStickyAndWorldWritableBits) {
  DirFixture f;
  f.MakeOldTree();
  f.Prepare(SpecialModeEntries());
  auto r = f.Run(Stage::Install);
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(ModeOf(f.dest / "setuid"), 0755u);
  EXPECT_EQ(ModeOf(f.dest / "setgid"), 0755u);
  EXPECT_EQ(ModeOf(f.dest / "shared"), 0664u);
  EXPECT_EQ(ModeOf(f.dest / "sticky"), 0775u);
  EXPECT_EQ(ModeOf(f.dest / "group-dir"), 0775u);
}

// module_args "allow_special_modes": true keeps the archive's modes (as root, which may
// create set-id files); anything but a boolean is refused.
TEST(DirModuleTest, AllowSpecialModesKeepsArchiveModes) {
  DirFixture f;
  f.MakeOldTree();
  f.Prepare(SpecialModeEntries(), false, R"(, "allow_special_modes": true)");
  auto r = f.Run(Stage::Install);
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(ModeOf(f.dest / "shared"), 0666u);
  EXPECT_EQ(ModeOf(f.dest / "sticky"), 01777u);
  if (::geteuid() == 0) {
    EXPECT_EQ(ModeOf(f.dest / "setuid"), 04755u);
    EXPECT_EQ(ModeOf(f.dest / "group-dir"), 02775u);
  }

  DirFixture g;
  g.MakeOldTree();
  g.Prepare(SpecialModeEntries(), false, R"(, "allow_special_modes": "yes")");
  EXPECT_ERRC(g.Run(Stage::Install), Errc::ModuleFailed);
  ExpectOldTree(g.dest);
}

// The replaced directory keeps its owner and mode (the archive's root entry does not change
// them); a new one gets 0755 whatever the umask.
TEST(DirModuleTest, KeepsDestinationOwnerAndModeWhenReplaced) {
  DirFixture f;
  f.MakeOldTree();
  fs::permissions(f.dest, fs::perms(0750));
  const bool root = ::geteuid() == 0;
  if (root) {
    ASSERT_EQ(::chown(f.dest.c_str(), 1234, 5678), 0);
  }
  f.Prepare({{TarEntry::kDir, "./", "", 0777}, {TarEntry::kFile, "version", "2\n"}});
  ASSERT_TRUE(f.Run(Stage::Install));
  EXPECT_EQ(ModeOf(f.dest), 0750u);
  if (root) {
    struct stat st {};
    ASSERT_EQ(::stat(f.dest.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 1234u);
    EXPECT_EQ(st.st_gid, 5678u);
  }

  DirFixture g;
  fs::create_directories(g.dest.parent_path());
  g.Prepare({{TarEntry::kFile, "version", "2\n"}});
  const mode_t saved = ::umask(077);
  auto r = g.Run(Stage::Install);
  ::umask(saved);
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(ModeOf(g.dest), 0755u);
}

// dir.swap left by another (finished) update is not taken as this update's completed swap:
// Install fails instead of reporting success with the old tree in place.
TEST(DirModuleTest, StaleSwapStateOfAnotherUpdateIsNotSuccess) {
  DirFixture f;
  f.MakeOldTree();
  f.PrepareNewTree();
  ASSERT_TRUE(InstallComponent(ShippedModule("dir"), f.work));
  const std::string stale = ReadFileOrEmpty(f.work / "dir.swap");
  ASSERT_FALSE(stale.empty());
  // Version 3 in a new work directory that still holds version 2's swap state.
  const fs::path artifact = f.tmp / "artifact3" / "tree.tar";
  WriteTar(artifact, {{TarEntry::kFile, "version", "3\n"}});
  f.PrepareArtifact(artifact, "", "3.0");
  WriteTextFile(f.work / "dir.swap", stale);
  EXPECT_ERRC(f.Run(Stage::Install), Errc::ModuleFailed);
  EXPECT_ERRC(f.Run(Stage::Commit), Errc::ModuleFailed);
  ExpectNewTree(f.dest);
}

// An earlier update that stopped between its two renames left OLD and no DEST: a new update
// puts OLD back first instead of deleting the only copy of the previous tree, so that its own
// rollback restores it.
TEST(DirModuleTest, NewUpdateKeepsOldTreeLeftWithoutDest) {
  DirFixture f;
  f.MakeOldTree();
  fs::rename(f.dest, f.old);
  f.PrepareNewTree();
  ASSERT_TRUE(f.Run(Stage::Install));
  ExpectNewTree(f.dest);
  ExpectOldTree(f.old);
  ASSERT_TRUE(f.Run(Stage::Rollback));
  ExpectOldTree(f.dest);
}

// A link planted at the staging name NEW is removed, not followed: nothing is extracted
// into the directory it points to.
TEST(DirModuleTest, PlantedLinkAtStagingNameRedirectsNothing) {
  DirFixture f;
  f.MakeOldTree();
  TempDir outside;
  WriteTextFile(outside / "precious", "keep");
  fs::create_directory_symlink(outside.path(), f.next);
  f.PrepareNewTree();
  ASSERT_TRUE(f.Run(Stage::Install));
  ExpectNewTree(f.dest);
  EXPECT_EQ(ReadFileOrEmpty(outside / "precious"), "keep");
  EXPECT_FALSE(fs::exists(outside / "version"));
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
