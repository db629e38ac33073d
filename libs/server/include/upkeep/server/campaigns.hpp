#pragma once

// Releases, device groups and campaigns (ADR 0007 "Campaigns", docs/server.md): what the director
// tells each device to install, decided from the database alone so that several server processes
// sharing one database decide the same.
//
// - A release is a named set of image-repository targets per hardware model, imported from a
//   published image repository after the TUF client workflow verified it (ImportRelease). It is
//   a security release when every target's update metadata has kind "security".
// - A campaign sends one release to one device group ("*": every device) in phases of
//   cumulative percentages (default 1, 10, 50, 100). A device's phase comes from a stable hash of
//   the campaign and device IDs, so membership never changes. Phase n+1 opens when phase n has
//   soaked for `soak`; a security release opens every phase at once (it skips soak times). The
//   campaign pauses itself when more than `failure_threshold_percent` of the devices it was
//   offered to report a failure or a rollback; an administrator resumes (the soak restarts) or
//   cancels it.
// - Per device and component namespace (the target path up to its first '/'), the director
//   names one target: a pending security campaign's before any feature campaign's, newer releases
//   before older ones; never a release older than one the device already committed in that
//   namespace, never one the device committed, failed or rolled back, never one its check-in
//   says is installed.
// - A group may have a daily maintenance window (UTC). Each device's start time inside it is
//   spread by a stable hash of its ID, so a fleet never starts at once.
//
// Advancement is lazy and exactly-once: it runs inside check-in transactions, admin commands and
// the server's periodic task, and each phase change is a conditional UPDATE that only one
// transaction can win.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/result.hpp"
#include "upkeep/metadata/model.hpp"
#include "upkeep/storage/database.hpp"

namespace upkeep::server {

// ---- releases ----

struct ReleaseTarget {
  std::string hardware;  // one model the target's update metadata lists
  std::string path;
  std::uint64_t length = 0;
  std::string sha256;  // 64 lowercase hex digits
  std::string version;
  bool security = false;  // its kind includes "security"
  bool operator==(const ReleaseTarget&) const = default;
};

struct Release {
  std::string id;
  bool security = false;  // every target is a security update
  std::string source;     // where it was imported from
  std::int64_t created_at = 0;
  std::vector<ReleaseTarget> targets;  // by hardware, then path
};

struct ImportOptions {
  std::string name;  // the release's ID: [A-Za-z0-9._-]{1,64}
  // A published image repository: a directory (holding metadata/ and targets/) or an https://
  // URL of the same layout.
  std::string repository;
  // The image repository's root the devices trust (a root.json file's bytes): the import
  // verifies the repository from it with the TUF client workflow.
  std::string trusted_root;
  // Target paths making up the release (at least one).
  std::vector<std::string> targets;
  // For https:// repositories: extra CA certificates (PEM) to trust; empty = system CAs.
  std::string ca_pem;
};

// Verifies the repository, reads each target's update metadata and stores the release.
// Errors: InvalidArgument (bad name, no targets, two targets of one namespace for one model,
// a target without update metadata), Conflict (a release with that name exists), the TUF
// client's errors (metadata::Errc: signatures, expiry, TargetNotFound, ...), database errors.
[[nodiscard]] Result<Release> ImportRelease(storage::Database& db, const Clock& clock,
                                            const ImportOptions& options);
[[nodiscard]] Result<std::vector<Release>> ListReleases(storage::Database& db);

// ---- groups ----

struct MaintenanceWindow {
  std::uint32_t start_minute = 0;  // minutes after 00:00 UTC, < 1440
  std::uint32_t minutes = 60;      // length, 1 .. 1440
};

// Sets (or with nullopt clears) a group's daily window. InvalidArgument for a bad name or window.
[[nodiscard]] Result<void> SetMaintenanceWindow(storage::Database& db, const std::string& group,
                                                std::optional<MaintenanceWindow> window);
// Moves a device to a group. DeviceNotFound, InvalidArgument.
[[nodiscard]] Result<void> SetDeviceGroup(storage::Database& db, const std::string& device_id,
                                          const std::string& group);

struct GroupInfo {
  std::string name;
  std::int64_t devices = 0;
  std::optional<MaintenanceWindow> window;
};
[[nodiscard]] Result<std::vector<GroupInfo>> ListGroups(storage::Database& db);

// The install window a check-in answer carries: install no earlier than `not_before`, finish
// before `not_after` (Unix seconds). `now` inside today's window (or yesterday's when it wraps
// midnight) gives that window, otherwise the next one; `not_before` is spread inside it by a
// stable hash of `device_id`.
struct InstallWindow {
  std::int64_t not_before = 0;
  std::int64_t not_after = 0;
  bool operator==(const InstallWindow&) const = default;
};
[[nodiscard]] InstallWindow WindowFor(const MaintenanceWindow& window, const std::string& device_id,
                                      std::int64_t now);

// ---- campaigns ----

struct CampaignSpec {
  std::string id;       // [A-Za-z0-9._-]{1,64}
  std::string release;  // an imported release
  std::string group;    // a device group, or "*" for every device
  // Cumulative percentages of the group, strictly increasing, each 1..100, the last 100.
  std::vector<std::uint32_t> phases{1, 10, 50, 100};
  std::chrono::seconds soak{std::chrono::hours(24)};
  // Pause when failed + rolled back > this percentage of the devices offered the release.
  std::uint32_t failure_threshold_percent = 5;
};

// "1,10,50,100" -> {1, 10, 50, 100}; InvalidArgument for anything else (the rules on the values
// are CreateCampaign's).
[[nodiscard]] Result<std::vector<std::uint32_t>> ParsePhases(const std::string& text);

enum class CampaignState { kRunning, kPaused, kCancelled };
[[nodiscard]] const char* CampaignStateName(CampaignState state);

struct CampaignStatus {
  std::string id;
  std::string release;
  std::string group;
  bool security = false;
  CampaignState state = CampaignState::kRunning;
  std::string reason;  // why it is paused or cancelled
  std::vector<std::uint32_t> phases;
  std::uint32_t open_phases = 1;  // phases 0 .. open_phases-1 are open
  std::int64_t phase_opened_at = 0;
  std::int64_t soak_seconds = 0;
  std::uint32_t failure_threshold_percent = 0;
  std::int64_t created_at = 0;
  // Devices the director named the release to, and their outcomes so far.
  std::int64_t offered = 0;
  std::int64_t committed = 0;
  std::int64_t failed = 0;
  std::int64_t rolled_back = 0;
};

// Errors: InvalidArgument (bad spec), NotFound (no such release), Conflict (the ID exists).
[[nodiscard]] Result<CampaignStatus> CreateCampaign(storage::Database& db, const Clock& clock,
                                                    const CampaignSpec& spec);
// Every campaign, oldest first, after opening the phases whose time has come.
[[nodiscard]] Result<std::vector<CampaignStatus>> ListCampaigns(storage::Database& db,
                                                                const Clock& clock);
// NotFound; Conflict when the campaign is not in a state the action applies to (pause: running;
// resume: paused; cancel: running or paused).
[[nodiscard]] Result<CampaignStatus> PauseCampaign(storage::Database& db, const Clock& clock,
                                                   const std::string& id,
                                                   const std::string& reason);
[[nodiscard]] Result<CampaignStatus> ResumeCampaign(storage::Database& db, const Clock& clock,
                                                    const std::string& id);
[[nodiscard]] Result<CampaignStatus> CancelCampaign(storage::Database& db, const Clock& clock,
                                                    const std::string& id,
                                                    const std::string& reason);
// Opens every phase whose soak time has passed, in every running campaign (the periodic task).
[[nodiscard]] Result<void> AdvanceCampaigns(storage::Database& db, const Clock& clock);

// Campaign progress for /metrics (metrics.hpp): per campaign, its open phases, whether it runs,
// and its devices by outcome. Reads the database, so every server process reports the same.
struct MetricFamily;
[[nodiscard]] Result<std::vector<MetricFamily>> CampaignMetrics(storage::Database& db,
                                                                const Clock& clock);

// ---- used inside a check-in or report transaction ----

struct DeviceView {
  std::string id;
  std::string hardware;
  std::string group;
  // Target path each installed component reports (from this check-in).
  std::vector<std::string> installed_targets;
};

struct Direction {
  // What the director names for this device: campaign targets and manual assignments.
  std::vector<metadata::TargetFile> targets;
  std::optional<InstallWindow> window;  // only when there are targets and the group has one
};

// Decides what `device` should install now, recording each newly offered campaign target.
// Manual assignments (director_assignments) win over campaigns in their namespace.
[[nodiscard]] Result<Direction> DirectDevice(storage::Tx& tx, const DeviceView& device,
                                             std::int64_t now);

// Records a device's final outcome ("committed", "failed", "rolled_back") for the campaign that
// offered it `target`, and pauses the campaign when its failure rate passes the threshold.
// Other outcomes and targets no campaign offered the device change nothing.
[[nodiscard]] Result<void> RecordCampaignOutcome(storage::Tx& tx, const std::string& device_id,
                                                 const std::string& target,
                                                 const std::string& outcome, std::int64_t now);

// The schema these functions use (migration 4), in libs/server/src/schema.cpp.

}  // namespace upkeep::server
