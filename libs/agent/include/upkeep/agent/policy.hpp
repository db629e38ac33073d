#pragma once

// The user's update choices and the decision "may this update install now?" (EN 303 645
// provision 5.3-6, CRA Annex I; the rules are in docs/policy.md).
//
// - Automatic installation and notifications are on by default.
// - The user may turn automatic installation off (feature updates), turn notifications off,
//   postpone an update until a time, or refuse a feature update. A postponed security update
//   installs automatically once `security_postpone_cap` (default 7 days) has passed since it was
//   first offered. Only an explicit, confirmed choice turns automatic installation of security
//   updates off, and that choice is marked for reporting to the server.
// - Each update is decided on its own: nothing about one update (refused, postponed, pending)
//   changes the decision for another.
// - Maintenance windows: a daily local window from the configuration, or the server's
//   `install_window` from the check-in answer (which takes precedence when present).
// - "Install now, reboot later": the reboot waits for the maintenance window or the user, but
//   never past `reboot_deadline` after the install.
//
// Every choice is saved before the call returns: one JSON file (data_dir/policy.json) replaced
// atomically through Filesystem::WriteFileAtomic. A file that does not parse is an error
// (Errc::PolicyCorrupt), never replaced by defaults behind the user's back.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/result.hpp"

namespace upkeep::agent {

// A release whose update metadata `kind` lists "security" is a security update, even when it also
// lists "feature".
enum class UpdateKind { Security, Feature };
[[nodiscard]] const char* ToString(UpdateKind kind);
[[nodiscard]] std::optional<UpdateKind> UpdateKindFromString(std::string_view text);

// A daily window in local time: it opens `start` after local midnight and stays open `length`
// (it may run past midnight). Local time is UTC + utc_offset (the caller reads the offset from the
// device's time zone).
struct DailyWindow {
  std::chrono::minutes start{0};
  std::chrono::minutes length{std::chrono::hours(24)};
  std::chrono::seconds utc_offset{0};
};

// The server's `install_window` from the check-in answer (docs/formats/device-api.md).
struct InstallWindow {
  Clock::TimePoint not_before;
  Clock::TimePoint not_after;
};

// Limits set by the device maker (configuration), not by the user.
struct PolicyOptions {
  // A security update installs this long after it was first offered, postponed or not.
  std::chrono::seconds security_postpone_cap{std::chrono::hours(24 * 7)};
  // "Install now, reboot later": the reboot happens at the latest this long after the install.
  std::chrono::seconds reboot_deadline{std::chrono::hours(24)};
  // Daily maintenance window; none: any time.
  std::optional<DailyWindow> maintenance_window;
};

// Errc::InvalidConfig naming the bad option: cap or deadline not in 1 s .. 365 days, window start
// not below 24 h, window length not in 1 min .. 24 h, utc_offset beyond +-18 h.
[[nodiscard]] Result<void> ValidatePolicyOptions(const PolicyOptions& options);

// What the policy remembers about one offered update.
struct UpdateRecord {
  UpdateKind kind = UpdateKind::Feature;
  Clock::TimePoint first_offered;
  std::optional<Clock::TimePoint> postponed_until;
  bool refused = false;                          // feature updates only
  std::optional<Clock::TimePoint> installed_at;  // installed, reboot pending
  bool operator==(const UpdateRecord&) const = default;
};

// The persisted choices (docs/policy.md, "File format").
struct PolicyState {
  bool auto_install = true;           // feature updates install without asking
  bool notifications = true;          // notices are published to the user
  bool security_auto_install = true;  // off only through a confirmed choice
  // The security setting changed and the server has not been told yet (check-in `policy`).
  bool security_setting_unreported = false;
  bool reboot_later = false;  // after an install, wait for the window or the user (bounded)
  std::map<std::string, UpdateRecord> updates;  // by update ID
  bool operator==(const PolicyState&) const = default;
};

inline constexpr std::size_t kMaxPolicyUpdates = 64;
inline constexpr std::size_t kMaxUpdateIdBytes = 256;
inline constexpr std::uint64_t kMaxPolicyFileBytes = 64 * 1024;

// Errc::PolicyCorrupt on anything but the exact format: invalid JSON or UTF-8, a missing or
// unknown key, a wrong type, a time after 9999-12-31, more than kMaxPolicyUpdates updates, a
// refused security update.
[[nodiscard]] Result<PolicyState> ParsePolicyState(std::string_view text);
[[nodiscard]] std::string SerializePolicyState(const PolicyState& state);

// The update being decided.
struct OfferedUpdate {
  std::string id;
  UpdateKind kind = UpdateKind::Feature;
  Clock::TimePoint first_offered;
};

enum class Verdict {
  Install,    // install now
  Wait,       // ask again at `until` (no `until`: at the next check-in)
  NeedsUser,  // automatic installation is off: only the user can start it
  Refused,    // the user refused this (feature) update
};
[[nodiscard]] const char* ToString(Verdict verdict);

enum class Reason {
  Automatic,                    // nothing holds the update (or reboot) back
  PostponementCapReached,       // a postponed security update's cap ran out
  PostponedByUser,              // postponed until `until`
  OutsideMaintenanceWindow,     // waits for the daily window
  BeforeServerWindow,           // waits for the server's not_before
  ServerWindowClosed,           // the server's window has passed: wait for the next check-in
  AutomaticInstallOff,          // feature update, automatic installation off
  SecurityAutomaticInstallOff,  // security update, automatic security installation turned off
  RefusedByUser,                // feature update refused
  RebootLater,                  // reboot waits for the window or the user until the deadline
  RebootDeadlineReached,        // reboot now: the deadline passed
  InsideMaintenanceWindow,      // reboot now: the window is open
};
[[nodiscard]] const char* ToString(Reason reason);

struct Decision {
  Verdict verdict = Verdict::Wait;
  std::optional<Clock::TimePoint> until;
  Reason reason = Reason::Automatic;
  // Show the user a notice (notifications on; or a security update that needs the user).
  bool publish_notice = false;
  // Write the notice to the event log (always for security updates).
  bool record_notice = false;
};

struct RebootDecision {
  bool reboot_now = true;
  std::optional<Clock::TimePoint>
      until;  // when not now: ask again then (at the latest the deadline)
  Reason reason = Reason::Automatic;
};

// The decision itself: pure, for any state, options and time.
[[nodiscard]] Decision Decide(const PolicyState& state, const PolicyOptions& options,
                              const OfferedUpdate& update, Clock::TimePoint now,
                              const std::optional<InstallWindow>& server_window = {});
// After MarkInstalled: reboot now, or wait.
[[nodiscard]] RebootDecision DecideReboot(const PolicyState& state, const PolicyOptions& options,
                                          std::string_view update_id, Clock::TimePoint now);

// The policy file and the user's operations on it. Each operation saves before it returns and
// changes the state in memory only when the save succeeded (Errc::PolicyWriteFailed otherwise).
class Policy {
 public:
  // A missing file is a device that never changed a setting: the defaults (not written until the
  // first change). An unreadable or corrupt file: Errc::PolicyCorrupt, the file left as it is.
  // Invalid options: Errc::InvalidConfig.
  [[nodiscard]] static Result<Policy> Load(Filesystem& fs, std::filesystem::path file,
                                           PolicyOptions options);
  // The explicit way out of PolicyCorrupt (user or manufacturer action): keeps the bad file as
  // `<file>.corrupt` for inspection and writes the defaults.
  [[nodiscard]] static Result<Policy> Reset(Filesystem& fs, std::filesystem::path file,
                                            PolicyOptions options);

  [[nodiscard]] const PolicyState& state() const { return state_; }
  [[nodiscard]] const PolicyOptions& options() const { return options_; }
  [[nodiscard]] const std::filesystem::path& file() const { return file_; }

  [[nodiscard]] Result<void> SetAutoInstall(bool enabled);
  [[nodiscard]] Result<void> SetNotifications(bool enabled);
  // Turning it off needs `confirmed` (Errc::ConfirmationRequired otherwise). Any change sets
  // security_setting_unreported.
  [[nodiscard]] Result<void> SetSecurityAutoInstall(bool enabled, bool confirmed);
  // The caller told the server (check-in `policy`): clears security_setting_unreported.
  [[nodiscard]] Result<void> MarkSecuritySettingReported();
  [[nodiscard]] Result<void> SetRebootLater(bool enabled);

  // Records the first offer of `id` (Errc::InvalidPolicyValue for an empty, over-long or invalid
  // UTF-8 ID). Offering again keeps the first time; a kind becoming security stays security.
  // When kMaxPolicyUpdates are recorded, the oldest offer is forgotten.
  [[nodiscard]] Result<OfferedUpdate> Offer(const std::string& id, UpdateKind kind,
                                            Clock::TimePoint now);
  // Postpones until `until` (Errc::InvalidPolicyValue when not after `now`, UnknownUpdate when
  // never offered). Returns when it will really be decided again: for a security update at the
  // latest first_offered + security_postpone_cap. Postponing again replaces the time.
  [[nodiscard]] Result<Clock::TimePoint> Postpone(const std::string& id, Clock::TimePoint until,
                                                  Clock::TimePoint now);
  // Feature updates only (Errc::SecurityUpdateNotRefusable; UnknownUpdate).
  [[nodiscard]] Result<void> Refuse(const std::string& id);
  // The update was installed and waits for its reboot (UnknownUpdate).
  [[nodiscard]] Result<void> MarkInstalled(const std::string& id, Clock::TimePoint now);
  // The update is done (rebooted, committed, or withdrawn). Forgetting an unknown ID succeeds.
  [[nodiscard]] Result<void> Forget(const std::string& id);

  [[nodiscard]] Decision Decide(const OfferedUpdate& update, Clock::TimePoint now,
                                const std::optional<InstallWindow>& server_window = {}) const {
    return agent::Decide(state_, options_, update, now, server_window);
  }
  [[nodiscard]] RebootDecision DecideReboot(std::string_view update_id,
                                            Clock::TimePoint now) const {
    return agent::DecideReboot(state_, options_, update_id, now);
  }

 private:
  Policy(Filesystem& fs, std::filesystem::path file, PolicyOptions options, PolicyState state)
      : fs_(&fs), file_(std::move(file)), options_(std::move(options)), state_(std::move(state)) {}
  [[nodiscard]] Result<void> Commit(PolicyState next);

  Filesystem* fs_;
  std::filesystem::path file_;
  PolicyOptions options_;
  PolicyState state_;
};

}  // namespace upkeep::agent
