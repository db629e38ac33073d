// The fleet server's HTTPS front end on 127.0.0.1 port 0, driven by libcurl: TLS 1.2+, keep-alive,
// client certificates checked against the device CA, limits, handler failures, resumption and a
// graceful stop. Certificates are made with the openssl command line in a temporary directory.

#include "upkeep/server/https_server.hpp"

#include <curl/curl.h>
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <thread>

#include "temp_dir.hpp"

namespace upkeep::server {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// openssl(1) recipes: a device CA, a server certificate for 127.0.0.1, a client certificate from
// the CA, and a client certificate from another CA.
void MakeCertificates(const fs::path& d) {
  const std::string dir = d.string();
  const std::string script = "set -e; cd '" + dir + R"('
    key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    key ca.key; key other-ca.key; key server.key; key device.key; key rogue.key
    openssl req -x509 -new -key ca.key -subj /CN=upkeep-device-ca -days 30 -out ca.pem \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign 2>/dev/null
    openssl req -x509 -new -key other-ca.key -subj /CN=other-ca -days 30 -out other-ca.pem \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl req -new -key server.key -subj /CN=127.0.0.1 -out server.csr 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
      -extfile server.ext -out server.pem 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' > client.ext
    openssl req -new -key device.key -subj /CN=device-1 -out device.csr 2>/dev/null
    openssl x509 -req -in device.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
      -extfile client.ext -out device.pem 2>/dev/null
    openssl x509 -in device.pem -outform DER -out device.der
    openssl req -new -key rogue.key -subj /CN=device-1 -out rogue.csr 2>/dev/null
    openssl x509 -req -in rogue.csr -CA other-ca.pem -CAkey other-ca.key -CAcreateserial \
      -days 30 -extfile client.ext -out rogue.pem 2>/dev/null
  )";
  std::ofstream(d / "make.sh") << script;
  ASSERT_EQ(std::system(("bash '" + (d / "make.sh").string() + "'").c_str()), 0);
}

// CURL_SSLVERSION_* values (curl.h): minimum in the low bits, maximum shifted by 16.
constexpr long kTls10To11 = 4L | (5L << 16);  // NOLINT(google-runtime-int): libcurl's type
constexpr long kTls12Only = 6L | (6L << 16);  // NOLINT(google-runtime-int)

struct Reply {
  CURLcode code = CURLE_OK;
  long status = 0;  // NOLINT(google-runtime-int): libcurl's type
  std::string body;
};

std::size_t Collect(char* data, std::size_t size, std::size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

class HttpsServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    MakeCertificates(dir_->path());
  }
  static void TearDownTestSuite() { delete dir_; }

  void SetUp() override {
    curl_ = curl_easy_init();
    ASSERT_NE(curl_, nullptr);
  }
  void TearDown() override {
    curl_easy_cleanup(curl_);
    if (server_) server_->Stop();
  }

  static fs::path File(const char* name) { return dir_->path() / name; }

  HttpsOptions Options() const {
    HttpsOptions o;
    o.certificate_pem = ReadAll(File("server.pem"));
    o.private_key_pem = ReadAll(File("server.key"));
    o.client_ca_pem = ReadAll(File("ca.pem"));
    return o;
  }

  void StartServer(HttpsOptions o, Handler h) {
    auto s = HttpsServer::Start(o, std::move(h));
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    server_ = std::move(*s);
  }

  // One request on the test's curl handle (connections are reused between calls).
  Reply Send(const std::string& path, const std::string& body = "", const char* cert = nullptr,
             const char* key = nullptr) {
    Reply r;
    const std::string url = "https://127.0.0.1:" + std::to_string(server_->port()) + path;
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl_, CURLOPT_CAINFO, File("ca.pem").c_str());
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, &Collect);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &r.body);
    const std::string cert_path = cert ? File(cert).string() : std::string();
    const std::string key_path = key ? File(key).string() : std::string();
    curl_easy_setopt(curl_, CURLOPT_SSLCERT, cert ? cert_path.c_str() : nullptr);
    curl_easy_setopt(curl_, CURLOPT_SSLKEY, key ? key_path.c_str() : nullptr);
    if (!body.empty()) {
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, body.c_str());
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    } else {
      curl_easy_setopt(curl_, CURLOPT_HTTPGET, 1L);
    }
    r.code = curl_easy_perform(curl_);
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &r.status);
    return r;
  }

  static testing::TempDir* dir_;
  CURL* curl_ = nullptr;
  std::unique_ptr<HttpsServer> server_;
};

testing::TempDir* HttpsServerTest::dir_ = nullptr;

Response Echo(const Request& r) {
  Response res;
  res.body = r.method + " " + r.path + "?" + r.query + " " + r.Header("x-probe") + " " +
             std::to_string(r.body.size());
  return res;
}

TEST_F(HttpsServerTest, ServesRequestsOnOneKeptAliveConnection) {
  StartServer(Options(), &Echo);
  curl_slist* headers = curl_slist_append(nullptr, "X-Probe: yes");
  curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers);
  for (int i = 0; i < 3; ++i) {
    const Reply r = Send("/a/b?c=1");
    ASSERT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "GET /a/b?c=1 yes 0");
  }
  EXPECT_EQ(Send("/post", "hello").body, "POST /post? yes 5");
  curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, nullptr);
  curl_slist_free_all(headers);
  const auto stats = server_->stats();
  EXPECT_EQ(stats.connections, 1u);
  EXPECT_EQ(stats.requests, 4u);
}

// The handler sees the client certificate only when it chains to the device CA.
TEST_F(HttpsServerTest, PassesVerifiedClientCertificateToHandler) {
  std::string seen;
  StartServer(Options(), [&](const Request& r) {
    seen = r.peer_certificate_der;
    return Response{};
  });
  ASSERT_EQ(Send("/", "", "device.pem", "device.key").code, CURLE_OK);
  EXPECT_EQ(seen, ReadAll(File("device.der")));
  curl_easy_reset(curl_);
  ASSERT_EQ(Send("/").code, CURLE_OK);
  EXPECT_TRUE(seen.empty());  // enrolment: no certificate yet
}

// A certificate from another CA fails the handshake; the handler never runs.
TEST_F(HttpsServerTest, RefusesClientCertificateFromAnotherCa) {
  bool called = false;
  StartServer(Options(), [&](const Request&) {
    called = true;
    return Response{};
  });
  const Reply r = Send("/", "", "rogue.pem", "rogue.key");
  EXPECT_NE(r.code, CURLE_OK);
  EXPECT_FALSE(called);
  EXPECT_EQ(server_->stats().handshakes, 0u);
}

// TLS below 1.2 is refused.
TEST_F(HttpsServerTest, RefusesTls11) {
  StartServer(Options(), &Echo);
  curl_easy_setopt(curl_, CURLOPT_SSLVERSION, kTls10To11);
  EXPECT_NE(Send("/").code, CURLE_OK);
  EXPECT_EQ(server_->stats().requests, 0u);
}

// A body over the limit is answered 413 without reaching the handler.
TEST_F(HttpsServerTest, RejectsOversizedBodyWith413) {
  auto o = Options();
  o.max_body_bytes = 1000;
  bool called = false;
  StartServer(o, [&](const Request&) {
    called = true;
    return Response{};
  });
  const Reply r = Send("/", std::string(5000, 'x'));
  EXPECT_EQ(r.status, 413);
  EXPECT_FALSE(called);
  EXPECT_EQ(server_->stats().rejected_requests, 1u);
}

TEST_F(HttpsServerTest, HandlerExceptionBecomes500AndServerGoesOn) {
  StartServer(Options(), [](const Request& r) -> Response {
    if (r.path == "/throw") throw std::runtime_error("boom");
    return Response{};
  });
  EXPECT_EQ(Send("/throw").status, 500);
  EXPECT_EQ(Send("/fine").status, 200);
}

// A second connection resumes the first one's TLS session (what a fleet checking in daily does).
TEST_F(HttpsServerTest, ResumesTlsSessions) {
  StartServer(Options(), &Echo);
  CURLSH* share = curl_share_init();
  curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  curl_easy_setopt(curl_, CURLOPT_SHARE, share);
  curl_easy_setopt(curl_, CURLOPT_SSLVERSION, kTls12Only);
  curl_easy_setopt(curl_, CURLOPT_FORBID_REUSE, 1L);
  ASSERT_EQ(Send("/", "", "device.pem", "device.key").code, CURLE_OK);
  ASSERT_EQ(Send("/", "", "device.pem", "device.key").code, CURLE_OK);
  curl_easy_setopt(curl_, CURLOPT_SHARE, nullptr);
  curl_share_cleanup(share);
  const auto stats = server_->stats();
  EXPECT_EQ(stats.handshakes, 2u);
  EXPECT_EQ(stats.resumed_sessions, 1u);
}

// Stop lets the request in flight finish, then refuses new connections.
TEST_F(HttpsServerTest, GracefulStopFinishesRequestInFlight) {
  std::mutex m;
  std::condition_variable cv;
  bool entered = false, release = false;
  StartServer(Options(), [&](const Request&) {
    std::unique_lock lock(m);
    entered = true;
    cv.notify_all();
    cv.wait_for(lock, std::chrono::seconds(10), [&] { return release; });
    Response r;
    r.body = "done";
    return r;
  });
  Reply in_flight;
  std::thread client([&] { in_flight = Send("/slow"); });
  {
    std::unique_lock lock(m);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return entered; }));
  }
  std::thread stopper([&] { server_->Stop(std::chrono::seconds(10)); });
  {
    std::lock_guard lock(m);
    release = true;
  }
  cv.notify_all();
  client.join();
  stopper.join();
  EXPECT_EQ(in_flight.code, CURLE_OK);
  EXPECT_EQ(in_flight.status, 200);
  EXPECT_EQ(in_flight.body, "done");
  CURL* fresh = curl_easy_init();
  std::swap(fresh, curl_);
  EXPECT_NE(Send("/again").code, CURLE_OK);
  std::swap(fresh, curl_);
  curl_easy_cleanup(fresh);
}

TEST_F(HttpsServerTest, ReportsUnusableIdentityAndAddress) {
  auto o = Options();
  o.private_key_pem = "not a key";
  EXPECT_EQ(HttpsServer::Start(o, &Echo).error().code(), make_error_code(Errc::InvalidTlsIdentity));
  o = Options();
  o.address = "not-an-address";
  EXPECT_EQ(HttpsServer::Start(o, &Echo).error().code(), make_error_code(Errc::CannotListen));
}

}  // namespace
}  // namespace upkeep::server
