// The local API over a real Unix socket in a temporary directory, with a fake backend.

#include <curl/curl.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>

#include "recording_backend.hpp"
#include "test_util.hpp"
#include "test_pki.hpp"
#include "upkeep/common/scratch_dir.hpp"
#include "upkeep/localapi/credential_store.hpp"
#include "upkeep/localapi/server.hpp"
#include "upkeep/metadata/canonical_json.hpp"

namespace upkeep::localapi {
namespace {

using metadata::Json;
using namespace std::chrono_literals;

using testing::kT0;

class FakeBackend : public testing::RecordingBackend {
 public:
  Result<SupportInfo> Support(const Peer& peer) override {
    Record(peer, "support");
    return SupportInfo{kT0 + std::chrono::days(365 * 5), false};
  }
  Result<std::vector<Notice>> Notices(const Peer& peer) override {
    Record(peer, "notices");
    return std::vector<Notice>{
        {"n1", "sec-2026-12", true, "Security update", "Fixes a flaw", kT0 + std::chrono::days(7)}};
  }
  Result<void> CheckNow(const Peer& peer) override {
    Record(peer, "check");
    std::lock_guard l(mu);
    if (refuse_check) return Error(Errc::Forbidden, "uid not in the update group");
    return Ok();
  }
  Result<PostponeResult> Postpone(const Peer& peer, const PostponeRequest& r) override {
    Record(peer, "postpone");
    if (r.update_id == "unknown") return Error(Errc::NotFound, "no update unknown in /var/lib");
    if (r.update_id == "capped") return Error(Errc::Conflict, "cap");
    return PostponeResult{r.update_id, r.until};
  }
  Result<InstallAccepted> Install(InstallRequest r) override {
    Record(r.peer, "install");
    char buf[64] = {};
    const ssize_t n = ::read(r.bundle.get(), buf, sizeof buf - 1);
    std::lock_guard l(mu);
    bundle_bytes = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
    if (fail_install)
      return Error(Errc::Rejected, "signature of target app.img by key 1234 does not verify");
    return InstallAccepted{"install-1"};
  }
  std::string bundle_bytes;
  bool fail_install = false;
  bool refuse_check = false;
};

struct HttpAnswer {
  int status = 0;  // 0: the connection closed without an answer
  std::string head;
  std::string body;
};

HttpAnswer ParseAnswer(const std::string& raw) {
  HttpAnswer a;
  const auto end = raw.find("\r\n\r\n");
  if (raw.size() < 12 || raw.compare(0, 9, "HTTP/1.1 ") != 0 || end == std::string::npos) return a;
  a.status = std::atoi(raw.substr(9, 3).c_str());
  a.head = raw.substr(0, end);
  a.body = raw.substr(end + 4);
  return a;
}

int Connect(const std::filesystem::path& socket_path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{10, 0};  // bounds every read: a hung server fails the test instead of hanging it
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

// Sends `raw` and reads until the server closes (or 10 s pass without a byte).
std::string Exchange(int fd, const std::string& raw) {
  std::size_t sent = 0;
  while (sent < raw.size()) {
    const ssize_t n = ::send(fd, raw.data() + sent, raw.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  std::string out;
  char buf[4096];
  for (int i = 0; i < 10000; ++i) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

std::string Request(const std::string& method, const std::string& target,
                    const std::string& body = "", const std::string& extra = "") {
  std::string r = method + " " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n";
  if (!body.empty() || method == "POST" || method == "PUT") {
    r +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  return r + extra + "\r\n" + body;
}

class LocalApiTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.path().empty()); }

  LocalApiOptions Options() {
    LocalApiOptions o;
    o.socket_path = socket_path();
    return o;
  }
  void StartServer(const LocalApiOptions& o) {
    auto s = LocalApiServer::Start(o, backend_);
    ASSERT_TRUE(s.has_value()) << s.error().message();
    server_ = std::move(s).value();
  }
  void StartServer() { StartServer(Options()); }
  std::filesystem::path socket_path() const { return dir_.path() / "agent.sock"; }

  HttpAnswer Send(const std::string& raw) {
    const int fd = Connect(socket_path());
    if (fd < 0) return {};
    const std::string out = Exchange(fd, raw);
    ::close(fd);
    return ParseAnswer(out);
  }
  Json Body(const HttpAnswer& a) {
    auto j = metadata::ParseJson(a.body);
    EXPECT_TRUE(j.has_value()) << a.body;
    return j ? *j : Json();
  }
  void ExpectError(const HttpAnswer& a, int status, const std::string& code) {
    EXPECT_EQ(a.status, status) << a.head << "\n" << a.body;
    if (a.status == 0) return;
    const Json j = Body(a);
    ASSERT_TRUE(j.is_object());
    EXPECT_EQ(j["error"], code) << a.body;
    EXPECT_TRUE(j["message"].is_string());
    EXPECT_EQ(j.size(), 2u);
  }

  ScratchDir dir_{"localapi"};
  FakeBackend backend_;
  std::unique_ptr<LocalApiServer> server_;
};

// ---- The socket file: access control is its mode and group (5.3-16).

TEST_F(LocalApiTest, CreatesSocketWithRequestedModeAndGroup) {
  auto o = Options();
  o.mode = 0620;
  if (::geteuid() == 0) o.group = 4321;
  StartServer(o);
  struct stat st {};
  ASSERT_EQ(::lstat(socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0620u);
  if (::geteuid() == 0) {
    EXPECT_EQ(st.st_gid, 4321u);
  }
}

TEST_F(LocalApiTest, DefaultModeIs0660) {
  StartServer();
  struct stat st {};
  ASSERT_EQ(::lstat(socket_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
}

TEST_F(LocalApiTest, ReplacesStaleSocket) {
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path().c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);  // the file stays; nobody listens: stale
  }
  StartServer();
  EXPECT_EQ(Send(Request("GET", "/v1/status")).status, 200);
}

// A symlink at the socket path is refused and neither it nor its target is touched.
TEST_F(LocalApiTest, RefusesSymlinkAtSocketPath) {
  const auto target = dir_.path() / "target";
  std::ofstream(target) << "keep";
  std::filesystem::create_symlink(target, socket_path());
  EXPECT_ERRC(LocalApiServer::Start(Options(), backend_), Errc::CannotListen);
  std::error_code ec;
  EXPECT_TRUE(std::filesystem::is_symlink(socket_path(), ec));
  std::ifstream in(target);
  std::string text;
  in >> text;
  EXPECT_EQ(text, "keep");
}

TEST_F(LocalApiTest, RefusesDanglingSymlinkAtSocketPath) {
  std::filesystem::create_symlink(dir_.path() / "nowhere", socket_path());
  EXPECT_ERRC(LocalApiServer::Start(Options(), backend_), Errc::CannotListen);
  std::error_code ec;
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "nowhere", ec));
}

TEST_F(LocalApiTest, RefusesRegularFileAtSocketPath) {
  std::ofstream(socket_path()) << "data";
  EXPECT_ERRC(LocalApiServer::Start(Options(), backend_), Errc::CannotListen);
  std::error_code ec;
  EXPECT_TRUE(std::filesystem::is_regular_file(socket_path(), ec));
}

TEST_F(LocalApiTest, RefusesSocketAnotherServerListensOn) {
  StartServer();
  FakeBackend other;
  EXPECT_ERRC(LocalApiServer::Start(Options(), other), Errc::CannotListen);
  EXPECT_EQ(Send(Request("GET", "/v1/status")).status, 200);
}

TEST_F(LocalApiTest, StopRemovesSocketAndRefusesNewConnections) {
  StartServer();
  server_->Stop();
  std::error_code ec;
  EXPECT_FALSE(std::filesystem::exists(socket_path(), ec));
  EXPECT_EQ(Connect(socket_path()), -1);
}

// ---- Endpoints.

TEST_F(LocalApiTest, DeviceAnswersModelHardwareAndComponents) {
  StartServer();
  const auto a = Send(Request("GET", "/v1/device"));
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_NE(a.head.find("Content-Type: application/json"), std::string::npos);
  const Json j = Body(a);
  EXPECT_EQ(j["model"], "Acme Thermostat T2");
  EXPECT_EQ(j["hardware"], "rev-c");
  ASSERT_EQ(j["components"].size(), 2u);
  EXPECT_EQ(j["components"][0]["name"], "firmware");
  EXPECT_EQ(j["components"][0]["version"], "1.4.2");
}

// The handler learns who connected, as the kernel reports it (SO_PEERCRED).
TEST_F(LocalApiTest, PassesPeerCredentialsToBackend) {
  StartServer();
  ASSERT_EQ(Send(Request("GET", "/v1/device")).status, 200);
  std::lock_guard l(backend_.mu);
  EXPECT_EQ(backend_.last_peer.uid, ::getuid());
  EXPECT_EQ(backend_.last_peer.gid, ::getgid());
  EXPECT_EQ(backend_.last_peer.pid, ::getpid());
}

TEST_F(LocalApiTest, SupportAnswersEndOfSupport) {
  StartServer();
  const auto a = Send(Request("GET", "/v1/support"));
  ASSERT_EQ(a.status, 200);
  const Json j = Body(a);
  EXPECT_EQ(j["support_until"], "2031-12-06T00:00:00Z");
  EXPECT_EQ(j["ended"], false);
}

TEST_F(LocalApiTest, StatusAnswersStateAndProgress) {
  StartServer();
  const auto a = Send(Request("GET", "/v1/status"));
  ASSERT_EQ(a.status, 200);
  const Json j = Body(a);
  EXPECT_EQ(j["state"], "downloading");
  EXPECT_EQ(j["update_id"], "sec-2026-12");
  EXPECT_EQ(j["progress"]["done"], 512);
  EXPECT_EQ(j["progress"]["total"], 2048);
  EXPECT_EQ(j["last_check"], "2026-12-07T00:00:00Z");
}

TEST_F(LocalApiTest, NoticesAnswersPendingNotices) {
  StartServer();
  const auto a = Send(Request("GET", "/v1/notices"));
  ASSERT_EQ(a.status, 200);
  const Json j = Body(a);
  ASSERT_EQ(j["notices"].size(), 1u);
  EXPECT_EQ(j["notices"][0]["kind"], "security");
  EXPECT_EQ(j["notices"][0]["install_by"], "2026-12-14T00:00:00Z");
}

TEST_F(LocalApiTest, PolicyGetAndPut) {
  StartServer();
  auto a = Send(Request("GET", "/v1/policy"));
  ASSERT_EQ(a.status, 200);
  EXPECT_EQ(Body(a)["auto_install"], true);
  a = Send(Request("PUT", "/v1/policy",
                   R"({"auto_install":false,"notifications":true,"security_auto_install":true,)"
                   R"("reboot_later":true})"));
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(Body(a)["auto_install"], false);
  EXPECT_EQ(Body(a)["reboot_later"], true);
  std::lock_guard l(backend_.mu);
  EXPECT_FALSE(backend_.policy.auto_install);
  EXPECT_TRUE(backend_.policy.reboot_later);
}

TEST_F(LocalApiTest, PolicyPutRequiresEveryField) {
  StartServer();
  ExpectError(Send(Request("PUT", "/v1/policy", R"({"auto_install":false})")), 400, "bad_request");
  EXPECT_TRUE(backend_.Calls().empty());
}

TEST_F(LocalApiTest, CheckNowIsAccepted) {
  StartServer();
  auto a = Send(Request("POST", "/v1/check"));
  EXPECT_EQ(a.status, 202) << a.body;
  a = Send(Request("POST", "/v1/check", "{}"));
  EXPECT_EQ(a.status, 202) << a.body;
  ExpectError(Send(Request("POST", "/v1/check", R"({"force":true})")), 400, "bad_request");
  EXPECT_EQ(backend_.Calls(), (std::vector<std::string>{"check", "check"}));
}

// The backend may refuse a peer an action (by uid or gid): 403, without the backend's reason.
TEST_F(LocalApiTest, BackendRefusalIsForbidden) {
  backend_.refuse_check = true;
  StartServer();
  const auto a = Send(Request("POST", "/v1/check"));
  ExpectError(a, 403, "forbidden");
  EXPECT_EQ(a.body.find("group"), std::string::npos);
}

TEST_F(LocalApiTest, PostponeForwardsIdAndTime) {
  StartServer();
  const auto a = Send(Request("POST", "/v1/postpone",
                              R"({"update_id":"sec-2026-12","until":"2026-12-10T08:00:00Z"})"));
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(Body(a)["until"], "2026-12-10T08:00:00Z");
  EXPECT_EQ(Body(a)["update_id"], "sec-2026-12");
}

// Backend errors become stable codes; the backend's message (paths, detail) is not passed on.
TEST_F(LocalApiTest, PostponeBackendErrorsMapToCodes) {
  StartServer();
  auto a = Send(
      Request("POST", "/v1/postpone", R"({"update_id":"unknown","until":"2026-12-10T08:00:00Z"})"));
  ExpectError(a, 404, "not_found");
  EXPECT_EQ(a.body.find("/var/lib"), std::string::npos);
  ExpectError(Send(Request("POST", "/v1/postpone",
                           R"({"update_id":"capped","until":"2026-12-10T08:00:00Z"})")),
              409, "conflict");
  ExpectError(
      Send(Request("POST", "/v1/postpone", R"({"update_id":"x","until":"2026-12-10 08:00:00"})")),
      400, "bad_request");
}

TEST_F(LocalApiTest, InstallPassesOpenBundleToBackend) {
  StartServer();
  const auto bundle = dir_.path() / "update.bundle";
  std::ofstream(bundle) << "BUNDLE-BYTES";
  const auto a = Send(Request("POST", "/v1/install", R"({"path":")" + bundle.string() + R"("})"));
  ASSERT_EQ(a.status, 202) << a.body;
  EXPECT_EQ(Body(a)["install_id"], "install-1");
  std::lock_guard l(backend_.mu);
  EXPECT_EQ(backend_.bundle_bytes, "BUNDLE-BYTES");
}

// EN 303 645 5.3-9: a failed install tells the initiator only "update rejected".
TEST_F(LocalApiTest, FailedInstallAnswersOnlyRejected) {
  backend_.fail_install = true;
  StartServer();
  const auto bundle = dir_.path() / "tampered.bundle";
  std::ofstream(bundle) << "TAMPERED";
  const auto a = Send(Request("POST", "/v1/install", R"({"path":")" + bundle.string() + R"("})"));
  EXPECT_EQ(a.status, 422);
  EXPECT_EQ(a.body, R"({"error":"rejected","message":"update rejected"})");
}

TEST_F(LocalApiTest, InstallRefusesRelativeMissingAndNonRegularPaths) {
  StartServer();
  ExpectError(Send(Request("POST", "/v1/install", R"({"path":"relative.bundle"})")), 400,
              "bad_request");
  ExpectError(Send(Request("POST", "/v1/install",
                           R"({"path":")" + (dir_.path() / "missing").string() + R"("})")),
              403, "forbidden");
  ExpectError(Send(Request("POST", "/v1/install", R"({"path":")" + dir_.path().string() + R"("})")),
              400, "bad_request");
  EXPECT_TRUE(backend_.Calls().empty());
}

// The daemon opens the bundle with the caller's identity: a file the caller cannot read is
// refused (403) and never reaches the backend; one it can read is installed.
TEST_F(LocalApiTest, InstallOpensBundleWithCallersRights) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to connect as another user";
  auto o = Options();
  o.mode = 0666;
  StartServer(o);
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0711), 0);
  const auto secret = dir_.path() / "root-only.bundle";
  const auto open = dir_.path() / "public.bundle";
  std::ofstream(secret) << "SECRET";
  std::ofstream(open) << "PUBLIC";
  ASSERT_EQ(::chmod(secret.c_str(), 0600), 0);
  ASSERT_EQ(::chmod(open.c_str(), 0644), 0);

  auto as_nobody = [&](const std::string& raw) {
    int pipefd[2];
    if (::pipe(pipefd) != 0) return HttpAnswer{};
    const std::string sock = socket_path().string();
    const pid_t pid = ::fork();
    if (pid == 0) {
      // Only system calls after fork: the parent has other threads.
      ::close(pipefd[0]);
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
      const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::memcpy(addr.sun_path, sock.c_str(), sock.size());
      if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) ::_exit(3);
      timeval tv{10, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      if (::write(fd, raw.data(), raw.size()) != static_cast<ssize_t>(raw.size())) ::_exit(4);
      char buf[4096];
      for (int i = 0; i < 1000; ++i) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        if (::write(pipefd[1], buf, static_cast<std::size_t>(n)) != n) ::_exit(5);
      }
      ::_exit(0);
    }
    ::close(pipefd[1]);
    std::string out;
    char buf[4096];
    for (int i = 0; i < 1000; ++i) {
      const ssize_t n = ::read(pipefd[0], buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(pipefd[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    return ParseAnswer(out);
  };

  const auto refused =
      as_nobody(Request("POST", "/v1/install", R"({"path":")" + secret.string() + R"("})"));
  ExpectError(refused, 403, "forbidden");
  EXPECT_TRUE(backend_.Calls().empty());

  const auto accepted =
      as_nobody(Request("POST", "/v1/install", R"({"path":")" + open.string() + R"("})"));
  EXPECT_EQ(accepted.status, 202) << accepted.body;
  std::lock_guard l(backend_.mu);
  EXPECT_EQ(backend_.bundle_bytes, "PUBLIC");
  EXPECT_EQ(backend_.last_peer.uid, 65534u);
}

TEST_F(LocalApiTest, EventsAnswersNdjsonAfterCursor) {
  StartServer();
  auto a = Send(Request("GET", "/v1/events?after=1"));
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_NE(a.head.find("application/x-ndjson"), std::string::npos);
  EXPECT_EQ(a.body,
            "{\"message\":\"step 2\",\"sequence\":2,\"time\":\"2026-12-07T00:00:02Z\",\"type\":"
            "\"state\"}\n{\"message\":\"step 3\",\"sequence\":3,\"time\":\"2026-12-07T00:00:03Z\","
            "\"type\":\"state\"}\n");
  ExpectError(Send(Request("GET", "/v1/events?after=x")), 400, "bad_request");
  ExpectError(Send(Request("GET", "/v1/events?since=1")), 400, "bad_request");
}

TEST_F(LocalApiTest, EventsAreBoundedByMaxEvents) {
  auto o = Options();
  o.max_events = 2;
  StartServer(o);
  const auto a = Send(Request("GET", "/v1/events"));
  ASSERT_EQ(a.status, 200);
  EXPECT_EQ(std::count(a.body.begin(), a.body.end(), '\n'), 2);
}

// ---- Malformed requests: exact codes, nothing reaches the backend.

TEST_F(LocalApiTest, UnknownPathIsNotFound) {
  StartServer();
  ExpectError(Send(Request("GET", "/v1/secrets")), 404, "not_found");
  ExpectError(Send(Request("GET", "/v1/status/")), 404, "not_found");
}

TEST_F(LocalApiTest, WrongMethodIsMethodNotAllowed) {
  StartServer();
  const auto a = Send(Request("DELETE", "/v1/policy"));
  ExpectError(a, 405, "method_not_allowed");
  EXPECT_NE(a.head.find("Allow: GET, PUT"), std::string::npos);
  ExpectError(Send(Request("GET", "/v1/install")), 405, "method_not_allowed");
  EXPECT_TRUE(backend_.Calls().empty());
}

TEST_F(LocalApiTest, MalformedJsonIsBadRequest) {
  StartServer();
  ExpectError(Send(Request("PUT", "/v1/policy", "{\"auto_install\":")), 400, "bad_request");
  ExpectError(Send(Request("POST", "/v1/postpone", "[]")), 400, "bad_request");
  ExpectError(Send(Request("POST", "/v1/postpone",
                           R"({"update_id":"a","update_id":"b","until":"2026-12-10T08:00:00Z"})")),
              400, "bad_request");
  EXPECT_TRUE(backend_.Calls().empty());
}

TEST_F(LocalApiTest, UnknownFieldIsBadRequest) {
  StartServer();
  const auto a =
      Send(Request("POST", "/v1/postpone",
                   R"({"update_id":"sec","until":"2026-12-10T08:00:00Z","forever":true})"));
  ExpectError(a, 400, "bad_request");
  EXPECT_NE(a.body.find("forever"), std::string::npos);
  EXPECT_TRUE(backend_.Calls().empty());
}

TEST_F(LocalApiTest, WrongTypeIsBadRequest) {
  StartServer();
  ExpectError(Send(Request("PUT", "/v1/policy",
                           R"({"auto_install":"no","notifications":true,)"
                           R"("security_auto_install":true,"reboot_later":true})")),
              400, "bad_request");
}

TEST_F(LocalApiTest, InvalidUtf8IsBadRequest) {
  StartServer();
  ExpectError(Send(Request("POST", "/v1/postpone",
                           "{\"update_id\":\"sec\xff\",\"until\":\"2026-12-10T08:00:00Z\"}")),
              400, "bad_request");
  EXPECT_TRUE(backend_.Calls().empty());
}

TEST_F(LocalApiTest, HugeBodyIsTooLarge) {
  StartServer();
  const std::string head =
      "POST /v1/postpone HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
      "Content-Length: 1000000\r\n\r\n";
  ExpectError(Send(head), 413, "too_large");
  EXPECT_TRUE(backend_.Calls().empty());
}

TEST_F(LocalApiTest, HugeHeaderIsTooLarge) {
  StartServer();
  ExpectError(
      Send(Request("GET", "/v1/status", "", "X-Pad: " + std::string(16 * 1024, 'a') + "\r\n")), 431,
      "too_large");
}

TEST_F(LocalApiTest, GarbageIsBadRequest) {
  StartServer();
  ExpectError(Send("NOT HTTP AT ALL\r\n\r\n"), 400, "bad_request");
}

TEST_F(LocalApiTest, QueryOnPlainEndpointIsBadRequest) {
  StartServer();
  ExpectError(Send(Request("GET", "/v1/status?verbose=1")), 400, "bad_request");
}

// A client that never finishes its request is cut off without an answer (slow-loris).
TEST_F(LocalApiTest, SlowClientIsDisconnected) {
  auto o = Options();
  o.request_timeout = 1s;
  o.idle_timeout = 1s;
  StartServer(o);
  const int fd = Connect(socket_path());
  ASSERT_GE(fd, 0);
  const std::string out = Exchange(fd, "GET /v1/status HTTP/1.1\r\nHost: local");
  ::close(fd);
  EXPECT_EQ(out, "");
  EXPECT_TRUE(backend_.Calls().empty());
  // The server still serves others.
  EXPECT_EQ(Send(Request("GET", "/v1/status")).status, 200);
}

// Connections beyond the cap are closed at once; the held one still works.
TEST_F(LocalApiTest, ConnectionsBeyondCapAreClosed) {
  auto o = Options();
  o.max_connections = 1;
  StartServer(o);
  const int held = Connect(socket_path());
  ASSERT_GE(held, 0);
  // Wait (bounded) until the server has accepted the held connection.
  for (int i = 0; i < 1000 && server_->stats().connections < 1; ++i)
    std::this_thread::sleep_for(5ms);
  ASSERT_EQ(server_->stats().connections, 1u);
  const int extra = Connect(socket_path());
  ASSERT_GE(extra, 0);
  EXPECT_EQ(Exchange(extra, Request("GET", "/v1/status")), "");
  ::close(extra);
  EXPECT_EQ(server_->stats().refused_connections, 1u);
  EXPECT_EQ(ParseAnswer(Exchange(held, Request("GET", "/v1/status"))).status, 200);
  ::close(held);
}

TEST_F(LocalApiTest, KeepAliveServesSeveralRequests) {
  StartServer();
  const int fd = Connect(socket_path());
  ASSERT_GE(fd, 0);
  const std::string two =
      "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n" + Request("GET", "/v1/device");
  const std::string out = Exchange(fd, two);
  ::close(fd);
  std::size_t count = 0;
  for (std::size_t pos = 0; (pos = out.find("HTTP/1.1 200", pos)) != std::string::npos; ++pos)
    ++count;
  EXPECT_EQ(count, 2u);
}

// Several threads and clients at once: every request gets its own, complete answer.
TEST_F(LocalApiTest, ServesConcurrentClients) {
  auto o = Options();
  o.threads = 2;
  StartServer(o);
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        const int fd = Connect(socket_path());
        if (fd < 0) continue;
        const auto a = ParseAnswer(Exchange(fd, Request("GET", "/v1/device")));
        ::close(fd);
        if (a.status == 200 && a.body.find("Acme Thermostat T2") != std::string::npos) ++ok;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok, 100);
}

// ---- The LAN listener (HTTPS, per-device credential).

struct CurlAnswer {
  long status = 0;
  std::string head;
  std::string body;
};

std::size_t Append(char* data, std::size_t size, std::size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

CurlAnswer Https(std::uint16_t port, const std::string& ca_pem, const std::string& method,
                 const std::string& path, const std::string& credential,
                 const std::string& body = "") {
  CurlAnswer a;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return a;
  const std::string url = "https://127.0.0.1:" + std::to_string(port) + path;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_blob ca{const_cast<char*>(ca_pem.data()), ca_pem.size(), CURL_BLOB_COPY};
  curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &ca);
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 20L);
  curl_slist* headers = nullptr;
  if (!credential.empty())
    headers = curl_slist_append(headers, ("Authorization: Bearer " + credential).c_str());
  headers = curl_slist_append(headers, "Content-Type: application/json");
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  if (!body.empty() || method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &Append);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &a.body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &Append);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &a.head);
  if (curl_easy_perform(curl) == CURLE_OK)
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &a.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return a;
}

class LanTest : public LocalApiTest {
 protected:
  void SetUp() override {
    LocalApiTest::SetUp();
    CredentialOptions cheap;
    cheap.t_cost = 1;
    cheap.m_cost_kib = 1024;
    auto store = CredentialStore::Open(dir_.path() / "credential.json", clock_, cheap);
    ASSERT_TRUE(store.has_value());
    store_.emplace(std::move(store).value());
    ASSERT_TRUE(store_->Set("correct horse battery").has_value());
    auto o = Options();
    o.lan = LanOptions{"127.0.0.1", 0, pki_.server.certificate_pem, pki_.server.key_pem, &*store_};
    StartServer(o);
    ASSERT_NE(server_->lan_port(), 0);
  }
  CurlAnswer Get(const std::string& path, const std::string& credential) {
    return Https(server_->lan_port(), pki_.server_ca.certificate_pem, "GET", path, credential);
  }
  std::string Code(const CurlAnswer& a) {
    auto j = metadata::ParseJson(a.body);
    return j && j->is_object() && (*j)["error"].is_string() ? (*j)["error"].get<std::string>()
                                                            : std::string();
  }

  static inline testing::TestPki pki_;
  FakeClock clock_{kT0};
  std::optional<CredentialStore> store_;
};

// EN 303 645 5.1-1: the LAN listener answers nothing without the device's credential.
TEST_F(LanTest, RequiresTheCredential) {
  auto a = Get("/v1/device", "");
  EXPECT_EQ(a.status, 401);
  EXPECT_EQ(Code(a), "unauthenticated");
  EXPECT_NE(a.head.find("WWW-Authenticate: Bearer"), std::string::npos);
  a = Get("/v1/device", "correct horse battery!");
  EXPECT_EQ(a.status, 401);
  EXPECT_EQ(Code(a), "unauthenticated");
  EXPECT_TRUE(backend_.Calls().empty());
  a = Get("/v1/device", "correct horse battery");
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_NE(a.body.find("Acme Thermostat T2"), std::string::npos);
  std::lock_guard l(backend_.mu);
  EXPECT_TRUE(backend_.last_peer.lan);
  EXPECT_EQ(backend_.last_peer.uid, static_cast<uid_t>(-1));
}

// EN 303 645 5.1-5: after 5 wrong credentials even the right one is refused until the lockout
// (on the store's clock) ends; the answer says when to retry.
TEST_F(LanTest, LocksOutAfterFiveFailures) {
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Get("/v1/status", "wrong guess!!").status, 401);
  auto a = Get("/v1/status", "correct horse battery");
  EXPECT_EQ(a.status, 429);
  EXPECT_EQ(Code(a), "locked_out");
  EXPECT_NE(a.head.find("Retry-After: 30"), std::string::npos) << a.head;
  EXPECT_TRUE(backend_.Calls().empty());
  clock_.Advance(30s);
  EXPECT_EQ(Get("/v1/status", "correct horse battery").status, 200);
}

// A network client has no file the daemon could open with its rights: install is refused.
TEST_F(LanTest, RefusesInstall) {
  const auto bundle = dir_.path() / "update.bundle";
  std::ofstream(bundle) << "BUNDLE";
  const auto a = Https(server_->lan_port(), pki_.server_ca.certificate_pem, "POST", "/v1/install",
                       "correct horse battery", R"({"path":")" + bundle.string() + R"("})");
  EXPECT_EQ(a.status, 403);
  EXPECT_EQ(Code(a), "forbidden");
  EXPECT_TRUE(backend_.Calls().empty());
}

TEST_F(LocalApiTest, LanWithoutCredentialStoreIsRefused) {
  auto o = Options();
  o.lan = LanOptions{};
  EXPECT_ERRC(LocalApiServer::Start(o, backend_), Errc::CannotListen);
  std::error_code ec;
  EXPECT_FALSE(std::filesystem::exists(socket_path(), ec));
}

TEST(LocalApiTime, FormatsAndParsesStrictly) {
  EXPECT_EQ(FormatTime(kT0 + 3661s), "2026-12-07T01:01:01Z");
  EXPECT_EQ(ParseTime("2026-12-07T01:01:01Z"), kT0 + 3661s);
  EXPECT_FALSE(ParseTime("2026-02-30T00:00:00Z").has_value());
  EXPECT_FALSE(ParseTime("2026-12-07T24:00:00Z").has_value());
  EXPECT_FALSE(ParseTime("2026-12-07T01:01:01+00:00").has_value());
  EXPECT_FALSE(ParseTime("+026-12-07T01:01:01Z").has_value());
}

}  // namespace
}  // namespace upkeep::localapi
