#include "upkeep/server/incident_delivery.hpp"

#include <unistd.h>

#include <algorithm>

#include "upkeep/common/encoding.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/common/utf8.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/server/https_server.hpp"
#include "upkeep/transport/http_client.hpp"

namespace upkeep::server {

namespace {

using metadata::Json;

constexpr std::size_t kMaxSecretFileBytes = 4096;
constexpr std::size_t kMaxCaFileBytes = 16 << 20;
constexpr std::size_t kMaxErrorLength = 500;

std::int64_t Seconds(Clock::TimePoint t) { return t.time_since_epoch().count(); }

Error Bad(const std::string& what) { return Error(Errc::InvalidConfig, "incidents: " + what); }

std::string DefaultInstanceName() {
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return PrintableText(host) + ":" + std::to_string(::getpid());
}

// The webhook body (docs/formats/incident-webhook.md), canonical JSON.
Result<std::string> WebhookBody(const storage::Row& row) {
  UPKEEP_ASSIGN_OR_RETURN(std::string incident_id, row.Get<std::string>(0));
  UPKEEP_ASSIGN_OR_RETURN(std::string device_id, row.Get<std::string>(1));
  UPKEEP_ASSIGN_OR_RETURN(std::string kind, row.Get<std::string>(2));
  UPKEEP_ASSIGN_OR_RETURN(std::string body, row.Get<std::string>(3));
  UPKEEP_ASSIGN_OR_RETURN(std::int64_t received_at, row.Get<std::int64_t>(4));
  UPKEEP_ASSIGN_OR_RETURN(std::optional<std::string> model, row.Get<std::optional<std::string>>(6));
  // The device's report is stored as canonical JSON; a row that is not JSON (written by other
  // code) still goes out, as a string.
  auto report = metadata::ParseJson(body);
  Json doc{{"type", "incident"},
           {"version", 1},
           {"incident_id", incident_id},
           {"kind", kind},
           {"device_id", device_id},
           {"device_model", model ? Json(*model) : Json()},
           {"received_at", received_at},
           {"report", report ? std::move(*report) : Json(body)}};
  auto canonical = metadata::Canonicalize(doc);
  if (!canonical) return metadata::DumpJson(doc);  // a number the canonical form lacks
  return canonical;
}

std::string Truncated(std::string text) {
  if (text.size() > kMaxErrorLength) text.resize(kMaxErrorLength);
  return PrintableText(text);
}

}  // namespace

Result<std::string> WebhookSignature(std::string_view secret, std::int64_t timestamp,
                                     std::string_view body) {
  std::string message = std::to_string(timestamp);
  message += '.';
  message.append(body);
  UPKEEP_ASSIGN_OR_RETURN(std::vector<std::uint8_t> mac, crypto::HmacSha256(secret, message));
  return "sha256=" + HexEncode(mac);
}

Result<std::unique_ptr<IncidentDelivery>> IncidentDelivery::Create(
    storage::Database& db, const Clock& clock, IncidentDeliveryOptions options) {
  const std::string& url = options.webhook_url;
  if (url.size() <= 8 || url.compare(0, 8, "https://") != 0) {
    return Bad("webhook_url must be an https:// URL");
  }
  if (url.find_first_of(" \t\r\n") != std::string::npos) {
    return Bad("webhook_url must not contain white space");
  }
  if (options.connect_timeout.count() <= 0 || options.request_timeout.count() <= 0) {
    return Bad("timeouts must be at least 1 second");
  }
  if (options.retry_base.count() <= 0 || options.retry_cap < options.retry_base) {
    return Bad("retry_base must be at least 1 second and retry_cap at least retry_base");
  }
  if (options.claim_lease < 2 * options.request_timeout) {
    return Bad("claim_lease must be at least twice the request timeout");
  }
  if (options.batch_size == 0) return Bad("batch_size must be at least 1");
  if (options.secret_file.empty()) return Bad("secret_file is required");

  const LocalFilesystem fs;
  auto secret_text = fs.ReadFile(options.secret_file, kMaxSecretFileBytes);
  if (!secret_text) return Bad("secret_file: " + secret_text.error().ToString());
  // One trailing line ending is not part of the key (files written by `echo` or an editor).
  std::string text = std::move(*secret_text);
  if (text.ends_with("\n")) text.pop_back();
  if (text.ends_with("\r")) text.pop_back();
  crypto::SecretString key(std::move(text));
  crypto::Cleanse(text);
  if (key.view().size() < kMinWebhookSecretBytes) {
    return Bad("secret_file " + options.secret_file + " holds fewer than " +
               std::to_string(kMinWebhookSecretBytes) + " bytes");
  }

  const std::string ca = options.ca_file.empty() ? kSystemCaBundle : options.ca_file;
  if (auto ca_text = fs.ReadFile(ca, kMaxCaFileBytes); !ca_text) {
    return Bad("ca_file: " + ca_text.error().ToString());
  }
  transport::HttpClientOptions ho;
  ho.connect_timeout = options.connect_timeout;
  ho.total_timeout = options.request_timeout;
  ho.low_speed_time = options.request_timeout;
  ho.server_ca_file = ca;
  ho.max_response_bytes = 64 * 1024;
  ho.user_agent = "upkeep-server/incidents";
  auto client = transport::HttpClient::Create(std::move(ho));
  if (!client) return Bad(client.error().ToString());
  if (options.instance_name.empty()) options.instance_name = DefaultInstanceName();
  return std::unique_ptr<IncidentDelivery>(new IncidentDelivery(
      db, clock, std::move(options), std::move(key), std::move(*client)));
}

IncidentDelivery::IncidentDelivery(storage::Database& db, const Clock& clock,
                                   IncidentDeliveryOptions options, crypto::SecretString secret,
                                   std::unique_ptr<transport::HttpClient> client)
    : db_(db),
      clock_(clock),
      options_(std::move(options)),
      secret_(std::move(secret)),
      client_(std::move(client)),
      random_(std::random_device{}()) {}

IncidentDelivery::~IncidentDelivery() = default;

std::int64_t IncidentDelivery::RetryDelaySeconds(std::int64_t failed_attempts) {
  const std::int64_t cap = options_.retry_cap.count();
  std::int64_t delay = options_.retry_base.count();
  for (std::int64_t i = 1; i < failed_attempts && delay < cap; ++i) delay *= 2;
  delay = std::min(delay, cap);
  if (!options_.jitter) return delay;
  std::uniform_int_distribution<std::int64_t> pick((delay + 1) / 2, delay);
  return pick(random_);
}

std::string IncidentDelivery::NewClaimToken() {
  std::uniform_int_distribution<std::uint64_t> pick;
  return options_.instance_name + "/" + std::to_string(++claims_) + "/" +
         std::to_string(pick(random_));
}

Result<DeliveryRound> IncidentDelivery::RunOnce() {
  std::lock_guard<std::mutex> lock(round_mutex_);
  DeliveryRound round;
  if (cancelled_) return round;
  const std::int64_t started = Seconds(clock_.Now());
  // The batch size is the program's own number, not input: it is written into the SQL.
  UPKEEP_ASSIGN_OR_RETURN(
      storage::Rows due,
      db_.Query("SELECT incident_id FROM incidents WHERE delivered_at IS NULL AND "
                "next_attempt_at <= $1 AND claimed_until <= $1 "
                "ORDER BY next_attempt_at, received_at, incident_id LIMIT " +
                    std::to_string(options_.batch_size),
                {started}));
  for (const storage::Row& candidate : due) {
    if (cancelled_) break;
    UPKEEP_ASSIGN_OR_RETURN(std::string id, candidate.Get<std::string>(0));
    const std::int64_t now = Seconds(clock_.Now());
    const std::string token = NewClaimToken();
    auto claimed = db_.Exec(
        "UPDATE incidents SET claimed_until = $1, claimed_by = $2 WHERE incident_id = $3 AND "
        "delivered_at IS NULL AND next_attempt_at <= $4 AND claimed_until <= $4",
        {now + options_.claim_lease.count(), token, id, now});
    if (!claimed && claimed.error().code() == storage::Errc::Conflict) {
      ++round.skipped;  // a concurrent claim won
      continue;
    }
    if (!claimed) return std::move(claimed).error();
    if (*claimed != 1) {
      ++round.skipped;
      continue;
    }

    UPKEEP_ASSIGN_OR_RETURN(
        storage::Rows rows,
        db_.Query("SELECT i.incident_id, i.device_id, i.kind, i.body, i.received_at, i.attempts, "
                  "d.model FROM incidents i LEFT JOIN devices d ON d.id = i.device_id "
                  "WHERE i.incident_id = $1",
                  {id}));
    if (rows.empty()) continue;  // removed meanwhile
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t attempts, rows[0].Get<std::int64_t>(5));

    std::string failure;
    auto body = WebhookBody(rows[0]);
    if (!body) {
      failure = body.error().ToString();
    } else {
      const std::int64_t timestamp = Seconds(clock_.Now());
      auto signature = WebhookSignature(secret_.view(), timestamp, *body);
      if (!signature) {
        failure = signature.error().ToString();
      } else {
        auto answer = client_->Post(options_.webhook_url, *body,
                                    {{"X-Upkeep-Event", "incident"},
                                     {"X-Upkeep-Delivery", id},
                                     {"X-Upkeep-Timestamp", std::to_string(timestamp)},
                                     {"X-Upkeep-Signature", *signature}});
        if (!answer) {
          failure = answer.error().ToString();
        } else if (!answer->ok()) {
          failure = "the receiver answered HTTP " + std::to_string(answer->status);
        }
      }
    }

    const std::int64_t done = Seconds(clock_.Now());
    if (failure.empty()) {
      UPKEEP_ASSIGN_OR_RETURN(
          std::int64_t recorded,
          db_.Exec("UPDATE incidents SET delivered_at = $1, delivered_by = $2, "
                   "attempts = attempts + 1, last_attempt_at = $1, last_error = '', "
                   "claimed_until = 0, claimed_by = '' WHERE incident_id = $3 AND claimed_by = $4",
                   {done, options_.instance_name, id, token}));
      if (recorded != 1) {
        log::warn("incidents: {} delivered after its claim ended", PrintableText(id));
      }
      ++round.delivered;
      log::info("incidents: delivered {} (attempt {})", PrintableText(id), attempts + 1);
    } else {
      const std::int64_t next = done + RetryDelaySeconds(attempts + 1);
      failure = Truncated(std::move(failure));
      UPKEEP_TRY(
          db_.Exec("UPDATE incidents SET attempts = attempts + 1, last_attempt_at = $1, "
                   "next_attempt_at = $2, last_error = $3, claimed_until = 0, claimed_by = '' "
                   "WHERE incident_id = $4 AND claimed_by = $5",
                   {done, next, failure, id, token}));
      ++round.failed;
      log::warn("incidents: delivering {} failed (attempt {}, next in {} s): {}",
                PrintableText(id), attempts + 1, next - done, failure);
    }
  }
  return round;
}

Result<std::vector<IncidentRecord>> ListIncidents(storage::Database& db, bool undelivered_only,
                                                  std::size_t limit) {
  // `limit` is the caller's number, not text: it is written into the SQL.
  UPKEEP_ASSIGN_OR_RETURN(
      storage::Rows rows,
      db.Query(std::string("SELECT incident_id, device_id, kind, received_at, delivered_at, "
                           "delivered_by, attempts, next_attempt_at, last_attempt_at, last_error "
                           "FROM incidents ") +
               (undelivered_only ? "WHERE delivered_at IS NULL " : "") +
               "ORDER BY received_at, incident_id LIMIT " + std::to_string(limit)));
  std::vector<IncidentRecord> out;
  out.reserve(rows.size());
  for (const storage::Row& r : rows) {
    IncidentRecord i;
    UPKEEP_ASSIGN_OR_RETURN(i.incident_id, r.Get<std::string>(0));
    UPKEEP_ASSIGN_OR_RETURN(i.device_id, r.Get<std::string>(1));
    UPKEEP_ASSIGN_OR_RETURN(i.kind, r.Get<std::string>(2));
    UPKEEP_ASSIGN_OR_RETURN(i.received_at, r.Get<std::int64_t>(3));
    UPKEEP_ASSIGN_OR_RETURN(i.delivered_at, r.Get<std::optional<std::int64_t>>(4));
    UPKEEP_ASSIGN_OR_RETURN(i.delivered_by, r.Get<std::string>(5));
    UPKEEP_ASSIGN_OR_RETURN(i.attempts, r.Get<std::int64_t>(6));
    UPKEEP_ASSIGN_OR_RETURN(i.next_attempt_at, r.Get<std::int64_t>(7));
    UPKEEP_ASSIGN_OR_RETURN(i.last_attempt_at, r.Get<std::optional<std::int64_t>>(8));
    UPKEEP_ASSIGN_OR_RETURN(i.last_error, r.Get<std::string>(9));
    out.push_back(std::move(i));
  }
  return out;
}

}  // namespace upkeep::server
