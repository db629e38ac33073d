// The local API on Boost.Beast over a Unix domain socket (docs/local-api.md).

#include "upkeep/localapi/requests.hpp"
#include "upkeep/localapi/server.hpp"

#include <fcntl.h>
#include <openssl/ssl.h>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>

#include "upkeep/common/log.hpp"
#include "upkeep/localapi/credential_store.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/json_reader.hpp"
#include "upkeep/metadata/json_text.hpp"

namespace upkeep::localapi {

namespace {

const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::InvalidArgument:
      return "InvalidArgument";
    case Errc::NotFound:
      return "NotFound";
    case Errc::Conflict:
      return "Conflict";
    case Errc::Unavailable:
      return "Unavailable";
    case Errc::Rejected:
      return "Rejected";
    case Errc::CannotListen:
      return "CannotListen";
    case Errc::Unauthenticated:
      return "Unauthenticated";
    case Errc::LockedOut:
      return "LockedOut";
    case Errc::InvalidCredentialStore:
      return "InvalidCredentialStore";
    case Errc::AlreadySet:
      return "AlreadySet";
    case Errc::Forbidden:
      return "Forbidden";
    case Errc::CannotUseBus:
      return "CannotUseBus";
    case Errc::DaemonNotRunning:
      return "DaemonNotRunning";
    case Errc::ProtocolError:
      return "ProtocolError";
    case Errc::Timeout:
      return "Timeout";
    case Errc::Internal:
      return "Internal";
  }
  return "Unknown";
}

}  // namespace

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("localapi", &ErrcName);
  return category;
}

std::string FormatTime(Clock::TimePoint t) {
  const auto days = std::chrono::floor<std::chrono::days>(t);
  const std::chrono::year_month_day ymd(days);
  const std::chrono::hh_mm_ss hms(t - days);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return buf;
}

std::optional<Clock::TimePoint> ParseTime(std::string_view text) {
  // Exactly YYYY-MM-DDTHH:MM:SSZ.
  if (text.size() != 20 || text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' ||
      text[16] != ':' || text[19] != 'Z') {
    return std::nullopt;
  }
  auto num = [&](std::size_t pos, std::size_t len, int& out) {
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (text[i] < '0' || text[i] > '9') return false;
    }
    const auto r = std::from_chars(text.data() + pos, text.data() + pos + len, out);
    return r.ec == std::errc() && r.ptr == text.data() + pos + len;
  };
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  if (!num(0, 4, y) || !num(5, 2, mo) || !num(8, 2, d) || !num(11, 2, h) || !num(14, 2, mi) ||
      !num(17, 2, s)) {
    return std::nullopt;
  }
  const std::chrono::year_month_day ymd{std::chrono::year(y),
                                        std::chrono::month(static_cast<unsigned>(mo)),
                                        std::chrono::day(static_cast<unsigned>(d))};
  if (!ymd.ok() || h > 23 || mi > 59 || s > 59) return std::nullopt;
  return std::chrono::sys_days(ymd) + std::chrono::hours(h) + std::chrono::minutes(mi) +
         std::chrono::seconds(s);
}

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using unix_stream = asio::local::stream_protocol;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using UnixStream = beast::basic_stream<unix_stream>;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
using metadata::Json;
using metadata::JsonReader;

constexpr std::size_t kMaxPathBytes = 4096;
constexpr std::size_t kMaxIdBytes = 256;

struct Answer {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string allow;  // for 405
  std::vector<std::pair<std::string, std::string>> headers;
};

Answer JsonAnswer(unsigned status, const Json& j) {
  return Answer{status, "application/json", metadata::DumpJson(j), {}, {}};
}

Answer ErrorAnswer(unsigned status, const char* code, const std::string& message) {
  Json j = Json::object();
  j["error"] = code;
  j["message"] = message;
  return JsonAnswer(status, j);
}

// A backend error as the API answers it. Messages are the library's, never the backend's: the
// backend's detail may name files or incidents the caller must not see.
Answer BackendError(const Error& e) {
  if (e.code() == Errc::InvalidArgument) return ErrorAnswer(400, "bad_request", "refused value");
  if (e.code() == Errc::NotFound) return ErrorAnswer(404, "not_found", "no such record");
  if (e.code() == Errc::Conflict)
    return ErrorAnswer(409, "conflict", "not possible in the current state");
  if (e.code() == Errc::Forbidden)
    return ErrorAnswer(403, "forbidden", "not allowed for this user");
  if (e.code() == Errc::Unavailable) return ErrorAnswer(503, "unavailable", "busy, retry later");
  return ErrorAnswer(500, "internal", "internal error");
}

const char* StateName(UpdateState s) {
  switch (s) {
    case UpdateState::kIdle:
      return "idle";
    case UpdateState::kChecking:
      return "checking";
    case UpdateState::kDownloading:
      return "downloading";
    case UpdateState::kVerifying:
      return "verifying";
    case UpdateState::kInstalling:
      return "installing";
    case UpdateState::kAwaitingReboot:
      return "awaiting_reboot";
  }
  return "idle";
}

Json PolicyJson(const PolicySettings& p) {
  Json j = Json::object();
  j["auto_install"] = p.auto_install;
  j["notifications"] = p.notifications;
  j["security_auto_install"] = p.security_auto_install;
  j["reboot_later"] = p.reboot_later;
  return j;
}

Json OptionalTime(const std::optional<Clock::TimePoint>& t) {
  return t ? Json(FormatTime(*t)) : Json(nullptr);
}

// Parses a request body as one JSON object (strict: RFC 8259, UTF-8, no duplicate keys).
Result<Json> ParseBody(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, metadata::ParseJson(body));
  if (!doc.is_object()) return Error(Errc::InvalidArgument, "the body must be a JSON object");
  return doc;
}

Result<PolicySettings> ParsePolicy(const Json& doc) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, JsonReader::Of(doc, metadata::Errc::InvalidMetadata, ""));
  PolicySettings p;
  UPKEEP_ASSIGN_OR_RETURN(p.auto_install, r.Bool("auto_install"));
  UPKEEP_ASSIGN_OR_RETURN(p.notifications, r.Bool("notifications"));
  UPKEEP_ASSIGN_OR_RETURN(p.security_auto_install, r.Bool("security_auto_install"));
  UPKEEP_ASSIGN_OR_RETURN(p.reboot_later, r.Bool("reboot_later"));
  // PUT only: the explicit confirmation that turns automatic security updates off.
  UPKEEP_ASSIGN_OR_RETURN(std::optional<bool> confirm, r.OptionalBool("confirm_security_off"));
  p.confirm_security_off = confirm.value_or(false);
  UPKEEP_TRY(r.NoUnknownKeys());
  return p;
}

Result<PostponeRequest> ParsePostpone(const Json& doc) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, JsonReader::Of(doc, metadata::Errc::InvalidMetadata, ""));
  PostponeRequest p;
  UPKEEP_ASSIGN_OR_RETURN(p.update_id, r.String("update_id", {.max_length = kMaxIdBytes}));
  UPKEEP_ASSIGN_OR_RETURN(std::string until, r.String("until", {.max_length = 32}));
  UPKEEP_TRY(r.NoUnknownKeys());
  const auto t = ParseTime(until);
  if (!t) return Error(Errc::InvalidArgument, "until: not YYYY-MM-DDTHH:MM:SSZ");
  p.until = *t;
  return p;
}

Result<std::string> ParseInstall(const Json& doc) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, JsonReader::Of(doc, metadata::Errc::InvalidMetadata, ""));
  UPKEEP_ASSIGN_OR_RETURN(std::string path, r.String("path", {.max_length = kMaxPathBytes}));
  UPKEEP_TRY(r.NoUnknownKeys());
  if (path.front() != '/') return Error(Errc::InvalidArgument, "path: must be absolute");
  if (path.find('\0') != std::string::npos) return Error(Errc::InvalidArgument, "path: NUL");
  return path;
}

// Opens `path` read-only with the peer's file-system identity, so that the daemon never reads a
// file its caller could not. On Linux setfsuid/setfsgid change only the calling thread's
// file-system identity, and a non-zero fsuid drops the capabilities that bypass file permissions
// (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH). The caller's supplementary groups are not applied:
// a file readable only through one of them is refused (fails closed).
Result<UniqueFd> OpenAsPeer(const std::string& path, const Peer& peer) {
  const bool privileged = ::geteuid() == 0;
  if (!privileged && (peer.uid != ::geteuid() || peer.gid != ::getegid())) {
    return Error(Errc::Unauthenticated, "cannot take the caller's identity");
  }
  const uid_t old_uid = static_cast<uid_t>(::setfsuid(static_cast<uid_t>(-1)));
  const gid_t old_gid = static_cast<gid_t>(::setfsgid(static_cast<gid_t>(-1)));
  bool switched = true;
  if (privileged) {
    ::setfsgid(peer.gid);
    ::setfsuid(peer.uid);
    switched = static_cast<uid_t>(::setfsuid(static_cast<uid_t>(-1))) == peer.uid &&
               static_cast<gid_t>(::setfsgid(static_cast<gid_t>(-1))) == peer.gid;
  }
  int fd = -1;
  int err = 0;
  if (switched) {
    do {
      fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    } while (fd < 0 && errno == EINTR);
    err = errno;
  }
  if (privileged) {
    ::setfsuid(old_uid);
    ::setfsgid(old_gid);
  }
  if (!switched) return Error(Errc::Unauthenticated, "cannot take the caller's identity");
  if (fd < 0) return Error(Errc::Unauthenticated, std::string("open: ") + std::strerror(err));
  UniqueFd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return Error(Errc::InvalidArgument, "not a regular file");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) (void)::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return owned;
}

std::optional<std::uint64_t> QueryAfter(std::string_view query, bool& bad) {
  bad = false;
  if (query.empty()) return std::nullopt;
  constexpr std::string_view kKey = "after=";
  if (query.substr(0, kKey.size()) != kKey) {
    bad = true;
    return std::nullopt;
  }
  const std::string_view digits = query.substr(kKey.size());
  std::uint64_t v = 0;
  const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (digits.empty() || r.ec != std::errc() || r.ptr != digits.data() + digits.size()) {
    bad = true;
    return std::nullopt;
  }
  return v;
}

struct Route {
  const char* path;
  const char* methods;  // for Allow
};
constexpr Route kRoutes[] = {
    {"/v1/device", "GET"},    {"/v1/support", "GET"},     {"/v1/status", "GET"},
    {"/v1/notices", "GET"},   {"/v1/policy", "GET, PUT"}, {"/v1/check", "POST"},
    {"/v1/postpone", "POST"}, {"/v1/install", "POST"},    {"/v1/events", "GET"},
};

}  // namespace

// Routes one parsed request to the backend.
class Router {
 public:
  Router(LocalApiBackend& backend, std::size_t max_events)
      : backend_(backend), max_events_(max_events) {}

  Answer Handle(const std::string& method, const std::string& target, const std::string& body,
                const Peer& peer) {
    const auto q = target.find('?');
    const std::string path = target.substr(0, q);
    const std::string query = q == std::string::npos ? std::string() : target.substr(q + 1);
    const Route* route = nullptr;
    for (const auto& r : kRoutes) {
      if (path == r.path) route = &r;
    }
    if (route == nullptr) return ErrorAnswer(404, "not_found", "no such endpoint");
    if (path != "/v1/events" && !query.empty())
      return ErrorAnswer(400, "bad_request", "no query parameters are accepted");
    if (path == "/v1/device" && method == "GET") return Device(peer);
    if (path == "/v1/support" && method == "GET") return Support(peer);
    if (path == "/v1/status" && method == "GET") return GetStatus(peer);
    if (path == "/v1/notices" && method == "GET") return Notices(peer);
    if (path == "/v1/policy" && method == "GET") return GetPolicy(peer);
    if (path == "/v1/policy" && method == "PUT") return SetPolicy(body, peer);
    if (path == "/v1/check" && method == "POST") return Check(body, peer);
    if (path == "/v1/postpone" && method == "POST") return Postpone(body, peer);
    if (path == "/v1/install" && method == "POST") return Install(body, peer);
    if (path == "/v1/events" && method == "GET") return Events(query, peer);
    Answer a = ErrorAnswer(405, "method_not_allowed", "method not allowed");
    a.allow = route->methods;
    return a;
  }

 private:
  static Answer BadBody(const Error& e) {
    // The parser's message names the member at fault ("until: ..."); it holds no caller data
    // beyond what the caller sent.
    return ErrorAnswer(400, "bad_request", e.message());
  }

  Answer Device(const Peer& peer) {
    auto r = backend_.Device(peer);
    if (!r) return BackendError(r.error());
    Json j = Json::object();
    j["model"] = r->model;
    j["hardware"] = r->hardware;
    Json comps = Json::array();
    for (const auto& c : r->components) {
      Json o = Json::object();
      o["name"] = c.name;
      o["version"] = c.version;
      comps.push_back(std::move(o));
    }
    j["components"] = std::move(comps);
    return JsonAnswer(200, j);
  }

  Answer Support(const Peer& peer) {
    auto r = backend_.Support(peer);
    if (!r) return BackendError(r.error());
    Json j = Json::object();
    j["support_until"] = OptionalTime(r->support_until);
    j["ended"] = r->ended;
    return JsonAnswer(200, j);
  }

  Answer GetStatus(const Peer& peer) {
    auto r = backend_.GetStatus(peer);
    if (!r) return BackendError(r.error());
    Json j = Json::object();
    j["state"] = StateName(r->state);
    j["update_id"] = r->update_id ? Json(*r->update_id) : Json(nullptr);
    if (r->progress) {
      Json p = Json::object();
      p["done"] = r->progress->done;
      p["total"] = r->progress->total;
      j["progress"] = std::move(p);
    } else {
      j["progress"] = nullptr;
    }
    j["last_check"] = OptionalTime(r->last_check);
    return JsonAnswer(200, j);
  }

  Answer Notices(const Peer& peer) {
    auto r = backend_.Notices(peer);
    if (!r) return BackendError(r.error());
    Json list = Json::array();
    for (const auto& n : *r) {
      Json o = Json::object();
      o["id"] = n.id;
      o["update_id"] = n.update_id;
      o["kind"] = n.security ? "security" : "feature";
      o["title"] = n.title;
      o["text"] = n.text;
      o["install_by"] = OptionalTime(n.install_by);
      list.push_back(std::move(o));
    }
    Json j = Json::object();
    j["notices"] = std::move(list);
    return JsonAnswer(200, j);
  }

  Answer GetPolicy(const Peer& peer) {
    auto r = backend_.GetPolicy(peer);
    if (!r) return BackendError(r.error());
    return JsonAnswer(200, PolicyJson(*r));
  }

  Answer SetPolicy(const std::string& body, const Peer& peer) {
    auto settings = ParsePolicyRequest(body);
    if (!settings) return BadBody(settings.error());
    auto r = backend_.SetPolicy(peer, *settings);
    if (!r) return BackendError(r.error());
    return JsonAnswer(200, PolicyJson(*r));
  }

  Answer Check(const std::string& body, const Peer& peer) {
    if (!body.empty()) {
      auto doc = ParseBody(body);
      if (!doc) return BadBody(doc.error());
      if (!doc->empty()) return ErrorAnswer(400, "bad_request", "the body must be {} or empty");
    }
    auto r = backend_.CheckNow(peer);
    if (!r) return BackendError(r.error());
    Json j = Json::object();
    j["accepted"] = true;
    return JsonAnswer(202, j);
  }

  Answer Postpone(const std::string& body, const Peer& peer) {
    auto req = ParsePostponeRequest(body);
    if (!req) return BadBody(req.error());
    auto r = backend_.Postpone(peer, *req);
    if (!r) return BackendError(r.error());
    Json j = Json::object();
    j["update_id"] = r->update_id;
    j["until"] = FormatTime(r->until);
    return JsonAnswer(200, j);
  }

  Answer Install(const std::string& body, const Peer& peer) {
    if (peer.lan)
      return ErrorAnswer(403, "forbidden", "bundles are installed from the device only");
    auto path = ParseInstallRequest(body);
    if (!path) return BadBody(path.error());
    auto fd = OpenAsPeer(*path, peer);
    if (!fd) {
      if (fd.error().code() == Errc::InvalidArgument)
        return ErrorAnswer(400, "bad_request", "the bundle is not a regular file");
      return ErrorAnswer(403, "forbidden", "the bundle cannot be opened with the caller's rights");
    }
    InstallRequest req{std::move(fd).value(), *path, peer};  // nothrow: checked above
    auto r = backend_.Install(std::move(req));
    // EN 303 645 5.3-9: the initiator learns only that the update was rejected.
    if (!r) return ErrorAnswer(422, "rejected", "update rejected");
    Json j = Json::object();
    j["install_id"] = r->install_id;
    return JsonAnswer(202, j);
  }

  Answer Events(const std::string& query, const Peer& peer) {
    bool bad = false;
    const auto after = QueryAfter(query, bad);
    if (bad) return ErrorAnswer(400, "bad_request", "the only query parameter is after=N");
    auto r = backend_.Events(peer, after.value_or(0), max_events_);
    if (!r) return BackendError(r.error());
    Answer a;
    a.content_type = "application/x-ndjson";
    std::size_t n = 0;
    for (const auto& e : *r) {
      if (++n > max_events_) break;  // the backend's bound is checked, not trusted
      Json o = Json::object();
      o["sequence"] = e.sequence;
      o["time"] = FormatTime(e.time);
      o["type"] = e.type;
      o["message"] = e.message;
      a.body += metadata::DumpJson(o);
      a.body += '\n';
    }
    return a;
  }

  LocalApiBackend& backend_;
  std::size_t max_events_;
};

class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void CloseIfIdle() = 0;
};

struct LocalApiServer::Impl {
  LocalApiOptions options;
  std::unique_ptr<Router> router;
  std::atomic<bool> stopping{false};
  std::atomic<std::uint32_t> active{0};
  std::atomic<std::uint64_t> connections{0}, requests{0}, rejected{0}, refused{0};
  std::mutex sessions_mutex;
  std::list<std::weak_ptr<SessionBase>> sessions;
  std::mutex stop_mutex;
  bool stopped = false;
  ino_t socket_inode = 0;

  asio::io_context io;
  unix_stream::acceptor acceptor{io};
  tcp::acceptor lan_acceptor{io};
  // Created only for a LAN listener: an unused TLS context alone keeps megabytes of OpenSSL
  // state resident in a daemon that runs all the time.
  std::optional<ssl::context> tls;
  std::uint16_t lan_port = 0;
  std::mutex credentials_mutex;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;

  void Accept();
  void AcceptLan();
  void Track(const std::shared_ptr<SessionBase>& s);
  // nullopt when the request's credential is right; otherwise the answer.
  std::optional<Answer> Authenticate(std::string_view authorization);
};

std::optional<Answer> LocalApiServer::Impl::Authenticate(std::string_view authorization) {
  constexpr std::string_view kBearer = "Bearer ";
  Answer unauthenticated = ErrorAnswer(401, "unauthenticated", "a valid credential is required");
  unauthenticated.headers.emplace_back("WWW-Authenticate", "Bearer");
  if (authorization.substr(0, kBearer.size()) != kBearer) return unauthenticated;
  CredentialStore* store = options.lan ? options.lan->credentials : nullptr;
  if (store == nullptr) return unauthenticated;
  std::lock_guard lock(credentials_mutex);
  auto r = store->Verify(authorization.substr(kBearer.size()));
  if (r) return std::nullopt;
  if (r.error().code() == Errc::LockedOut) {
    Answer a = ErrorAnswer(429, "locked_out", "too many failed attempts; retry later");
    a.headers.emplace_back("Retry-After", std::to_string(store->retry_after().count()));
    return a;
  }
  return unauthenticated;
}

// One connection: requests one after the other (keep-alive) until the peer closes, a limit is
// broken, a timeout fires, or the server stops.
template <typename S>
class Session : public SessionBase, public std::enable_shared_from_this<Session<S>> {
  static constexpr bool kTls = std::is_same_v<S, TlsStream>;

 public:
  Session(S&& stream, const Peer& peer, LocalApiServer::Impl& server)
      : server_(server), stream_(std::move(stream)), peer_(peer) {}
  ~Session() override { --server_.active; }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void Run() {
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (kTls) {
        self->Handshake();
      } else {
        self->ReadHeader();
      }
    });
  }

  void CloseIfIdle() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] {
      if (self->idle_) beast::get_lowest_layer(self->stream_).cancel();
    });
  }

 private:
  void Handshake() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(server_.options.request_timeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) return self->Close();
                                self->ReadHeader();
                              });
    }
  }

  void ReadHeader() {
    if (server_.stopping) return Close();
    parser_.emplace();
    parser_->body_limit(server_.options.max_body_bytes);
    parser_->header_limit(server_.options.max_header_bytes);
    idle_ = buffer_.size() == 0;
    beast::get_lowest_layer(stream_).expires_after(server_.options.idle_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
                              self->idle_ = false;
                              self->OnHeader(ec);
                            });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    beast::get_lowest_layer(stream_).expires_after(server_.options.request_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code e, std::size_t) { self->OnRead(e); });
  }

  void OnReadError(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
        ec == ssl::error::stream_truncated) {
      return Close();
    }
    ++server_.rejected;
    if (ec == http::error::body_limit)
      return Respond(ErrorAnswer(413, "too_large", "the request body is too large"), false);
    if (ec == http::error::header_limit)
      return Respond(ErrorAnswer(431, "too_large", "the request header is too large"), false);
    Respond(ErrorAnswer(400, "bad_request", "the request is malformed"), false);
  }

  void OnRead(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    ++server_.requests;
    const auto& msg = parser_->get();
    Answer a;
    try {
      std::optional<Answer> refused;
      if constexpr (kTls) refused = server_.Authenticate(msg[http::field::authorization]);
      if (refused) {
        a = std::move(*refused);
      } else {
        a = server_.router->Handle(std::string(msg.method_string()), std::string(msg.target()),
                                   msg.body(), peer_);
      }
    } catch (const std::exception& e) {
      log::error("localapi: handler failed on {} {}: {}", std::string(msg.method_string()),
                 std::string(msg.target()), e.what());
      a = ErrorAnswer(500, "internal", "internal error");
    } catch (...) {
      a = ErrorAnswer(500, "internal", "internal error");
    }
    if (a.status == 400) ++server_.rejected;
    Respond(std::move(a), msg.keep_alive());
  }

  void Respond(Answer a, bool keep_alive) {
    keep_alive = keep_alive && !server_.stopping && a.status != 413 && a.status != 431 &&
                 !(a.status == 400 && !parser_->is_done());
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(a.status), 11);
    res->set(http::field::server, "upkeep-agent");
    res->set(http::field::content_type, a.content_type);
    res->set(http::field::cache_control, "no-store");
    if (!a.allow.empty()) res->set(http::field::allow, a.allow);
    for (const auto& [name, value] : a.headers) res->set(name, value);
    res->keep_alive(keep_alive);
    res->body() = std::move(a.body);
    res->prepare_payload();
    beast::get_lowest_layer(stream_).expires_after(server_.options.request_timeout);
    http::async_write(
        stream_, *res,
        [self = this->shared_from_this(), res, keep_alive](beast::error_code ec, std::size_t) {
          if (ec) return self->Close();
          if (keep_alive) return self->ReadHeader();
          self->Close();
        });
  }

  void Close() {
    beast::error_code ec;
    beast::get_lowest_layer(stream_).socket().shutdown(asio::socket_base::shutdown_both, ec);
    beast::get_lowest_layer(stream_).close();
  }

  LocalApiServer::Impl& server_;
  S stream_;
  Peer peer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool idle_ = false;
};

void LocalApiServer::Impl::Track(const std::shared_ptr<SessionBase>& s) {
  std::lock_guard lock(sessions_mutex);
  sessions.remove_if([](const std::weak_ptr<SessionBase>& w) { return w.expired(); });
  sessions.push_back(s);
}

void LocalApiServer::Impl::Accept() {
  acceptor.async_accept(
      asio::make_strand(io), [this](beast::error_code ec, unix_stream::socket socket) {
        if (!ec) {
          ++connections;
          struct ucred cred {};
          socklen_t len = sizeof cred;
          const bool have_cred =
              ::getsockopt(socket.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
              len == sizeof cred;
          if (stopping || !have_cred || active >= options.max_connections) {
            ++refused;
            beast::error_code ignored;
            socket.close(ignored);
          } else {
            ++active;
            const Peer peer{cred.uid, cred.gid, cred.pid};
            auto session =
                std::make_shared<Session<UnixStream>>(UnixStream(std::move(socket)), peer, *this);
            Track(session);
            session->Run();
          }
        }
        if (!stopping && acceptor.is_open()) Accept();
      });
}

void LocalApiServer::Impl::AcceptLan() {
  lan_acceptor.async_accept(
      asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
        if (!ec) {
          ++connections;
          if (stopping || active >= options.max_connections) {
            ++refused;
            beast::error_code ignored;
            socket.close(ignored);
          } else {
            ++active;
            beast::error_code ignored;
            socket.set_option(tcp::no_delay(true), ignored);
            Peer peer;
            peer.uid = static_cast<uid_t>(-1);
            peer.gid = static_cast<gid_t>(-1);
            peer.lan = true;
            auto session = std::make_shared<Session<TlsStream>>(
                TlsStream(beast::tcp_stream(std::move(socket)), *tls), peer, *this);
            Track(session);
            session->Run();
          }
        }
        if (!stopping && lan_acceptor.is_open()) AcceptLan();
      });
}

namespace {

Result<void> StartLan(LocalApiServer::Impl& impl, const LanOptions& lan) {
  if (lan.credentials == nullptr) return Error(Errc::CannotListen, "lan: no credential store");
  boost::system::error_code ec;
  try {
    impl.tls.emplace(ssl::context::tls_server);
  } catch (const std::exception& e) {
    return Error(Errc::CannotListen, std::string("lan: cannot create a TLS context: ") + e.what());
  }
  impl.tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                           ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                           ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                       ec);
  if (!ec && SSL_CTX_set_min_proto_version(impl.tls->native_handle(), TLS1_2_VERSION) != 1) {
    return Error(Errc::CannotListen, "lan: cannot configure TLS");
  }
  if (!ec) impl.tls->use_certificate_chain(asio::buffer(lan.certificate_pem), ec);
  if (!ec) impl.tls->use_private_key(asio::buffer(lan.private_key_pem), ssl::context::pem, ec);
  if (ec) return Error(Errc::CannotListen, "lan: TLS identity: " + ec.message());
  auto address = asio::ip::make_address(lan.address, ec);
  if (ec) return Error(Errc::CannotListen, "lan: address " + lan.address + ": " + ec.message());
  const tcp::endpoint endpoint(address, lan.port);
  auto& acceptor = impl.lan_acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(static_cast<int>(impl.options.max_connections), ec);
  if (ec) return Error(Errc::CannotListen, "lan: " + lan.address + ": " + ec.message());
  impl.lan_port = acceptor.local_endpoint(ec).port();
  return Ok();
}

// Removes a stale socket at `path`, refusing anything that is not a socket (a symlink included:
// lstat does not follow it) and a socket some process still listens on.
Result<void> ClearSocketPath(const std::filesystem::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Ok();
    return Error(Errc::CannotListen, path.string() + ": " + std::strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return Error(Errc::CannotListen, path.string() + ": exists and is not a socket");
  }
  // Non-blocking: a listener with a full backlog answers EAGAIN instead of stalling the start.
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (probe.get() < 0)
    return Error(Errc::CannotListen, "socket: " + std::string(std::strerror(errno)));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.string().size());
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
    return Error(Errc::CannotListen, path.string() + ": another server listens there");
  }
  // Only a socket nobody listens on is stale; EAGAIN (a busy listener), EACCES and the rest
  // leave it alone.
  if (errno != ECONNREFUSED) {
    return Error(Errc::CannotListen,
                 path.string() + ": in use or not ours: " + std::strerror(errno));
  }
  // unlink never follows a symlink: whatever is at the path now, only the name goes.
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Error(Errc::CannotListen, path.string() + ": " + std::strerror(errno));
  }
  return Ok();
}

}  // namespace

LocalApiServer::LocalApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LocalApiServer::~LocalApiServer() { Stop(std::chrono::milliseconds(0)); }

Result<std::unique_ptr<LocalApiServer>> LocalApiServer::Start(const LocalApiOptions& options,
                                                              LocalApiBackend& backend) {
  const std::string path = options.socket_path.string();
  if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Error(Errc::CannotListen, "socket path empty or too long: " + path);
  }
  if ((options.mode & ~static_cast<mode_t>(0777)) != 0) {
    return Error(Errc::CannotListen, "socket mode beyond 0777");
  }
  UPKEEP_TRY(ClearSocketPath(options.socket_path));
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->router =
      std::make_unique<Router>(backend, options.max_events == 0 ? 1 : options.max_events);
  auto& acceptor = impl->acceptor;
  boost::system::error_code ec;
  acceptor.open(unix_stream(), ec);
  if (!ec) {
    // The socket is created owner-only and opened up to `mode` only once its group is set, so
    // it is never more open than asked. umask is process-wide: start the server before threads
    // that create files.
    const mode_t old_mask = ::umask(0177);
    acceptor.bind(unix_stream::endpoint(path), ec);
    ::umask(old_mask);
  }
  if (ec) return Error(Errc::CannotListen, path + ": " + ec.message());
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    return Error(Errc::CannotListen, path + ": the socket vanished after bind");
  }
  impl->socket_inode = st.st_ino;
  if (options.group && ::lchown(path.c_str(), static_cast<uid_t>(-1), *options.group) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(path.c_str());
    return Error(Errc::CannotListen, path + ": chown: " + why);
  }
  if (::fchmodat(AT_FDCWD, path.c_str(), options.mode, 0) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(path.c_str());
    return Error(Errc::CannotListen, path + ": chmod: " + why);
  }
  acceptor.listen(static_cast<int>(options.max_connections), ec);
  if (ec) {
    ::unlink(path.c_str());
    return Error(Errc::CannotListen, path + ": listen: " + ec.message());
  }
  if (options.lan) {
    if (auto r = StartLan(*impl, *options.lan); !r) {
      ::unlink(path.c_str());
      return r.error();
    }
  }
  impl->work.emplace(impl->io.get_executor());
  impl->Accept();
  if (options.lan) impl->AcceptLan();
  Impl* raw = impl.get();
  const unsigned n = options.threads == 0 ? 1 : options.threads;
  for (unsigned i = 0; i < n; ++i) {
    raw->threads.emplace_back([raw] {
      for (;;) {
        try {
          raw->io.run();
          return;
        } catch (const std::exception& e) {  // handlers catch their own; defence
          log::error("localapi: {}", e.what());
        }
      }
    });
  }
  return std::unique_ptr<LocalApiServer>(new LocalApiServer(std::move(impl)));
}

LocalApiStats LocalApiServer::stats() const {
  return LocalApiStats{impl_->connections, impl_->requests, impl_->rejected, impl_->refused};
}

std::uint16_t LocalApiServer::lan_port() const { return impl_->lan_port; }

void LocalApiServer::Stop(std::chrono::milliseconds grace) {
  std::lock_guard lock(impl_->stop_mutex);
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->stopping = true;
  asio::post(impl_->io, [impl = impl_.get()] {
    beast::error_code ec;
    impl->acceptor.close(ec);
    impl->lan_acceptor.close(ec);
  });
  // Remove the socket file only if it is still the one this server created.
  struct stat st {};
  const std::string path = impl_->options.socket_path.string();
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == impl_->socket_inode) {
    ::unlink(path.c_str());
  }
  {
    std::lock_guard sessions_lock(impl_->sessions_mutex);
    for (auto& weak : impl_->sessions) {
      if (auto s = weak.lock()) s->CloseIfIdle();
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (impl_->active > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  impl_->work.reset();
  impl_->io.stop();
  for (auto& t : impl_->threads) {
    if (t.joinable()) t.join();
  }
}

Result<PolicySettings> ParsePolicyRequest(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseBody(body));
  return ParsePolicy(doc);
}

Result<PostponeRequest> ParsePostponeRequest(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseBody(body));
  return ParsePostpone(doc);
}

Result<std::string> ParseInstallRequest(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseBody(body));
  return ParseInstall(doc);
}

const char* ToString(UpdateState state) { return StateName(state); }

}  // namespace upkeep::localapi
