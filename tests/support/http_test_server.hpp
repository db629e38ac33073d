#pragma once

// HttpTestServer: a static file server for tests, benchmarks and the demo (ADR 0003). It listens
// on 127.0.0.1 only (port 0: the kernel picks a free port), serves GET and HEAD for files below a
// root directory (paths leaving it are 404), answers `Range: bytes=N-` / `bytes=N-M` with 206 and
// Content-Range (416 past the end), records every request target, and can misbehave on purpose
// for a path (wrong status, endless or slow body, wrong or missing Content-Length, chunked body,
// dropped connection) so that clients' defences can be tested. Every misbehaviour is bounded in
// bytes (64 MiB) and time (10 s); the destructor interrupts whatever is still running and joins.
// One request per connection (Connection: close).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace upkeep::testing {

struct Fault {
  std::optional<int> status;  // answer with this status (a small error page)
  bool endless = false;       // stream bytes until the client hangs up
  std::optional<std::chrono::milliseconds> drip_interval;  // then one byte per interval
  std::optional<std::uint64_t> declared_length;  // Content-Length to announce instead of the real
  bool omit_length = false;  // no Content-Length: body ends when the connection closes
  std::optional<std::uint64_t> drop_after;  // close the connection after this many body bytes
  std::optional<std::string> redirect_to;   // 302 with this Location (and a small body)
  std::uint64_t drip_after = 0;             // with drip_interval: bytes sent at full speed first
  bool chunked = false;                     // Transfer-Encoding: chunked, no Content-Length
  // Misbehave for this many requests to the path, then serve it normally; unset: always.
  std::optional<int> times;
};

class HttpTestServer {
 public:
  // Serves `root`; throws std::runtime_error when 127.0.0.1 cannot be bound.
  explicit HttpTestServer(std::filesystem::path root);
  ~HttpTestServer();
  HttpTestServer(const HttpTestServer&) = delete;
  HttpTestServer& operator=(const HttpTestServer&) = delete;

  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::string base_url() const;  // "http://127.0.0.1:PORT"

  // Request targets ("/path?query" as sent), in arrival order.
  [[nodiscard]] std::vector<std::string> requests() const;
  void ClearRequests();
  // Body bytes written to clients so far (all paths), to check what a resumed download costs.
  [[nodiscard]] std::uint64_t body_bytes_sent() const { return body_bytes_sent_.load(); }
  // The Range header of each request, in arrival order ("" when there was none).
  [[nodiscard]] std::vector<std::string> ranges() const;

  // Misbehave for requests to exactly `path` (e.g. "/metadata/timestamp.json"; no query).
  void SetFault(const std::string& path, Fault fault);
  void ClearFaults();

 private:
  struct Connection {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
  };

  void Serve();
  void Handle(int fd);
  void CloseConnection(int fd);
  // Sleeps for `d`; false as soon as the server is stopping.
  bool SleepUnlessStopping(std::chrono::milliseconds d);
  [[nodiscard]] bool stopping() const { return stopping_.load(); }

  std::filesystem::path root_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};  // written by the destructor to end the accept loop at once
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::list<std::unique_ptr<Connection>> connections_;  // accept thread only

  mutable std::mutex mu_;
  std::vector<std::string> requests_;    // guarded by mu_
  std::vector<std::string> ranges_;      // guarded by mu_
  std::atomic<std::uint64_t> body_bytes_sent_{0};
  std::map<std::string, Fault> faults_;  // guarded by mu_
  std::set<int> open_fds_;               // guarded by mu_: connections not yet closed
  std::condition_variable stop_cv_;      // with mu_: wakes sleeping drips on stop
};

}  // namespace upkeep::testing
