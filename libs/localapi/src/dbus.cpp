// The local API on D-Bus through sdbus-c++ (docs/local-api.md, "D-Bus interface").
//
// sdbus-c++ reports every failure by throwing sdbus::Error, and an exception leaving one of its
// method callbacks (other than sdbus::Error) or its event loop would end the process. So every
// callback here catches everything, the event loop runs on our own thread inside a try block, and
// each call into sdbus-c++ from the public API is wrapped as well.

#include "upkeep/localapi/dbus.hpp"

#include <fcntl.h>
#include <sdbus-c++/sdbus-c++.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "upkeep/common/log.hpp"
#include "upkeep/common/utf8.hpp"
#include "upkeep/localapi/server.hpp"

namespace upkeep::localapi {

namespace {

constexpr std::size_t kMaxUpdateIdBytes = 256;
constexpr std::size_t kMaxPathBytes = 4096;
constexpr std::size_t kTimeBytes = 20;  // YYYY-MM-DDTHH:MM:SSZ

// The only error names and messages a caller ever sees; the backend's own messages (which may
// name files or incidents) are never sent.
struct Failure {
  const char* name;
  std::string message;
};
constexpr const char* kErrInvalidArgument = "org.upkeep.Agent1.Error.InvalidArgument";
constexpr const char* kErrNotFound = "org.upkeep.Agent1.Error.NotFound";
constexpr const char* kErrConflict = "org.upkeep.Agent1.Error.Conflict";
constexpr const char* kErrUnavailable = "org.upkeep.Agent1.Error.Unavailable";
constexpr const char* kErrForbidden = "org.upkeep.Agent1.Error.Forbidden";
constexpr const char* kErrRejected = "org.upkeep.Agent1.Error.Rejected";
constexpr const char* kErrFailed = "org.upkeep.Agent1.Error.Failed";

Failure Refused(std::string message) { return Failure{kErrInvalidArgument, std::move(message)}; }
Failure InternalFailure() { return Failure{kErrFailed, "internal error"}; }
Failure RejectedFailure() { return Failure{kErrRejected, "update rejected"}; }

Failure FailureOf(const Error& e) {
  if (e.code() == Errc::InvalidArgument) return Failure{kErrInvalidArgument, "refused value"};
  if (e.code() == Errc::NotFound) return Failure{kErrNotFound, "no such record"};
  if (e.code() == Errc::Conflict) return Failure{kErrConflict, "not possible in the current state"};
  if (e.code() == Errc::Unavailable) return Failure{kErrUnavailable, "busy, retry later"};
  if (e.code() == Errc::Forbidden) return Failure{kErrForbidden, "not permitted"};
  return InternalFailure();
}

// Text from a caller: within the byte bounds, well-formed UTF-8, no control characters (a path
// goes into the event log, where a newline could forge a line).
bool CleanText(std::string_view text, std::size_t min_bytes, std::size_t max_bytes) {
  if (text.size() < min_bytes || text.size() > max_bytes) return false;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return false;
  }
  return SanitizeUtf8(text) == text;
}

// Text to a caller: D-Bus strings must be valid UTF-8.
std::string Out(std::string_view text) { return SanitizeUtf8(text); }

std::string TimeOrEmpty(const std::optional<Clock::TimePoint>& t) {
  return t ? FormatTime(*t) : std::string();
}

using StatusDict = std::map<std::string, sdbus::Variant>;
using NoticeStruct =
    sdbus::Struct<std::string, std::string, bool, std::string, std::string, std::string>;
using PolicyDict = std::map<std::string, bool>;

StatusDict StatusToDict(const Status& s) {
  StatusDict d;
  d["state"] = sdbus::Variant(std::string(ToString(s.state)));
  if (s.update_id) d["update_id"] = sdbus::Variant(Out(*s.update_id));
  if (s.progress)
    d["progress"] = sdbus::Variant(
        sdbus::Struct<std::uint64_t, std::uint64_t>(s.progress->done, s.progress->total));
  if (s.last_check) d["last_check"] = sdbus::Variant(FormatTime(*s.last_check));
  return d;
}

NoticeStruct NoticeToStruct(const Notice& n) {
  return NoticeStruct(Out(n.id), Out(n.update_id), n.security, Out(n.title), Out(n.text),
                      TimeOrEmpty(n.install_by));
}

PolicyDict PolicyToDict(const PolicySettings& p) {
  return PolicyDict{{"auto_install", p.auto_install},
                    {"notifications", p.notifications},
                    {"security_auto_install", p.security_auto_install},
                    {"reboot_later", p.reboot_later}};
}

// Exactly the four keys, each once (a dict has no duplicates once read), and optionally
// "confirm_security_off" (SetPolicy only: turning automatic security updates off); nothing else.
std::optional<PolicySettings> PolicyFromDict(const PolicyDict& d) {
  PolicySettings p;
  std::size_t expected = 4;
  if (const auto it = d.find("confirm_security_off"); it != d.end()) {
    p.confirm_security_off = it->second;
    expected = 5;
  }
  if (d.size() != expected) return std::nullopt;
  const auto take = [&d](const char* key, bool& field) {
    const auto it = d.find(key);
    if (it == d.end()) return false;
    field = it->second;
    return true;
  };
  if (!take("auto_install", p.auto_install) || !take("notifications", p.notifications) ||
      !take("security_auto_install", p.security_auto_install) ||
      !take("reboot_later", p.reboot_later))
    return std::nullopt;
  return p;
}

// The caller as the bus daemon reports it (sd_bus_query_sender_creds): the effective uid and the
// pid from GetConnectionCredentials, which the daemon took from SO_PEERCRED when the caller
// connected; the effective gid, which the bus does not report, completed by sd-bus from
// /proc/<pid>/status. Nothing comes from the message's arguments.
std::optional<Peer> PeerOf(const sdbus::MethodCall& call) {
  try {
    Peer p;
    p.uid = call.getCredsEuid();
    p.pid = call.getCredsPid();
    p.gid = call.getCredsEgid();
    return p;
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace

struct DbusService::Impl {
  Impl(const DbusOptions& o, LocalApiBackend& b) : options(o), backend(b) {}

  using Handler = std::optional<Failure> (Impl::*)(sdbus::MethodCall&, const Peer&,
                                                   sdbus::MethodReply&);

  // The boundary of every method call: nothing thrown gets past it, and every call is answered
  // (a reply or an error) unless the bus itself fails.
  void Dispatch(sdbus::MethodCall& call, Handler handler) noexcept {
    std::optional<Failure> failure;
    try {
      const std::optional<Peer> peer = PeerOf(call);
      if (!peer) {
        failure = Failure{kErrForbidden, "the caller's identity is not available"};
      } else {
        sdbus::MethodReply reply = call.createReply();
        failure = (this->*handler)(call, *peer, reply);
        if (!failure) {
          reply.send();
          return;
        }
      }
    } catch (const std::exception& e) {
      log::warn("dbus: {}", e.what());
      if (!failure) failure = InternalFailure();
    } catch (...) {
      if (!failure) failure = InternalFailure();
    }
    try {
      call.createErrorReply(sdbus::Error(failure->name, failure->message)).send();
    } catch (const std::exception& e) {
      log::warn("dbus: cannot answer: {}", e.what());
    } catch (...) {
      log::warn("dbus: cannot answer");
    }
  }

  // Reads the arguments; sd-bus has checked the signature against the vtable already, so this
  // fails only on a malformed message.
  template <typename... Args>
  static bool Read(sdbus::MethodCall& call, Args&... args) {
    try {
      (call >> ... >> args);
      return true;
    } catch (...) {
      return false;
    }
  }

  std::optional<Failure> GetDevice(sdbus::MethodCall&, const Peer& peer, sdbus::MethodReply& r) {
    auto d = backend.Device(peer);
    if (!d) return FailureOf(d.error());
    std::vector<sdbus::Struct<std::string, std::string>> components;
    components.reserve(d->components.size());
    for (const Component& c : d->components) components.emplace_back(Out(c.name), Out(c.version));
    r << Out(d->model) << Out(d->hardware) << components;
    return std::nullopt;
  }

  std::optional<Failure> GetSupport(sdbus::MethodCall&, const Peer& peer, sdbus::MethodReply& r) {
    auto s = backend.Support(peer);
    if (!s) return FailureOf(s.error());
    r << TimeOrEmpty(s->support_until) << s->ended;
    return std::nullopt;
  }

  std::optional<Failure> GetStatus(sdbus::MethodCall&, const Peer& peer, sdbus::MethodReply& r) {
    auto s = backend.GetStatus(peer);
    if (!s) return FailureOf(s.error());
    r << StatusToDict(*s);
    return std::nullopt;
  }

  std::optional<Failure> GetNotices(sdbus::MethodCall&, const Peer& peer, sdbus::MethodReply& r) {
    auto n = backend.Notices(peer);
    if (!n) return FailureOf(n.error());
    std::vector<NoticeStruct> out;
    out.reserve(n->size());
    for (const Notice& notice : *n) out.push_back(NoticeToStruct(notice));
    r << out;
    return std::nullopt;
  }

  std::optional<Failure> GetPolicy(sdbus::MethodCall&, const Peer& peer, sdbus::MethodReply& r) {
    auto p = backend.GetPolicy(peer);
    if (!p) return FailureOf(p.error());
    r << PolicyToDict(*p);
    return std::nullopt;
  }

  std::optional<Failure> SetPolicy(sdbus::MethodCall& call, const Peer& peer,
                                   sdbus::MethodReply& r) {
    PolicyDict in;
    if (!Read(call, in)) return Refused("malformed arguments");
    const std::optional<PolicySettings> settings = PolicyFromDict(in);
    if (!settings)
      return Refused(
          "settings: exactly auto_install, notifications, security_auto_install, reboot_later");
    auto p = backend.SetPolicy(peer, *settings);
    if (!p) return FailureOf(p.error());
    r << PolicyToDict(*p);
    return std::nullopt;
  }

  std::optional<Failure> CheckNow(sdbus::MethodCall&, const Peer& peer, sdbus::MethodReply&) {
    auto c = backend.CheckNow(peer);
    if (!c) return FailureOf(c.error());
    return std::nullopt;
  }

  std::optional<Failure> Postpone(sdbus::MethodCall& call, const Peer& peer,
                                  sdbus::MethodReply& r) {
    std::string update_id;
    std::string until;
    if (!Read(call, update_id, until)) return Refused("malformed arguments");
    if (!CleanText(update_id, 1, kMaxUpdateIdBytes))
      return Refused("update_id: 1 to 256 bytes of UTF-8 text");
    const std::optional<Clock::TimePoint> t =
        until.size() == kTimeBytes ? ParseTime(until) : std::nullopt;
    if (!t) return Refused("until: not YYYY-MM-DDTHH:MM:SSZ");
    auto p = backend.Postpone(peer, PostponeRequest{update_id, *t});
    if (!p) return FailureOf(p.error());
    r << Out(p->update_id) << FormatTime(p->until);
    return std::nullopt;
  }

  std::optional<Failure> InstallBundle(sdbus::MethodCall& call, const Peer& peer,
                                       sdbus::MethodReply& r) {
    sdbus::UnixFd passed;
    std::string path;
    if (!Read(call, passed, path)) return Refused("malformed arguments");
    if (path.empty() || path.front() != '/' || !CleanText(path, 1, kMaxPathBytes))
      return Refused("path: an absolute path of at most 4096 bytes of UTF-8 text");
    // The descriptor the caller opened with its own rights; the daemon opens nothing.
    const int flags = ::fcntl(passed.get(), F_GETFL);
    if (flags < 0 || (flags & O_PATH) != 0 || (flags & O_ACCMODE) == O_WRONLY)
      return Refused("bundle: not open for reading");
    struct stat st {};
    if (::fstat(passed.get(), &st) != 0 || !S_ISREG(st.st_mode))
      return Refused("bundle: not a regular file");
    UniqueFd bundle(::fcntl(passed.get(), F_DUPFD_CLOEXEC, 0));
    if (bundle.get() < 0) return Failure{kErrUnavailable, "busy, retry later"};
    passed.reset();
    // From here on every failure, even an exception, is only "update rejected" (EN 303 645
    // 5.3-9): the backend logs and reports the detail itself.
    try {
      auto accepted = backend.Install(InstallRequest{std::move(bundle), path, peer});
      if (!accepted) return RejectedFailure();
      r << Out(accepted->install_id);
      return std::nullopt;
    } catch (...) {
      return RejectedFailure();
    }
  }

  std::optional<Failure> Events(sdbus::MethodCall& call, const Peer& peer, sdbus::MethodReply& r) {
    std::uint64_t after = 0;
    std::uint32_t max = 0;
    if (!Read(call, after, max)) return Refused("malformed arguments");
    if (max == 0) return Refused("max: at least 1");
    const std::size_t n = std::min<std::size_t>(max, options.max_events);
    auto events = backend.Events(peer, after, n);
    if (!events) return FailureOf(events.error());
    std::vector<sdbus::Struct<std::uint64_t, std::string, std::string, std::string>> out;
    out.reserve(std::min(events->size(), n));
    for (const Event& e : *events) {
      if (out.size() >= n) break;
      out.emplace_back(e.sequence, FormatTime(e.time), Out(e.type), Out(e.message));
    }
    r << out;
    return std::nullopt;
  }

  void Register() {
    const auto method = [this](const char* name, const char* in,
                               const std::vector<std::string>& in_names, const char* out,
                               const std::vector<std::string>& out_names, Handler h) {
      object->registerMethod(kDbusInterface, name, in, in_names, out, out_names,
                             [this, h](sdbus::MethodCall call) { Dispatch(call, h); });
    };
    method("GetDevice", "", {}, "ssa(ss)", {"model", "hardware", "components"}, &Impl::GetDevice);
    method("GetSupport", "", {}, "sb", {"support_until", "ended"}, &Impl::GetSupport);
    method("GetStatus", "", {}, "a{sv}", {"status"}, &Impl::GetStatus);
    method("GetNotices", "", {}, "a(ssbsss)", {"notices"}, &Impl::GetNotices);
    method("GetPolicy", "", {}, "a{sb}", {"settings"}, &Impl::GetPolicy);
    method("SetPolicy", "a{sb}", {"settings"}, "a{sb}", {"settings"}, &Impl::SetPolicy);
    method("CheckNow", "", {}, "", {}, &Impl::CheckNow);
    method("Postpone", "ss", {"update_id", "until"}, "ss", {"update_id", "until"}, &Impl::Postpone);
    method("InstallBundle", "hs", {"bundle", "path"}, "s", {"install_id"}, &Impl::InstallBundle);
    method("Events", "tu", {"after", "max"}, "a(tsss)", {"events"}, &Impl::Events);
    object->registerSignal(kDbusInterface, "NoticePublished", "ssbsss",
                           {"id", "update_id", "security", "title", "text", "install_by"});
    object->registerSignal(kDbusInterface, "StatusChanged", "a{sv}", {"status"});
    object->finishRegistration();
  }

  // `append` writes the signal's arguments; it runs inside the try block, as building a
  // sdbus::Variant may throw.
  template <typename Append>
  Result<void> Emit(const char* signal_name, Append&& append) {
    std::lock_guard lock(mu);
    if (!running) return Error(Errc::Unavailable, "the D-Bus service is stopped");
    try {
      sdbus::Signal signal = object->createSignal(kDbusInterface, signal_name);
      append(signal);
      object->emitSignal(signal);
      return Ok();
    } catch (const std::exception& e) {
      return Error(Errc::CannotUseBus, std::string("emit ") + signal_name + ": " + e.what());
    } catch (...) {
      return Error(Errc::CannotUseBus, std::string("emit ") + signal_name);
    }
  }

  void Stop() {
    // From a backend call the loop would wait for itself, and the object would be destroyed
    // under the running callback.
    if (std::this_thread::get_id() == loop_id) {
      log::error("dbus: Stop() from within a backend call is ignored");
      return;
    }
    std::lock_guard stopping(stop_mu);
    {
      // From here on Emit refuses; one in progress has finished. The loop thread is joined
      // without holding `mu`, so a backend call that emits a signal cannot deadlock the stop.
      std::lock_guard lock(mu);
      if (!running) return;
      running = false;
    }
    try {
      connection->leaveEventLoop();
    } catch (const std::exception& e) {
      log::warn("dbus: stop: {}", e.what());
    } catch (...) {
      log::warn("dbus: stop");
    }
    if (loop.joinable()) loop.join();
    std::lock_guard lock(mu);
    try {
      connection->releaseName(kDbusName);
    } catch (...) {
      // The bus releases the name when the connection closes.
    }
    object.reset();
    connection.reset();
  }

  DbusOptions options;
  LocalApiBackend& backend;
  std::mutex stop_mu;  // one Stop at a time; a second waits for the first to finish
  std::mutex mu;       // running, object and connection against Emit and Stop
  bool running = false;
  std::unique_ptr<sdbus::IConnection> connection;
  std::unique_ptr<sdbus::IObject> object;
  std::thread loop;
  std::thread::id loop_id;  // set once in Start, before the service is returned
};

Result<std::unique_ptr<DbusService>> DbusService::Start(const DbusOptions& options,
                                                        LocalApiBackend& backend) {
  if (options.max_events == 0) return Error(Errc::InvalidArgument, "max_events: at least 1");
  if (options.bus == DbusBus::kAddress && options.address.empty())
    return Error(Errc::InvalidArgument, "address: required for DbusBus::kAddress");
  auto impl = std::make_unique<Impl>(options, backend);
  try {
    switch (options.bus) {
      case DbusBus::kSystem:
        impl->connection = sdbus::createSystemBusConnection();
        break;
      case DbusBus::kSession:
        impl->connection = sdbus::createSessionBusConnection();
        break;
      case DbusBus::kAddress:
        impl->connection = sdbus::createSessionBusConnectionWithAddress(options.address);
        break;
    }
  } catch (const std::exception& e) {
    return Error(Errc::CannotUseBus, std::string("connect: ") + e.what());
  } catch (...) {
    return Error(Errc::CannotUseBus, "connect");
  }
  if (!impl->connection) return Error(Errc::CannotUseBus, "connect");
  try {
    // The object is complete before the name is taken, so no call finds it half registered.
    impl->object = sdbus::createObject(*impl->connection, kDbusObjectPath);
    impl->Register();
    impl->connection->requestName(kDbusName);
  } catch (const std::exception& e) {
    return Error(Errc::CannotUseBus, std::string("export ") + kDbusName + ": " + e.what());
  } catch (...) {
    return Error(Errc::CannotUseBus, std::string("export ") + kDbusName);
  }
  sdbus::IConnection* connection = impl->connection.get();
  auto service = std::unique_ptr<DbusService>(new DbusService(std::move(impl)));
  try {
    service->impl_->loop = std::thread([connection] {
      try {
        connection->enterEventLoop();
      } catch (const std::exception& e) {
        log::error("dbus: event loop ended: {}", e.what());
      } catch (...) {
        log::error("dbus: event loop ended");
      }
    });
  } catch (const std::exception& e) {
    return Error(Errc::CannotUseBus, std::string("thread: ") + e.what());
  }
  service->impl_->loop_id = service->impl_->loop.get_id();
  service->impl_->running = true;
  return service;
}

DbusService::DbusService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

DbusService::~DbusService() { Stop(); }

void DbusService::Stop() {
  if (impl_) impl_->Stop();
}

Result<void> DbusService::EmitNotice(const Notice& notice) {
  return impl_->Emit("NoticePublished", [&notice](sdbus::Signal& signal) {
    const NoticeStruct n = NoticeToStruct(notice);
    signal << std::get<0>(n) << std::get<1>(n) << std::get<2>(n) << std::get<3>(n) << std::get<4>(n)
           << std::get<5>(n);
  });
}

Result<void> DbusService::EmitStatus(const Status& status) {
  return impl_->Emit("StatusChanged",
                     [&status](sdbus::Signal& signal) { signal << StatusToDict(status); });
}

}  // namespace upkeep::localapi
