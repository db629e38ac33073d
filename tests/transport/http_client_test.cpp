// HttpClient against the fleet server's HTTPS front end (libs/server) on 127.0.0.1 port 0, and
// against the plain-HTTP test server for the rules about schemes and redirects.

#include "upkeep/transport/http_client.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <mutex>

#include "http_test_server.hpp"
#include "temp_dir.hpp"
#include "test_pki.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/crypto/x509.hpp"
#include "upkeep/server/https_server.hpp"

namespace upkeep::transport {
namespace {

namespace x509 = crypto::x509;

class HttpClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new testing::TestPki(); }
  static void TearDownTestSuite() { delete pki_; }

  void TearDown() override {
    if (server_) server_->Stop();
  }

  void StartServer(server::Handler handler) {
    server::HttpsOptions o;
    o.certificate_pem = pki_->server.certificate_pem;
    o.private_key_pem = pki_->server.key_pem;
    o.client_ca_pem = pki_->device_ca.certificate_pem;
    auto s = server::HttpsServer::Start(o, std::move(handler));
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    server_ = std::move(*s);
  }

  std::string Url(const std::string& path) const {
    return "https://127.0.0.1:" + std::to_string(server_->port()) + path;
  }

  static HttpClientOptions Options() {
    HttpClientOptions o;
    o.server_ca_pem = pki_->server_ca.certificate_pem;
    o.total_timeout = std::chrono::seconds(30);
    return o;
  }

  static std::unique_ptr<HttpClient> Client(HttpClientOptions o = Options()) {
    auto c = HttpClient::Create(std::move(o));
    EXPECT_TRUE(c.has_value()) << c.error().ToString();
    return c ? std::move(*c) : nullptr;
  }

  static testing::TestPki* pki_;
  std::unique_ptr<server::HttpsServer> server_;
};

testing::TestPki* HttpClientTest::pki_ = nullptr;

server::Response Echo(const server::Request& r) {
  server::Response res;
  res.body = r.method + " " + r.path + " " + r.Header("content-type") + " " + r.Header("x-probe") +
             " " + r.body;
  res.headers.emplace_back("ETag", "\"v7\"");
  return res;
}

TEST_F(HttpClientTest, PostsJsonAndReadsStatusBodyAndEtag) {
  StartServer(&Echo);
  auto client = Client();
  auto r = client->Post(Url("/api/v1/echo"), R"({"a":1})", {{"X-Probe", "yes"}});
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->status, 200u);
  EXPECT_EQ(r->body, R"(POST /api/v1/echo application/json yes {"a":1})");
  EXPECT_EQ(r->etag, "\"v7\"");
  EXPECT_EQ(r->content_type, "application/json");
  auto g = client->Get(Url("/api/v1/get"));
  ASSERT_TRUE(g.has_value()) << g.error().ToString();
  EXPECT_EQ(g->body, "GET /api/v1/get   ");
}

TEST_F(HttpClientTest, ReturnsErrorStatusWithItsBody) {
  StartServer([](const server::Request&) {
    server::Response res;
    res.status = 429;
    res.body = R"({"error":"rate_limited","message":"slow down"})";
    res.headers.emplace_back("Retry-After", "120");
    return res;
  });
  auto client = Client();
  auto r = client->Post(Url("/x"), "{}");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->status, 429u);
  EXPECT_EQ(r->retry_after, "120");
  EXPECT_EQ(r->body, R"({"error":"rate_limited","message":"slow down"})");
  auto strict = RequireSuccess(client->Post(Url("/x"), "{}"));
  ASSERT_FALSE(strict.has_value());
  EXPECT_EQ(strict.error().code(), common::Errc::HttpStatus);
  EXPECT_NE(strict.error().message().find("429"), std::string::npos);
}

// The server sees the client certificate given in memory, and the same one given as files.
TEST_F(HttpClientTest, PresentsClientCertificateFromMemoryOrFiles) {
  std::mutex m;
  std::string seen;
  StartServer([&](const server::Request& r) {
    std::lock_guard lock(m);
    seen = r.peer_certificate_der;
    return server::Response{};
  });
  const std::string der = x509::CertificateDer(pki_->device.certificate_pem).value();

  auto o = Options();
  o.client_certificate_pem = pki_->device.certificate_pem;
  o.client_key_pem = pki_->device.key_pem;
  auto r = Client(o)->Get(Url("/"));
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  {
    std::lock_guard lock(m);
    EXPECT_EQ(seen, der);
  }

  testing::TempDir dir;
  std::ofstream(dir / "device.pem") << pki_->device.certificate_pem;
  std::ofstream(dir / "device.key") << pki_->device.key_pem;
  std::ofstream(dir / "ca.pem") << pki_->server_ca.certificate_pem;
  o = HttpClientOptions{};
  o.server_ca_file = (dir / "ca.pem").string();
  o.client_certificate_file = (dir / "device.pem").string();
  o.client_key_file = (dir / "device.key").string();
  {
    std::lock_guard lock(m);
    seen.clear();
  }
  r = Client(o)->Get(Url("/"));
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  std::lock_guard lock(m);
  EXPECT_EQ(seen, der);
}

// A server whose certificate does not chain to the configured server CA is never talked to.
TEST_F(HttpClientTest, RefusesServerNotSignedByConfiguredCa) {
  std::atomic<bool> called{false};
  StartServer([&](const server::Request&) {
    called = true;
    return server::Response{};
  });
  auto o = Options();
  o.server_ca_pem = pki_->other_ca.certificate_pem;
  auto r = Client(o)->Post(Url("/api/v1/checkin"), "{}");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), common::Errc::NetworkError);
  EXPECT_FALSE(called);
}

// A certificate from the right CA for another host name is refused too.
TEST_F(HttpClientTest, RefusesServerCertificateForAnotherName) {
  auto key = x509::TlsKey::Generate().value();
  x509::ServerNames names;
  names.dns_names = {"fleet.example.com"};
  auto cert = x509::IssueServerCertificate(pki_->server_ca.certificate_pem, pki_->server_ca.key,
                                           key.public_key(), names, testing::TestPki::Window());
  ASSERT_TRUE(cert.has_value()) << cert.error().ToString();
  server::HttpsOptions o;
  o.certificate_pem = cert->pem;
  o.private_key_pem = key.ToPem().value();
  std::atomic<bool> called{false};
  auto s = server::HttpsServer::Start(o, [&](const server::Request&) {
    called = true;
    return server::Response{};
  });
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  server_ = std::move(*s);
  auto r = Client()->Get(Url("/"));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), common::Errc::NetworkError);
  EXPECT_FALSE(called);
}

// An answer over max_response_bytes is refused, whatever its status.
TEST_F(HttpClientTest, RefusesOversizedAnswer) {
  StartServer([](const server::Request& r) {
    server::Response res;
    res.status = r.path == "/error" ? 500 : 200;
    res.body = std::string(5000, 'x');
    return res;
  });
  auto o = Options();
  o.max_response_bytes = 4096;
  auto client = Client(o);
  auto r = client->Get(Url("/ok"));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), common::Errc::LengthExceeded);
  r = client->Get(Url("/error"));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), common::Errc::LengthExceeded);
}

TEST_F(HttpClientTest, KeepsOneConnectionAliveAcrossRequests) {
  StartServer(&Echo);
  auto client = Client();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(client->Post(Url("/p"), "{}").has_value());
  ASSERT_TRUE(client->Get(Url("/g")).has_value());
  const auto stats = server_->stats();
  EXPECT_EQ(stats.connections, 1u);
  EXPECT_EQ(stats.requests, 4u);
}

TEST_F(HttpClientTest, ResumesTlsSessionOnReconnect) {
  StartServer(&Echo);
  auto o = Options();
  o.client_certificate_pem = pki_->device.certificate_pem;
  o.client_key_pem = pki_->device.key_pem;
  o.reuse_connections = false;
  auto client = Client(o);
  ASSERT_TRUE(client->Post(Url("/a"), "{}").has_value());
  ASSERT_TRUE(client->Post(Url("/b"), "{}").has_value());
  const auto stats = server_->stats();
  EXPECT_EQ(stats.connections, 2u);
  EXPECT_EQ(stats.handshakes, 2u);
  EXPECT_EQ(stats.resumed_sessions, 1u);
}

// Plain http is refused before anything is contacted unless the client allows it (tests only).
TEST_F(HttpClientTest, RefusesHttpUnlessAllowed) {
  testing::TempDir root;
  std::ofstream(root / "answer.json") << R"({"ok":true})";
  testing::HttpTestServer http(root.path());
  auto r = Client()->Get(http.base_url() + "/answer.json");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), common::Errc::InvalidArgument);
  EXPECT_TRUE(http.requests().empty());
  auto o = Options();
  o.allow_http = true;
  r = Client(o)->Get(http.base_url() + "/answer.json");
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->body, R"({"ok":true})");
  EXPECT_FALSE(Client()->Get("file:///etc/passwd").has_value());
}

// A redirect is an error, never followed.
TEST_F(HttpClientTest, DoesNotFollowRedirects) {
  testing::TempDir root;
  std::ofstream(root / "target.json") << "{}";
  testing::HttpTestServer http(root.path());
  testing::Fault f;
  f.redirect_to = http.base_url() + "/target.json";
  http.SetFault("/moved", f);
  auto o = Options();
  o.allow_http = true;
  auto r = Client(o)->Get(http.base_url() + "/moved");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), common::Errc::HttpStatus);
  EXPECT_NE(r.error().message().find("302"), std::string::npos);
  EXPECT_EQ(http.requests().size(), 1u);
}

// Slow-retrieval defence: an answer trickling below the low-speed limit is abandoned.
TEST_F(HttpClientTest, AbandonsAnswerBelowLowSpeedLimit) {
  testing::TempDir root;
  std::ofstream(root / "slow.json") << std::string(200, ' ');
  testing::HttpTestServer http(root.path());
  testing::Fault f;
  f.drip_interval = std::chrono::milliseconds(200);
  http.SetFault("/slow.json", f);
  auto o = Options();
  o.allow_http = true;
  o.low_speed_bytes_per_second = 1000;
  o.low_speed_time = std::chrono::seconds(1);
  auto r = Client(o)->Get(http.base_url() + "/slow.json");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), common::Errc::Timeout);
}

// Slow-retrieval defence: a peer just above the low-speed limit is still cut off by the minimum
// average rate.
TEST_F(HttpClientTest, AbandonsAnswerBelowMinimumAverageRate) {
  testing::TempDir root;
  std::ofstream(root / "slow.json") << std::string(200, ' ');
  testing::HttpTestServer http(root.path());
  testing::Fault f;
  f.drip_interval = std::chrono::milliseconds(100);
  http.SetFault("/slow.json", f);
  auto o = Options();
  o.allow_http = true;
  o.low_speed_bytes_per_second = 1;
  o.low_speed_time = std::chrono::seconds(60);
  o.min_average_bytes_per_second = 1000;
  o.average_rate_grace = std::chrono::seconds(1);
  auto r = Client(o)->Get(http.base_url() + "/slow.json");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), common::Errc::Timeout);
  EXPECT_NE(r.error().message().find("on average"), std::string::npos) << r.error().message();
}

// A header value carrying CR/LF could smuggle another header or request: refused.
TEST_F(HttpClientTest, RefusesHeaderInjection) {
  StartServer(&Echo);
  auto r = Client()->Get(Url("/"), {{"If-None-Match", "\"v1\"\r\nX-Admin: 1"}});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), common::Errc::InvalidArgument);
  EXPECT_EQ(server_->stats().requests, 0u);
}

TEST_F(HttpClientTest, CreateRequiresServerCaAndWholeClientIdentity) {
  EXPECT_EQ(HttpClient::Create(HttpClientOptions{}).error().code(), common::Errc::InvalidArgument);
  auto o = Options();
  o.client_certificate_pem = pki_->device.certificate_pem;
  EXPECT_EQ(HttpClient::Create(o).error().code(), common::Errc::InvalidArgument);
  o = Options();
  o.server_ca_file = "/etc/ssl/certs/ca-certificates.crt";
  EXPECT_EQ(HttpClient::Create(o).error().code(), common::Errc::InvalidArgument);
}

}  // namespace
}  // namespace upkeep::transport
