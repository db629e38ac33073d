#include "upkeep/agent/policy.hpp"

#include <algorithm>
#include <utility>

#include "upkeep/agent/config.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/json_reader.hpp"
#include "upkeep/metadata/json_text.hpp"

namespace upkeep::agent {

namespace {

using metadata::Json;
using metadata::JsonReader;
using std::chrono::seconds;

constexpr std::uint64_t kPolicyFormat = 1;
// 9999-12-31T23:59:59Z: a later time in the file is corrupt (and could overflow arithmetic).
constexpr std::uint64_t kMaxUnixSeconds = 253402300799;
constexpr seconds kDay{86400};
constexpr seconds kMaxLimit{365 * 86400};

Clock::TimePoint FromUnix(std::uint64_t t) {
  return Clock::TimePoint(seconds(static_cast<std::int64_t>(t)));
}

Json TimeOrNull(const std::optional<Clock::TimePoint>& t) {
  if (!t) return nullptr;
  return t->time_since_epoch().count();
}

Result<std::optional<Clock::TimePoint>> OptionalTime(JsonReader& r, std::string_view key) {
  if (const Json* v = r.Optional(key); v != nullptr && v->is_null()) {
    r.MarkRead(key);
    return std::optional<Clock::TimePoint>();
  }
  UPKEEP_ASSIGN_OR_RETURN(const std::uint64_t t, r.Uint(key, {.max = kMaxUnixSeconds}));
  return std::optional<Clock::TimePoint>(FromUnix(t));
}

bool InRange(Clock::TimePoint t) {
  const auto n = t.time_since_epoch().count();
  return n >= 0 && static_cast<std::uint64_t>(n) <= kMaxUnixSeconds;
}

bool ValidId(std::string_view id) {
  return !id.empty() && id.size() <= kMaxUpdateIdBytes && metadata::IsValidUtf8(id);
}

Result<PolicyState> Read(const Json& doc) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, JsonReader::Of(doc, metadata::Errc::InvalidMetadata, ""));
  UPKEEP_ASSIGN_OR_RETURN(const std::uint64_t format,
                          r.Uint("format", {.min = kPolicyFormat, .max = kPolicyFormat}));
  (void)format;
  PolicyState s;
  UPKEEP_ASSIGN_OR_RETURN(s.auto_install, r.Bool("auto_install"));
  UPKEEP_ASSIGN_OR_RETURN(s.notifications, r.Bool("notifications"));
  UPKEEP_ASSIGN_OR_RETURN(s.security_auto_install, r.Bool("security_auto_install"));
  UPKEEP_ASSIGN_OR_RETURN(s.security_setting_unreported, r.Bool("security_setting_unreported"));
  UPKEEP_ASSIGN_OR_RETURN(s.reboot_later, r.Bool("reboot_later"));
  UPKEEP_ASSIGN_OR_RETURN(JsonReader updates, r.Object("updates"));
  if (updates.json().size() > kMaxPolicyUpdates) {
    return r.Fail("updates", "more than " + std::to_string(kMaxPolicyUpdates) + " updates");
  }
  for (const auto& [id, value] : updates.json().items()) {
    if (!ValidId(id)) return r.Fail("updates", "invalid update ID");
    UPKEEP_ASSIGN_OR_RETURN(JsonReader u, updates.Object(id));
    UpdateRecord rec;
    UPKEEP_ASSIGN_OR_RETURN(const std::string kind, u.String("kind"));
    const auto parsed = UpdateKindFromString(kind);
    if (!parsed) return u.Fail("kind", "unknown kind " + kind);
    rec.kind = *parsed;
    UPKEEP_ASSIGN_OR_RETURN(const std::uint64_t first,
                            u.Uint("first_offered", {.max = kMaxUnixSeconds}));
    rec.first_offered = FromUnix(first);
    UPKEEP_ASSIGN_OR_RETURN(rec.postponed_until, OptionalTime(u, "postponed_until"));
    UPKEEP_ASSIGN_OR_RETURN(rec.refused, u.Bool("refused"));
    if (rec.refused && rec.kind == UpdateKind::Security) {
      return u.Fail("refused", "a security update cannot be refused");
    }
    UPKEEP_ASSIGN_OR_RETURN(rec.installed_at, OptionalTime(u, "installed_at"));
    UPKEEP_TRY(u.NoUnknownKeys());
    s.updates.emplace(id, rec);
  }
  UPKEEP_TRY(r.NoUnknownKeys());
  return s;
}

Error WriteFailed(const std::filesystem::path& file, const Error& e) {
  return Error(Errc::PolicyWriteFailed, file.string() + ": " + e.message());
}

// Local seconds since the epoch (UTC shifted by the window's offset).
std::int64_t LocalSeconds(const DailyWindow& w, Clock::TimePoint now) {
  return (now.time_since_epoch() + w.utc_offset).count();
}

// Whether the daily window is open at `now`, and when it next opens (if not open).
struct WindowState {
  bool open = false;
  Clock::TimePoint next_open;
};

WindowState DailyWindowAt(const DailyWindow& w, Clock::TimePoint now) {
  const std::int64_t local = LocalSeconds(w, now);
  std::int64_t day = local / kDay.count();
  if (local % kDay.count() < 0) --day;
  const std::int64_t start = seconds(w.start).count();
  const std::int64_t length = seconds(w.length).count();
  // Today's window, or yesterday's running past midnight.
  for (const std::int64_t d : {day - 1, day}) {
    const std::int64_t open = d * kDay.count() + start;
    if (local >= open && local < open + length) return {true, now};
  }
  std::int64_t next = day * kDay.count() + start;
  if (next <= local) next += kDay.count();
  return {false, now + seconds(next - local)};
}

}  // namespace

const char* ToString(UpdateKind kind) {
  return kind == UpdateKind::Security ? "security" : "feature";
}

std::optional<UpdateKind> UpdateKindFromString(std::string_view text) {
  if (text == "security") return UpdateKind::Security;
  if (text == "feature") return UpdateKind::Feature;
  return std::nullopt;
}

const char* ToString(Verdict verdict) {
  switch (verdict) {
    case Verdict::Install:
      return "install";
    case Verdict::Wait:
      return "wait";
    case Verdict::NeedsUser:
      return "needs_user";
    case Verdict::Refused:
      return "refused";
  }
  return "unknown";
}

const char* ToString(Reason reason) {
  switch (reason) {
    case Reason::Automatic:
      return "automatic";
    case Reason::PostponementCapReached:
      return "postponement_cap_reached";
    case Reason::PostponedByUser:
      return "postponed_by_user";
    case Reason::OutsideMaintenanceWindow:
      return "outside_maintenance_window";
    case Reason::BeforeServerWindow:
      return "before_server_window";
    case Reason::ServerWindowClosed:
      return "server_window_closed";
    case Reason::AutomaticInstallOff:
      return "automatic_install_off";
    case Reason::SecurityAutomaticInstallOff:
      return "security_automatic_install_off";
    case Reason::RefusedByUser:
      return "refused_by_user";
    case Reason::RebootLater:
      return "reboot_later";
    case Reason::RebootDeadlineReached:
      return "reboot_deadline_reached";
    case Reason::InsideMaintenanceWindow:
      return "inside_maintenance_window";
  }
  return "unknown";
}

Result<void> ValidatePolicyOptions(const PolicyOptions& o) {
  auto bad = [](const std::string& key, const std::string& what) {
    return Error(Errc::InvalidConfig, "policy." + key + ": " + what);
  };
  if (o.security_postpone_cap < seconds(1) || o.security_postpone_cap > kMaxLimit) {
    return bad("security_postpone_cap", "must be 1 s .. 365 days");
  }
  if (o.reboot_deadline < seconds(1) || o.reboot_deadline > kMaxLimit) {
    return bad("reboot_deadline", "must be 1 s .. 365 days");
  }
  if (const auto& w = o.maintenance_window) {
    if (w->start.count() < 0 || w->start >= kDay) {
      return bad("maintenance_window.start", "must be within the day");
    }
    if (w->length < std::chrono::minutes(1) || w->length > kDay) {
      return bad("maintenance_window.length", "must be 1 min .. 24 h");
    }
    if (w->utc_offset > std::chrono::hours(18) || w->utc_offset < -std::chrono::hours(18)) {
      return bad("maintenance_window.utc_offset", "must be within +-18 h");
    }
  }
  return Ok();
}

Result<PolicyState> ParsePolicyState(std::string_view text) {
  auto corrupt = [](const Error& e) {
    return Error(Errc::PolicyCorrupt, "policy.json: " + e.message());
  };
  if (text.size() > kMaxPolicyFileBytes) {
    return Error(Errc::PolicyCorrupt,
                 "policy.json: larger than " + std::to_string(kMaxPolicyFileBytes) + " bytes");
  }
  auto doc = metadata::ParseJson(text);
  if (!doc) return corrupt(doc.error());
  auto state = Read(*doc);
  if (!state) return corrupt(state.error());
  return state;
}

std::string SerializePolicyState(const PolicyState& s) {
  Json updates = Json::object();
  for (const auto& [id, u] : s.updates) {
    updates[id] = {{"kind", ToString(u.kind)},
                   {"first_offered", u.first_offered.time_since_epoch().count()},
                   {"postponed_until", TimeOrNull(u.postponed_until)},
                   {"refused", u.refused},
                   {"installed_at", TimeOrNull(u.installed_at)}};
  }
  const Json doc = {{"format", kPolicyFormat},
                    {"auto_install", s.auto_install},
                    {"notifications", s.notifications},
                    {"security_auto_install", s.security_auto_install},
                    {"security_setting_unreported", s.security_setting_unreported},
                    {"reboot_later", s.reboot_later},
                    {"updates", updates}};
  return metadata::DumpJson(doc, 2) + "\n";
}

Decision Decide(const PolicyState& state, const PolicyOptions& options, const OfferedUpdate& update,
                Clock::TimePoint now, const std::optional<InstallWindow>& server_window) {
  const bool security = update.kind == UpdateKind::Security;
  Decision d;
  auto finish = [&](Verdict verdict, Reason reason,
                    std::optional<Clock::TimePoint> until = {}) -> Decision {
    d.verdict = verdict;
    d.reason = reason;
    d.until = until;
    // A security update that only the user can start is shown even with notifications off:
    // otherwise nobody would ever install it.
    d.publish_notice = state.notifications || (security && verdict == Verdict::NeedsUser);
    d.record_notice = security || d.publish_notice;
    return d;
  };

  const auto it = state.updates.find(update.id);
  const UpdateRecord* rec = it == state.updates.end() ? nullptr : &it->second;
  // Only this update's own record counts: no other update's state is consulted.
  if (!security && rec != nullptr && rec->refused) {
    return finish(Verdict::Refused, Reason::RefusedByUser);
  }
  if (security && !state.security_auto_install) {
    return finish(Verdict::NeedsUser, Reason::SecurityAutomaticInstallOff);
  }
  if (!security && !state.auto_install) {
    return finish(Verdict::NeedsUser, Reason::AutomaticInstallOff);
  }

  Reason go = Reason::Automatic;
  if (rec != nullptr && rec->postponed_until && *rec->postponed_until > now) {
    if (!security) return finish(Verdict::Wait, Reason::PostponedByUser, rec->postponed_until);
    // The cap counts from the earliest known offer, whatever the file or the caller says later.
    const Clock::TimePoint first = std::min(update.first_offered, rec->first_offered);
    const Clock::TimePoint cap = first + options.security_postpone_cap;
    if (now < cap) {
      return finish(Verdict::Wait, Reason::PostponedByUser, std::min(*rec->postponed_until, cap));
    }
    go = Reason::PostponementCapReached;
  }

  if (server_window) {
    if (now < server_window->not_before) {
      return finish(Verdict::Wait, Reason::BeforeServerWindow, server_window->not_before);
    }
    if (now > server_window->not_after) return finish(Verdict::Wait, Reason::ServerWindowClosed);
  } else if (options.maintenance_window) {
    const WindowState w = DailyWindowAt(*options.maintenance_window, now);
    if (!w.open) return finish(Verdict::Wait, Reason::OutsideMaintenanceWindow, w.next_open);
  }
  return finish(Verdict::Install, go);
}

RebootDecision DecideReboot(const PolicyState& state, const PolicyOptions& options,
                            std::string_view update_id, Clock::TimePoint now) {
  RebootDecision d;
  const auto it = state.updates.find(std::string(update_id));
  if (!state.reboot_later || it == state.updates.end() || !it->second.installed_at) return d;
  const Clock::TimePoint deadline = *it->second.installed_at + options.reboot_deadline;
  if (now >= deadline) {
    d.reason = Reason::RebootDeadlineReached;
    return d;
  }
  Clock::TimePoint until = deadline;
  if (options.maintenance_window) {
    const WindowState w = DailyWindowAt(*options.maintenance_window, now);
    if (w.open) {
      d.reason = Reason::InsideMaintenanceWindow;
      return d;
    }
    until = std::min(until, w.next_open);
  }
  d.reboot_now = false;
  d.until = until;
  d.reason = Reason::RebootLater;
  return d;
}

Result<Policy> Policy::Load(Filesystem& fs, std::filesystem::path file, PolicyOptions options) {
  UPKEEP_TRY(ValidatePolicyOptions(options));
  auto text = fs.ReadFile(file, kMaxPolicyFileBytes);
  if (!text) {
    if (text.error().code() == common::Errc::FileNotFound) {
      return Policy(fs, std::move(file), std::move(options), PolicyState{});
    }
    return Error(Errc::PolicyCorrupt, file.string() + ": " + text.error().message());
  }
  UPKEEP_ASSIGN_OR_RETURN(PolicyState state, ParsePolicyState(*text));
  return Policy(fs, std::move(file), std::move(options), std::move(state));
}

Result<Policy> Policy::Reset(Filesystem& fs, std::filesystem::path file, PolicyOptions options) {
  UPKEEP_TRY(ValidatePolicyOptions(options));
  auto exists = fs.Exists(file);
  if (!exists) return WriteFailed(file, exists.error());
  if (*exists) {
    std::filesystem::path kept = file;
    kept += ".corrupt";
    if (auto r = fs.Rename(file, kept); !r) return WriteFailed(file, r.error());
  }
  Policy policy(fs, std::move(file), std::move(options), PolicyState{});
  if (auto r = fs.WriteFileAtomic(policy.file_, SerializePolicyState(policy.state_)); !r) {
    return WriteFailed(policy.file_, r.error());
  }
  return policy;
}

Result<void> Policy::Commit(PolicyState next) {
  if (next == state_) return Ok();  // nothing changed: the same choice twice writes nothing
  if (auto r = fs_->WriteFileAtomic(file_, SerializePolicyState(next)); !r) {
    return WriteFailed(file_, r.error());
  }
  state_ = std::move(next);
  return Ok();
}

Result<void> Policy::SetAutoInstall(bool enabled) {
  PolicyState next = state_;
  next.auto_install = enabled;
  return Commit(std::move(next));
}

Result<void> Policy::SetNotifications(bool enabled) {
  PolicyState next = state_;
  next.notifications = enabled;
  return Commit(std::move(next));
}

Result<void> Policy::SetSecurityAutoInstall(bool enabled, bool confirmed) {
  if (!enabled && !confirmed) {
    return Error(Errc::ConfirmationRequired,
                 "turning off automatic security updates needs an explicit confirmation");
  }
  if (enabled == state_.security_auto_install) return Ok();
  PolicyState next = state_;
  next.security_auto_install = enabled;
  next.security_setting_unreported = true;
  return Commit(std::move(next));
}

Result<void> Policy::MarkSecuritySettingReported() {
  PolicyState next = state_;
  next.security_setting_unreported = false;
  return Commit(std::move(next));
}

Result<void> Policy::SetRebootLater(bool enabled) {
  PolicyState next = state_;
  next.reboot_later = enabled;
  return Commit(std::move(next));
}

Result<OfferedUpdate> Policy::Offer(const std::string& id, UpdateKind kind, Clock::TimePoint now) {
  if (!ValidId(id)) {
    return Error(Errc::InvalidPolicyValue,
                 "update ID must be 1.." + std::to_string(kMaxUpdateIdBytes) + " bytes of UTF-8");
  }
  if (!InRange(now)) return Error(Errc::InvalidPolicyValue, "the clock is outside 1970..9999");
  PolicyState next = state_;
  auto it = next.updates.find(id);
  if (it == next.updates.end()) {
    if (next.updates.size() >= kMaxPolicyUpdates) {
      const auto oldest = std::min_element(next.updates.begin(), next.updates.end(),
                                           [](const auto& a, const auto& b) {
                                             return a.second.first_offered < b.second.first_offered;
                                           });
      next.updates.erase(oldest);
    }
    UpdateRecord rec;
    rec.kind = kind;
    rec.first_offered = now;
    it = next.updates.emplace(id, rec).first;
  } else if (kind == UpdateKind::Security && it->second.kind != UpdateKind::Security) {
    it->second.kind = UpdateKind::Security;
    it->second.refused = false;  // a security update cannot stay refused
  }
  const UpdateRecord rec = it->second;
  UPKEEP_TRY(Commit(std::move(next)));
  return OfferedUpdate{.id = id, .kind = rec.kind, .first_offered = rec.first_offered};
}

Result<Clock::TimePoint> Policy::Postpone(const std::string& id, Clock::TimePoint until,
                                          Clock::TimePoint now) {
  const auto it = state_.updates.find(id);
  if (it == state_.updates.end()) return Error(Errc::UnknownUpdate, "no update offered as " + id);
  if (until <= now) return Error(Errc::InvalidPolicyValue, "postponement must end in the future");
  if (!InRange(until)) return Error(Errc::InvalidPolicyValue, "postponement ends after 9999");
  // Copied before Commit replaces state_ (and invalidates `it`).
  const UpdateRecord record = it->second;
  PolicyState next = state_;
  next.updates[id].postponed_until = until;
  UPKEEP_TRY(Commit(std::move(next)));
  if (record.kind == UpdateKind::Security) {
    return std::min(until, record.first_offered + options_.security_postpone_cap);
  }
  return until;
}

Result<void> Policy::Refuse(const std::string& id) {
  const auto it = state_.updates.find(id);
  if (it == state_.updates.end()) return Error(Errc::UnknownUpdate, "no update offered as " + id);
  if (it->second.kind == UpdateKind::Security) {
    return Error(Errc::SecurityUpdateNotRefusable,
                 "a security update can be postponed, not refused");
  }
  PolicyState next = state_;
  next.updates[id].refused = true;
  return Commit(std::move(next));
}

Result<void> Policy::MarkInstalled(const std::string& id, Clock::TimePoint now) {
  const auto it = state_.updates.find(id);
  if (it == state_.updates.end()) return Error(Errc::UnknownUpdate, "no update offered as " + id);
  if (!InRange(now)) return Error(Errc::InvalidPolicyValue, "the clock is outside 1970..9999");
  if (it->second.installed_at) return Ok();  // the deadline counts from the first install
  PolicyState next = state_;
  next.updates[id].installed_at = now;
  return Commit(std::move(next));
}

Result<void> Policy::Forget(const std::string& id) {
  PolicyState next = state_;
  next.updates.erase(id);
  return Commit(std::move(next));
}

}  // namespace upkeep::agent
