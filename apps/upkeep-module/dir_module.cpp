// The "dir" module: replaces a directory tree with the content of a tar archive (ustar, pax or
// GNU tar; uncompressed or gzip, xz, zstd, bzip2).
//
// Paths: DEST, DEST.upkeep-new (extraction target), DEST.upkeep-old (the previous tree while
// the update is not committed). State in WORKDIR:
//   dir.swap    written (durably) after the new tree is complete and before the first rename;
//               from then on the renames are completed (Install) or undone (Rollback). It
//               names the update (target and version from header.json); a dir.swap of another
//               update is refused, never taken as a finished Install.
//   dir.absent  marker: DEST did not exist before the update
//
// Every stage derives its next step from which of DEST, NEW and OLD exist, so each can be
// re-run after a crash at any point (see docs/formats/update-module.md).

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <system_error>

#include "module_util.hpp"
#include "upkeep/common/unique_fd.hpp"

namespace upkeep::module_tool {

namespace fs = std::filesystem;
using modules::Stage;

namespace {

using ArchivePtr = std::unique_ptr<archive, decltype(&archive_free)>;

struct DirPaths {
  fs::path dest;
  fs::path next;  // DEST.upkeep-new
  fs::path old;   // DEST.upkeep-old
  fs::path swap_marker;
  fs::path absent_marker;
};

DirPaths PathsFor(const ModuleContext& ctx, const fs::path& dest) {
  return DirPaths{dest, fs::path(dest.string() + ".upkeep-new"),
                  fs::path(dest.string() + ".upkeep-old"), ctx.work_dir / "dir.swap",
                  ctx.work_dir / "dir.absent"};
}

Error ArchiveError(const std::string& what, archive* a) {
  const char* msg = archive_error_string(a);
  return InvalidArgument(what + ": " + (msg != nullptr ? msg : "unknown libarchive error"));
}

std::vector<std::string> Components(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t pos = 0;
  while (pos <= path.size()) {
    std::size_t end = path.find('/', pos);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(pos, end - pos);
    if (!part.empty() && part != ".") parts.push_back(std::move(part));
    pos = end + 1;
  }
  return parts;
}

// An entry name relative to the tree root, without "." components; rejects absolute names and
// ".." anywhere. Empty for the root itself ("./").
Result<std::string> NormalizeEntryPath(const char* raw) {
  if (raw == nullptr) return InvalidArgument("archive entry without a name");
  std::string name(raw);
  if (name.empty()) return InvalidArgument("archive entry with an empty name");
  if (name.front() == '/') return InvalidArgument("absolute path in archive: " + name);
  std::string out;
  for (const auto& part : Components(name)) {
    if (part == "..") return InvalidArgument("\"..\" in archive path: " + name);
    if (!out.empty()) out += '/';
    out += part;
  }
  return out;
}

// A symlink stays inside the tree when its target is relative, its ".." components all come
// first and do not climb above the root from the link's directory, and no ".." follows a
// name (a name may itself be a link, so "a/.." is not necessarily the directory it seems).
Result<void> CheckSymlinkTarget(const std::string& entry, const char* raw_target) {
  if (raw_target == nullptr || *raw_target == '\0') {
    return InvalidArgument("symlink without a target: " + entry);
  }
  std::string target(raw_target);
  if (target.front() == '/') {
    return InvalidArgument("symlink leaves the tree (absolute target): " + entry + " -> " + target);
  }
  auto depth = static_cast<long>(Components(entry).size()) - 1;  // directories above the link
  bool seen_name = false;
  for (const auto& part : Components(target)) {
    if (part == "..") {
      if (seen_name || --depth < 0) {
        return InvalidArgument("symlink leaves the tree: " + entry + " -> " + target);
      }
    } else {
      seen_name = true;
    }
  }
  return Ok();
}

// The content of dir.swap for this update.
std::string SwapTag(const ModuleContext& ctx) {
  return "swap\ntarget=" + ctx.header.target + "\nversion=" + ctx.header.version + "\n";
}

// Fails unless dir.swap names this update.
Result<void> CheckSwapTag(const ModuleContext& ctx, const DirPaths& p) {
  UPKEEP_ASSIGN_OR_RETURN(std::string tag, ReadStateFile(p.swap_marker));
  if (tag != SwapTag(ctx)) {
    return InvalidArgument(p.swap_marker.string() +
                           " belongs to another update; refusing to take it as this one's");
  }
  return Ok();
}

// Mode bits an extracted entry keeps unless module_args "allow_special_modes" is true:
// no setuid, setgid or sticky bit, and nothing writable by others.
constexpr mode_t kPlainModeMask = 0777 & ~static_cast<mode_t>(S_IWOTH);

// Restores the working directory when extraction ends.
class ScopedChdir {
 public:
  ScopedChdir() : saved_(::open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {}
  ScopedChdir(const ScopedChdir&) = delete;
  ScopedChdir& operator=(const ScopedChdir&) = delete;
  ~ScopedChdir() {
    if (saved_.get() >= 0 && ::fchdir(saved_.get()) != 0) {
      // Nothing sensible to do: the module exits right after the stage.
    }
  }
  [[nodiscard]] bool ok() const { return saved_.get() >= 0; }

 private:
  UniqueFd saved_;
};

Result<void> CopyData(archive* in, archive* out) {
  const void* buf = nullptr;
  size_t size = 0;
  la_int64_t offset = 0;
  for (;;) {
    int r = archive_read_data_block(in, &buf, &size, &offset);
    if (r == ARCHIVE_EOF) return Ok();
    if (r < ARCHIVE_WARN) return ArchiveError("read archive data", in);
    if (archive_write_data_block(out, buf, size, offset) < ARCHIVE_WARN) {
      return ArchiveError("write file", out);
    }
  }
}

// Extracts `tarball` (tar formats only) into the empty directory open as `into_fd`, refusing
// entries that would land or point outside it and entry types other than files, directories,
// symlinks and hard links. Unless `allow_special_modes`, entries lose setuid, setgid, sticky and
// world-writable bits.
Result<void> Extract(const fs::path& tarball, int into_fd, const fs::path& into,
                     bool allow_special_modes) {
  ArchivePtr reader(archive_read_new(), &archive_free);
  ArchivePtr writer(archive_write_disk_new(), &archive_free);
  if (!reader || !writer) return InvalidArgument("libarchive: out of memory");
  // The tar family only (ustar, pax, GNU tar): formats such as mtree name files to read from
  // the device, and every other reader is attack surface this module does not need.
  if (archive_read_support_format_tar(reader.get()) != ARCHIVE_OK) {
    return ArchiveError("enable tar", reader.get());
  }
  for (auto* add : {&archive_read_support_filter_gzip, &archive_read_support_filter_xz,
                    &archive_read_support_filter_zstd, &archive_read_support_filter_bzip2}) {
    // ARCHIVE_WARN: the filter works through an external program; still usable.
    if (add(reader.get()) < ARCHIVE_WARN) return ArchiveError("enable filter", reader.get());
  }
  if (archive_read_open_filename(reader.get(), tarball.c_str(), 65536) != ARCHIVE_OK) {
    return ArchiveError("open " + tarball.string(), reader.get());
  }
  int flags = ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
              ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
  if (::geteuid() == 0) flags |= ARCHIVE_EXTRACT_OWNER;
  archive_write_disk_set_options(writer.get(), flags);
  archive_write_disk_set_standard_lookup(writer.get());

  // Entry names stay relative (so libarchive's own checks apply) with `into` as the cwd.
  ScopedChdir restore;
  if (!restore.ok()) return IoError("open", ".", errno);
  if (::fchdir(into_fd) != 0) return IoError("chdir", into, errno);

  for (;;) {
    archive_entry* entry = nullptr;
    int r = archive_read_next_header(reader.get(), &entry);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return ArchiveError("read " + tarball.string(), reader.get());
    if ((archive_format(reader.get()) & ARCHIVE_FORMAT_BASE_MASK) != ARCHIVE_FORMAT_TAR) {
      return InvalidArgument("not a tar archive: " + tarball.string());
    }

    UPKEEP_ASSIGN_OR_RETURN(std::string name, NormalizeEntryPath(archive_entry_pathname(entry)));
    if (name.empty()) continue;  // the root directory itself
    const char* hardlink = archive_entry_hardlink(entry);
    const auto type = archive_entry_filetype(entry);
    if (hardlink != nullptr) {
      UPKEEP_ASSIGN_OR_RETURN(std::string link, NormalizeEntryPath(hardlink));
      if (link.empty()) return InvalidArgument("hard link to the tree root: " + name);
      archive_entry_set_hardlink(entry, link.c_str());
    } else if (type == AE_IFLNK) {
      UPKEEP_TRY(CheckSymlinkTarget(name, archive_entry_symlink(entry)));
    } else if (type != AE_IFREG && type != AE_IFDIR) {
      return InvalidArgument("unsupported entry type (device, fifo or socket): " + name);
    }
    archive_entry_set_pathname(entry, name.c_str());
    if (!allow_special_modes) {
      archive_entry_set_perm(entry, archive_entry_perm(entry) & kPlainModeMask);
    }

    if (archive_write_header(writer.get(), entry) < ARCHIVE_WARN) {
      return ArchiveError("extract " + name, writer.get());
    }
    if (archive_entry_size(entry) > 0) UPKEEP_TRY(CopyData(reader.get(), writer.get()));
    if (archive_write_finish_entry(writer.get()) < ARCHIVE_WARN) {
      return ArchiveError("extract " + name, writer.get());
    }
  }
  if (archive_write_close(writer.get()) != ARCHIVE_OK) {
    return ArchiveError("finish extraction", writer.get());
  }
  return Ok();
}

// Makes the whole new tree durable: syncfs(2) on its filesystem (one call instead of an
// fsync per file, and it covers files that are not readable by the module).
Result<void> SyncTree(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return IoError("open", dir, errno);
  if (::syncfs(fd.get()) != 0) return IoError("syncfs", dir, errno);
  return SyncDir(dir.parent_path());
}

// Completes the swap (after dir.swap exists): DEST -> OLD, then NEW -> DEST.
Result<void> FinishSwap(const ModuleContext& ctx, const DirPaths& p) {
  if (!PathExists(p.next)) return Ok();  // both renames are done
  if (PathExists(p.dest)) {
    if (PathExists(p.old)) {
      return InvalidArgument("inconsistent state: " + p.dest.string() + ", " + p.next.string() +
                             " and " + p.old.string() + " all exist");
    }
    *ctx.log << "dir: moving " << p.dest.string() << " to " << p.old.string() << "\n";
    UPKEEP_TRY(RenameDurably(p.dest, p.old));
  }
  *ctx.log << "dir: moving " << p.next.string() << " to " << p.dest.string() << "\n";
  return RenameDurably(p.next, p.dest);
}

// Creates NEW (exclusively), extracts the tarball into it and gives its root `mode` and, when
// set and running as root, `owner`. On any failure NEW is removed.
Result<void> ExtractNewTree(const ModuleContext& ctx, const DirPaths& p, const fs::path& tarball,
                            mode_t mode, std::optional<FileOwner> owner) {
  UPKEEP_ASSIGN_OR_RETURN(bool allow_special_modes,
                          BoolArg(ctx, "allow_special_modes", /*fallback=*/false));
  *ctx.log << "dir: extracting " << tarball.filename().string() << " into " << p.next.string()
           << "\n";
  if (::mkdir(p.next.c_str(), 0700) != 0) return IoError("mkdir", p.next, errno);
  UniqueFd next_fd(::open(p.next.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  Result<void> r = Ok();
  if (next_fd.get() < 0) {
    r = IoError("open", p.next, errno);
  } else {
    r = Extract(tarball, next_fd.get(), p.next, allow_special_modes);
  }
  if (r && owner && ::geteuid() == 0 && ::fchown(next_fd.get(), owner->uid, owner->gid) != 0) {
    r = IoError("chown", p.next, errno);
  }
  if (r && ::fchmod(next_fd.get(), mode) != 0) r = IoError("chmod", p.next, errno);
  if (!r) {
    next_fd.reset();
    (void)RemoveDurably(p.next);
  }
  return r;
}

Result<void> Install(const ModuleContext& ctx, const fs::path& dest) {
  const DirPaths p = PathsFor(ctx, dest);
  if (PathExists(p.swap_marker)) {
    UPKEEP_TRY(CheckSwapTag(ctx, p));
    return FinishSwap(ctx, p);
  }

  // Nothing of this update has touched DEST yet: leftovers of earlier runs can go, except an
  // OLD without DEST, which is the only copy of the previous tree (an earlier update stopped
  // between its two renames): it is put back first.
  UPKEEP_ASSIGN_OR_RETURN(fs::path tarball, SingleArtifact(ctx));
  UPKEEP_TRY(RemoveDurably(p.next));
  if (PathExists(p.old) && !PathExists(p.dest)) {
    *ctx.log << "dir: restoring " << p.dest.string() << " from leftover " << p.old.string() << "\n";
    UPKEEP_TRY(RenameDurably(p.old, p.dest));
  }
  if (PathExists(p.old)) {
    *ctx.log << "dir: removing leftover " << p.old.string() << "\n";
    UPKEEP_TRY(RemoveDurably(p.old));
  }
  // The new tree's root keeps DEST's owner and mode; 0755 and the module's user when DEST is new.
  mode_t mode = 0755;
  std::optional<FileOwner> owner;
  struct stat st {};
  if (::lstat(p.dest.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return InvalidArgument(p.dest.string() + " exists and is not a directory");
    }
    mode = st.st_mode & 07777;
    owner = FileOwner{st.st_uid, st.st_gid};
    UPKEEP_TRY(RemoveDurably(p.absent_marker));
  } else if (errno != ENOENT) {
    return IoError("stat", p.dest, errno);
  } else {
    UPKEEP_TRY(WriteStateFile(p.absent_marker, "absent\n"));
  }

  UPKEEP_TRY(ExtractNewTree(ctx, p, tarball, mode, owner));
  UPKEEP_TRY(SyncTree(p.next));
  UPKEEP_TRY(WriteStateFile(p.swap_marker, SwapTag(ctx)));
  return FinishSwap(ctx, p);
}

Result<void> Rollback(const ModuleContext& ctx, const fs::path& dest) {
  const DirPaths p = PathsFor(ctx, dest);
  if (PathExists(p.swap_marker)) {
    if (PathExists(p.old)) {
      // DEST is the new tree or missing (crash between the two renames).
      if (PathExists(p.dest)) {
        UPKEEP_TRY(RemoveDurably(p.next));
        UPKEEP_TRY(RenameDurably(p.dest, p.next));
      }
      *ctx.log << "dir: restoring " << p.dest.string() << " from " << p.old.string() << "\n";
      UPKEEP_TRY(RenameDurably(p.old, p.dest));
    } else if (PathExists(p.absent_marker)) {
      *ctx.log << "dir: removing " << p.dest.string() << " (it did not exist before)\n";
      UPKEEP_TRY(RemoveDurably(p.dest));
    }
    // Otherwise DEST is already the previous tree (the first rename never happened or the
    // restore is complete).
  }
  UPKEEP_TRY(RemoveDurably(p.next));
  UPKEEP_TRY(RemoveDurably(p.swap_marker));
  return RemoveDurably(p.absent_marker);
}

Result<void> Commit(const ModuleContext& ctx, const fs::path& dest) {
  const DirPaths p = PathsFor(ctx, dest);
  if (!PathExists(p.swap_marker) || PathExists(p.next)) {
    return InvalidArgument("Commit before Install completed for " + p.dest.string());
  }
  UPKEEP_TRY(CheckSwapTag(ctx, p));
  if (PathExists(p.old)) *ctx.log << "dir: removing " << p.old.string() << "\n";
  UPKEEP_TRY(RemoveDurably(p.old));
  return RemoveDurably(p.absent_marker);
}

}  // namespace

Result<void> RunDirModule(Stage stage, const ModuleContext& ctx) {
  UPKEEP_TRY(CheckArgs(ctx, {"dest", "allow_special_modes"}));
  UPKEEP_ASSIGN_OR_RETURN(fs::path dest, DestArg(ctx));
  switch (stage) {
    case Stage::Download:
      return Ok();
    case Stage::Install:
      return Install(ctx, dest);
    case Stage::Commit:
      return Commit(ctx, dest);
    case Stage::Rollback:
      return Rollback(ctx, dest);
    case Stage::Cleanup:
      return ClearTmp(ctx);
  }
  return Ok();
}

}  // namespace upkeep::module_tool
