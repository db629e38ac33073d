// Incident delivery (ADR 0007 "Incidents", docs/formats/incident-webhook.md) end to end: the
// receiver is a real HttpsServer on 127.0.0.1 port 0 that checks the HMAC signature as an
// administrator's receiver would; the queue is a real database (a SQLite file; PostgreSQL under
// pg_virtualenv); time is a FakeClock, so backoff is checked without waiting.

#include "upkeep/server/incident_delivery.hpp"

#include <gtest/gtest.h>

#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "fleet_backends.hpp"
#include "test_pki.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/server/fleet.hpp"
#include "upkeep/server/https_server.hpp"

namespace upkeep::server {
namespace {

namespace x509 = crypto::x509;
using metadata::Json;
using testing::BackendNames;
using testing::Backends;
using testing::SqliteBackend;
using namespace std::chrono_literals;

constexpr const char* kSecret = "0123456789abcdef0123456789abcdef-webhook";  // 40 bytes
constexpr const char* kPath = "/hooks/upkeep";

// An administrator's webhook receiver: verifies the timestamp and the signature
// (docs/formats/incident-webhook.md, "Verifying a request"), then answers `status`.
class Receiver {
 public:
  struct Delivery {
    std::string id;
    std::string event;
    std::int64_t timestamp = 0;
    Json body;
  };

  Receiver(const Clock& clock, std::string secret) : clock_(clock), secret_(std::move(secret)) {}
  ~Receiver() { Stop(); }

  Result<void> Start(const testing::TestPki::Identity& identity) {
    HttpsOptions o;
    o.certificate_pem = identity.certificate_pem;
    o.private_key_pem = identity.key_pem;
    auto s = HttpsServer::Start(o, [this](const Request& r) { return Handle(r); });
    if (!s) return std::move(s).error();
    server_ = std::move(*s);
    return Ok();
  }
  void Stop() {
    Release();
    if (server_) server_->Stop(1s);
  }
  [[nodiscard]] std::string Url() const {
    return "https://127.0.0.1:" + std::to_string(server_->port()) + kPath;
  }

  void SetStatus(unsigned status) {
    std::lock_guard<std::mutex> lock(mutex_);
    status_ = status;
  }
  // Requests wait (at most 20 s) until Release(), to make the sender time out.
  void Hold() {
    std::lock_guard<std::mutex> lock(mutex_);
    hold_ = true;
  }
  void Release() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      hold_ = false;
    }
    released_.notify_all();
  }

  // Requests accepted with a 2xx answer, in order.
  std::vector<Delivery> accepted() {
    std::lock_guard<std::mutex> lock(mutex_);
    return accepted_;
  }
  std::map<std::string, int> AcceptedCounts() {
    std::map<std::string, int> counts;
    for (const Delivery& d : accepted()) ++counts[d.id];
    return counts;
  }
  int requests() {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }
  int bad_signatures() {
    std::lock_guard<std::mutex> lock(mutex_);
    return bad_signatures_;
  }

 private:
  Response Handle(const Request& r) {
    std::unique_lock<std::mutex> lock(mutex_);
    ++requests_;
    if (hold_) released_.wait_for(lock, 20s, [this] { return !hold_; });
    if (r.method != "POST" || r.path != kPath) return {404, "text/plain", "no", {}};
    // Refuse stale or future timestamps (replays), then check the MAC in constant time.
    std::int64_t timestamp = 0;
    const std::string ts = r.Header("x-upkeep-timestamp");
    const auto [end, ec] = std::from_chars(ts.data(), ts.data() + ts.size(), timestamp);
    const std::int64_t now = clock_.Now().time_since_epoch().count();
    if (ts.empty() || ec != std::errc() || end != ts.data() + ts.size() ||
        std::abs(now - timestamp) > 300) {
      ++bad_signatures_;
      return {401, "text/plain", "stale", {}};
    }
    const std::string expected =
        "sha256=" + HexEncode(crypto::HmacSha256(secret_, ts + "." + r.body).value());
    const std::string got = r.Header("x-upkeep-signature");
    if (!crypto::ConstantTimeEqual(
            std::span(reinterpret_cast<const std::uint8_t*>(expected.data()), expected.size()),
            std::span(reinterpret_cast<const std::uint8_t*>(got.data()), got.size()))) {
      ++bad_signatures_;
      return {401, "text/plain", "bad signature", {}};
    }
    if (status_ < 200 || status_ > 299) return {status_, "text/plain", "try later", {}};
    accepted_.push_back({r.Header("x-upkeep-delivery"), r.Header("x-upkeep-event"), timestamp,
                         Json::parse(r.body, nullptr, false)});
    return {status_, "text/plain", "", {}};
  }

  const Clock& clock_;
  const std::string secret_;
  std::unique_ptr<HttpsServer> server_;
  std::mutex mutex_;
  std::condition_variable released_;
  unsigned status_ = 204;
  bool hold_ = false;
  int requests_ = 0;
  int bad_signatures_ = 0;
  std::vector<Delivery> accepted_;
};

Json IncidentReport(const std::string& id) {
  return Json{{"incident_id", id},
              {"kind", "verification_failed"},
              {"source", "network"},
              {"target", "rootfs/2.5.0.payload"},
              {"error", "install.ChunkDigestMismatch"},
              {"detail", "chunk 21"},
              {"time", 1764400000}};
}

template <typename B>
class IncidentDeliveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (auto why = B::SkipReason()) GTEST_SKIP() << *why;
    backend_.emplace();
    db_ = Open();
    ASSERT_TRUE(db_);
    ASSERT_TRUE(MigrateFleetSchema(*db_));
    std::ofstream(dir_ / "ca.pem") << pki_.server_ca.certificate_pem;
    std::ofstream(dir_ / "secret") << kSecret << "\n";
  }

  std::unique_ptr<storage::Database> Open() {
    auto db = storage::OpenDatabase(backend_->url);
    EXPECT_TRUE(db) << db.error().ToString();
    return db ? std::move(*db) : nullptr;
  }

  IncidentDeliveryOptions Options(const std::string& url) {
    IncidentDeliveryOptions o;
    o.webhook_url = url;
    o.secret_file = (dir_ / "secret").string();
    o.ca_file = (dir_ / "ca.pem").string();
    o.connect_timeout = 5s;
    o.request_timeout = 10s;
    o.retry_base = 10s;
    o.retry_cap = 40s;
    o.jitter = false;
    o.claim_lease = 60s;
    o.instance_name = "test-1";
    return o;
  }

  std::unique_ptr<IncidentDelivery> Delivery(IncidentDeliveryOptions o,
                                             storage::Database* db = nullptr) {
    auto d = IncidentDelivery::Create(db != nullptr ? *db : *db_, clock_, std::move(o));
    EXPECT_TRUE(d) << d.error().ToString();
    return d ? std::move(*d) : nullptr;
  }

  // A receiver with the server CA's certificate for 127.0.0.1.
  std::unique_ptr<Receiver> StartReceiver(const std::string& secret = kSecret) {
    auto r = std::make_unique<Receiver>(clock_, secret);
    auto started = r->Start(pki_.server);
    EXPECT_TRUE(started) << started.error().ToString();
    return r;
  }
  // The URL of a receiver that has stopped: connections are refused.
  std::string DeadUrl() {
    auto r = StartReceiver();
    const std::string url = r->Url();
    r->Stop();
    return url;
  }

  std::int64_t Now() const { return clock_.Now().time_since_epoch().count(); }

  void AddDevice(const std::string& id, const std::string& model) {
    ASSERT_TRUE(db_->Exec("INSERT INTO devices (id, model, serial, certificate_serial, enrolled_at) "
                          "VALUES ($1, $2, $3, $4, $5)",
                          {id, model, "SN-" + id, "serial-" + id, Now()}));
  }
  // Stored as Fleet stores an incident a device reports.
  void AddIncident(const std::string& id, const std::string& device_id = "d-1") {
    ASSERT_TRUE(db_->Exec(
        "INSERT INTO incidents (incident_id, device_id, kind, body, received_at, next_attempt_at) "
        "VALUES ($1, $2, $3, $4, $5, $5)",
        {id, device_id, "verification_failed", metadata::Canonicalize(IncidentReport(id)).value(),
         Now()}));
  }

  IncidentRecord Record(const std::string& id) {
    auto list = ListIncidents(*db_, false);
    EXPECT_TRUE(list) << list.error().ToString();
    if (list) {
      for (const auto& r : *list) {
        if (r.incident_id == id) return r;
      }
    }
    ADD_FAILURE() << "no incident " << id;
    return {};
  }

  DeliveryRound Round(IncidentDelivery& d) {
    auto r = d.RunOnce();
    EXPECT_TRUE(r) << r.error().ToString();
    return r.value_or(DeliveryRound{});
  }

  FakeClock clock_{SystemClock::Process().Now()};
  testing::TempDir dir_;
  testing::TestPki pki_;
  std::optional<B> backend_;
  std::unique_ptr<storage::Database> db_;
};

TYPED_TEST_SUITE(IncidentDeliveryTest, Backends, BackendNames);

// ADR 0007 "Incidents": an incident is POSTed once, signed over the timestamp and the body, with
// the device's model and report; it is then recorded as delivered and never sent again.
TYPED_TEST(IncidentDeliveryTest, DeliversSignedIncidentOnce) {
  this->AddDevice("d-1", "acme-cam-v2");
  this->AddIncident("i-1");
  auto receiver = this->StartReceiver();
  auto delivery = this->Delivery(this->Options(receiver->Url()));
  ASSERT_TRUE(delivery);

  const DeliveryRound round = this->Round(*delivery);
  EXPECT_EQ(round.delivered, 1u);
  EXPECT_EQ(round.failed, 0u);
  const auto accepted = receiver->accepted();
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_EQ(receiver->bad_signatures(), 0);
  EXPECT_EQ(accepted[0].id, "i-1");
  EXPECT_EQ(accepted[0].event, "incident");
  EXPECT_EQ(accepted[0].timestamp, this->Now());
  const Json& body = accepted[0].body;
  ASSERT_TRUE(body.is_object());
  EXPECT_EQ(body["type"], "incident");
  EXPECT_EQ(body["version"], 1);
  EXPECT_EQ(body["incident_id"], "i-1");
  EXPECT_EQ(body["kind"], "verification_failed");
  EXPECT_EQ(body["device_id"], "d-1");
  EXPECT_EQ(body["device_model"], "acme-cam-v2");
  EXPECT_EQ(body["received_at"], this->Now());
  EXPECT_EQ(body["report"], IncidentReport("i-1"));

  const IncidentRecord r = this->Record("i-1");
  EXPECT_EQ(r.delivered_at, this->Now());
  EXPECT_EQ(r.delivered_by, "test-1");
  EXPECT_EQ(r.attempts, 1);
  EXPECT_EQ(r.last_error, "");

  this->clock_.Advance(24h);
  EXPECT_EQ(this->Round(*delivery).delivered, 0u);
  EXPECT_EQ(receiver->requests(), 1);
}

// Receiver down: each round records an attempt, the error and an exponentially growing delay up
// to the cap; nothing is lost. After a restart (a new IncidentDelivery and a new connection to
// the same database) with the receiver up, each incident arrives exactly once.
TYPED_TEST(IncidentDeliveryTest, RetriesWithBackoffAcrossRestartAndDeliversOnce) {
  this->AddIncident("i-1");
  this->AddIncident("i-2");
  {
    auto delivery = this->Delivery(this->Options(this->DeadUrl()));
    ASSERT_TRUE(delivery);
    // retry_base 10 s, cap 40 s, no jitter: 10, 20, 40, 40.
    for (const std::int64_t delay : {10, 20, 40, 40}) {
      const DeliveryRound round = this->Round(*delivery);
      EXPECT_EQ(round.failed, 2u);
      EXPECT_EQ(round.delivered, 0u);
      for (const char* id : {"i-1", "i-2"}) {
        const IncidentRecord r = this->Record(id);
        EXPECT_FALSE(r.delivered_at);
        EXPECT_EQ(r.last_attempt_at, this->Now());
        EXPECT_EQ(r.next_attempt_at, this->Now() + delay);
        EXPECT_NE(r.last_error.find("NetworkError"), std::string::npos) << r.last_error;
      }
      // Not due yet: nothing is attempted.
      this->clock_.Advance(std::chrono::seconds(delay - 1));
      EXPECT_EQ(this->Round(*delivery).failed, 0u);
      this->clock_.Advance(1s);
    }
    EXPECT_EQ(this->Record("i-1").attempts, 4);
  }
  auto receiver = this->StartReceiver();
  auto db = this->Open();
  ASSERT_TRUE(db);
  auto restarted = this->Delivery(this->Options(receiver->Url()), db.get());
  ASSERT_TRUE(restarted);
  EXPECT_EQ(this->Round(*restarted).delivered, 2u);
  EXPECT_EQ(this->Round(*restarted).delivered, 0u);
  EXPECT_EQ(receiver->AcceptedCounts(), (std::map<std::string, int>{{"i-1", 1}, {"i-2", 1}}));
  const IncidentRecord r = this->Record("i-2");
  EXPECT_EQ(r.attempts, 5);
  EXPECT_EQ(r.delivered_at, this->Now());
  EXPECT_EQ(r.last_error, "");
}

// With jitter each delay is a random time in [d/2, d], so incidents that failed together spread.
TYPED_TEST(IncidentDeliveryTest, JittersRetryDelaysWithinHalfToFullDelay) {
  for (int i = 0; i < 20; ++i) this->AddIncident("i-" + std::to_string(i));
  auto o = this->Options(this->DeadUrl());
  o.jitter = true;
  o.retry_base = 100s;
  o.retry_cap = 100s;
  auto delivery = this->Delivery(o);
  ASSERT_TRUE(delivery);
  EXPECT_EQ(this->Round(*delivery).failed, 20u);
  std::set<std::int64_t> delays;
  auto pending = ListIncidents(*this->db_, true);
  ASSERT_TRUE(pending) << pending.error().ToString();
  ASSERT_EQ(pending->size(), 20u);
  for (const auto& r : *pending) {
    const std::int64_t d = r.next_attempt_at - this->Now();
    EXPECT_GE(d, 50);
    EXPECT_LE(d, 100);
    delays.insert(d);
  }
  EXPECT_GT(delays.size(), 1u);
}

// A receiver answering 500 has not taken the incident: it is retried, then delivered.
TYPED_TEST(IncidentDeliveryTest, RetriesWhenReceiverAnswersServerError) {
  this->AddIncident("i-1");
  auto receiver = this->StartReceiver();
  receiver->SetStatus(500);
  auto delivery = this->Delivery(this->Options(receiver->Url()));
  ASSERT_TRUE(delivery);
  EXPECT_EQ(this->Round(*delivery).failed, 1u);
  IncidentRecord r = this->Record("i-1");
  EXPECT_FALSE(r.delivered_at);
  EXPECT_EQ(r.attempts, 1);
  EXPECT_NE(r.last_error.find("HTTP 500"), std::string::npos) << r.last_error;
  receiver->SetStatus(200);
  this->clock_.Advance(10s);
  EXPECT_EQ(this->Round(*delivery).delivered, 1u);
  EXPECT_EQ(receiver->AcceptedCounts(), (std::map<std::string, int>{{"i-1", 1}}));
}

// A receiver that does not answer within the request timeout: the attempt is a Timeout, retried.
TYPED_TEST(IncidentDeliveryTest, RetriesWhenReceiverTimesOut) {
  this->AddIncident("i-1");
  auto receiver = this->StartReceiver();
  receiver->Hold();
  auto o = this->Options(receiver->Url());
  o.request_timeout = 1s;
  o.claim_lease = 2s;
  auto delivery = this->Delivery(o);
  ASSERT_TRUE(delivery);
  EXPECT_EQ(this->Round(*delivery).failed, 1u);
  receiver->Release();
  const IncidentRecord r = this->Record("i-1");
  EXPECT_FALSE(r.delivered_at);
  EXPECT_NE(r.last_error.find("Timeout"), std::string::npos) << r.last_error;
  this->clock_.Advance(10s);
  EXPECT_EQ(this->Round(*delivery).delivered, 1u);
}

// A receiver whose certificate does not chain to the configured CA gets nothing: the TLS
// handshake fails before any byte of the incident is sent, and the incident is retried.
TYPED_TEST(IncidentDeliveryTest, RefusesReceiverWithUntrustedCertificate) {
  this->AddIncident("i-1");
  Receiver impostor(this->clock_, kSecret);
  ASSERT_TRUE(impostor.Start(testing::TestPki::Server(this->pki_.other_ca)));
  auto delivery = this->Delivery(this->Options(impostor.Url()));
  ASSERT_TRUE(delivery);
  EXPECT_EQ(this->Round(*delivery).failed, 1u);
  EXPECT_EQ(impostor.requests(), 0);
  const IncidentRecord r = this->Record("i-1");
  EXPECT_FALSE(r.delivered_at);
  EXPECT_EQ(r.attempts, 1);
  EXPECT_NE(r.last_error.find("NetworkError"), std::string::npos) << r.last_error;
}

// A sender with another secret (a forger) fails the receiver's signature check; the incident
// stays undelivered.
TYPED_TEST(IncidentDeliveryTest, ReceiverDetectsWrongSecret) {
  this->AddIncident("i-1");
  auto receiver = this->StartReceiver(std::string(kSecret) + "-other");
  auto delivery = this->Delivery(this->Options(receiver->Url()));
  ASSERT_TRUE(delivery);
  EXPECT_EQ(this->Round(*delivery).failed, 1u);
  EXPECT_EQ(receiver->bad_signatures(), 1);
  EXPECT_TRUE(receiver->accepted().empty());
  const IncidentRecord r = this->Record("i-1");
  EXPECT_FALSE(r.delivered_at);
  EXPECT_NE(r.last_error.find("HTTP 401"), std::string::npos) << r.last_error;
}

// ADR 0007 "State and scale-out": two server processes (two IncidentDelivery objects, each with
// its own connection to one database) running rounds at the same time deliver every incident
// exactly once.
TYPED_TEST(IncidentDeliveryTest, TwoProcessesDeliverEachIncidentOnce) {
  constexpr int kIncidents = 30;
  for (int i = 0; i < kIncidents; ++i) this->AddIncident("i-" + std::to_string(i));
  auto receiver = this->StartReceiver();
  auto db_a = this->Open();
  auto db_b = this->Open();
  ASSERT_TRUE(db_a && db_b);
  auto oa = this->Options(receiver->Url());
  auto ob = oa;
  ob.instance_name = "test-2";
  auto a = this->Delivery(oa, db_a.get());
  auto b = this->Delivery(ob, db_b.get());
  ASSERT_TRUE(a && b);
  auto run = [](IncidentDelivery& d) {
    std::size_t delivered = 0;
    for (int i = 0; i < 5; ++i) {
      auto r = d.RunOnce();
      if (!r) return std::optional<std::size_t>();
      delivered += r->delivered;
    }
    return std::optional<std::size_t>(delivered);
  };
  auto fa = std::async(std::launch::async, run, std::ref(*a));
  auto fb = std::async(std::launch::async, run, std::ref(*b));
  ASSERT_EQ(fa.wait_for(120s), std::future_status::ready);
  ASSERT_EQ(fb.wait_for(120s), std::future_status::ready);
  const auto da = fa.get();
  const auto db = fb.get();
  ASSERT_TRUE(da && db);
  EXPECT_EQ(*da + *db, static_cast<std::size_t>(kIncidents));
  const auto counts = receiver->AcceptedCounts();
  EXPECT_EQ(counts.size(), static_cast<std::size_t>(kIncidents));
  for (const auto& [id, n] : counts) EXPECT_EQ(n, 1) << id;
  EXPECT_TRUE(ListIncidents(*this->db_, true).value().empty());
}

// A process that died holding a claim blocks the incident only until the lease ends; then
// another process delivers it.
TYPED_TEST(IncidentDeliveryTest, TakesOverClaimOfDeadProcessAfterLease) {
  this->AddIncident("i-1");
  ASSERT_TRUE(this->db_->Exec(
      "UPDATE incidents SET claimed_until = $1, claimed_by = 'dead-process/1/1'",
      {this->Now() + 60}));
  auto receiver = this->StartReceiver();
  auto delivery = this->Delivery(this->Options(receiver->Url()));
  ASSERT_TRUE(delivery);
  EXPECT_EQ(this->Round(*delivery).delivered, 0u);
  this->clock_.Advance(60s);
  EXPECT_EQ(this->Round(*delivery).delivered, 1u);
  EXPECT_EQ(receiver->AcceptedCounts(), (std::map<std::string, int>{{"i-1", 1}}));
}

// An incident a device reports through the device API (Fleet) is delivered with the model the
// device enrolled with.
TYPED_TEST(IncidentDeliveryTest, DeliversIncidentReportedThroughDeviceApi) {
  const auto now = this->clock_.Now();
  FleetOptions fo;
  fo.device_ca_pem = this->pki_.device_ca.certificate_pem;
  fo.device_ca_key_pem = this->pki_.device_ca.key_pem;
  auto fleet = Fleet::Create(*this->db_, this->clock_, fo);
  ASSERT_TRUE(fleet) << fleet.error().ToString();
  auto token = CreateEnrolmentToken(*this->db_, this->clock_, "acme-cam-v2", "", 1h);
  ASSERT_TRUE(token);
  auto key = x509::TlsKey::Generate().value();
  Request enrol{"POST", "/api/v1/enrol", "", {}, "", "", "127.0.0.1"};
  enrol.body = Json{{"token", *token},
                    {"model", "acme-cam-v2"},
                    {"serial", "SN-1"},
                    {"csr", x509::CreateCsr(key, "new-device").value()}}
                   .dump();
  const Response enrolled = (*fleet)->Handle(enrol);
  ASSERT_EQ(enrolled.status, 200u) << enrolled.body;
  const Json answer = Json::parse(enrolled.body);
  Request incident{"POST", "/api/v1/incidents", "", {}, IncidentReport("i-api").dump(), "", ""};
  incident.peer_certificate_der =
      x509::CertificateDer(answer["certificate"].get<std::string>()).value();
  const Response stored = (*fleet)->Handle(incident);
  ASSERT_EQ(stored.status, 202u) << stored.body;

  auto receiver = this->StartReceiver();
  auto delivery = this->Delivery(this->Options(receiver->Url()));
  ASSERT_TRUE(delivery);
  EXPECT_EQ(this->Round(*delivery).delivered, 1u);
  const auto accepted = receiver->accepted();
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_EQ(accepted[0].body["device_id"], answer["device_id"]);
  EXPECT_EQ(accepted[0].body["device_model"], "acme-cam-v2");
  EXPECT_EQ(accepted[0].body["report"], IncidentReport("i-api"));
  EXPECT_EQ(accepted[0].body["received_at"], now.time_since_epoch().count());
}

// Listing shows the delivery state; --undelivered leaves out what was delivered.
TYPED_TEST(IncidentDeliveryTest, ListsDeliveryState) {
  EXPECT_EQ(storage::SchemaVersion(*this->db_).value(), 4);
  this->AddIncident("i-1");
  this->clock_.Advance(1s);
  this->AddIncident("i-2");
  auto receiver = this->StartReceiver();
  auto o = this->Options(receiver->Url());
  o.batch_size = 1;  // the oldest only
  auto delivery = this->Delivery(o);
  ASSERT_TRUE(delivery);
  EXPECT_EQ(this->Round(*delivery).delivered, 1u);
  auto all = ListIncidents(*this->db_, false);
  ASSERT_TRUE(all) << all.error().ToString();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].incident_id, "i-1");
  EXPECT_TRUE((*all)[0].delivered_at);
  EXPECT_FALSE((*all)[1].delivered_at);
  auto undelivered = ListIncidents(*this->db_, true);
  ASSERT_TRUE(undelivered);
  ASSERT_EQ(undelivered->size(), 1u);
  EXPECT_EQ((*undelivered)[0].incident_id, "i-2");
}

// Configuration errors are refused when delivery is set up, each with Errc::InvalidConfig.
class IncidentDeliveryConfigTest : public IncidentDeliveryTest<SqliteBackend> {
 protected:
  Error Refusal(const IncidentDeliveryOptions& o) {
    auto d = IncidentDelivery::Create(*db_, clock_, o);
    EXPECT_FALSE(d);
    return d ? Error() : d.error();
  }
};

TEST_F(IncidentDeliveryConfigTest, RefusesMissingSecretFile) {
  auto o = Options("https://127.0.0.1:1/hook");
  o.secret_file = (dir_ / "no-such-secret").string();
  EXPECT_EQ(Refusal(o).code(), Errc::InvalidConfig);
  o.secret_file.clear();
  EXPECT_EQ(Refusal(o).code(), Errc::InvalidConfig);
}

TEST_F(IncidentDeliveryConfigTest, RefusesSecretShorterThan32Bytes) {
  auto o = Options("https://127.0.0.1:1/hook");
  // 31 bytes and a line ending: the line ending does not count.
  std::ofstream(dir_ / "short") << std::string(31, 'k') << "\r\n";
  o.secret_file = (dir_ / "short").string();
  const Error e = Refusal(o);
  EXPECT_EQ(e.code(), Errc::InvalidConfig);
  // The message names the file, never its content.
  EXPECT_EQ(e.message().find("kkkk"), std::string::npos) << e.message();
  std::ofstream(dir_ / "exact") << std::string(32, 'k') << "\n";
  o.secret_file = (dir_ / "exact").string();
  EXPECT_TRUE(IncidentDelivery::Create(*db_, clock_, o));
}

TEST_F(IncidentDeliveryConfigTest, RefusesPlainHttpUrl) {
  EXPECT_EQ(Refusal(Options("http://127.0.0.1:1/hook")).code(), Errc::InvalidConfig);
  EXPECT_EQ(Refusal(Options("ftp://example.com/hook")).code(), Errc::InvalidConfig);
  EXPECT_EQ(Refusal(Options("")).code(), Errc::InvalidConfig);
}

TEST_F(IncidentDeliveryConfigTest, RefusesMissingCaFileAndBadTimings) {
  auto o = Options("https://127.0.0.1:1/hook");
  o.ca_file = (dir_ / "no-such-ca.pem").string();
  EXPECT_EQ(Refusal(o).code(), Errc::InvalidConfig);
  o = Options("https://127.0.0.1:1/hook");
  o.claim_lease = o.request_timeout;  // a live claimant could be overtaken
  EXPECT_EQ(Refusal(o).code(), Errc::InvalidConfig);
  o = Options("https://127.0.0.1:1/hook");
  o.retry_cap = o.retry_base - 1s;
  EXPECT_EQ(Refusal(o).code(), Errc::InvalidConfig);
  o = Options("https://127.0.0.1:1/hook");
  o.batch_size = 0;
  EXPECT_EQ(Refusal(o).code(), Errc::InvalidConfig);
}

// The signature is HMAC-SHA256 over "TIMESTAMP.BODY": a receiver's own computation matches, and
// any change of timestamp or body changes it.
TEST(WebhookSignatureTest, SignsTimestampDotBody) {
  auto s = WebhookSignature(kSecret, 1764400000, "{\"a\":1}");
  ASSERT_TRUE(s);
  EXPECT_EQ(*s, "sha256=" + HexEncode(crypto::HmacSha256(kSecret, "1764400000.{\"a\":1}").value()));
  EXPECT_NE(*s, WebhookSignature(kSecret, 1764400001, "{\"a\":1}").value());
  EXPECT_NE(*s, WebhookSignature(kSecret, 1764400000, "{\"a\":2}").value());
}

}  // namespace
}  // namespace upkeep::server
