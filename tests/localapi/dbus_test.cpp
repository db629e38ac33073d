// The local API on D-Bus (docs/local-api.md, "D-Bus interface"): a private dbus-daemon per test
// suite, listening on a socket in a temporary directory, a fake backend, and an sdbus-c++ client
// proxy. Skipped cleanly when no dbus-daemon binary exists.

#include "upkeep/localapi/dbus.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sdbus-c++/sdbus-c++.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "recording_backend.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/localapi/server.hpp"

extern char** environ;

namespace upkeep::localapi {
namespace {

namespace fs = std::filesystem;
using upkeep::testing::TempDir;

constexpr auto kWait = std::chrono::seconds(5);
using testing::kT0;

// The dbus-daemon binary on PATH (or in /usr/bin), or empty.
std::string FindProgram(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::string all = path;
    std::size_t start = 0;
    while (start <= all.size()) {
      const std::size_t end = std::min(all.find(':', start), all.size());
      if (end > start) dirs.push_back(all.substr(start, end - start));
      start = end + 1;
    }
  }
  dirs.push_back("/usr/bin");
  dirs.push_back("/bin");
  for (const std::string& d : dirs) {
    const std::string candidate = d + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

// Runs `argv` with stdout to a pipe and stderr to /dev/null. Returns the pid or -1.
pid_t Spawn(const std::vector<std::string>& argv, int* stdout_fd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    return -1;
  }
  *stdout_fd = fds[0];
  return pid;
}

// Reads from `fd` until `stop` is seen, EOF or kWait has passed.
std::string ReadUntil(int fd, char stop) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (out.find(stop) == std::string::npos && out.size() < 64 * 1024) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

// Waits for `pid` for at most kWait, then kills it. Returns the exit status or -1.
int Reap(pid_t pid, bool terminate) {
  if (terminate) ::kill(pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (r < 0) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return -1;
}

// A dbus-daemon of its own, configured by `config` (a file holding a <busconfig>).
class BusDaemon {
 public:
  static std::unique_ptr<BusDaemon> Start(const std::string& binary, const fs::path& config) {
    int out = -1;
    const pid_t pid =
        Spawn({binary, "--config-file=" + config.string(), "--nofork", "--print-address"}, &out);
    if (pid < 0) return nullptr;
    std::string address = ReadUntil(out, '\n');
    ::close(out);
    if (address.find('\n') == std::string::npos) {
      Reap(pid, true);
      return nullptr;
    }
    address.resize(address.find('\n'));
    return std::unique_ptr<BusDaemon>(new BusDaemon(pid, address));
  }
  ~BusDaemon() { Reap(pid_, true); }
  BusDaemon(const BusDaemon&) = delete;
  BusDaemon& operator=(const BusDaemon&) = delete;
  [[nodiscard]] const std::string& address() const { return address_; }

 private:
  BusDaemon(pid_t pid, std::string address) : pid_(pid), address_(std::move(address)) {}
  pid_t pid_;
  std::string address_;
};

// A session-type bus on `socket` that lets every connection own names and call anything.
void WriteOpenBusConfig(const fs::path& config, const fs::path& socket) {
  std::ofstream(config) << R"(<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=)" << socket.string()
                        << R"(</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
)";
}

class FakeBackend : public testing::RecordingBackend {
 public:
  FakeBackend() { last_event = 5; }
  Result<SupportInfo> Support(const Peer& peer) override {
    Record(peer, "support");
    return SupportInfo{kT0 + std::chrono::days(365), false};
  }
  Result<std::vector<Notice>> Notices(const Peer& peer) override {
    Record(peer, "notices");
    return std::vector<Notice>{
        {"n1", "sec-2026-12", true, "Security update", "Fixes a flaw", kT0 + std::chrono::days(7)},
        {"n2", "feat-1", false, "New feature", "Dark mode", std::nullopt}};
  }
  Result<void> CheckNow(const Peer& peer) override {
    Record(peer, "check");
    if (on_check) on_check();
    std::lock_guard l(mu);
    if (check_error) return Error(*check_error, "uid 1000 not in /etc/upkeep/groups");
    return Ok();
  }
  Result<PostponeResult> Postpone(const Peer& peer, const PostponeRequest& r) override {
    Record(peer, "postpone");
    return PostponeResult{r.update_id, r.until - std::chrono::days(1)};
  }
  Result<InstallAccepted> Install(InstallRequest r) override {
    Record(r.peer, "install");
    char buf[64] = {};
    const ssize_t n = ::pread(r.bundle.get(), buf, sizeof buf - 1, 0);
    std::lock_guard l(mu);
    bundle_bytes = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
    install_path = r.path;
    if (fail_install)
      return Error(Errc::Rejected, "signature of target app.img by key 1234 does not verify");
    return InstallAccepted{"install-1"};
  }
  std::string bundle_bytes;
  std::string install_path;
  bool fail_install = false;
  std::optional<Errc> check_error;
  std::function<void()> on_check;  // set before the first call
};

// What a failed call answered.
struct CallError {
  std::string name;
  std::string message;
};
template <typename F>
std::optional<CallError> ErrorOf(F&& f) {
  try {
    f();
    return std::nullopt;
  } catch (const sdbus::Error& e) {
    return CallError{e.getName(), e.getMessage()};
  }
}

using Components = std::vector<sdbus::Struct<std::string, std::string>>;
using NoticeList = std::vector<
    sdbus::Struct<std::string, std::string, bool, std::string, std::string, std::string>>;
using EventList = std::vector<sdbus::Struct<std::uint64_t, std::string, std::string, std::string>>;
using Dict = std::map<std::string, sdbus::Variant>;
using PolicyDict = std::map<std::string, bool>;

// A method call on the service with a bounded wait (sdbus-c++ sends it when the statement ends).
#define Call(method) proxy_->callMethod(method).onInterface(kDbusInterface).withTimeout(kWait)

class DbusTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    binary_ = new std::string(FindProgram("dbus-daemon"));
    if (binary_->empty()) return;
    dir_ = new TempDir();
    WriteOpenBusConfig(*dir_ / "bus.conf", *dir_ / "bus");
    daemon_ = BusDaemon::Start(*binary_, *dir_ / "bus.conf").release();
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
    delete dir_;
    dir_ = nullptr;
    delete binary_;
    binary_ = nullptr;
  }

  void SetUp() override {
    if (binary_->empty()) GTEST_SKIP() << "no dbus-daemon binary";
    ASSERT_NE(daemon_, nullptr) << "dbus-daemon did not start";
    auto service = DbusService::Start(Options(), backend_);
    ASSERT_TRUE(service.has_value()) << service.error().ToString();
    service_ = std::move(service).value();
    client_ = sdbus::createSessionBusConnectionWithAddress(daemon_->address());
    proxy_ = sdbus::createProxy(*client_, kDbusName, kDbusObjectPath);
  }
  void TearDown() override {
    proxy_.reset();
    client_.reset();
    service_.reset();
  }

  static DbusOptions Options() {
    DbusOptions o;
    o.bus = DbusBus::kAddress;
    o.address = daemon_->address();
    o.max_events = 3;
    return o;
  }

  static std::string* binary_;
  static TempDir* dir_;
  static BusDaemon* daemon_;
  FakeBackend backend_;
  std::unique_ptr<DbusService> service_;
  std::unique_ptr<sdbus::IConnection> client_;
  std::unique_ptr<sdbus::IProxy> proxy_;
};
std::string* DbusTest::binary_ = nullptr;
TempDir* DbusTest::dir_ = nullptr;
BusDaemon* DbusTest::daemon_ = nullptr;

TEST_F(DbusTest, GetDeviceAnswersModelHardwareAndComponents) {
  std::string model, hardware;
  Components components;
  Call("GetDevice").storeResultsTo(model, hardware, components);
  EXPECT_EQ(model, "Acme Thermostat T2");
  EXPECT_EQ(hardware, "rev-c");
  ASSERT_EQ(components.size(), 2u);
  EXPECT_EQ(std::get<0>(components[1]), "app");
  EXPECT_EQ(std::get<1>(components[1]), "2.0.0");
}

TEST_F(DbusTest, GetSupportAnswersTheEndAsUtcTime) {
  std::string until;
  bool ended = true;
  Call("GetSupport").storeResultsTo(until, ended);
  EXPECT_EQ(until, "2027-12-07T00:00:00Z");
  EXPECT_FALSE(ended);
}

TEST_F(DbusTest, GetStatusAnswersADictionary) {
  Dict status;
  Call("GetStatus").storeResultsTo(status);
  EXPECT_EQ(status.at("state").get<std::string>(), "downloading");
  EXPECT_EQ(status.at("update_id").get<std::string>(), "sec-2026-12");
  const auto progress = status.at("progress").get<sdbus::Struct<std::uint64_t, std::uint64_t>>();
  EXPECT_EQ(std::get<0>(progress), 512u);
  EXPECT_EQ(std::get<1>(progress), 2048u);
  EXPECT_EQ(status.at("last_check").get<std::string>(), "2026-12-07T00:00:00Z");
}

TEST_F(DbusTest, GetNoticesAnswersEveryNoticeWithEmptyTimeWhenAbsent) {
  NoticeList notices;
  Call("GetNotices").storeResultsTo(notices);
  ASSERT_EQ(notices.size(), 2u);
  EXPECT_EQ(std::get<0>(notices[0]), "n1");
  EXPECT_TRUE(std::get<2>(notices[0]));
  EXPECT_EQ(std::get<5>(notices[0]), "2026-12-14T00:00:00Z");
  EXPECT_FALSE(std::get<2>(notices[1]));
  EXPECT_EQ(std::get<5>(notices[1]), "");
}

TEST_F(DbusTest, SetPolicyStoresAndGetPolicyReadsBack) {
  PolicyDict in{{"auto_install", false},
                {"notifications", true},
                {"security_auto_install", true},
                {"reboot_later", true}};
  PolicyDict answered;
  Call("SetPolicy").withArguments(in).storeResultsTo(answered);
  EXPECT_EQ(answered, in);
  PolicyDict read;
  Call("GetPolicy").storeResultsTo(read);
  EXPECT_EQ(read, in);
  EXPECT_FALSE(backend_.policy.auto_install);
  EXPECT_TRUE(backend_.policy.reboot_later);
}

// A policy with a key missing or an unknown key is refused before the backend sees it.
TEST_F(DbusTest, SetPolicyRefusesMissingOrUnknownKeys) {
  PolicyDict missing{{"auto_install", false}, {"notifications", true}, {"reboot_later", true}};
  auto e = ErrorOf([&] { Call("SetPolicy").withArguments(missing); });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->name, "org.upkeep.Agent1.Error.InvalidArgument");
  PolicyDict unknown{{"auto_install", false},
                     {"notifications", true},
                     {"security_auto_install", true},
                     {"reboot_now", true}};
  e = ErrorOf([&] { Call("SetPolicy").withArguments(unknown); });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->name, "org.upkeep.Agent1.Error.InvalidArgument");
  EXPECT_TRUE(backend_.Calls().empty());
}

TEST_F(DbusTest, CheckNowReachesBackend) {
  Call("CheckNow");
  EXPECT_EQ(backend_.Calls(), std::vector<std::string>{"check"});
}

TEST_F(DbusTest, PostponeAnswersTheDateInForce) {
  std::string id, until;
  Call("Postpone")
      .withArguments(std::string("sec-2026-12"), std::string("2026-12-20T00:00:00Z"))
      .storeResultsTo(id, until);
  EXPECT_EQ(id, "sec-2026-12");
  EXPECT_EQ(until, "2026-12-19T00:00:00Z");
}

TEST_F(DbusTest, PostponeRefusesMalformedTimeAndOverlongId) {
  auto e = ErrorOf([&] {
    Call("Postpone").withArguments(std::string("sec-1"), std::string("2026-12-20 00:00:00"));
  });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->name, "org.upkeep.Agent1.Error.InvalidArgument");
  e = ErrorOf([&] {
    Call("Postpone").withArguments(std::string(257, 'a'), std::string("2026-12-20T00:00:00Z"));
  });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->name, "org.upkeep.Agent1.Error.InvalidArgument");
  e = ErrorOf([&] {
    Call("Postpone").withArguments(std::string("a\nb"), std::string("2026-12-20T00:00:00Z"));
  });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->name, "org.upkeep.Agent1.Error.InvalidArgument");
  EXPECT_TRUE(backend_.Calls().empty());
}

// A string that is not UTF-8 never reaches the backend: the D-Bus stack refuses it (sd-bus and
// dbus-daemon both validate strings), and the service checks again.
TEST_F(DbusTest, InvalidUtf8ArgumentNeverReachesBackend) {
  auto e = ErrorOf([&] {
    Call("Postpone")
        .withArguments(std::string("sec-\xff\xfe"), std::string("2026-12-20T00:00:00Z"));
  });
  EXPECT_TRUE(e.has_value());
  EXPECT_TRUE(backend_.Calls().empty());
}

TEST_F(DbusTest, InstallBundlePassesTheCallersDescriptor) {
  const TempDir dir;
  std::ofstream(dir / "bundle.upkb") << "bundle-bytes";
  const int fd = ::open((dir / "bundle.upkb").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::string install_id;
  Call("InstallBundle")
      .withArguments(sdbus::UnixFd(fd, sdbus::adopt_fd), (dir / "bundle.upkb").string())
      .storeResultsTo(install_id);
  EXPECT_EQ(install_id, "install-1");
  std::lock_guard l(backend_.mu);
  EXPECT_EQ(backend_.bundle_bytes, "bundle-bytes");
  EXPECT_EQ(backend_.install_path, (dir / "bundle.upkb").string());
}

// A failed install answers only Rejected "update rejected", never the backend's detail
// (EN 303 645 5.3-9).
TEST_F(DbusTest, FailedInstallAnswersOnlyUpdateRejected) {
  backend_.fail_install = true;
  const TempDir dir;
  std::ofstream(dir / "bundle.upkb") << "bundle-bytes";
  const int fd = ::open((dir / "bundle.upkb").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto e = ErrorOf([&] {
    Call("InstallBundle")
        .withArguments(sdbus::UnixFd(fd, sdbus::adopt_fd), (dir / "bundle.upkb").string());
  });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->name, "org.upkeep.Agent1.Error.Rejected");
  EXPECT_EQ(e->message, "update rejected");
  EXPECT_EQ(backend_.Calls(), std::vector<std::string>{"install"});
}

// Only a regular file the caller opened for reading is passed on; a directory is refused.
TEST_F(DbusTest, InstallBundleRefusesADirectoryDescriptor) {
  const TempDir dir;
  const int fd = ::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto e = ErrorOf([&] {
    Call("InstallBundle").withArguments(sdbus::UnixFd(fd, sdbus::adopt_fd), dir.path().string());
  });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->name, "org.upkeep.Agent1.Error.InvalidArgument");
  EXPECT_TRUE(backend_.Calls().empty());
}

// The path goes to the event log: a relative path or one with a newline (a forged log line) is
// refused.
TEST_F(DbusTest, InstallBundleRefusesRelativeOrControlCharacterPath) {
  const TempDir dir;
  std::ofstream(dir / "bundle.upkb") << "bundle-bytes";
  for (const std::string& path : {std::string("bundle.upkb"), (dir / "a\nb").string()}) {
    const int fd = ::open((dir / "bundle.upkb").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    auto e = ErrorOf(
        [&] { Call("InstallBundle").withArguments(sdbus::UnixFd(fd, sdbus::adopt_fd), path); });
    ASSERT_TRUE(e.has_value()) << path;
    EXPECT_EQ(e->name, "org.upkeep.Agent1.Error.InvalidArgument");
  }
  EXPECT_TRUE(backend_.Calls().empty());
}

TEST_F(DbusTest, EventsAnswersThoseAfterTheGivenSequence) {
  EventList events;
  Call("Events").withArguments(std::uint64_t{1}, std::uint32_t{2}).storeResultsTo(events);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(std::get<0>(events[0]), 2u);
  EXPECT_EQ(std::get<1>(events[0]), "2026-12-07T00:00:02Z");
  EXPECT_EQ(std::get<2>(events[0]), "state");
  EXPECT_EQ(std::get<3>(events[1]), "step 3");
}

TEST_F(DbusTest, EventsReducesMaxToTheConfiguredLimitAndRefusesZero) {
  EventList events;
  Call("Events").withArguments(std::uint64_t{0}, std::uint32_t{1000}).storeResultsTo(events);
  EXPECT_EQ(events.size(), 3u);
  EXPECT_EQ(backend_.last_max, 3u);
  auto e = ErrorOf([&] { Call("Events").withArguments(std::uint64_t{0}, std::uint32_t{0}); });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->name, "org.upkeep.Agent1.Error.InvalidArgument");
}

// The caller's identity comes from the bus daemon (the uid it took from SO_PEERCRED), never from
// an argument.
TEST_F(DbusTest, BackendSeesTheCallersUidGidAndPid) {
  std::string model, hardware;
  Components components;
  Call("GetDevice").storeResultsTo(model, hardware, components);
  std::lock_guard l(backend_.mu);
  EXPECT_EQ(backend_.last_peer.uid, ::geteuid());
  EXPECT_EQ(backend_.last_peer.gid, ::getegid());
  EXPECT_EQ(backend_.last_peer.pid, ::getpid());
  EXPECT_FALSE(backend_.last_peer.lan);
}

// Each backend error becomes its error name with a fixed message; the backend's text (which may
// name files) never reaches the caller.
TEST_F(DbusTest, MapsBackendErrorsToErrorNames) {
  const std::vector<std::pair<Errc, std::string>> cases = {
      {Errc::InvalidArgument, "org.upkeep.Agent1.Error.InvalidArgument"},
      {Errc::NotFound, "org.upkeep.Agent1.Error.NotFound"},
      {Errc::Conflict, "org.upkeep.Agent1.Error.Conflict"},
      {Errc::Unavailable, "org.upkeep.Agent1.Error.Unavailable"},
      {Errc::Forbidden, "org.upkeep.Agent1.Error.Forbidden"},
      {Errc::LockedOut, "org.upkeep.Agent1.Error.Failed"},
  };
  for (const auto& [errc, name] : cases) {
    {
      std::lock_guard l(backend_.mu);
      backend_.check_error = errc;
    }
    auto e = ErrorOf([&] { Call("CheckNow"); });
    ASSERT_TRUE(e.has_value()) << name;
    EXPECT_EQ(e->name, name);
    EXPECT_EQ(e->message.find("/etc"), std::string::npos) << e->message;
  }
}

// The daemon's signals reach a listening client.
TEST_F(DbusTest, EmitsNoticePublishedAndStatusChanged) {
  auto listener = sdbus::createProxy(
      sdbus::createSessionBusConnectionWithAddress(daemon_->address()), kDbusName, kDbusObjectPath);
  std::mutex mu;
  std::condition_variable cv;
  std::optional<std::string> notice_id, notice_install_by, state;
  bool security = false;
  listener->uponSignal("NoticePublished")
      .onInterface(kDbusInterface)
      .call([&](const std::string& id, const std::string&, bool sec, const std::string&,
                const std::string&, const std::string& install_by) {
        std::lock_guard l(mu);
        notice_id = id;
        security = sec;
        notice_install_by = install_by;
        cv.notify_all();
      });
  listener->uponSignal("StatusChanged").onInterface(kDbusInterface).call([&](const Dict& status) {
    std::lock_guard l(mu);
    state = status.at("state").get<std::string>();
    cv.notify_all();
  });
  listener->finishRegistration();

  ASSERT_TRUE(service_->EmitNotice(
      Notice{"n7", "sec-9", true, "Security update", "Fixes", kT0 + std::chrono::days(7)}));
  ASSERT_TRUE(service_->EmitStatus(
      Status{UpdateState::kInstalling, std::nullopt, std::nullopt, std::nullopt}));
  std::unique_lock l(mu);
  ASSERT_TRUE(cv.wait_for(l, kWait, [&] { return notice_id && state; }));
  EXPECT_EQ(*notice_id, "n7");
  EXPECT_TRUE(security);
  EXPECT_EQ(*notice_install_by, "2026-12-14T00:00:00Z");
  EXPECT_EQ(*state, "installing");
}

TEST_F(DbusTest, StopTwiceIsHarmlessAndReleasesTheName) {
  service_->Stop();
  service_->Stop();
  EXPECT_ERRC(service_->EmitStatus(Status{}), Errc::Unavailable);
  auto e = ErrorOf([&] { Call("CheckNow"); });
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(backend_.Calls().empty());
}

// The daemon may signal from within a backend call (e.g. a status change on CheckNow).
TEST_F(DbusTest, EmitsFromWithinABackendCall) {
  std::optional<bool> emitted;
  backend_.on_check = [this, &emitted] {
    emitted = service_->EmitStatus(Status{UpdateState::kChecking, {}, {}, {}}).has_value();
  };
  Call("CheckNow");
  ASSERT_TRUE(emitted.has_value());
  EXPECT_TRUE(*emitted);
}

// Stop() from within a backend call would wait for itself: it is ignored and the call answered.
TEST_F(DbusTest, StopFromWithinABackendCallIsIgnored) {
  backend_.on_check = [this] { service_->Stop(); };
  Call("CheckNow");
  Dict status;
  Call("GetStatus").storeResultsTo(status);
  EXPECT_EQ(backend_.Calls(), (std::vector<std::string>{"check", "status"}));
}

TEST_F(DbusTest, SecondServiceCannotTakeTheName) {
  FakeBackend other;
  EXPECT_ERRC(DbusService::Start(Options(), other), Errc::CannotUseBus);
}

TEST_F(DbusTest, StartFailsWithoutABus) {
  DbusOptions o;
  o.bus = DbusBus::kAddress;
  o.address = "unix:path=" + (*dir_ / "no-such-bus").string();
  FakeBackend other;
  EXPECT_ERRC(DbusService::Start(o, other), Errc::CannotUseBus);
}

// A bus configured like Debian's system bus (method calls denied unless a rule allows them) with
// the packaged policy included.
void WriteSystemLikeBusConfig(const fs::path& config, const fs::path& socket) {
  std::ofstream(config) << R"(<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=)" << socket.string()
                        << R"(</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>)" << UPKEEP_DBUS_POLICY_FILE
                        << R"(</include>
</busconfig>
)";
}

// Calls `method` with dbus-send as the user nobody (65534, no supplementary groups). Returns its
// exit status: 0 when the call was answered without error.
int CallAsNobody(const std::string& setpriv, const std::string& dbus_send,
                 const std::string& address, const std::string& method) {
  int out = -1;
  const pid_t pid = Spawn(
      {setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", dbus_send, "--bus=" + address,
       "--print-reply", "--reply-timeout=5000", std::string("--dest=") + kDbusName, kDbusObjectPath,
       std::string(kDbusInterface) + "." + method},
      &out);
  if (pid < 0) return -1;
  (void)ReadUntil(out, '\0');
  ::close(out);
  return Reap(pid, false);
}

// The packaged bus policy: only root owns the name; any user reads (GetStatus), a user outside
// the group upkeep cannot act (CheckNow is refused by the bus before the agent sees it).
TEST(DbusPolicyTest, AnyUserReadsOnlyRootOrGroupUpkeepActs) {
  const std::string daemon = FindProgram("dbus-daemon");
  const std::string setpriv = FindProgram("setpriv");
  const std::string dbus_send = FindProgram("dbus-send");
  if (daemon.empty() || setpriv.empty() || dbus_send.empty())
    GTEST_SKIP() << "needs dbus-daemon, setpriv and dbus-send";
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (to call as another user)";
  const TempDir dir;
  // The user nobody must reach the socket.
  ::chmod(dir.path().c_str(), 0755);
  WriteSystemLikeBusConfig(dir / "bus.conf", dir / "bus");
  const auto bus = BusDaemon::Start(daemon, dir / "bus.conf");
  ASSERT_NE(bus, nullptr) << "dbus-daemon refused the configuration";
  FakeBackend backend;
  DbusOptions o;
  o.bus = DbusBus::kAddress;
  o.address = bus->address();
  auto service = DbusService::Start(o, backend);
  ASSERT_TRUE(service.has_value()) << service.error().ToString();

  EXPECT_EQ(CallAsNobody(setpriv, dbus_send, bus->address(), "GetStatus"), 0);
  EXPECT_NE(CallAsNobody(setpriv, dbus_send, bus->address(), "CheckNow"), 0);
  EXPECT_EQ(backend.Calls(), std::vector<std::string>{"status"});
  {
    std::lock_guard l(backend.mu);
    EXPECT_EQ(backend.last_peer.uid, 65534u);
    EXPECT_EQ(backend.last_peer.gid, 65534u);
  }
  // Root may act.
  auto client = sdbus::createSessionBusConnectionWithAddress(bus->address());
  auto proxy = sdbus::createProxy(*client, kDbusName, kDbusObjectPath);
  proxy->callMethod("CheckNow").onInterface(kDbusInterface).withTimeout(kWait);
  EXPECT_EQ(backend.Calls(), (std::vector<std::string>{"status", "check"}));
}

// The bus daemon going away ends the service's event loop without ending the process; Stop()
// still returns and a signal is refused with an error.
TEST(DbusBusLossTest, SurvivesTheBusDaemonExiting) {
  const std::string daemon = FindProgram("dbus-daemon");
  if (daemon.empty()) GTEST_SKIP() << "no dbus-daemon binary";
  const TempDir dir;
  WriteOpenBusConfig(dir / "bus.conf", dir / "bus");
  auto bus = BusDaemon::Start(daemon, dir / "bus.conf");
  ASSERT_NE(bus, nullptr);
  FakeBackend backend;
  DbusOptions o;
  o.bus = DbusBus::kAddress;
  o.address = bus->address();
  auto service = DbusService::Start(o, backend);
  ASSERT_TRUE(service.has_value()) << service.error().ToString();
  bus.reset();  // SIGTERM, reaped
  EXPECT_FALSE((*service)->EmitStatus(Status{}).has_value());
  (*service)->Stop();
  EXPECT_ERRC((*service)->EmitStatus(Status{}), Errc::Unavailable);
}

}  // namespace
}  // namespace upkeep::localapi
