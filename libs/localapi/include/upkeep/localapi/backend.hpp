#pragma once

// What the local API asks of the agent. The server (server.hpp) parses and checks each request,
// calls one method of LocalApiBackend, and turns the typed answer into JSON (docs/local-api.md).
// Every method is called on a server thread and may block briefly; it must not throw (an
// exception is caught and answered as 500 "internal").

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/result.hpp"
#include "upkeep/common/unique_fd.hpp"

namespace upkeep::localapi {

enum class Errc {
  InvalidArgument = 1,  // 400 bad_request: a value the backend refuses (e.g. a past date)
  NotFound = 2,         // 404 not_found: no update or record with that ID
  Conflict = 3,         // 409 conflict: not possible in the current state (e.g. postpone cap)
  Unavailable = 4,      // 503 unavailable: busy, retry later
  Rejected = 5,         // an install that failed: answered only as "update rejected"
  CannotListen = 6,     // the socket cannot be created, bound or given its mode and group
  Unauthenticated = 7,  // a wrong credential
  LockedOut = 8,        // too many wrong credentials: no attempt is checked until the lockout ends
  InvalidCredentialStore = 9,  // the credential file is malformed, or cannot be written
  AlreadySet = 10,             // a credential exists already (generation happens once)
  Forbidden = 11,              // 403 forbidden: the backend refuses this peer (uid, gid) the action
  CannotUseBus = 20,  // D-Bus (dbus.hpp): the bus cannot be reached, the name cannot be taken
  // The client's own (client.hpp):
  DaemonNotRunning = 30,  // no socket at the path, or no process listening on it
  ProtocolError = 31,     // an answer that is not what the API specifies
  Timeout = 32,           // no complete answer in time
  Internal = 33,          // 500 internal: the daemon failed
};

}  // namespace upkeep::localapi

UPKEEP_DECLARE_ERRC(upkeep::localapi);

namespace upkeep::localapi {

// The process at the other end of the socket (SO_PEERCRED), as the kernel reports it. A client
// of the LAN listener has no local identity: `lan` is true, uid and gid are (uid_t)-1, pid 0.
struct Peer {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  bool lan = false;
};

struct Component {
  std::string name;
  std::string version;
};

// GET /v1/device
struct DeviceInfo {
  std::string model;     // model designation
  std::string hardware;  // hardware revision
  std::vector<Component> components;
};

// GET /v1/support: the period in which the model receives security updates.
struct SupportInfo {
  std::optional<Clock::TimePoint> support_until;  // absent: not yet announced
  bool ended = false;
};

enum class UpdateState { kIdle, kChecking, kDownloading, kVerifying, kInstalling, kAwaitingReboot };
// "idle", "checking", ... as the API writes them.
[[nodiscard]] const char* ToString(UpdateState state);

// GET /v1/status
struct Progress {
  std::uint64_t done = 0;
  std::uint64_t total = 0;
};
struct Status {
  UpdateState state = UpdateState::kIdle;
  std::optional<std::string> update_id;  // the update in progress, if any
  std::optional<Progress> progress;
  std::optional<Clock::TimePoint> last_check;
};

// GET /v1/notices
struct Notice {
  std::string id;
  std::string update_id;
  bool security = false;
  std::string title;
  std::string text;
  std::optional<Clock::TimePoint> install_by;  // a security update's postpone cap
};

// GET and PUT /v1/policy: the user's choices (agent PolicyState's settings).
struct PolicySettings {
  bool auto_install = true;           // feature updates install without asking
  bool notifications = true;          // notices are published to the user
  bool security_auto_install = true;  // security updates install without asking
  bool reboot_later = false;          // after an install, wait for the window or the user
  // PUT only: turning security_auto_install off must be confirmed explicitly.
  bool confirm_security_off = false;
  bool operator==(const PolicySettings&) const = default;
};

// POST /v1/postpone
struct PostponeRequest {
  std::string update_id;
  Clock::TimePoint until;
};
struct PostponeResult {
  std::string update_id;
  Clock::TimePoint until;  // may be earlier than asked (the security cap)
};

// POST /v1/install: the bundle, already opened read-only with the caller's file-system identity
// (the server never opens a file the caller could not read; docs/local-api.md).
struct InstallRequest {
  UniqueFd bundle;
  std::string path;  // as the caller gave it, for the event log only
  Peer peer;
};
struct InstallAccepted {
  std::string install_id;
};

// GET /v1/events?after=N: events with sequence numbers above N, oldest first.
struct Event {
  std::uint64_t sequence = 0;
  Clock::TimePoint time;
  std::string type;     // e.g. "state", "notice", "installed", "rejected"
  std::string message;  // short, for users; never an incident's detail
};

class LocalApiBackend {
 public:
  virtual ~LocalApiBackend() = default;
  [[nodiscard]] virtual Result<DeviceInfo> Device(const Peer& peer) = 0;
  [[nodiscard]] virtual Result<SupportInfo> Support(const Peer& peer) = 0;
  [[nodiscard]] virtual Result<Status> GetStatus(const Peer& peer) = 0;
  [[nodiscard]] virtual Result<std::vector<Notice>> Notices(const Peer& peer) = 0;
  [[nodiscard]] virtual Result<PolicySettings> GetPolicy(const Peer& peer) = 0;
  // Returns the settings now in force.
  [[nodiscard]] virtual Result<PolicySettings> SetPolicy(const Peer& peer,
                                                         const PolicySettings& settings) = 0;
  // Starts a check; the answer does not wait for it.
  [[nodiscard]] virtual Result<void> CheckNow(const Peer& peer) = 0;
  [[nodiscard]] virtual Result<PostponeResult> Postpone(const Peer& peer,
                                                        const PostponeRequest& request) = 0;
  // Any error is answered as {"error":"rejected","message":"update rejected"}; the backend logs
  // and reports the detail itself.
  [[nodiscard]] virtual Result<InstallAccepted> Install(InstallRequest request) = 0;
  // At most `max` events with sequence > after.
  [[nodiscard]] virtual Result<std::vector<Event>> Events(const Peer& peer, std::uint64_t after,
                                                          std::size_t max) = 0;
};

}  // namespace upkeep::localapi
