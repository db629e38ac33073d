// The local API client: POSIX Unix-socket I/O with deadlines, Beast's HTTP parser for the
// answer, metadata::ParseJson and JsonReader for the body (docs/local-api.md).

#include "upkeep/localapi/client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <cstring>
#include <thread>

#include "upkeep/common/unique_fd.hpp"
#include "upkeep/localapi/server.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/json_reader.hpp"
#include "upkeep/metadata/json_text.hpp"

namespace upkeep::localapi {

namespace {

namespace http = boost::beast::http;
using metadata::Json;
using metadata::JsonReader;
using SteadyClock = std::chrono::steady_clock;

constexpr std::size_t kMaxPathBytes = 4096;

Error Protocol(const std::string& what) { return Error(Errc::ProtocolError, what); }

// A JSON object answer; any failure is ProtocolError.
Result<Json> ParseObject(std::string_view body) {
  auto doc = metadata::ParseJson(body);
  if (!doc) return Protocol("answer: " + doc.error().message());
  if (!doc->is_object()) return Protocol("answer: not a JSON object");
  return std::move(doc).value();  // nothrow: checked above
}

Result<JsonReader> Reader(const Json& j, std::string path) {
  auto r = JsonReader::Of(j, metadata::Errc::InvalidMetadata, std::move(path));
  if (!r) return Protocol(r.error().message());
  return r;
}

Error AsProtocol(const Error& e) { return Protocol("answer: " + e.message()); }

// A string member, possibly empty.
Result<std::string> Text(JsonReader& r, std::string_view key) {
  auto s = r.String(key, {.allow_empty = true});
  if (!s) return AsProtocol(s.error());
  return s;
}

Result<std::string> NonEmpty(JsonReader& r, std::string_view key) {
  auto s = r.String(key);
  if (!s) return AsProtocol(s.error());
  return s;
}

Result<bool> Bool(JsonReader& r, std::string_view key) {
  auto b = r.Bool(key);
  if (!b) return AsProtocol(b.error());
  return b;
}

Result<std::uint64_t> Uint(JsonReader& r, std::string_view key) {
  auto v = r.Uint(key);
  if (!v) return AsProtocol(v.error());
  return v;
}

Result<Clock::TimePoint> Time(JsonReader& r, std::string_view key) {
  UPKEEP_ASSIGN_OR_RETURN(std::string s, NonEmpty(r, key));
  const auto t = ParseTime(s);
  if (!t) return Protocol("answer: " + r.Path(key) + ": not YYYY-MM-DDTHH:MM:SSZ");
  return *t;
}

// A member that must be present and is either null or a non-empty string.
Result<std::optional<std::string>> NullableString(JsonReader& r, std::string_view key) {
  auto v = r.Required(key);
  if (!v) return AsProtocol(v.error());
  if ((*v)->is_null()) return std::optional<std::string>();
  UPKEEP_ASSIGN_OR_RETURN(std::string s, NonEmpty(r, key));
  return std::optional<std::string>(std::move(s));
}

Result<std::optional<Clock::TimePoint>> NullableTime(JsonReader& r, std::string_view key) {
  UPKEEP_ASSIGN_OR_RETURN(std::optional<std::string> s, NullableString(r, key));
  if (!s) return std::optional<Clock::TimePoint>();
  const auto t = ParseTime(*s);
  if (!t) return Protocol("answer: " + r.Path(key) + ": not YYYY-MM-DDTHH:MM:SSZ");
  return std::optional<Clock::TimePoint>(*t);
}

Result<const Json*> Array(JsonReader& r, std::string_view key) {
  auto a = r.Array(key);
  if (!a) return AsProtocol(a.error());
  return a;
}

Result<Event> ParseEvent(const Json& j) {
  if (!j.is_object()) return Protocol("answer: an event is not a JSON object");
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, Reader(j, "event"));
  Event e;
  UPKEEP_ASSIGN_OR_RETURN(e.sequence, Uint(r, "sequence"));
  UPKEEP_ASSIGN_OR_RETURN(e.time, Time(r, "time"));
  UPKEEP_ASSIGN_OR_RETURN(e.type, NonEmpty(r, "type"));
  UPKEEP_ASSIGN_OR_RETURN(e.message, Text(r, "message"));
  return e;
}

// ---- Transport ----

struct RawAnswer {
  unsigned status = 0;
  std::string content_type;
  std::string body;
};

int MillisLeft(SteadyClock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
  if (left <= 0) return 0;
  return left > 60'000 ? 60'000 : static_cast<int>(left);
}

// Waits until `fd` is ready for `events`; false on timeout.
Result<bool> WaitFor(int fd, short events, SteadyClock::time_point deadline) {
  for (int i = 0; i < 1'000'000; ++i) {
    const int ms = MillisLeft(deadline);
    if (ms == 0) return false;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, ms);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) {
      return Error(Errc::ProtocolError, std::string("poll: ") + std::strerror(errno));
    }
  }
  return false;
}

Result<UniqueFd> Connect(const LocalApiClientOptions& o) {
  const std::string path = o.socket_path.string();
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof addr.sun_path) {
    return Error(Errc::InvalidArgument, "socket path empty or too long: " + path);
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) {
    return Error(Errc::ProtocolError, std::string("socket: ") + std::strerror(errno));
  }
  const auto deadline = SteadyClock::now() + o.connect_timeout;
  // A non-blocking connect to a Unix socket completes at once or fails; EAGAIN means the
  // listener's backlog is full: retry until the deadline.
  for (int i = 0; i < 100'000; ++i) {
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return fd;
    const int err = errno;
    switch (err) {
      case EINTR:
        continue;
      case EAGAIN:
        if (MillisLeft(deadline) == 0) {
          return Error(Errc::Unavailable, path + ": the daemon accepts no more connections");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      case EINPROGRESS: {  // not done by Unix sockets on Linux; handled for completeness
        UPKEEP_ASSIGN_OR_RETURN(bool ready, WaitFor(fd.get(), POLLOUT, deadline));
        int so_error = 0;
        socklen_t len = sizeof so_error;
        if (!ready) return Error(Errc::Unavailable, path + ": connect timed out");
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) != 0 || so_error != 0) {
          return Error(Errc::DaemonNotRunning, path + ": " + std::strerror(so_error));
        }
        return fd;
      }
      case EACCES:
      case EPERM:
        return Error(Errc::Forbidden, path + ": " + std::strerror(err));
      default:
        // ENOENT, ECONNREFUSED (a stale socket), ENOTDIR, ENOTSOCK, ...: nobody serves there.
        return Error(Errc::DaemonNotRunning, path + ": " + std::strerror(err));
    }
  }
  return Error(Errc::Unavailable, path + ": cannot connect");
}

Result<void> SendAll(int fd, std::string_view data, SteadyClock::time_point deadline) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      UPKEEP_ASSIGN_OR_RETURN(bool ready, WaitFor(fd, POLLOUT, deadline));
      if (!ready) return Error(Errc::Timeout, "the daemon does not read the request");
      continue;
    }
    // The server closed early (e.g. at its connection limit).
    return Error(Errc::Unavailable, std::string("send: ") + std::strerror(errno));
  }
  return Ok();
}

Result<RawAnswer> ReadAnswer(int fd, const LocalApiClientOptions& o, SteadyClock::time_point deadline) {
  http::response_parser<http::string_body> parser;
  parser.body_limit(o.max_body_bytes);
  parser.header_limit(o.max_header_bytes);
  parser.eager(true);
  std::string pending;
  std::size_t received = 0;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        UPKEEP_ASSIGN_OR_RETURN(bool ready, WaitFor(fd, POLLIN, deadline));
        if (!ready) return Error(Errc::Timeout, "no complete answer from the daemon in time");
        continue;
      }
      if (received == 0) {
        return Error(Errc::Unavailable, std::string("the daemon closed the connection: ") +
                                            std::strerror(errno));
      }
      return Protocol(std::string("recv: ") + std::strerror(errno));
    }
    boost::beast::error_code ec;
    if (n == 0) {
      if (received == 0) {
        return Error(Errc::Unavailable, "the daemon closed the connection without an answer");
      }
      parser.put_eof(ec);
      if (ec || !parser.is_done()) return Protocol("the answer ends early");
      break;
    }
    received += static_cast<std::size_t>(n);
    pending.append(buf, static_cast<std::size_t>(n));
    // Feed what is buffered; the parser may take it in several steps.
    for (int step = 0; step < 64 && !pending.empty() && !parser.is_done(); ++step) {
      const std::size_t used = parser.put(boost::asio::buffer(pending), ec);
      pending.erase(0, used);
      if (ec == http::error::need_more) {
        ec = {};
        break;
      }
      if (ec == http::error::body_limit || ec == http::error::header_limit) {
        return Protocol("the answer is larger than the client's limit");
      }
      if (ec) return Protocol("malformed HTTP answer: " + ec.message());
      if (used == 0) break;
    }
    if (parser.is_done()) break;
    if (MillisLeft(deadline) == 0) {
      return Error(Errc::Timeout, "no complete answer from the daemon in time");
    }
  }
  const auto& msg = parser.get();
  if (msg.version() != 11) return Protocol("not an HTTP/1.1 answer");
  RawAnswer a;
  a.status = msg.result_int();
  a.content_type = std::string(msg[http::field::content_type]);
  a.body = msg.body();
  return a;
}

std::string BuildRequest(std::string_view method, std::string_view target, std::string_view body,
                         bool with_body) {
  std::string r;
  r.reserve(160 + body.size());
  r.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
  r += "Host: localhost\r\nUser-Agent: upkeep-agent\r\nAccept: application/json\r\n";
  r += "Connection: close\r\n";
  if (with_body) {
    r += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n";
  }
  r += "\r\n";
  r.append(body);
  return r;
}

// The media type without parameters, lower case.
std::string MediaType(std::string_view content_type) {
  const auto semi = content_type.find(';');
  std::string_view t = content_type.substr(0, semi);
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
  std::string out(t);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// One exchange; a non-2xx answer becomes its Error, a 2xx other than `expected` is
// ProtocolError. Returns the body.
Result<std::string> Exchange(const LocalApiClientOptions& o, std::string_view method,
                             std::string_view target, std::string_view body, bool with_body,
                             unsigned expected, std::string_view media_type) {
  try {
    UPKEEP_ASSIGN_OR_RETURN(UniqueFd fd, Connect(o));
    const auto deadline = SteadyClock::now() + o.request_timeout;
    UPKEEP_TRY(SendAll(fd.get(), BuildRequest(method, target, body, with_body), deadline));
    UPKEEP_ASSIGN_OR_RETURN(RawAnswer a, ReadAnswer(fd.get(), o, deadline));
    if (a.status < 200 || a.status > 299) return ParseErrorAnswer(a.status, a.body);
    if (a.status != expected) {
      return Protocol("unexpected status " + std::to_string(a.status) + " for " +
                      std::string(method) + " " + std::string(target));
    }
    if (MediaType(a.content_type) != media_type) {
      return Protocol("unexpected Content-Type for " + std::string(target));
    }
    return std::move(a.body);
  } catch (const std::bad_alloc&) {
    return Protocol("out of memory reading the answer");
  } catch (const std::exception& e) {
    return Protocol(std::string("client failure: ") + e.what());
  }
}

Result<std::string> Get(const LocalApiClientOptions& o, std::string_view target) {
  return Exchange(o, "GET", target, "", false, 200, "application/json");
}

}  // namespace

// ---- Answer parsers ----

std::optional<UpdateState> ParseUpdateState(std::string_view name) {
  for (const auto s : {UpdateState::kIdle, UpdateState::kChecking, UpdateState::kDownloading,
                       UpdateState::kVerifying, UpdateState::kInstalling,
                       UpdateState::kAwaitingReboot}) {
    if (name == ToString(s)) return s;
  }
  return std::nullopt;
}

Result<DeviceInfo> ParseDeviceAnswer(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseObject(body));
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, Reader(doc, ""));
  DeviceInfo d;
  UPKEEP_ASSIGN_OR_RETURN(d.model, Text(r, "model"));
  UPKEEP_ASSIGN_OR_RETURN(d.hardware, Text(r, "hardware"));
  UPKEEP_ASSIGN_OR_RETURN(const Json* comps, Array(r, "components"));
  for (std::size_t i = 0; i < comps->size(); ++i) {
    const Json& c = (*comps)[i];
    if (!c.is_object()) return Protocol("answer: components[" + std::to_string(i) + "]");
    UPKEEP_ASSIGN_OR_RETURN(JsonReader cr, Reader(c, "components[" + std::to_string(i) + "]"));
    Component comp;
    UPKEEP_ASSIGN_OR_RETURN(comp.name, NonEmpty(cr, "name"));
    UPKEEP_ASSIGN_OR_RETURN(comp.version, Text(cr, "version"));
    d.components.push_back(std::move(comp));
  }
  return d;
}

Result<SupportInfo> ParseSupportAnswer(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseObject(body));
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, Reader(doc, ""));
  SupportInfo s;
  UPKEEP_ASSIGN_OR_RETURN(s.support_until, NullableTime(r, "support_until"));
  UPKEEP_ASSIGN_OR_RETURN(s.ended, Bool(r, "ended"));
  return s;
}

Result<Status> ParseStatusAnswer(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseObject(body));
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, Reader(doc, ""));
  Status s;
  UPKEEP_ASSIGN_OR_RETURN(std::string state, NonEmpty(r, "state"));
  const auto parsed = ParseUpdateState(state);
  if (!parsed) return Protocol("answer: state: unknown state");
  s.state = *parsed;
  UPKEEP_ASSIGN_OR_RETURN(s.update_id, NullableString(r, "update_id"));
  auto progress = r.Required("progress");
  if (!progress) return AsProtocol(progress.error());
  if (!(*progress)->is_null()) {
    if (!(*progress)->is_object()) return Protocol("answer: progress: must be an object or null");
    UPKEEP_ASSIGN_OR_RETURN(JsonReader pr, Reader(**progress, "progress"));
    Progress p;
    UPKEEP_ASSIGN_OR_RETURN(p.done, Uint(pr, "done"));
    UPKEEP_ASSIGN_OR_RETURN(p.total, Uint(pr, "total"));
    s.progress = p;
  }
  UPKEEP_ASSIGN_OR_RETURN(s.last_check, NullableTime(r, "last_check"));
  return s;
}

Result<std::vector<Notice>> ParseNoticesAnswer(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseObject(body));
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, Reader(doc, ""));
  UPKEEP_ASSIGN_OR_RETURN(const Json* list, Array(r, "notices"));
  std::vector<Notice> out;
  out.reserve(list->size());
  for (std::size_t i = 0; i < list->size(); ++i) {
    const Json& j = (*list)[i];
    const std::string path = "notices[" + std::to_string(i) + "]";
    if (!j.is_object()) return Protocol("answer: " + path + ": must be an object");
    UPKEEP_ASSIGN_OR_RETURN(JsonReader nr, Reader(j, path));
    Notice n;
    UPKEEP_ASSIGN_OR_RETURN(n.id, NonEmpty(nr, "id"));
    UPKEEP_ASSIGN_OR_RETURN(n.update_id, Text(nr, "update_id"));
    UPKEEP_ASSIGN_OR_RETURN(std::string kind, NonEmpty(nr, "kind"));
    if (kind != "security" && kind != "feature") {
      return Protocol("answer: " + path + ".kind: neither security nor feature");
    }
    n.security = kind == "security";
    UPKEEP_ASSIGN_OR_RETURN(n.title, Text(nr, "title"));
    UPKEEP_ASSIGN_OR_RETURN(n.text, Text(nr, "text"));
    UPKEEP_ASSIGN_OR_RETURN(n.install_by, NullableTime(nr, "install_by"));
    out.push_back(std::move(n));
  }
  return out;
}

Result<PolicySettings> ParsePolicyAnswer(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseObject(body));
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, Reader(doc, ""));
  PolicySettings p;
  UPKEEP_ASSIGN_OR_RETURN(p.auto_install, Bool(r, "auto_install"));
  UPKEEP_ASSIGN_OR_RETURN(p.notifications, Bool(r, "notifications"));
  UPKEEP_ASSIGN_OR_RETURN(p.security_auto_install, Bool(r, "security_auto_install"));
  UPKEEP_ASSIGN_OR_RETURN(p.reboot_later, Bool(r, "reboot_later"));
  return p;
}

Result<void> ParseCheckAnswer(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseObject(body));
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, Reader(doc, ""));
  UPKEEP_ASSIGN_OR_RETURN(bool accepted, Bool(r, "accepted"));
  if (!accepted) return Protocol("answer: accepted: false in a 202 answer");
  return Ok();
}

Result<PostponeResult> ParsePostponeAnswer(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseObject(body));
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, Reader(doc, ""));
  PostponeResult p;
  UPKEEP_ASSIGN_OR_RETURN(p.update_id, NonEmpty(r, "update_id"));
  UPKEEP_ASSIGN_OR_RETURN(p.until, Time(r, "until"));
  return p;
}

Result<InstallAccepted> ParseInstallAnswer(std::string_view body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseObject(body));
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, Reader(doc, ""));
  InstallAccepted a;
  UPKEEP_ASSIGN_OR_RETURN(a.install_id, NonEmpty(r, "install_id"));
  return a;
}

Result<std::vector<Event>> ParseEventsAnswer(std::string_view body, std::uint64_t after) {
  std::vector<Event> out;
  std::uint64_t last = after;
  while (!body.empty()) {
    const auto nl = body.find('\n');
    if (nl == std::string_view::npos) return Protocol("answer: an event line without '\\n'");
    const std::string_view line = body.substr(0, nl);
    body.remove_prefix(nl + 1);
    auto j = metadata::ParseJson(line);
    if (!j) return Protocol("answer: event: " + j.error().message());
    UPKEEP_ASSIGN_OR_RETURN(Event e, ParseEvent(*j));
    if (e.sequence <= last) {
      return Protocol("answer: event sequence " + std::to_string(e.sequence) +
                      " not above " + std::to_string(last));
    }
    last = e.sequence;
    out.push_back(std::move(e));
  }
  return out;
}

Error ParseErrorAnswer(unsigned status, std::string_view body) {
  struct Row {
    unsigned status;
    const char* error;
    Errc code;
  };
  static constexpr Row kRows[] = {
      {400, "bad_request", Errc::InvalidArgument}, {401, "unauthenticated", Errc::Unauthenticated},
      {403, "forbidden", Errc::Forbidden},         {404, "not_found", Errc::NotFound},
      {409, "conflict", Errc::Conflict},           {413, "too_large", Errc::InvalidArgument},
      {422, "rejected", Errc::Rejected},           {429, "locked_out", Errc::LockedOut},
      {431, "too_large", Errc::InvalidArgument},   {500, "internal", Errc::Internal},
      {503, "unavailable", Errc::Unavailable},
  };
  const std::string prefix = "status " + std::to_string(status);
  auto doc = ParseObject(body);
  if (!doc) return Protocol(prefix + ": " + doc.error().message());
  auto r = Reader(*doc, "");
  if (!r) return r.error();
  auto error = r->String("error");
  if (!error) return AsProtocol(error.error()).WithContext(prefix);
  auto message = r->String("message", {.allow_empty = true});
  if (!message) return AsProtocol(message.error()).WithContext(prefix);
  for (const auto& row : kRows) {
    if (row.status == status && *error == row.error) {
      // The server's own words (docs/local-api.md: never the backend's detail).
      if (row.code == Errc::Rejected) return Error(Errc::Rejected, "update rejected");
      return Error(row.code, *message);
    }
  }
  return Protocol(prefix + " with error \"" + *error + "\"");
}

// ---- Client ----

Result<DeviceInfo> LocalApiClient::Device() const {
  UPKEEP_ASSIGN_OR_RETURN(std::string body, Get(options_, "/v1/device"));
  return ParseDeviceAnswer(body);
}

Result<SupportInfo> LocalApiClient::Support() const {
  UPKEEP_ASSIGN_OR_RETURN(std::string body, Get(options_, "/v1/support"));
  return ParseSupportAnswer(body);
}

Result<Status> LocalApiClient::GetStatus() const {
  UPKEEP_ASSIGN_OR_RETURN(std::string body, Get(options_, "/v1/status"));
  return ParseStatusAnswer(body);
}

Result<std::vector<Notice>> LocalApiClient::Notices() const {
  UPKEEP_ASSIGN_OR_RETURN(std::string body, Get(options_, "/v1/notices"));
  return ParseNoticesAnswer(body);
}

Result<PolicySettings> LocalApiClient::GetPolicy() const {
  UPKEEP_ASSIGN_OR_RETURN(std::string body, Get(options_, "/v1/policy"));
  return ParsePolicyAnswer(body);
}

Result<PolicySettings> LocalApiClient::SetPolicy(const PolicySettings& settings) const {
  Json j = Json::object();
  j["auto_install"] = settings.auto_install;
  j["notifications"] = settings.notifications;
  j["security_auto_install"] = settings.security_auto_install;
  j["reboot_later"] = settings.reboot_later;
  if (settings.confirm_security_off) j["confirm_security_off"] = true;
  UPKEEP_ASSIGN_OR_RETURN(std::string body, Exchange(options_, "PUT", "/v1/policy",
                                                     metadata::DumpJson(j), true, 200,
                                                     "application/json"));
  return ParsePolicyAnswer(body);
}

Result<void> LocalApiClient::CheckNow() const {
  UPKEEP_ASSIGN_OR_RETURN(std::string body, Exchange(options_, "POST", "/v1/check", "{}", true,
                                                     202, "application/json"));
  return ParseCheckAnswer(body);
}

Result<PostponeResult> LocalApiClient::Postpone(const PostponeRequest& request) const {
  if (request.update_id.empty() || request.update_id.size() > 256 ||
      !metadata::IsValidUtf8(request.update_id)) {
    return Error(Errc::InvalidArgument, "update id: 1 to 256 bytes of UTF-8");
  }
  Json j = Json::object();
  j["update_id"] = request.update_id;
  j["until"] = FormatTime(request.until);
  UPKEEP_ASSIGN_OR_RETURN(std::string body, Exchange(options_, "POST", "/v1/postpone",
                                                     metadata::DumpJson(j), true, 200,
                                                     "application/json"));
  return ParsePostponeAnswer(body);
}

Result<InstallAccepted> LocalApiClient::Install(const std::string& absolute_path) const {
  if (absolute_path.empty() || absolute_path.front() != '/' ||
      absolute_path.size() > kMaxPathBytes ||
      absolute_path.find('\0') != std::string::npos || !metadata::IsValidUtf8(absolute_path)) {
    return Error(Errc::InvalidArgument,
                 "the bundle path must be absolute, UTF-8 and at most 4096 bytes");
  }
  Json j = Json::object();
  j["path"] = absolute_path;
  UPKEEP_ASSIGN_OR_RETURN(std::string body, Exchange(options_, "POST", "/v1/install",
                                                     metadata::DumpJson(j), true, 202,
                                                     "application/json"));
  return ParseInstallAnswer(body);
}

Result<std::vector<Event>> LocalApiClient::Events(std::uint64_t after) const {
  const std::string target = "/v1/events?after=" + std::to_string(after);
  UPKEEP_ASSIGN_OR_RETURN(std::string body, Exchange(options_, "GET", target, "", false, 200,
                                                     "application/x-ndjson"));
  return ParseEventsAnswer(body, after);
}

}  // namespace upkeep::localapi
