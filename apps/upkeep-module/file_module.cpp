// The "file" module: replaces one regular file atomically.
//
// State in WORKDIR:
//   file.backup  a copy of dest as it was before the first Install (content, mode, owner)
//   file.absent  marker: dest did not exist before the first Install
// Exactly one of them exists once Install has started; it is written before dest is touched,
// so a repeated Install never backs up the new content. Commit and a successful Rollback
// remove them; Cleanup keeps them.

#include <sys/stat.h>

#include <cerrno>

#include "module_util.hpp"

namespace upkeep::module_tool {

namespace fs = std::filesystem;
using modules::Stage;

namespace {

struct FileState {
  fs::path backup;
  fs::path absent;
};

FileState StateFor(const ModuleContext& ctx) {
  return FileState{ctx.work_dir / "file.backup", ctx.work_dir / "file.absent"};
}

Result<std::optional<mode_t>> ModeArg(const ModuleContext& ctx) {
  UPKEEP_ASSIGN_OR_RETURN(auto text, StringArg(ctx, "mode"));
  if (!text) return std::optional<mode_t>();
  if (text->empty() || text->size() > 5) {
    return InvalidArgument("module_args: \"mode\" must be octal, e.g. \"0644\"");
  }
  unsigned value = 0;
  for (char c : *text) {
    if (c < '0' || c > '7') {
      return InvalidArgument("module_args: \"mode\" must be octal, e.g. \"0644\"");
    }
    value = value * 8 + static_cast<unsigned>(c - '0');
  }
  if (value > 07777) return InvalidArgument("module_args: \"mode\" out of range");
  return std::optional<mode_t>(static_cast<mode_t>(value));
}

Result<void> Install(const ModuleContext& ctx, const fs::path& dest) {
  UPKEEP_ASSIGN_OR_RETURN(auto mode_arg, ModeArg(ctx));
  UPKEEP_ASSIGN_OR_RETURN(fs::path artifact, SingleArtifact(ctx));
  const FileState state = StateFor(ctx);

  if (!PathExists(state.backup) && !PathExists(state.absent)) {
    struct stat st {};
    if (::lstat(dest.c_str(), &st) != 0) {
      if (errno != ENOENT) return IoError("stat", dest, errno);
      *ctx.log << "file: " << dest.string() << " does not exist yet\n";
      UPKEEP_TRY(WriteStateFile(state.absent, "absent\n"));
    } else if (!S_ISREG(st.st_mode)) {
      return InvalidArgument(dest.string() + " exists and is not a regular file");
    } else {
      *ctx.log << "file: backing up " << dest.string() << "\n";
      UPKEEP_TRY(
          CopyFileAtomic(dest, state.backup, st.st_mode & 07777, FileOwner{st.st_uid, st.st_gid}));
    }
  }

  // The new file keeps the previous file's mode and owner unless module_args sets a mode.
  mode_t mode = 0644;
  std::optional<FileOwner> owner;
  struct stat backup_st {};
  if (::lstat(state.backup.c_str(), &backup_st) == 0 && S_ISREG(backup_st.st_mode)) {
    mode = backup_st.st_mode & 07777;
    owner = FileOwner{backup_st.st_uid, backup_st.st_gid};
  }
  if (mode_arg) mode = *mode_arg;
  *ctx.log << "file: installing " << artifact.filename().string() << " as " << dest.string()
           << "\n";
  return CopyFileAtomic(artifact, dest, mode, owner);
}

Result<void> DropState(const ModuleContext& ctx, const fs::path& dest) {
  const FileState state = StateFor(ctx);
  UPKEEP_TRY(RemoveStaleTemps(dest));
  UPKEEP_TRY(RemoveDurably(state.backup));
  return RemoveDurably(state.absent);
}

Result<void> Rollback(const ModuleContext& ctx, const fs::path& dest) {
  const FileState state = StateFor(ctx);
  struct stat st {};
  if (::lstat(state.backup.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    *ctx.log << "file: restoring " << dest.string() << " from the backup\n";
    UPKEEP_TRY(
        CopyFileAtomic(state.backup, dest, st.st_mode & 07777, FileOwner{st.st_uid, st.st_gid}));
  } else if (PathExists(state.absent)) {
    *ctx.log << "file: removing " << dest.string() << " (it did not exist before)\n";
    UPKEEP_TRY(RemoveDurably(dest));
  } else {
    *ctx.log << "file: nothing to roll back (Install did not start or rollback is done)\n";
  }
  // dest is back at its previous state: the backup has served its purpose.
  return DropState(ctx, dest);
}

}  // namespace

Result<void> RunFileModule(Stage stage, const ModuleContext& ctx) {
  UPKEEP_TRY(CheckArgs(ctx, {"dest", "mode"}));
  UPKEEP_ASSIGN_OR_RETURN(fs::path dest, DestArg(ctx));
  switch (stage) {
    case Stage::Download:
      return Ok();
    case Stage::Install:
      return Install(ctx, dest);
    case Stage::Commit:
      return DropState(ctx, dest);
    case Stage::Rollback:
      return Rollback(ctx, dest);
    case Stage::Cleanup:
      // The backup stays until Commit or a successful Rollback, so that a failed Rollback
      // can be retried.
      UPKEEP_TRY(RemoveStaleTemps(dest));
      return ClearTmp(ctx);
  }
  return Ok();
}

}  // namespace upkeep::module_tool
