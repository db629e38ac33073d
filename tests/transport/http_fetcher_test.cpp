// libs/transport: the libcurl Fetcher against a misbehaving server on 127.0.0.1, and the test
// server's own contract (ranges, traversal, HEAD) that other suites rely on.

#include "upkeep/transport/http_fetcher.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "http_test_server.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/common/errc.hpp"

namespace upkeep::transport {
namespace {

using testing::Fault;

template <typename Fn>
Fault MakeFault(Fn set) {
  Fault f;
  set(f);
  return f;
}

// 100000 bytes covering every byte value, so that any corruption or truncation shows.
std::string FileContent() {
  std::string s(100000, '\0');
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>((i * 7 + i / 256) & 0xff);
  return s;
}

void WriteFile(const std::filesystem::path& p, const std::string& content) {
  std::ofstream(p, std::ios::binary) << content;
}

class HttpFetcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteFile(root() / "file.bin", FileContent());
    WriteFile(root() / "empty", "");
  }
  [[nodiscard]] std::filesystem::path root() const { return dir_.path() / "www"; }
  [[nodiscard]] std::string Url(const std::string& path) const { return server_.base_url() + path; }
  // Fetches into received_, which keeps what reached the sink even on failure.
  Result<void> Get(const std::string& path, std::uint64_t max, const HttpFetcherOptions& o = {}) {
    received_.clear();
    sink_calls_ = 0;
    HttpFetcher fetcher(o);
    return fetcher.Fetch(Url(path), max, [this](std::span<const char> piece) -> Result<void> {
      received_.append(piece.data(), piece.size());
      ++sink_calls_;
      return Ok();
    });
  }

  testing::TempDir dir_;
  bool made_root_ = std::filesystem::create_directory(dir_.path() / "www");
  testing::HttpTestServer server_{root()};
  std::string received_;
  int sink_calls_ = 0;
};

TEST_F(HttpFetcherTest, FetchesFileExactly) {
  ASSERT_TRUE(Get("/file.bin", 1000000));
  EXPECT_EQ(received_, FileContent());
  EXPECT_EQ(server_.requests(), std::vector<std::string>{"/file.bin"});
}

TEST_F(HttpFetcherTest, FetchesFileOfExactlyTheLimit) {
  ASSERT_TRUE(Get("/file.bin", FileContent().size()));
  EXPECT_EQ(received_, FileContent());
}

TEST_F(HttpFetcherTest, FetchesEmptyFile) {
  ASSERT_TRUE(Get("/empty", 10));
  EXPECT_TRUE(received_.empty());
  ASSERT_TRUE(Get("/empty", 0));
}

TEST_F(HttpFetcherTest, FetchesChunkedBodyExactly) {
  server_.SetFault("/file.bin", MakeFault([](Fault& f) { f.chunked = true; }));
  ASSERT_TRUE(Get("/file.bin", FileContent().size()));
  EXPECT_EQ(received_, FileContent());
}

TEST_F(HttpFetcherTest, AcceptsUpperCaseScheme) {
  HttpFetcher fetcher;
  auto body =
      fetcher.FetchBytes("HTTP://127.0.0.1:" + std::to_string(server_.port()) + "/empty", 10);
  ASSERT_TRUE(body) << body.error().ToString();
  EXPECT_TRUE(body->empty());
}

TEST_F(HttpFetcherTest, ReportsMissingFileAsRemoteNotFound) {
  EXPECT_ERRC(Get("/missing", 100000), common::Errc::RemoteNotFound);
  EXPECT_TRUE(received_.empty());
}

TEST_F(HttpFetcherTest, ReportsForbiddenAsRemoteNotFound) {
  server_.SetFault("/file.bin", MakeFault([](Fault& f) { f.status = 403; }));
  EXPECT_ERRC(Get("/file.bin", 100000), common::Errc::RemoteNotFound);
  EXPECT_TRUE(received_.empty());
}

// An error page must never be taken for the file: its body does not reach the sink.
TEST_F(HttpFetcherTest, ReportsServerErrorAsHttpStatusWithoutPassingTheBody) {
  server_.SetFault("/file.bin", MakeFault([](Fault& f) { f.status = 500; }));
  auto r = Get("/file.bin", 100000);
  EXPECT_ERRC(r, common::Errc::HttpStatus);
  EXPECT_NE(r.error().message().find("500"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find(Url("/file.bin")), std::string::npos) << r.error().message();
  EXPECT_TRUE(received_.empty());
  EXPECT_EQ(sink_calls_, 0);
}

// T-4: a file whose announced length is over the limit is refused before its body arrives.
TEST_F(HttpFetcherTest, RefusesAnnouncedLengthOverLimitBeforeTheBody) {
  EXPECT_ERRC(Get("/file.bin", FileContent().size() - 1), common::Errc::LengthExceeded);
  EXPECT_TRUE(received_.empty());
}

// T-4 (endless data): without a length, the sink gets exactly the limit and not one byte more.
TEST_F(HttpFetcherTest, StopsEndlessBodyAtTheLimit) {
  server_.SetFault("/endless", MakeFault([](Fault& f) { f.endless = true; }));
  EXPECT_ERRC(Get("/endless", 100000), common::Errc::LengthExceeded);
  EXPECT_EQ(received_.size(), 100000u);
}

// T-4 (endless data), chunked: the limit counts the decoded file bytes.
TEST_F(HttpFetcherTest, StopsEndlessChunkedBodyAtTheLimit) {
  server_.SetFault("/endless", MakeFault([](Fault& f) {
                     f.endless = true;
                     f.chunked = true;
                   }));
  EXPECT_ERRC(Get("/endless", 12345), common::Errc::LengthExceeded);
  EXPECT_EQ(received_.size(), 12345u);
}

// T-4: a body without Content-Length that is longer than the limit is cut exactly at the limit.
TEST_F(HttpFetcherTest, StopsBodyWithoutLengthAtTheLimit) {
  server_.SetFault("/file.bin", MakeFault([](Fault& f) { f.omit_length = true; }));
  EXPECT_ERRC(Get("/file.bin", 5000), common::Errc::LengthExceeded);
  EXPECT_EQ(received_, FileContent().substr(0, 5000));
}

TEST_F(HttpFetcherTest, ReportsBodyShorterThanItsLengthAsNetworkError) {
  server_.SetFault("/file.bin", MakeFault([](Fault& f) { f.declared_length = 200000; }));
  EXPECT_ERRC(Get("/file.bin", 1000000), common::Errc::NetworkError);
}

// T-4 (slow retrieval): a server dripping bytes below the low-speed limit times out.
TEST_F(HttpFetcherTest, TimesOutSlowRetrieval) {
  server_.SetFault("/file.bin", MakeFault([](Fault& f) {
                     f.drip_after = 1000;
                     f.drip_interval = std::chrono::milliseconds(100);
                   }));
  HttpFetcherOptions o;
  o.low_speed_bytes_per_second = 1000;
  o.low_speed_time = std::chrono::seconds(1);
  EXPECT_ERRC(Get("/file.bin", 1000000, o), common::Errc::Timeout);
  EXPECT_LT(received_.size(), FileContent().size());
}

TEST_F(HttpFetcherTest, TimesOutWholeRequestAfterTotalTimeout) {
  server_.SetFault("/file.bin",
                   MakeFault([](Fault& f) { f.drip_interval = std::chrono::milliseconds(1); }));
  HttpFetcherOptions o;
  o.low_speed_bytes_per_second = 0;  // off: only the total timeout can stop this transfer
  o.total_timeout = std::chrono::seconds(1);
  EXPECT_ERRC(Get("/file.bin", 1000000, o), common::Errc::Timeout);
}

// Slow retrieval above the low-speed limit: a peer that keeps sending just fast enough for the
// low-speed check is still cut off once its average rate stays below the minimum.
TEST_F(HttpFetcherTest, TimesOutPeerSendingJustAboveTheLowSpeedLimit) {
  server_.SetFault("/file.bin", MakeFault([](Fault& f) {
                     f.drip_after = 100;
                     f.drip_interval = std::chrono::milliseconds(2);
                   }));
  HttpFetcherOptions o;
  o.low_speed_bytes_per_second = 10;  // the drip (about 500 bytes/s) always passes this
  o.low_speed_time = std::chrono::seconds(1);
  o.min_average_bytes_per_second = 100'000;
  o.average_rate_grace = std::chrono::seconds(1);
  const auto r = Get("/file.bin", 1000000, o);
  EXPECT_ERRC(r, common::Errc::Timeout);
  EXPECT_NE(r.error().message().find("on average"), std::string::npos) << r.error().message();
  EXPECT_LT(received_.size(), FileContent().size());
}

TEST_F(HttpFetcherTest, ReportsDroppedConnectionAsNetworkError) {
  server_.SetFault("/file.bin", MakeFault([](Fault& f) { f.drop_after = 100; }));
  EXPECT_ERRC(Get("/file.bin", 1000000), common::Errc::NetworkError);
  EXPECT_EQ(received_, FileContent().substr(0, 100));
}

TEST_F(HttpFetcherTest, ReportsConnectionRefusedAsNetworkError) {
  // A port bound on 127.0.0.1 but not listening refuses connections, and nobody else can take it.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/x";
  HttpFetcher fetcher;
  auto r = fetcher.Fetch(url, 10, [](std::span<const char>) -> Result<void> { return Ok(); });
  ::close(fd);
  EXPECT_ERRC(r, common::Errc::NetworkError);
}

// A mirror must serve what it is asked for: redirects are refused unless enabled, and the
// redirect's own body is not taken for the file.
TEST_F(HttpFetcherTest, RefusesRedirectsByDefault) {
  server_.SetFault("/moved", MakeFault([&](Fault& f) { f.redirect_to = Url("/file.bin"); }));
  EXPECT_ERRC(Get("/moved", 1000000), common::Errc::HttpStatus);
  EXPECT_TRUE(received_.empty());
  EXPECT_EQ(server_.requests(), std::vector<std::string>{"/moved"});
}

TEST_F(HttpFetcherTest, FollowsRedirectsWhenEnabled) {
  server_.SetFault("/moved", MakeFault([&](Fault& f) { f.redirect_to = Url("/file.bin"); }));
  HttpFetcherOptions o;
  o.follow_redirects = true;
  ASSERT_TRUE(Get("/moved", 1000000, o));
  EXPECT_EQ(received_, FileContent());
  EXPECT_EQ(server_.requests(), (std::vector<std::string>{"/moved", "/file.bin"}));
}

// At most three redirects are followed.
TEST_F(HttpFetcherTest, StopsFollowingAfterThreeRedirects) {
  server_.SetFault("/loop", MakeFault([&](Fault& f) { f.redirect_to = Url("/loop"); }));
  HttpFetcherOptions o;
  o.follow_redirects = true;
  EXPECT_ERRC(Get("/loop", 1000000, o), common::Errc::HttpStatus);
  EXPECT_TRUE(received_.empty());
  EXPECT_EQ(server_.requests().size(), 4u);
}

// Redirects never leave http and https, even when following is enabled.
TEST_F(HttpFetcherTest, RefusesRedirectToAnotherScheme) {
  server_.SetFault("/moved", MakeFault([&](Fault& f) {
                     f.redirect_to = "ftp://127.0.0.1:" + std::to_string(server_.port()) + "/x";
                   }));
  HttpFetcherOptions o;
  o.follow_redirects = true;
  EXPECT_ERRC(Get("/moved", 1000000, o), common::Errc::HttpStatus);
  EXPECT_TRUE(received_.empty());
  EXPECT_EQ(server_.requests(), std::vector<std::string>{"/moved"});
}

TEST_F(HttpFetcherTest, ReturnsTheSinksErrorExactlyAndStops) {
  HttpFetcher fetcher;
  int calls = 0;
  auto r = fetcher.Fetch(Url("/file.bin"), 1000000, [&](std::span<const char>) -> Result<void> {
    ++calls;
    return Error(common::Errc::Aborted, "consumer stopped");
  });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), common::Errc::Aborted);
  EXPECT_EQ(r.error().message(), "consumer stopped");
  EXPECT_EQ(calls, 1);
}

// Only http and https: other schemes are InvalidArgument and nothing is contacted.
TEST_F(HttpFetcherTest, RejectsNonHttpSchemes) {
  HttpFetcher fetcher;
  auto sink = [](std::span<const char>) -> Result<void> { return Ok(); };
  const std::string authority = "127.0.0.1:" + std::to_string(server_.port());
  EXPECT_ERRC(fetcher.Fetch("file://" + (root() / "file.bin").string(), 1000000, sink),
              common::Errc::InvalidArgument);
  EXPECT_ERRC(fetcher.Fetch("ftp://" + authority + "/file.bin", 1000000, sink),
              common::Errc::InvalidArgument);
  EXPECT_ERRC(fetcher.Fetch("gopher://" + authority + "/file.bin", 1000000, sink),
              common::Errc::InvalidArgument);
  EXPECT_ERRC(fetcher.Fetch(authority + "/file.bin", 1000000, sink), common::Errc::InvalidArgument);
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(HttpFetcherTest, ReusesOneFetcherForManyRequests) {
  HttpFetcher fetcher;
  for (int i = 0; i < 5; ++i) {
    auto body = fetcher.FetchBytes(Url("/file.bin"), 1000000);
    ASSERT_TRUE(body) << body.error().ToString();
    EXPECT_EQ(*body, FileContent());
    EXPECT_ERRC(fetcher.FetchBytes(Url("/missing"), 1000000), common::Errc::RemoteNotFound);
    EXPECT_ERRC(fetcher.FetchBytes(Url("/file.bin"), 10), common::Errc::LengthExceeded);
  }
}

// --- The test server's own contract -------------------------------------------------------

// Sends `request` to the server and returns everything it answers until it closes.
std::string RawExchange(std::uint16_t port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0)
      response.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return response;
}

std::string RawGet(std::uint16_t port, const std::string& target, const std::string& extra = "") {
  return RawExchange(port, "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "\r\n");
}

std::string BodyOf(const std::string& response) {
  const auto end = response.find("\r\n\r\n");
  return end == std::string::npos ? std::string() : response.substr(end + 4);
}

using HttpTestServerTest = HttpFetcherTest;

TEST_F(HttpTestServerTest, ServesRangeFromOffsetWithPartialContent) {
  const std::string r = RawGet(server_.port(), "/file.bin", "Range: bytes=99990-\r\n");
  EXPECT_TRUE(r.starts_with("HTTP/1.1 206 ")) << r.substr(0, 100);
  EXPECT_NE(r.find("Content-Range: bytes 99990-99999/100000\r\n"), std::string::npos);
  EXPECT_NE(r.find("Content-Length: 10\r\n"), std::string::npos);
  EXPECT_EQ(BodyOf(r), FileContent().substr(99990));
}

TEST_F(HttpTestServerTest, AnswersRangePastTheEndWithRangeNotSatisfiable) {
  const std::string r = RawGet(server_.port(), "/file.bin", "Range: bytes=100000-\r\n");
  EXPECT_TRUE(r.starts_with("HTTP/1.1 416 ")) << r.substr(0, 100);
  EXPECT_NE(r.find("Content-Range: bytes */100000\r\n"), std::string::npos);
}

TEST_F(HttpTestServerTest, IgnoresMalformedRange) {
  const std::string r = RawGet(server_.port(), "/file.bin", "Range: bytes=x-\r\n");
  EXPECT_TRUE(r.starts_with("HTTP/1.1 200 ")) << r.substr(0, 100);
  EXPECT_EQ(BodyOf(r), FileContent());
}

TEST_F(HttpTestServerTest, RefusesPathsOutsideTheRoot) {
  WriteFile(dir_.path() / "secret", "secret");
  for (const char* target : {"/../secret", "/%2e%2e/secret", "/a/..%2F..%2Fsecret", "secret"}) {
    const std::string r = RawGet(server_.port(), target);
    EXPECT_TRUE(r.starts_with("HTTP/1.1 404 ")) << target;
    EXPECT_EQ(r.find("secret"), std::string::npos) << target;
  }
}

TEST_F(HttpTestServerTest, AnswersHeadWithLengthAndNoBody) {
  const std::string r = RawExchange(server_.port(), "HEAD /file.bin HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(r.starts_with("HTTP/1.1 200 ")) << r.substr(0, 100);
  EXPECT_NE(r.find("Content-Length: 100000\r\n"), std::string::npos);
  EXPECT_TRUE(BodyOf(r).empty());
}

TEST_F(HttpTestServerTest, RecordsRequestTargetsInOrder) {
  RawGet(server_.port(), "/a?x=1");
  RawGet(server_.port(), "/file.bin");
  EXPECT_EQ(server_.requests(), (std::vector<std::string>{"/a?x=1", "/file.bin"}));
  server_.ClearRequests();
  EXPECT_TRUE(server_.requests().empty());
}

// The destructor must not wait for clients that went quiet or stopped reading.
TEST_F(HttpTestServerTest, StopsWithIdleAndStalledClientsConnected) {
  std::optional<testing::HttpTestServer> server(std::in_place, root());
  server->SetFault("/endless", MakeFault([](Fault& f) { f.endless = true; }));
  const auto connect_to = [port = server->port()] {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    return fd;
  };
  const int idle = connect_to();     // never sends a request
  const int stalled = connect_to();  // asks for an endless body and never reads it
  const std::string request = "GET /endless HTTP/1.1\r\n\r\n";
  EXPECT_EQ(::send(stalled, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  // Wait (bounded) until the server has the request; the destructor must return either way.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server->requests().empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_FALSE(server->requests().empty());
  server.reset();  // returns (the test would hit ctest's timeout otherwise)
  ::close(idle);
  ::close(stalled);
}

}  // namespace
}  // namespace upkeep::transport

namespace upkeep::transport {
namespace {

class HttpRangeTest : public HttpFetcherTest {
 protected:
  Result<void> GetRange(std::uint64_t offset, std::uint64_t length) {
    received_.clear();
    HttpFetcher fetcher;
    return fetcher.FetchRange(Url("/file.bin"), offset, length,
                              [this](std::span<const char> piece) -> Result<void> {
                                received_.append(piece.data(), piece.size());
                                return Ok();
                              });
  }
};

// Resuming a download asks for exactly the rest and gets exactly those bytes.
TEST_F(HttpRangeTest, FetchesTheRequestedWindow) {
  const std::string all = FileContent();
  ASSERT_TRUE(GetRange(1000, 500));
  EXPECT_EQ(received_, all.substr(1000, 500));
  EXPECT_EQ(server_.ranges().back(), "bytes=1000-1499");
}

TEST_F(HttpRangeTest, WindowPastTheEndDeliversWhatExists) {
  const std::string all = FileContent();
  ASSERT_TRUE(GetRange(all.size() - 10, 100));
  EXPECT_EQ(received_, all.substr(all.size() - 10));
  ASSERT_TRUE(GetRange(all.size() + 5, 100));  // 416: nothing there
  EXPECT_EQ(received_, "");
}

TEST_F(HttpRangeTest, DroppedRangeTransferIsNetworkError) {
  server_.SetFault("/file.bin", MakeFault([](Fault& f) { f.drop_after = 100; }));
  EXPECT_ERRC(GetRange(50, 1000), common::Errc::NetworkError);
  EXPECT_EQ(received_, FileContent().substr(50, 100));
}

}  // namespace
}  // namespace upkeep::transport
