// The shipped binary: `upkeep-agent run` as a process with its local API on a Unix socket,
// driven by the same binary's commands (`status`, `install`, `check`), stopped with SIGTERM.
// No fleet server: a local image repository and an offline bundle.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include "simulated_device.hpp"
#include "temp_dir.hpp"
#include "test_pki.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/modules/module.hpp"
#include "upkeep/transport/http_client.hpp"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// `upkeep-agent -c CONFIG run`, output to a log file, until Stop (SIGTERM).
class DaemonProcess {
 public:
  DaemonProcess(const fs::path& config, const fs::path& socket, const fs::path& log) : log_(log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execl(UPKEEP_AGENT_BINARY, "upkeep-agent", "-c", config.c_str(), "--log-level", "info",
              "run", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 200 && !fs::exists(socket); ++i) std::this_thread::sleep_for(25ms);
  }
  ~DaemonProcess() { (void)Stop(); }
  // The exit status after SIGTERM (-1 when it had to be killed).
  int Stop() {
    if (pid_ <= 0) return status_;
    ::kill(pid_, SIGTERM);
    int status = 0;
    pid_t done = 0;
    for (int i = 0; i < 400 && (done = ::waitpid(pid_, &status, WNOHANG)) == 0; ++i) {
      std::this_thread::sleep_for(25ms);
    }
    if (done == 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      status_ = -1;
    } else {
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    pid_ = -1;
    return status_;
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  [[nodiscard]] std::string log() const {
    std::ifstream in(log_);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  }

 private:
  fs::path log_;
  pid_t pid_ = -1;
  int status_ = -1;
};

// The nice values of a process's threads (/proc/PID/task/*/stat, field 19).
std::vector<int> ThreadNiceValues(pid_t pid) {
  std::vector<int> out;
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), {});
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream fields(stat.substr(close + 2));
    std::string field;
    for (int i = 3; i <= 19 && fields >> field; ++i) {
      if (i == 19) out.push_back(std::atoi(field.c_str()));
    }
  }
  return out;
}

struct CliResult {
  int code = -1;
  std::string output;
};

class DaemonProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_.emplace(dir_.path() / "images");
    device_.emplace(dir_.path() / "device", repo_->root_path(), testing::MakeImage(64 * 1024, 5));
    new_image_ = testing::MakeImage(64 * 1024, 6);
    testing::ReleaseSpec spec;
    spec.version = "2.0";
    spec.image = new_image_;
    repo_->Add(spec);
    repo_->Publish();
    bundle_ = repo_->Bundle({spec}, "release.upkb");
    device_->Boot();
  }

  // The device's configuration as a TOML file, with the daemon's sections.
  void WriteConfig(const std::string& repository_url, const std::string& local_api_extra = "") {
    const auto& c = device_->config;
    std::ofstream out(config());
    out << "[device]\nhardware = 'sim-cam'\nmodel = 'Sim Cam 2'\ndata_dir = '"
        << c.device.data_dir.string() << "'\nsupport_until = '2031-12-31'\n"
        << "[trust]\nroot = '" << c.trust.root.string() << "'\n"
        << "[repository]\nurl = '" << repository_url << "'\n"
        << "[slots]\na = '" << c.slots.a.string() << "'\nb = '" << c.slots.b.string() << "'\n"
        << "[bootloader]\ntype = 'file'\nenv = '" << c.bootloader.env.string() << "'\ncmdline = '"
        << c.bootloader.cmdline.string() << "'\nboot_id = '" << c.bootloader.boot_id.string()
        << "'\nreboot_command = ['/bin/sh', '-c', 'touch " << (dir_.path() / "rebooted").string()
        << "']\n"
        << "[health]\ncommands = [['/bin/true']]\n"
        << "[schedule]\nboot_delay_min_seconds = 0\nboot_delay_max_seconds = 0\n"
        << "[local_api]\nsocket = '" << socket().string() << "'\nmode = '0600'\n"
        << local_api_extra << "[daemon]\nlow_priority = true\n";
  }

  CliResult Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {UPKEEP_AGENT_BINARY, "-c", config().string()});
    modules::ProcessOptions o;
    o.timeout = 60s;
    o.env = {"PATH=/usr/bin:/bin"};
    auto r = modules::RunProcess(args, o);
    if (!r) return {};
    return {r->exit_code, r->output};
  }

  // Polls `status --json` until `state` is reached (bounded).
  bool WaitForState(const std::string& state) {
    for (int i = 0; i < 200; ++i) {
      const CliResult r = Cli({"--json", "status"});
      if (r.output.find("\"state\":\"" + state + "\"") != std::string::npos) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  [[nodiscard]] fs::path config() const { return dir_.path() / "agent.toml"; }
  [[nodiscard]] fs::path socket() const { return dir_.path() / "run" / "agent.sock"; }

  testing::TempDir dir_;
  std::optional<testing::ReleaseRepo> repo_;
  std::optional<testing::SimulatedDevice> device_;
  std::string new_image_;
  fs::path bundle_;
};

TEST_F(DaemonProcessTest, RunInstallsFromRepositoryRebootsCommitsAndStopsOnSigterm) {
  WriteConfig(repo_->www().string());
  {
    DaemonProcess daemon(config(), socket(), dir_.path() / "daemon.log");
    ASSERT_TRUE(fs::exists(socket())) << daemon.log();
    EXPECT_EQ(fs::status(socket()).permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::owner_write);
    ASSERT_TRUE(WaitForState("awaiting_reboot")) << daemon.log();
    // The work thread runs at idle priority; the local API threads do not.
    const std::vector<int> nice = ThreadNiceValues(daemon.pid());
    EXPECT_NE(std::find(nice.begin(), nice.end(), 19), nice.end());
    EXPECT_NE(std::find(nice.begin(), nice.end(), 0), nice.end());
    for (int i = 0; i < 100 && !fs::exists(dir_.path() / "rebooted"); ++i) {
      std::this_thread::sleep_for(20ms);
    }
    EXPECT_TRUE(fs::exists(dir_.path() / "rebooted")) << daemon.log();
    EXPECT_TRUE(device_->Slot("b") == new_image_);
    EXPECT_EQ(daemon.Stop(), 0) << daemon.log();
    EXPECT_FALSE(fs::exists(socket()));
  }
  // Without a daemon, the same commands act on the device directly.
  ASSERT_EQ(Cli({"simulate-boot"}).code, 0);
  {
    DaemonProcess daemon(config(), socket(), dir_.path() / "daemon2.log");
    ASSERT_TRUE(WaitForState("idle")) << daemon.log();
    const CliResult notices = Cli({"--json", "notices"});
    EXPECT_EQ(notices.code, 0) << notices.output;
    EXPECT_EQ(daemon.Stop(), 0) << daemon.log();
  }
  const CliResult status = Cli({"--json", "status"});  // directly: no daemon
  EXPECT_EQ(status.code, 0) << status.output;
  EXPECT_NE(status.output.find("\"version\":\"2.0\""), std::string::npos) << status.output;
}

TEST_F(DaemonProcessTest, BundleInstallThroughDaemonAndTamperedBundleSaysOnlyRejected) {
  WriteConfig("");  // offline device: bundles only
  DaemonProcess daemon(config(), socket(), dir_.path() / "daemon.log");
  ASSERT_TRUE(fs::exists(socket())) << daemon.log();

  // A bundle with one byte changed in its payload: nothing installed, only "update rejected".
  std::string bytes;
  {
    std::ifstream in(bundle_, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  bytes[bytes.size() - 100] = static_cast<char>(bytes[bytes.size() - 100] ^ 0x5a);
  testing::WriteBytes(dir_.path() / "tampered.upkb", bytes);
  const CliResult rejected = Cli({"install", (dir_.path() / "tampered.upkb").string()});
  EXPECT_EQ(rejected.code, 2) << rejected.output << daemon.log();
  EXPECT_NE(rejected.output.find("update rejected"), std::string::npos) << rejected.output;
  EXPECT_EQ(rejected.output.find("Digest"), std::string::npos) << rejected.output;
  EXPECT_TRUE(device_->Slot("b").empty());

  const CliResult installed = Cli({"install", bundle_.string()});
  EXPECT_EQ(installed.code, 0) << installed.output << daemon.log();
  EXPECT_TRUE(WaitForState("awaiting_reboot")) << daemon.log();
  EXPECT_TRUE(device_->Slot("b") == new_image_);
  EXPECT_EQ(daemon.Stop(), 0) << daemon.log();
}

TEST_F(DaemonProcessTest, CheckAndPolicyWorkWithoutDaemon) {
  WriteConfig(repo_->www().string());
  const CliResult off = Cli({"policy", "set", "auto-install", "off"});
  EXPECT_EQ(off.code, 0) << off.output;
  EXPECT_NE(off.output.find("auto-install: off"), std::string::npos) << off.output;
  const CliResult refused = Cli({"policy", "set", "security-auto-install", "off"});
  EXPECT_EQ(refused.code, 1) << refused.output;
  const CliResult shown = Cli({"--json", "policy"});
  EXPECT_EQ(shown.code, 0) << shown.output;
  EXPECT_NE(shown.output.find("\"auto_install\":false"), std::string::npos) << shown.output;
  EXPECT_NE(shown.output.find("\"security_auto_install\":true"), std::string::npos) << shown.output;
  // A security release installs with automatic feature updates off.
  const CliResult check = Cli({"check"});
  EXPECT_EQ(check.code, 0) << check.output;
  EXPECT_NE(check.output.find("1 installed"), std::string::npos) << check.output;
  EXPECT_TRUE(device_->Slot("b") == new_image_);
  EXPECT_TRUE(fs::exists(dir_.path() / "rebooted"));
}

// The companion-app listener (EN 303 645 5.3-13/5.3-16, no default password): the daemon
// generates the credential once, keeps only its hash, shows it once in a root-only file; a request
// without it, or with a wrong one, is refused.
TEST_F(DaemonProcessTest, LanListenerAcceptsOnlyTheGeneratedCredential) {
  testing::TestPki pki;
  testing::WriteBytes(dir_.path() / "lan.pem", pki.server.certificate_pem);
  testing::WriteBytes(dir_.path() / "lan.key", pki.server.key_pem);
  WriteConfig("", "lan_listen = '127.0.0.1:0'\nlan_certificate = '" +
                      (dir_.path() / "lan.pem").string() + "'\nlan_key = '" +
                      (dir_.path() / "lan.key").string() + "'\n");
  DaemonProcess daemon(config(), socket(), dir_.path() / "daemon.log");
  ASSERT_TRUE(fs::exists(socket())) << daemon.log();
  std::string log;
  for (int i = 0; i < 200 && log.find("LAN API on 127.0.0.1:") == std::string::npos; ++i) {
    std::this_thread::sleep_for(25ms);
    log = daemon.log();
  }
  const auto at = log.find("LAN API on 127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << log;
  const std::string port =
      log.substr(at + 21, log.find_first_not_of("0123456789", at + 21) - at - 21);
  const fs::path shown = device_->config.device.data_dir / "lan-credential.txt";
  ASSERT_TRUE(fs::exists(shown));
  EXPECT_EQ(fs::status(shown).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  std::ifstream in(shown);
  std::string credential;
  std::getline(in, credential);
  ASSERT_GE(credential.size(), 20u);
  // Only the hash is stored.
  std::ifstream store(device_->config.device.data_dir / "lan-credential.json");
  const std::string stored((std::istreambuf_iterator<char>(store)), {});
  EXPECT_EQ(stored.find(credential), std::string::npos);
  EXPECT_NE(stored.find("argon2id"), std::string::npos) << stored;

  transport::HttpClientOptions o;
  o.server_ca_pem = pki.server_ca.certificate_pem;
  auto client = transport::HttpClient::Create(o);
  ASSERT_TRUE(client) << client.error().ToString();
  const std::string url = "https://127.0.0.1:" + port + "/v1/status";
  auto ok = (*client)->Get(url, {{"Authorization", "Bearer " + credential}});
  ASSERT_TRUE(ok) << ok.error().ToString();
  EXPECT_EQ(ok->status, 200u) << ok->body;
  EXPECT_NE(ok->body.find("\"state\""), std::string::npos) << ok->body;
  auto wrong = (*client)->Get(url, {{"Authorization", "Bearer not-the-credential-at-all"}});
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401u) << wrong->body;
  auto none = (*client)->Get(url);
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401u) << none->body;
  EXPECT_EQ(daemon.Stop(), 0) << daemon.log();
}

TEST_F(DaemonProcessTest, BadConfigurationEndsWithMessageAndExitCode) {
  WriteConfig(repo_->www().string());
  std::ofstream(config(), std::ios::app) << "[daemon]\nunknown_key = 1\n";
  const CliResult r = Cli({"run"});
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("daemon"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace upkeep::agent
