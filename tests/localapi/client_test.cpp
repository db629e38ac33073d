// The local API client against the real LocalApiServer (a scripted backend) and against a raw
// socket that answers with hostile bytes, all in a temporary directory (docs/local-api.md).

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "client_fakes.hpp"
#include "test_util.hpp"
#include "upkeep/common/scratch_dir.hpp"
#include "upkeep/localapi/client.hpp"
#include "upkeep/localapi/server.hpp"

namespace upkeep::localapi {
namespace {

using namespace std::chrono_literals;
using testing::HttpAnswer;
using testing::kT0;
using testing::RawServer;
using testing::ScriptedBackend;

class LocalApiClientTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }

  std::filesystem::path socket_path() const { return dir_.path() / "agent.sock"; }

  void StartServer() {
    LocalApiOptions o;
    o.socket_path = socket_path();
    auto s = LocalApiServer::Start(o, backend_);
    ASSERT_TRUE(s.has_value()) << s.error().message();
    server_ = std::move(s).value();
  }

  LocalApiClient Client(std::chrono::milliseconds timeout = 10s) const {
    LocalApiClientOptions o;
    o.socket_path = socket_path();
    o.request_timeout = timeout;
    o.max_body_bytes = 64 * 1024;
    return LocalApiClient(o);
  }

  void SetFailure(const std::string& call, Errc code) {
    std::lock_guard l(backend_.mu);
    backend_.fail = std::make_pair(call, code);
  }

  ScratchDir dir_{"localapi-client"};
  ScriptedBackend backend_;
  std::unique_ptr<LocalApiServer> server_;
};

// ---- Each endpoint, round trip through the real server.

TEST_F(LocalApiClientTest, DeviceRoundTrip) {
  StartServer();
  auto d = Client().Device();
  ASSERT_TRUE(d.has_value()) << d.error().ToString();
  EXPECT_EQ(d->model, "Acme Thermostat T2");
  EXPECT_EQ(d->hardware, "rev-c");
  ASSERT_EQ(d->components.size(), 2u);
  EXPECT_EQ(d->components[0].name, "firmware");
  EXPECT_EQ(d->components[0].version, "1.4.2");
  EXPECT_EQ(d->components[1].name, "app");
}

TEST_F(LocalApiClientTest, SupportRoundTripWithAndWithoutDate) {
  StartServer();
  auto s = Client().Support();
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ(s->support_until, kT0 + std::chrono::days(365 * 5));
  EXPECT_FALSE(s->ended);
  {
    std::lock_guard l(backend_.mu);
    backend_.support = SupportInfo{std::nullopt, true};
  }
  s = Client().Support();
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_FALSE(s->support_until.has_value());
  EXPECT_TRUE(s->ended);
}

TEST_F(LocalApiClientTest, StatusRoundTripWithAndWithoutProgress) {
  StartServer();
  auto s = Client().GetStatus();
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ(s->state, UpdateState::kDownloading);
  EXPECT_EQ(s->update_id, "sec-2026-12");
  ASSERT_TRUE(s->progress.has_value());
  EXPECT_EQ(s->progress->done, 512u);
  EXPECT_EQ(s->progress->total, 2048u);
  EXPECT_EQ(s->last_check, kT0);
  {
    std::lock_guard l(backend_.mu);
    backend_.status = Status{UpdateState::kAwaitingReboot, std::nullopt, std::nullopt, std::nullopt};
  }
  s = Client().GetStatus();
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ(s->state, UpdateState::kAwaitingReboot);
  EXPECT_FALSE(s->update_id.has_value());
  EXPECT_FALSE(s->progress.has_value());
  EXPECT_FALSE(s->last_check.has_value());
}

TEST_F(LocalApiClientTest, EveryStateNameRoundTrips) {
  StartServer();
  for (const auto state : {UpdateState::kIdle, UpdateState::kChecking, UpdateState::kDownloading,
                           UpdateState::kVerifying, UpdateState::kInstalling,
                           UpdateState::kAwaitingReboot}) {
    {
      std::lock_guard l(backend_.mu);
      backend_.status.state = state;
    }
    auto s = Client().GetStatus();
    ASSERT_TRUE(s.has_value()) << s.error().ToString();
    EXPECT_EQ(s->state, state) << ToString(state);
  }
}

TEST_F(LocalApiClientTest, NoticesRoundTrip) {
  {
    std::lock_guard l(backend_.mu);
    backend_.notices.push_back(Notice{"n2", "feat-1", false, "New dial", "", std::nullopt});
  }
  StartServer();
  auto n = Client().Notices();
  ASSERT_TRUE(n.has_value()) << n.error().ToString();
  ASSERT_EQ(n->size(), 2u);
  EXPECT_EQ((*n)[0].id, "n1");
  EXPECT_EQ((*n)[0].update_id, "sec-2026-12");
  EXPECT_TRUE((*n)[0].security);
  EXPECT_EQ((*n)[0].title, "Security update");
  EXPECT_EQ((*n)[0].text, "Fixes a flaw");
  EXPECT_EQ((*n)[0].install_by, kT0 + std::chrono::days(7));
  EXPECT_FALSE((*n)[1].security);
  EXPECT_EQ((*n)[1].text, "");
  EXPECT_FALSE((*n)[1].install_by.has_value());
}

TEST_F(LocalApiClientTest, PolicyGetAndSet) {
  StartServer();
  auto p = Client().GetPolicy();
  ASSERT_TRUE(p.has_value()) << p.error().ToString();
  EXPECT_EQ(*p, PolicySettings{});
  const PolicySettings wanted{false, false, true, true};
  auto set = Client().SetPolicy(wanted);
  ASSERT_TRUE(set.has_value()) << set.error().ToString();
  EXPECT_EQ(*set, wanted);
  std::lock_guard l(backend_.mu);
  EXPECT_EQ(backend_.policy, wanted);
}

TEST_F(LocalApiClientTest, CheckNowIsAccepted) {
  StartServer();
  ASSERT_TRUE(Client().CheckNow().has_value());
  std::lock_guard l(backend_.mu);
  EXPECT_EQ(backend_.calls.back(), "check");
}

TEST_F(LocalApiClientTest, PostponeRoundTripAndCap) {
  StartServer();
  const PostponeRequest req{"sec-2026-12", kT0 + std::chrono::days(3) + std::chrono::seconds(5)};
  auto r = Client().Postpone(req);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->update_id, "sec-2026-12");
  EXPECT_EQ(r->until, req.until);
  {
    std::lock_guard l(backend_.mu);
    ASSERT_TRUE(backend_.postponed.has_value());
    EXPECT_EQ(backend_.postponed->until, req.until);
    backend_.postpone_cap = kT0 + std::chrono::days(1);
  }
  r = Client().Postpone(req);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->until, kT0 + std::chrono::days(1));
}

TEST_F(LocalApiClientTest, InstallSendsPathAndTheDaemonOpensTheBundle) {
  StartServer();
  const auto bundle = dir_.path() / "update.bundle";
  std::ofstream(bundle) << "BUNDLE-BYTES";
  auto r = Client().Install(bundle.string());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->install_id, "install-1");
  std::lock_guard l(backend_.mu);
  EXPECT_EQ(backend_.install_path, bundle.string());
  EXPECT_EQ(backend_.bundle_bytes, "BUNDLE-BYTES");
}

TEST_F(LocalApiClientTest, EventsAfterN) {
  {
    std::lock_guard l(backend_.mu);
    for (int i = 0; i < 5; ++i) backend_.AddEvent("state", "step " + std::to_string(i + 1));
  }
  StartServer();
  auto all = Client().Events(0);
  ASSERT_TRUE(all.has_value()) << all.error().ToString();
  ASSERT_EQ(all->size(), 5u);
  EXPECT_EQ((*all)[0].sequence, 1u);
  EXPECT_EQ((*all)[0].time, kT0 + std::chrono::seconds(1));
  EXPECT_EQ((*all)[0].type, "state");
  EXPECT_EQ((*all)[0].message, "step 1");
  auto later = Client().Events(3);
  ASSERT_TRUE(later.has_value()) << later.error().ToString();
  ASSERT_EQ(later->size(), 2u);
  EXPECT_EQ((*later)[0].sequence, 4u);
  auto none = Client().Events(5);
  ASSERT_TRUE(none.has_value()) << none.error().ToString();
  EXPECT_TRUE(none->empty());
}

// ---- Errors: the server's answers map back to exactly the backend's codes.

TEST_F(LocalApiClientTest, BackendErrorsMapBackExactly) {
  StartServer();
  const std::pair<Errc, Errc> cases[] = {
      {Errc::InvalidArgument, Errc::InvalidArgument}, {Errc::NotFound, Errc::NotFound},
      {Errc::Conflict, Errc::Conflict},               {Errc::Forbidden, Errc::Forbidden},
      {Errc::Unavailable, Errc::Unavailable},         {Errc::CannotListen, Errc::Internal},
  };
  for (const auto& [backend_code, client_code] : cases) {
    SetFailure("*", backend_code);
    const auto client = Client();
    EXPECT_ERRC(client.Device(), client_code);
    EXPECT_ERRC(client.Support(), client_code);
    EXPECT_ERRC(client.GetStatus(), client_code);
    EXPECT_ERRC(client.Notices(), client_code);
    EXPECT_ERRC(client.GetPolicy(), client_code);
    EXPECT_ERRC(client.SetPolicy(PolicySettings{}), client_code);
    EXPECT_ERRC(client.CheckNow(), client_code);
    EXPECT_ERRC(client.Postpone(PostponeRequest{"u", kT0}), client_code);
    EXPECT_ERRC(client.Events(0), client_code);
    // The backend's detail never reaches the client.
    auto r = client.GetStatus();
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().message().find("secret"), std::string::npos) << r.error().message();
  }
}

// EN 303 645 5.3-9: a failed install is "update rejected" and nothing more (docs/local-api.md).
TEST_F(LocalApiClientTest, FailedInstallIsRejectedWithoutDetail) {
  {
    std::lock_guard l(backend_.mu);
    backend_.reject_install = true;
  }
  StartServer();
  const auto bundle = dir_.path() / "bad.bundle";
  std::ofstream(bundle) << "x";
  auto r = Client().Install(bundle.string());
  EXPECT_ERRC(r, Errc::Rejected);
  EXPECT_EQ(r.error().message(), "update rejected");
}

TEST_F(LocalApiClientTest, InstallOfMissingFileIsForbiddenAndDirectoryInvalid) {
  StartServer();
  EXPECT_ERRC(Client().Install((dir_.path() / "missing").string()), Errc::Forbidden);
  EXPECT_ERRC(Client().Install(dir_.path().string()), Errc::InvalidArgument);
}

TEST_F(LocalApiClientTest, RefusesBadArgumentsWithoutAsking) {
  // No server: a request that left the client would fail with DaemonNotRunning.
  EXPECT_ERRC(Client().Install("relative/update.bundle"), Errc::InvalidArgument);
  EXPECT_ERRC(Client().Install(""), Errc::InvalidArgument);
  EXPECT_ERRC(Client().Install("/" + std::string(4096, 'a')), Errc::InvalidArgument);
  EXPECT_ERRC(Client().Install(std::string("/a\0b", 4)), Errc::InvalidArgument);
  EXPECT_ERRC(Client().Postpone(PostponeRequest{"", kT0}), Errc::InvalidArgument);
  EXPECT_ERRC(Client().Postpone(PostponeRequest{std::string(257, 'u'), kT0}),
              Errc::InvalidArgument);
}

// ---- No daemon.

TEST_F(LocalApiClientTest, NoSocketIsDaemonNotRunning) {
  EXPECT_ERRC(Client().GetStatus(), Errc::DaemonNotRunning);
}

TEST_F(LocalApiClientTest, StaleSocketIsDaemonNotRunning) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path().c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);  // the file stays; nobody listens
  EXPECT_ERRC(Client().GetStatus(), Errc::DaemonNotRunning);
}

TEST_F(LocalApiClientTest, RegularFileAtSocketPathIsDaemonNotRunning) {
  std::ofstream(socket_path()) << "not a socket";
  EXPECT_ERRC(Client().GetStatus(), Errc::DaemonNotRunning);
}

TEST_F(LocalApiClientTest, StoppedServerIsDaemonNotRunning) {
  StartServer();
  ASSERT_TRUE(Client().GetStatus().has_value());
  server_->Stop(0ms);
  EXPECT_ERRC(Client().GetStatus(), Errc::DaemonNotRunning);
}

// A daemon at its connection limit closes further connections at once: busy, not absent.
TEST_F(LocalApiClientTest, ServerAtConnectionLimitIsUnavailable) {
  LocalApiOptions o;
  o.socket_path = socket_path();
  o.max_connections = 1;
  auto s = LocalApiServer::Start(o, backend_);
  ASSERT_TRUE(s.has_value()) << s.error().message();
  server_ = std::move(s).value();
  // Hold the one connection: a keep-alive request, answered, then idle.
  const int held = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(held, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path().c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::connect(held, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  const std::string req = "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(held, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
  pollfd p{held, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10'000), 1);
  char buf[4096];
  ASSERT_GT(::recv(held, buf, sizeof buf, 0), 0);
  EXPECT_ERRC(Client().GetStatus(), Errc::Unavailable);
  ::close(held);
}

TEST_F(LocalApiClientTest, TooLongSocketPathIsInvalidArgument) {
  LocalApiClientOptions o;
  o.socket_path = "/tmp/" + std::string(200, 's');
  EXPECT_ERRC(LocalApiClient(o).GetStatus(), Errc::InvalidArgument);
}

// ---- Hostile answers: every one an exact error, never a crash or a hang.

struct HostileCase {
  const char* name;
  std::string answer;
  Errc expected;
};

class HostileAnswerTest : public LocalApiClientTest {
 protected:
  Result<Status> StatusFrom(const std::string& answer, bool hang = false,
                            std::size_t stream_bytes = 0,
                            std::chrono::milliseconds timeout = 10s) {
    std::filesystem::remove(socket_path());
    RawServer raw(socket_path(), answer, hang, stream_bytes);
    EXPECT_TRUE(raw.ok());
    return Client(timeout).GetStatus();
  }
};

const std::string kGoodStatus =
    R"({"state":"idle","update_id":null,"progress":null,"last_check":null})";

TEST_F(HostileAnswerTest, EachMalformedAnswerIsAnExactError) {
  const auto err = [](const std::string& code) {
    return R"({"error":")" + code + R"(","message":"text from the server"})";
  };
  const HostileCase cases[] = {
      {"not http", "garbage\r\n\r\n", Errc::ProtocolError},
      {"http/1.0", "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                       std::to_string(kGoodStatus.size()) + "\r\n\r\n" + kGoodStatus,
       Errc::ProtocolError},
      {"malformed json", HttpAnswer(200, R"({"state":"idle",)"), Errc::ProtocolError},
      {"not an object", HttpAnswer(200, "[1,2]"), Errc::ProtocolError},
      {"duplicate key", HttpAnswer(200, R"({"state":"idle","state":"idle","update_id":null,)"
                                        R"("progress":null,"last_check":null})"),
       Errc::ProtocolError},
      {"invalid utf-8",
       HttpAnswer(200, "{\"state\":\"idle\",\"update_id\":\"\xff\xfe\",\"progress\":null,"
                       "\"last_check\":null}"),
       Errc::ProtocolError},
      {"missing field", HttpAnswer(200, R"({"state":"idle","update_id":null,"progress":null})"),
       Errc::ProtocolError},
      {"wrong type", HttpAnswer(200, R"({"state":"idle","update_id":7,"progress":null,)"
                                     R"("last_check":null})"),
       Errc::ProtocolError},
      {"unknown state", HttpAnswer(200, R"({"state":"exploded","update_id":null,)"
                                        R"("progress":null,"last_check":null})"),
       Errc::ProtocolError},
      {"bad time", HttpAnswer(200, R"({"state":"idle","update_id":null,"progress":null,)"
                                   R"("last_check":"yesterday"})"),
       Errc::ProtocolError},
      {"negative progress", HttpAnswer(200, R"({"state":"idle","update_id":null,)"
                                            R"("progress":{"done":-1,"total":2},)"
                                            R"("last_check":null})"),
       Errc::ProtocolError},
      {"wrong content type", HttpAnswer(200, kGoodStatus, "text/html"), Errc::ProtocolError},
      {"unexpected 2xx", HttpAnswer(201, kGoodStatus), Errc::ProtocolError},
      {"truncated body",
       "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"st",
       Errc::ProtocolError},
      {"declared too large",
       "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n",
       Errc::ProtocolError},
      {"header too large",
       "HTTP/1.1 200 OK\r\nX-Filler: " + std::string(20000, 'h') + "\r\n\r\n",
       Errc::ProtocolError},
      {"closed without answer", "", Errc::Unavailable},
      {"400", HttpAnswer(400, err("bad_request")), Errc::InvalidArgument},
      {"401", HttpAnswer(401, err("unauthenticated")), Errc::Unauthenticated},
      {"403", HttpAnswer(403, err("forbidden")), Errc::Forbidden},
      {"404", HttpAnswer(404, err("not_found")), Errc::NotFound},
      {"409", HttpAnswer(409, err("conflict")), Errc::Conflict},
      {"413", HttpAnswer(413, err("too_large")), Errc::InvalidArgument},
      {"422", HttpAnswer(422, err("rejected")), Errc::Rejected},
      {"429", HttpAnswer(429, err("locked_out")), Errc::LockedOut},
      {"431", HttpAnswer(431, err("too_large")), Errc::InvalidArgument},
      {"500", HttpAnswer(500, err("internal")), Errc::Internal},
      {"503", HttpAnswer(503, err("unavailable")), Errc::Unavailable},
      {"405", HttpAnswer(405, err("method_not_allowed")), Errc::ProtocolError},
      {"unknown status", HttpAnswer(418, err("teapot")), Errc::ProtocolError},
      {"status and error disagree", HttpAnswer(409, err("forbidden")), Errc::ProtocolError},
      {"error body not json", HttpAnswer(500, "<html>oops</html>"), Errc::ProtocolError},
      {"error without message", HttpAnswer(409, R"({"error":"conflict"})"), Errc::ProtocolError},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_ERRC(StatusFrom(c.answer), c.expected);
  }
}

TEST_F(HostileAnswerTest, UnknownAnswerFieldsAreIgnored) {
  auto s = StatusFrom(HttpAnswer(
      200, R"({"state":"verifying","update_id":"u1","progress":{"done":1,"total":2,"x":1},)"
           R"("last_check":"2026-12-07T00:00:00Z","new_field":{"a":[1]}})"));
  ASSERT_TRUE(s.has_value()) << s.error().ToString();
  EXPECT_EQ(s->state, UpdateState::kVerifying);
  EXPECT_EQ(s->update_id, "u1");
  EXPECT_EQ(s->last_check, kT0);
}

TEST_F(HostileAnswerTest, RejectedCarriesNoServerText) {
  auto s = StatusFrom(
      HttpAnswer(422, R"({"error":"rejected","message":"signature by key 1234 is bad"})"));
  EXPECT_ERRC(s, Errc::Rejected);
  EXPECT_EQ(s.error().message(), "update rejected");
}

TEST_F(HostileAnswerTest, HugeStreamedBodyStopsAtTheLimit) {
  // A chunked body without end: the client stops at its 64 KiB limit.
  const std::string head =
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
      "100000\r\n";
  EXPECT_ERRC(StatusFrom(head, false, 8 * 1024 * 1024), Errc::ProtocolError);
}

TEST_F(HostileAnswerTest, ServerThatNeverAnswersTimesOut) {
  EXPECT_ERRC(StatusFrom("", true, 0, 200ms), Errc::Timeout);
}

TEST_F(HostileAnswerTest, ServerThatStallsMidAnswerTimesOut) {
  // Part of the head, then nothing: the raw server waits for the client to go away.
  std::filesystem::remove(socket_path());
  {
    // Not a RawServer: it must send a partial answer and then hang.
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path().c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(fd, 1), 0);
    std::thread t([fd] {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 10'000) <= 0) return;
      const int c = ::accept(fd, nullptr, nullptr);
      if (c < 0) return;
      const char partial[] = "HTTP/1.1 200 OK\r\nContent-Le";
      (void)::send(c, partial, sizeof partial - 1, MSG_NOSIGNAL);
      char buf[256];
      for (int i = 0; i < 100; ++i) {
        pollfd q{c, POLLIN, 0};
        if (::poll(&q, 1, 10'000) <= 0) break;
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
      }
      ::close(c);
    });
    EXPECT_ERRC(Client(200ms).GetStatus(), Errc::Timeout);
    t.join();
    ::close(fd);
  }
}

// ---- The answer parsers on their own.

TEST(LocalApiAnswerParsers, EventsMustBeOrderedLinesAboveAfter) {
  const std::string e1 = R"({"sequence":4,"time":"2026-12-07T00:00:04Z","type":"state","message":"a"})";
  const std::string e2 = R"({"sequence":5,"time":"2026-12-07T00:00:05Z","type":"state","message":"b"})";
  auto ok = ParseEventsAnswer(e1 + "\n" + e2 + "\n", 3);
  ASSERT_TRUE(ok.has_value()) << ok.error().ToString();
  EXPECT_EQ(ok->size(), 2u);
  EXPECT_TRUE(ParseEventsAnswer("", 3).has_value());
  EXPECT_ERRC(ParseEventsAnswer(e2 + "\n" + e1 + "\n", 3), Errc::ProtocolError);
  EXPECT_ERRC(ParseEventsAnswer(e1 + "\n" + e1 + "\n", 3), Errc::ProtocolError);
  EXPECT_ERRC(ParseEventsAnswer(e1 + "\n", 4), Errc::ProtocolError);
  EXPECT_ERRC(ParseEventsAnswer(e1, 3), Errc::ProtocolError);
  EXPECT_ERRC(ParseEventsAnswer(e1 + "\n\n", 3), Errc::ProtocolError);
  EXPECT_ERRC(ParseEventsAnswer("[]\n", 3), Errc::ProtocolError);
}

TEST(LocalApiAnswerParsers, OtherAnswersAreStrict) {
  EXPECT_ERRC(ParseCheckAnswer(R"({"accepted":false})"), Errc::ProtocolError);
  EXPECT_TRUE(ParseCheckAnswer(R"({"accepted":true})").has_value());
  EXPECT_ERRC(ParseInstallAnswer(R"({"install_id":""})"), Errc::ProtocolError);
  EXPECT_ERRC(ParsePolicyAnswer(R"({"auto_install":true,"notifications":true,)"
                                R"("security_auto_install":"yes","reboot_later":false})"),
              Errc::ProtocolError);
  EXPECT_ERRC(ParseNoticesAnswer(R"({"notices":[{"id":"n","update_id":"u","kind":"other",)"
                                 R"("title":"t","text":"x","install_by":null}]})"),
              Errc::ProtocolError);
  EXPECT_ERRC(ParseDeviceAnswer(R"({"model":"m","hardware":"h","components":[7]})"),
              Errc::ProtocolError);
  EXPECT_ERRC(ParsePostponeAnswer(R"({"update_id":"u","until":"2026-02-30T00:00:00Z"})"),
              Errc::ProtocolError);
  EXPECT_ERRC(ParseSupportAnswer(R"({"ended":false})"), Errc::ProtocolError);
}

}  // namespace
}  // namespace upkeep::localapi
