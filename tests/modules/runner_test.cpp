#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "module_test_util.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/modules/module.hpp"

namespace upkeep::modules {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using testing::ReadFileOrEmpty;
using testing::TempDir;
using testing::WriteScript;

ModuleSpec ScriptModule(const fs::path& script, milliseconds timeout = milliseconds(10000)) {
  ModuleSpec spec;
  spec.command = {script.string()};
  spec.timeout = timeout;
  spec.kill_grace = milliseconds(200);
  return spec;
}

// True once `pid` is gone (or a zombie waiting for its new parent to reap it).
bool ProcessEnded(pid_t pid) {
  for (int i = 0; i < 100; ++i) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    if (!stat) return true;
    std::string line;
    std::getline(stat, line);
    auto close = line.rfind(')');
    if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z') {
      return true;
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

pid_t ReadPid(const fs::path& file) {
  for (int i = 0; i < 100; ++i) {
    std::string text = ReadFileOrEmpty(file);
    if (!text.empty() && text.back() == '\n') return static_cast<pid_t>(std::stoi(text));
    std::this_thread::sleep_for(milliseconds(20));
  }
  return -1;
}

TEST(ModuleRunnerTest, PassesStageAndWorkDirWithCleanEnvironment) {
  TempDir tmp;
  fs::create_directories(tmp / "work");
  auto script = WriteScript(tmp / "m.sh", "echo \"args=$1 $2\"; echo \"pwd=$(pwd)\"; env | sort");
  ::setenv("UPKEEP_RUNNER_TEST_SECRET", "must-not-leak", 1);
  auto r = RunStage(ScriptModule(script), Stage::Install, tmp / "work");
  ::unsetenv("UPKEEP_RUNNER_TEST_SECRET");
  ASSERT_TRUE(r) << r.error().ToString();
  const std::string work = (tmp / "work").string();
  EXPECT_NE(r->output.find("args=Install " + work + "\n"), std::string::npos) << r->output;
  EXPECT_NE(r->output.find("pwd=" + work + "\n"), std::string::npos) << r->output;
  EXPECT_NE(r->output.find("PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"), std::string::npos);
  EXPECT_NE(r->output.find("UPKEEP_STAGE=Install\n"), std::string::npos);
  EXPECT_NE(r->output.find("UPKEEP_WORKDIR=" + work + "\n"), std::string::npos);
  EXPECT_EQ(r->output.find("must-not-leak"), std::string::npos) << r->output;
  EXPECT_EQ(r->output.find("HOME="), std::string::npos) << r->output;
  EXPECT_EQ(r->exit_code, 0);
}

TEST(ModuleRunnerTest, ReportsNonZeroExitWithOutput) {
  TempDir tmp;
  fs::create_directories(tmp / "work");
  auto script = WriteScript(tmp / "m.sh", "echo to-stdout; echo to-stderr >&2; exit 3");
  auto r = RunStage(ScriptModule(script), Stage::Install, tmp / "work");
  EXPECT_ERRC(r, Errc::ModuleFailed);
  EXPECT_NE(r.error().message().find("status 3"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("to-stdout"), std::string::npos);
  EXPECT_NE(r.error().message().find("to-stderr"), std::string::npos);
  EXPECT_NE(r.error().message().find("Install"), std::string::npos);
}

TEST(ModuleRunnerTest, StdinIsDevNull) {
  TempDir tmp;
  fs::create_directories(tmp / "work");
  auto script = WriteScript(tmp / "m.sh", "cat; echo done");
  auto r = RunStage(ScriptModule(script, milliseconds(5000)), Stage::Download, tmp / "work");
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->output, "done\n");
}

// A stage past its timeout is ended with its whole process group, and reported as a timeout.
TEST(ModuleRunnerTest, KillsModuleThatExceedsTimeout) {
  TempDir tmp;
  fs::create_directories(tmp / "work");
  auto script = WriteScript(tmp / "m.sh", "sleep 30 &\necho $! > " + (tmp / "child.pid").string() +
                                              "\necho started\nsleep 30");
  auto r = RunStage(ScriptModule(script, milliseconds(200)), Stage::Install, tmp / "work");
  EXPECT_ERRC(r, Errc::ModuleTimeout);
  EXPECT_NE(r.error().message().find("started"), std::string::npos) << r.error().message();
  pid_t child = ReadPid(tmp / "child.pid");
  ASSERT_GT(child, 0);
  EXPECT_TRUE(ProcessEnded(child)) << "background process " << child << " survived";
}

// A module that ignores SIGTERM still ends: SIGKILL follows after the grace period.
TEST(ModuleRunnerTest, EscalatesToSigkillWhenModuleIgnoresSigterm) {
  TempDir tmp;
  fs::create_directories(tmp / "work");
  // Ignores SIGTERM and never ends by itself: only SIGKILL can return from this stage.
  auto script = WriteScript(tmp / "m.sh", "trap '' TERM\nwhile :; do sleep 1; done");
  auto r = RunStage(ScriptModule(script, milliseconds(200)), Stage::Install, tmp / "work");
  EXPECT_ERRC(r, Errc::ModuleTimeout);
}

TEST(ModuleRunnerTest, ReportsModuleKilledBySignal) {
  TempDir tmp;
  fs::create_directories(tmp / "work");
  auto script = WriteScript(tmp / "m.sh", "echo dying; kill -KILL $$");
  auto r = RunStage(ScriptModule(script), Stage::Commit, tmp / "work");
  EXPECT_ERRC(r, Errc::ModuleKilled);
  EXPECT_NE(r.error().message().find("signal 9"), std::string::npos) << r.error().message();
}

TEST(ModuleRunnerTest, KillsProcessesLeftBehindByModule) {
  TempDir tmp;
  fs::create_directories(tmp / "work");
  auto script = WriteScript(tmp / "m.sh",
                            "sleep 30 &\necho $! > " + (tmp / "child.pid").string() + "\nexit 0");
  auto r = RunStage(ScriptModule(script), Stage::Cleanup, tmp / "work");
  ASSERT_TRUE(r) << r.error().ToString();
  pid_t child = ReadPid(tmp / "child.pid");
  ASSERT_GT(child, 0);
  EXPECT_TRUE(ProcessEnded(child));
}

TEST(ModuleRunnerTest, KeepsOnlyTheOutputTail) {
  TempDir tmp;
  fs::create_directories(tmp / "work");
  auto script = WriteScript(tmp / "m.sh", "head -c 200000 /dev/zero | tr '\\0' x; echo; echo END");
  ModuleSpec spec = ScriptModule(script);
  spec.max_output_bytes = 1000;
  auto r = RunStage(spec, Stage::Install, tmp / "work");
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(r->output.size(), 1000u);
  EXPECT_TRUE(r->output_truncated);
  EXPECT_EQ(r->output.substr(r->output.size() - 4), "END\n");
}

TEST(ModuleRunnerTest, ReportsMissingModule) {
  TempDir tmp;
  fs::create_directories(tmp / "work");
  EXPECT_ERRC(RunStage(ScriptModule(tmp / "no-such-module"), Stage::Install, tmp / "work"),
              Errc::ModuleNotFound);
  ModuleSpec empty;
  EXPECT_ERRC(RunStage(empty, Stage::Install, tmp / "work"), Errc::InvalidSpec);
}

TEST(ModuleRunnerTest, ReportsMissingWorkDir) {
  TempDir tmp;
  auto script = WriteScript(tmp / "m.sh", "exit 0");
  EXPECT_ERRC(RunStage(ScriptModule(script), Stage::Install, tmp / "missing"), Errc::WorkDirFailed);
}

TEST(ModuleRunnerTest, StageNamesRoundTrip) {
  for (Stage s :
       {Stage::Download, Stage::Install, Stage::Commit, Stage::Rollback, Stage::Cleanup}) {
    EXPECT_EQ(ParseStage(StageName(s)), s);
  }
  EXPECT_EQ(ParseStage("install"), std::nullopt);
}

// A module recording each stage it runs into WORKDIR/stages; fails (exit 1) at the stages
// listed in `failing` (e.g. "Install|Rollback").
ModuleSpec RecordingModule(const TempDir& tmp, const std::string& failing) {
  auto script = WriteScript(tmp / "recording.sh",
                            "echo \"$1\" >> \"$2/stages\"\n"
                            "case \"$1\" in " +
                                failing +
                                ") echo \"$1 broke\"; exit 1;; esac\n"
                                "exit 0");
  return ScriptModule(script);
}

std::string Stages(const fs::path& work) { return ReadFileOrEmpty(work / "stages"); }

TEST(ModuleInstallTest, RunsAllStagesInOrderOnSuccess) {
  TempDir tmp;
  auto work = testing::MakeWorkDir(tmp / "work", "{}", {});
  EXPECT_TRUE(InstallComponent(RecordingModule(tmp, "None"), work));
  EXPECT_EQ(Stages(work), "Download\nInstall\nCommit\nCleanup\n");
}

// A failed Install is undone: Rollback runs, then Cleanup, and the caller learns both.
TEST(ModuleInstallTest, InstallFailureRunsRollback) {
  TempDir tmp;
  auto work = testing::MakeWorkDir(tmp / "work", "{}", {});
  auto r = InstallComponent(RecordingModule(tmp, "Install"), work);
  EXPECT_ERRC(r, Errc::RolledBack);
  EXPECT_NE(r.error().message().find("Install broke"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("test-component"), std::string::npos);
  EXPECT_EQ(Stages(work), "Download\nInstall\nRollback\nCleanup\n");
}

TEST(ModuleInstallTest, DownloadAndCommitFailuresRunRollback) {
  for (const char* stage : {"Download", "Commit"}) {
    TempDir tmp;
    auto work = testing::MakeWorkDir(tmp / "work", "{}", {});
    EXPECT_ERRC(InstallComponent(RecordingModule(tmp, stage), work), Errc::RolledBack);
    EXPECT_NE(Stages(work).find("Rollback\nCleanup\n"), std::string::npos) << stage;
  }
}

TEST(ModuleInstallTest, ReportsRollbackFailure) {
  TempDir tmp;
  auto work = testing::MakeWorkDir(tmp / "work", "{}", {});
  auto r = InstallComponent(RecordingModule(tmp, "Install|Rollback"), work);
  EXPECT_ERRC(r, Errc::RollbackFailed);
  EXPECT_NE(r.error().message().find("Rollback broke"), std::string::npos);
  EXPECT_EQ(Stages(work), "Download\nInstall\nRollback\nCleanup\n");
}

TEST(ModuleInstallTest, TimeoutDuringInstallIsRolledBack) {
  TempDir tmp;
  auto work = testing::MakeWorkDir(tmp / "work", "{}", {});
  auto script = WriteScript(tmp / "slow.sh",
                            "echo \"$1\" >> \"$2/stages\"\n"
                            "if [ \"$1\" = Install ]; then sleep 30; fi");
  auto r = InstallComponent(ScriptModule(script, milliseconds(200)), work);
  EXPECT_ERRC(r, Errc::RolledBack);
  EXPECT_NE(r.error().message().find("ModuleTimeout"), std::string::npos) << r.error().message();
}

TEST(ModuleWorkDirTest, PreparesHeaderFilesAndTmp) {
  TempDir tmp;
  testing::WriteTextFile(tmp / "artifact.bin", "payload");
  ComponentHeader header;
  header.component = "app-config";
  header.version = "2.1";
  header.target = "configs/app-config-2.1.bin";
  header.module_args_json = R"({"dest": "/etc/app.conf", "nested": {"k": [1, 2]}})";
  std::vector<fs::path> artifacts = {tmp / "artifact.bin"};
  ASSERT_TRUE(PrepareWorkDir(tmp / "work", header, artifacts));
  // Preparing again (a restarted update) succeeds and keeps module state.
  testing::WriteTextFile(tmp / "work" / "file.backup", "state");
  ASSERT_TRUE(PrepareWorkDir(tmp / "work", header, artifacts));
  EXPECT_EQ(ReadFileOrEmpty(tmp / "work" / "files" / "artifact.bin"), "payload");
  EXPECT_EQ(ReadFileOrEmpty(tmp / "work" / "file.backup"), "state");
  EXPECT_TRUE(fs::is_directory(tmp / "work" / "tmp"));
  auto read = ReadHeader(tmp / "work");
  ASSERT_TRUE(read) << read.error().ToString();
  EXPECT_EQ(read->component, "app-config");
  EXPECT_EQ(read->version, "2.1");
  EXPECT_EQ(read->target, "configs/app-config-2.1.bin");
  EXPECT_EQ(read->module_args_json, R"({"dest":"/etc/app.conf","nested":{"k":[1,2]}})");
}

TEST(ModuleWorkDirTest, RejectsModuleArgsThatAreNotAnObject) {
  TempDir tmp;
  ComponentHeader header;
  header.component = "c";
  header.module_args_json = "[1]";
  EXPECT_ERRC(PrepareWorkDir(tmp / "work", header, {}), Errc::InvalidHeader);
  header.module_args_json = "{not json";
  EXPECT_ERRC(PrepareWorkDir(tmp / "work", header, {}), Errc::InvalidHeader);
}

TEST(ModuleWorkDirTest, ReadHeaderRejectsMalformedHeader) {
  TempDir tmp;
  EXPECT_ERRC(ReadHeader(tmp.path()), Errc::InvalidHeader);
  testing::WriteTextFile(tmp / "header.json", "{\"component\": 3}");
  EXPECT_ERRC(ReadHeader(tmp.path()), Errc::InvalidHeader);
  testing::WriteTextFile(tmp / "header.json",
                         R"({"component":"c","version":"1","target":"t","module_args":"x"})");
  EXPECT_ERRC(ReadHeader(tmp.path()), Errc::InvalidHeader);
}

TEST(ModuleWorkDirTest, ArtifactMissingIsWorkDirFailure) {
  TempDir tmp;
  ComponentHeader header;
  header.component = "c";
  std::vector<fs::path> artifacts = {tmp / "missing.bin"};
  EXPECT_ERRC(PrepareWorkDir(tmp / "work", header, artifacts), Errc::WorkDirFailed);
}

}  // namespace
}  // namespace upkeep::modules
