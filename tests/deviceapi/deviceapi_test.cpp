// DeviceClient against a small fake of the fleet server's protocol (docs/formats/device-api.md)
// on libs/server's HttpsServer, 127.0.0.1 port 0: the fake issues certificates from a device CA,
// takes the device's identity from its client certificate only, refuses unknown request fields,
// replayed counters and blocked devices, and answers 304 to a matching If-None-Match.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <mutex>
#include <set>

#include "temp_dir.hpp"
#include "test_pki.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/crypto/x509.hpp"
#include "upkeep/deviceapi/client.hpp"
#include "upkeep/metadata/json_reader.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/server/https_server.hpp"

namespace upkeep::deviceapi {
namespace {

namespace x509 = crypto::x509;
using metadata::Json;
using metadata::JsonReader;

server::Response JsonAnswer(unsigned status, const Json& body) {
  server::Response r;
  r.status = status;
  r.body = metadata::DumpJson(body);
  return r;
}

server::Response ErrorAnswer(unsigned status, const char* code, const std::string& message) {
  return JsonAnswer(status, Json{{"error", code}, {"message", message}});
}

const Json kDirectorRoot = {{"signed", {{"_type", "root"}, {"version", 1}}},
                            {"signatures", Json::array()}};

// The server side of the protocol, as far as these tests need it.
class FakeFleet {
 public:
  explicit FakeFleet(const testing::TestPki& pki) : pki_(pki) {}

  server::Response Handle(const server::Request& req) {
    std::lock_guard lock(mutex_);
    requests_.push_back(req);
    if (forced_) return *forced_;
    if (req.path == "/api/v1/enrol" && req.method == "POST") return Enrol(req);
    // Every other endpoint: the device is who its certificate says, nothing else.
    if (req.peer_certificate_der.empty()) {
      return ErrorAnswer(401, "unauthenticated", "client certificate required");
    }
    auto cert = x509::ParseCertificate(req.peer_certificate_der);
    if (!cert || cert->device_id.empty()) {
      return ErrorAnswer(401, "unauthenticated", "unusable client certificate");
    }
    if (blocked_.contains(cert->device_id)) return ErrorAnswer(403, "blocked", "device blocked");
    if (req.path == "/api/v1/checkin" && req.method == "POST") return CheckIn(req, cert->device_id);
    if (req.path == "/api/v1/reports" && req.method == "POST") {
      return Accept(req, {"report_id", "update_id", "target", "outcome", "events"});
    }
    if (req.path == "/api/v1/incidents" && req.method == "POST") {
      return Accept(req, {"incident_id", "kind", "source", "target", "error", "detail", "time"});
    }
    if (req.path == "/api/v1/support" && req.method == "GET") {
      return JsonAnswer(200, {{"model", "acme-cam-v2"},
                              {"security_updates_until", "2031-12-31"},
                              {"url", "https://example.com/support/acme-cam-v2"}});
    }
    return ErrorAnswer(404, "not_found", "no such endpoint");
  }

  void Force(server::Response r) {
    std::lock_guard lock(mutex_);
    forced_ = std::move(r);
  }
  void Block(const std::string& device_id) {
    std::lock_guard lock(mutex_);
    blocked_.insert(device_id);
  }
  std::vector<server::Request> requests() const {
    std::lock_guard lock(mutex_);
    return requests_;
  }
  std::string last_checkin_device() const {
    std::lock_guard lock(mutex_);
    return last_checkin_device_;
  }

  static constexpr const char* kEtag = "\"director-v17\"";
  const Json director_ = {{"roots", Json::array({"{\"signed\":{\"version\":2}}"})},
                          {"timestamp", "{\"signed\":{\"_type\":\"timestamp\"}}"},
                          {"snapshot", "{\"signed\":{\"_type\":\"snapshot\"}}"},
                          {"targets", "{\"signed\":{\"_type\":\"targets\"},\"signatures\":[]}\n"}};

 private:
  static std::optional<Json> Parse(const std::string& body) {
    auto doc = metadata::ParseJson(body);
    if (!doc || !doc->is_object()) return std::nullopt;
    return *doc;
  }

  server::Response Enrol(const server::Request& req) {
    auto doc = Parse(req.body);
    if (!doc) return ErrorAnswer(400, "bad_request", "malformed JSON");
    JsonReader r(*doc, metadata::Errc::InvalidMetadata, "");
    auto token = r.OptionalString("token");
    auto model = r.String("model");
    auto serial = r.String("serial");
    auto csr = r.String("csr");
    if (!token || !model || !serial || !csr || !r.NoUnknownKeys()) {
      return ErrorAnswer(400, "bad_request", "bad enrolment request");
    }
    // Without a token, a manufacturer-issued certificate presented in the handshake (here the
    // HTTPS front end checked it against its client CA) authenticates the device.
    const bool by_certificate = !*token && !req.peer_certificate_der.empty();
    if (!by_certificate && (!*token || !tokens_.contains(**token))) {
      return ErrorAnswer(401, "unauthenticated", "unknown or spent token");
    }
    auto info = x509::ParseCsr(*csr);
    if (!info) return ErrorAnswer(400, "bad_request", "bad CSR");
    if (*token) tokens_.erase(**token);
    const std::string device_id = "d-" + std::to_string(++enrolled_);
    auto issued =
        x509::IssueClientCertificate(pki_.device_ca.certificate_pem, pki_.device_ca.key,
                                     info->public_key, device_id, testing::TestPki::Window());
    if (!issued) return ErrorAnswer(503, "unavailable", "cannot issue");
    return JsonAnswer(200, {{"device_id", device_id},
                            {"certificate", issued->pem},
                            {"device_ca", pki_.device_ca.certificate_pem},
                            {"director_root", kDirectorRoot}});
  }

  // Strict as the real server: every field present with its type, nothing else.
  static bool ValidCheckIn(const Json& doc, std::uint64_t* counter) {
    JsonReader r(doc, metadata::Errc::InvalidMetadata, "");
    auto c = r.Uint("counter");
    if (!c || !r.String("model") || !r.String("hardware")) return false;
    auto components = r.Object("components");
    if (!components) return false;
    for (const auto& [name, value] : components->json().items()) {
      auto comp = JsonReader::Of(value, metadata::Errc::InvalidMetadata, name);
      if (!comp || !comp->String("version") || !comp->String("target") ||
          !comp->Uint("security_version") || !comp->NoUnknownKeys()) {
        return false;
      }
      components->MarkRead(name);
    }
    auto director = r.Object("director");
    if (!director || !director->Uint("root_version") || !director->Uint("targets_version") ||
        !director->NoUnknownKeys()) {
      return false;
    }
    auto policy = r.Object("policy");
    if (!policy || !policy->Bool("auto_install") || !policy->Bool("notifications") ||
        !policy->Bool("security_auto_install") || !policy->Required("postponed_until") ||
        !policy->NoUnknownKeys()) {
      return false;
    }
    auto update = r.Object("update");
    if (!update || !update->String("state") || !update->Required("target") ||
        !update->NoUnknownKeys()) {
      return false;
    }
    *counter = *c;
    return components->NoUnknownKeys() && r.NoUnknownKeys();
  }

  server::Response CheckIn(const server::Request& req, const std::string& device_id) {
    auto doc = Parse(req.body);
    std::uint64_t counter = 0;
    if (!doc || !ValidCheckIn(*doc, &counter)) {
      return ErrorAnswer(400, "bad_request", "bad check-in");
    }
    if (auto it = counters_.find(device_id); it != counters_.end() && counter <= it->second) {
      return ErrorAnswer(409, "conflict", "counter not above the last one");
    }
    counters_[device_id] = counter;
    last_checkin_device_ = device_id;
    server::Response r;
    if (req.Header("if-none-match") == kEtag) {
      r.status = 304;
      r.content_type.clear();
    } else {
      r = JsonAnswer(200, {{"director", director_}, {"next_checkin_seconds", 86400}});
    }
    r.headers.emplace_back("ETag", kEtag);
    return r;
  }

  static server::Response Accept(const server::Request& req, std::set<std::string> fields) {
    auto doc = Parse(req.body);
    if (!doc) return ErrorAnswer(400, "bad_request", "malformed JSON");
    std::set<std::string> keys;
    for (const auto& [k, v] : doc->items()) keys.insert(k);
    if (keys != fields) return ErrorAnswer(400, "bad_request", "unexpected fields");
    server::Response r;
    r.status = 202;
    r.body = "{}";
    return r;
  }

  const testing::TestPki& pki_;
  mutable std::mutex mutex_;
  std::vector<server::Request> requests_;
  std::optional<server::Response> forced_;
  std::set<std::string> tokens_ = {"token-1", "token-2"};
  std::set<std::string> blocked_;
  std::map<std::string, std::uint64_t> counters_;
  std::string last_checkin_device_;
  int enrolled_ = 0;
};

class DeviceApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new testing::TestPki(); }
  static void TearDownTestSuite() { delete pki_; }

  void SetUp() override {
    fleet_ = std::make_unique<FakeFleet>(*pki_);
    server::HttpsOptions o;
    o.certificate_pem = pki_->server.certificate_pem;
    o.private_key_pem = pki_->server.key_pem;
    o.client_ca_pem = pki_->device_ca.certificate_pem;
    auto s = server::HttpsServer::Start(
        o, [this](const server::Request& r) { return fleet_->Handle(r); });
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    server_ = std::move(*s);
  }
  void TearDown() override {
    if (server_) server_->Stop();
  }

  ServerEndpoint Endpoint() const {
    return {"https://127.0.0.1:" + std::to_string(server_->port()) + "/",
            pki_->server_ca.certificate_pem, "", ""};
  }

  static DeviceClientOptions Options() {
    DeviceClientOptions o;
    o.http.total_timeout = std::chrono::seconds(30);
    return o;
  }

  std::unique_ptr<DeviceClient> EnrolmentClient(DeviceClientOptions o = Options()) {
    auto c = DeviceClient::ForEnrolment(Endpoint(), std::move(o));
    EXPECT_TRUE(c.has_value()) << c.error().ToString();
    return c ? std::move(*c) : nullptr;
  }

  // An enrolled client (token-1).
  std::unique_ptr<DeviceClient> Enrolled(DeviceClientOptions o = Options()) {
    auto c = EnrolmentClient(std::move(o));
    auto id = c->Enrol("token-1", "acme-cam-v2", "SN1234");
    EXPECT_TRUE(id.has_value()) << id.error().ToString();
    return c;
  }

  static CheckInRequest Request(std::uint64_t counter) {
    CheckInRequest q;
    q.counter = counter;
    q.model = "acme-cam-v2";
    q.hardware = "acme-cam-v2";
    q.components["rootfs"] = {"2.4.1", "rootfs/2.4.1.payload", 7};
    q.components["app"] = {"1.3", "app/app-1.3.tar.zst", 2};
    q.director_targets_version = 17;
    return q;
  }

  static testing::TestPki* pki_;
  std::unique_ptr<FakeFleet> fleet_;
  std::unique_ptr<server::HttpsServer> server_;
};

testing::TestPki* DeviceApiTest::pki_ = nullptr;

TEST_F(DeviceApiTest, EnrolsThenChecksInWithIssuedCertificate) {
  auto client = EnrolmentClient();
  auto id = client->Enrol("token-1", "acme-cam-v2", "SN1234");
  ASSERT_TRUE(id.has_value()) << id.error().ToString();
  EXPECT_EQ(id->device_id, "d-1");
  EXPECT_EQ(id->device_ca_pem, pki_->device_ca.certificate_pem);
  ASSERT_TRUE(id->director_root.has_value());
  EXPECT_EQ(metadata::ParseJson(*id->director_root).value(), kDirectorRoot);
  EXPECT_EQ(x509::ParseCertificate(id->certificate_pem)->device_id, "d-1");

  auto answer = client->CheckIn(Request(1));
  ASSERT_TRUE(answer.has_value()) << answer.error().ToString();
  EXPECT_FALSE(answer->not_modified);
  EXPECT_EQ(fleet_->last_checkin_device(), "d-1");
  EXPECT_EQ(answer->director.roots, std::vector<std::string>{"{\"signed\":{\"version\":2}}"});
  EXPECT_EQ(answer->director.targets, fleet_->director_["targets"].get<std::string>());
  EXPECT_EQ(answer->director.timestamp, fleet_->director_["timestamp"].get<std::string>());
  EXPECT_EQ(answer->director.snapshot, fleet_->director_["snapshot"].get<std::string>());
  EXPECT_EQ(answer->next_checkin_seconds, 86400u);
  EXPECT_EQ(answer->etag, FakeFleet::kEtag);

  // A fresh client from the identity alone works as well.
  auto again = DeviceClient::ForIdentity(*id, Options());
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_TRUE((*again)->CheckIn(Request(2)).has_value());
}

// The private key stays on the device: the request carries a CSR for it and nothing else.
TEST_F(DeviceApiTest, PrivateKeyNeverLeavesTheDevice) {
  auto client = EnrolmentClient();
  auto id = client->Enrol("token-1", "acme-cam-v2", "SN1234");
  ASSERT_TRUE(id.has_value()) << id.error().ToString();
  const auto requests = fleet_->requests();
  ASSERT_EQ(requests.size(), 1u);
  const std::string& body = requests[0].body;
  EXPECT_EQ(body.find("PRIVATE KEY"), std::string::npos);
  const Json doc = metadata::ParseJson(body).value();
  std::set<std::string> keys;
  for (const auto& [k, v] : doc.items()) keys.insert(k);
  EXPECT_EQ(keys, (std::set<std::string>{"token", "model", "serial", "csr"}));
  auto csr = x509::ParseCsr(doc["csr"].get<std::string>());
  ASSERT_TRUE(csr.has_value()) << csr.error().ToString();
  EXPECT_EQ(csr->public_key, x509::TlsKey::FromPem(id->private_key_pem)->public_key());
  EXPECT_EQ(body.find(id->private_key_pem), std::string::npos);
}

// A device with a manufacturer certificate enrols without a token; the request names none.
TEST_F(DeviceApiTest, EnrolsWithManufacturerCertificateInsteadOfToken) {
  auto endpoint = Endpoint();
  endpoint.manufacturer_certificate_pem = pki_->device.certificate_pem;
  endpoint.manufacturer_key_pem = pki_->device.key_pem;
  auto client = DeviceClient::ForEnrolment(endpoint, Options());
  ASSERT_TRUE(client.has_value()) << client.error().ToString();
  auto id = (*client)->Enrol("", "acme-cam-v2", "SN1234");
  ASSERT_TRUE(id.has_value()) << id.error().ToString();
  const Json doc = metadata::ParseJson(fleet_->requests().back().body).value();
  EXPECT_FALSE(doc.contains("token"));
  EXPECT_TRUE((*client)->CheckIn(Request(1)).has_value());
  // Without the certificate, no token is no enrolment.
  auto plain = EnrolmentClient()->Enrol("", "acme-cam-v2", "SN1235");
  ASSERT_FALSE(plain.has_value());
  EXPECT_EQ(plain.error().code(), Errc::Unauthenticated);
}

// A one-time token works once.
TEST_F(DeviceApiTest, SpentTokenIsUnauthenticated) {
  ASSERT_TRUE(EnrolmentClient()->Enrol("token-1", "acme-cam-v2", "SN1").has_value());
  auto again = EnrolmentClient()->Enrol("token-1", "acme-cam-v2", "SN2");
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), Errc::Unauthenticated);
}

// Without a client certificate no device endpoint answers.
TEST_F(DeviceApiTest, CheckInWithoutCertificateIsUnauthenticated) {
  auto r = EnrolmentClient()->CheckIn(Request(1));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::Unauthenticated);
}

// A captured check-in cannot be replayed: the same counter again is a conflict.
TEST_F(DeviceApiTest, ReplayedCounterIsConflict) {
  auto client = Enrolled();
  ASSERT_TRUE(client->CheckIn(Request(5)).has_value());
  auto r = client->CheckIn(Request(5));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::Conflict);
}

// A blocked device is refused whatever its certificate's validity.
TEST_F(DeviceApiTest, BlockedDeviceIsRefused) {
  auto client = Enrolled();
  fleet_->Block(client->identity().device_id);
  auto r = client->CheckIn(Request(1));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::Blocked);
}

TEST_F(DeviceApiTest, NotModifiedWhenEtagMatches) {
  auto client = Enrolled();
  auto first = client->CheckIn(Request(1));
  ASSERT_TRUE(first.has_value()) << first.error().ToString();
  auto q = Request(2);
  q.if_none_match = first->etag;
  auto second = client->CheckIn(q);
  ASSERT_TRUE(second.has_value()) << second.error().ToString();
  EXPECT_TRUE(second->not_modified);
  EXPECT_FALSE(second->next_checkin_seconds.has_value());
  EXPECT_TRUE(second->director.targets.empty());
  EXPECT_EQ(second->etag, first->etag);
  EXPECT_EQ(fleet_->requests().back().Header("if-none-match"), first->etag);
}

// A 304 the device did not ask for is not an answer.
TEST_F(DeviceApiTest, UnaskedNotModifiedIsProtocolError) {
  auto client = Enrolled();
  server::Response r;
  r.status = 304;
  fleet_->Force(r);
  auto answer = client->CheckIn(Request(1));
  ASSERT_FALSE(answer.has_value());
  EXPECT_EQ(answer.error().code(), Errc::ProtocolError);
}

TEST_F(DeviceApiTest, MapsEveryErrorCode) {
  auto client = Enrolled();
  const struct {
    unsigned status;
    const char* code;
    Errc expected;
  } cases[] = {
      {400, "bad_request", Errc::BadRequest},   {401, "unauthenticated", Errc::Unauthenticated},
      {403, "blocked", Errc::Blocked},          {404, "not_found", Errc::NotFound},
      {409, "conflict", Errc::Conflict},        {413, "too_large", Errc::TooLarge},
      {429, "rate_limited", Errc::RateLimited}, {503, "unavailable", Errc::Unavailable},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.code);
    fleet_->Force(ErrorAnswer(c.status, c.code, "told you\nso"));
    auto r = client->CheckIn(Request(1));
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), c.expected);
    EXPECT_NE(r.error().message().find("told youso"), std::string::npos) << r.error().message();
    EXPECT_EQ(client->Report({}).error().code(), c.expected);
    EXPECT_EQ(client->SupportPeriod().error().code(), c.expected);
  }
}

TEST_F(DeviceApiTest, RateLimitedCarriesRetryAfter) {
  auto client = Enrolled();
  auto answer = ErrorAnswer(429, "rate_limited", "slow down");
  answer.headers.emplace_back("Retry-After", "120");
  fleet_->Force(answer);
  auto r = client->CheckIn(Request(1));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::RateLimited);
  EXPECT_EQ(client->retry_after(), std::chrono::seconds(120));
  answer.headers = {{"Retry-After", "99999999999999999999"}};
  fleet_->Force(answer);
  EXPECT_FALSE(client->CheckIn(Request(1)).has_value());
  EXPECT_EQ(client->retry_after(), std::chrono::hours(24));
}

TEST_F(DeviceApiTest, MapsStatusWithoutUsableErrorBody) {
  auto client = Enrolled();
  const struct {
    unsigned status;
    std::string body;
    Errc expected;
  } cases[] = {
      {503, "<html>down</html>", Errc::Unavailable},
      {500, "", Errc::Unavailable},
      {409, R"({"error":"something_new","message":"x"})", Errc::Conflict},
      {418, R"({"error":42})", Errc::ProtocolError},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.status);
    server::Response r;
    r.status = c.status;
    r.body = c.body;
    fleet_->Force(r);
    auto answer = client->CheckIn(Request(1));
    ASSERT_FALSE(answer.has_value());
    EXPECT_EQ(answer.error().code(), c.expected);
  }
}

// Answers that do not follow the document are refused, never half-read.
TEST_F(DeviceApiTest, MalformedAnswersAreProtocolErrors) {
  auto client = Enrolled();
  const std::string files = R"("roots":[],"timestamp":"t","snapshot":"s","targets":"x")";
  const std::string bodies[] = {
      "not json",
      "",
      "[]",
      R"({"director":{}, "next_checkin_seconds":1})",
      R"({"director":{)" + files + R"(}, "next_checkin_seconds":"1"})",
      R"({"director":{)" + files + R"(}, "next_checkin_seconds":-1})",
      R"({"director":{)" + files + R"(}, "next_checkin_seconds":1.5})",
      R"({"director":{)" + files + R"(}, "next_checkin_seconds":99999999999})",
      R"({"director":{)" + files + R"(}, "next_checkin_seconds":1, "next_checkin_seconds":2})",
      R"({"director":{"roots":[1],"timestamp":"t","snapshot":"s","targets":"x"},)"
      R"("next_checkin_seconds":1})",
      // Not UTF-8 inside a file's string.
      R"({"director":{"roots":[],"timestamp":"t)" + std::string("\xff\xfe") +
          R"(","snapshot":"s","targets":"x"}, "next_checkin_seconds":1})",
  };
  for (const auto& body : bodies) {
    SCOPED_TRACE(body);
    server::Response r;
    r.body = body;
    fleet_->Force(r);
    auto answer = client->CheckIn(Request(1));
    ASSERT_FALSE(answer.has_value());
    EXPECT_EQ(answer.error().code(), Errc::ProtocolError);
  }
  // Members this version does not know are ignored (a newer server may add some).
  server::Response r;
  r.body = R"({"director":{)" + files + R"(,"extra":1}, "next_checkin_seconds":60, "new":{}})";
  fleet_->Force(r);
  auto answer = client->CheckIn(Request(1));
  ASSERT_TRUE(answer.has_value()) << answer.error().ToString();
  EXPECT_EQ(answer->next_checkin_seconds, 60u);
}

// An answer over the client's limit is abandoned.
TEST_F(DeviceApiTest, OversizedAnswerIsLengthExceeded) {
  auto o = Options();
  o.http.max_response_bytes = 64 * 1024;
  auto client = Enrolled(o);
  server::Response r;
  r.body = R"({"director":{"roots":[],"timestamp":")" + std::string(100 * 1024, 'x') +
           R"(","snapshot":"s","targets":"x"},"next_checkin_seconds":1})";
  fleet_->Force(r);
  auto answer = client->CheckIn(Request(1));
  ASSERT_FALSE(answer.has_value());
  EXPECT_EQ(answer.error().code(), common::Errc::LengthExceeded);
}

// A server that issues a certificate for a key the device does not hold is not trusted.
TEST_F(DeviceApiTest, EnrolRefusesCertificateForAnotherKey) {
  fleet_->Force(JsonAnswer(200, {{"device_id", "device-1"},
                                 {"certificate", pki_->device.certificate_pem},
                                 {"device_ca", pki_->device_ca.certificate_pem}}));
  auto client = EnrolmentClient();
  auto id = client->Enrol("token-1", "acme-cam-v2", "SN1234");
  ASSERT_FALSE(id.has_value());
  EXPECT_EQ(id.error().code(), Errc::ProtocolError);
  EXPECT_TRUE(client->identity().device_id.empty());
}

// A certificate the returned device CA did not issue is refused.
TEST_F(DeviceApiTest, EnrolRefusesCertificateFromAnotherCa) {
  fleet_->Force(JsonAnswer(200, {{"device_id", "device-1"},
                                 {"certificate", pki_->device.certificate_pem},
                                 {"device_ca", pki_->other_ca.certificate_pem}}));
  auto id = EnrolmentClient()->Enrol("token-1", "acme-cam-v2", "SN1234");
  ASSERT_FALSE(id.has_value());
  EXPECT_EQ(id.error().code(), Errc::ProtocolError);
}

TEST_F(DeviceApiTest, EnrolAnswerWithBadDeviceIdIsProtocolError) {
  fleet_->Force(JsonAnswer(200, {{"device_id", "../etc"},
                                 {"certificate", pki_->device.certificate_pem},
                                 {"device_ca", pki_->device_ca.certificate_pem}}));
  auto id = EnrolmentClient()->Enrol("token-1", "acme-cam-v2", "SN1234");
  ASSERT_FALSE(id.has_value());
  EXPECT_EQ(id.error().code(), Errc::ProtocolError);
}

TEST_F(DeviceApiTest, SendsReportsIncidentsAndReadsSupportPeriod) {
  auto client = Enrolled();
  ReportBody report;
  report.report_id = "7b0e";
  report.update_id = "c1d2";
  report.target = "rootfs/2.5.0.payload";
  report.outcome = ReportOutcome::Committed;
  report.events.push_back({1764400000, "install.started", Json::object()});
  auto sent = client->Report(report);
  ASSERT_TRUE(sent.has_value()) << sent.error().ToString();
  const Json doc = metadata::ParseJson(fleet_->requests().back().body).value();
  EXPECT_EQ(doc["outcome"], "committed");
  EXPECT_EQ(doc["events"][0]["id"], "install.started");

  IncidentBody incident{"i-1",
                        "verification_failed",
                        "network",
                        "rootfs/2.5.0.payload",
                        "install.ChunkDigestMismatch",
                        "chunk 21",
                        1764400000};
  auto filed = client->Incident(incident);
  ASSERT_TRUE(filed.has_value()) << filed.error().ToString();

  auto support = client->SupportPeriod();
  ASSERT_TRUE(support.has_value()) << support.error().ToString();
  EXPECT_EQ(support->model, "acme-cam-v2");
  EXPECT_EQ(support->security_updates_until, "2031-12-31");
}

// Strings that are not UTF-8 are refused before anything is sent (never silently replaced).
TEST_F(DeviceApiTest, RefusesNonUtf8RequestStrings) {
  auto client = Enrolled();
  const auto before = fleet_->requests().size();
  auto q = Request(1);
  q.components["rootfs"].version = "2.4\xff";
  auto r = client->CheckIn(q);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::InvalidArgument);
  EXPECT_EQ(fleet_->requests().size(), before);
}

TEST_F(DeviceApiTest, SavesAndLoadsIdentityWithKeyFile0600) {
  auto client = EnrolmentClient();
  auto id = client->Enrol("token-1", "acme-cam-v2", "SN1234");
  ASSERT_TRUE(id.has_value()) << id.error().ToString();
  testing::TempDir dir;
  LocalFilesystem fs;
  auto saved = SaveIdentity(fs, dir / "identity", *id);
  ASSERT_TRUE(saved.has_value()) << saved.error().ToString();
  struct stat st {};
  ASSERT_EQ(::stat((dir / "identity" / "device.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_TRUE(SaveIdentity(fs, dir / "identity", *id).has_value());  // idempotent

  auto loaded = LoadIdentity(fs, dir / "identity");
  ASSERT_TRUE(loaded.has_value()) << loaded.error().ToString();
  EXPECT_EQ(loaded->device_id, id->device_id);
  EXPECT_EQ(loaded->private_key_pem, id->private_key_pem);
  EXPECT_EQ(loaded->certificate_pem, id->certificate_pem);
  EXPECT_EQ(loaded->director_root, id->director_root);
  auto again = DeviceClient::ForIdentity(*loaded, Options());
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_TRUE((*again)->CheckIn(Request(1)).has_value());

  EXPECT_EQ(LoadIdentity(fs, dir / "nowhere").error().code(), common::Errc::FileNotFound);
}

// A stored key that is not the certificate's is refused (e.g. a key swapped on disk).
TEST_F(DeviceApiTest, RefusesIdentityWhoseKeyIsNotTheCertificates) {
  auto id = EnrolmentClient()->Enrol("token-1", "acme-cam-v2", "SN1234");
  ASSERT_TRUE(id.has_value()) << id.error().ToString();
  auto swapped = *id;
  swapped.private_key_pem = pki_->device.key_pem;
  EXPECT_EQ(DeviceClient::ForIdentity(swapped, Options()).error().code(), Errc::InvalidIdentity);
  testing::TempDir dir;
  LocalFilesystem fs;
  ASSERT_TRUE(SaveIdentity(fs, dir.path(), *id).has_value());
  ASSERT_TRUE(fs.Remove(dir / "device.key").has_value());
  ASSERT_TRUE(fs.WriteFileAtomic(dir / "device.key", pki_->device.key_pem).has_value());
  EXPECT_EQ(LoadIdentity(fs, dir.path()).error().code(), Errc::InvalidIdentity);
}

}  // namespace
}  // namespace upkeep::deviceapi
