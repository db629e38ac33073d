// The device API (docs/formats/device-api.md) end to end: a real HttpsServer on 127.0.0.1 port 0
// with the Fleet handler over a real database (a SQLite file; PostgreSQL under pg_virtualenv),
// driven by libcurl with client certificates the Fleet issued at enrolment. Section numbers refer
// to the Uptane Standard (5.3.2 "Director repository", 5.4.4.2 "Full verification").

#include "upkeep/server/fleet.hpp"

#include <curl/curl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <future>
#include <thread>

#include "memory_fetcher.hpp"
#include "director_fixture.hpp"
#include "fleet_backends.hpp"
#include "repository_simulator.hpp"
#include "temp_dir.hpp"
#include "update_metadata_fixture.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/director.hpp"

namespace upkeep::server {
namespace {

namespace fs = std::filesystem;
namespace x509 = crypto::x509;
using metadata::Json;
using namespace std::chrono_literals;

using testing::Backends;
using testing::BackendNames;
using testing::PostgresqlBaseUrl;
using testing::SqliteBackend;

// Forwards to a real database until told to fail; then every call is Unavailable, as when the
// database server is unreachable.
class SwitchableDatabase final : public storage::Database {
 public:
  explicit SwitchableDatabase(storage::Database& inner) : inner_(inner) {}
  void SetUnavailable(bool v) { unavailable_ = v; }
  [[nodiscard]] storage::Backend backend() const override { return inner_.backend(); }

 protected:
  Result<std::int64_t> DoExec(std::string_view sql, const storage::Params& params) override {
    if (unavailable_) return Down();
    return inner_.Exec(sql, params);
  }
  Result<storage::Rows> DoQuery(std::string_view sql, const storage::Params& params) override {
    if (unavailable_) return Down();
    return inner_.Query(sql, params);
  }
  Result<void> DoExecScript(std::string_view sql) override {
    if (unavailable_) return Down();
    return inner_.ExecScript(sql);
  }
  Result<void> RunTransaction(const std::function<Result<void>(storage::Tx&)>& body,
                              Isolation) override {
    if (unavailable_) return Down();
    return inner_.InTransaction([&](storage::Tx& tx) { return body(tx); });
  }

 private:
  static Error Down() { return Error(storage::Errc::Unavailable, "database unreachable"); }
  storage::Database& inner_;
  std::atomic<bool> unavailable_{false};
};

struct Reply {
  CURLcode code = CURLE_OK;
  long status = 0;  // NOLINT(google-runtime-int): libcurl's type
  std::string body;
  std::string retry_after;
  [[nodiscard]] Json JsonBody() const { return Json::parse(body, nullptr, false); }
  [[nodiscard]] std::string ErrorCode() const {
    const Json j = JsonBody();
    return j.is_object() && j.contains("error") && j["error"].is_string()
               ? j["error"].get<std::string>()
               : "<" + body + ">";
  }
};

std::size_t Collect(char* data, std::size_t size, std::size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

std::size_t CollectHeader(char* data, std::size_t size, std::size_t n, void* user) {
  std::string line(data, size * n);
  if (line.size() > 13 && (line.starts_with("Retry-After:") || line.starts_with("retry-after:"))) {
    std::string v = line.substr(12);
    while (!v.empty() && (v.front() == ' ')) v.erase(0, 1);
    while (!v.empty() && (v.back() == '\r' || v.back() == '\n')) v.pop_back();
    *static_cast<std::string*>(user) = v;
  }
  return size * n;
}

// A device's TLS identity after enrolment.
struct DeviceIdentity {
  std::string id;
  fs::path cert;
  fs::path key;
  Json director_root;  // the enrolment answer's "director_root" (null when absent)
};

constexpr const char* kModel = "acme-cam-v2";
constexpr const char* kImage = "rootfs/2.5.0.payload";

// Update metadata of an image-repository target for `hardware`.
Json UpdateCustom(const std::vector<std::string>& hardware) {
  return testing::ImageUpdateCustom(hardware);
}

template <typename B>
class FleetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = B::SkipReason()) GTEST_SKIP() << *why;
    backend_.emplace();
    auto db = storage::OpenDatabase(backend_->url, DbOptions());
    ASSERT_TRUE(db) << db.error().ToString();
    real_db_ = std::move(*db);
    ASSERT_TRUE(MigrateFleetSchema(*real_db_));
    db_ = std::make_unique<SwitchableDatabase>(*real_db_);

    const auto now = clock_.Now();
    const x509::Validity validity{now - 1h, now + 24h * 30};
    auto ca_key = x509::TlsKey::Generate();
    ASSERT_TRUE(ca_key);
    ca_key_pem_ = ca_key->ToPem().value();
    ca_pem_ = x509::CreateCa(*ca_key, "upkeep device CA", validity).value();
    auto server_key = x509::TlsKey::Generate().value();
    server_key_pem_ = server_key.ToPem().value();
    server_pem_ = x509::IssueServerCertificate(ca_pem_, *ca_key, server_key.public_key(),
                                               x509::ServerNames{{}, {"127.0.0.1"}}, validity)
                      .value()
                      .pem;
    std::ofstream(dir_.path() / "ca.pem") << ca_pem_;
  }

  void TearDown() override {
    if (server_) server_->Stop(1s);
  }

  storage::Options DbOptions() {
    storage::Options o;
    o.busy_timeout = 200ms;
    o.max_attempts = 2;
    return o;
  }

  FleetOptions Options() {
    FleetOptions o;
    o.device_ca_pem = ca_pem_;
    o.device_ca_key_pem = ca_key_pem_;
    o.enrol_burst = 100;
    o.models["acme-cam-v2"] = {"2031-12-31", "https://example.com/support/acme-cam-v2"};
    return o;
  }

  void Start(FleetOptions o) {
    auto fleet = Fleet::Create(*db_, clock_, std::move(o));
    ASSERT_TRUE(fleet) << fleet.error().ToString();
    fleet_ = std::move(*fleet);
    HttpsOptions h;
    h.certificate_pem = server_pem_;
    h.private_key_pem = server_key_pem_;
    h.client_ca_pem = ca_pem_;
    auto s = HttpsServer::Start(h, fleet_->AsHandler());
    ASSERT_TRUE(s) << s.error().ToString();
    server_ = std::move(*s);
  }
  void Start() { Start(Options()); }

  Reply Send(const std::string& method, const std::string& path, const std::string& body,
             const DeviceIdentity* device = nullptr) {
    Reply r;
    CURL* curl = curl_easy_init();
    const std::string url = "https://127.0.0.1:" + std::to_string(server_->port()) + path;
    const std::string ca = (dir_.path() / "ca.pem").string();
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_CAINFO, ca.c_str());
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &Collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &CollectHeader);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r.retry_after);
    const std::string cert = device ? device->cert.string() : "";
    const std::string key = device ? device->key.string() : "";
    if (device) {
      curl_easy_setopt(curl, CURLOPT_SSLCERT, cert.c_str());
      curl_easy_setopt(curl, CURLOPT_SSLKEY, key.c_str());
    }
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    if (method == "POST") {
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    }
    r.code = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return r;
  }
  Reply Post(const std::string& path, const Json& body, const DeviceIdentity* device = nullptr) {
    return Send("POST", path, body.dump(), device);
  }

  std::string Token(const std::string& model = "acme-cam-v2") {
    auto t = CreateEnrolmentToken(*real_db_, clock_, model, "beta", 24h);
    EXPECT_TRUE(t) << t.error().ToString();
    return t.value_or("");
  }

  Json EnrolBody(const std::string& token, const x509::TlsKey& key) {
    return Json{{"token", token},
                {"model", "acme-cam-v2"},
                {"serial", "SN-" + std::to_string(++serials_)},
                {"csr", x509::CreateCsr(key, "new-device").value()}};
  }

  // Enrols a device with a fresh token and key; its certificate and key go to files for curl.
  DeviceIdentity Enrol() {
    auto key = x509::TlsKey::Generate().value();
    const Reply r = Post("/api/v1/enrol", EnrolBody(Token(), key));
    EXPECT_EQ(r.status, 200) << r.body;
    const Json j = r.JsonBody();
    DeviceIdentity d;
    if (!j.is_object() || !j.contains("device_id")) return d;
    d.id = j["device_id"].get<std::string>();
    d.cert = dir_.path() / (d.id + ".pem");
    d.key = dir_.path() / (d.id + ".key");
    std::ofstream(d.cert) << j["certificate"].get<std::string>();
    std::ofstream(d.key) << key.ToPem().value();
    if (j.contains("director_root")) d.director_root = j["director_root"];
    return d;
  }

  Json Checkin(std::int64_t counter) {
    return Json{
        {"counter", counter},
        {"model", "acme-cam-v2"},
        {"hardware", "acme-cam-v2"},
        {"components",
         {{"rootfs",
           {{"version", "2.4.1"}, {"target", "rootfs/2.4.1.payload"}, {"security_version", 7}}}}},
        {"director", {{"root_version", 1}, {"targets_version", 0}}},
        {"policy",
         {{"auto_install", true},
          {"notifications", true},
          {"security_auto_install", true},
          {"postponed_until", nullptr}}},
        {"update", {{"state", "idle"}, {"target", nullptr}}}};
  }

  static Json ReportBody(const std::string& id) {
    return Json{
        {"report_id", id},
        {"update_id", "u-1"},
        {"target", "rootfs/2.5.0.payload"},
        {"outcome", "committed"},
        {"events",
         Json::array(
             {{{"time", 1764400000}, {"id", "install.started"}, {"data", Json::object()}}})}};
  }

  static Json IncidentBody(const std::string& id) {
    return Json{{"incident_id", id},
                {"kind", "verification_failed"},
                {"source", "network"},
                {"target", "rootfs/2.5.0.payload"},
                {"error", "install.ChunkDigestMismatch"},
                {"detail", "chunk 21"},
                {"time", 1764400000}};
  }

  // A director with one offline root key and one online key per role, as upkeep-server init
  // makes it.
  FleetOptions WithDirector() {
    FleetOptions o = Options();
    o.director = testing::TestDirector(clock_.Now());
    return o;
  }

  // An image repository listing kImage for kModel, and its Updater.
  void PublishImageRepository() {
    image_.AddTarget("targets", kImage, "rootfs 2.5.0 image bytes");
    image_.targets["targets"][kImage]["custom"] = UpdateCustom({kModel});
    image_.Publish();
    image_.ServeTo(image_fetcher_);
    fs::create_directories(dir_.path() / "image");
    std::ofstream(dir_.path() / "image" / "root.json", std::ios::binary) << image_.RootBytes(1);
    image_updater_.emplace(dir_.path() / "image",
                           upkeep::testing::RepositorySimulator::kMetadataUrl, image_fetcher_, fs_,
                           clock_);
  }

  // What the device does with a check-in answer: TUF against the director root it got at
  // enrolment (kept in its own metadata directory), then full verification.
  Result<metadata::DirectorVerified> VerifyAnswer(const DeviceIdentity& device, const Json& answer,
                                                  std::uint64_t sent_counter) {
    const fs::path dir = dir_.path() / ("director-" + device.id);
    if (!fs::exists(dir / "root.json")) {
      fs::create_directories(dir);
      std::ofstream(dir / "root.json", std::ios::binary) << device.director_root.dump();
    }
    metadata::DirectorFiles files;
    const Json& d = answer.at("director");
    for (const Json& root : d.at("roots")) files.roots.push_back(root.get<std::string>());
    files.timestamp = d.at("timestamp").get<std::string>();
    files.snapshot = d.at("snapshot").get<std::string>();
    files.targets = d.at("targets").get<std::string>();
    return metadata::VerifyDirectorAnswer(files, dir, fs_, clock_, *image_updater_,
                                          {device.id, kModel, sent_counter, 0});
  }

  std::int64_t Count(const std::string& sql, const storage::Params& params = {}) {
    auto rows = real_db_->Query(sql, params);
    EXPECT_TRUE(rows) << rows.error().ToString();
    if (!rows || rows->empty()) return -1;
    return (*rows)[0].Get<std::int64_t>(0).value_or(-1);
  }

  FakeClock clock_{SystemClock::Process().Now()};
  testing::TempDir dir_;
  std::optional<B> backend_;
  std::unique_ptr<storage::Database> real_db_;
  std::unique_ptr<SwitchableDatabase> db_;
  std::string ca_pem_, ca_key_pem_, server_pem_, server_key_pem_;
  std::unique_ptr<Fleet> fleet_;
  std::unique_ptr<HttpsServer> server_;
  int serials_ = 0;
  upkeep::testing::RepositorySimulator image_{clock_.Now()};
  upkeep::testing::MemoryFetcher image_fetcher_;
  LocalFilesystem fs_;
  std::optional<metadata::Updater> image_updater_;
};

TYPED_TEST_SUITE(FleetTest, Backends, BackendNames);

// Two enrolments give two devices with their own IDs and certificates naming them.
TYPED_TEST(FleetTest, EnrolsTwoDevicesWithDistinctIdentities) {
  this->Start();
  const DeviceIdentity a = this->Enrol();
  const DeviceIdentity b = this->Enrol();
  ASSERT_FALSE(a.id.empty());
  ASSERT_FALSE(b.id.empty());
  EXPECT_NE(a.id, b.id);
  EXPECT_TRUE(a.id.starts_with("d-"));
  EXPECT_EQ(a.id.size(), 18u);
  auto info = x509::VerifyIssuedBy(
      std::string(std::istreambuf_iterator<char>(std::ifstream(a.cert).rdbuf()), {}), this->ca_pem_,
      this->clock_.Now());
  ASSERT_TRUE(info) << info.error().ToString();
  EXPECT_EQ(info->device_id, a.id);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM devices WHERE device_group = 'beta'"), 2);
  // The token is stored only as its digest.
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM enrolment_tokens WHERE token_sha256 LIKE 'ut-%'"), 0);
}

// A token enrols one device: its second use is 401 unauthenticated and adds no device.
TYPED_TEST(FleetTest, RefusesTokenUsedTwice) {
  this->Start();
  const std::string token = this->Token();
  auto key = x509::TlsKey::Generate().value();
  EXPECT_EQ(this->Post("/api/v1/enrol", this->EnrolBody(token, key)).status, 200);
  const Reply again = this->Post("/api/v1/enrol", this->EnrolBody(token, key));
  EXPECT_EQ(again.status, 401);
  EXPECT_EQ(again.ErrorCode(), "unauthenticated");
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM devices"), 1);
}

// Two enrolments racing with one token: exactly one device is enrolled.
TYPED_TEST(FleetTest, EnrolsOneDeviceWhenTokenIsRaced) {
  this->Start();
  const std::string token = this->Token();
  auto key = x509::TlsKey::Generate().value();
  const Json body = this->EnrolBody(token, key);
  auto first = std::async(std::launch::async, [&] { return this->Post("/api/v1/enrol", body); });
  auto second = std::async(std::launch::async, [&] { return this->Post("/api/v1/enrol", body); });
  ASSERT_EQ(first.wait_for(60s), std::future_status::ready);
  ASSERT_EQ(second.wait_for(60s), std::future_status::ready);
  const long a = first.get().status;   // NOLINT(google-runtime-int): libcurl's type
  const long b = second.get().status;  // NOLINT(google-runtime-int)
  EXPECT_EQ((a == 200) + (b == 200), 1) << a << " " << b;
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM devices"), 1);
}

// Enrolment without a token, with an unknown one, or with one for another model is 401.
TYPED_TEST(FleetTest, RefusesEnrolmentWithoutValidToken) {
  this->Start();
  auto key = x509::TlsKey::Generate().value();
  Json body = this->EnrolBody("", key);
  body.erase("token");
  Reply r = this->Post("/api/v1/enrol", body);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.ErrorCode(), "unauthenticated");
  r = this->Post("/api/v1/enrol", this->EnrolBody("ut-made-up", key));
  EXPECT_EQ(r.status, 401);
  r = this->Post("/api/v1/enrol", this->EnrolBody(this->Token("other-model"), key));
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM devices"), 0);
}

// An expired token is refused.
TYPED_TEST(FleetTest, RefusesExpiredToken) {
  this->Start();
  const std::string token = this->Token();
  this->clock_.Advance(25h);
  auto key = x509::TlsKey::Generate().value();
  EXPECT_EQ(this->Post("/api/v1/enrol", this->EnrolBody(token, key)).status, 401);
}

// Enrolment attempts beyond the burst from one address are 429 with Retry-After, until refilled.
TYPED_TEST(FleetTest, RateLimitsEnrolmentPerAddress) {
  FleetOptions o = this->Options();
  o.enrol_burst = 3;
  o.enrol_refill_seconds = 60;
  this->Start(o);
  auto key = x509::TlsKey::Generate().value();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(this->Post("/api/v1/enrol", this->EnrolBody("ut-guess", key)).status, 401);
  }
  const Reply limited = this->Post("/api/v1/enrol", this->EnrolBody(this->Token(), key));
  EXPECT_EQ(limited.status, 429);
  EXPECT_EQ(limited.ErrorCode(), "rate_limited");
  EXPECT_EQ(limited.retry_after, "60");
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM devices"), 0);
  this->clock_.Advance(60s);
  EXPECT_EQ(this->Post("/api/v1/enrol", this->EnrolBody(this->Token(), key)).status, 200);
}

// Check-in stores the device's inventory and answers the next check-in time.
TYPED_TEST(FleetTest, CheckinStoresInventory) {
  this->Start();
  const DeviceIdentity a = this->Enrol();
  const Reply r = this->Post("/api/v1/checkin", this->Checkin(1), &a);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.JsonBody()["next_checkin_seconds"], 86400);
  EXPECT_TRUE(r.JsonBody()["director"].is_object());
  auto rows = this->real_db_->Query(
      "SELECT components, checkin_counter, hardware, update_state FROM devices WHERE id = $1",
      {a.id});
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 1u);
  const storage::Row& row = (*rows)[0];
  const Json components = Json::parse(row.Get<std::string>(0).value());
  EXPECT_EQ(components["rootfs"]["version"], "2.4.1");
  EXPECT_EQ(row.Get<std::int64_t>(1).value(), 1);
  EXPECT_EQ(row.Get<std::string>(2).value(), "acme-cam-v2");
  EXPECT_EQ(Json::parse(row.Get<std::string>(3).value())["state"], "idle");
}

// A replayed or older check-in counter is 409 conflict and changes nothing.
TYPED_TEST(FleetTest, RefusesReplayedCheckinCounter) {
  this->Start();
  const DeviceIdentity a = this->Enrol();
  ASSERT_EQ(this->Post("/api/v1/checkin", this->Checkin(5), &a).status, 200);
  Json replay = this->Checkin(5);
  replay["components"]["rootfs"]["version"] = "1.0";
  Reply r = this->Post("/api/v1/checkin", replay, &a);
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(r.ErrorCode(), "conflict");
  EXPECT_EQ(this->Post("/api/v1/checkin", this->Checkin(4), &a).status, 409);
  EXPECT_EQ(this->Count("SELECT checkin_counter FROM devices WHERE id = $1", {a.id}), 5);
  EXPECT_EQ(this->Post("/api/v1/checkin", this->Checkin(6), &a).status, 200);
}

// Uptane 5.3.2 and 5.4.4.2: enrolment hands out the director root, and a check-in is answered
// with the director's metadata for that device, which verifies against that root; with nothing
// assigned it names no target but still names the device and the check-in's counter.
TYPED_TEST(FleetTest, CheckinAnswerVerifiesAgainstEnrolmentDirectorRoot) {
  this->Start(this->WithDirector());
  this->PublishImageRepository();
  const DeviceIdentity a = this->Enrol();
  ASSERT_TRUE(a.director_root.is_object());
  const Reply r = this->Post("/api/v1/checkin", this->Checkin(7), &a);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.JsonBody()["director"]["roots"].empty());
  auto verified = this->VerifyAnswer(a, r.JsonBody(), 7);
  ASSERT_TRUE(verified) << verified.error().ToString();
  EXPECT_TRUE(verified->images.empty());
  EXPECT_EQ(verified->counter, 7u);
  EXPECT_EQ(
      this->Count("SELECT timestamp_version FROM director_state WHERE device_id = $1", {a.id}), 1);
}

// Uptane 5.3.2.1: an unchanged assignment keeps the director's targets and snapshot (same bytes
// and versions) and re-signs only the timestamp, and the device still accepts the answer.
TYPED_TEST(FleetTest, UnchangedAssignmentKeepsDirectorTargets) {
  this->Start(this->WithDirector());
  this->PublishImageRepository();
  const DeviceIdentity a = this->Enrol();
  const Reply first = this->Post("/api/v1/checkin", this->Checkin(7), &a);
  ASSERT_EQ(first.status, 200) << first.body;
  ASSERT_TRUE(this->VerifyAnswer(a, first.JsonBody(), 7));
  const Reply second = this->Post("/api/v1/checkin", this->Checkin(8), &a);
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(second.JsonBody()["director"]["targets"], first.JsonBody()["director"]["targets"]);
  EXPECT_NE(second.JsonBody()["director"]["timestamp"], first.JsonBody()["director"]["timestamp"]);
  auto verified = this->VerifyAnswer(a, second.JsonBody(), 8);
  ASSERT_TRUE(verified) << verified.error().ToString();
  EXPECT_EQ(verified->counter, 7u);
  EXPECT_EQ(this->Count("SELECT targets_version FROM director_state WHERE device_id = $1", {a.id}),
            1);
  EXPECT_EQ(
      this->Count("SELECT timestamp_version FROM director_state WHERE device_id = $1", {a.id}), 2);
}

// Uptane 5.3.2.1 and 5.4.4.2: after an administrator assigns an image to device A, A's next
// answer names it with A's ID and that check-in's counter and full verification against the
// image repository yields it; device B's answer never names A's image.
TYPED_TEST(FleetTest, AssignedTargetReachesOnlyItsDevice) {
  this->Start(this->WithDirector());
  this->PublishImageRepository();
  const DeviceIdentity a = this->Enrol();
  const DeviceIdentity b = this->Enrol();
  Reply r = this->Post("/api/v1/checkin", this->Checkin(1), &a);
  ASSERT_EQ(r.status, 200) << r.body;
  ASSERT_TRUE(this->VerifyAnswer(a, r.JsonBody(), 1));

  const metadata::TargetFile image = this->image_updater_->GetTargetInfo(kImage).value();
  ASSERT_TRUE(AssignTarget(*this->real_db_, a.id, kImage, image.length, image.hashes.at("sha256")));
  r = this->Post("/api/v1/checkin", this->Checkin(2), &a);
  ASSERT_EQ(r.status, 200) << r.body;
  auto verified = this->VerifyAnswer(a, r.JsonBody(), 2);
  ASSERT_TRUE(verified) << verified.error().ToString();
  ASSERT_EQ(verified->images.size(), 1u);
  EXPECT_EQ(verified->images[0].path, kImage);
  EXPECT_EQ(verified->counter, 2u);
  const auto targets =
      metadata::ParseTargets(r.JsonBody()["director"]["targets"].get<std::string>()).value();
  EXPECT_EQ(targets.body.targets.at(kImage).custom["upkeep_director"]["device"], a.id);

  const Reply rb = this->Post("/api/v1/checkin", this->Checkin(1), &b);
  ASSERT_EQ(rb.status, 200) << rb.body;
  EXPECT_EQ(rb.JsonBody()["director"]["targets"].get<std::string>().find(kImage),
            std::string::npos);
  auto verified_b = this->VerifyAnswer(b, rb.JsonBody(), 1);
  ASSERT_TRUE(verified_b) << verified_b.error().ToString();
  EXPECT_TRUE(verified_b->images.empty());

  // Unassigned: A's next answer names nothing again.
  ASSERT_TRUE(UnassignTarget(*this->real_db_, a.id, kImage));
  r = this->Post("/api/v1/checkin", this->Checkin(3), &a);
  ASSERT_EQ(r.status, 200) << r.body;
  verified = this->VerifyAnswer(a, r.JsonBody(), 3);
  ASSERT_TRUE(verified) << verified.error().ToString();
  EXPECT_TRUE(verified->images.empty());
}

// An assignment names an existing device and a well-formed target; anything else is refused.
TYPED_TEST(FleetTest, RefusesAssignmentToUnknownDeviceOrMalformedTarget) {
  this->Start(this->WithDirector());
  const DeviceIdentity a = this->Enrol();
  const std::string sha(64, 'a');
  EXPECT_EQ(AssignTarget(*this->real_db_, "d-unknown", kImage, 10, sha).error().code(),
            Errc::DeviceNotFound);
  EXPECT_EQ(AssignTarget(*this->real_db_, a.id, "", 10, sha).error().code(), Errc::InvalidArgument);
  EXPECT_EQ(AssignTarget(*this->real_db_, a.id, "rootfs/../../etc/shadow", 10, sha).error().code(),
            Errc::InvalidArgument);
  EXPECT_EQ(AssignTarget(*this->real_db_, a.id, "/rootfs/x", 10, sha).error().code(),
            Errc::InvalidArgument);
  EXPECT_EQ(AssignTarget(*this->real_db_, a.id, kImage, 0, sha).error().code(),
            Errc::InvalidArgument);
  EXPECT_EQ(AssignTarget(*this->real_db_, a.id, kImage, 10, "ABC").error().code(),
            Errc::InvalidArgument);
  EXPECT_EQ(UnassignTarget(*this->real_db_, a.id, kImage).error().code(), Errc::DeviceNotFound);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM director_assignments"), 0);
}

// A replayed check-in signs nothing: the director's state is unchanged (Uptane 5.4.4.2 counter).
TYPED_TEST(FleetTest, ReplayedCheckinSignsNoDirectorMetadata) {
  this->Start(this->WithDirector());
  const DeviceIdentity a = this->Enrol();
  ASSERT_EQ(this->Post("/api/v1/checkin", this->Checkin(5), &a).status, 200);
  const Reply r = this->Post("/api/v1/checkin", this->Checkin(5), &a);
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(r.ErrorCode(), "conflict");
  EXPECT_EQ(
      this->Count("SELECT timestamp_version FROM director_state WHERE device_id = $1", {a.id}), 1);
}

// Device B's reports are B's: the server takes the device from the certificate, a body naming
// another device is refused, and B's check-ins never touch A's record.
TYPED_TEST(FleetTest, DeviceCannotWriteAnotherDevicesRecords) {
  this->Start();
  const DeviceIdentity a = this->Enrol();
  const DeviceIdentity b = this->Enrol();
  ASSERT_EQ(this->Post("/api/v1/checkin", this->Checkin(10), &a).status, 200);
  Json forged = this->ReportBody("r-forged");
  forged["device_id"] = a.id;
  Reply r = this->Post("/api/v1/reports", forged, &b);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.ErrorCode(), "bad_request");
  EXPECT_EQ(this->Post("/api/v1/reports", this->ReportBody("r-b"), &b).status, 202);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM reports WHERE device_id = $1", {a.id}), 0);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM reports WHERE device_id = $1", {b.id}), 1);
  ASSERT_EQ(this->Post("/api/v1/checkin", this->Checkin(1), &b).status, 200);
  EXPECT_EQ(this->Count("SELECT checkin_counter FROM devices WHERE id = $1", {a.id}), 10);
  EXPECT_EQ(this->Post("/api/v1/incidents", this->IncidentBody("i-b"), &b).status, 202);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM incidents WHERE device_id = $1", {b.id}), 1);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM incidents WHERE device_id = $1", {a.id}), 0);
}

// A blocked device is refused with 403 blocked on every endpoint; other devices are unaffected.
TYPED_TEST(FleetTest, RefusesBlockedDeviceEverywhere) {
  this->Start();
  const DeviceIdentity a = this->Enrol();
  const DeviceIdentity b = this->Enrol();
  ASSERT_TRUE(BlockDevice(*this->real_db_, a.id));
  for (const Reply& r : {this->Post("/api/v1/checkin", this->Checkin(1), &a),
                         this->Post("/api/v1/reports", this->ReportBody("r-1"), &a),
                         this->Post("/api/v1/incidents", this->IncidentBody("i-1"), &a),
                         this->Send("GET", "/api/v1/support", "", &a)}) {
    EXPECT_EQ(r.status, 403);
    EXPECT_EQ(r.ErrorCode(), "blocked");
  }
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM reports"), 0);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM incidents"), 0);
  EXPECT_EQ(this->Post("/api/v1/checkin", this->Checkin(1), &b).status, 200);
  EXPECT_EQ(BlockDevice(*this->real_db_, "d-0000000000000000").error().code(),
            Errc::DeviceNotFound);
}

// Device endpoints without a client certificate are 401 unauthenticated.
TYPED_TEST(FleetTest, RefusesDeviceEndpointsWithoutCertificate) {
  this->Start();
  const Reply r = this->Post("/api/v1/checkin", this->Checkin(1));
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.ErrorCode(), "unauthenticated");
  EXPECT_EQ(this->Send("GET", "/api/v1/nothing", "").ErrorCode(), "not_found");
}

// A certificate the device CA issued for a device the database does not know (never enrolled,
// or issued outside enrolment) is 401 unauthenticated.
TYPED_TEST(FleetTest, RefusesCertificateOfUnknownDevice) {
  this->Start();
  auto key = x509::TlsKey::Generate().value();
  const auto now = this->clock_.Now();
  auto issued =
      x509::IssueClientCertificate(this->ca_pem_, x509::TlsKey::FromPem(this->ca_key_pem_).value(),
                                   key.public_key(), "d-00000000000000aa", {now - 1h, now + 24h});
  ASSERT_TRUE(issued);
  const DeviceIdentity ghost{"d-00000000000000aa", this->dir_.path() / "ghost.pem",
                             this->dir_.path() / "ghost.key", Json()};
  std::ofstream(ghost.cert) << issued->pem;
  std::ofstream(ghost.key) << key.ToPem().value();
  const Reply r = this->Post("/api/v1/checkin", this->Checkin(1), &ghost);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.ErrorCode(), "unauthenticated");
}

// The same report or incident sent twice is acknowledged twice and stored once.
TYPED_TEST(FleetTest, StoresReportsAndIncidentsOnce) {
  this->Start();
  const DeviceIdentity a = this->Enrol();
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(this->Post("/api/v1/reports", this->ReportBody("r-1"), &a).status, 202);
    EXPECT_EQ(this->Post("/api/v1/incidents", this->IncidentBody("i-1"), &a).status, 202);
  }
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM reports WHERE report_id = 'r-1'"), 1);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM incidents WHERE incident_id = 'i-1'"), 1);
}

// Malformed JSON, an unknown field, invalid UTF-8 and a wrong type are 400 bad_request, an
// oversized body 413 too_large, and none of them stores anything.
TYPED_TEST(FleetTest, RefusesMalformedRequestsAndStoresNothing) {
  this->Start();
  const DeviceIdentity a = this->Enrol();
  Json unknown = this->ReportBody("r-unknown");
  unknown["extra"] = 1;
  Json wrong_type = this->ReportBody("r-type");
  wrong_type["outcome"] = 3;
  const std::string bad_utf8 = R"({"report_id": "r-utf8", "update_id": "u", "target": "t)" +
                               std::string("\xC0\xAF") + R"(", "outcome": "committed"})";
  for (const std::string& body :
       {std::string("{\"report_id\": "), unknown.dump(), wrong_type.dump(), bad_utf8}) {
    const Reply r = this->Send("POST", "/api/v1/reports", body, &a);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_EQ(r.ErrorCode(), "bad_request") << body;
  }
  Json big = this->ReportBody("r-big");
  big["events"][0]["data"]["pad"] = std::string(80 * 1024, 'x');
  const Reply r = this->Post("/api/v1/reports", big, &a);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.ErrorCode(), "too_large");
  // Beyond the HTTPS front end's own limit the answer has the same form.
  big["events"][0]["data"]["pad"] = std::string(2 * 1024 * 1024, 'x');
  const Reply huge = this->Post("/api/v1/reports", big, &a);
  EXPECT_EQ(huge.status, 413);
  EXPECT_EQ(huge.ErrorCode(), "too_large");
  Json checkin = this->Checkin(1);
  checkin["components"]["rootfs"]["colour"] = "red";
  EXPECT_EQ(this->Post("/api/v1/checkin", checkin, &a).status, 400);
  EXPECT_EQ(this->Count("SELECT COUNT(*) FROM reports"), 0);
  EXPECT_EQ(this->Count("SELECT checkin_counter FROM devices WHERE id = $1", {a.id}), -1);
}

// With the database unreachable every endpoint answers 503 unavailable.
TYPED_TEST(FleetTest, AnswersUnavailableWhenDatabaseIsDown) {
  this->Start();
  const DeviceIdentity a = this->Enrol();
  const std::string token = this->Token();
  this->db_->SetUnavailable(true);
  auto key = x509::TlsKey::Generate().value();
  for (const Reply& r : {this->Post("/api/v1/checkin", this->Checkin(1), &a),
                         this->Post("/api/v1/reports", this->ReportBody("r-1"), &a),
                         this->Post("/api/v1/enrol", this->EnrolBody(token, key))}) {
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(r.ErrorCode(), "unavailable");
  }
  this->db_->SetUnavailable(false);
  EXPECT_EQ(this->Post("/api/v1/reports", this->ReportBody("r-1"), &a).status, 202);
}

// A SQLite file whose write lock another connection holds answers 503, not 500 or a hang.
class FleetSqliteTest : public FleetTest<SqliteBackend> {};

TEST_F(FleetSqliteTest, AnswersUnavailableWhenSqliteIsLocked) {
  this->Start();
  const DeviceIdentity a = this->Enrol();
  auto other = storage::OpenDatabase(this->backend_->url);
  ASSERT_TRUE(other);
  std::promise<void> locked;
  std::promise<void> release;
  auto released = release.get_future().share();
  std::thread holder([&] {
    (void)(*other)->InTransaction([&](storage::Tx& tx) -> Result<void> {
      UPKEEP_TRY(tx.Exec("UPDATE devices SET serial = serial"));
      locked.set_value();
      released.wait_for(30s);
      return Ok();
    });
  });
  ASSERT_EQ(locked.get_future().wait_for(30s), std::future_status::ready);
  const Reply r = this->Post("/api/v1/checkin", this->Checkin(1), &a);
  release.set_value();
  holder.join();
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.ErrorCode(), "unavailable");
}

// The support period comes from the configuration for the device's own model.
TYPED_TEST(FleetTest, AnswersSupportPeriodOfDeviceModel) {
  this->Start();
  const DeviceIdentity a = this->Enrol();
  const Reply r = this->Send("GET", "/api/v1/support", "", &a);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.JsonBody()["security_updates_until"], "2031-12-31");
  EXPECT_EQ(r.JsonBody()["model"], "acme-cam-v2");
}

TEST(FleetRequestParsersTest, RejectsUnknownFieldsAtEveryLevel) {
  EXPECT_EQ(ParseIncidentRequest(R"({"incident_id":"i","kind":"k","x":1})").error().code(),
            metadata::Errc::InvalidMetadata);
  EXPECT_EQ(
      ParseEnrolRequest(R"({"model":"m","serial":"s","csr":"c","device_id":"d"})").error().code(),
      metadata::Errc::InvalidMetadata);
  EXPECT_EQ(ParseCheckinRequest(R"({"counter":1,"model":"m","hardware":"h","components":{},)"
                                R"("policy":{"auto":true}})")
                .error()
                .code(),
            metadata::Errc::InvalidMetadata);
  EXPECT_EQ(ParseCheckinRequest(R"({"counter":-1,"model":"m","hardware":"h","components":{}})")
                .error()
                .code(),
            metadata::Errc::InvalidMetadata);
  EXPECT_EQ(ParseReportRequest("[1]").error().code(), metadata::Errc::InvalidMetadata);
  EXPECT_EQ(ParseReportRequest("{\"a\":1,\"a\":2}").error().code(), metadata::Errc::MalformedJson);
}

}  // namespace
}  // namespace upkeep::server
