// The real `upkeep-server` binary on 127.0.0.1 port 0, made by `upkeep-server init`, over a real
// SQLite file or a throw-away PostgreSQL (pg_virtualenv), administered with its own commands and
// driven by devices through libs/deviceapi: enrolment, a phased campaign that pauses on injected
// failures, the security fast path, and two server processes sharing one PostgreSQL database.

#include <gtest/gtest.h>

#include <deque>
#include <mutex>
#include <set>
#include <fstream>
#include <sstream>
#include <thread>

#include "cli.hpp"
#include "cli_run.hpp"
#include "fleet_backends.hpp"
#include "repository_simulator.hpp"
#include "server_process.hpp"
#include "test_pki.hpp"
#include "update_metadata_fixture.hpp"
#include "upkeep/common/directory_fetcher.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/deviceapi/client.hpp"
#include "upkeep/metadata/director.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/server/https_server.hpp"

namespace upkeep::server {
namespace {

namespace fs = std::filesystem;
using metadata::Json;
using testing::BackendNames;
using testing::Backends;
using namespace std::chrono_literals;

constexpr const char* kModel = "acme-cam-v2";

Json Custom(const std::string& kind, const std::string& version) {
  return testing::ReleaseCustom(kind, version, {kModel});
}

struct SimDevice {
  std::unique_ptr<deviceapi::DeviceClient> client;
  deviceapi::DeviceIdentity identity;
  std::uint64_t counter = 0;
  std::string installed = "rootfs/2.4.0.payload";
};

// An administrators' webhook receiver on 127.0.0.1: it accepts a request only when its
// signature is the HMAC-SHA256 of "timestamp.body" under the shared secret, computed here.
class WebhookReceiver {
 public:
  static constexpr const char* kSecret = "an incident webhook secret of more than 32 bytes";
  WebhookReceiver() {
    HttpsOptions o;
    o.certificate_pem = pki_.server.certificate_pem;
    o.private_key_pem = pki_.server.key_pem;
    server_ = HttpsServer::Start(o, [this](const Request& r) { return Receive(r); }).value();
  }
  ~WebhookReceiver() { server_->Stop(std::chrono::seconds(1)); }
  [[nodiscard]] std::string url() const {
    return "https://127.0.0.1:" + std::to_string(server_->port()) + "/hook";
  }
  [[nodiscard]] const std::string& ca_pem() const { return pki_.server_ca.certificate_pem; }
  // Incident bodies with a valid signature, in arrival order; and how many were refused.
  std::vector<Json> verified() {
    std::lock_guard lock(mutex_);
    return verified_;
  }
  int refused() {
    std::lock_guard lock(mutex_);
    return refused_;
  }

 private:
  Response Receive(const Request& r) {
    const std::string timestamp = r.Header("x-upkeep-timestamp");
    auto mac = crypto::HmacSha256(kSecret, timestamp + "." + r.body);
    std::lock_guard lock(mutex_);
    if (!mac || r.Header("x-upkeep-signature") != "sha256=" + HexEncode(*mac)) {
      ++refused_;
      return Response{401, "text/plain", "bad signature", {}};
    }
    verified_.push_back(metadata::ParseJson(r.body).value_or(Json()));
    return Response{204, "text/plain", "", {}};
  }
  testing::TestPki pki_;
  std::unique_ptr<HttpsServer> server_;
  std::mutex mutex_;
  std::vector<Json> verified_;
  int refused_ = 0;
};

template <typename B>
class FleetProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = B::SkipReason()) GTEST_SKIP() << *why;
    backend_.emplace();
    srv_ = (dir_.path() / "srv").string();
    std::string text = InitLoopbackServer(srv_);
    ASSERT_FALSE(text.empty());
    config_ = srv_ + "/server.toml";
    Replace(text, "burst = 10\n", "burst = 1000\n");
    const auto url = text.find("url = ", text.find("[database]"));
    ASSERT_NE(url, std::string::npos);
    text.replace(url, text.find('\n', url) - url, "url = '" + backend_->url + "'");
    // Incidents go to the administrators' webhook receiver, polled every second.
    std::ofstream(srv_ + "/webhook.secret") << WebhookReceiver::kSecret;
    std::ofstream(srv_ + "/webhook-ca.pem") << receiver_.ca_pem();
    text += "\n[incidents]\nwebhook_url = '" + receiver_.url() + "'\nsecret_file = '" + srv_ +
            "/webhook.secret'\nca_file = '" + srv_ +
            "/webhook-ca.pem'\npoll_interval_seconds = 1\nretry_base_seconds = 1\n";
    std::ofstream(config_) << text;
    std::ifstream ca(srv_ + "/device-ca.pem");
    server_ca_.assign(std::istreambuf_iterator<char>(ca), {});
  }

  static void Replace(std::string& text, const std::string& from, const std::string& to) {
    if (const auto at = text.find(from); at != std::string::npos) {
      text.replace(at, from.size(), to);
    }
  }

  CliRun Cli(std::vector<std::string> args) {
    if (!config_.empty() && args[0] != "init") {
      args.insert(args.begin(), {"-c", config_, "--log-level", "warn"});
    }
    return server::Cli(std::move(args));
  }

  std::unique_ptr<testing::ServerProcess> StartServer() {
    auto p = std::make_unique<testing::ServerProcess>(UPKEEP_SERVER_BINARY, config_);
    EXPECT_TRUE(p->ok()) << p->log();
    return p;
  }

  // Publishes the image repository: a security release 2.4.1 and a feature release 2.6.0.
  void PublishImages() {
    image_.AddTarget("targets", "rootfs/2.4.1.payload", "security image");
    image_.targets["targets"]["rootfs/2.4.1.payload"]["custom"] = Custom("security", "2.4.1");
    image_.AddTarget("targets", "rootfs/2.6.0.payload", "feature image");
    image_.targets["targets"]["rootfs/2.6.0.payload"]["custom"] = Custom("feature", "2.6.0");
    image_.Publish();
    image_.WriteTo(dir_.path() / "repository");
    std::ofstream(dir_.path() / "root.json", std::ios::binary) << image_.RootBytes(1);
  }

  SimDevice& Enrol(const std::string& url, const std::string& group) {
    CliRun token = Cli({"admin", "token", "create", "--model", kModel, "--group", group});
    EXPECT_EQ(token.code, kExitOk) << token.err;
    while (!token.out.empty() && token.out.back() == '\n') token.out.pop_back();
    auto client = deviceapi::DeviceClient::ForEnrolment({url, server_ca_, "", ""});
    EXPECT_TRUE(client) << client.error().ToString();
    auto identity = (*client)->Enrol(token.out, kModel, "SN-" + std::to_string(devices_.size()));
    EXPECT_TRUE(identity) << identity.error().ToString();
    SimDevice d;
    d.identity = identity.value_or(deviceapi::DeviceIdentity{});
    d.client = std::move(*client);
    devices_.push_back(std::move(d));
    return devices_.back();
  }

  // One check-in at `url` (another server process than the device's usual one, if need be);
  // the director's target paths.
  std::vector<std::string> Offered(SimDevice& d, const std::string& url = "") {
    deviceapi::DeviceIdentity id = d.identity;
    if (!url.empty()) id.server_url = url;
    auto client = deviceapi::DeviceClient::ForIdentity(id);
    EXPECT_TRUE(client);
    deviceapi::CheckInRequest q;
    q.counter = ++d.counter;
    q.model = kModel;
    q.hardware = kModel;
    q.components["rootfs"] = {"2.4.0", d.installed, 3};
    auto a = (*client)->CheckIn(q);
    EXPECT_TRUE(a) << a.error().ToString();
    std::vector<std::string> out;
    if (!a) return out;
    auto targets = metadata::ParseJson(a->director.targets);
    EXPECT_TRUE(targets);
    for (const auto& [path, _] : (*targets)["signed"]["targets"].items()) out.push_back(path);
    return out;
  }

  void Report(SimDevice& d, const std::string& id, const std::string& target,
              deviceapi::ReportOutcome outcome, const std::string& url = "") {
    deviceapi::DeviceIdentity identity = d.identity;
    if (!url.empty()) identity.server_url = url;
    auto client = deviceapi::DeviceClient::ForIdentity(identity);
    ASSERT_TRUE(client);
    auto r = (*client)->Report({id, "u-" + id, target, outcome, {}});
    EXPECT_TRUE(r) << r.error().ToString();
  }

  Json Campaigns() {
    CliRun r = Cli({"admin", "campaigns", "list", "--json"});
    EXPECT_EQ(r.code, kExitOk) << r.err;
    return metadata::ParseJson(r.out).value_or(Json::array());
  }

  Json CampaignNamed(const std::string& id) {
    for (const Json& c : Campaigns()) {
      if (c["id"] == id) return c;
    }
    ADD_FAILURE() << "no campaign " << id;
    return Json::object();
  }

  testing::TempDir dir_;
  WebhookReceiver receiver_;
  std::optional<B> backend_;
  std::string srv_;
  std::string config_;
  std::string server_ca_;
  std::deque<SimDevice> devices_;
  testing::RepositorySimulator image_{std::chrono::floor<std::chrono::seconds>(
      std::chrono::system_clock::now())};
};

TYPED_TEST_SUITE(FleetProcessTest, Backends, BackendNames);

// Two devices enrol; a phased feature campaign pauses itself on an injected failure; the
// security fast path then reaches both devices at once, ahead of the feature release.
TYPED_TEST(FleetProcessTest, RealServerRollsOutPhasedAndSecurityCampaigns) {
  this->PublishImages();
  auto server = this->StartServer();
  ASSERT_TRUE(server->ok());
  SimDevice& a = this->Enrol(server->url(), "beta");
  SimDevice& b = this->Enrol(server->url(), "beta");
  const std::string repo = (this->dir_.path() / "repository").string();
  const std::string root = (this->dir_.path() / "root.json").string();
  for (const auto& [name, target] :
       {std::pair{"fix", "rootfs/2.4.1.payload"}, std::pair{"big", "rootfs/2.6.0.payload"}}) {
    CliRun r = this->Cli({"admin", "releases", "import", name, "--repository", repo, "--root", root,
                          "--target", target});
    ASSERT_EQ(r.code, kExitOk) << r.err;
  }
  // An import from a root the repository does not chain to is refused.
  testing::RepositorySimulator other(std::chrono::floor<std::chrono::seconds>(
      std::chrono::system_clock::now()));
  other.Publish();
  std::ofstream(this->dir_.path() / "other-root.json", std::ios::binary) << other.RootBytes(1);
  EXPECT_EQ(this->Cli({"admin", "releases", "import", "evil", "--repository", repo, "--root",
                       (this->dir_.path() / "other-root.json").string(), "--target",
                       "rootfs/2.6.0.payload"})
                .code,
            kExitRejected);

  CliRun r = this->Cli({"admin", "campaigns", "create", "feature", "--release", "big", "--group",
                        "beta", "--phases", "50,100", "--soak-hours", "0",
                        "--failure-threshold", "10"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(this->Offered(a), std::vector<std::string>{"rootfs/2.6.0.payload"});
  EXPECT_EQ(this->Offered(b), std::vector<std::string>{"rootfs/2.6.0.payload"});
  // Device a's install fails and rolls back: 1 of 2 is above 10%, the campaign pauses itself.
  this->Report(a, "a-1", "rootfs/2.6.0.payload", deviceapi::ReportOutcome::RolledBack);
  Json feature = this->CampaignNamed("feature");
  EXPECT_EQ(feature["state"], "paused");
  EXPECT_EQ(feature["rolled_back"], 1);
  EXPECT_TRUE(this->Offered(b).empty());
  // Device b rejects a tampered download and tells the server; the device hears only 202.
  deviceapi::IncidentBody incident{"b-tampered", "verification_failed", "network",
                                   "rootfs/2.6.0.payload", "install.ChunkDigestMismatch",
                                   "chunk 3 digest mismatch", 1764400000};
  ASSERT_TRUE(b.client->Incident(incident));
  // Both incidents (the rollback the server raised, the device's) reach the administrators'
  // receiver, signed.
  std::vector<Json> delivered;
  for (int i = 0; i < 300 && delivered.size() < 2; ++i) {
    std::this_thread::sleep_for(50ms);
    delivered = this->receiver_.verified();
  }
  ASSERT_EQ(delivered.size(), 2u) << server->log();
  EXPECT_EQ(this->receiver_.refused(), 0);
  const std::string all = delivered[0].dump() + delivered[1].dump();
  EXPECT_NE(all.find("rollback"), std::string::npos) << all;
  EXPECT_NE(all.find("chunk 3 digest mismatch"), std::string::npos) << all;
  EXPECT_NE(all.find(a.identity.device_id), std::string::npos) << all;

  // The security release: every phase open at once despite a week of soak.
  ASSERT_EQ(this->Cli({"admin", "campaigns", "resume", "feature"}).code, kExitOk);
  r = this->Cli({"admin", "campaigns", "create", "fix", "--release", "fix", "--group", "beta",
                 "--phases", "1,10,50,100", "--soak-hours", "168"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(this->Offered(a), std::vector<std::string>{"rootfs/2.4.1.payload"});
  EXPECT_EQ(this->Offered(b), std::vector<std::string>{"rootfs/2.4.1.payload"});
  this->Report(b, "b-1", "rootfs/2.4.1.payload", deviceapi::ReportOutcome::Committed);
  b.installed = "rootfs/2.4.1.payload";
  // Then the (resumed) feature release, for the device that did not fail it.
  EXPECT_EQ(this->Offered(b), std::vector<std::string>{"rootfs/2.6.0.payload"});
  EXPECT_EQ(this->CampaignNamed("fix")["committed"], 1);
  EXPECT_EQ(this->Cli({"admin", "campaigns", "pause", "nope"}).code, kExitNotFound);
  EXPECT_EQ(server->Stop(), 0) << server->log();
}

// Uptane 5.4.4.3: `director rotate` (offline, with the root key) signs root 2 with new online
// keys; once the server serves it, an enrolled device that pinned root 1 follows the rotation
// and verifies answers signed by the new keys. A rotation the current root key did not sign is
// refused before anything is written.
class DirectorRotationTest : public FleetProcessTest<testing::SqliteBackend> {
 protected:
  // One check-in of `d`, verified as the device does against the director root it pinned.
  Result<metadata::DirectorVerified> CheckInAndVerify(SimDevice& d, const std::string& url) {
    const fs::path dir = dir_.path() / ("director-" + d.identity.device_id);
    if (!fs::exists(dir / "root.json")) {
      fs::create_directories(dir);
      std::ofstream(dir / "root.json", std::ios::binary) << d.identity.director_root.value_or("");
    }
    deviceapi::DeviceIdentity id = d.identity;
    id.server_url = url;
    UPKEEP_ASSIGN_OR_RETURN(auto client, deviceapi::DeviceClient::ForIdentity(id));
    deviceapi::CheckInRequest q;
    q.counter = ++d.counter;
    q.model = kModel;
    q.hardware = kModel;
    q.components["rootfs"] = {"2.4.0", d.installed, 3};
    UPKEEP_ASSIGN_OR_RETURN(std::string pinned, local_.ReadFile(dir / "root.json", 1 << 20));
    UPKEEP_ASSIGN_OR_RETURN(metadata::Root root, metadata::ParseRoot(pinned));
    q.director_root_version = root.version;
    UPKEEP_ASSIGN_OR_RETURN(deviceapi::CheckInAnswer a, client->CheckIn(q));
    fs::create_directories(dir_.path() / "image");
    std::ofstream(dir_.path() / "image" / "root.json", std::ios::binary) << image_.RootBytes(1);
    DirectoryFetcher fetcher(dir_.path() / "repository", local_);
    metadata::Updater image(dir_.path() / "image", DirectoryFetcher::kMetadataUrl, fetcher, local_,
                            SystemClock::Process());
    return metadata::VerifyDirectorAnswer(
        {a.director.roots, a.director.timestamp, a.director.snapshot, a.director.targets}, dir,
        local_, SystemClock::Process(), image, {d.identity.device_id, kModel, q.counter, 0});
  }
  LocalFilesystem local_;
};

TEST_F(DirectorRotationTest, DevicesFollowDirectorRootRotatedOffline) {
  PublishImages();
  auto server = StartServer();
  ASSERT_TRUE(server->ok());
  SimDevice& d = Enrol(server->url(), "beta");
  auto before = CheckInAndVerify(d, server->url());
  ASSERT_TRUE(before) << before.error().ToString();
  ASSERT_EQ(server->Stop(), 0);

  // Signed by a key the current root does not list: refused, nothing written.
  CliRun r = Cli({"director", "rotate", "--root", srv_ + "/director/1.root.json", "--root-key",
                  srv_ + "/director/targets.key", "-o", srv_ + "/director/2.root.json"});
  EXPECT_EQ(r.code, kExitRejected) << r.err;
  EXPECT_FALSE(fs::exists(srv_ + "/director/2.root.json"));
  r = Cli({"director", "rotate", "--root", srv_ + "/director/1.root.json", "--root-key",
           srv_ + "/director-root.key", "--new-online-keys", srv_ + "/director-2", "-o",
           srv_ + "/director/2.root.json"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  {
    std::ifstream in(config_);
    std::string text((std::istreambuf_iterator<char>(in)), {});
    Replace(text, "director/1.root.json'",
            "director/1.root.json', '" + srv_ + "/director/2.root.json'");
    for (const char* key : {"targets.key", "snapshot.key", "timestamp.key"}) {
      Replace(text, std::string("director/") + key, std::string("director-2/") + key);
    }
    std::ofstream(config_) << text;
  }
  server = StartServer();
  ASSERT_TRUE(server->ok());
  auto after = CheckInAndVerify(d, server->url());
  ASSERT_TRUE(after) << after.error().ToString();
  auto pinned = local_.ReadFile(dir_.path() / ("director-" + d.identity.device_id) / "root.json",
                                1 << 20);
  ASSERT_TRUE(pinned);
  EXPECT_EQ(metadata::ParseRoot(*pinned)->version, 2u);
  // And on: answers keep verifying under root 2 alone.
  EXPECT_TRUE(CheckInAndVerify(d, server->url()));
}

// Scale-out: two stateless server processes on one PostgreSQL database. A device's check-ins
// and reports alternate between them; the campaign advances once, on one timeline; every report
// is stored once though it was sent to both.
class ScaleOutTest : public FleetProcessTest<testing::PostgresqlBackend> {};

TEST_F(ScaleOutTest, TwoServerProcessesShareOnePostgresqlDatabase) {
  this->PublishImages();
  auto first = this->StartServer();
  auto second = this->StartServer();
  ASSERT_TRUE(first->ok() && second->ok());
  const std::string urls[2] = {first->url(), second->url()};
  for (int i = 0; i < 8; ++i) this->Enrol(urls[i % 2], "field");
  ASSERT_EQ(this->Cli({"admin", "releases", "import", "big", "--repository",
                       (this->dir_.path() / "repository").string(), "--root",
                       (this->dir_.path() / "root.json").string(), "--target",
                       "rootfs/2.6.0.payload"})
                .code,
            kExitOk);
  // Phase 2 opens two seconds after phase 1.
  CliRun r = this->Cli({"admin", "campaigns", "create", "c", "--release", "big", "--group",
                        "field", "--phases", "50,100", "--soak-hours", "0.000556"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  for (std::size_t i = 0; i < this->devices_.size(); ++i) {
    const auto offered = this->Offered(this->devices_[i], urls[i % 2]);
    EXPECT_LE(offered.size(), 1u);
  }
  std::this_thread::sleep_for(2500ms);
  for (std::size_t i = 0; i < this->devices_.size(); ++i) {
    // Alternating servers: every device is now offered the release by either of them.
    SimDevice& d = this->devices_[i];
    EXPECT_EQ(this->Offered(d, urls[(i + 1) % 2]), std::vector<std::string>{"rootfs/2.6.0.payload"});
    EXPECT_EQ(this->Offered(d, urls[i % 2]), std::vector<std::string>{"rootfs/2.6.0.payload"});
    // The same report reaches both servers (a retry after a lost answer): stored once.
    for (const std::string& url : urls) {
      this->Report(d, "r-" + std::to_string(i), "rootfs/2.6.0.payload",
                   deviceapi::ReportOutcome::Committed, url);
    }
  }
  const Json c = this->CampaignNamed("c");
  EXPECT_EQ(c["open_phases"], 2);
  EXPECT_EQ(c["offered"], 8);
  EXPECT_EQ(c["committed"], 8);
  auto db = storage::OpenDatabase(this->backend_->url);
  ASSERT_TRUE(db);
  auto reports = (*db)->Query("SELECT COUNT(*) FROM reports");
  ASSERT_TRUE(reports);
  EXPECT_EQ((*reports)[0].Get<std::int64_t>(0).value_or(-1), 8);
  EXPECT_EQ(first->Stop(), 0) << first->log();
  EXPECT_EQ(second->Stop(), 0) << second->log();
}

}  // namespace
}  // namespace upkeep::server
