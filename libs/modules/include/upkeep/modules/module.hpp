#pragma once

// Update modules: executables that install one component other than the root filesystem
// (a file, a directory tree, a Debian package). The agent prepares a work directory, then runs
// the module once per stage; the protocol is specified in docs/formats/update-module.md.
//
// Nothing here throws across the API; every failure is a Result error with a modules::Errc code.

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/result.hpp"

namespace upkeep::modules {

// Errors of the module runner. Values are stable.
enum class Errc {
  ModuleNotFound = 1,  // the module executable does not exist or is not executable
  ModuleFailed = 2,    // the module exited with a non-zero status
  ModuleKilled = 3,    // the module was ended by a signal it did not get from the runner
  ModuleTimeout = 4,   // the stage ran past its timeout; the module's process group was killed
  WorkDirFailed = 5,   // the work directory or a file in it could not be created or written
  InvalidHeader = 6,   // header.json is missing, not JSON, or lacks a required field
  RolledBack = 7,      // a stage of InstallComponent failed and the Rollback stage succeeded:
                       // the component is back at its previous version
  RollbackFailed = 8,  // a stage of InstallComponent failed and Rollback failed too: the
                       // component may be in an intermediate state
  InvalidSpec = 9,     // the ModuleSpec or process arguments are unusable (e.g. empty command)
  SpawnFailed = 10,    // the process could not be started (fork, pipe or exec failure)
};

}  // namespace upkeep::modules

UPKEEP_DECLARE_ERRC(upkeep::modules);

namespace upkeep::modules {

// The stages of the protocol, in the order InstallComponent runs them.
enum class Stage {
  Download,  // optional extra fetching; the artifact is already verified in WORKDIR/files/
  Install,   // make the new version current, keeping what Rollback needs in WORKDIR
  Commit,    // make the new version permanent; drop what only Rollback needed
  Rollback,  // restore the previous version after a failed Download, Install or Commit
  Cleanup,   // remove temporary state; runs last on success and on failure
};

// "Download", "Install", "Commit", "Rollback", "Cleanup": the name passed to the module.
[[nodiscard]] const char* StageName(Stage stage);
// The inverse of StageName; nullopt for any other string (matching is exact).
[[nodiscard]] std::optional<Stage> ParseStage(std::string_view name);

// How to run one module (from the device configuration).
struct ModuleSpec {
  // argv prefix, e.g. {"/usr/libexec/upkeep/upkeep-module", "file"}; the runner appends
  // STAGE and WORKDIR. command[0] is an absolute or relative path; PATH is not searched.
  std::vector<std::string> command;
  // Wall-clock limit for one stage, after which the process group gets SIGTERM.
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  // Time between SIGTERM and SIGKILL when a stage times out.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(5)};
  // Combined stdout/stderr kept per stage: the last max_output_bytes bytes. In an Error message
  // the tail is made valid UTF-8 (invalid bytes become U+FFFD).
  std::size_t max_output_bytes = 64 * 1024;
};

// A stage that exited 0.
struct StageResult {
  int exit_code = 0;
  // The tail of the module's combined stdout and stderr (at most max_output_bytes), starting
  // at a UTF-8 character boundary; the bytes are the module's own (not validated).
  std::string output;
  // True when earlier output was dropped to respect max_output_bytes.
  bool output_truncated = false;
  std::chrono::milliseconds duration{0};
};

// Runs `command + {StageName(stage), work_dir}` in its own process group with a clean
// environment (PATH=/usr/sbin:/usr/bin:/sbin:/bin, UPKEEP_STAGE, UPKEEP_WORKDIR), stdin from
// /dev/null and the working directory set to work_dir. Errors: ModuleNotFound, ModuleFailed
// (the message carries the exit status and the output tail), ModuleKilled, ModuleTimeout,
// InvalidSpec, SpawnFailed.
// The calling process must not ignore SIGCHLD (the runner reaps its child with waitid).
[[nodiscard]] Result<StageResult> RunStage(const ModuleSpec& spec, Stage stage,
                                           const std::filesystem::path& work_dir);

// The content of WORKDIR/header.json.
struct ComponentHeader {
  std::string component;  // component name from the device configuration, e.g. "app-config"
  std::string version;    // the version being installed
  std::string target;     // the TUF target path of the artifact
  // module_args as serialized JSON; must be an object. Free-form, interpreted by the module.
  std::string module_args_json = "{}";
};

// Prepares work_dir for one installation, starting from nothing: whatever is at work_dir (a
// previous installation's files and module state) is removed without following symbolic links,
// then work_dir, work_dir/files and work_dir/tmp are created (mode 0700), each artifact is
// placed in files/ under its file name (hard link when possible, otherwise an fsynced copy) and
// header.json is written atomically. A symbolic link at work_dir itself is refused and left
// alone. The header is validated before anything is removed. Creating and emptying the
// directory use POSIX calls directly (no-follow semantics the Filesystem lacks); the copy, the
// header and the syncs go through `fs`. Errors: WorkDirFailed, InvalidHeader.
[[nodiscard]] Result<void> PrepareWorkDir(Filesystem& fs, const std::filesystem::path& work_dir,
                                          const ComponentHeader& header,
                                          std::span<const std::filesystem::path> artifacts);
// The same on the local filesystem.
[[nodiscard]] Result<void> PrepareWorkDir(const std::filesystem::path& work_dir,
                                          const ComponentHeader& header,
                                          std::span<const std::filesystem::path> artifacts);

// Reads and validates WORKDIR/header.json. Errors: InvalidHeader.
[[nodiscard]] Result<ComponentHeader> ReadHeader(const Filesystem& fs,
                                                 const std::filesystem::path& work_dir);
[[nodiscard]] Result<ComponentHeader> ReadHeader(const std::filesystem::path& work_dir);

// Runs Download, Install, Commit, Cleanup. When Download, Install or Commit fails, runs
// Rollback and then Cleanup, and returns RolledBack (rollback succeeded) or RollbackFailed,
// with the failed stage, its error and output in the message. A Cleanup failure after a
// successful Commit is logged and does not fail the installation (the new version is in place).
[[nodiscard]] Result<void> InstallComponent(const ModuleSpec& spec,
                                            const std::filesystem::path& work_dir);

// --- Process runner (used by RunStage and by the shipped modules to run helper tools) ---

struct ProcessOptions {
  // The child's complete environment, "NAME=value" entries. Nothing is inherited.
  std::vector<std::string> env;
  // Working directory of the child; empty keeps the caller's.
  std::filesystem::path cwd;
  // Start the child as the leader of a new process group; timeouts then kill the whole group.
  bool new_process_group = true;
  // Wall-clock limit; zero means none.
  std::chrono::milliseconds timeout{0};
  // Time between SIGTERM and SIGKILL on timeout.
  std::chrono::milliseconds kill_grace{std::chrono::seconds(5)};
  // Output kept: the last max_output_bytes bytes.
  std::size_t max_output_bytes = 64 * 1024;
  // True: stderr joins stdout in `output`. False: stderr goes to /dev/null.
  bool capture_stderr = true;
};

struct ProcessResult {
  int exit_code = -1;      // exit status when the child exited, else -1
  int term_signal = 0;     // the signal that ended the child, else 0
  bool timed_out = false;  // the runner killed the child because of the timeout
  // Tail of the captured output: at most max_output_bytes bytes, starting at a UTF-8 character
  // boundary (a multi-byte character cut by the limit is dropped whole). Not validated: use
  // SanitizeUtf8 before putting it into an Error or JSON.
  std::string output;
  bool output_truncated = false;
  std::chrono::milliseconds duration{0};

  [[nodiscard]] bool Succeeded() const { return exit_code == 0 && !timed_out; }
};

// Runs argv[0] (a path; PATH is not searched) with stdin from /dev/null, without a shell.
// When the child exits, any process it left in its process group is killed (new_process_group
// only). The result describes how the child ended; errors only when it could not be started:
// ModuleNotFound, InvalidSpec, SpawnFailed.
[[nodiscard]] Result<ProcessResult> RunProcess(const std::vector<std::string>& argv,
                                               const ProcessOptions& options);

}  // namespace upkeep::modules
