// libs/transport: the libcurl Fetcher against a misbehaving server on 127.0.0.1.

#include "upkeep/transport/http_fetcher.hpp"

#include <gtest/gtest.h>

#include "test_util.hpp"

#include <fstream>

#include "http_test_server.hpp"
#include "temp_dir.hpp"
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

class HttpFetcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(root_ / "file.bin", std::ios::binary) << std::string(10000, 'f');
    std::ofstream(root_ / "empty", std::ios::binary);
  }
  std::string Url(const std::string& path) const { return server_.base_url() + path; }
  // Fetches into a string; `received` keeps what reached the sink even on failure.
  Result<void> Get(const std::string& path, std::uint64_t max, HttpFetcherOptions o = {}) {
    received_.clear();
    HttpFetcher fetcher(o);
    return fetcher.Fetch(Url(path), max, [this](std::span<const char> piece) -> Result<void> {
      received_.append(piece.data(), piece.size());
      return Ok();
    });
  }

  testing::TempDir root_;
  testing::HttpTestServer server_{root_.path()};
  std::string received_;
};

TEST_F(HttpFetcherTest, FetchesFileExactly) {
  ASSERT_TRUE(Get("/file.bin", 10000));
  EXPECT_EQ(received_, std::string(10000, 'f'));
  ASSERT_TRUE(Get("/empty", 10));
  EXPECT_TRUE(received_.empty());
}

TEST_F(HttpFetcherTest, ReportsMissingFileAsNotFound) {
  EXPECT_ERRC(Get("/missing", 100), common::Errc::RemoteNotFound);
  server_.SetFault("/file.bin", MakeFault([&](Fault& f) { f.status = 403; }));
  EXPECT_ERRC(Get("/file.bin", 100000), common::Errc::RemoteNotFound);
  EXPECT_TRUE(received_.empty());
}

TEST_F(HttpFetcherTest, ReportsOtherStatusesWithoutPassingTheBody) {
  server_.SetFault("/file.bin", MakeFault([&](Fault& f) { f.status = 500; }));
  EXPECT_ERRC(Get("/file.bin", 100000), common::Errc::HttpStatus);
  EXPECT_TRUE(received_.empty());
}

// T-4: a file whose announced length is over the limit is refused before its body arrives.
TEST_F(HttpFetcherTest, RefusesAnnouncedLengthOverLimit) {
  EXPECT_ERRC(Get("/file.bin", 9999), common::Errc::LengthExceeded);
  EXPECT_LE(received_.size(), 9999u);
}

// T-4 (endless data): without a length, the transfer stops at the limit, never past it.
TEST_F(HttpFetcherTest, StopsEndlessBodyAtTheLimit) {
  server_.SetFault("/endless", MakeFault([&](Fault& f) { f.endless = true; }));
  EXPECT_ERRC(Get("/endless", 100000), common::Errc::LengthExceeded);
  EXPECT_EQ(received_.size(), 100000u);
}

// A server lying about Content-Length (announcing less than it sends) is still cut at the limit.
TEST_F(HttpFetcherTest, StopsBodyLongerThanLimitWithoutLength) {
  server_.SetFault("/file.bin", MakeFault([&](Fault& f) { f.omit_length = true; }));
  EXPECT_ERRC(Get("/file.bin", 5000), common::Errc::LengthExceeded);
  EXPECT_EQ(received_.size(), 5000u);
}

// T-4 (slow retrieval): a server dripping bytes below the low-speed limit times out.
TEST_F(HttpFetcherTest, TimesOutSlowRetrieval) {
  server_.SetFault("/file.bin", MakeFault([&](Fault& f) { f.drip_interval = std::chrono::milliseconds(200); }));
  HttpFetcherOptions o;
  o.low_speed_bytes_per_second = 1000;
  o.low_speed_time = std::chrono::seconds(1);
  EXPECT_ERRC(Get("/file.bin", 100000, o), common::Errc::Timeout);
}

TEST_F(HttpFetcherTest, ReportsDroppedConnection) {
  server_.SetFault("/file.bin", MakeFault([&](Fault& f) { f.drop_after = 100; }));
  auto r = Get("/file.bin", 100000);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), common::Errc::NetworkError) << r.error().ToString();
}

TEST_F(HttpFetcherTest, ReportsConnectionRefused) {
  std::string url;
  {
    testing::TempDir empty;
    testing::HttpTestServer gone(empty.path());
    url = gone.base_url() + "/x";
  }
  HttpFetcher fetcher;
  auto r = fetcher.Fetch(url, 10, [](std::span<const char>) -> Result<void> { return Ok(); });
  EXPECT_ERRC(r, common::Errc::NetworkError);
}

// A mirror must serve what it is asked for: redirects are refused unless enabled.
TEST_F(HttpFetcherTest, RefusesRedirectsByDefault) {
  server_.SetFault("/moved", MakeFault([&](Fault& f) { f.redirect_to = Url("/file.bin"); }));
  EXPECT_ERRC(Get("/moved", 100000), common::Errc::HttpStatus);
  HttpFetcherOptions o;
  o.follow_redirects = true;
  ASSERT_TRUE(Get("/moved", 100000, o));
  EXPECT_EQ(received_.size(), 10000u);
}

TEST_F(HttpFetcherTest, ReturnsTheSinksErrorExactly) {
  HttpFetcher fetcher;
  auto r = fetcher.Fetch(Url("/file.bin"), 100000, [](std::span<const char>) -> Result<void> {
    return Error(common::Errc::Aborted, "consumer stopped");
  });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), common::Errc::Aborted);
  EXPECT_EQ(r.error().message(), "consumer stopped");
}

TEST_F(HttpFetcherTest, RejectsNonHttpSchemes) {
  HttpFetcher fetcher;
  auto sink = [](std::span<const char>) -> Result<void> { return Ok(); };
  EXPECT_ERRC(fetcher.Fetch("file:///etc/passwd", 100, sink), common::Errc::InvalidArgument);
  EXPECT_ERRC(fetcher.Fetch("ftp://127.0.0.1/x", 100, sink), common::Errc::InvalidArgument);
}

TEST_F(HttpFetcherTest, ReusesOneFetcherForManyRequests) {
  HttpFetcher fetcher;
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(fetcher.FetchBytes(Url("/file.bin"), 10000));
    EXPECT_FALSE(fetcher.FetchBytes(Url("/missing"), 10000));
  }
}

}  // namespace
}  // namespace upkeep::transport
