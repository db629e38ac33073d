// The image repository served as static files (docs/server.md, "The image repository") by a real
// HttpsServer on 127.0.0.1 port 0, driven by libcurl: GET, HEAD, single byte ranges, conditional
// requests, strict paths (nothing outside the directory is ever served), a file larger than the
// request body limit streamed intact, and concurrent downloads.

#include "upkeep/server/static_files.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <thread>

#include "https_client.hpp"
#include "temp_dir.hpp"
#include "test_pki.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/server/router.hpp"

namespace upkeep::server {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using upkeep::testing::HttpsCall;
using upkeep::testing::HttpsReply;

constexpr const char* kSecret = "-----BEGIN PRIVATE KEY----- the server's secret";
constexpr const char* kTimestamp = "{\"signed\":{\"_type\":\"timestamp\",\"version\":7}}";

std::string Sha256Hex(std::string_view data) { return HexEncode(crypto::Sha256(data)); }

// Bytes that differ at every offset modulo a prime, so a misplaced piece shows in the hash.
std::string Pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7919 + i / 65521) & 0xff);
  return s;
}

void Write(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

class StaticFilesTest : public ::testing::Test {
 protected:
  // DIR/server.key (outside), DIR/repo/ (served) as `upkeep repo publish` lays it out, plus the
  // traps: a symbolic link out of the directory, a dotfile, a directory.
  void SetUp() override {
    root_ = dir_.path() / "repo";
    Write(dir_.path() / "server.key", kSecret);
    Write(dir_.path() / "ca.pem", pki_.server_ca.certificate_pem);
    Write(root_ / "metadata" / "timestamp.json", kTimestamp);
    Write(root_ / "metadata" / "1.root.json", "{\"root\":1}");
    Write(root_ / "metadata" / "3.team" / "ns:1.json", "{\"role\":\"team/ns:1\"}");
    Write(root_ / "targets" / "rootfs" / "abc.payload", "rootfs image bytes 0123456789");
    Write(root_ / ".secret", kSecret);
    big_ = Pattern(3 * 1024 * 1024 + 12345);
    Write(root_ / "targets" / "big.payload", big_);
    fs::create_symlink(dir_.path() / "server.key", root_ / "escape.key");
    fs::create_symlink("../../server.key", root_ / "metadata" / "relative-escape.json");
    fs::create_symlink("timestamp.json", root_ / "metadata" / "alias.json");  // stays inside
    auto files = StaticFiles::Create(root_.string());
    ASSERT_TRUE(files) << files.error().ToString();
    files_ = std::move(*files);
    Routes routes;
    routes.repository = files_->AsHandler();
    routes.fallback = [](const Request&) {
      Response r;
      r.status = 404;
      r.body = "{\"error\":\"not_found\",\"message\":\"no such endpoint\"}";
      return r;
    };
    HttpsOptions o;
    o.certificate_pem = pki_.server.certificate_pem;
    o.private_key_pem = pki_.server.key_pem;
    o.client_ca_pem = pki_.device_ca.certificate_pem;
    o.max_body_bytes = 64 * 1024;  // the download is far larger than any request may be
    auto s = HttpsServer::Start(o, Route(std::move(routes)));
    ASSERT_TRUE(s) << s.error().ToString();
    server_ = std::move(*s);
  }
  void TearDown() override {
    if (server_) server_->Stop(1s);
  }

  HttpsReply Call(const std::string& method, const std::string& path,
                  std::vector<std::string> headers = {}) {
    HttpsCall call;
    call.method = method;
    call.path = path;
    call.headers = std::move(headers);
    return upkeep::testing::CallHttps(server_->port(), (dir_.path() / "ca.pem").string(), call);
  }
  HttpsReply Get(const std::string& path, std::vector<std::string> headers = {}) {
    return Call("GET", path, std::move(headers));
  }

  upkeep::testing::TestPki pki_;
  testing::TempDir dir_;
  fs::path root_;
  std::string big_;
  std::unique_ptr<StaticFiles> files_;
  std::unique_ptr<HttpsServer> server_;
};

TEST_F(StaticFilesTest, ServesFilesWithLengthTypeAndValidators) {
  const HttpsReply r = Get("/repository/metadata/timestamp.json");
  ASSERT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, kTimestamp);
  EXPECT_EQ(r.Header("content-length"), std::to_string(std::string(kTimestamp).size()));
  EXPECT_EQ(r.Header("content-type"), "application/json");
  EXPECT_EQ(r.Header("accept-ranges"), "bytes");
  EXPECT_FALSE(r.Header("etag").empty());
  struct stat st {};
  ASSERT_EQ(::stat((root_ / "metadata" / "timestamp.json").c_str(), &st), 0);
  EXPECT_EQ(r.Header("last-modified"), FormatHttpDate(st.st_mtim.tv_sec));
  const HttpsReply payload = Get("/repository/targets/rootfs/abc.payload");
  EXPECT_EQ(payload.status, 200);
  EXPECT_EQ(payload.body, "rootfs image bytes 0123456789");
  EXPECT_EQ(payload.Header("content-type"), "application/octet-stream");
}

TEST_F(StaticFilesTest, HeadAnswersTheLengthWithoutTheBody) {
  const HttpsReply r = Call("HEAD", "/repository/targets/big.payload");
  ASSERT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.body.empty());
  EXPECT_EQ(r.Header("content-length"), std::to_string(big_.size()));
  EXPECT_EQ(Call("HEAD", "/repository/metadata/none.json").status, 404);
}

// HEAD on any handler's answer: the headers with the body's length, no body, and the kept-alive
// connection stays in step for the next request.
TEST_F(StaticFilesTest, HeadOnAnyAnswerSendsNoBodyAndKeepsTheConnectionUsable) {
  CURL* curl = curl_easy_init();
  ASSERT_NE(curl, nullptr);
  const std::string ca = (dir_.path() / "ca.pem").string();
  HttpsCall call;
  call.method = "HEAD";
  call.path = "/api/v1/none";
  HttpsReply r = upkeep::testing::CallHttps(server_->port(), ca, call, curl);
  ASSERT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(r.body.empty());
  EXPECT_EQ(r.Header("content-length"),
            std::to_string(
                std::string("{\"error\":\"not_found\",\"message\":\"no such endpoint\"}").size()));
  call.path = "/repository/targets/big.payload";
  r = upkeep::testing::CallHttps(server_->port(), ca, call, curl);
  EXPECT_EQ(r.status, 200);
  call = HttpsCall{};
  call.path = "/repository/metadata/timestamp.json";
  r = upkeep::testing::CallHttps(server_->port(), ca, call, curl);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, kTimestamp);
  curl_easy_cleanup(curl);
  EXPECT_EQ(server_->stats().connections, 1u);
  EXPECT_EQ(server_->stats().requests, 3u);
}

TEST_F(StaticFilesTest, OtherMethodsAre405) {
  const HttpsReply r = Call("POST", "/repository/metadata/timestamp.json");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.Header("allow"), "GET, HEAD");
  EXPECT_EQ(Call("DELETE", "/repository/metadata/timestamp.json").status, 405);
}

// What a device resuming a download sends (libs/transport HttpFetcher: Range: bytes=N-M).
TEST_F(StaticFilesTest, AnswersSingleByteRangesWith206) {
  HttpsReply r = Get("/repository/targets/big.payload", {"Range: bytes=100-199"});
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, big_.substr(100, 100));
  EXPECT_EQ(r.Header("content-range"), "bytes 100-199/" + std::to_string(big_.size()));
  EXPECT_EQ(r.Header("content-length"), "100");
  const std::uint64_t from = big_.size() - 70000;
  r = Get("/repository/targets/big.payload", {"Range: bytes=" + std::to_string(from) + "-"});
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, big_.substr(from));
  r = Get("/repository/targets/big.payload", {"Range: bytes=-10"});
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, big_.substr(big_.size() - 10));
  // An end past the file is cut at the file's end.
  r = Get("/repository/metadata/1.root.json", {"Range: bytes=2-1000000"});
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, std::string("{\"root\":1}").substr(2));
  EXPECT_EQ(r.Header("content-range"), "bytes 2-9/10");
}

TEST_F(StaticFilesTest, UnsatisfiableOrMalformedRangesAre416) {
  const std::string size = std::to_string(big_.size());
  for (const std::string& range :
       {"bytes=" + size + "-", "bytes=" + size + "-" + size + "0", std::string("bytes=-0"),
        std::string("bytes=abc"), std::string("bytes=5-2"), std::string("bytes=-"),
        std::string("bytes=1-x")}) {
    const HttpsReply r = Get("/repository/targets/big.payload", {"Range: " + range});
    EXPECT_EQ(r.status, 416) << range;
    EXPECT_EQ(r.Header("content-range"), "bytes */" + size) << range;
    EXPECT_EQ(r.body.find(big_.substr(0, 64)), std::string::npos);
  }
}

// RFC 9110 14.2: a server may ignore Range; several ranges or another unit get the whole file.
TEST_F(StaticFilesTest, SeveralRangesOrOtherUnitsGetTheWholeFile) {
  HttpsReply r = Get("/repository/metadata/1.root.json", {"Range: bytes=0-1,4-5"});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"root\":1}");
  r = Get("/repository/metadata/1.root.json", {"Range: items=0-1"});
  EXPECT_EQ(r.status, 200);
}

TEST_F(StaticFilesTest, IfRangeWithAnotherEtagGetsTheWholeFile) {
  const std::string etag = Get("/repository/metadata/1.root.json").Header("etag");
  HttpsReply r =
      Get("/repository/metadata/1.root.json", {"Range: bytes=0-1", "If-Range: \"other\""});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"root\":1}");
  r = Get("/repository/metadata/1.root.json", {"Range: bytes=0-1", "If-Range: " + etag});
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, "{\"");
}

TEST_F(StaticFilesTest, IfNoneMatchAndIfModifiedSinceAnswer304) {
  const HttpsReply first = Get("/repository/metadata/timestamp.json");
  const std::string etag = first.Header("etag");
  ASSERT_FALSE(etag.empty());
  HttpsReply r = Get("/repository/metadata/timestamp.json", {"If-None-Match: " + etag});
  EXPECT_EQ(r.status, 304);
  EXPECT_TRUE(r.body.empty());
  EXPECT_EQ(r.Header("etag"), etag);
  r = Get("/repository/metadata/timestamp.json", {"If-None-Match: \"x\", W/" + etag});
  EXPECT_EQ(r.status, 304);
  r = Get("/repository/metadata/timestamp.json", {"If-None-Match: \"not-it\""});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, kTimestamp);
  r = Get("/repository/metadata/timestamp.json",
          {"If-Modified-Since: " + first.Header("last-modified")});
  EXPECT_EQ(r.status, 304);
  r = Get("/repository/metadata/timestamp.json",
          {"If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"});
  EXPECT_EQ(r.status, 200);
  // A new publication changes the ETag.
  Write(root_ / "metadata" / "timestamp.json", std::string(kTimestamp) + " ");
  r = Get("/repository/metadata/timestamp.json", {"If-None-Match: " + etag});
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.Header("etag"), etag);
}

// Traversal in every spelling is refused (400 or 404) and never shows the file outside.
TEST_F(StaticFilesTest, RefusesEveryWayOutOfTheDirectory) {
  const std::vector<std::pair<std::string, long>> attempts = {
      // NOLINT(google-runtime-int)
      {"/repository/../server.key", 400},
      {"/repository/metadata/../../server.key", 400},
      {"/repository/%2e%2e/server.key", 400},
      {"/repository/%2E%2E/server.key", 400},
      {"/repository/..%2fserver.key", 400},
      {"/repository/metadata%2F..%2F..%2Fserver.key", 400},
      {"/repository/%2fetc%2fpasswd", 400},
      {"/repository//etc/passwd", 400},
      {"/repository/" + (dir_.path() / "server.key").string(), 400},
      {"/repository/metadata/%00timestamp.json", 400},
      {"/repository/metadata/timestamp.json%", 400},
      {"/repository/metadata\\..\\..\\server.key", 400},
      {"/repository/./metadata/timestamp.json", 400},
      {"/repository/escape.key", 404},
      {"/repository/metadata/relative-escape.json", 404},
      {"/repository/.secret", 404},
      {"/repository/%2esecret", 404},
      {"/repository/metadata", 404},
      {"/repository/metadata/", 400},
      {"/repository/", 404},
  };
  for (const auto& [path, status] : attempts) {
    const HttpsReply r = Get(path);
    ASSERT_EQ(r.code, CURLE_OK) << path << ": " << curl_easy_strerror(r.code);
    EXPECT_EQ(r.status, status) << path;
    EXPECT_EQ(r.body.find("secret"), std::string::npos) << path;
    EXPECT_EQ(r.body.find("\"signed\""), std::string::npos) << path;
  }
}

// A symbolic link that stays inside the directory is followed; percent-decoding gives the
// subdirectory a delegated role name with '/' is published in (docs/formats/metadata.md).
TEST_F(StaticFilesTest, FollowsLinksInsideAndDecodesRoleNames) {
  EXPECT_EQ(Get("/repository/metadata/alias.json").body, kTimestamp);
  const HttpsReply r = Get("/repository/metadata/3.team%2Fns%3A1.json");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "{\"role\":\"team/ns:1\"}");
  EXPECT_EQ(Get("/repository/metadata/3.team/ns:1.json").status, 200);
}

TEST(StaticPathTest, ChecksEachDecodedSegment) {
  EXPECT_EQ(CheckStaticPath("metadata/1.root.json").relative, "metadata/1.root.json");
  EXPECT_EQ(CheckStaticPath("a%20b").relative, "a b");
  EXPECT_EQ(CheckStaticPath("..").refusal, 400u);
  EXPECT_EQ(CheckStaticPath("a/%2E").refusal, 400u);
  EXPECT_EQ(CheckStaticPath("a%2F%2Fb").refusal, 400u);
  EXPECT_EQ(CheckStaticPath("%").refusal, 400u);
  EXPECT_EQ(CheckStaticPath("%4").refusal, 400u);
  EXPECT_EQ(CheckStaticPath("%zz").refusal, 400u);
  EXPECT_EQ(CheckStaticPath("a%0a").refusal, 400u);
  EXPECT_EQ(CheckStaticPath("a/.git/config").refusal, 404u);
  EXPECT_EQ(CheckStaticPath("").refusal, 404u);
}

TEST(HttpDateTest, FormatsAndParsesImfFixdate) {
  EXPECT_EQ(FormatHttpDate(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
  EXPECT_EQ(ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
  EXPECT_EQ(ParseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT"), std::nullopt);
  EXPECT_EQ(ParseHttpDate("Sun, 06 Foo 1994 08:49:37 GMT"), std::nullopt);
  EXPECT_EQ(ParseHttpDate(""), std::nullopt);
}

TEST(StaticFilesCreateTest, RefusesAMissingDirectory) {
  testing::TempDir dir;
  auto r = StaticFiles::Create((dir.path() / "none").string());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), make_error_code(Errc::InvalidConfig));
  std::ofstream(dir.path() / "file") << "x";
  EXPECT_FALSE(StaticFiles::Create((dir.path() / "file").string()));
}

// A file far larger than the request body limit arrives intact, whole and in ranges, also on a
// kept-alive connection after it.
TEST_F(StaticFilesTest, StreamsAFileLargerThanTheBodyLimit) {
  CURL* curl = curl_easy_init();
  ASSERT_NE(curl, nullptr);
  HttpsCall call;
  call.path = "/repository/targets/big.payload";
  const std::string ca = (dir_.path() / "ca.pem").string();
  HttpsReply r = upkeep::testing::CallHttps(server_->port(), ca, call, curl);
  ASSERT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body.size(), big_.size());
  EXPECT_EQ(Sha256Hex(r.body), Sha256Hex(big_));
  call.headers = {"Range: bytes=65530-2000000"};
  r = upkeep::testing::CallHttps(server_->port(), ca, call, curl);
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(Sha256Hex(r.body), Sha256Hex(big_.substr(65530, 2000000 - 65530 + 1)));
  call = HttpsCall{};
  call.path = "/repository/metadata/timestamp.json";
  r = upkeep::testing::CallHttps(server_->port(), ca, call, curl);
  EXPECT_EQ(r.body, kTimestamp);
  curl_easy_cleanup(curl);
  EXPECT_EQ(server_->stats().connections, 1u);
}

TEST_F(StaticFilesTest, ServesConcurrentDownloads) {
  constexpr int kClients = 6;
  std::vector<std::string> hashes(kClients);
  std::vector<long> statuses(kClients);  // NOLINT(google-runtime-int): libcurl's type
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      const std::size_t from = static_cast<std::size_t>(i) * 100000;
      const HttpsReply r =
          Get("/repository/targets/big.payload",
              {i % 2 == 0 ? "X-Whole: yes" : "Range: bytes=" + std::to_string(from) + "-"});
      statuses[static_cast<std::size_t>(i)] = r.status;
      hashes[static_cast<std::size_t>(i)] = Sha256Hex(r.body);
    });
  }
  for (auto& t : clients) t.join();
  for (int i = 0; i < kClients; ++i) {
    const auto k = static_cast<std::size_t>(i);
    if (i % 2 == 0) {
      EXPECT_EQ(statuses[k], 200);
      EXPECT_EQ(hashes[k], Sha256Hex(big_));
    } else {
      EXPECT_EQ(statuses[k], 206);
      EXPECT_EQ(hashes[k], Sha256Hex(big_.substr(k * 100000)));
    }
  }
}

}  // namespace
}  // namespace upkeep::server
