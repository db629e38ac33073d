#pragma once

// Shared pieces of the shipped update modules: the stage context, module_args access and
// the durable file operations every module builds on.

#include <sys/types.h>

#include <filesystem>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "upkeep/common/result.hpp"
#include "upkeep/modules/module.hpp"

namespace upkeep::module_tool {

// What one invocation of a module works with.
struct ModuleContext {
  std::filesystem::path work_dir;
  modules::ComponentHeader header;
  nlohmann::json args;  // header.module_args, an object
  std::ostream* log;    // progress lines; they end up in the stage's captured output
};

// Fails when module_args has a key not in `allowed` (typos must not pass silently).
[[nodiscard]] Result<void> CheckArgs(const ModuleContext& ctx,
                                     std::initializer_list<const char*> allowed);
// A string argument; nullopt when absent; an error when present but not a string.
[[nodiscard]] Result<std::optional<std::string>> StringArg(const ModuleContext& ctx,
                                                           const char* key);
// A boolean argument; `fallback` when absent; an error when present but not a boolean.
[[nodiscard]] Result<bool> BoolArg(const ModuleContext& ctx, const char* key, bool fallback);
// The "dest" argument: required, an absolute path without "." or ".." components.
[[nodiscard]] Result<std::filesystem::path> DestArg(const ModuleContext& ctx);
// The one regular file in WORKDIR/files/ (symbolic links are not followed and not counted).
[[nodiscard]] Result<std::filesystem::path> SingleArtifact(const ModuleContext& ctx);

// Errors of the shipped modules (common::Errc::IoError / InvalidArgument with a message).
[[nodiscard]] Error IoError(const std::string& what, const std::filesystem::path& path, int err);
[[nodiscard]] Error InvalidArgument(const std::string& what);

[[nodiscard]] bool PathExists(const std::filesystem::path& path);  // lstat succeeds
// fsync of a directory, making renames and removals in it durable.
[[nodiscard]] Result<void> SyncDir(const std::filesystem::path& dir);

struct FileOwner {
  uid_t uid;
  gid_t gid;
};

// Copies `source` (a regular file, not a link) to `dest` atomically: a new temporary file with
// an unpredictable name (TempPrefixFor(dest) + 6 random characters) created exclusively in
// dest's directory relative to its opened descriptor (O_CREAT | O_EXCL | O_NOFOLLOW), fsynced,
// given `mode` (and `owner` when set and running as root), renamed over dest, and the
// directory fsynced. Readers see the old or the new content, never a mix.
[[nodiscard]] Result<void> CopyFileAtomic(const std::filesystem::path& source,
                                          const std::filesystem::path& dest, mode_t mode,
                                          std::optional<FileOwner> owner);
// The name prefix of CopyFileAtomic's temporary files for dest: ".NAME.upkeep-tmp-".
[[nodiscard]] std::string TempPrefixFor(const std::filesystem::path& dest);
// Removes temporary files a crashed CopyFileAtomic left next to dest (".NAME.upkeep-tmp-XXXXXX",
// and ".NAME.upkeep-tmp" of earlier versions); links are removed, never followed.
[[nodiscard]] Result<void> RemoveStaleTemps(const std::filesystem::path& dest);

// Writes a small state file in the work directory atomically and durably.
[[nodiscard]] Result<void> WriteStateFile(const std::filesystem::path& path,
                                          const std::string& content);
[[nodiscard]] Result<std::string> ReadStateFile(const std::filesystem::path& path);
// Removes a file or a tree (absent is fine) without following symbolic links, then fsyncs the
// parent directory.
[[nodiscard]] Result<void> RemoveDurably(const std::filesystem::path& path);
// rename(2) then fsync of the parent directory.
[[nodiscard]] Result<void> RenameDurably(const std::filesystem::path& from,
                                         const std::filesystem::path& to);
// Empties WORKDIR/tmp; a link or file at that name is removed and replaced by a directory.
[[nodiscard]] Result<void> ClearTmp(const ModuleContext& ctx);

// Runs a helper tool (dpkg, ...) with a fixed PATH; its output is written to ctx.log.
[[nodiscard]] Result<modules::ProcessResult> RunTool(const ModuleContext& ctx,
                                                     const std::vector<std::string>& argv,
                                                     bool capture_stderr = true);

// The stage functions of the shipped modules.
[[nodiscard]] Result<void> RunFileModule(modules::Stage stage, const ModuleContext& ctx);
[[nodiscard]] Result<void> RunDirModule(modules::Stage stage, const ModuleContext& ctx);
[[nodiscard]] Result<void> RunDebModule(modules::Stage stage, const ModuleContext& ctx);

}  // namespace upkeep::module_tool
