// The device's durable outbox of reports and incidents (EN 303 645 5.3-9): nothing is lost across
// restarts or failed deliveries, entries go out oldest first, refused ones are set aside.

#include "upkeep/agent/outbox.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "temp_dir.hpp"
#include "upkeep/common/errc.hpp"

namespace upkeep::agent {
namespace {

using namespace std::chrono_literals;

const Error kDown(common::Errc::NetworkError, "connection refused");
const Error kRefused(common::Errc::HttpStatus, "HTTP 400 bad_request");

// A server that records what it accepted and fails as told.
class FakeSender final : public OutboxSender {
 public:
  Result<void> Send(OutboxKind kind, std::string_view body) override {
    if (fail_next > 0) {
      --fail_next;
      return failure;
    }
    sent.emplace_back(kind, std::string(body));
    return Ok();
  }
  bool Retryable(const Error& e) const override { return e.code() == common::Errc::NetworkError; }
  int fail_next = 0;
  Error failure = kDown;
  std::vector<std::pair<OutboxKind, std::string>> sent;
};

class OutboxTest : public ::testing::Test {
 protected:
  Outbox Make(OutboxOptions o = {}) { return Outbox(dir_.path() / "outbox", fs_, clock_, o); }
  testing::TempDir dir_;
  LocalFilesystem fs_;
  FakeClock clock_{Clock::TimePoint(std::chrono::seconds(1764400000))};
};

// An entry is on disk when Enqueue returns: a new Outbox (after a restart) still delivers it,
// in the order queued, and removes it only once acknowledged.
TEST_F(OutboxTest, EntriesSurviveRestartAndGoOutOldestFirst) {
  {
    Outbox box = Make();
    ASSERT_TRUE(box.Enqueue(OutboxKind::kReport, "r-1", "{\"report_id\":\"r-1\"}"));
    ASSERT_TRUE(box.Enqueue(OutboxKind::kIncident, "i-1", "{\"incident_id\":\"i-1\"}"));
    ASSERT_TRUE(box.Enqueue(OutboxKind::kReport, "r-2", "{\"report_id\":\"r-2\"}"));
  }
  Outbox box = Make();
  FakeSender server;
  auto round = box.Deliver(server);
  ASSERT_TRUE(round) << round.error().ToString();
  EXPECT_EQ(round->delivered, 3u);
  EXPECT_EQ(round->pending, 0u);
  ASSERT_EQ(server.sent.size(), 3u);
  EXPECT_EQ(server.sent[0].second, "{\"report_id\":\"r-1\"}");
  EXPECT_EQ(server.sent[1].first, OutboxKind::kIncident);
  EXPECT_EQ(server.sent[2].second, "{\"report_id\":\"r-2\"}");
  EXPECT_TRUE(box.Pending()->empty());
}

// A server that cannot be reached keeps every entry; the next round waits, exponentially longer,
// and then delivers everything once.
TEST_F(OutboxTest, UnreachableServerKeepsEntriesAndBacksOff) {
  Outbox box = Make(OutboxOptions{1000, 65536, 60s, 600s});
  ASSERT_TRUE(box.Enqueue(OutboxKind::kIncident, "i-1", "{}"));
  ASSERT_TRUE(box.Enqueue(OutboxKind::kReport, "r-1", "{}"));
  FakeSender server;
  server.fail_next = 100;
  auto first = box.Deliver(server);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->delivered, 0u);
  EXPECT_EQ(first->pending, 2u);
  ASSERT_TRUE(first->retry_at);
  EXPECT_EQ(*first->retry_at, clock_.Now() + 60s);
  // Too early: nothing is tried.
  const int tries = server.fail_next;
  EXPECT_EQ(box.Deliver(server)->retry_at, first->retry_at);
  EXPECT_EQ(server.fail_next, tries);
  clock_.Set(*first->retry_at);
  EXPECT_EQ(*box.Deliver(server)->retry_at, clock_.Now() + 120s);
  for (int i = 0; i < 5; ++i) {
    clock_.Set(*box.Deliver(server)->retry_at);
  }
  auto capped = box.Deliver(server);
  EXPECT_EQ(*capped->retry_at, clock_.Now() + 600s);
  server.fail_next = 0;
  clock_.Set(*capped->retry_at);
  auto done = box.Deliver(server);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->delivered, 2u);
  EXPECT_FALSE(done->retry_at);
  EXPECT_EQ(server.sent.size(), 2u);
}

// An entry the server refuses for good is set aside and does not block the ones behind it.
TEST_F(OutboxTest, RefusedEntryMovesAsideAndQueueGoesOn) {
  Outbox box = Make();
  ASSERT_TRUE(box.Enqueue(OutboxKind::kReport, "r-bad", "not json"));
  ASSERT_TRUE(box.Enqueue(OutboxKind::kReport, "r-good", "{}"));
  FakeSender server;
  server.fail_next = 1;
  server.failure = kRefused;
  auto round = box.Deliver(server);
  ASSERT_TRUE(round);
  EXPECT_EQ(round->rejected, 1u);
  EXPECT_EQ(round->delivered, 1u);
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "outbox" / "rejected" /
                                      "0000000000000001-report-r-bad.json"));
  EXPECT_TRUE(box.Pending()->empty());
}

// Queuing the same ID twice queues it once; hostile IDs and oversized bodies are refused; files
// that are not entries are ignored.
TEST_F(OutboxTest, RefusesBadIdsAndOversizedBodiesAndQueuesAnIdOnce) {
  Outbox box = Make(OutboxOptions{1000, 16, 60s, 600s});
  ASSERT_TRUE(box.Enqueue(OutboxKind::kReport, "r-1", "{}"));
  ASSERT_TRUE(box.Enqueue(OutboxKind::kReport, "r-1", "{}"));
  EXPECT_EQ(box.Pending()->size(), 1u);
  for (std::string_view id : {"", "../x", "a/b", "id with space", "\xff"}) {
    auto r = box.Enqueue(OutboxKind::kReport, id, "{}");
    ASSERT_FALSE(r) << id;
    EXPECT_EQ(r.error().code(), common::Errc::InvalidArgument);
  }
  auto big = box.Enqueue(OutboxKind::kIncident, "i-1", std::string(17, 'x'));
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), common::Errc::InvalidArgument);
  std::ofstream(dir_.path() / "outbox" / "garbage.json") << "x";
  std::ofstream(dir_.path() / "outbox" / "99-report-x.json") << "x";
  EXPECT_EQ(box.Pending()->size(), 1u);
}

// Full: the oldest report goes first; incidents stay as long as reports can make room.
TEST_F(OutboxTest, FullOutboxDropsOldestReportBeforeAnyIncident) {
  Outbox box = Make(OutboxOptions{3, 65536, 60s, 600s});
  ASSERT_TRUE(box.Enqueue(OutboxKind::kIncident, "i-1", "{}"));
  ASSERT_TRUE(box.Enqueue(OutboxKind::kReport, "r-1", "{}"));
  ASSERT_TRUE(box.Enqueue(OutboxKind::kReport, "r-2", "{}"));
  ASSERT_TRUE(box.Enqueue(OutboxKind::kIncident, "i-2", "{}"));
  const auto pending = *box.Pending();
  ASSERT_EQ(pending.size(), 3u);
  EXPECT_EQ(pending[0], "0000000000000001-incident-i-1.json");
  EXPECT_EQ(pending[1], "0000000000000003-report-r-2.json");
  EXPECT_EQ(pending[2], "0000000000000004-incident-i-2.json");
}

}  // namespace
}  // namespace upkeep::agent
