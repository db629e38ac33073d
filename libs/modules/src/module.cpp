// The stage runner and the stage sequence with rollback.

#include "upkeep/modules/module.hpp"

#include <csignal>
#include <cstring>
#include <system_error>

#include "upkeep/common/log.hpp"
#include "upkeep/common/utf8.hpp"

namespace upkeep::modules {

namespace {

const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::ModuleNotFound:
      return "ModuleNotFound";
    case Errc::ModuleFailed:
      return "ModuleFailed";
    case Errc::ModuleKilled:
      return "ModuleKilled";
    case Errc::ModuleTimeout:
      return "ModuleTimeout";
    case Errc::WorkDirFailed:
      return "WorkDirFailed";
    case Errc::InvalidHeader:
      return "InvalidHeader";
    case Errc::RolledBack:
      return "RolledBack";
    case Errc::RollbackFailed:
      return "RollbackFailed";
    case Errc::InvalidSpec:
      return "InvalidSpec";
    case Errc::SpawnFailed:
      return "SpawnFailed";
  }
  return "Unknown";
}

// The environment every module starts with; nothing is inherited from the agent.
constexpr const char* kModulePath = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

// The output as it goes into an Error: valid UTF-8, so that the message can be put into the
// journal and events (JSON) as it is.
std::string OutputSuffix(const ProcessResult& r) {
  if (r.output.empty()) return "; no output";
  return std::string("; output") + (r.output_truncated ? " (tail)" : "") + ":\n" +
         SanitizeUtf8(r.output);
}

std::string Describe(const ModuleSpec& spec, Stage stage) {
  std::string out = "module";
  for (const auto& a : spec.command) out += " " + SanitizeUtf8(a);
  return out + " stage " + StageName(stage);
}

}  // namespace

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("modules", &ErrcName);
  return category;
}

const char* StageName(Stage stage) {
  switch (stage) {
    case Stage::Download:
      return "Download";
    case Stage::Install:
      return "Install";
    case Stage::Commit:
      return "Commit";
    case Stage::Rollback:
      return "Rollback";
    case Stage::Cleanup:
      return "Cleanup";
  }
  return "Unknown";
}

std::optional<Stage> ParseStage(std::string_view name) {
  for (Stage s :
       {Stage::Download, Stage::Install, Stage::Commit, Stage::Rollback, Stage::Cleanup}) {
    if (name == StageName(s)) return s;
  }
  return std::nullopt;
}

Result<StageResult> RunStage(const ModuleSpec& spec, Stage stage,
                             const std::filesystem::path& work_dir) {
  if (spec.command.empty()) return Error(Errc::InvalidSpec, "module command is empty");
  std::error_code ec;
  const auto dir = std::filesystem::absolute(work_dir, ec);
  if (ec || !std::filesystem::is_directory(dir, ec)) {
    return Error(Errc::WorkDirFailed, "work directory " + work_dir.string() + " does not exist");
  }

  std::vector<std::string> argv = spec.command;
  argv.emplace_back(StageName(stage));
  argv.push_back(dir.string());
  ProcessOptions options;
  options.env = {kModulePath, std::string("UPKEEP_STAGE=") + StageName(stage),
                 "UPKEEP_WORKDIR=" + dir.string()};
  options.cwd = dir;
  options.new_process_group = true;
  options.timeout = spec.timeout;
  options.kill_grace = spec.kill_grace;
  options.max_output_bytes = spec.max_output_bytes;
  options.capture_stderr = true;

  UPKEEP_ASSIGN_OR_RETURN(ProcessResult r, RunProcess(argv, options));
  const std::string what = Describe(spec, stage);
  if (r.timed_out) {
    return Error(Errc::ModuleTimeout, what + " timed out after " +
                                          std::to_string(spec.timeout.count()) + " ms" +
                                          OutputSuffix(r));
  }
  if (r.term_signal != 0) {
    return Error(Errc::ModuleKilled, what + " killed by signal " + std::to_string(r.term_signal) +
                                         " (" + ::strsignal(r.term_signal) + ")" + OutputSuffix(r));
  }
  if (r.exit_code != 0) {
    return Error(Errc::ModuleFailed,
                 what + " exited with status " + std::to_string(r.exit_code) + OutputSuffix(r));
  }
  StageResult result;
  result.exit_code = 0;
  result.output = std::move(r.output);
  result.output_truncated = r.output_truncated;
  result.duration = r.duration;
  return result;
}

Result<void> InstallComponent(const ModuleSpec& spec, const std::filesystem::path& work_dir) {
  std::string component = work_dir.string();
  if (auto header = ReadHeader(work_dir)) component = header->component;

  auto run = [&](Stage stage) -> Result<void> {
    auto r = RunStage(spec, stage, work_dir);
    if (!r) return std::move(r).error();
    log::debug("component {}: {} succeeded in {} ms{}{}", component, StageName(stage),
               r->duration.count(), r->output.empty() ? "" : "; output:\n", r->output);
    return Ok();
  };

  std::optional<Error> failure;
  Stage failed_stage = Stage::Download;
  for (Stage stage : {Stage::Download, Stage::Install, Stage::Commit}) {
    if (auto r = run(stage); !r) {
      failure = std::move(r).error();
      failed_stage = stage;
      break;
    }
  }
  if (!failure) {
    if (auto r = run(Stage::Cleanup); !r) {
      log::warn("component {}: installed and committed, but Cleanup failed: {}", component,
                r.error().ToString());
    }
    return Ok();
  }

  log::warn("component {}: {} failed, rolling back: {}", component, StageName(failed_stage),
            failure->ToString());
  auto rollback = run(Stage::Rollback);
  if (auto r = run(Stage::Cleanup); !r) {
    log::warn("component {}: Cleanup after Rollback failed: {}", component, r.error().ToString());
  }
  const std::string message =
      "component " + component + ": " + StageName(failed_stage) + " failed: " + failure->ToString();
  if (rollback) return Error(Errc::RolledBack, message + "; rolled back to the previous version");
  return Error(Errc::RollbackFailed,
               message + "; Rollback failed too: " + rollback.error().ToString());
}

}  // namespace upkeep::modules
