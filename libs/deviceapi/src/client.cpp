#include "upkeep/deviceapi/client.hpp"

#include <algorithm>
#include <charconv>
#include <exception>
#include <mutex>
#include <utility>

#include "upkeep/common/errc.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/crypto/x509.hpp"
#include "upkeep/metadata/json_reader.hpp"
#include "upkeep/metadata/json_text.hpp"

namespace upkeep::deviceapi {

namespace {

const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::BadRequest:
      return "BadRequest";
    case Errc::Unauthenticated:
      return "Unauthenticated";
    case Errc::Blocked:
      return "Blocked";
    case Errc::NotFound:
      return "NotFound";
    case Errc::Conflict:
      return "Conflict";
    case Errc::TooLarge:
      return "TooLarge";
    case Errc::RateLimited:
      return "RateLimited";
    case Errc::Unavailable:
      return "Unavailable";
    case Errc::ProtocolError:
      return "ProtocolError";
    case Errc::InvalidArgument:
      return "InvalidArgument";
    case Errc::InvalidIdentity:
      return "InvalidIdentity";
  }
  return "Unknown";
}

}  // namespace

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("deviceapi", &ErrcName);
  return category;
}

namespace {

namespace x509 = crypto::x509;
using metadata::Json;
using metadata::JsonReader;

constexpr std::uint64_t kMaxIdentityFileBytes = 256 * 1024;
constexpr std::uint64_t kMaxKeyFileBytes = 64 * 1024;
constexpr std::size_t kMaxServerMessageBytes = 512;
constexpr std::int64_t kMaxRetryAfterSeconds = 24 * 3600;
constexpr const char* kIdentityFile = "identity.json";
constexpr const char* kKeyFile = "device.key";

// Any error of a parsing step, re-labelled with `code` (reader and JSON errors carry metadata's).
template <typename T>
Result<T> Relabel(Result<T> r, Errc code, const std::string& context) {
  if (r) return r;
  return Error(code, context + ": " + r.error().message());
}

Result<Json> ParseAnswerDocument(std::string_view body) {
  return Relabel(metadata::ParseJson(body), Errc::ProtocolError, "answer is not valid JSON");
}

bool AllStringsUtf8(const Json& j) {
  if (j.is_string()) return metadata::IsValidUtf8(j.get_ref<const std::string&>());
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      // nothrow: an object iterator's value, not an optional
      if (!metadata::IsValidUtf8(it.key()) || !AllStringsUtf8(it.value())) return false;
    }
  }
  if (j.is_array()) {
    for (const auto& e : j) {
      if (!AllStringsUtf8(e)) return false;
    }
  }
  return true;
}

// Writes a request body: every string valid UTF-8 (nothing is replaced behind the caller's back).
template <typename Build>
Result<std::string> RequestJson(const char* what, Build build) {
  try {
    Json doc = build();
    if (!AllStringsUtf8(doc)) {
      return Error(Errc::InvalidArgument, std::string(what) + ": a string is not valid UTF-8");
    }
    return metadata::DumpJson(doc);
  } catch (const std::exception& e) {
    return Error(common::Errc::Internal, std::string(what) + ": " + e.what());
  }
}

const char* OutcomeName(ReportOutcome o) {
  switch (o) {
    case ReportOutcome::InProgress:
      return "in_progress";
    case ReportOutcome::Committed:
      return "committed";
    case ReportOutcome::RolledBack:
      return "rolled_back";
    case ReportOutcome::Failed:
      return "failed";
    case ReportOutcome::Cancelled:
      return "cancelled";
  }
  return "in_progress";
}

Result<EnrolAnswer> ReadEnrolAnswer(const Json& doc) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r,
                          JsonReader::Of(doc, metadata::Errc::InvalidMetadata, "enrol"));
  EnrolAnswer a;
  UPKEEP_ASSIGN_OR_RETURN(a.device_id, r.String("device_id"));
  if (!x509::IsValidDeviceId(a.device_id)) {
    return r.Fail("device_id", "not a device ID ([A-Za-z0-9._-]{1,64})");
  }
  UPKEEP_ASSIGN_OR_RETURN(a.certificate_pem, r.String("certificate"));
  UPKEEP_ASSIGN_OR_RETURN(a.device_ca_pem, r.String("device_ca"));
  if (const Json* root = r.Optional("director_root"); root != nullptr && !root->is_null()) {
    if (!root->is_object()) return r.Fail("director_root", "must be an object");
    a.director_root = metadata::DumpJson(*root);
  }
  return a;
}

Result<CheckInAnswer> ReadCheckInAnswer(const Json& doc) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r,
                          JsonReader::Of(doc, metadata::Errc::InvalidMetadata, "checkin"));
  CheckInAnswer a;
  UPKEEP_ASSIGN_OR_RETURN(JsonReader d, r.Object("director"));
  UPKEEP_ASSIGN_OR_RETURN(a.director.roots, d.Strings("roots"));
  UPKEEP_ASSIGN_OR_RETURN(a.director.timestamp, d.String("timestamp"));
  UPKEEP_ASSIGN_OR_RETURN(a.director.snapshot, d.String("snapshot"));
  UPKEEP_ASSIGN_OR_RETURN(a.director.targets, d.String("targets"));
  UPKEEP_ASSIGN_OR_RETURN(a.next_checkin_seconds,
                          r.Uint("next_checkin_seconds", {.max = kMaxNextCheckinSeconds}));
  UPKEEP_ASSIGN_OR_RETURN(std::optional<JsonReader> w, r.OptionalObject("install_window"));
  if (w) {
    InstallWindow window;
    UPKEEP_ASSIGN_OR_RETURN(window.not_before, w->Uint("not_before"));
    UPKEEP_ASSIGN_OR_RETURN(window.not_after, w->Uint("not_after"));
    if (window.not_after <= window.not_before) {
      return w->Fail("not_after", "must be after not_before");
    }
    a.install_window = window;
  }
  return a;
}

bool IsDate(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) return false;
  }
  return true;
}

Result<SupportInfo> ReadSupportAnswer(const Json& doc) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r,
                          JsonReader::Of(doc, metadata::Errc::InvalidMetadata, "support"));
  SupportInfo s;
  UPKEEP_ASSIGN_OR_RETURN(s.model, r.String("model"));
  UPKEEP_ASSIGN_OR_RETURN(s.security_updates_until, r.String("security_updates_until"));
  if (!IsDate(s.security_updates_until)) {
    return r.Fail("security_updates_until", "must be a date YYYY-MM-DD");
  }
  UPKEEP_ASSIGN_OR_RETURN(s.url, r.String("url", {.allow_empty = true}));
  return s;
}

// The server's message, safe to log: no control characters, at most kMaxServerMessageBytes
// (cut at a character boundary).
std::string CleanMessage(std::string_view text) {
  std::string out;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) continue;
    out.push_back(ch);
  }
  if (out.size() > kMaxServerMessageBytes) {
    std::size_t cut = kMaxServerMessageBytes;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
    out.resize(cut);
  }
  return out;
}

std::optional<Errc> CodeFromName(std::string_view name) {
  if (name == "bad_request") return Errc::BadRequest;
  if (name == "unauthenticated") return Errc::Unauthenticated;
  if (name == "blocked") return Errc::Blocked;
  if (name == "not_found") return Errc::NotFound;
  if (name == "conflict") return Errc::Conflict;
  if (name == "too_large") return Errc::TooLarge;
  if (name == "rate_limited") return Errc::RateLimited;
  if (name == "unavailable") return Errc::Unavailable;
  return std::nullopt;
}

Errc CodeFromStatus(unsigned status) {
  switch (status) {
    case 400:
      return Errc::BadRequest;
    case 401:
      return Errc::Unauthenticated;
    case 403:
      return Errc::Blocked;
    case 404:
      return Errc::NotFound;
    case 409:
      return Errc::Conflict;
    case 413:
      return Errc::TooLarge;
    case 429:
      return Errc::RateLimited;
    default:
      return status >= 500 && status <= 599 ? Errc::Unavailable : Errc::ProtocolError;
  }
}

std::optional<std::chrono::seconds> ParseRetryAfter(std::string_view value) {
  std::int64_t seconds = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
  if (value.empty() || end != value.data() + value.size()) return std::nullopt;
  if (ec == std::errc::result_out_of_range) return std::chrono::seconds(kMaxRetryAfterSeconds);
  if (ec != std::errc() || seconds < 0) return std::nullopt;
  return std::chrono::seconds(std::min(seconds, kMaxRetryAfterSeconds));
}

std::string TrimSlash(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// The key and certificate belong together and name the identity's device.
Result<void> CheckIdentity(const DeviceIdentity& id) {
  auto fail = [](const std::string& what) { return Error(Errc::InvalidIdentity, what); };
  if (id.server_url.empty() || id.server_ca_pem.empty() || id.device_ca_pem.empty()) {
    return fail("identity: server URL, server CA and device CA are required");
  }
  auto key = x509::TlsKey::FromPem(id.private_key_pem);
  if (!key) return fail("identity: device key: " + key.error().message());
  auto cert = x509::ParseCertificate(id.certificate_pem);
  if (!cert) return fail("identity: certificate: " + cert.error().message());
  if (cert->public_key != key->public_key()) {
    return fail("identity: the certificate is not for the device key");
  }
  if (cert->device_id.empty() || cert->device_id != id.device_id) {
    return fail("identity: the certificate names device '" + cert->device_id + "', not '" +
                id.device_id + "'");
  }
  return Ok();
}

Result<std::unique_ptr<transport::HttpClient>> MakeHttp(const DeviceClientOptions& options,
                                                        const std::string& server_ca_pem,
                                                        const std::string& cert_pem,
                                                        const std::string& key_pem) {
  const auto& h = options.http;
  if (!h.server_ca_file.empty() || !h.server_ca_pem.empty() || !h.client_certificate_file.empty() ||
      !h.client_key_file.empty() || !h.client_certificate_pem.empty() ||
      !h.client_key_pem.empty()) {
    return Error(Errc::InvalidArgument,
                 "device client: the server CA and client certificate come from the identity");
  }
  transport::HttpClientOptions o = h;
  o.server_ca_pem = server_ca_pem;
  o.client_certificate_pem = cert_pem;
  o.client_key_pem = key_pem;
  return transport::HttpClient::Create(std::move(o));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Parsers and request bodies

Result<EnrolAnswer> ParseEnrolAnswer(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseAnswerDocument(body));
  return Relabel(ReadEnrolAnswer(doc), Errc::ProtocolError, "enrol answer");
}

Result<CheckInAnswer> ParseCheckInAnswer(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseAnswerDocument(body));
  return Relabel(ReadCheckInAnswer(doc), Errc::ProtocolError, "check-in answer");
}

Result<SupportInfo> ParseSupportAnswer(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseAnswerDocument(body));
  return Relabel(ReadSupportAnswer(doc), Errc::ProtocolError, "support answer");
}

Error ParseErrorAnswer(unsigned status, std::string_view body) {
  const std::string prefix = "HTTP " + std::to_string(status);
  if (auto doc = metadata::ParseJson(body); doc && doc->is_object()) {
    JsonReader r(*doc, metadata::Errc::InvalidMetadata, "");
    auto name = r.String("error");
    auto message = r.OptionalString("message", {.allow_empty = true});
    if (name) {
      if (auto code = CodeFromName(*name)) {
        std::string text = prefix + " " + *name;
        if (message && *message) text += ": " + CleanMessage(**message);
        return Error(*code, text);
      }
    }
  }
  const Errc code = CodeFromStatus(status);
  return Error(code, prefix + (code == Errc::ProtocolError ? ": unexpected status" : "") +
                         " (no usable error body)");
}

Result<std::string> EnrolRequestJson(std::string_view token, std::string_view model,
                                     std::string_view serial, std::string_view csr) {
  return RequestJson("enrol request", [&] {
    Json doc = Json::object();
    if (!token.empty()) doc["token"] = std::string(token);
    doc["model"] = std::string(model);
    doc["serial"] = std::string(serial);
    doc["csr"] = std::string(csr);
    return doc;
  });
}

Result<std::string> CheckInRequestJson(const CheckInRequest& q) {
  return RequestJson("check-in request", [&] {
    Json components = Json::object();
    for (const auto& [name, c] : q.components) {
      components[name] = Json{
          {"version", c.version}, {"target", c.target}, {"security_version", c.security_version}};
    }
    Json doc = Json::object();
    doc["counter"] = q.counter;
    doc["model"] = q.model;
    doc["hardware"] = q.hardware;
    doc["components"] = std::move(components);
    doc["director"] = Json{{"root_version", q.director_root_version},
                           {"targets_version", q.director_targets_version}};
    doc["policy"] =
        Json{{"auto_install", q.auto_install},
             {"notifications", q.notifications},
             {"security_auto_install", q.security_auto_install},
             {"postponed_until", q.postponed_until ? Json(*q.postponed_until) : Json(nullptr)}};
    doc["update"] = Json{{"state", q.update_state},
                         {"target", q.update_target ? Json(*q.update_target) : Json(nullptr)}};
    return doc;
  });
}

Result<std::string> ReportJson(const ReportBody& report) {
  for (const auto& e : report.events) {
    if (!e.data.is_object()) {
      return Error(Errc::InvalidArgument, "report: event " + e.id + ": data must be an object");
    }
  }
  return RequestJson("report", [&] {
    Json events = Json::array();
    for (const auto& e : report.events) {
      events.push_back(Json{{"time", e.time}, {"id", e.id}, {"data", e.data}});
    }
    Json doc = Json::object();
    doc["report_id"] = report.report_id;
    doc["update_id"] = report.update_id;
    doc["target"] = report.target;
    doc["outcome"] = OutcomeName(report.outcome);
    doc["events"] = std::move(events);
    return doc;
  });
}

Result<std::string> IncidentJson(const IncidentBody& i) {
  return RequestJson("incident", [&] {
    Json doc = Json::object();
    doc["incident_id"] = i.incident_id;
    doc["kind"] = i.kind;
    doc["source"] = i.source;
    doc["target"] = i.target;
    doc["error"] = i.error;
    doc["detail"] = i.detail;
    doc["time"] = i.time;
    return doc;
  });
}

// ---------------------------------------------------------------------------------------------
// DeviceClient

struct DeviceClient::Impl {
  DeviceClientOptions options;
  DeviceIdentity identity;  // server_url and server_ca_pem set before enrolment too
  std::unique_ptr<transport::HttpClient> http;
  mutable std::mutex mutex;
  std::optional<std::chrono::seconds> retry_after;

  std::string Url(const char* path) const { return identity.server_url + "/api/v1/" + path; }

  // One request; a non-2xx answer other than 304 becomes its error.
  Result<transport::HttpResponse> Call(const char* path, const std::string* body,
                                       const transport::HttpHeaders& headers = {}) {
    retry_after.reset();
    auto r =
        body != nullptr ? http->Post(Url(path), *body, headers) : http->Get(Url(path), headers);
    if (!r) return std::move(r).error();
    retry_after = ParseRetryAfter(r->retry_after);
    if (!r->ok() && r->status != 304) {
      Error e = ParseErrorAnswer(r->status, r->body);
      return e.WithContext(path);
    }
    return r;
  }
};

DeviceClient::DeviceClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceClient::~DeviceClient() = default;

Result<std::unique_ptr<DeviceClient>> DeviceClient::ForEnrolment(const ServerEndpoint& endpoint,
                                                                 DeviceClientOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->identity.server_url = TrimSlash(endpoint.server_url);
  impl->identity.server_ca_pem = endpoint.server_ca_pem;
  UPKEEP_ASSIGN_OR_RETURN(
      impl->http, MakeHttp(options, endpoint.server_ca_pem, endpoint.manufacturer_certificate_pem,
                           endpoint.manufacturer_key_pem));
  impl->options = std::move(options);
  return std::unique_ptr<DeviceClient>(new DeviceClient(std::move(impl)));
}

Result<std::unique_ptr<DeviceClient>> DeviceClient::ForIdentity(const DeviceIdentity& identity,
                                                                DeviceClientOptions options) {
  UPKEEP_TRY(CheckIdentity(identity));
  auto impl = std::make_unique<Impl>();
  impl->identity = identity;
  impl->identity.server_url = TrimSlash(identity.server_url);
  UPKEEP_ASSIGN_OR_RETURN(impl->http, MakeHttp(options, identity.server_ca_pem,
                                               identity.certificate_pem, identity.private_key_pem));
  impl->options = std::move(options);
  return std::unique_ptr<DeviceClient>(new DeviceClient(std::move(impl)));
}

Result<DeviceIdentity> DeviceClient::Enrol(std::string_view token, std::string_view model,
                                           std::string_view serial) {
  std::lock_guard lock(impl_->mutex);
  if (model.empty() || serial.empty()) {
    return Error(Errc::InvalidArgument, "enrol: model and serial are required");
  }
  // The key is made here and stays here: only the CSR (its public half, self-signed) is sent.
  UPKEEP_ASSIGN_OR_RETURN(x509::TlsKey key, x509::TlsKey::Generate(x509::TlsKeyType::EcdsaP256));
  const std::string common_name =
      x509::IsValidDeviceId(serial) ? std::string(serial) : std::string("unenrolled-device");
  UPKEEP_ASSIGN_OR_RETURN(std::string csr, x509::CreateCsr(key, common_name));
  UPKEEP_ASSIGN_OR_RETURN(std::string body, EnrolRequestJson(token, model, serial, csr));
  UPKEEP_ASSIGN_OR_RETURN(transport::HttpResponse answer, impl_->Call("enrol", &body));
  if (answer.status != 200) {
    return Error(Errc::ProtocolError, "enrol: unexpected HTTP " + std::to_string(answer.status));
  }
  UPKEEP_ASSIGN_OR_RETURN(EnrolAnswer a, ParseEnrolAnswer(answer.body));

  // The certificate must be the device CA's, for this key and the device ID the server chose.
  auto parsed = x509::ParseCertificate(a.certificate_pem);
  if (!parsed) return Error(Errc::ProtocolError, "enrol: certificate: " + parsed.error().message());
  auto issued = x509::VerifyIssuedBy(a.certificate_pem, a.device_ca_pem, parsed->not_before);
  if (!issued) {
    return Error(Errc::ProtocolError,
                 "enrol: certificate not issued by the device CA: " + issued.error().message());
  }
  if (issued->public_key != key.public_key()) {
    return Error(Errc::ProtocolError, "enrol: the certificate is not for this device's key");
  }
  if (issued->device_id != a.device_id) {
    return Error(Errc::ProtocolError, "enrol: the certificate names device '" + issued->device_id +
                                          "', the answer '" + a.device_id + "'");
  }

  DeviceIdentity id;
  id.server_url = impl_->identity.server_url;
  id.server_ca_pem = impl_->identity.server_ca_pem;
  id.device_id = a.device_id;
  UPKEEP_ASSIGN_OR_RETURN(id.private_key_pem, key.ToPem());
  id.certificate_pem = std::move(a.certificate_pem);
  id.device_ca_pem = std::move(a.device_ca_pem);
  id.director_root = std::move(a.director_root);
  // From now on this client speaks as the enrolled device (a new handle: no connection or TLS
  // session of the unauthenticated client is reused).
  UPKEEP_ASSIGN_OR_RETURN(impl_->http, MakeHttp(impl_->options, id.server_ca_pem,
                                                id.certificate_pem, id.private_key_pem));
  impl_->identity = id;
  return id;
}

Result<CheckInAnswer> DeviceClient::CheckIn(const CheckInRequest& request) {
  std::lock_guard lock(impl_->mutex);
  UPKEEP_ASSIGN_OR_RETURN(std::string body, CheckInRequestJson(request));
  transport::HttpHeaders headers;
  if (!request.if_none_match.empty()) headers.emplace_back("If-None-Match", request.if_none_match);
  UPKEEP_ASSIGN_OR_RETURN(transport::HttpResponse answer, impl_->Call("checkin", &body, headers));
  if (answer.status == 304) {
    if (request.if_none_match.empty()) {
      return Error(Errc::ProtocolError, "checkin: 304 without If-None-Match");
    }
    CheckInAnswer a;
    a.not_modified = true;
    a.etag = answer.etag.empty() ? request.if_none_match : answer.etag;
    return a;
  }
  if (answer.status != 200) {
    return Error(Errc::ProtocolError, "checkin: unexpected HTTP " + std::to_string(answer.status));
  }
  UPKEEP_ASSIGN_OR_RETURN(CheckInAnswer a, ParseCheckInAnswer(answer.body));
  a.etag = answer.etag;
  return a;
}

namespace {
Result<void> Accepted(const char* what, const transport::HttpResponse& answer) {
  if (answer.status == 202 || answer.status == 200) return Ok();
  return Error(Errc::ProtocolError,
               std::string(what) + ": unexpected HTTP " + std::to_string(answer.status));
}
}  // namespace

Result<void> DeviceClient::Report(const ReportBody& report) {
  std::lock_guard lock(impl_->mutex);
  UPKEEP_ASSIGN_OR_RETURN(std::string body, ReportJson(report));
  UPKEEP_ASSIGN_OR_RETURN(transport::HttpResponse answer, impl_->Call("reports", &body));
  return Accepted("reports", answer);
}

Result<void> DeviceClient::Incident(const IncidentBody& incident) {
  std::lock_guard lock(impl_->mutex);
  UPKEEP_ASSIGN_OR_RETURN(std::string body, IncidentJson(incident));
  UPKEEP_ASSIGN_OR_RETURN(transport::HttpResponse answer, impl_->Call("incidents", &body));
  return Accepted("incidents", answer);
}

Result<void> DeviceClient::SendReportJson(std::string_view body) {
  std::lock_guard lock(impl_->mutex);
  const std::string text(body);
  UPKEEP_ASSIGN_OR_RETURN(transport::HttpResponse answer, impl_->Call("reports", &text));
  return Accepted("reports", answer);
}

Result<void> DeviceClient::SendIncidentJson(std::string_view body) {
  std::lock_guard lock(impl_->mutex);
  const std::string text(body);
  UPKEEP_ASSIGN_OR_RETURN(transport::HttpResponse answer, impl_->Call("incidents", &text));
  return Accepted("incidents", answer);
}

Result<SupportInfo> DeviceClient::SupportPeriod() {
  std::lock_guard lock(impl_->mutex);
  UPKEEP_ASSIGN_OR_RETURN(transport::HttpResponse answer, impl_->Call("support", nullptr));
  if (answer.status != 200) {
    return Error(Errc::ProtocolError, "support: unexpected HTTP " + std::to_string(answer.status));
  }
  return ParseSupportAnswer(answer.body);
}

std::optional<std::chrono::seconds> DeviceClient::retry_after() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->retry_after;
}

DeviceIdentity DeviceClient::identity() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->identity;
}

// ---------------------------------------------------------------------------------------------
// Persistence

Result<void> SaveIdentity(Filesystem& fs, const std::filesystem::path& dir,
                          const DeviceIdentity& identity) {
  UPKEEP_TRY(CheckIdentity(identity));
  UPKEEP_ASSIGN_OR_RETURN(std::string text, RequestJson("identity", [&] {
                            Json doc = Json::object();
                            doc["server_url"] = identity.server_url;
                            doc["server_ca"] = identity.server_ca_pem;
                            doc["device_id"] = identity.device_id;
                            doc["certificate"] = identity.certificate_pem;
                            doc["device_ca"] = identity.device_ca_pem;
                            if (identity.director_root)
                              doc["director_root"] = *identity.director_root;
                            return doc;
                          }));
  UPKEEP_TRY(fs.CreateDirectories(dir));
  const auto key_path = dir / kKeyFile;
  UPKEEP_ASSIGN_OR_RETURN(bool key_exists, fs.Exists(key_path));
  bool write_key = true;
  if (key_exists) {
    auto old = fs.ReadFile(key_path, kMaxKeyFileBytes);
    write_key = !old || *old != identity.private_key_pem;
    if (write_key) UPKEEP_TRY(fs.Remove(key_path));
  }
  if (write_key) UPKEEP_TRY(crypto::WritePrivateKeyFile(key_path, identity.private_key_pem));
  return fs.WriteFileAtomic(dir / kIdentityFile, text);
}

Result<DeviceIdentity> LoadIdentity(const Filesystem& fs, const std::filesystem::path& dir) {
  UPKEEP_ASSIGN_OR_RETURN(std::string text,
                          fs.ReadFile(dir / kIdentityFile, kMaxIdentityFileBytes));
  UPKEEP_ASSIGN_OR_RETURN(std::string key, fs.ReadFile(dir / kKeyFile, kMaxKeyFileBytes));
  auto read = [&]() -> Result<DeviceIdentity> {
    UPKEEP_ASSIGN_OR_RETURN(Json doc, metadata::ParseJson(text));
    UPKEEP_ASSIGN_OR_RETURN(JsonReader r,
                            JsonReader::Of(doc, metadata::Errc::InvalidMetadata, "identity"));
    DeviceIdentity id;
    UPKEEP_ASSIGN_OR_RETURN(id.server_url, r.String("server_url"));
    UPKEEP_ASSIGN_OR_RETURN(id.server_ca_pem, r.String("server_ca"));
    UPKEEP_ASSIGN_OR_RETURN(id.device_id, r.String("device_id"));
    UPKEEP_ASSIGN_OR_RETURN(id.certificate_pem, r.String("certificate"));
    UPKEEP_ASSIGN_OR_RETURN(id.device_ca_pem, r.String("device_ca"));
    UPKEEP_ASSIGN_OR_RETURN(id.director_root, r.OptionalString("director_root"));
    UPKEEP_TRY(r.NoUnknownKeys());
    return id;
  };
  UPKEEP_ASSIGN_OR_RETURN(DeviceIdentity id,
                          Relabel(read(), Errc::InvalidIdentity, (dir / kIdentityFile).string()));
  id.private_key_pem = std::move(key);
  UPKEEP_TRY(CheckIdentity(id));
  return id;
}

}  // namespace upkeep::deviceapi
