#pragma once

// The client side of the agent's local API (docs/local-api.md): one call per endpoint over the
// Unix domain socket, with the typed structures of backend.hpp. Each call opens a connection,
// sends one request (`Connection: close`) and reads one answer, within bounded time and size.
// Answers are parsed strictly (metadata::ParseJson: RFC 8259, valid UTF-8, no duplicate keys;
// every documented field required with its type; fields the client does not know are ignored,
// so a newer daemon may add some). Nothing throws.
//
// Errors (localapi::Errc):
// - the server's {"error", "message"} answers map back to the codes the server maps from:
//   400 bad_request and 413/431 too_large -> InvalidArgument, 401 -> Unauthenticated,
//   403 -> Forbidden, 404 -> NotFound, 409 -> Conflict, 422 rejected -> Rejected,
//   429 -> LockedOut, 500 -> Internal, 503 -> Unavailable; an answer whose status and "error"
//   do not belong together, or any other status, is ProtocolError. The Error's message is the
//   server's text, untrusted: print it through PrintableText.
// - no socket at the path, or nobody listening on it: DaemonNotRunning;
// - the socket refuses the caller (file permissions): Forbidden;
// - the connection closes before any answer (the server is at its connection limit), or the
//   listen backlog stays full: Unavailable;
// - no complete answer in time: Timeout;
// - an answer that is not HTTP/1.1, too large, not the documented JSON, or not the expected
//   status: ProtocolError.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/result.hpp"
#include "upkeep/localapi/backend.hpp"

namespace upkeep::localapi {

inline constexpr const char* kDefaultSocketPath = "/run/upkeep/agent.sock";

struct LocalApiClientOptions {
  std::filesystem::path socket_path = kDefaultSocketPath;
  // Waiting for the listen backlog (connecting to a Unix socket otherwise never waits).
  std::chrono::milliseconds connect_timeout{2000};
  // One request: sending it and reading the whole answer.
  std::chrono::milliseconds request_timeout{15000};
  // Larger answers are ProtocolError.
  std::uint64_t max_body_bytes = 4 * 1024 * 1024;
  std::uint32_t max_header_bytes = 16 * 1024;
};

class LocalApiClient {
 public:
  explicit LocalApiClient(LocalApiClientOptions options = {}) : options_(std::move(options)) {}

  [[nodiscard]] const LocalApiClientOptions& options() const { return options_; }

  [[nodiscard]] Result<DeviceInfo> Device() const;         // GET /v1/device
  [[nodiscard]] Result<SupportInfo> Support() const;       // GET /v1/support
  [[nodiscard]] Result<Status> GetStatus() const;          // GET /v1/status
  [[nodiscard]] Result<std::vector<Notice>> Notices() const;  // GET /v1/notices
  [[nodiscard]] Result<PolicySettings> GetPolicy() const;  // GET /v1/policy
  // PUT /v1/policy; returns the settings now in force.
  [[nodiscard]] Result<PolicySettings> SetPolicy(const PolicySettings& settings) const;
  // POST /v1/check: the check runs in the background.
  [[nodiscard]] Result<void> CheckNow() const;
  // POST /v1/postpone; `until` in the result may be earlier than asked (the security cap).
  [[nodiscard]] Result<PostponeResult> Postpone(const PostponeRequest& request) const;
  // POST /v1/install: `absolute_path` names the bundle; the daemon opens it with the caller's
  // rights. A relative path is InvalidArgument without contacting the daemon. Any failure of the
  // install itself is Rejected, with no detail.
  [[nodiscard]] Result<InstallAccepted> Install(const std::string& absolute_path) const;
  // GET /v1/events?after=N: events with sequence > after, oldest first (at most the server's
  // limit per call: ask again with the last sequence).
  [[nodiscard]] Result<std::vector<Event>> Events(std::uint64_t after) const;

 private:
  LocalApiClientOptions options_;
};

// The answer parsers, public for tests and the fuzz target. Each takes a 2xx body and fails with
// ProtocolError on anything but the documented document.
[[nodiscard]] Result<DeviceInfo> ParseDeviceAnswer(std::string_view body);
[[nodiscard]] Result<SupportInfo> ParseSupportAnswer(std::string_view body);
[[nodiscard]] Result<Status> ParseStatusAnswer(std::string_view body);
[[nodiscard]] Result<std::vector<Notice>> ParseNoticesAnswer(std::string_view body);
[[nodiscard]] Result<PolicySettings> ParsePolicyAnswer(std::string_view body);
[[nodiscard]] Result<void> ParseCheckAnswer(std::string_view body);
[[nodiscard]] Result<PostponeResult> ParsePostponeAnswer(std::string_view body);
[[nodiscard]] Result<InstallAccepted> ParseInstallAnswer(std::string_view body);
// NDJSON: one event per line, each line ending in '\n'; sequences strictly increasing and
// above `after`.
[[nodiscard]] Result<std::vector<Event>> ParseEventsAnswer(std::string_view body,
                                                           std::uint64_t after);
// A non-2xx answer as the Error it stands for (see above).
[[nodiscard]] Error ParseErrorAnswer(unsigned status, std::string_view body);

// The API's state names ("idle", "awaiting_reboot", ...) and back.
[[nodiscard]] std::optional<UpdateState> ParseUpdateState(std::string_view name);

}  // namespace upkeep::localapi
