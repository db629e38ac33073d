#pragma once

// Delivery of incidents to administrators (ADR 0007 "Incidents"): every row of the `incidents`
// table is POSTed to a webhook over HTTPS, signed with HMAC-SHA256
// (docs/formats/incident-webhook.md), and retried with exponential backoff until the receiver
// answers 2xx. The queue is the database, so nothing is lost across a restart, and several server
// processes sharing one database never send one incident at the same time:
//
// - A round (RunOnce) picks due incidents (undelivered, next_attempt_at reached, no live claim)
//   and claims each with one conditional UPDATE that sets a lease (claimed_until) and a random
//   claim token (claimed_by) only while the row is still unclaimed and undelivered. Exactly one
//   process's UPDATE changes the row (SQLite: one writer; PostgreSQL: the second UPDATE waits
//   for the first and re-checks the condition); the others skip it.
// - The claimant sends it, then records the outcome only while its claim token is still on the
//   row: delivered_at (2xx), or attempts + 1, last_error and the next attempt time.
// - A process that dies holding a claim leaves a lease that expires after claim_lease; the
//   incident is then sent again, with the same X-Upkeep-Delivery ID (receivers drop duplicates by
//   it). The lease is longer than one request can take, so a live claimant is never overtaken.
//   Clocks of the processes must agree to well within the lease.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/result.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/storage/database.hpp"

namespace upkeep::transport {
class HttpClient;
}

namespace upkeep::server {

// Debian's bundle of the system's trusted CAs, used when no CA file is configured.
inline constexpr const char* kSystemCaBundle = "/etc/ssl/certs/ca-certificates.crt";
// The shortest HMAC secret accepted, in bytes.
inline constexpr std::size_t kMinWebhookSecretBytes = 32;

struct IncidentDeliveryOptions {
  // Where incidents are POSTed. https:// only: plain http is refused for every host, since
  // incident detail is confidential (InvalidConfig).
  std::string webhook_url;
  // The file holding the HMAC-SHA256 key shared with the receiver: its bytes without one trailing
  // line ending ("\n" or "\r\n"), at least kMinWebhookSecretBytes long. Never logged.
  std::string secret_file;
  // CA certificates (PEM) trusted for the receiver's certificate; empty: kSystemCaBundle.
  std::string ca_file;
  // Per request: connecting, and the whole exchange (including connecting).
  std::chrono::seconds connect_timeout{10};
  std::chrono::seconds request_timeout{30};
  // After the n-th failed attempt (n >= 1) the next waits d = min(retry_cap, retry_base *
  // 2^(n-1)); with jitter, a uniformly random time in [d/2, d] (whole seconds), so processes and
  // incidents that failed together do not retry together.
  std::chrono::seconds retry_base{30};
  std::chrono::seconds retry_cap{3600};
  bool jitter = true;
  // How long a claim holds an incident; at least twice request_timeout (InvalidConfig).
  std::chrono::seconds claim_lease{300};
  // Incidents attempted per round at most.
  std::size_t batch_size = 100;
  // Recorded in delivered_by; empty: "HOSTNAME:PID".
  std::string instance_name;
};

// What one round did.
struct DeliveryRound {
  std::size_t delivered = 0;  // answered 2xx and recorded
  std::size_t failed = 0;     // attempted and scheduled again
  std::size_t skipped = 0;    // claimed by another process first
};

class IncidentDelivery {
 public:
  // Reads the secret and checks the options. Errc::InvalidConfig: the URL is not https:// (or is
  // malformed), the secret file cannot be read or is shorter than kMinWebhookSecretBytes, the CA
  // file cannot be read, a timeout or retry_base is 0, retry_cap < retry_base, claim_lease <
  // 2 * request_timeout, batch_size is 0. `db` and `clock` must outlive the object.
  [[nodiscard]] static Result<std::unique_ptr<IncidentDelivery>> Create(
      storage::Database& db, const Clock& clock, IncidentDeliveryOptions options);
  ~IncidentDelivery();
  IncidentDelivery(const IncidentDelivery&) = delete;
  IncidentDelivery& operator=(const IncidentDelivery&) = delete;

  // One round: claims due incidents one at a time (oldest due first, at most batch_size), sends
  // each and records the outcome. A failed delivery is not an error of the round (it is recorded
  // on the incident); a database error ends the round and is returned (an incident claimed then
  // is retried once its lease ends). Rounds of one object run one at a time.
  [[nodiscard]] Result<DeliveryRound> RunOnce();

  // Makes a running round end after the incident in flight, and every later round do nothing.
  // For shutdown; thread-safe.
  void Cancel() { cancelled_ = true; }

 private:
  IncidentDelivery(storage::Database& db, const Clock& clock, IncidentDeliveryOptions options,
                   crypto::SecretString secret, std::unique_ptr<transport::HttpClient> client);
  // The delay before the attempt after `failed_attempts` failures.
  std::int64_t RetryDelaySeconds(std::int64_t failed_attempts);
  std::string NewClaimToken();

  storage::Database& db_;
  const Clock& clock_;
  IncidentDeliveryOptions options_;
  crypto::SecretString secret_;
  std::unique_ptr<transport::HttpClient> client_;
  std::atomic<bool> cancelled_{false};
  std::mutex round_mutex_;  // one round at a time; guards random_ and claims_
  std::mt19937_64 random_;
  std::uint64_t claims_ = 0;
};

// The signature header's value for a webhook request: "sha256=" and the lowercase hex
// HMAC-SHA256 under `secret` of the decimal `timestamp`, ".", and the body.
[[nodiscard]] Result<std::string> WebhookSignature(std::string_view secret,
                                                   std::int64_t timestamp, std::string_view body);

// One incident and its delivery state (upkeep-server admin incidents list).
struct IncidentRecord {
  std::string incident_id;
  std::string device_id;
  std::string kind;
  std::int64_t received_at = 0;
  std::optional<std::int64_t> delivered_at;
  std::string delivered_by;
  std::int64_t attempts = 0;
  std::int64_t next_attempt_at = 0;
  std::optional<std::int64_t> last_attempt_at;
  std::string last_error;
};

// Incidents by time received (oldest first), at most `limit`; only undelivered ones when asked.
[[nodiscard]] Result<std::vector<IncidentRecord>> ListIncidents(storage::Database& db,
                                                                bool undelivered_only,
                                                                std::size_t limit = 1000);

}  // namespace upkeep::server
