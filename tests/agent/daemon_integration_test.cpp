// The agent daemon against the real `upkeep-server` binary on 127.0.0.1 port 0: a device enrols
// with a one-time token, checks in, receives a security release through the director (Uptane
// full verification against the image repository), publishes the notice, installs into a
// file-backed slot, reboots (simulated), passes its health checks, commits and reports; the
// server's campaign counts the commit. With a tampered payload the device installs nothing, its
// local API says only "rejected", and the server holds the device's incident.

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "cli_run.hpp"
#include "daemon_fixture.hpp"
#include "server_process.hpp"
#include "simulated_device.hpp"
#include "temp_dir.hpp"
#include "upkeep/agent/daemon.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/localapi/server.hpp"
#include "upkeep/metadata/canonical_json.hpp"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using metadata::Json;
using server::Cli;
using server::CliRun;

constexpr const char* kTarget = "rootfs/image-2.0.payload";

// One HTTP/1.1 request over the local API's Unix socket, as any local client would send it;
// the whole answer (status line, headers, body).
std::string LocalRequest(const fs::path& socket_path, const std::string& request) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", socket_path.c_str());
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    (void)!::write(fd, request.data(), request.size());
    char buf[4096];
    for (int i = 0; i < 1000; ++i) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      answer.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return answer;
}

std::string Get(const fs::path& socket_path, const std::string& path) {
  return LocalRequest(socket_path,
                      "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
}

class DaemonIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log::Init("info");
    // The image repository: a security release 2.0 for sim-cam, and the maker's old image 1.0
    // installed on the device.
    repo_.emplace(dir_.path() / "images");
    old_image_ = testing::MakeImage(300 * 1024, 1);
    new_image_ = testing::MakeImage(300 * 1024, 2);
    testing::ReleaseSpec spec;
    spec.version = "2.0";
    spec.image = new_image_;
    repo_->Add(spec);
    repo_->Publish();

    // The fleet server: made by init, the release imported, a security campaign for group lab.
    srv_ = (dir_.path() / "srv").string();
    std::string text = server::InitLoopbackServer(srv_);
    ASSERT_FALSE(text.empty());
    config_ = srv_ + "/server.toml";
    ASSERT_EQ(Admin({"releases", "import", "fix", "--repository", repo_->www().string(), "--root",
                     repo_->root_path().string(), "--target", kTarget})
                  .code,
              server::kExitOk);
    ASSERT_EQ(Admin({"campaigns", "create", "fix", "--release", "fix", "--group", "lab", "--phases",
                     "100", "--soak-hours", "0"})
                  .code,
              server::kExitOk);
    CliRun token =
        Admin({"admin", "token", "create", "--model", "sim-cam", "--group", "lab"}, false);
    ASSERT_EQ(token.code, server::kExitOk) << token.err;
    std::ofstream(dir_.path() / "token") << token.out;
    server_ = std::make_unique<testing::ServerProcess>(UPKEEP_SERVER_BINARY, config_);
    ASSERT_TRUE(server_->ok()) << server_->log();

    device_.emplace(dir_.path() / "device", repo_->root_path(), old_image_);
    AgentConfig& c = device_->config;
    c.server.url = server_->url();
    c.server.ca_file = srv_ + "/device-ca.pem";
    c.server.token_file = dir_.path() / "token";
    c.device.serial = "SN-0001";
    c.device.support_until = "2031-12-31";
    c.repository.url = repo_->www().string();  // the mirror, here a directory
    c.schedule.boot_delay_min = std::chrono::seconds(0);
    c.schedule.boot_delay_max = std::chrono::seconds(0);
    c.daemon.low_priority = false;
    c.local_api.socket = dir_.path() / "agent.sock";
    c.notices.command = {"/bin/sh", "-c", "cat > " + (dir_.path() / "notice.json").string()};
    device_->Boot();  // power on: slot a
  }

  CliRun Admin(std::vector<std::string> args, bool prefix = true) {
    if (prefix) args.insert(args.begin(), "admin");
    args.insert(args.begin(), {"-c", config_, "--log-level", "warn"});
    return Cli(std::move(args));
  }

  Json AdminJson(std::vector<std::string> args) {
    CliRun r = Admin(std::move(args));
    EXPECT_EQ(r.code, server::kExitOk) << r.err;
    return metadata::ParseJson(r.out).value_or(Json::array());
  }

  // The daemon as `upkeep-agent run` builds it, with its local API on a socket; a reboot only
  // records that it was asked for.
  void StartDaemon() {
    daemon_ = testing::CountingRebootsDaemon(device_->config, fs_, clock_, random_, reboots_);
    ASSERT_TRUE(daemon_);
    localapi::LocalApiOptions api;
    api.socket_path = device_->config.local_api.socket;
    auto s = localapi::LocalApiServer::Start(api, *daemon_);
    ASSERT_TRUE(s) << s.error().ToString();
    api_ = std::move(*s);
  }
  void StopDaemon() {
    api_.reset();
    daemon_.reset();
  }

  // The campaign's committed count as the server's admin command reports it.
  std::uint64_t CampaignCommitted() {
    for (const Json& c : AdminJson({"campaigns", "list", "--json"})) {
      if (c["id"] == "fix") return c["committed"].get<std::uint64_t>();
    }
    return 0;
  }

  testing::TempDir dir_;
  std::optional<testing::ReleaseRepo> repo_;
  std::string old_image_;
  std::string new_image_;
  std::string srv_;
  std::string config_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::optional<testing::SimulatedDevice> device_;
  LocalFilesystem fs_;
  SystemClock clock_;
  SeededRandom random_{42};
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<localapi::LocalApiServer> api_;
  int reboots_ = 0;
};

TEST_F(DaemonIntegrationTest, EnrolsInstallsSecurityReleaseCommitsAfterRebootAndReports) {
  StartDaemon();
  ASSERT_TRUE(daemon_);
  daemon_->Tick();  // boot: enrol, check in, verify, notice, install, ask for the reboot

  EXPECT_EQ(reboots_, 1);
  EXPECT_TRUE(device_->Slot("b") == new_image_);
  EXPECT_TRUE(device_->Slot("a") == old_image_);
  // The notice: from the signed update metadata, on the local API and to the notifier.
  const std::string notices = Get(device_->config.local_api.socket, "/v1/notices");
  EXPECT_NE(notices.find("200 OK"), std::string::npos) << notices;
  EXPECT_NE(notices.find("\"kind\":\"security\""), std::string::npos) << notices;
  EXPECT_NE(notices.find("CVE-2026-0001"), std::string::npos) << notices;
  std::ifstream notifier(dir_.path() / "notice.json");
  const std::string notice_json((std::istreambuf_iterator<char>(notifier)), {});
  EXPECT_NE(notice_json.find("CVE-2026-0001"), std::string::npos) << notice_json;
  const std::string status = Get(device_->config.local_api.socket, "/v1/status");
  EXPECT_NE(status.find("\"state\":\"awaiting_reboot\""), std::string::npos) << status;
  const std::string support = Get(device_->config.local_api.socket, "/v1/support");
  EXPECT_NE(support.find("2031-12-31"), std::string::npos) << support;

  // The reboot: the process ends, the firmware boots the trial slot, the daemon starts again.
  // (The pinned director root is lost as by a power cut right after enrolment: the daemon writes
  // it again from the stored identity.)
  StopDaemon();
  const auto pinned = device_->config.device.data_dir / "director" / "root.json";
  ASSERT_TRUE(fs::remove(pinned));
  EXPECT_EQ(device_->Boot(), "b");
  StartDaemon();
  daemon_->Tick();  // health checks, commit, report; then a check that finds nothing new
  EXPECT_TRUE(fs::exists(pinned));
  EXPECT_EQ(daemon_->schedule().state().failures, 0u);
  auto journal = daemon_->agent().store().Load();
  ASSERT_TRUE(journal);
  EXPECT_FALSE(journal->update.has_value());
  ASSERT_TRUE(journal->components.count("rootfs"));
  EXPECT_EQ(journal->components.at("rootfs").version, "2.0");
  const std::string device = Get(device_->config.local_api.socket, "/v1/device");
  EXPECT_NE(device.find("{\"name\":\"rootfs\",\"version\":\"2.0\"}"), std::string::npos) << device;
  EXPECT_EQ(CampaignCommitted(), 1u) << server_->log();
  auto pending = daemon_->outbox().Pending();
  ASSERT_TRUE(pending);
  EXPECT_TRUE(pending->empty());
}

TEST_F(DaemonIntegrationTest, TamperedPayloadInstallsNothingAnswersRejectedAndReachesServer) {
  // An attacker on the mirror flips bytes in the published payload (its signed hashes stay).
  bool tampered = false;
  for (const auto& f : fs::recursive_directory_iterator(repo_->www() / "targets")) {
    if (f.path().filename().string().find("image-2.0.payload") == std::string::npos) continue;
    std::fstream payload(f.path(), std::ios::in | std::ios::out | std::ios::binary);
    payload.seekp(1000);
    payload.write("EVIL", 4);
    tampered = true;
  }
  ASSERT_TRUE(tampered);
  StartDaemon();
  daemon_->Tick();

  EXPECT_EQ(reboots_, 0);
  EXPECT_TRUE(device_->Slot("a") == old_image_);
  auto journal = daemon_->agent().store().Load();
  ASSERT_TRUE(journal);
  EXPECT_FALSE(journal->update.has_value());
  // The local API: a rejection and nothing more.
  const std::string events = Get(device_->config.local_api.socket, "/v1/events");
  bool rejected = false;
  std::istringstream lines(events.substr(events.find("\r\n\r\n") + 4));
  for (std::string line; std::getline(lines, line);) {
    auto e = metadata::ParseJson(line);
    if (!e || (*e)["type"] != "rejected") continue;
    rejected = true;
    EXPECT_EQ((*e)["message"], "update rejected");
  }
  EXPECT_TRUE(rejected) << events;
  EXPECT_EQ(events.find("Digest"), std::string::npos) << events;
  EXPECT_EQ(events.find("chunk"), std::string::npos) << events;
  // The server holds the device's incident with the detail.
  bool found = false;
  for (const Json& i : AdminJson({"incidents", "list", "--json"})) {
    if (i["kind"] == "verification_failed") found = true;
  }
  EXPECT_TRUE(found) << server_->log();
}

}  // namespace
}  // namespace upkeep::agent
