#pragma once

// The device side of the device API (docs/formats/device-api.md, ADR 0007): enrolment, check-in,
// reports, incidents and the support period, over transport::HttpClient (HTTPS, the fleet
// server's CA pinned, the device's client certificate for everything but enrolment).
//
// The agent daemon talks to the fleet server through DeviceClient, and the server's tests drive
// the server through it, so each side of the protocol has one implementation.
//
// JSON rules:
// - requests are built from typed structs and written with metadata::DumpJson; strings must be
//   valid UTF-8 (Errc::InvalidArgument otherwise: nothing is sent);
// - answers are parsed with metadata::ParseJson (strict RFC 8259, valid UTF-8, no duplicate
//   keys) and metadata::JsonReader: every field this version knows must be present (unless
//   optional) with exactly its type; members this version does not know are ignored, so that a
//   newer server can add fields without breaking devices (the server, in the other direction,
//   refuses unknown fields in requests). A malformed answer is Errc::ProtocolError.
// - a non-2xx answer's {"error": CODE, "message": TEXT} becomes the Errc for CODE, with the
//   server's message (control characters removed, at most 512 bytes) in the error message;
//   without a usable error body the status decides (400, 401, 403, 404, 409, 413, 429, 503 as in
//   the document; other 5xx: Unavailable; anything else: ProtocolError).
// - transport failures keep their common::Errc (NetworkError, Timeout, LengthExceeded for an
//   answer over HttpClientOptions::max_response_bytes, InvalidArgument for an unusable URL).
//
// The private key is generated on the device, is sent nowhere (the enrolment request carries
// only the CSR) and is written only by SaveIdentity, to a 0600 file.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/result.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/transport/http_client.hpp"

namespace upkeep::deviceapi {

enum class Errc {
  BadRequest = 1,        // 400 bad_request: the server refused the request's form
  Unauthenticated = 2,   // 401 unauthenticated: no or unusable certificate, spent token
  Blocked = 3,           // 403 blocked: this device's certificate is refused for good
  NotFound = 4,          // 404 not_found
  Conflict = 5,          // 409 conflict: a check-in counter not above the last one stored
  TooLarge = 6,          // 413 too_large
  RateLimited = 7,       // 429 rate_limited; DeviceClient::retry_after() has the delay
  Unavailable = 8,       // 503 unavailable (or another 5xx): retry with backoff
  ProtocolError = 9,     // an answer that does not follow the protocol (malformed JSON, a missing
                         // or mistyped field, a certificate for another key or device, an
                         // unexpected status)
  InvalidArgument = 10,  // a request the client refuses to send (e.g. strings that are not UTF-8)
  InvalidIdentity = 11,  // a stored identity that cannot be used (missing or malformed file,
                         // key and certificate that do not belong together)
};

}  // namespace upkeep::deviceapi

UPKEEP_DECLARE_ERRC(upkeep::deviceapi);

namespace upkeep::deviceapi {

// Everything a device needs to talk to its fleet server; the agent persists it (SaveIdentity).
struct DeviceIdentity {
  std::string server_url;     // base URL, e.g. "https://fleet.example.com" (no /api/v1)
  std::string server_ca_pem;  // the CA the server's TLS certificate must chain to
  std::string device_id;
  std::string private_key_pem;  // the device's key (PKCS#8 PEM); never sent
  std::string certificate_pem;  // issued by the device CA at enrolment
  std::string device_ca_pem;
  // The director's root (its JSON text) as returned at enrolment; the agent pins it (after
  // checking it against a copy provisioned at manufacture, when there is one).
  std::optional<std::string> director_root;
};

// Where an unenrolled device enrols.
struct ServerEndpoint {
  std::string server_url;
  std::string server_ca_pem;
  // A manufacturer-issued device certificate and key (PEM) to enrol with instead of a token;
  // empty when a token is used.
  std::string manufacturer_certificate_pem;
  std::string manufacturer_key_pem;
};

// ---------------------------------------------------------------------------------------------
// Requests and answers (field names and meaning: docs/formats/device-api.md)

struct ComponentState {
  std::string version;
  std::string target;
  std::uint64_t security_version = 0;
};

struct CheckInRequest {
  std::uint64_t counter = 0;  // persisted by the caller before the check-in is sent
  std::string model;
  std::string hardware;
  std::map<std::string, ComponentState> components;
  std::uint64_t director_root_version = 1;
  std::uint64_t director_targets_version = 0;
  bool auto_install = true;
  bool notifications = true;
  bool security_auto_install = true;
  std::optional<std::uint64_t> postponed_until;  // Unix seconds; null when not postponed
  std::string update_state = "idle";
  std::optional<std::string> update_target;
  // The ETag of the last 200 answer: sent as If-None-Match, so that an unchanged answer is 304.
  std::string if_none_match;
};

// The director's metadata for this device, each file's exact bytes.
struct DirectorFiles {
  std::vector<std::string> roots;  // roots newer than the version the device sent, in order
  std::string timestamp;
  std::string snapshot;
  std::string targets;
};

// When the device's group has a maintenance window: start installing no earlier than
// `not_before` and not after `not_after` (Unix seconds). The server spreads `not_before` over the
// window per device so that a fleet does not start at once.
struct InstallWindow {
  std::uint64_t not_before = 0;
  std::uint64_t not_after = 0;
  bool operator==(const InstallWindow&) const = default;
};

struct CheckInAnswer {
  // 304: nothing changed since the answer whose ETag was sent; `director` is empty and
  // `next_checkin_seconds` absent (keep the previous schedule).
  bool not_modified = false;
  DirectorFiles director;
  std::optional<std::uint64_t> next_checkin_seconds;  // at most kMaxNextCheckinSeconds
  std::string etag;                                   // to send next time; may be empty
  std::optional<InstallWindow> install_window;        // absent: install when policy allows
};

inline constexpr std::uint64_t kMaxNextCheckinSeconds = 366ULL * 24 * 3600;

enum class ReportOutcome { InProgress, Committed, RolledBack, Failed, Cancelled };

struct ReportEvent {
  std::uint64_t time = 0;  // Unix seconds
  std::string id;          // e.g. "install.started" (docs/events.md)
  metadata::Json data = metadata::Json::object();
};

struct ReportBody {
  std::string report_id;  // the same ID when a report is sent again (at-least-once delivery)
  std::string update_id;
  std::string target;
  ReportOutcome outcome = ReportOutcome::InProgress;
  std::vector<ReportEvent> events;
};

struct IncidentBody {
  std::string incident_id;
  std::string kind;    // e.g. "verification_failed"
  std::string source;  // e.g. "network"
  std::string target;
  std::string error;   // e.g. "install.ChunkDigestMismatch"
  std::string detail;  // for administrators only
  std::uint64_t time = 0;
};

struct SupportInfo {
  std::string model;
  std::string security_updates_until;  // "YYYY-MM-DD"
  std::string url;
};

// What the enrolment answer says, before the client checks it against its own key.
struct EnrolAnswer {
  std::string device_id;
  std::string certificate_pem;
  std::string device_ca_pem;
  std::optional<std::string> director_root;  // the JSON text of the object, when present
};

// ---------------------------------------------------------------------------------------------
// Answer parsers (used by DeviceClient; public for the fuzz target and the server's tests).
// Errc::ProtocolError for anything that does not follow the document.

[[nodiscard]] Result<EnrolAnswer> ParseEnrolAnswer(std::string_view body);
[[nodiscard]] Result<CheckInAnswer> ParseCheckInAnswer(std::string_view body);
[[nodiscard]] Result<SupportInfo> ParseSupportAnswer(std::string_view body);
// The error for a non-2xx answer (always an error; see the rules at the top).
[[nodiscard]] Error ParseErrorAnswer(unsigned status, std::string_view body);
// The request bodies, as DeviceClient sends them (Errc::InvalidArgument for non-UTF-8 strings
// or an event whose data is not an object).
[[nodiscard]] Result<std::string> EnrolRequestJson(std::string_view token, std::string_view model,
                                                   std::string_view serial, std::string_view csr);
[[nodiscard]] Result<std::string> CheckInRequestJson(const CheckInRequest& request);
[[nodiscard]] Result<std::string> ReportJson(const ReportBody& report);
[[nodiscard]] Result<std::string> IncidentJson(const IncidentBody& incident);

// ---------------------------------------------------------------------------------------------

struct DeviceClientOptions {
  // Timeouts, answer size limit and the like. The server CA and client certificate fields are
  // filled from the endpoint or identity and must be left empty here.
  transport::HttpClientOptions http;
};

// One request at a time (calls are serialised). Not copyable.
class DeviceClient {
 public:
  // For a device that is not enrolled yet: only Enrol can succeed. Errc::InvalidArgument when
  // options.http names a CA or client certificate; common::Errc::InvalidArgument without a
  // server CA or with half a manufacturer identity.
  [[nodiscard]] static Result<std::unique_ptr<DeviceClient>> ForEnrolment(
      const ServerEndpoint& endpoint, DeviceClientOptions options = {});
  // For an enrolled device (its client certificate is used for every request).
  // Errc::InvalidIdentity when the key and certificate do not belong together.
  [[nodiscard]] static Result<std::unique_ptr<DeviceClient>> ForIdentity(
      const DeviceIdentity& identity, DeviceClientOptions options = {});
  ~DeviceClient();
  DeviceClient(const DeviceClient&) = delete;
  DeviceClient& operator=(const DeviceClient&) = delete;

  // POST /api/v1/enrol: generates the device key (ECDSA P-256) here, sends a CSR for it with
  // `token` (omitted when empty: the manufacturer certificate authenticates), `model` and
  // `serial`, and checks the answer: a valid device ID, a certificate for exactly this key and
  // that device ID issued by the returned device CA. The CSR's subject CN is `serial` when that is
  // a valid device ID, else "unenrolled-device": the server names the certificate. On success
  // this client uses the new identity (on a new connection) for later calls, and the identity is
  // returned for the caller to persist (SaveIdentity). Errc::InvalidArgument for an empty model
  // or serial or strings that are not UTF-8; server errors as described at the top.
  [[nodiscard]] Result<DeviceIdentity> Enrol(std::string_view token, std::string_view model,
                                             std::string_view serial);
  // POST /api/v1/checkin. 200 → the director's files; 304 → not_modified (only valid when
  // request.if_none_match was sent; otherwise Errc::ProtocolError).
  [[nodiscard]] Result<CheckInAnswer> CheckIn(const CheckInRequest& request);
  // POST /api/v1/reports and /api/v1/incidents: 202 (or 200) is success; the body is ignored.
  [[nodiscard]] Result<void> Report(const ReportBody& report);
  [[nodiscard]] Result<void> Incident(const IncidentBody& incident);
  // The same with a body ReportJson or IncidentJson wrote earlier: the agent's durable outbox
  // stores the bodies and sends them as stored (at least once; the server deduplicates by ID).
  [[nodiscard]] Result<void> SendReportJson(std::string_view body);
  [[nodiscard]] Result<void> SendIncidentJson(std::string_view body);
  // GET /api/v1/support.
  [[nodiscard]] Result<SupportInfo> SupportPeriod();

  // The Retry-After delay (seconds) of the last answer, when it carried one (429, 503); reset at
  // each call. Capped at one day.
  [[nodiscard]] std::optional<std::chrono::seconds> retry_after() const;
  // The identity in use (empty device_id before enrolment).
  [[nodiscard]] DeviceIdentity identity() const;

  struct Impl;

 private:
  explicit DeviceClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------------
// Persistence: `dir` holds identity.json (everything but the key; mode as the filesystem makes
// it) and device.key (0600, written with crypto::WritePrivateKeyFile: created fresh, never through
// a symbolic link). SaveIdentity replaces an existing device.key only when it holds another key
// (re-enrolment); identity.json is written atomically after the key.
// LoadIdentity: Errc::InvalidIdentity for malformed files or a key that is not the certificate's;
// common::Errc::FileNotFound when the device is not enrolled.

[[nodiscard]] Result<void> SaveIdentity(Filesystem& fs, const std::filesystem::path& dir,
                                        const DeviceIdentity& identity);
[[nodiscard]] Result<DeviceIdentity> LoadIdentity(const Filesystem& fs,
                                                  const std::filesystem::path& dir);

}  // namespace upkeep::deviceapi
