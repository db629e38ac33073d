// Device groups, campaigns and the director's decision per device (campaigns.hpp). Releases are
// imported in releases.cpp.

#include <algorithm>
#include <charconv>
#include <map>
#include <set>

#include "names.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/server/campaigns.hpp"
#include "upkeep/server/https_server.hpp"
#include "upkeep/server/metrics.hpp"

namespace upkeep::server {

namespace {

using metadata::Json;

constexpr std::int64_t kDay = 86400;
// Basis points: phase percentages are compared against a device's bucket in [0, 10000).
constexpr std::uint64_t kBuckets = 10000;

std::uint64_t StableHash(std::string_view text) {
  const std::vector<std::uint8_t> digest = crypto::Sha256(text);
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i) v = (v << 8) | digest[i];
  return v;
}

// The namespace of a target path: up to its first '/' (the whole path when it has none).
std::string_view Namespace(std::string_view path) {
  const auto slash = path.find('/');
  return slash == std::string_view::npos ? path : path.substr(0, slash);
}

std::string PhasesText(const std::vector<std::uint32_t>& phases) {
  std::string out;
  for (const std::uint32_t p : phases) {
    if (!out.empty()) out += ',';
    out += std::to_string(p);
  }
  return out;
}

Result<void> CheckPhases(const std::vector<std::uint32_t>& phases) {
  if (phases.empty() || phases.size() > 20) {
    return Error(Errc::InvalidArgument, "phases: between 1 and 20 phases");
  }
  std::uint32_t previous = 0;
  for (const std::uint32_t p : phases) {
    if (p <= previous || p > 100) {
      return Error(Errc::InvalidArgument,
                   "phases: percentages must increase strictly, each 1..100");
    }
    previous = p;
  }
  if (phases.back() != 100) return Error(Errc::InvalidArgument, "phases: the last must be 100");
  return Ok();
}

const char* kCampaignColumns =
    "SELECT c.id, c.release_id, c.device_group, c.phases, c.soak_seconds, "
    "c.failure_threshold_percent, c.security, c.state, c.state_reason, c.open_phases, "
    "c.phase_opened_at, c.created_at, r.seq FROM campaigns c JOIN releases r ON r.id = "
    "c.release_id ";

struct CampaignRow {
  CampaignStatus status;
  std::int64_t release_seq = 0;
};

Result<CampaignState> StateFromName(const std::string& s) {
  if (s == "running") return CampaignState::kRunning;
  if (s == "paused") return CampaignState::kPaused;
  if (s == "cancelled") return CampaignState::kCancelled;
  return Error(Errc::InvalidArgument, "unknown campaign state " + s);
}

Result<CampaignRow> ReadCampaign(const storage::Row& row) {
  CampaignRow out;
  CampaignStatus& c = out.status;
  UPKEEP_ASSIGN_OR_RETURN(c.id, row.Get<std::string>(0));
  UPKEEP_ASSIGN_OR_RETURN(c.release, row.Get<std::string>(1));
  UPKEEP_ASSIGN_OR_RETURN(c.group, row.Get<std::string>(2));
  UPKEEP_ASSIGN_OR_RETURN(std::string phases, row.Get<std::string>(3));
  UPKEEP_ASSIGN_OR_RETURN(c.phases, ParsePhases(phases));
  UPKEEP_TRY(CheckPhases(c.phases));
  UPKEEP_ASSIGN_OR_RETURN(c.soak_seconds, row.Get<std::int64_t>(4));
  UPKEEP_ASSIGN_OR_RETURN(std::int64_t threshold, row.Get<std::int64_t>(5));
  c.failure_threshold_percent = static_cast<std::uint32_t>(std::clamp<std::int64_t>(threshold, 0, 100));
  UPKEEP_ASSIGN_OR_RETURN(std::int64_t security, row.Get<std::int64_t>(6));
  c.security = security != 0;
  UPKEEP_ASSIGN_OR_RETURN(std::string state, row.Get<std::string>(7));
  UPKEEP_ASSIGN_OR_RETURN(c.state, StateFromName(state));
  UPKEEP_ASSIGN_OR_RETURN(c.reason, row.Get<std::string>(8));
  UPKEEP_ASSIGN_OR_RETURN(std::int64_t open, row.Get<std::int64_t>(9));
  c.open_phases = static_cast<std::uint32_t>(
      std::clamp<std::int64_t>(open, 1, static_cast<std::int64_t>(c.phases.size())));
  UPKEEP_ASSIGN_OR_RETURN(c.phase_opened_at, row.Get<std::int64_t>(10));
  UPKEEP_ASSIGN_OR_RETURN(c.created_at, row.Get<std::int64_t>(11));
  UPKEEP_ASSIGN_OR_RETURN(out.release_seq, row.Get<std::int64_t>(12));
  return out;
}

// Opens the phases of a running campaign whose time has come. A feature campaign's phase n+1
// opens `soak` after phase n opened (on that timeline, whoever notices first); a security
// campaign opens every phase at once. The conditional UPDATE makes each opening happen once.
Result<void> Advance(storage::Session& s, CampaignStatus& c, std::int64_t now) {
  if (c.state != CampaignState::kRunning) return Ok();
  const auto phases = static_cast<std::uint32_t>(c.phases.size());
  std::uint32_t open = c.open_phases;
  std::int64_t opened_at = c.phase_opened_at;
  if (c.security) {
    if (open < phases) {
      open = phases;
      opened_at = now;
    }
  } else {
    while (open < phases && c.soak_seconds >= 0 && now >= opened_at + c.soak_seconds) {
      opened_at += c.soak_seconds;
      ++open;
    }
  }
  if (open == c.open_phases) return Ok();
  UPKEEP_ASSIGN_OR_RETURN(
      std::int64_t n,
      s.Exec("UPDATE campaigns SET open_phases = $1, phase_opened_at = $2 WHERE id = $3 AND "
             "open_phases = $4 AND state = 'running'",
             {std::int64_t{open}, opened_at, c.id, std::int64_t{c.open_phases}}));
  if (n == 1) {
    log::info("campaign {}: phase {} of {} open ({}% of group {})", c.id, open, phases,
              c.phases[open - 1], c.group);
    c.open_phases = open;
    c.phase_opened_at = opened_at;
  }
  return Ok();
}

Result<void> FillCounts(storage::Session& s, CampaignStatus& c) {
  UPKEEP_ASSIGN_OR_RETURN(
      storage::Rows rows,
      s.Query("SELECT outcome, COUNT(*) FROM campaign_devices WHERE campaign_id = $1 GROUP BY "
              "outcome",
              {c.id}));
  c.offered = c.committed = c.failed = c.rolled_back = 0;
  for (const storage::Row& row : rows) {
    UPKEEP_ASSIGN_OR_RETURN(std::string outcome, row.Get<std::string>(0));
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t n, row.Get<std::int64_t>(1));
    c.offered += n;
    if (outcome == "committed") c.committed += n;
    if (outcome == "failed") c.failed += n;
    if (outcome == "rolled_back") c.rolled_back += n;
  }
  return Ok();
}

Result<CampaignRow> LoadCampaign(storage::Session& s, const std::string& id) {
  UPKEEP_ASSIGN_OR_RETURN(storage::Rows rows,
                          s.Query(std::string(kCampaignColumns) + "WHERE c.id = $1", {id}));
  if (rows.empty()) return Error(Errc::NotFound, "no campaign " + id);
  return ReadCampaign(rows[0]);
}

// Moves a campaign from one of `from` to `to`, or Conflict.
Result<CampaignStatus> ChangeState(storage::Database& db, const Clock& clock, const std::string& id,
                                   std::initializer_list<const char*> from, const char* to,
                                   const std::string& reason) {
  const std::int64_t now = Seconds(clock.Now());
  return db.InTransaction([&](storage::Tx& tx) -> Result<CampaignStatus> {
    UPKEEP_ASSIGN_OR_RETURN(CampaignRow row, LoadCampaign(tx, id));
    CampaignStatus& c = row.status;
    UPKEEP_TRY(Advance(tx, c, now));
    const std::string current = CampaignStateName(c.state);
    if (std::none_of(from.begin(), from.end(), [&](const char* f) { return current == f; })) {
      return Error(Errc::Conflict, "campaign " + id + " is " + current);
    }
    // Resuming restarts the soak of the open phase: the fix (or the decision to go on) has to
    // prove itself for a whole soak time again.
    UPKEEP_TRY(tx.Exec(
        "UPDATE campaigns SET state = $1, state_reason = $2, phase_opened_at = CASE WHEN $1 = "
        "'running' THEN $3 ELSE phase_opened_at END WHERE id = $4",
        {std::string(to), reason, now, id}));
    UPKEEP_ASSIGN_OR_RETURN(CampaignRow changed, LoadCampaign(tx, id));
    UPKEEP_TRY(FillCounts(tx, changed.status));
    return std::move(changed.status);
  });
}

}  // namespace

Result<std::vector<std::uint32_t>> ParsePhases(const std::string& text) {
  std::vector<std::uint32_t> out;
  std::string_view rest = text;
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    std::uint32_t v = 0;
    const auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (ec != std::errc() || end != item.data() + item.size()) {
      return Error(Errc::InvalidArgument, "phases: not a list of percentages: " + text);
    }
    out.push_back(v);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  return out;
}

const char* CampaignStateName(CampaignState state) {
  switch (state) {
    case CampaignState::kRunning:
      return "running";
    case CampaignState::kPaused:
      return "paused";
    case CampaignState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

// ---- groups ----

Result<void> SetMaintenanceWindow(storage::Database& db, const std::string& group,
                                  std::optional<MaintenanceWindow> window) {
  if (!IsValidName(group, 64)) return Error(Errc::InvalidArgument, "group: not a valid name");
  if (window && (window->start_minute >= 1440 || window->minutes == 0 || window->minutes > 1440)) {
    return Error(Errc::InvalidArgument,
                 "window: the start must be below 1440 minutes and the length 1..1440 minutes");
  }
  return db.InTransaction([&](storage::Tx& tx) -> Result<void> {
    UPKEEP_TRY(tx.Exec("DELETE FROM device_groups WHERE name = $1", {group}));
    if (window) {
      UPKEEP_TRY(tx.Exec(
          "INSERT INTO device_groups (name, window_start_minute, window_minutes) VALUES ($1, $2, "
          "$3)",
          {group, std::int64_t{window->start_minute}, std::int64_t{window->minutes}}));
    }
    return Ok();
  });
}

Result<void> SetDeviceGroup(storage::Database& db, const std::string& device_id,
                            const std::string& group) {
  if (!group.empty() && !IsValidName(group, 64)) {
    return Error(Errc::InvalidArgument, "group: not a valid name");
  }
  UPKEEP_ASSIGN_OR_RETURN(
      std::int64_t n,
      db.Exec("UPDATE devices SET device_group = $1 WHERE id = $2", {group, device_id}));
  if (n == 0) return Error(Errc::DeviceNotFound, "no device " + device_id);
  return Ok();
}

Result<std::vector<GroupInfo>> ListGroups(storage::Database& db) {
  UPKEEP_ASSIGN_OR_RETURN(
      storage::Rows rows,
      db.Query("SELECT g.name, g.n, w.window_start_minute, w.window_minutes FROM (SELECT "
               "device_group AS name, COUNT(*) AS n FROM devices GROUP BY device_group UNION ALL "
               "SELECT name, 0 FROM device_groups WHERE name NOT IN (SELECT device_group FROM "
               "devices)) g LEFT JOIN device_groups w ON w.name = g.name ORDER BY g.name"));
  std::vector<GroupInfo> out;
  for (const storage::Row& row : rows) {
    GroupInfo g;
    UPKEEP_ASSIGN_OR_RETURN(g.name, row.Get<std::string>(0));
    UPKEEP_ASSIGN_OR_RETURN(g.devices, row.Get<std::int64_t>(1));
    UPKEEP_ASSIGN_OR_RETURN(std::optional<std::int64_t> start,
                            row.Get<std::optional<std::int64_t>>(2));
    UPKEEP_ASSIGN_OR_RETURN(std::optional<std::int64_t> minutes,
                            row.Get<std::optional<std::int64_t>>(3));
    if (start && minutes) {
      g.window = MaintenanceWindow{static_cast<std::uint32_t>(*start),
                                   static_cast<std::uint32_t>(*minutes)};
    }
    out.push_back(std::move(g));
  }
  return out;
}

InstallWindow WindowFor(const MaintenanceWindow& window, const std::string& device_id,
                        std::int64_t now) {
  const std::int64_t length = std::int64_t{window.minutes} * 60;
  const std::int64_t day = now - ((now % kDay) + kDay) % kDay;
  std::int64_t start = day + std::int64_t{window.start_minute} * 60;
  if (now >= start + length) start += kDay;                                // today's is over
  if (start - kDay + length > now && start - kDay <= now) start -= kDay;  // yesterday's still on
  const auto offset = static_cast<std::int64_t>(
      StableHash("window/" + device_id) % static_cast<std::uint64_t>(length));
  return InstallWindow{start + offset, start + length};
}

// ---- campaigns ----

Result<CampaignStatus> CreateCampaign(storage::Database& db, const Clock& clock,
                                      const CampaignSpec& spec) {
  if (!IsValidName(spec.id, 64)) return Error(Errc::InvalidArgument, "id: not a valid name");
  if (spec.group != "*" && !IsValidName(spec.group, 64)) {
    return Error(Errc::InvalidArgument, "group: not a valid name (or \"*\" for every device)");
  }
  UPKEEP_TRY(CheckPhases(spec.phases));
  if (spec.soak.count() < 0 || spec.soak > std::chrono::days(365)) {
    return Error(Errc::InvalidArgument, "soak: 0 .. 365 days");
  }
  if (spec.failure_threshold_percent > 100) {
    return Error(Errc::InvalidArgument, "failure threshold: 0 .. 100 percent");
  }
  const std::int64_t now = Seconds(clock.Now());
  return db.InTransaction([&](storage::Tx& tx) -> Result<CampaignStatus> {
    UPKEEP_ASSIGN_OR_RETURN(storage::Rows release,
                            tx.Query("SELECT security FROM releases WHERE id = $1", {spec.release}));
    if (release.empty()) return Error(Errc::NotFound, "no release " + spec.release);
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t security, release[0].Get<std::int64_t>(0));
    UPKEEP_ASSIGN_OR_RETURN(storage::Rows existing,
                            tx.Query("SELECT id FROM campaigns WHERE id = $1", {spec.id}));
    if (!existing.empty()) return Error(Errc::Conflict, "campaign " + spec.id + " exists");
    UPKEEP_TRY(tx.Exec(
        "INSERT INTO campaigns (id, release_id, device_group, phases, soak_seconds, "
        "failure_threshold_percent, security, state, open_phases, phase_opened_at, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', 1, $8, $8)",
        {spec.id, spec.release, spec.group, PhasesText(spec.phases),
         static_cast<std::int64_t>(spec.soak.count()),
         std::int64_t{spec.failure_threshold_percent}, security, now}));
    UPKEEP_ASSIGN_OR_RETURN(CampaignRow row, LoadCampaign(tx, spec.id));
    UPKEEP_TRY(Advance(tx, row.status, now));
    return std::move(row.status);
  });
}

Result<std::vector<CampaignStatus>> ListCampaigns(storage::Database& db, const Clock& clock) {
  UPKEEP_TRY(AdvanceCampaigns(db, clock));
  UPKEEP_ASSIGN_OR_RETURN(storage::Rows rows,
                          db.Query(std::string(kCampaignColumns) + "ORDER BY c.created_at, c.id"));
  std::vector<CampaignStatus> out;
  for (const storage::Row& row : rows) {
    UPKEEP_ASSIGN_OR_RETURN(CampaignRow c, ReadCampaign(row));
    UPKEEP_TRY(FillCounts(db, c.status));
    out.push_back(std::move(c.status));
  }
  return out;
}

Result<void> AdvanceCampaigns(storage::Database& db, const Clock& clock) {
  const std::int64_t now = Seconds(clock.Now());
  return db.InTransaction([&](storage::Tx& tx) -> Result<void> {
    UPKEEP_ASSIGN_OR_RETURN(
        storage::Rows rows,
        tx.Query(std::string(kCampaignColumns) + "WHERE c.state = 'running' ORDER BY c.id"));
    for (const storage::Row& row : rows) {
      UPKEEP_ASSIGN_OR_RETURN(CampaignRow c, ReadCampaign(row));
      UPKEEP_TRY(Advance(tx, c.status, now));
    }
    return Ok();
  });
}

Result<CampaignStatus> PauseCampaign(storage::Database& db, const Clock& clock,
                                     const std::string& id, const std::string& reason) {
  return ChangeState(db, clock, id, {"running"}, "paused",
                     reason.empty() ? "paused by an administrator" : reason);
}

Result<CampaignStatus> ResumeCampaign(storage::Database& db, const Clock& clock,
                                      const std::string& id) {
  return ChangeState(db, clock, id, {"paused"}, "running", "");
}

Result<CampaignStatus> CancelCampaign(storage::Database& db, const Clock& clock,
                                      const std::string& id, const std::string& reason) {
  return ChangeState(db, clock, id, {"running", "paused"}, "cancelled",
                     reason.empty() ? "cancelled by an administrator" : reason);
}

Result<std::vector<MetricFamily>> CampaignMetrics(storage::Database& db, const Clock& clock) {
  UPKEEP_ASSIGN_OR_RETURN(std::vector<CampaignStatus> all, ListCampaigns(db, clock));
  MetricFamily open{"upkeep_campaign_open_phases", "Phases of the campaign open so far.",
                    MetricType::kGauge, {}};
  MetricFamily phases{"upkeep_campaign_phases", "Phases of the campaign.", MetricType::kGauge, {}};
  MetricFamily running{"upkeep_campaign_running",
                       "1 while the campaign runs, 0 when paused or cancelled.",
                       MetricType::kGauge, {}};
  MetricFamily devices{"upkeep_campaign_devices",
                       "Devices the campaign's release was offered to, by outcome so far.",
                       MetricType::kGauge, {}};
  for (const CampaignStatus& c : all) {
    const Labels id{{"campaign", c.id}};
    open.samples.push_back({id, static_cast<double>(c.open_phases)});
    phases.samples.push_back({id, static_cast<double>(c.phases.size())});
    running.samples.push_back({id, c.state == CampaignState::kRunning ? 1.0 : 0.0});
    const std::int64_t pending = c.offered - c.committed - c.failed - c.rolled_back;
    for (const auto& [outcome, n] : {std::pair{"offered", pending}, std::pair{"committed", c.committed},
                                     std::pair{"failed", c.failed},
                                     std::pair{"rolled_back", c.rolled_back}}) {
      devices.samples.push_back(
          {Labels{{"campaign", c.id}, {"outcome", outcome}}, static_cast<double>(n)});
    }
  }
  return std::vector<MetricFamily>{std::move(open), std::move(phases), std::move(running),
                                   std::move(devices)};
}

// ---- the director's decision ----

Result<Direction> DirectDevice(storage::Tx& tx, const DeviceView& device, std::int64_t now) {
  Direction out;
  std::set<std::string, std::less<>> taken;  // namespaces with a manual assignment
  UPKEEP_ASSIGN_OR_RETURN(
      storage::Rows assigned,
      tx.Query("SELECT target_path, length, sha256 FROM director_assignments WHERE device_id = $1 "
               "ORDER BY target_path",
               {device.id}));
  for (const storage::Row& row : assigned) {
    metadata::TargetFile file;
    UPKEEP_ASSIGN_OR_RETURN(file.path, row.Get<std::string>(0));
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t length, row.Get<std::int64_t>(1));
    file.length = static_cast<std::uint64_t>(length);
    UPKEEP_ASSIGN_OR_RETURN(std::string sha256, row.Get<std::string>(2));
    file.hashes["sha256"] = std::move(sha256);
    taken.emplace(Namespace(file.path));
    out.targets.push_back(std::move(file));
  }

  // What this device did with earlier offers: campaigns it is done with, and per namespace the
  // newest release it committed (never offer an older one).
  UPKEEP_ASSIGN_OR_RETURN(
      storage::Rows history,
      tx.Query("SELECT cd.campaign_id, cd.target_path, cd.outcome, r.seq FROM campaign_devices cd "
               "JOIN campaigns c ON c.id = cd.campaign_id JOIN releases r ON r.id = c.release_id "
               "WHERE cd.device_id = $1",
               {device.id}));
  std::set<std::pair<std::string, std::string>> done;  // (campaign, target) not 'offered'
  std::map<std::string, std::int64_t, std::less<>> committed_seq;
  for (const storage::Row& row : history) {
    UPKEEP_ASSIGN_OR_RETURN(std::string campaign, row.Get<std::string>(0));
    UPKEEP_ASSIGN_OR_RETURN(std::string path, row.Get<std::string>(1));
    UPKEEP_ASSIGN_OR_RETURN(std::string outcome, row.Get<std::string>(2));
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t seq, row.Get<std::int64_t>(3));
    if (outcome == "offered") continue;
    if (outcome == "committed") {
      auto& best = committed_seq[std::string(Namespace(path))];
      best = std::max(best, seq);
    }
    done.emplace(std::move(campaign), std::move(path));
  }

  struct Candidate {
    std::string campaign;
    std::uint32_t phase = 0;
    bool security = false;
    std::int64_t seq = 0;
    metadata::TargetFile file;
  };
  std::map<std::string, Candidate, std::less<>> chosen;  // by namespace
  UPKEEP_ASSIGN_OR_RETURN(
      storage::Rows campaigns,
      tx.Query(std::string(kCampaignColumns) +
                   "WHERE c.state = 'running' AND (c.device_group = $1 OR c.device_group = '*') "
                   "ORDER BY c.id",
               {device.group}));
  for (const storage::Row& row : campaigns) {
    UPKEEP_ASSIGN_OR_RETURN(CampaignRow c, ReadCampaign(row));
    UPKEEP_TRY(Advance(tx, c.status, now));
    // The device's phase: the first whose percentage covers its bucket.
    const std::uint64_t bucket =
        StableHash("phase/" + c.status.id + "/" + device.id) % kBuckets;
    std::uint32_t phase = 0;
    while (phase + 1 < c.status.phases.size() &&
           bucket >= std::uint64_t{c.status.phases[phase]} * (kBuckets / 100)) {
      ++phase;
    }
    if (phase >= c.status.open_phases) continue;
    UPKEEP_ASSIGN_OR_RETURN(
        storage::Rows targets,
        tx.Query("SELECT target_path, length, sha256 FROM release_targets WHERE release_id = $1 "
                 "AND hardware = $2 ORDER BY target_path",
                 {c.status.release, device.hardware}));
    for (const storage::Row& t : targets) {
      Candidate cand{c.status.id, phase, c.status.security, c.release_seq, {}};
      UPKEEP_ASSIGN_OR_RETURN(cand.file.path, t.Get<std::string>(0));
      UPKEEP_ASSIGN_OR_RETURN(std::int64_t length, t.Get<std::int64_t>(1));
      cand.file.length = static_cast<std::uint64_t>(length);
      UPKEEP_ASSIGN_OR_RETURN(std::string sha256, t.Get<std::string>(2));
      cand.file.hashes["sha256"] = std::move(sha256);
      const std::string ns(Namespace(cand.file.path));
      if (taken.contains(ns) || done.contains({cand.campaign, cand.file.path})) continue;
      if (std::find(device.installed_targets.begin(), device.installed_targets.end(),
                    cand.file.path) != device.installed_targets.end()) {
        continue;
      }
      if (auto it = committed_seq.find(ns); it != committed_seq.end() && cand.seq <= it->second) {
        continue;
      }
      auto it = chosen.find(ns);
      // A security release first, then the newest release.
      const bool better = it == chosen.end() ||
                          (cand.security != it->second.security ? cand.security
                                                                : cand.seq > it->second.seq);
      if (better) chosen.insert_or_assign(ns, std::move(cand));
    }
  }
  for (auto& [ns, cand] : chosen) {
    UPKEEP_TRY(tx.Exec(
        "INSERT INTO campaign_devices (campaign_id, device_id, target_path, phase, offered_at) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (campaign_id, device_id, target_path) DO NOTHING",
        {cand.campaign, device.id, cand.file.path, std::int64_t{cand.phase}, now}));
    out.targets.push_back(std::move(cand.file));
  }
  std::sort(out.targets.begin(), out.targets.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });

  if (!out.targets.empty() && !device.group.empty()) {
    UPKEEP_ASSIGN_OR_RETURN(
        storage::Rows window,
        tx.Query("SELECT window_start_minute, window_minutes FROM device_groups WHERE name = $1",
                 {device.group}));
    if (window.size() == 1) {
      UPKEEP_ASSIGN_OR_RETURN(std::int64_t start, window[0].Get<std::int64_t>(0));
      UPKEEP_ASSIGN_OR_RETURN(std::int64_t minutes, window[0].Get<std::int64_t>(1));
      out.window = WindowFor(MaintenanceWindow{static_cast<std::uint32_t>(start),
                                               static_cast<std::uint32_t>(minutes)},
                             device.id, now);
    }
  }
  return out;
}

Result<void> RecordCampaignOutcome(storage::Tx& tx, const std::string& device_id,
                                   const std::string& target, const std::string& outcome,
                                   std::int64_t now) {
  if (outcome != "committed" && outcome != "failed" && outcome != "rolled_back") return Ok();
  UPKEEP_ASSIGN_OR_RETURN(
      storage::Rows offered,
      tx.Query("SELECT campaign_id FROM campaign_devices WHERE device_id = $1 AND target_path = $2 "
               "AND outcome = 'offered' ORDER BY campaign_id",
               {device_id, target}));
  for (const storage::Row& row : offered) {
    UPKEEP_ASSIGN_OR_RETURN(std::string campaign, row.Get<std::string>(0));
    UPKEEP_TRY(tx.Exec(
        "UPDATE campaign_devices SET outcome = $1, outcome_at = $2 WHERE campaign_id = $3 AND "
        "device_id = $4 AND target_path = $5 AND outcome = 'offered'",
        {outcome, now, campaign, device_id, target}));
    if (outcome == "committed") continue;
    UPKEEP_ASSIGN_OR_RETURN(CampaignRow c, LoadCampaign(tx, campaign));
    UPKEEP_TRY(FillCounts(tx, c.status));
    const std::int64_t failures = c.status.failed + c.status.rolled_back;
    if (c.status.state == CampaignState::kRunning &&
        failures * 100 > std::int64_t{c.status.failure_threshold_percent} * c.status.offered) {
      const std::string reason = "failure rate " + std::to_string(failures) + " of " +
                                 std::to_string(c.status.offered) + " devices is above " +
                                 std::to_string(c.status.failure_threshold_percent) + "%";
      UPKEEP_ASSIGN_OR_RETURN(
          std::int64_t n,
          tx.Exec("UPDATE campaigns SET state = 'paused', state_reason = $1 WHERE id = $2 AND "
                  "state = 'running'",
                  {reason, campaign}));
      if (n == 1) log::warn("campaign {}: paused: {}", campaign, reason);
    }
  }
  return Ok();
}

}  // namespace upkeep::server
