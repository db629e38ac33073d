#pragma once

// The agent's local API on D-Bus (docs/local-api.md, "D-Bus interface"): the bus name
// org.upkeep.Agent1 with the object /org/upkeep/Agent1 and the interface org.upkeep.Agent1, one
// method for each LocalApiBackend method and the signals NoticePublished and StatusChanged.
// Who may call which method is decided by the bus policy (packaging/dbus/org.upkeep.Agent1.conf);
// each call also carries the caller's uid, gid and pid as the bus daemon reports them, never
// anything the caller says. Arguments are checked (UTF-8, sizes, times) before the backend sees
// them, and backend errors become fixed D-Bus error names and messages: an install that fails is
// only org.upkeep.Agent1.Error.Rejected "update rejected".

#include <cstddef>
#include <memory>
#include <string>

#include "upkeep/common/result.hpp"
#include "upkeep/localapi/backend.hpp"

namespace upkeep::localapi {

inline constexpr const char* kDbusName = "org.upkeep.Agent1";
inline constexpr const char* kDbusObjectPath = "/org/upkeep/Agent1";
inline constexpr const char* kDbusInterface = "org.upkeep.Agent1";

enum class DbusBus {
  kSystem,   // the system bus (the daemon)
  kSession,  // the caller's session bus
  kAddress,  // the bus at DbusOptions::address (tests: a private dbus-daemon)
};

struct DbusOptions {
  DbusBus bus = DbusBus::kSystem;
  std::string address;  // with kAddress only, e.g. "unix:path=/run/test/bus"
  // Most events one Events call answers (a larger `max` is reduced to this).
  std::size_t max_events = 100;
};

class DbusService {
 public:
  // Connects to the bus, exports the object, takes the name and starts the thread that serves
  // calls. Errc::CannotUseBus when the bus cannot be reached or the name cannot be taken (another
  // owner, or the bus policy refuses it); Errc::InvalidArgument for max_events 0 or kAddress
  // without an address. `backend` must outlive the service.
  [[nodiscard]] static Result<std::unique_ptr<DbusService>> Start(const DbusOptions& options,
                                                                  LocalApiBackend& backend);
  ~DbusService();  // Stop()
  DbusService(const DbusService&) = delete;
  DbusService& operator=(const DbusService&) = delete;

  // Signals to every listener. Errc::Unavailable after Stop(), Errc::CannotUseBus when the bus
  // refuses the signal. Callable from any thread, also from within a backend call.
  [[nodiscard]] Result<void> EmitNotice(const Notice& notice);
  [[nodiscard]] Result<void> EmitStatus(const Status& status);

  // Releases the name, stops the thread (waiting for a call in progress to finish) and closes
  // the connection. Idempotent. Called from within a backend call it does nothing (logged).
  void Stop();

  struct Impl;

 private:
  explicit DbusService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace upkeep::localapi
