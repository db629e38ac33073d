#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "module_test_util.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/common/filesystem.hpp"
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
  // Ignores SIGTERM and would run for 30 s: only SIGKILL ends it before it writes "survived".
  // Its own bound is the test's deadline: RunStage returns even if no signal ever arrives.
  const fs::path survived = tmp / "survived";
  auto script =
      WriteScript(tmp / "m.sh", "trap '' TERM\necho $$ > " + (tmp / "module.pid").string() +
                                    "\ni=0\nwhile [ $i -lt 300 ]; do sleep 0.1; "
                                    "i=$((i+1)); done\necho yes > " +
                                    survived.string());
  auto r = RunStage(ScriptModule(script, milliseconds(200)), Stage::Install, tmp / "work");
  EXPECT_ERRC(r, Errc::ModuleTimeout);
  EXPECT_FALSE(fs::exists(survived)) << "the module ran to its end: no SIGKILL";
  const pid_t module = ReadPid(tmp / "module.pid");
  ASSERT_GT(module, 0);
  EXPECT_TRUE(ProcessEnded(module));
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

// Output cut by the tail limit starts at a character boundary, and invalid UTF-8 in a failing
// module's output reaches the Error as U+FFFD: the message can go into JSON as it is.
TEST(ModuleRunnerTest, OutputWithInvalidUtf8BecomesValidTextInErrors) {
  TempDir tmp;
  fs::create_directories(tmp / "work");
  // "x" then 5 euro signs (3 bytes each), a stray 0xff byte and a newline: 18 bytes.
  auto script = WriteScript(tmp / "m.sh",
                            "printf 'x\\342\\202\\254\\342\\202\\254\\342\\202\\254"
                            "\\342\\202\\254\\342\\202\\254\\377\\n'; exit \"$EXIT\"");
  WriteScript(tmp / "ok.sh", "EXIT=0 exec " + script.string() + " \"$@\"");
  WriteScript(tmp / "fail.sh", "EXIT=3 exec " + script.string() + " \"$@\"");
  ModuleSpec spec = ScriptModule(tmp / "ok.sh");
  spec.max_output_bytes = 9;  // cuts into the third euro sign from the end
  auto ok = RunStage(spec, Stage::Install, tmp / "work");
  ASSERT_TRUE(ok) << ok.error().ToString();
  EXPECT_TRUE(ok->output_truncated);
  EXPECT_EQ(ok->output, "\xE2\x82\xAC\xE2\x82\xAC\xFF\n");

  spec.command = {(tmp / "fail.sh").string()};
  spec.max_output_bytes = 64 * 1024;
  auto failed = RunStage(spec, Stage::Install, tmp / "work");
  EXPECT_ERRC(failed, Errc::ModuleFailed);
  const std::string& message = failed.error().message();
  EXPECT_NE(message.find("\xE2\x82\xAC\xEF\xBF\xBD\n"), std::string::npos) << message;
  EXPECT_EQ(message.find('\xFF'), std::string::npos);
  const nlohmann::json report = {{"error", failed.error().ToString()}};
  std::string dumped;
  EXPECT_NO_THROW(dumped = report.dump());
  EXPECT_FALSE(dumped.empty());
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
  EXPECT_EQ(ReadFileOrEmpty(tmp / "work" / "files" / "artifact.bin"), "payload");
  EXPECT_TRUE(fs::is_directory(tmp / "work" / "tmp"));
  EXPECT_EQ(fs::status(tmp / "work").permissions(), fs::perms::owner_all);
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

// Each installation starts from an empty work directory: module state and artifacts of the
// previous installation are gone, so they can be neither mistaken for this one's nor counted
// as a second artifact.
TEST(ModuleWorkDirTest, PreparingAgainStartsFromAnEmptyDirectory) {
  TempDir tmp;
  testing::WriteTextFile(tmp / "one" / "app-1.conf", "1");
  testing::WriteTextFile(tmp / "two" / "app-2.conf", "2");
  testing::MakeWorkDir(tmp / "work", "{}", {tmp / "one" / "app-1.conf"}, "1");
  testing::WriteTextFile(tmp / "work" / "dir.swap", "state of update 1");
  testing::WriteTextFile(tmp / "work" / "tmp" / "scratch", "x");
  testing::MakeWorkDir(tmp / "work", "{}", {tmp / "two" / "app-2.conf"}, "2");
  std::vector<std::string> entries;
  for (const auto& e : fs::recursive_directory_iterator(tmp / "work")) {
    entries.push_back(fs::relative(e.path(), tmp / "work").string());
  }
  std::sort(entries.begin(), entries.end());
  EXPECT_EQ(entries, (std::vector<std::string>{"files", "files/app-2.conf", "header.json", "tmp"}));
  auto header = ReadHeader(tmp / "work");
  ASSERT_TRUE(header) << header.error().ToString();
  EXPECT_EQ(header->version, "2");
}

// A symbolic link at the work directory's path is refused: nothing is written where it points
// and the link stays (an operator must look at it).
TEST(ModuleWorkDirTest, RefusesWorkDirThatIsASymlink) {
  TempDir tmp;
  testing::WriteTextFile(tmp / "victim" / "precious", "keep");
  fs::create_directory_symlink(tmp / "victim", tmp / "work");
  testing::WriteTextFile(tmp / "artifact.bin", "payload");
  ComponentHeader header;
  header.component = "c";
  std::vector<fs::path> artifacts = {tmp / "artifact.bin"};
  EXPECT_ERRC(PrepareWorkDir(tmp / "work", header, artifacts), Errc::WorkDirFailed);
  EXPECT_TRUE(fs::is_symlink(tmp / "work"));
  EXPECT_EQ(ReadFileOrEmpty(tmp / "victim" / "precious"), "keep");
  EXPECT_FALSE(fs::exists(tmp / "victim" / "header.json"));
  EXPECT_FALSE(fs::exists(tmp / "victim" / "files"));
}

// A work directory path ending in ".." or "." names a directory that is not a work directory
// (the data directory itself): it is refused, and nothing is removed.
TEST(ModuleWorkDirTest, RefusesWorkDirPathEndingInDotDot) {
  TempDir tmp;
  testing::WriteTextFile(tmp / "data" / "journal", "keep");
  fs::create_directories(tmp / "data" / "modules");
  ComponentHeader header;
  header.component = "c";
  EXPECT_ERRC(PrepareWorkDir(tmp / "data" / "modules" / "..", header, {}), Errc::WorkDirFailed);
  EXPECT_ERRC(PrepareWorkDir(tmp / "data" / "modules" / ".", header, {}), Errc::WorkDirFailed);
  EXPECT_EQ(ReadFileOrEmpty(tmp / "data" / "journal"), "keep");
  EXPECT_TRUE(fs::is_directory(tmp / "data" / "modules"));
}

// Links planted inside an old work directory (at files/, or pointing at another directory)
// are removed as links: their targets are neither emptied nor written to.
TEST(ModuleWorkDirTest, PlantedLinksInOldWorkDirRedirectNothing) {
  TempDir tmp;
  testing::WriteTextFile(tmp / "victim" / "precious", "keep");
  fs::create_directories(tmp / "work");
  fs::create_directory_symlink(tmp / "victim", tmp / "work" / "files");
  fs::create_directory_symlink(tmp / "victim", tmp / "work" / "state");
  testing::WriteTextFile(tmp / "artifact.bin", "payload");
  testing::MakeWorkDir(tmp / "work", "{}", {tmp / "artifact.bin"});
  EXPECT_EQ(ReadFileOrEmpty(tmp / "victim" / "precious"), "keep");
  EXPECT_FALSE(fs::exists(tmp / "victim" / "artifact.bin"));
  EXPECT_FALSE(fs::is_symlink(tmp / "work" / "files"));
  EXPECT_EQ(ReadFileOrEmpty(tmp / "work" / "files" / "artifact.bin"), "payload");
  EXPECT_FALSE(fs::exists(fs::symlink_status(tmp / "work" / "state")));
}

// PrepareWorkDir writes header.json through the injected Filesystem; its failure is reported
// as WorkDirFailed.
TEST(ModuleWorkDirTest, UsesTheInjectedFilesystem) {
  class FailingWrites final : public Filesystem {
   public:
    Result<std::string> ReadFile(const fs::path& p, std::uint64_t max) const override {
      return local_.ReadFile(p, max);
    }
    Result<void> WriteFileAtomic(const fs::path& p, std::string_view, Durability) override {
      ++writes;
      return Error(common::Errc::IoError, "injected failure writing " + p.string());
    }
    Result<void> SyncDirectory(const fs::path& dir) override { return local_.SyncDirectory(dir); }
    Result<std::unique_ptr<AtomicFile>> CreateAtomic(const fs::path& p) override {
      return local_.CreateAtomic(p);
    }
    Result<void> ReadChunks(const fs::path& p, const ChunkSink& sink) const override {
      return local_.ReadChunks(p, sink);
    }
    Result<bool> Exists(const fs::path& p) const override { return local_.Exists(p); }
    Result<void> Remove(const fs::path& p) override { return local_.Remove(p); }
    Result<void> CreateDirectories(const fs::path& p) override {
      return local_.CreateDirectories(p);
    }
    Result<void> AppendFile(const fs::path& p, std::string_view data) override {
      return local_.AppendFile(p, data);
    }
    Result<std::uint64_t> FileSize(const fs::path& p) const override { return local_.FileSize(p); }
    Result<std::vector<std::string>> ListDirectory(const fs::path& dir) const override {
      return local_.ListDirectory(dir);
    }
    Result<void> Rename(const fs::path& from, const fs::path& to) override {
      return local_.Rename(from, to);
    }
    int writes = 0;

   private:
    LocalFilesystem local_;
  };
  TempDir tmp;
  FailingWrites failing;
  ComponentHeader header;
  header.component = "c";
  EXPECT_ERRC(PrepareWorkDir(failing, tmp / "work", header, {}), Errc::WorkDirFailed);
  EXPECT_EQ(failing.writes, 1);
  EXPECT_FALSE(fs::exists(tmp / "work" / "header.json"));
  EXPECT_FALSE(ReadHeader(failing, tmp / "work"));
}

}  // namespace
}  // namespace upkeep::modules
