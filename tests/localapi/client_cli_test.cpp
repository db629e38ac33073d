// The upkeep-agent commands that talk to a running daemon (apps/upkeep-agent/client_cli.hpp),
// against the real LocalApiServer with a scripted backend in a temporary directory: output, exit
// codes (docs/agent.md), --json lines that parse.

#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <sstream>

#include "cli.hpp"
#include "client_cli.hpp"
#include "client_fakes.hpp"
#include "test_util.hpp"
#include "upkeep/common/scratch_dir.hpp"
#include "upkeep/localapi/server.hpp"
#include "upkeep/metadata/canonical_json.hpp"

namespace upkeep::agent {
namespace {

using namespace std::chrono_literals;
using localapi::Status;
using localapi::UpdateState;
using localapi::testing::kT0;
using localapi::testing::ScriptedBackend;
using metadata::Json;

struct CliRun {
  int code = -1;
  std::string out;
  std::string err;
};

class ClientCliTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }

  std::filesystem::path socket_path() const { return dir_.path() / "agent.sock"; }

  void StartServer() {
    localapi::LocalApiOptions o;
    o.socket_path = socket_path();
    auto s = localapi::LocalApiServer::Start(o, backend_);
    ASSERT_TRUE(s.has_value()) << s.error().message();
    server_ = std::move(s).value();
  }

  ClientOptions Options() const {
    ClientOptions o;
    o.socket = socket_path().string();
    o.poll_interval = 5ms;
    o.progress_bar = false;
    o.check_timeout = 20s;
    o.follow_timeout = 20s;
    return o;
  }

  CliRun Run(const std::vector<std::string>& args, ClientOptions o) {
    CLI::App app{"upkeep-agent"};
    auto commands = AddClientCommands(app, o);
    std::vector<const char*> argv{"upkeep-agent"};
    for (const auto& a : args) argv.push_back(a.c_str());
    CliRun r;
    try {
      app.parse(static_cast<int>(argv.size()), argv.data());
    } catch (const CLI::ParseError& e) {
      r.code = kExitUsage;
      r.err = e.what();
      return r;
    }
    EXPECT_TRUE(commands->parsed());
    std::ostringstream out, err;
    r.code = RunClientCommand(*commands, out, err);
    r.out = out.str();
    r.err = err.str();
    return r;
  }
  CliRun Run(const std::vector<std::string>& args) { return Run(args, Options()); }

  // Every line of `text` parsed as JSON.
  static std::vector<Json> JsonLines(const std::string& text) {
    std::vector<Json> lines;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      auto j = metadata::ParseJson(line);
      EXPECT_TRUE(j.has_value()) << line;
      if (j) lines.push_back(*j);
    }
    return lines;
  }

  std::filesystem::path Bundle(const std::string& content = "BUNDLE") {
    const auto p = dir_.path() / "update.bundle";
    std::ofstream(p) << content;
    return p;
  }

  ScratchDir dir_{"agent-client-cli"};
  ScriptedBackend backend_;
  std::unique_ptr<localapi::LocalApiServer> server_;
};

TEST_F(ClientCliTest, StatusShowsDeviceSupportAndProgress) {
  StartServer();
  const auto r = Run({"status"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("model: Acme Thermostat T2\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("hardware: rev-c\n"), std::string::npos);
  EXPECT_NE(r.out.find("component firmware: 1.4.2\n"), std::string::npos);
  EXPECT_NE(r.out.find("security updates until: 2031-12-06T00:00:00Z\n"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("state: downloading (update sec-2026-12)\n"), std::string::npos);
  EXPECT_NE(r.out.find("progress: 25% (512/2048 bytes)\n"), std::string::npos);
  EXPECT_NE(r.out.find("last check: 2026-12-07T00:00:00Z\n"), std::string::npos);
}

TEST_F(ClientCliTest, StatusJsonParses) {
  StartServer();
  const auto r = Run({"status", "--json"});
  ASSERT_EQ(r.code, kExitOk) << r.out;
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["type"], "result");
  EXPECT_EQ(lines[0]["result"]["device"]["model"], "Acme Thermostat T2");
  EXPECT_EQ(lines[0]["result"]["support"]["ended"], false);
  EXPECT_EQ(lines[0]["result"]["status"]["state"], "downloading");
  EXPECT_EQ(lines[0]["result"]["status"]["progress"]["done"], 512);
}

TEST_F(ClientCliTest, JsonFlagAlsoWorksBeforeTheCommand) {
  StartServer();
  const auto r = Run({"--json", "notices"});
  ASSERT_EQ(r.code, kExitOk) << r.out;
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["result"]["notices"][0]["kind"], "security");
  EXPECT_EQ(lines[0]["result"]["notices"][0]["install_by"], "2026-12-14T00:00:00Z");
}

// The daemon's text reaches the terminal without control characters or forged lines.
TEST_F(ClientCliTest, NoticesPrintDaemonTextSafely) {
  {
    std::lock_guard l(backend_.mu);
    backend_.notices[0].title = "Security\x1b[31m update\nforged: line";
    backend_.notices[0].text = "line one\nline two\x07";
  }
  StartServer();
  const auto r = Run({"notices"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\x07'), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[security] Security?[31m update forged: line (update sec-2026-12"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("  line one\n  line two?\n"), std::string::npos) << r.out;
}

TEST_F(ClientCliTest, CheckStartsACheck) {
  StartServer();
  const auto r = Run({"check"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out, "check started\n");
  std::lock_guard l(backend_.mu);
  EXPECT_NE(std::find(backend_.calls.begin(), backend_.calls.end(), "check"),
            backend_.calls.end());
}

TEST_F(ClientCliTest, CheckWaitFollowsUntilTheCheckEnds) {
  {
    std::lock_guard l(backend_.mu);
    backend_.status = Status{UpdateState::kIdle, std::nullopt, std::nullopt, kT0};
    backend_.AddEvent("state", "an old event");
  }
  StartServer();
  const auto r = Run({"check", "--wait"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out, "check finished: idle\n");
  EXPECT_EQ(r.err, "check: no update available\n");  // only events after the request
}

TEST_F(ClientCliTest, CheckWaitJsonEndsWithTheStatus) {
  {
    std::lock_guard l(backend_.mu);
    backend_.status = Status{UpdateState::kIdle, std::nullopt, std::nullopt, kT0};
  }
  StartServer();
  const auto r = Run({"check", "--wait", "--json"});
  ASSERT_EQ(r.code, kExitOk) << r.out;
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_EQ(lines[0]["type"], "event");
  EXPECT_EQ(lines[0]["event"], "check");
  EXPECT_EQ(lines[1]["type"], "result");
  EXPECT_EQ(lines[1]["result"]["last_check"], "2026-12-07T01:00:00Z");
}

TEST_F(ClientCliTest, PolicyShowsAndSets) {
  StartServer();
  auto r = Run({"policy"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out,
            "auto-install: on\nnotifications: on\nsecurity-auto-install: on\nreboot-later: off\n");
  r = Run({"policy", "set", "auto-install", "off"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("auto-install: off\n"), std::string::npos) << r.out;
  r = Run({"policy", "set", "reboot-later", "on", "--json"});
  ASSERT_EQ(r.code, kExitOk) << r.out;
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["result"]["reboot_later"], true);
  EXPECT_EQ(lines[0]["result"]["auto_install"], false);
  std::lock_guard l(backend_.mu);
  EXPECT_FALSE(backend_.policy.auto_install);
  EXPECT_TRUE(backend_.policy.reboot_later);
  EXPECT_TRUE(backend_.policy.notifications);
}

// Turning automatic security updates off needs an explicit confirmation (docs/policy.md).
TEST_F(ClientCliTest, SecurityAutoInstallOffNeedsConfirm) {
  StartServer();
  auto r = Run({"policy", "set", "security-auto-install", "off"});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_NE(r.err.find("--confirm"), std::string::npos) << r.err;
  {
    std::lock_guard l(backend_.mu);
    EXPECT_TRUE(backend_.policy.security_auto_install);
  }
  r = Run({"policy", "set", "security-auto-install", "off", "--confirm"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  std::lock_guard l(backend_.mu);
  EXPECT_FALSE(backend_.policy.security_auto_install);
}

TEST_F(ClientCliTest, PolicySetRefusesUnknownSettingAndValue) {
  StartServer();
  EXPECT_EQ(Run({"policy", "set", "telemetry", "on"}).code, kExitUsage);
  EXPECT_EQ(Run({"policy", "set", "auto-install", "maybe"}).code, kExitUsage);
}

TEST_F(ClientCliTest, PostponeUntilAndFor) {
  StartServer();
  auto r = Run({"postpone", "sec-2026-12", "--until", "2026-12-09T12:00:00Z"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out, "postponed sec-2026-12 until 2026-12-09T12:00:00Z\n");
  {
    std::lock_guard l(backend_.mu);
    ASSERT_TRUE(backend_.postponed.has_value());
    EXPECT_EQ(backend_.postponed->until, kT0 + 60h);
  }
  r = Run({"postpone", "sec-2026-12", "--until", "2026-12-10"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  {
    std::lock_guard l(backend_.mu);
    EXPECT_EQ(backend_.postponed->until, kT0 + 72h);
  }
  const auto before = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  r = Run({"postpone", "sec-2026-12", "--for", "3d"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  std::lock_guard l(backend_.mu);
  EXPECT_GE(backend_.postponed->until, before + std::chrono::days(3));
}

TEST_F(ClientCliTest, PostponeReportsTheCap) {
  {
    std::lock_guard l(backend_.mu);
    backend_.postpone_cap = kT0 + 24h;
  }
  StartServer();
  const auto r = Run({"postpone", "sec-2026-12", "--until", "2026-12-20", "--json"});
  ASSERT_EQ(r.code, kExitOk) << r.out;
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["result"]["until"], "2026-12-08T00:00:00Z");
  EXPECT_EQ(lines[0]["result"]["capped"], true);
}

TEST_F(ClientCliTest, PostponeArgumentErrors) {
  StartServer();
  EXPECT_EQ(Run({"postpone", "u"}).code, kExitUsage);
  EXPECT_EQ(Run({"postpone", "u", "--until", "2026-12-10", "--for", "1d"}).code, kExitUsage);
  EXPECT_EQ(Run({"postpone", "u", "--until", "tomorrow"}).code, kExitUsage);
  EXPECT_EQ(Run({"postpone", "u", "--for", "3 days"}).code, kExitUsage);
  EXPECT_EQ(Run({"postpone", "u", "--for", "0d"}).code, kExitUsage);
  EXPECT_EQ(Run({"postpone", "u", "--for", "99999999999w"}).code, kExitUsage);
  std::lock_guard l(backend_.mu);
  EXPECT_FALSE(backend_.postponed.has_value());
}

TEST_F(ClientCliTest, DaemonErrorsMapToExitCodes) {
  StartServer();
  const std::pair<localapi::Errc, int> cases[] = {
      {localapi::Errc::NotFound, kExitUsage},       {localapi::Errc::InvalidArgument, kExitUsage},
      {localapi::Errc::Conflict, kExitState},       {localapi::Errc::Unavailable, kExitState},
      {localapi::Errc::Forbidden, kExitRefused},    {localapi::Errc::CannotListen, kExitDevice},
  };
  for (const auto& [code, exit_code] : cases) {
    {
      std::lock_guard l(backend_.mu);
      backend_.fail = std::make_pair(std::string("postpone"), code);
    }
    const auto r = Run({"postpone", "sec-2026-12", "--for", "1d"});
    EXPECT_EQ(r.code, exit_code) << r.err;
    EXPECT_EQ(r.err.find("secret"), std::string::npos) << r.err;
  }
}

TEST_F(ClientCliTest, InstallFollowsProgressUntilAwaitingReboot) {
  {
    std::lock_guard l(backend_.mu);
    backend_.status = Status{UpdateState::kAwaitingReboot, "fw-2", std::nullopt, kT0};
    backend_.install_script = {
        Status{UpdateState::kVerifying, "fw-2", localapi::Progress{0, 100}, kT0},
        Status{UpdateState::kInstalling, "fw-2", localapi::Progress{50, 100}, kT0},
        Status{UpdateState::kInstalling, "fw-2", localapi::Progress{100, 100}, kT0}};
  }
  StartServer();
  const auto bundle = Bundle("BUNDLE-BYTES");
  const auto r = Run({"install", bundle.string()});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out, "installed; reboot to start the new system\n");
  EXPECT_EQ(r.err, "verifying 0%\ninstalling 50%\ninstalling 100%\n");
  std::lock_guard l(backend_.mu);
  EXPECT_EQ(backend_.install_path, bundle.string());
  EXPECT_EQ(backend_.bundle_bytes, "BUNDLE-BYTES");
}

TEST_F(ClientCliTest, InstallDrawsAProgressBarOnATerminal) {
  {
    std::lock_guard l(backend_.mu);
    backend_.status = Status{UpdateState::kAwaitingReboot, "fw-2", std::nullopt, kT0};
    backend_.install_script = {
        Status{UpdateState::kInstalling, "fw-2", localapi::Progress{30, 100}, kT0},
        Status{UpdateState::kInstalling, "fw-2", localapi::Progress{100, 100}, kT0}};
  }
  StartServer();
  auto o = Options();
  o.progress_bar = true;
  const auto r = Run({"install", Bundle().string()}, o);
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.err,
            "\r#########..................... 30% installing   "
            "\r############################## 100% installing   \n");
  EXPECT_EQ(r.out, "installed; reboot to start the new system\n");
}

TEST_F(ClientCliTest, InstallEndsOnTheInstalledEvent) {
  {
    std::lock_guard l(backend_.mu);
    backend_.status = Status{UpdateState::kIdle, std::nullopt, std::nullopt, kT0};
    backend_.install_script = {Status{UpdateState::kInstalling, "app-3", std::nullopt, kT0}};
    backend_.pending_events = {{"state", "installing app-3"}, {"installed", "app 3.0"}};
  }
  StartServer();
  const auto r = Run({"install", Bundle().string(), "--json"});
  ASSERT_EQ(r.code, kExitOk) << r.out;
  const auto lines = JsonLines(r.out);
  ASSERT_GE(lines.size(), 2u) << r.out;
  EXPECT_EQ(lines.back()["type"], "result");
  EXPECT_EQ(lines.back()["result"]["install_id"], "install-1");
  EXPECT_EQ(lines.back()["result"]["reboot_required"], false);
  bool saw_progress = false;
  for (const auto& j : lines) saw_progress |= j["type"] == "progress";
  EXPECT_TRUE(saw_progress) << r.out;
}

// A device already waiting for a reboot (an earlier install) does not end the new install at
// once: its own "installed" event does.
TEST_F(ClientCliTest, InstallWhileAwaitingRebootWaitsForItsOwnEvent) {
  const Status awaiting{UpdateState::kAwaitingReboot, "fw-1", std::nullopt, kT0};
  {
    std::lock_guard l(backend_.mu);
    backend_.status = awaiting;
    backend_.install_script = {awaiting, awaiting, awaiting};
    backend_.pending_events = {{"installed", "app 3.0"}};
  }
  StartServer();
  const auto r = Run({"install", Bundle().string()});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out, "installed; reboot to start the new system\n");
  std::lock_guard l(backend_.mu);
  EXPECT_TRUE(backend_.status_script.empty());  // it followed past the first "awaiting_reboot"
}

TEST_F(ClientCliTest, InstallThatEndsWithoutAResultIsADeviceFailure) {
  {
    std::lock_guard l(backend_.mu);
    backend_.status = Status{UpdateState::kIdle, std::nullopt, std::nullopt, kT0};
    backend_.install_script = {Status{UpdateState::kInstalling, "fw-2", std::nullopt, kT0}};
  }
  StartServer();
  const auto r = Run({"install", Bundle().string()});
  EXPECT_EQ(r.code, kExitDevice) << r.err;
  EXPECT_NE(r.err.find("without a result"), std::string::npos) << r.err;
}

TEST_F(ClientCliTest, InstallSendsAnAbsolutePath) {
  StartServer();
  {
    std::lock_guard l(backend_.mu);
    backend_.pending_events = {{"installed", "done"}};
  }
  const auto bundle = Bundle();
  std::error_code ec;
  const auto relative = std::filesystem::relative(bundle, std::filesystem::current_path(), ec);
  ASSERT_FALSE(ec);
  ASSERT_TRUE(relative.is_relative());
  const auto r = Run({"install", relative.string()});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  std::lock_guard l(backend_.mu);
  EXPECT_EQ(std::filesystem::path(backend_.install_path), bundle);
}

// EN 303 645 5.3-9: the initiator of a rejected install learns "update rejected" and nothing
// else: not the daemon's words, not which check failed.
TEST_F(ClientCliTest, RejectedInstallPrintsOnlyUpdateRejected) {
  {
    std::lock_guard l(backend_.mu);
    backend_.reject_install = true;
  }
  StartServer();
  const auto r = Run({"install", Bundle().string()});
  EXPECT_EQ(r.code, kExitRejected);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "update rejected\n");
}

TEST_F(ClientCliTest, InstallRejectedLaterPrintsOnlyUpdateRejected) {
  {
    std::lock_guard l(backend_.mu);
    backend_.status = Status{UpdateState::kIdle, std::nullopt, std::nullopt, kT0};
    backend_.pending_events = {{"rejected", "signature of app.img by key 1234 does not verify"}};
  }
  StartServer();
  auto r = Run({"install", Bundle().string()});
  EXPECT_EQ(r.code, kExitRejected);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "update rejected\n");
}

TEST_F(ClientCliTest, RejectedInstallJsonSaysOnlyRejected) {
  {
    std::lock_guard l(backend_.mu);
    backend_.reject_install = true;
  }
  StartServer();
  const auto r = Run({"install", Bundle().string(), "--json"});
  EXPECT_EQ(r.code, kExitRejected);
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.out;
  EXPECT_EQ(lines[0]["type"], "error");
  EXPECT_EQ(lines[0]["code"], "localapi.Rejected");
  EXPECT_EQ(lines[0]["message"], "update rejected");
  EXPECT_EQ(lines[0]["exit_code"], kExitRejected);
  EXPECT_EQ(r.err, "");
}

TEST_F(ClientCliTest, InstallThatStaysBusyEndsAtTheTimeout) {
  {
    std::lock_guard l(backend_.mu);
    backend_.status = Status{UpdateState::kInstalling, "fw-2", std::nullopt, kT0};
  }
  StartServer();
  auto o = Options();
  const auto r = Run({"install", Bundle().string(), "--timeout", "1"}, o);
  EXPECT_EQ(r.code, kExitState) << r.err;
  EXPECT_NE(r.err.find("still running"), std::string::npos) << r.err;
}

TEST_F(ClientCliTest, EventsAfterAndJson) {
  {
    std::lock_guard l(backend_.mu);
    for (int i = 1; i <= 3; ++i) backend_.AddEvent("state", "step " + std::to_string(i));
  }
  StartServer();
  auto r = Run({"events", "--after", "1"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out,
            "2 2026-12-07T00:00:02Z state: step 2\n3 2026-12-07T00:00:03Z state: step 3\n");
  r = Run({"events", "--json"});
  ASSERT_EQ(r.code, kExitOk);
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2]["sequence"], 3);
  EXPECT_EQ(lines[2]["event"], "state");
  EXPECT_EQ(lines[2]["message"], "step 3");
}

TEST_F(ClientCliTest, EventsPagesThroughTheWholeLog) {
  {
    std::lock_guard l(backend_.mu);
    for (int i = 1; i <= 250; ++i) backend_.AddEvent("state", "e");
  }
  StartServer();
  const auto r = Run({"events", "--json"});
  ASSERT_EQ(r.code, kExitOk);
  const auto lines = JsonLines(r.out);
  ASSERT_EQ(lines.size(), 250u);
  EXPECT_EQ(lines.back()["sequence"], 250);
}

TEST_F(ClientCliTest, EventsFollowEndsAtItsTimeout) {
  StartServer();
  const auto r = Run({"events", "--follow", "--timeout", "1"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST_F(ClientCliTest, DaemonNotRunningHasItsOwnExitCode) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"status"}, {"check"}, {"policy"}, {"notices"}, {"events"},
        {"postpone", "u", "--for", "1d"}, {"install", "/tmp/x.bundle"}}) {
    const auto r = Run(args);
    EXPECT_EQ(r.code, kExitDaemonNotRunning) << args[0];
    EXPECT_NE(r.err.find("not running"), std::string::npos) << r.err;
  }
}

TEST_F(ClientCliTest, SilentWhenNotRunningForAFallback) {
  auto o = Options();
  o.silent_if_not_running = true;
  std::ostringstream out, err;
  EXPECT_EQ(RunClientStatus(o, out, err), kExitDaemonNotRunning);
  EXPECT_EQ(RunClientInstall(o, "/tmp/x.bundle", out, err), kExitDaemonNotRunning);
  EXPECT_EQ(out.str(), "");
  EXPECT_EQ(err.str(), "");
}

TEST_F(ClientCliTest, SocketOptionPicksTheSocket) {
  StartServer();
  auto o = Options();
  o.socket = (dir_.path() / "elsewhere.sock").string();
  EXPECT_EQ(Run({"status"}, o).code, kExitDaemonNotRunning);
  EXPECT_EQ(Run({"status", "--socket", socket_path().string()}, o).code, kExitOk);
}

// The caller keeps its own `install` and `status` (acting on the device directly); the client
// commands do not clash with them.
TEST_F(ClientCliTest, SkipsSubcommandsTheAppAlreadyHas) {
  CLI::App app{"upkeep-agent"};
  bool json = false;
  app.add_flag("--json", json);
  std::string source;
  CLI::App* install = app.add_subcommand("install", "direct");
  install->add_option("SOURCE", source);
  app.add_subcommand("status", "direct");
  ClientOptions o;
  auto c = AddClientCommands(app, o);
  EXPECT_EQ(c->install, nullptr);
  EXPECT_EQ(c->status, nullptr);
  EXPECT_NE(c->check, nullptr);
  EXPECT_NE(c->events, nullptr);
  // The caller's own install takes --socket and --json like the client commands.
  AddClientOptions(*install, o);
  const char* argv[] = {"upkeep-agent", "--json", "install", "a.bundle", "--socket", "/x.sock"};
  ASSERT_NO_THROW(app.parse(6, argv));
  EXPECT_FALSE(c->parsed());
  EXPECT_TRUE(json);
  EXPECT_EQ(source, "a.bundle");
  EXPECT_EQ(o.socket, "/x.sock");
}

TEST(ClientExitCode, MapsEveryClientError) {
  using localapi::Errc;
  EXPECT_EQ(ClientExitCode(Error(Errc::DaemonNotRunning, "")), kExitDaemonNotRunning);
  EXPECT_EQ(ClientExitCode(Error(Errc::Rejected, "")), kExitRejected);
  EXPECT_EQ(ClientExitCode(Error(Errc::LockedOut, "")), kExitRefused);
  EXPECT_EQ(ClientExitCode(Error(Errc::ProtocolError, "")), kExitDevice);
  EXPECT_EQ(ClientExitCode(Error(Errc::Timeout, "")), kExitDevice);
  EXPECT_EQ(ClientExitCode(Error(Errc::Internal, "")), kExitDevice);
}

}  // namespace
}  // namespace upkeep::agent
