// Releases, campaigns, groups and the director's per-device decision (campaigns.hpp), end to end:
// a real HttpsServer on 127.0.0.1 port 0 with the Fleet over a real database (a SQLite file; a
// throw-away PostgreSQL under pg_virtualenv), devices talking to it through libs/deviceapi's
// DeviceClient exactly as the agent does. Time runs on a FakeClock. Section numbers refer to the
// Uptane Standard (5.3.2 "Director repository", 5.4.4.2 "Full verification").

#include <gtest/gtest.h>

#include <deque>
#include <fstream>
#include <set>

#include "test_util.hpp"
#include "director_fixture.hpp"
#include "fleet_backends.hpp"
#include "memory_fetcher.hpp"
#include "repository_simulator.hpp"
#include "test_pki.hpp"
#include "update_metadata_fixture.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/deviceapi/client.hpp"
#include "upkeep/metadata/director.hpp"
#include "upkeep/metadata/errc.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/server/campaigns.hpp"
#include "upkeep/server/fleet.hpp"
#include "upkeep/server/metrics.hpp"

namespace upkeep::server {
namespace {

namespace fs = std::filesystem;
using metadata::Json;
using testing::BackendNames;
using testing::Backends;
using namespace std::chrono_literals;

constexpr const char* kModel = "acme-cam-v2";

Json Custom(const std::string& kind, const std::string& version,
            const std::vector<std::string>& hardware = {kModel}) {
  return testing::ReleaseCustom(kind, version, hardware);
}

struct Device {
  std::unique_ptr<deviceapi::DeviceClient> client;
  deviceapi::DeviceIdentity identity;
  std::uint64_t counter = 0;
  std::string etag;
  std::string installed = "rootfs/2.4.0.payload";
  std::string director_dir;
};

template <typename B>
class RolloutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = B::SkipReason()) GTEST_SKIP() << *why;
    backend_.emplace();
    auto db = storage::OpenDatabase(backend_->url);
    ASSERT_TRUE(db) << db.error().ToString();
    db_ = std::move(*db);
    ASSERT_TRUE(MigrateFleetSchema(*db_));
    repo_dir_ = dir_.path() / "repository";
  }

  void TearDown() override {
    devices_.clear();
    if (server_) server_->Stop(1s);
  }

  FleetOptions Options() {
    FleetOptions o;
    o.device_ca_pem = pki_.device_ca.certificate_pem;
    o.device_ca_key_pem = pki_.device_ca.key_pem;
    o.enrol_burst = 1000;
    o.director = testing::TestDirector(clock_.Now());
    return o;
  }

  void Start(FleetOptions o) {
    auto fleet = Fleet::Create(*db_, clock_, std::move(o));
    ASSERT_TRUE(fleet) << fleet.error().ToString();
    fleet_ = std::move(*fleet);
    HttpsOptions h;
    h.certificate_pem = pki_.server.certificate_pem;
    h.private_key_pem = pki_.server.key_pem;
    h.client_ca_pem = client_ca_.empty() ? pki_.device_ca.certificate_pem : client_ca_;
    auto s = HttpsServer::Start(h, fleet_->AsHandler());
    ASSERT_TRUE(s) << s.error().ToString();
    server_ = std::move(*s);
  }
  void Start() { Start(Options()); }

  // ---- the image repository ----

  void AddImage(const std::string& path, const std::string& kind, const std::string& version,
                const std::vector<std::string>& hardware = {kModel}) {
    image_.AddTarget("targets", path, "image " + path);
    image_.targets["targets"][path]["custom"] = Custom(kind, version, hardware);
  }

  // Publishes the image repository as files, as `upkeep repo publish` lays them out.
  void PublishImages() {
    image_.Publish();
    image_.ServeTo(image_fetcher_);
    image_.WriteTo(repo_dir_);
  }

  Result<Release> Import(const std::string& name, const std::vector<std::string>& targets) {
    return ImportRelease(*db_, clock_,
                         ImportOptions{name, repo_dir_.string(), image_.RootBytes(1), targets, ""});
  }

  CampaignStatus Campaign(const std::string& id, const std::string& release,
                          std::vector<std::uint32_t> phases, std::chrono::seconds soak,
                          const std::string& group = "beta", std::uint32_t threshold = 5) {
    CampaignSpec spec;
    spec.id = id;
    spec.release = release;
    spec.group = group;
    spec.phases = std::move(phases);
    spec.soak = soak;
    spec.failure_threshold_percent = threshold;
    auto c = CreateCampaign(*db_, clock_, spec);
    EXPECT_TRUE(c) << c.error().ToString();
    return c.value_or(CampaignStatus{});
  }

  CampaignStatus Status(const std::string& id) {
    auto all = ListCampaigns(*db_, clock_);
    EXPECT_TRUE(all) << all.error().ToString();
    for (const auto& c : all.value_or(std::vector<CampaignStatus>{})) {
      if (c.id == id) return c;
    }
    ADD_FAILURE() << "no campaign " << id;
    return {};
  }

  // ---- devices ----

  std::string Url() const { return "https://127.0.0.1:" + std::to_string(server_->port()); }

  Device& Enrol(const std::string& group = "beta") {
    auto token = CreateEnrolmentToken(*db_, clock_, kModel, group, 24h);
    EXPECT_TRUE(token);
    auto client = deviceapi::DeviceClient::ForEnrolment({Url(), pki_.server_ca.certificate_pem, "", ""});
    EXPECT_TRUE(client) << client.error().ToString();
    auto identity =
        (*client)->Enrol(token.value_or(""), kModel, "SN-" + std::to_string(devices_.size()));
    EXPECT_TRUE(identity) << identity.error().ToString();
    Device d;
    d.identity = identity.value_or(deviceapi::DeviceIdentity{});
    d.client = std::move(*client);
    devices_.push_back(std::move(d));
    return devices_.back();
  }

  deviceapi::CheckInRequest Request(Device& d) {
    deviceapi::CheckInRequest q;
    q.counter = ++d.counter;
    q.model = kModel;
    q.hardware = kModel;
    q.components["rootfs"] = {"2.4.0", d.installed, 3};
    q.if_none_match = d.etag;
    return q;
  }

  Result<deviceapi::CheckInAnswer> CheckIn(Device& d) {
    auto a = d.client->CheckIn(Request(d));
    if (a && !a->etag.empty()) d.etag = a->etag;
    return a;
  }

  // The target paths the director's targets.json names (after a 200 answer).
  std::vector<std::string> Offered(Device& d) {
    d.etag.clear();
    auto a = CheckIn(d);
    EXPECT_TRUE(a) << a.error().ToString();
    if (!a) return {};
    auto targets = metadata::ParseJson(a->director.targets);
    EXPECT_TRUE(targets);
    std::vector<std::string> out;
    for (const auto& [path, _] : (*targets)["signed"]["targets"].items()) out.push_back(path);
    return out;
  }

  void Report(Device& d, const std::string& target, deviceapi::ReportOutcome outcome) {
    deviceapi::ReportBody r;
    r.report_id = "r-" + std::to_string(++reports_);
    r.update_id = "u-" + std::to_string(reports_);
    r.target = target;
    r.outcome = outcome;
    auto sent = d.client->Report(r);
    EXPECT_TRUE(sent) << sent.error().ToString();
  }

  std::int64_t Count(const std::string& sql, const storage::Params& params = {}) {
    auto rows = db_->Query(sql, params);
    EXPECT_TRUE(rows) << rows.error().ToString();
    if (!rows || rows->empty()) return -1;
    return (*rows)[0].Get<std::int64_t>(0).value_or(-1);
  }

  FakeClock clock_{SystemClock::Process().Now()};
  testing::TempDir dir_;
  fs::path repo_dir_;
  std::optional<B> backend_;
  std::unique_ptr<storage::Database> db_;
  testing::TestPki pki_;
  std::string client_ca_;
  std::unique_ptr<Fleet> fleet_;
  std::unique_ptr<HttpsServer> server_;
  std::deque<Device> devices_;
  int reports_ = 0;
  testing::RepositorySimulator image_{clock_.Now()};
  testing::MemoryFetcher image_fetcher_;
};

TYPED_TEST_SUITE(RolloutTest, Backends, BackendNames);

// ---- release import ----

TYPED_TEST(RolloutTest, ImportsReleaseWithHardwareAndKindFromSignedUpdateMetadata) {
  this->AddImage("rootfs/2.5.0.payload", "security", "2.5.0", {kModel, "acme-cam-v2-pro"});
  this->AddImage("app/1.1.tar", "feature", "1.1");
  this->PublishImages();
  auto r = this->Import("spring", {"rootfs/2.5.0.payload", "app/1.1.tar"});
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_FALSE(r->security);  // one target is a feature update
  ASSERT_EQ(r->targets.size(), 3u);
  auto listed = ListReleases(*this->db_);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].targets, r->targets);
  auto security = this->Import("fix", {"rootfs/2.5.0.payload"});
  ASSERT_TRUE(security);
  EXPECT_TRUE(security->security);
}

// The import verifies the repository from the root the devices trust (TUF 5.3): a repository
// signed by other keys is refused and nothing is stored.
TYPED_TEST(RolloutTest, ImportRefusesRepositoryNotSignedByTrustedRoot) {
  this->AddImage("rootfs/2.5.0.payload", "feature", "2.5.0");
  this->PublishImages();
  testing::RepositorySimulator other(this->clock_.Now());
  other.Publish();
  auto r = ImportRelease(*this->db_, this->clock_,
                         ImportOptions{"x", this->repo_dir_.string(), other.RootBytes(1),
                                       {"rootfs/2.5.0.payload"}, ""});
  EXPECT_ERRC(r, metadata::Errc::ThresholdNotMet);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM releases"), 0);
}

TYPED_TEST(RolloutTest, ImportRefusesUnknownTargetsDuplicatesAndExistingNames) {
  this->AddImage("rootfs/2.5.0.payload", "feature", "2.5.0");
  this->AddImage("rootfs/2.6.0.payload", "feature", "2.6.0");
  this->PublishImages();
  EXPECT_ERRC(this->Import("x", {"rootfs/9.9.payload"}), metadata::Errc::TargetNotFound);
  // Two targets of one namespace for one model: the director could name only one.
  EXPECT_ERRC(this->Import("x", {"rootfs/2.5.0.payload", "rootfs/2.6.0.payload"}),
              Errc::InvalidArgument);
  EXPECT_ERRC(this->Import("bad name", {"rootfs/2.5.0.payload"}), Errc::InvalidArgument);
  ASSERT_TRUE(this->Import("x", {"rootfs/2.5.0.payload"}));
  EXPECT_ERRC(this->Import("x", {"rootfs/2.6.0.payload"}), Errc::Conflict);
}

// ---- campaigns ----

// Phases open one after another, a soak time apart; a device's phase never changes, so the
// devices offered the release only grow, and after the last phase every device has it.
TYPED_TEST(RolloutTest, PhasedCampaignOpensPhasesAfterSoakTime) {
  this->AddImage("rootfs/2.5.0.payload", "feature", "2.5.0");
  this->PublishImages();
  ASSERT_TRUE(this->Import("spring", {"rootfs/2.5.0.payload"}));
  this->Start();
  for (int i = 0; i < 24; ++i) this->Enrol();
  this->Enrol("other-group");
  this->Campaign("c1", "spring", {10, 50, 100}, 2h);
  auto offered = [&] {
    std::set<std::string> out;
    for (std::size_t i = 0; i + 1 < this->devices_.size(); ++i) {
      if (!this->Offered(this->devices_[i]).empty()) out.insert(this->devices_[i].identity.device_id);
    }
    return out;
  };
  const auto phase1 = offered();
  EXPECT_EQ(this->Status("c1").open_phases, 1u);
  EXPECT_LT(phase1.size(), 24u);
  this->clock_.Set(this->clock_.Now() + 1h);
  EXPECT_EQ(offered(), phase1);  // still soaking
  this->clock_.Set(this->clock_.Now() + 1h);
  const auto phase2 = offered();
  EXPECT_EQ(this->Status("c1").open_phases, 2u);
  EXPECT_TRUE(std::includes(phase2.begin(), phase2.end(), phase1.begin(), phase1.end()));
  this->clock_.Set(this->clock_.Now() + 2h);
  EXPECT_EQ(offered().size(), 24u);
  EXPECT_EQ(this->Status("c1").offered, 24);
  // A device outside the campaign's group is never offered it.
  EXPECT_TRUE(this->Offered(this->devices_.back()).empty());
}

// A phase whose failure rate passes the threshold pauses the campaign by itself: no device is
// offered the release any more until an administrator resumes it.
TYPED_TEST(RolloutTest, CampaignPausesWhenFailuresPassThreshold) {
  this->AddImage("rootfs/2.5.0.payload", "feature", "2.5.0");
  this->PublishImages();
  ASSERT_TRUE(this->Import("spring", {"rootfs/2.5.0.payload"}));
  this->Start();
  for (int i = 0; i < 10; ++i) this->Enrol();
  this->Campaign("c1", "spring", {100}, 0s, "beta", 10);
  for (auto& d : this->devices_) ASSERT_EQ(this->Offered(d).size(), 1u);
  this->Report(this->devices_[0], "rootfs/2.5.0.payload", deviceapi::ReportOutcome::Failed);
  EXPECT_EQ(this->Status("c1").state, CampaignState::kRunning);  // 1 of 10 is not above 10%
  this->Report(this->devices_[1], "rootfs/2.5.0.payload", deviceapi::ReportOutcome::RolledBack);
  const CampaignStatus paused = this->Status("c1");
  EXPECT_EQ(paused.state, CampaignState::kPaused);
  EXPECT_EQ(paused.failed, 1);
  EXPECT_EQ(paused.rolled_back, 1);
  EXPECT_NE(paused.reason.find("failure rate"), std::string::npos);
  for (std::size_t i = 2; i < 10; ++i) EXPECT_TRUE(this->Offered(this->devices_[i]).empty());
  // Resumed, the devices that did not fail are offered it again; the failed ones are not.
  ASSERT_TRUE(ResumeCampaign(*this->db_, this->clock_, "c1"));
  EXPECT_EQ(this->Offered(this->devices_[2]).size(), 1u);
  EXPECT_TRUE(this->Offered(this->devices_[0]).empty());
  EXPECT_TRUE(this->Offered(this->devices_[1]).empty());
  ASSERT_TRUE(CancelCampaign(*this->db_, this->clock_, "c1", ""));
  EXPECT_TRUE(this->Offered(this->devices_[2]).empty());
  EXPECT_ERRC(ResumeCampaign(*this->db_, this->clock_, "c1"), Errc::Conflict);
  EXPECT_ERRC(PauseCampaign(*this->db_, this->clock_, "nope", ""), Errc::NotFound);
}

// The same report sent twice counts once, and a report about a target no campaign offered the
// device (or one offered to another device) changes no campaign.
TYPED_TEST(RolloutTest, RepeatedOrForeignReportsDoNotMoveCampaign) {
  this->AddImage("rootfs/2.5.0.payload", "feature", "2.5.0");
  this->PublishImages();
  ASSERT_TRUE(this->Import("spring", {"rootfs/2.5.0.payload"}));
  this->Start();
  Device& a = this->Enrol();
  Device& b = this->Enrol("other-group");
  this->Campaign("c1", "spring", {100}, 0s, "beta", 0);
  ASSERT_EQ(this->Offered(a).size(), 1u);
  // b was never offered it: its failure report is stored but moves nothing.
  this->Report(b, "rootfs/2.5.0.payload", deviceapi::ReportOutcome::Failed);
  EXPECT_EQ(this->Status("c1").state, CampaignState::kRunning);
  deviceapi::ReportBody r{"r-same", "u-1", "rootfs/2.5.0.payload",
                          deviceapi::ReportOutcome::Committed, {}};
  ASSERT_TRUE(a.client->Report(r));
  r.outcome = deviceapi::ReportOutcome::Failed;  // a replay with another outcome
  ASSERT_TRUE(a.client->Report(r));
  const CampaignStatus c = this->Status("c1");
  EXPECT_EQ(c.committed, 1);
  EXPECT_EQ(c.failed, 0);
  EXPECT_EQ(c.state, CampaignState::kRunning);
  // Committed: the director names it no more.
  EXPECT_TRUE(this->Offered(a).empty());
}

// Security fast path: a security release skips soak times (every phase opens at once) and is
// named before a pending feature release of the same component, even a newer one.
TYPED_TEST(RolloutTest, SecurityReleaseSkipsSoakAndComesBeforeFeatureRelease) {
  this->AddImage("rootfs/2.4.1.payload", "security", "2.4.1");
  this->AddImage("rootfs/2.6.0.payload", "feature", "2.6.0");
  this->PublishImages();
  ASSERT_TRUE(this->Import("fix", {"rootfs/2.4.1.payload"}));
  ASSERT_TRUE(this->Import("big", {"rootfs/2.6.0.payload"}));
  this->Start();
  for (int i = 0; i < 6; ++i) this->Enrol();
  this->Campaign("feature", "big", {100}, 0s);
  const CampaignStatus fast = this->Campaign("security", "fix", {1, 10, 50, 100}, 24h * 7);
  EXPECT_TRUE(fast.security);
  EXPECT_EQ(fast.open_phases, 4u);
  for (auto& d : this->devices_) {
    EXPECT_EQ(this->Offered(d), std::vector<std::string>{"rootfs/2.4.1.payload"});
  }
  // Once the security release is installed, the feature release comes next.
  Device& d = this->devices_[0];
  this->Report(d, "rootfs/2.4.1.payload", deviceapi::ReportOutcome::Committed);
  d.installed = "rootfs/2.4.1.payload";
  EXPECT_EQ(this->Offered(d), std::vector<std::string>{"rootfs/2.6.0.payload"});
  // A refused (failed) feature update never blocks a later security release.
  this->Report(d, "rootfs/2.6.0.payload", deviceapi::ReportOutcome::Failed);
  this->AddImage("rootfs/2.4.2.payload", "security", "2.4.2");
  this->PublishImages();
  ASSERT_TRUE(this->Import("fix2", {"rootfs/2.4.2.payload"}));
  this->Campaign("security2", "fix2", {100}, 0s);
  EXPECT_EQ(this->Offered(d), std::vector<std::string>{"rootfs/2.4.2.payload"});
}

// A device is never offered a release older than one it committed in the same namespace.
TYPED_TEST(RolloutTest, NeverOffersReleaseOlderThanOneCommitted) {
  this->AddImage("rootfs/2.5.0.payload", "feature", "2.5.0");
  this->AddImage("rootfs/2.6.0.payload", "feature", "2.6.0");
  this->PublishImages();
  ASSERT_TRUE(this->Import("old", {"rootfs/2.5.0.payload"}));
  ASSERT_TRUE(this->Import("new", {"rootfs/2.6.0.payload"}));
  this->Start();
  Device& d = this->Enrol();
  this->Campaign("c-new", "new", {100}, 0s);
  ASSERT_EQ(this->Offered(d), std::vector<std::string>{"rootfs/2.6.0.payload"});
  this->Report(d, "rootfs/2.6.0.payload", deviceapi::ReportOutcome::Committed);
  d.installed = "rootfs/2.6.0.payload";
  this->Campaign("c-old", "old", {100}, 0s);
  EXPECT_TRUE(this->Offered(d).empty());
}

// Uptane 5.3.2 / 5.4.4.2: what a campaign makes the director name verifies on the device
// against the image repository, for that device and its check-in counter only.
TYPED_TEST(RolloutTest, CampaignTargetPassesFullVerificationOnDevice) {
  this->AddImage("rootfs/2.5.0.payload", "security", "2.5.0");
  this->PublishImages();
  ASSERT_TRUE(this->Import("fix", {"rootfs/2.5.0.payload"}));
  this->Start();
  Device& d = this->Enrol();
  this->Campaign("c1", "fix", {100}, 0s);
  auto answer = this->CheckIn(d);
  ASSERT_TRUE(answer) << answer.error().ToString();
  ASSERT_TRUE(d.identity.director_root);
  const fs::path director_dir = this->dir_.path() / "director";
  fs::create_directories(director_dir);
  std::ofstream(director_dir / "root.json", std::ios::binary) << *d.identity.director_root;
  fs::create_directories(this->dir_.path() / "image");
  std::ofstream(this->dir_.path() / "image" / "root.json", std::ios::binary)
      << this->image_.RootBytes(1);
  LocalFilesystem local;
  metadata::Updater image_updater(this->dir_.path() / "image",
                                  testing::RepositorySimulator::kMetadataUrl, this->image_fetcher_,
                                  local, this->clock_);
  metadata::DirectorFiles files{answer->director.roots, answer->director.timestamp,
                                answer->director.snapshot, answer->director.targets};
  auto verified = metadata::VerifyDirectorAnswer(files, director_dir, local, this->clock_,
                                                 image_updater,
                                                 {d.identity.device_id, kModel, d.counter, 0});
  ASSERT_TRUE(verified) << verified.error().ToString();
  ASSERT_EQ(verified->images.size(), 1u);
  EXPECT_EQ(verified->images[0].path, "rootfs/2.5.0.payload");
  EXPECT_EQ(verified->counter, d.counter);
}

// /metrics shows each campaign's phases, state and outcomes, read from the database.
TYPED_TEST(RolloutTest, CampaignMetricsShowProgressFromDatabase) {
  this->AddImage("rootfs/2.5.0.payload", "feature", "2.5.0");
  this->PublishImages();
  ASSERT_TRUE(this->Import("spring", {"rootfs/2.5.0.payload"}));
  this->Start();
  Device& a = this->Enrol();
  Device& b = this->Enrol();
  this->Campaign("c1", "spring", {50, 100}, 0s, "beta", 100);
  ASSERT_EQ(this->Offered(a).size(), 1u);
  ASSERT_EQ(this->Offered(b).size(), 1u);
  this->Report(a, "rootfs/2.5.0.payload", deviceapi::ReportOutcome::Committed);
  Metrics metrics;
  ASSERT_TRUE(metrics.AddCollector(
      "campaigns", [this] { return CampaignMetrics(*this->db_, this->clock_); }));
  const std::string text = metrics.Expose();
  EXPECT_NE(text.find("upkeep_campaign_open_phases{campaign=\"c1\"} 2"), std::string::npos) << text;
  EXPECT_NE(text.find("upkeep_campaign_running{campaign=\"c1\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("upkeep_campaign_devices{campaign=\"c1\",outcome=\"committed\"} 1"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("upkeep_campaign_devices{campaign=\"c1\",outcome=\"offered\"} 1"),
            std::string::npos)
      << text;
}

// ---- ETag / 304 ----

// A device holding the current answer gets 304 (nothing signed); a change in what it should
// install, or a timestamp past half its validity, gets a fresh 200 with a new ETag.
TYPED_TEST(RolloutTest, UnchangedAnswerIsNotModifiedUntilItChangesOrAges) {
  this->AddImage("rootfs/2.5.0.payload", "feature", "2.5.0");
  this->PublishImages();
  ASSERT_TRUE(this->Import("spring", {"rootfs/2.5.0.payload"}));
  this->Start();
  Device& d = this->Enrol();
  auto first = this->CheckIn(d);
  ASSERT_TRUE(first) << first.error().ToString();
  EXPECT_FALSE(first->not_modified);
  ASSERT_FALSE(first->etag.empty());
  auto second = this->CheckIn(d);
  ASSERT_TRUE(second) << second.error().ToString();
  EXPECT_TRUE(second->not_modified);
  EXPECT_EQ(second->etag, first->etag);
  // The counter still moved: a replay of the 304 check-in is refused.
  EXPECT_EQ(this->Count("SELECT checkin_counter FROM devices WHERE id = $1",
                        {d.identity.device_id}),
            static_cast<std::int64_t>(d.counter));
  // A campaign now names a target: 200 with a new ETag.
  this->Campaign("c1", "spring", {100}, 0s);
  auto third = this->CheckIn(d);
  ASSERT_TRUE(third);
  EXPECT_FALSE(third->not_modified);
  EXPECT_NE(third->etag, first->etag);
  EXPECT_TRUE(this->CheckIn(d)->not_modified);
  // Half the timestamp's validity (1 day by default) later: re-signed.
  this->clock_.Set(this->clock_.Now() + 12h + 1s);
  auto aged = this->CheckIn(d);
  ASSERT_TRUE(aged);
  EXPECT_FALSE(aged->not_modified);
  // An ETag the server never gave is answered in full.
  d.etag = "\"not-ours\"";
  auto other = this->CheckIn(d);
  ASSERT_TRUE(other);
  EXPECT_FALSE(other->not_modified);
}

// ---- groups and windows ----

// Devices of a group with a maintenance window get an install window inside it, their start
// times spread over it so the group does not start at once.
TYPED_TEST(RolloutTest, MaintenanceWindowSpreadsInstallStartsOverWindow) {
  this->AddImage("rootfs/2.5.0.payload", "feature", "2.5.0");
  this->PublishImages();
  ASSERT_TRUE(this->Import("spring", {"rootfs/2.5.0.payload"}));
  ASSERT_TRUE(SetMaintenanceWindow(*this->db_, "beta", MaintenanceWindow{120, 120}));
  this->Start();
  for (int i = 0; i < 8; ++i) this->Enrol();
  this->Campaign("c1", "spring", {100}, 0s);
  std::set<std::uint64_t> starts;
  for (auto& d : this->devices_) {
    d.etag.clear();
    auto a = this->CheckIn(d);
    ASSERT_TRUE(a) << a.error().ToString();
    ASSERT_TRUE(a->install_window);
    const auto& w = *a->install_window;
    EXPECT_EQ((w.not_after - 4 * 3600) % 86400, 0u);  // ends at 04:00 UTC
    EXPECT_GE(w.not_before + 7200, w.not_after);
    EXPECT_LT(w.not_before, w.not_after);
    starts.insert(w.not_before);
  }
  EXPECT_GE(starts.size(), 7u);
  ASSERT_TRUE(SetMaintenanceWindow(*this->db_, "beta", std::nullopt));
  this->devices_[0].etag.clear();
  auto a = this->CheckIn(this->devices_[0]);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->install_window);
  EXPECT_ERRC(SetMaintenanceWindow(*this->db_, "beta", MaintenanceWindow{1440, 10}),
              Errc::InvalidArgument);
  EXPECT_ERRC(SetDeviceGroup(*this->db_, "d-nope", "beta"), Errc::DeviceNotFound);
}

TEST(WindowForTest, PicksCurrentOrNextWindowIncludingOneAcrossMidnight) {
  const std::int64_t day = 20000 * 86400LL;
  // 23:00 + 2 h: at 00:30 the window that began yesterday is still open.
  const InstallWindow w = WindowFor({23 * 60, 120}, "d-1", day + 1800);
  EXPECT_EQ(w.not_after, day + 3600);
  EXPECT_GE(w.not_before, day - 3600);
  // At 02:00 it is over: tonight's.
  const InstallWindow next = WindowFor({23 * 60, 120}, "d-1", day + 7200);
  EXPECT_EQ(next.not_after, day + 86400 + 3600);
  // 02:00 + 1 h, asked at 01:00: today's, later.
  const InstallWindow later = WindowFor({120, 60}, "d-1", day + 3600);
  EXPECT_EQ(later.not_after, day + 3 * 3600);
  // Starts of many devices cover most of the window.
  std::int64_t lo = INT64_MAX;
  std::int64_t hi = 0;
  for (int i = 0; i < 1000; ++i) {
    const InstallWindow x = WindowFor({120, 60}, "d-" + std::to_string(i), day);
    lo = std::min(lo, x.not_before);
    hi = std::max(hi, x.not_before);
  }
  EXPECT_LT(lo, day + 2 * 3600 + 120);
  EXPECT_GT(hi, day + 3 * 3600 - 120);
}

// A device certificate past its validity is refused at every request, though its signature was
// checked (and remembered) while it was valid.
TYPED_TEST(RolloutTest, RefusesDeviceCertificateOnceExpired) {
  FleetOptions o = this->Options();
  o.certificate_validity = std::chrono::days(2);
  this->Start(std::move(o));
  Device& d = this->Enrol();
  ASSERT_TRUE(d.client->SupportPeriod().has_value() ||
              d.client->SupportPeriod().error().code() == deviceapi::Errc::NotFound);
  this->clock_.Set(this->clock_.Now() + std::chrono::days(3));
  EXPECT_ERRC(d.client->SupportPeriod(), deviceapi::Errc::Unauthenticated);
  EXPECT_ERRC(this->CheckIn(d), deviceapi::Errc::Unauthenticated);
}

// ---- incidents from reports ----

// A rollback, and a third failure within a week, become incidents for administrators.
TYPED_TEST(RolloutTest, RollbacksAndRepeatedFailuresBecomeIncidents) {
  this->Start();
  Device& d = this->Enrol();
  this->Report(d, "rootfs/2.5.0.payload", deviceapi::ReportOutcome::RolledBack);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM incidents WHERE kind = 'rollback' AND device_id = $1",
                        {d.identity.device_id}),
            1);
  this->Report(d, "rootfs/2.5.0.payload", deviceapi::ReportOutcome::Failed);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM incidents WHERE kind = 'repeated_failures'"), 0);
  this->Report(d, "rootfs/2.5.0.payload", deviceapi::ReportOutcome::Failed);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM incidents WHERE kind = 'repeated_failures'"), 1);
  this->Report(d, "rootfs/2.5.0.payload", deviceapi::ReportOutcome::Committed);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM incidents"), 2);
}

// ---- enrolment with a manufacturer certificate ----

TYPED_TEST(RolloutTest, EnrolsWithManufacturerCertificateAndReKeysSameDevice) {
  const testing::TestPki::Identity maker_ca = testing::TestPki::Ca("maker CA");
  const testing::TestPki::Identity maker = testing::TestPki::Device(maker_ca, "SN-4711");
  FleetOptions o = this->Options();
  o.manufacturer_ca_pem = maker_ca.certificate_pem;
  o.manufacturer_group = "factory";
  this->client_ca_ = this->pki_.device_ca.certificate_pem + maker_ca.certificate_pem;
  this->Start(std::move(o));
  auto enrol = [&](const std::string& serial) {
    deviceapi::ServerEndpoint e{this->Url(), this->pki_.server_ca.certificate_pem,
                                maker.certificate_pem, maker.key_pem};
    auto client = deviceapi::DeviceClient::ForEnrolment(e);
    EXPECT_TRUE(client);
    return (*client)->Enrol("", kModel, serial);
  };
  auto first = enrol("SN-4711");
  ASSERT_TRUE(first) << first.error().ToString();
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM devices WHERE device_group = 'factory'"), 1);
  // The certificate's name is the serial: another serial is refused.
  EXPECT_ERRC(enrol("SN-0001"), deviceapi::Errc::BadRequest);
  // Enrolling again (new key after a factory reset) re-keys the same device; the old
  // certificate stops working.
  auto again = enrol("SN-4711");
  ASSERT_TRUE(again) << again.error().ToString();
  EXPECT_EQ(again->device_id, first->device_id);
  auto old_client = deviceapi::DeviceClient::ForIdentity(*first);
  ASSERT_TRUE(old_client);
  EXPECT_ERRC((*old_client)->SupportPeriod(), deviceapi::Errc::Unauthenticated);
  // A certificate from the manufacturer CA is no device identity, even naming the device.
  const testing::TestPki::Identity forged =
      testing::TestPki::Device(maker_ca, again->device_id.c_str());
  deviceapi::DeviceIdentity as_device = *again;
  as_device.certificate_pem = forged.certificate_pem;
  as_device.private_key_pem = forged.key_pem;
  as_device.device_ca_pem = maker_ca.certificate_pem;
  auto impostor = deviceapi::DeviceClient::ForIdentity(as_device);
  ASSERT_TRUE(impostor);
  EXPECT_ERRC((*impostor)->SupportPeriod(), deviceapi::Errc::Unauthenticated);
  // Blocked, it cannot come back by enrolling again.
  ASSERT_TRUE(BlockDevice(*this->db_, first->device_id));
  EXPECT_ERRC(enrol("SN-4711"), deviceapi::Errc::Blocked);
}

}  // namespace
}  // namespace upkeep::server
