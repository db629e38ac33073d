#pragma once

// The agent's local API: HTTP/1.1 on a Unix domain socket (docs/local-api.md). Who may connect is
// decided by the socket file's mode and group; each request also carries the peer's uid, gid and
// pid as the kernel reports them (SO_PEERCRED). Requests are parsed strictly (JSON bodies through
// metadata::ParseJson and JsonReader, unknown fields refused) and limited in size, time and
// number of connections; errors are answered as {"error": CODE, "message": TEXT}.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "upkeep/common/result.hpp"
#include "upkeep/localapi/backend.hpp"

namespace upkeep::localapi {

class CredentialStore;

// The optional HTTPS listener for a companion app on the LAN. Every request must carry
// `Authorization: Bearer <credential>`, checked by the CredentialStore (Argon2id, lockout);
// POST /v1/install is refused there (403): a network client has no file the daemon could open
// with its rights.
struct LanOptions {
  std::string address = "127.0.0.1";
  std::uint16_t port = 0;  // 0: a free port (LocalApiServer::lan_port())
  std::string certificate_pem;
  std::string private_key_pem;
  CredentialStore* credentials = nullptr;  // required; must outlive the server
};

struct LocalApiOptions {
  // The socket file. Its directory must exist. A stale socket there is replaced; a symlink or any
  // other kind of file there is refused (Errc::CannotListen).
  std::filesystem::path socket_path;
  mode_t mode = 0660;
  std::optional<gid_t> group;  // chown to this group; unchanged when absent
  // Request limits: 413 and 431 beyond.
  std::uint64_t max_body_bytes = 64 * 1024;
  std::uint32_t max_header_bytes = 8 * 1024;
  // A connection waiting for its next request this long is closed; a request not complete within
  // request_timeout is cut off (slow client).
  std::chrono::seconds idle_timeout{30};
  std::chrono::seconds request_timeout{10};
  // Connections beyond this are closed as soon as they are accepted.
  std::uint32_t max_connections = 16;
  unsigned threads = 1;
  // Most events one GET /v1/events answer carries.
  std::size_t max_events = 100;
  // Off unless set.
  std::optional<LanOptions> lan;
};

struct LocalApiStats {
  std::uint64_t connections = 0;
  std::uint64_t requests = 0;
  std::uint64_t rejected_requests = 0;    // malformed or over a limit
  std::uint64_t refused_connections = 0;  // over max_connections
};

class LocalApiServer {
 public:
  // `backend` must outlive the server.
  [[nodiscard]] static Result<std::unique_ptr<LocalApiServer>> Start(const LocalApiOptions& options,
                                                                     LocalApiBackend& backend);
  ~LocalApiServer();  // Stop(0) if still running
  LocalApiServer(const LocalApiServer&) = delete;
  LocalApiServer& operator=(const LocalApiServer&) = delete;

  [[nodiscard]] LocalApiStats stats() const;
  // The LAN listener's port; 0 without one.
  [[nodiscard]] std::uint16_t lan_port() const;
  // Stops accepting and removes the socket file, lets requests in flight finish for at most
  // `grace`, then closes what is left and joins the threads. Idempotent.
  void Stop(std::chrono::milliseconds grace = std::chrono::seconds(5));

  struct Impl;

 private:
  explicit LocalApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// "2030-12-31T00:00:00Z" and back: the only time form the API reads and writes.
[[nodiscard]] std::string FormatTime(Clock::TimePoint t);
[[nodiscard]] std::optional<Clock::TimePoint> ParseTime(std::string_view text);

}  // namespace upkeep::localapi
