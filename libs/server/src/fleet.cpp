#include "upkeep/server/fleet.hpp"

#include <sys/random.h>

#include <algorithm>
#include <array>
#include <cerrno>

#include "names.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/metadata/json_reader.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/server/campaigns.hpp"

namespace upkeep::server {

namespace {

namespace x509 = crypto::x509;
using metadata::Json;
using metadata::JsonReader;
using metadata::StringRules;

constexpr metadata::Errc kInvalid = metadata::Errc::InvalidMetadata;
constexpr std::size_t kMaxIdLength = 128;
constexpr std::size_t kMaxTextLength = 4096;
constexpr std::size_t kMaxTrackedAddresses = 100000;
constexpr std::uint64_t kMaxCounter = static_cast<std::uint64_t>(INT64_MAX);

// ---- answers ----

Response JsonResponse(unsigned status, const Json& body) {
  Response r;
  r.status = status;
  r.body = metadata::DumpJson(body);
  return r;
}

Response Fail(unsigned status, const char* code, const std::string& message) {
  return JsonResponse(status, Json{{"error", code}, {"message", message}});
}

Response BadRequest(const Error& e) { return Fail(400, "bad_request", e.message()); }

Response Unauthenticated(const std::string& message) {
  return Fail(401, "unauthenticated", message);
}

// A database failure: 503 when it may pass (locked, unreachable), 500 otherwise. The detail goes
// to the log, not to the device.
Response DatabaseFailure(const char* what, const Error& e) {
  if (e.code() == storage::Errc::Unavailable || e.code() == storage::Errc::Conflict) {
    log::warn("fleet: {}: database unavailable: {}", what, e.ToString());
    return Fail(503, "unavailable", "the database is unavailable; retry later");
  }
  log::error("fleet: {}: {}", what, e.ToString());
  return Fail(500, "internal", "internal error");
}

// The answer when an enrolment transaction failed: the device's key type, a certificate that
// could not be issued, or the database.
Response EnrolFailure(const Error& e) {
  if (e.code() == x509::Errc::UnsupportedKeyType) {
    return BadRequest(Error(kInvalid, "csr: " + e.message()));
  }
  if (e.code().category() == x509::ErrcCategory()) {
    log::error("fleet: enrol: issuing a certificate failed: {}", e.ToString());
    return Fail(500, "internal", "internal error");
  }
  return DatabaseFailure("enrol", e);
}

// ---- parsing ----

// Identifiers the device chooses (report and incident IDs, models): [A-Za-z0-9._-]{1,max}.
Result<std::string> Identifier(JsonReader& r, std::string_view key, std::size_t max) {
  UPKEEP_ASSIGN_OR_RETURN(std::string s, r.String(key, StringRules{.max_length = max}));
  if (!std::all_of(s.begin(), s.end(), IsNameChar)) {
    return r.Fail(key, "must hold only letters, digits, '.', '_' and '-'");
  }
  return s;
}

// A string or null; absent is null.
Result<std::optional<std::string>> NullableString(JsonReader& r, std::string_view key) {
  const Json* v = r.Optional(key);
  if (v == nullptr || v->is_null()) return std::optional<std::string>();
  return r.OptionalString(key, StringRules{.max_length = kMaxTextLength});
}

Result<Json> ParseObject(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, metadata::ParseJson(body));
  if (!doc.is_object()) return Error(kInvalid, "document: must be an object");
  return doc;
}

Result<std::string> Canonical(const Json& j) { return metadata::Canonicalize(j); }

Result<void> CheckComponents(JsonReader& top, std::vector<std::string>& installed_targets) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader components, top.Object("components"));
  if (components.json().size() > 64) return top.Fail("components", "too many components");
  for (const auto& [name, value] : components.json().items()) {
    if (name.empty() || name.size() > 64 || !std::all_of(name.begin(), name.end(), IsNameChar)) {
      return top.Fail("components", "a component name is not allowed");
    }
    UPKEEP_ASSIGN_OR_RETURN(JsonReader c, components.Object(name));
    UPKEEP_TRY(c.String("version", StringRules{.max_length = 256}));
    UPKEEP_ASSIGN_OR_RETURN(std::optional<std::string> target, NullableString(c, "target"));
    if (target) installed_targets.push_back(std::move(*target));
    UPKEEP_TRY(c.OptionalUint("security_version", {.max = kMaxCounter}));
    UPKEEP_TRY(c.NoUnknownKeys());
  }
  return Ok();
}

Result<void> CheckPolicy(JsonReader& top) {
  UPKEEP_ASSIGN_OR_RETURN(std::optional<JsonReader> p, top.OptionalObject("policy"));
  if (!p) return Ok();
  for (const char* key : {"auto_install", "notifications", "security_auto_install"}) {
    UPKEEP_TRY(p->OptionalBool(key));
  }
  if (const Json* until = p->Optional("postponed_until"); until != nullptr && !until->is_null()) {
    UPKEEP_TRY(p->Uint("postponed_until", {.max = kMaxCounter}));
  }
  return p->NoUnknownKeys();
}

Result<void> CheckUpdate(JsonReader& top) {
  UPKEEP_ASSIGN_OR_RETURN(std::optional<JsonReader> u, top.OptionalObject("update"));
  if (!u) return Ok();
  UPKEEP_TRY(Identifier(*u, "state", 64));
  UPKEEP_TRY(NullableString(*u, "target"));
  return u->NoUnknownKeys();
}

// The director's root version the device holds (0 when absent).
Result<std::uint64_t> CheckDirectorVersions(JsonReader& top) {
  UPKEEP_ASSIGN_OR_RETURN(std::optional<JsonReader> d, top.OptionalObject("director"));
  if (!d) return std::uint64_t{0};
  UPKEEP_ASSIGN_OR_RETURN(std::optional<std::uint64_t> root_version,
                          d->OptionalUint("root_version", {.max = kMaxCounter}));
  UPKEEP_TRY(d->OptionalUint("targets_version", {.max = kMaxCounter}));
  UPKEEP_TRY(d->NoUnknownKeys());
  return root_version.value_or(0);
}

Result<void> CheckEvents(JsonReader& top) {
  const Json* events = top.Optional("events");
  if (events == nullptr) return Ok();
  if (!events->is_array()) return top.Fail("events", "must be an array");
  if (events->size() > 1000) return top.Fail("events", "too many events");
  for (std::size_t i = 0; i < events->size(); ++i) {
    UPKEEP_ASSIGN_OR_RETURN(
        JsonReader e, JsonReader::Of((*events)[i], kInvalid, "events[" + std::to_string(i) + "]"));
    UPKEEP_TRY(e.Uint("time", {.max = kMaxCounter}));
    UPKEEP_TRY(e.String("id", StringRules{.max_length = 128}));
    if (const Json* data = e.Optional("data"); data != nullptr && !data->is_object()) {
      return e.Fail("data", "must be an object");
    }
    UPKEEP_TRY(e.NoUnknownKeys());
  }
  return Ok();
}

bool IsOutcome(const std::string& s) {
  return s == "in_progress" || s == "committed" || s == "rolled_back" || s == "failed" ||
         s == "cancelled";
}

// ---- randomness and tokens ----

Result<void> RandomBytes(std::uint8_t* out, std::size_t n) {
  while (n > 0) {
    const ssize_t got = ::getrandom(out, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return Error(Errc::InvalidArgument, "getrandom failed");
    }
    out += got;
    n -= static_cast<std::size_t>(got);
  }
  return Ok();
}

std::string TokenDigest(std::string_view token) { return HexEncode(crypto::Sha256(token)); }

Result<bool> DeviceExists(storage::Session& db, const std::string& device_id) {
  UPKEEP_ASSIGN_OR_RETURN(storage::Rows rows,
                          db.Query("SELECT id FROM devices WHERE id = $1", {device_id}));
  return !rows.empty();
}

// Raised inside a check-in transaction when the counter is not above the stored one.
constexpr std::string_view kReplayed = "replayed check-in counter";

}  // namespace

// ---- request parsers ----

Result<EnrolRequest> ParseEnrolRequest(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseObject(body));
  JsonReader r(doc, kInvalid, "");
  EnrolRequest out;
  UPKEEP_ASSIGN_OR_RETURN(std::optional<std::string> token,
                          r.OptionalString("token", StringRules{.max_length = 256}));
  out.token = token.value_or("");
  UPKEEP_ASSIGN_OR_RETURN(out.model, Identifier(r, "model", 64));
  UPKEEP_ASSIGN_OR_RETURN(out.serial, r.String("serial", StringRules{.max_length = 256}));
  UPKEEP_ASSIGN_OR_RETURN(out.csr,
                          r.String("csr", StringRules{.max_length = x509::kMaxInputBytes}));
  UPKEEP_TRY(r.NoUnknownKeys());
  return out;
}

Result<CheckinRequest> ParseCheckinRequest(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseObject(body));
  JsonReader r(doc, kInvalid, "");
  CheckinRequest out;
  UPKEEP_ASSIGN_OR_RETURN(std::uint64_t counter, r.Uint("counter", {.max = kMaxCounter}));
  out.counter = static_cast<std::int64_t>(counter);
  UPKEEP_ASSIGN_OR_RETURN(out.model, Identifier(r, "model", 64));
  UPKEEP_ASSIGN_OR_RETURN(out.hardware, Identifier(r, "hardware", 64));
  UPKEEP_TRY(CheckComponents(r, out.installed_targets));
  UPKEEP_ASSIGN_OR_RETURN(out.director_root_version, CheckDirectorVersions(r));
  UPKEEP_TRY(CheckPolicy(r));
  UPKEEP_TRY(CheckUpdate(r));
  UPKEEP_TRY(r.NoUnknownKeys());
  UPKEEP_ASSIGN_OR_RETURN(out.components_json, Canonical(doc["components"]));
  UPKEEP_ASSIGN_OR_RETURN(out.policy_json,
                          Canonical(doc.contains("policy") ? doc["policy"] : Json::object()));
  UPKEEP_ASSIGN_OR_RETURN(out.update_json,
                          Canonical(doc.contains("update") ? doc["update"] : Json::object()));
  return out;
}

Result<ReportRequest> ParseReportRequest(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseObject(body));
  JsonReader r(doc, kInvalid, "");
  ReportRequest out;
  UPKEEP_ASSIGN_OR_RETURN(out.report_id, Identifier(r, "report_id", kMaxIdLength));
  UPKEEP_ASSIGN_OR_RETURN(out.update_id, Identifier(r, "update_id", kMaxIdLength));
  UPKEEP_ASSIGN_OR_RETURN(out.target, r.String("target", StringRules{.max_length = 1024}));
  UPKEEP_ASSIGN_OR_RETURN(out.outcome, r.String("outcome", StringRules{.max_length = 32}));
  if (!IsOutcome(out.outcome)) {
    return r.Fail("outcome", "must be in_progress, committed, rolled_back, failed or cancelled");
  }
  UPKEEP_TRY(CheckEvents(r));
  UPKEEP_TRY(r.NoUnknownKeys());
  UPKEEP_ASSIGN_OR_RETURN(out.body_json, Canonical(doc));
  return out;
}

Result<IncidentRequest> ParseIncidentRequest(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseObject(body));
  JsonReader r(doc, kInvalid, "");
  IncidentRequest out;
  UPKEEP_ASSIGN_OR_RETURN(out.incident_id, Identifier(r, "incident_id", kMaxIdLength));
  UPKEEP_ASSIGN_OR_RETURN(out.kind, Identifier(r, "kind", 64));
  for (const char* key : {"source", "target", "error", "detail"}) {
    UPKEEP_TRY(r.OptionalString(key, StringRules{.max_length = kMaxTextLength}));
  }
  UPKEEP_TRY(r.OptionalUint("time", {.max = kMaxCounter}));
  UPKEEP_TRY(r.NoUnknownKeys());
  UPKEEP_ASSIGN_OR_RETURN(out.body_json, Canonical(doc));
  return out;
}

// ---- administration ----

Result<std::string> NewDeviceId() {
  std::array<std::uint8_t, 8> bytes{};
  UPKEEP_TRY(RandomBytes(bytes.data(), bytes.size()));
  return "d-" + HexEncode(bytes);
}

Result<std::string> CreateEnrolmentToken(storage::Database& db, const Clock& clock,
                                         const std::string& model, const std::string& group,
                                         std::chrono::seconds valid_for) {
  if (!IsValidName(model, 64)) return Error(Errc::InvalidArgument, "model: not a valid name");
  if (!group.empty() && !IsValidName(group, 64)) {
    return Error(Errc::InvalidArgument, "group: not a valid name");
  }
  if (valid_for.count() <= 0) return Error(Errc::InvalidArgument, "validity must be positive");
  std::array<std::uint8_t, 24> bytes{};
  UPKEEP_TRY(RandomBytes(bytes.data(), bytes.size()));
  std::string token = "ut-" + HexEncode(bytes);
  const std::int64_t now = Seconds(clock.Now());
  auto inserted = db.Exec(
      "INSERT INTO enrolment_tokens (token_sha256, model, device_group, created_at, expires_at) "
      "VALUES ($1, $2, $3, $4, $5)",
      {TokenDigest(token), model, group, now, now + valid_for.count()});
  if (!inserted) return std::move(inserted).error().WithContext("storing the enrolment token");
  return token;
}

Result<std::vector<DeviceRecord>> ListDevices(storage::Database& db) {
  UPKEEP_ASSIGN_OR_RETURN(
      storage::Rows rows,
      db.Query(
          "SELECT id, model, serial, hardware, device_group, certificate_serial, blocked, "
          "enrolled_at, last_checkin_at, checkin_counter FROM devices ORDER BY enrolled_at, id"));
  std::vector<DeviceRecord> out;
  for (const auto& row : rows) {
    DeviceRecord d;
    UPKEEP_ASSIGN_OR_RETURN(d.id, row.Get<std::string>(0));
    UPKEEP_ASSIGN_OR_RETURN(d.model, row.Get<std::string>(1));
    UPKEEP_ASSIGN_OR_RETURN(d.serial, row.Get<std::string>(2));
    UPKEEP_ASSIGN_OR_RETURN(d.hardware, row.Get<std::string>(3));
    UPKEEP_ASSIGN_OR_RETURN(d.group, row.Get<std::string>(4));
    UPKEEP_ASSIGN_OR_RETURN(d.certificate_serial, row.Get<std::string>(5));
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t blocked, row.Get<std::int64_t>(6));
    d.blocked = blocked != 0;
    UPKEEP_ASSIGN_OR_RETURN(d.enrolled_at, row.Get<std::int64_t>(7));
    UPKEEP_ASSIGN_OR_RETURN(d.last_checkin_at, row.Get<std::optional<std::int64_t>>(8));
    UPKEEP_ASSIGN_OR_RETURN(d.checkin_counter, row.Get<std::int64_t>(9));
    out.push_back(std::move(d));
  }
  return out;
}

Result<void> BlockDevice(storage::Database& db, const std::string& device_id) {
  UPKEEP_ASSIGN_OR_RETURN(std::int64_t n,
                          db.Exec("UPDATE devices SET blocked = 1 WHERE id = $1", {device_id}));
  if (n == 0) return Error(Errc::DeviceNotFound, "no device " + device_id);
  return Ok();
}

Result<void> AssignTarget(storage::Database& db, const std::string& device_id,
                          const std::string& target_path, std::uint64_t length,
                          const std::string& sha256_hex) {
  // The director's own rules, checked here so that no assignment can make check-ins fail later.
  if (target_path.size() > 1024 || !metadata::ValidateTargetPath(target_path)) {
    return Error(Errc::InvalidArgument, "target: not a valid target path");
  }
  if (length == 0 || length > kMaxCounter) {
    return Error(Errc::InvalidArgument, "length: must be positive");
  }
  if (sha256_hex.size() != 64 || !IsLowerHex(sha256_hex)) {
    return Error(Errc::InvalidArgument, "sha256: must be 64 lowercase hex digits");
  }
  UPKEEP_ASSIGN_OR_RETURN(bool exists, DeviceExists(db, device_id));
  if (!exists) return Error(Errc::DeviceNotFound, "no device " + device_id);
  return db.InTransaction([&](storage::Tx& tx) -> Result<void> {
    UPKEEP_TRY(tx.Exec("DELETE FROM director_assignments WHERE device_id = $1 AND target_path = $2",
                       {device_id, target_path}));
    UPKEEP_TRY(
        tx.Exec("INSERT INTO director_assignments (device_id, target_path, length, "
                "sha256, assigned_at) VALUES ($1, $2, $3, $4, $5)",
                {device_id, target_path, static_cast<std::int64_t>(length), sha256_hex,
                 Seconds(SystemClock::Process().Now())}));
    return Ok();
  });
}

Result<void> UnassignTarget(storage::Database& db, const std::string& device_id,
                            const std::string& target_path) {
  UPKEEP_ASSIGN_OR_RETURN(
      std::int64_t n,
      db.Exec("DELETE FROM director_assignments WHERE device_id = $1 AND target_path = $2",
              {device_id, target_path}));
  if (n == 0) {
    return Error(Errc::DeviceNotFound, "device " + device_id + " has no assignment " + target_path);
  }
  return Ok();
}

// ---- Fleet ----

Fleet::Fleet(storage::Database& db, const Clock& clock, FleetOptions options,
             crypto::x509::TlsKey ca_key, Clock::TimePoint ca_not_after,
             std::optional<metadata::Root> director_root)
    : db_(db),
      clock_(clock),
      options_(std::move(options)),
      ca_key_(std::move(ca_key)),
      director_root_(std::move(director_root)),
      ca_not_after_(ca_not_after) {
  if (options_.director) {
    for (const std::string& bytes : options_.director->roots) {
      if (auto root = metadata::ParseRoot(bytes)) director_roots_.emplace_back(root->version, bytes);
    }
  }
}

Result<std::unique_ptr<Fleet>> Fleet::Create(storage::Database& db, const Clock& clock,
                                             FleetOptions options) {
  auto key = x509::TlsKey::FromPem(options.device_ca_key_pem);
  if (!key) return Error(Errc::InvalidDeviceCa, "device CA key: " + key.error().message());
  auto cert = x509::ParseCertificate(options.device_ca_pem);
  if (!cert) return Error(Errc::InvalidDeviceCa, "device CA: " + cert.error().message());
  if (!(cert->public_key == key->public_key())) {
    return Error(Errc::InvalidDeviceCa, "the device CA key does not match its certificate");
  }
  if (!options.manufacturer_group.empty() && !IsValidName(options.manufacturer_group, 64)) {
    return Error(Errc::InvalidConfig, "manufacturer group: not a valid group name");
  }
  if (options.enrol_burst == 0 || options.enrol_refill_seconds == 0) {
    return Error(Errc::InvalidConfig, "enrolment rate limit must be positive");
  }
  std::optional<metadata::Root> director_root;
  if (options.director) {
    if (options.director->roots.empty()) {
      return Error(Errc::InvalidConfig, "director: no root");
    }
    auto root = metadata::ParseRoot(options.director->roots.back());
    if (!root) return Error(Errc::InvalidConfig, "director root: " + root.error().message());
    if (root->body.ConsistentSnapshot()) {
      return Error(Errc::InvalidConfig, "director root: consistent_snapshot must be false");
    }
    // Every root must parse and be valid JSON for the enrolment answer.
    for (const std::string& bytes : options.director->roots) {
      if (!metadata::ParseRoot(bytes)) return Error(Errc::InvalidConfig, "director: bad root");
    }
    director_root = std::move(*root);
  }
  return std::unique_ptr<Fleet>(new Fleet(db, clock, std::move(options), std::move(*key),
                                          cert->not_after, std::move(director_root)));
}

Handler Fleet::AsHandler() {
  return [this](const Request& r) { return Handle(r); };
}

Response Fleet::Handle(const Request& request) {
  const bool post = request.method == "POST";
  const std::string& path = request.path;
  const bool known = (post && (path == "/api/v1/enrol" || path == "/api/v1/checkin" ||
                               path == "/api/v1/reports" || path == "/api/v1/incidents")) ||
                     (request.method == "GET" && path == "/api/v1/support");
  if (!known) return Fail(404, "not_found", "no such endpoint");
  if (request.body.size() > options_.max_body_bytes) {
    return Fail(413, "too_large", "the request body is too large");
  }
  if (path == "/api/v1/enrol") return Enrol(request);
  Response refusal;
  auto device = Authenticate(request, refusal);
  if (!device) return refusal;
  if (path == "/api/v1/checkin") return Checkin(request, *device);
  if (path == "/api/v1/reports") return Report(request, *device);
  if (path == "/api/v1/incidents") return Incident(request, *device);
  return Support(*device);
}

Result<Fleet::Device> Fleet::Authenticate(const Request& request, Response& refusal) {
  if (request.peer_certificate_der.empty()) {
    refusal = Unauthenticated("a client certificate from the device CA is required");
    return Error(Errc::InvalidArgument, "no certificate");
  }
  const auto now = clock_.Now();
  const std::vector<std::uint8_t> digest = crypto::Sha256(request.peer_certificate_der);
  const std::string fingerprint(digest.begin(), digest.end());
  std::optional<VerifiedCertificate> info;
  {
    std::lock_guard lock(certificates_mutex_);
    if (auto it = certificates_.find(fingerprint); it != certificates_.end()) info = it->second;
  }
  if (!info) {
    auto verified = x509::VerifyIssuedBy(request.peer_certificate_der, options_.device_ca_pem, now);
    if (!verified) {
      refusal = Unauthenticated("the client certificate is not usable");
      return Error(Errc::InvalidArgument, verified.error().message());
    }
    info = VerifiedCertificate{verified->device_id, verified->serial_hex, verified->not_before,
                               std::min(verified->not_after, ca_not_after_)};
    std::lock_guard lock(certificates_mutex_);
    if (certificates_.size() >= kMaxTrackedAddresses) certificates_.clear();
    certificates_.emplace(fingerprint, *info);
  }
  if (now < info->not_before || now > info->not_after) {
    refusal = Unauthenticated("the client certificate is not usable");
    return Error(Errc::InvalidArgument, "certificate not valid now");
  }
  auto rows = db_.Query("SELECT id, model, blocked FROM devices WHERE certificate_serial = $1",
                        {info->serial_hex});
  if (!rows) {
    refusal = DatabaseFailure("authenticate", rows.error());
    return std::move(rows).error();
  }
  Device device;
  std::int64_t blocked = 0;
  if (rows->size() == 1) {
    auto id = (*rows)[0].Get<std::string>(0);
    auto model = (*rows)[0].Get<std::string>(1);
    auto b = (*rows)[0].Get<std::int64_t>(2);
    if (id && model && b) {
      device = Device{*id, *model};
      blocked = *b;
    }
  }
  // The certificate serial and the device ID it names must both match one device.
  if (device.id.empty() || device.id != info->device_id) {
    refusal = Unauthenticated("the client certificate names no enrolled device");
    return Error(Errc::DeviceNotFound, "unknown certificate");
  }
  if (blocked != 0) {
    refusal = Fail(403, "blocked", "this device is blocked");
    return Error(Errc::InvalidArgument, "blocked");
  }
  return device;
}

std::optional<std::int64_t> Fleet::TakeEnrolAttempt(const std::string& address) {
  const std::int64_t now = Seconds(clock_.Now());
  const double burst = options_.enrol_burst;
  const double per_second = 1.0 / options_.enrol_refill_seconds;
  std::lock_guard lock(buckets_mutex_);
  if (buckets_.size() >= kMaxTrackedAddresses && !buckets_.contains(address)) {
    // Forget addresses whose buckets are full again; they lose nothing.
    std::erase_if(buckets_, [&](const auto& kv) {
      return kv.second.tokens + static_cast<double>(now - kv.second.updated_at) * per_second >=
             burst;
    });
  }
  auto [it, fresh] = buckets_.try_emplace(address, Bucket{burst, now});
  Bucket& b = it->second;
  if (!fresh && now > b.updated_at) {
    b.tokens = std::min(burst, b.tokens + static_cast<double>(now - b.updated_at) * per_second);
  }
  b.updated_at = std::max(b.updated_at, now);
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return std::nullopt;
  }
  const double wait = (1.0 - b.tokens) / per_second;
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(wait + 0.999));
}

Response Fleet::Enrol(const Request& request) {
  if (auto wait = TakeEnrolAttempt(request.remote_address)) {
    Response r = Fail(429, "rate_limited", "too many enrolment attempts; retry later");
    r.headers.emplace_back("Retry-After", std::to_string(*wait));
    return r;
  }
  auto req = ParseEnrolRequest(request.body);
  if (!req) return BadRequest(req.error());
  if (req->token.empty()) {
    if (!options_.manufacturer_ca_pem.empty() && !request.peer_certificate_der.empty()) {
      return EnrolWithManufacturerCertificate(request, *req);
    }
    return Unauthenticated("an enrolment token or a manufacturer certificate is required");
  }
  auto csr = x509::ParseCsr(req->csr);
  if (!csr) return BadRequest(Error(kInvalid, "csr: " + csr.error().message()));
  auto device_id = NewDeviceId();
  if (!device_id) return Fail(500, "internal", "internal error");
  const auto now = clock_.Now();
  const x509::Validity validity{
      now - std::chrono::minutes(5),
      now + std::chrono::duration_cast<std::chrono::seconds>(options_.certificate_validity)};
  const std::int64_t t = Seconds(now);
  const std::string digest = TokenDigest(req->token);
  std::optional<x509::IssuedCertificate> cert;
  // Checking and consuming the token, issuing the certificate and recording the device is one
  // transaction: a token enrols one device, and nothing is signed for a token that is not valid.
  auto enrolled = db_.InTransaction([&](storage::Tx& tx) -> Result<bool> {
    UPKEEP_ASSIGN_OR_RETURN(
        storage::Rows rows,
        tx.Query("SELECT device_group FROM enrolment_tokens WHERE token_sha256 = $1 AND "
                 "used_by IS NULL AND expires_at > $2 AND model = $3",
                 {digest, t, req->model}));
    if (rows.size() != 1) return false;
    UPKEEP_ASSIGN_OR_RETURN(std::string group, rows[0].Get<std::string>(0));
    UPKEEP_ASSIGN_OR_RETURN(
        std::int64_t used,
        tx.Exec("UPDATE enrolment_tokens SET used_by = $1, used_at = $2 WHERE token_sha256 = $3 "
                "AND used_by IS NULL",
                {*device_id, t, digest}));
    if (used != 1) return false;
    UPKEEP_ASSIGN_OR_RETURN(
        cert, x509::IssueClientCertificate(options_.device_ca_pem, ca_key_, csr->public_key,
                                           *device_id, validity));
    UPKEEP_TRY(tx.Exec(
        "INSERT INTO devices (id, model, serial, hardware, device_group, certificate_serial, "
        "enrolled_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        {*device_id, req->model, req->serial, req->model, group, cert->serial_hex, t}));
    return true;
  });
  if (!enrolled) {
    return EnrolFailure(enrolled.error());
  }
  if (!*enrolled || !cert) {
    log::info("fleet: enrolment refused from {}: token unknown, used, expired or for another model",
              request.remote_address);
    return Unauthenticated("the enrolment token is not valid");
  }
  log::info("fleet: enrolled device {} (model {}) from {}", *device_id, req->model,
            request.remote_address);
  return EnrolAnswer(*device_id, cert->pem);
}

Response Fleet::EnrolAnswer(const std::string& device_id, const std::string& certificate_pem) {
  Json answer{{"device_id", device_id},
              {"certificate", certificate_pem},
              {"device_ca", options_.device_ca_pem}};
  if (options_.director) {
    auto root = metadata::ParseJson(options_.director->roots.back());
    if (!root) return Fail(500, "internal", "internal error");
    answer["director_root"] = std::move(*root);
  }
  return JsonResponse(200, answer);
}

Response Fleet::EnrolWithManufacturerCertificate(const Request& request,
                                                 const EnrolRequest& req) {
  const auto now = clock_.Now();
  auto maker = x509::VerifyIssuedBy(request.peer_certificate_der, options_.manufacturer_ca_pem, now);
  if (!maker) {
    log::info("fleet: enrolment refused from {}: manufacturer certificate: {}",
              request.remote_address, maker.error().message());
    return Unauthenticated("the manufacturer certificate is not valid");
  }
  if (maker->device_id != req.serial) {
    return BadRequest(Error(kInvalid, "serial: must be the name the manufacturer certificate holds"));
  }
  auto csr = x509::ParseCsr(req.csr);
  if (!csr) return BadRequest(Error(kInvalid, "csr: " + csr.error().message()));
  auto fresh_id = NewDeviceId();
  if (!fresh_id) return Fail(500, "internal", "internal error");
  const x509::Validity validity{
      now - std::chrono::minutes(5),
      now + std::chrono::duration_cast<std::chrono::seconds>(options_.certificate_validity)};
  const std::int64_t t = Seconds(now);
  const std::string maker_id = maker->sha256_fingerprint;
  std::string device_id;
  std::optional<x509::IssuedCertificate> cert;
  bool blocked = false;
  // A certificate enrols one device; enrolling again (a factory reset made a new key) re-keys
  // that device: its old client certificate stops working.
  auto enrolled = db_.InTransaction([&](storage::Tx& tx) -> Result<void> {
    UPKEEP_ASSIGN_OR_RETURN(
        storage::Rows rows,
        tx.Query("SELECT id, blocked FROM devices WHERE manufacturer_certificate = $1",
                 {maker_id}));
    device_id = *fresh_id;
    if (rows.size() == 1) {
      UPKEEP_ASSIGN_OR_RETURN(device_id, rows[0].Get<std::string>(0));
      UPKEEP_ASSIGN_OR_RETURN(std::int64_t b, rows[0].Get<std::int64_t>(1));
      blocked = b != 0;
      if (blocked) return Ok();
    }
    UPKEEP_ASSIGN_OR_RETURN(cert, x509::IssueClientCertificate(options_.device_ca_pem, ca_key_,
                                                               csr->public_key, device_id,
                                                               validity));
    if (rows.size() == 1) {
      UPKEEP_TRY(tx.Exec("UPDATE devices SET certificate_serial = $1, model = $2 WHERE id = $3",
                         {cert->serial_hex, req.model, device_id}));
      return Ok();
    }
    UPKEEP_TRY(tx.Exec(
        "INSERT INTO devices (id, model, serial, hardware, device_group, certificate_serial, "
        "enrolled_at, manufacturer_certificate) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        {device_id, req.model, req.serial, req.model, options_.manufacturer_group,
         cert->serial_hex, t, maker_id}));
    return Ok();
  });
  if (!enrolled) {
    return EnrolFailure(enrolled.error());
  }
  if (blocked) return Fail(403, "blocked", "this device is blocked");
  if (!cert) return Fail(500, "internal", "internal error");
  log::info("fleet: enrolled device {} (model {}) with a manufacturer certificate from {}",
            device_id, req.model, request.remote_address);
  return EnrolAnswer(device_id, cert->pem);
}

Response Fleet::Checkin(const Request& request, const Device& device) {
  auto req = ParseCheckinRequest(request.body);
  if (!req) return BadRequest(req.error());
  const auto now = clock_.Now();
  const std::string if_none_match = request.Header("if-none-match");
  // Recording the counter and signing the director's files for it are one transaction: the
  // answer's counter is the one stored, and a refused check-in signs nothing.
  auto director = db_.InTransaction([&](storage::Tx& tx) -> Result<DirectorAnswer> {
    // The counter must grow: the conditional update refuses a replayed or older check-in
    // atomically, whatever other check-ins run at the same time.
    UPKEEP_ASSIGN_OR_RETURN(
        std::int64_t updated,
        tx.Exec("UPDATE devices SET checkin_counter = $1, last_checkin_at = $2, model = $3, "
                "hardware = $4, components = $5, policy = $6, update_state = $7 WHERE id = $8 "
                "AND checkin_counter < $1",
                {req->counter, Seconds(now), req->model, req->hardware, req->components_json,
                 req->policy_json, req->update_json, device.id}));
    if (updated == 0) return Error(Errc::InvalidArgument, std::string(kReplayed));
    if (!options_.director) return DirectorAnswer{false, Json::object(), "", std::nullopt};
    return SignDirector(tx, device, *req, now, if_none_match);
  });
  if (!director) {
    if (director.error().code() == Errc::InvalidArgument &&
        director.error().message() == kReplayed) {
      return Fail(409, "conflict", "the check-in counter must be above the last one sent");
    }
    if (director.error().code().category() == storage::ErrcCategory()) {
      return DatabaseFailure("checkin", director.error());
    }
    log::error("fleet: checkin: signing the director's metadata for {} failed: {}", device.id,
               director.error().ToString());
    return Fail(500, "internal", "internal error");
  }
  Response r;
  if (director->not_modified) {
    r.status = 304;
    r.content_type.clear();
  } else {
    Json body{{"director", std::move(director->body)},
              {"next_checkin_seconds", options_.next_checkin_seconds}};
    if (director->install_window) body["install_window"] = std::move(*director->install_window);
    r = JsonResponse(200, body);
  }
  if (!director->etag.empty()) r.headers.emplace_back("ETag", director->etag);
  return r;
}

Result<Fleet::DirectorAnswer> Fleet::SignDirector(storage::Tx& tx, const Device& device,
                                                  const CheckinRequest& checkin,
                                                  Clock::TimePoint now,
                                                  const std::string& if_none_match) {
  const DirectorOptions& director = *options_.director;
  const std::int64_t t = Seconds(now);
  metadata::DirectorBuildRequest build;
  build.device_id = device.id;
  build.counter = static_cast<std::uint64_t>(checkin.counter);
  build.now = now;
  build.targets_validity = director.targets_validity;
  build.snapshot_validity = director.snapshot_validity;
  build.timestamp_validity = director.timestamp_validity;
  UPKEEP_ASSIGN_OR_RETURN(
      storage::Rows rows,
      tx.Query("SELECT hardware, device_group FROM devices WHERE id = $1", {device.id}));
  if (rows.size() != 1) return Error(Errc::DeviceNotFound, "no device " + device.id);
  DeviceView view;
  view.id = device.id;
  UPKEEP_ASSIGN_OR_RETURN(view.hardware, rows[0].Get<std::string>(0));
  UPKEEP_ASSIGN_OR_RETURN(view.group, rows[0].Get<std::string>(1));
  view.installed_targets = checkin.installed_targets;
  build.hardware = view.hardware;
  UPKEEP_ASSIGN_OR_RETURN(Direction direction, DirectDevice(tx, view, t));
  build.assignments = std::move(direction.targets);

  DirectorAnswer answer;
  if (direction.window) {
    answer.install_window =
        Json{{"not_before", direction.window->not_before}, {"not_after", direction.window->not_after}};
  }
  // What the answer says, apart from signatures and expiry times: unchanged means a device
  // holding the last answer (If-None-Match) may keep it while its timestamp is fresh.
  Json described = Json::array();
  for (const metadata::TargetFile& f : build.assignments) {
    const auto sha256 = f.hashes.find("sha256");
    described.push_back(
        Json::array({f.path, f.length, sha256 == f.hashes.end() ? "" : sha256->second}));
  }
  const Json digest_input{{"hardware", view.hardware},
                          {"targets", std::move(described)},
                          {"window", answer.install_window.value_or(Json())},
                          {"root", director_root_->version},
                          {"next", options_.next_checkin_seconds}};
  UPKEEP_ASSIGN_OR_RETURN(std::string digest_text, metadata::Canonicalize(digest_input));
  const std::string digest = HexEncode(crypto::Sha256(digest_text));

  UPKEEP_ASSIGN_OR_RETURN(
      storage::Rows state,
      tx.Query("SELECT targets_version, snapshot_version, timestamp_version, targets, snapshot, "
               "updated_at, answer_digest, etag FROM director_state WHERE device_id = $1",
               {device.id}));
  if (state.size() == 1) {
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t targets_version, state[0].Get<std::int64_t>(0));
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t snapshot_version, state[0].Get<std::int64_t>(1));
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t timestamp_version, state[0].Get<std::int64_t>(2));
    build.previous = {static_cast<std::uint64_t>(targets_version),
                      static_cast<std::uint64_t>(snapshot_version),
                      static_cast<std::uint64_t>(timestamp_version)};
    UPKEEP_ASSIGN_OR_RETURN(build.previous_targets, state[0].Get<std::string>(3));
    UPKEEP_ASSIGN_OR_RETURN(build.previous_snapshot, state[0].Get<std::string>(4));
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t signed_at, state[0].Get<std::int64_t>(5));
    UPKEEP_ASSIGN_OR_RETURN(std::string stored_digest, state[0].Get<std::string>(6));
    UPKEEP_ASSIGN_OR_RETURN(std::string stored_etag, state[0].Get<std::string>(7));
    // 304: the device holds the last answer, nothing in it would change, it has the current
    // director root, and the timestamp it holds has more than half its validity left.
    const bool fresh = t < signed_at + director.timestamp_validity.count() / 2;
    if (!if_none_match.empty() && if_none_match == stored_etag && stored_digest == digest &&
        checkin.director_root_version >= director_root_->version && fresh) {
      answer.not_modified = true;
      answer.etag = stored_etag;
      return answer;
    }
  }
  UPKEEP_ASSIGN_OR_RETURN(metadata::DirectorRepository repo,
                          metadata::BuildDirectorRepository(*director_root_, director.keys, build));
  answer.etag = "\"" +
                HexEncode(crypto::Sha256(digest + "/" + std::to_string(repo.versions.timestamp)))
                    .substr(0, 32) +
                "\"";
  UPKEEP_TRY(tx.Exec("DELETE FROM director_state WHERE device_id = $1", {device.id}));
  UPKEEP_TRY(tx.Exec(
      "INSERT INTO director_state (device_id, targets_version, snapshot_version, "
      "timestamp_version, targets, snapshot, updated_at, answer_digest, etag) VALUES ($1, $2, $3, "
      "$4, $5, $6, $7, $8, $9)",
      {device.id, static_cast<std::int64_t>(repo.versions.targets),
       static_cast<std::int64_t>(repo.versions.snapshot),
       static_cast<std::int64_t>(repo.versions.timestamp), repo.targets, repo.snapshot, t, digest,
       answer.etag}));
  // The roots newer than the one the device holds, so it can follow a rotation.
  Json roots = Json::array();
  for (const auto& [version, bytes] : director_roots_) {
    if (version > checkin.director_root_version) roots.push_back(bytes);
  }
  answer.body = Json{{"roots", std::move(roots)},
                     {"timestamp", std::move(repo.timestamp)},
                     {"snapshot", std::move(repo.snapshot)},
                     {"targets", std::move(repo.targets)}};
  return answer;
}

namespace {

// Failures of one device within this window that make a "repeated_failures" incident.
constexpr std::int64_t kRepeatedFailureWindow = 7 * 86400;
constexpr std::int64_t kRepeatedFailureCount = 3;

// A server-made incident about a device (IDs hold ':', which device-chosen IDs cannot).
Result<void> AddIncident(storage::Tx& tx, const std::string& id, const std::string& device_id,
                         const std::string& kind, const Json& body, std::int64_t now) {
  UPKEEP_ASSIGN_OR_RETURN(std::string text, metadata::Canonicalize(body));
  UPKEEP_ASSIGN_OR_RETURN(
      std::int64_t n,
      tx.Exec("INSERT INTO incidents (incident_id, device_id, kind, body, received_at, "
              "next_attempt_at) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (incident_id) DO "
              "NOTHING",
              {id, device_id, kind, text, now}));
  if (n == 1) log::warn("fleet: incident {} for device {}", kind, device_id);
  return Ok();
}

}  // namespace

Response Fleet::Report(const Request& request, const Device& device) {
  auto req = ParseReportRequest(request.body);
  if (!req) return BadRequest(req.error());
  const std::int64_t now = Seconds(clock_.Now());
  // The report, the campaign's outcome and any incident it raises are stored together before
  // the answer; a report_id seen before (from this device or any other) changes nothing.
  auto stored = db_.InTransaction([&](storage::Tx& tx) -> Result<void> {
    UPKEEP_ASSIGN_OR_RETURN(
        std::int64_t inserted,
        tx.Exec("INSERT INTO reports (report_id, device_id, update_id, target, outcome, body, "
                "received_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (report_id) DO "
                "NOTHING",
                {req->report_id, device.id, req->update_id, req->target, req->outcome,
                 req->body_json, now}));
    if (inserted != 1) return Ok();
    UPKEEP_TRY(RecordCampaignOutcome(tx, device.id, req->target, req->outcome, now));
    if (req->outcome != "failed" && req->outcome != "rolled_back") return Ok();
    const Json detail{{"report_id", req->report_id},
                      {"update_id", req->update_id},
                      {"target", req->target},
                      {"outcome", req->outcome}};
    if (req->outcome == "rolled_back") {
      UPKEEP_TRY(AddIncident(tx, "rollback:" + req->report_id, device.id, "rollback", detail, now));
    }
    UPKEEP_ASSIGN_OR_RETURN(
        storage::Rows failures,
        tx.Query("SELECT COUNT(*) FROM reports WHERE device_id = $1 AND outcome IN ('failed', "
                 "'rolled_back') AND received_at > $2",
                 {device.id, now - kRepeatedFailureWindow}));
    if (failures.size() == 1) {
      UPKEEP_ASSIGN_OR_RETURN(std::int64_t n, failures[0].Get<std::int64_t>(0));
      if (n == kRepeatedFailureCount) {
        UPKEEP_TRY(AddIncident(tx, "repeated_failures:" + req->report_id, device.id,
                               "repeated_failures", detail, now));
      }
    }
    return Ok();
  });
  if (!stored) return DatabaseFailure("report", stored.error());
  return JsonResponse(202, Json::object());
}

Response Fleet::Incident(const Request& request, const Device& device) {
  auto req = ParseIncidentRequest(request.body);
  if (!req) return BadRequest(req.error());
  const std::int64_t now = Seconds(clock_.Now());
  auto stored = db_.Exec(
      "INSERT INTO incidents (incident_id, device_id, kind, body, received_at, next_attempt_at) "
      "VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (incident_id) DO NOTHING",
      {req->incident_id, device.id, req->kind, req->body_json, now});
  if (!stored) return DatabaseFailure("incident", stored.error());
  if (*stored == 1) log::warn("fleet: incident {} from device {}", req->kind, device.id);
  return JsonResponse(202, Json::object());
}

Response Fleet::Support(const Device& device) {
  auto it = options_.models.find(device.model);
  if (it == options_.models.end()) {
    return Fail(404, "not_found", "no support period is published for this model");
  }
  return JsonResponse(200, Json{{"model", device.model},
                                {"security_updates_until", it->second.security_updates_until},
                                {"url", it->second.url}});
}

}  // namespace upkeep::server
