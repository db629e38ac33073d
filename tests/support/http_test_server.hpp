#pragma once

// HttpTestServer: a static file server for tests, benchmarks and the demo. It listens on
// 127.0.0.1 only (port 0: the kernel picks a free port), serves files below a root directory,
// records every request path, and can misbehave on purpose for a path (wrong status, endless or
// slow body, wrong or missing Content-Length, dropped connection) so that clients' defences can
// be tested. Every misbehaviour is bounded in bytes and time.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace upkeep::testing {

struct Fault {
  std::optional<int> status;                 // answer with this status (empty body)
  bool endless = false;                      // stream bytes until the client hangs up (<= 64 MiB)
  std::optional<std::chrono::milliseconds> drip_interval;  // one byte per interval (<= 10 s)
  std::optional<std::uint64_t> declared_length;  // Content-Length to announce instead of the real
  bool omit_length = false;                  // no Content-Length: body ends when the connection closes
  std::optional<std::uint64_t> drop_after;   // close the connection after this many body bytes
  std::optional<std::string> redirect_to;    // 302 with this Location
};

class HttpTestServer {
 public:
  explicit HttpTestServer(std::filesystem::path root);
  ~HttpTestServer();
  HttpTestServer(const HttpTestServer&) = delete;
  HttpTestServer& operator=(const HttpTestServer&) = delete;

  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] std::string base_url() const;  // "http://127.0.0.1:PORT"

  // Request targets ("/path?query" as sent), in arrival order.
  [[nodiscard]] std::vector<std::string> requests() const;
  void ClearRequests();

  // Misbehave for requests to exactly `path` (e.g. "/metadata/timestamp.json").
  void SetFault(const std::string& path, Fault fault);
  void ClearFaults();

 private:
  void Serve();
  void Handle(int fd);

  std::filesystem::path root_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<std::string> requests_;       // guarded by mu_
  std::map<std::string, Fault> faults_;     // guarded by mu_
};

}  // namespace upkeep::testing
