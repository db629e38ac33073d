#pragma once

// Test doubles for the local API client: a scriptable LocalApiBackend behind the real
// LocalApiServer, and a raw Unix-socket server that answers one connection with whatever bytes a
// test gives it (hostile answers). Both live in a temporary directory.

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "upkeep/localapi/backend.hpp"

namespace upkeep::localapi::testing {

inline const Clock::TimePoint kT0 = std::chrono::sys_days(std::chrono::year(2026) / 12 / 7);

// Every answer comes from the public members (lock `mu` to change them while a server runs).
class ScriptedBackend : public LocalApiBackend {
 public:
  Result<DeviceInfo> Device(const Peer&) override {
    std::lock_guard l(mu);
    if (auto e = Failure("device")) return *e;
    return device;
  }
  Result<SupportInfo> Support(const Peer&) override {
    std::lock_guard l(mu);
    if (auto e = Failure("support")) return *e;
    return support;
  }
  Result<Status> GetStatus(const Peer&) override {
    std::lock_guard l(mu);
    if (auto e = Failure("status")) return *e;
    if (!status_script.empty()) {
      Status s = status_script.front();
      status_script.pop_front();
      if (status_script.empty()) FlushPending();
      return s;
    }
    return status;
  }
  Result<std::vector<Notice>> Notices(const Peer&) override {
    std::lock_guard l(mu);
    if (auto e = Failure("notices")) return *e;
    return notices;
  }
  Result<PolicySettings> GetPolicy(const Peer&) override {
    std::lock_guard l(mu);
    if (auto e = Failure("get_policy")) return *e;
    return policy;
  }
  Result<PolicySettings> SetPolicy(const Peer&, const PolicySettings& s) override {
    std::lock_guard l(mu);
    if (auto e = Failure("set_policy")) return *e;
    policy = s;
    return policy;
  }
  Result<void> CheckNow(const Peer&) override {
    std::lock_guard l(mu);
    if (auto e = Failure("check")) return *e;
    // The check: "checking" for two polls, then idle with a new last_check and an event.
    Status checking = status;
    checking.state = UpdateState::kChecking;
    status_script = {checking, checking};
    status.state = UpdateState::kIdle;
    status.last_check = kT0 + std::chrono::hours(1);
    pending_events.push_back({"check", "no update available"});
    return Ok();
  }
  Result<PostponeResult> Postpone(const Peer&, const PostponeRequest& r) override {
    std::lock_guard l(mu);
    if (auto e = Failure("postpone")) return *e;
    postponed = r;
    Clock::TimePoint until = r.until;
    if (postpone_cap && until > *postpone_cap) until = *postpone_cap;
    return PostponeResult{r.update_id, until};
  }
  Result<InstallAccepted> Install(InstallRequest r) override {
    std::lock_guard l(mu);
    calls.emplace_back("install");
    install_path = r.path;
    char buf[64] = {};
    const ssize_t n = ::read(r.bundle.get(), buf, sizeof buf - 1);
    bundle_bytes = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
    if (reject_install) {
      return Error(Errc::Rejected, "signature of target app.img by key 1234 does not verify");
    }
    status_script = install_script;
    if (status_script.empty()) FlushPending();
    return InstallAccepted{"install-1"};
  }
  Result<std::vector<Event>> Events(const Peer&, std::uint64_t after, std::size_t max) override {
    std::lock_guard l(mu);
    if (auto e = Failure("events")) return *e;
    std::vector<Event> out;
    for (const auto& e : events) {
      if (e.sequence > after && out.size() < max) out.push_back(e);
    }
    return out;
  }

  // Appends an event to the log now.
  void AddEvent(const std::string& type, const std::string& message) {
    const std::uint64_t seq = events.empty() ? 1 : events.back().sequence + 1;
    events.push_back(Event{seq, kT0 + std::chrono::seconds(seq), type, message});
  }

  std::mutex mu;
  DeviceInfo device{"Acme Thermostat T2", "rev-c", {{"firmware", "1.4.2"}, {"app", "2.0.0"}}};
  SupportInfo support{kT0 + std::chrono::days(365 * 5), false};
  Status status{UpdateState::kDownloading, "sec-2026-12", Progress{512, 2048}, kT0};
  std::vector<Notice> notices{
      {"n1", "sec-2026-12", true, "Security update", "Fixes a flaw", kT0 + std::chrono::days(7)}};
  PolicySettings policy;
  std::vector<Event> events;
  // Statuses GetStatus returns first, one per call; `pending_events` join the log when the last
  // is returned. Install starts `install_script` (and adds `pending_events` at once when it is
  // empty); CheckNow starts two polls of "checking".
  std::deque<Status> status_script;
  std::deque<Status> install_script;
  std::vector<std::pair<std::string, std::string>> pending_events;
  // Calls named here fail with the code.
  std::optional<std::pair<std::string, Errc>> fail;
  bool reject_install = false;
  std::optional<Clock::TimePoint> postpone_cap;
  std::optional<PostponeRequest> postponed;
  std::string install_path;
  std::string bundle_bytes;
  std::vector<std::string> calls;

 private:
  std::optional<Error> Failure(const std::string& call) {
    calls.push_back(call);
    if (fail && (fail->first == call || fail->first == "*")) {
      return Error(fail->second, "backend detail: /var/lib/upkeep/secret");
    }
    return std::nullopt;
  }
  void FlushPending() {
    for (const auto& [type, message] : pending_events) AddEvent(type, message);
    pending_events.clear();
  }
};

// Accepts one connection on a Unix socket, reads the request head (and a body up to its
// Content-Length), then sends `answer` and closes, or with `hang` sends nothing and waits until
// the client goes away. With `stream_bytes`, sends `answer` and then that many filler bytes (for
// answers larger than the client accepts). Every wait is bounded (10 s).
class RawServer {
 public:
  RawServer(const std::filesystem::path& path, std::string answer, bool hang = false,
            std::size_t stream_bytes = 0)
      : answer_(std::move(answer)), hang_(hang), stream_bytes_(stream_bytes) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 &&
          ::listen(fd_, 4) == 0;
    if (ok_) thread_ = std::thread([this] { Serve(); });
  }
  ~RawServer() {
    if (thread_.joinable()) thread_.join();
    if (fd_ >= 0) ::close(fd_);
  }
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;
  [[nodiscard]] bool ok() const { return ok_; }

 private:
  static bool Wait(int fd, short events, int ms) {
    pollfd p{fd, events, 0};
    return ::poll(&p, 1, ms) > 0;
  }
  void Serve() {
    if (!Wait(fd_, POLLIN, 10'000)) return;
    const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    std::string request;
    char buf[4096];
    std::size_t need = std::string::npos;
    for (int i = 0; i < 1000 && Wait(c, POLLIN, 10'000); ++i) {
      const ssize_t n = ::recv(c, buf, sizeof buf, 0);
      if (n <= 0) break;
      request.append(buf, static_cast<std::size_t>(n));
      const auto end = request.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      if (need == std::string::npos) {
        const auto cl = request.find("Content-Length: ");
        std::size_t length = 0;
        if (cl != std::string::npos && cl < end) {
          length = static_cast<std::size_t>(std::atol(request.c_str() + cl + 16));
        }
        need = end + 4 + length;
      }
      if (request.size() >= need) break;
    }
    if (hang_) {
      // Until the client gives up (recv 0) or 10 s pass.
      for (int i = 0; i < 1000 && Wait(c, POLLIN, 10'000); ++i) {
        if (::recv(c, buf, sizeof buf, 0) <= 0) break;
      }
    } else {
      SendAll(c, answer_);
      const std::string filler(16384, 'a');
      for (std::size_t sent = 0; sent < stream_bytes_; sent += filler.size()) {
        if (!SendAll(c, filler)) break;
      }
    }
    ::close(c);
  }
  static bool SendAll(int c, const std::string& data) {
    std::size_t sent = 0;
    while (sent < data.size()) {
      if (!Wait(c, POLLOUT, 10'000)) return false;
      const ssize_t n = ::send(c, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<std::size_t>(n);
    }
    return true;
  }

  std::string answer_;
  bool hang_;
  std::size_t stream_bytes_;
  int fd_ = -1;
  bool ok_ = false;
  std::thread thread_;
};

// An HTTP/1.1 answer with a JSON (or other) body and a correct Content-Length.
inline std::string HttpAnswer(int status, const std::string& body,
                              const std::string& content_type = "application/json") {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: " + content_type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
         body;
}

}  // namespace upkeep::localapi::testing
