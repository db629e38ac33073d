#pragma once

// The director repository of Uptane (ADR 0007, docs/formats/director.md), without I/O.
//
// Server side: BuildDirectorRepository signs, for one device and one check-in, a small TUF
// repository (targets, snapshot, timestamp) whose targets role names the image-repository targets
// that device should install now. CreateDirectorRoot makes the director's root, which is signed
// offline; the server only holds the online targets, snapshot and timestamp keys.
//
// Device side: VerifyDirectorAnswer runs the TUF client workflow (metadata::Updater) over the
// files of a check-in answer against the device's pinned director root, then does Uptane full
// verification against the image repository and returns the image repository's targets to
// install.
//
// Layout: the director root has consistent_snapshot false, so the files are timestamp.json,
// snapshot.json and targets.json, and roots N.root.json.
//
// Director custom fields. Every target entry's "custom" is exactly
//   {"upkeep_director": {"device": ID, "hardware": MODEL, "counter": N}}
// (path, length and hashes are copied from the image repository; nothing else is). The targets
// role's "signed" object carries the same object as an extra field
//   "custom": {"upkeep_director": {"device": ID, "hardware": MODEL, "counter": N}}
// so that an answer with no targets still names its device and check-in (Uptane 5.2.3.1: "If
// there are no images ... SHALL include a vehicle identifier"). N is the check-in counter the
// targets role was signed at.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/result.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/metadata/model.hpp"
#include "upkeep/metadata/updater.hpp"

namespace upkeep::metadata {

// Key of the director's object in "custom" (per target and on the targets role).
inline constexpr std::string_view kDirectorCustomKey = "upkeep_director";

// ---------------------------------------------------------------------------------------------
// Server side

struct DirectorRoleKeys {
  std::vector<crypto::PublicKey> keys;
  std::uint64_t threshold = 1;
};

// The director root's keys: root (offline), targets, snapshot and timestamp (online).
struct DirectorRootKeys {
  DirectorRoleKeys root;
  DirectorRoleKeys targets;
  DirectorRoleKeys snapshot;
  DirectorRoleKeys timestamp;
};

// The bytes of director root `version` (consistent_snapshot false), signed by every key of
// `signers`. A rotation (version N+1) passes both the old root's keys and the new ones.
// Errors: InvalidMetadata (no keys for a role, threshold 0 or above the number of keys),
// ThresholdNotMet (the signers do not meet the new root's own threshold), signing errors.
[[nodiscard]] Result<std::string> CreateDirectorRoot(const DirectorRootKeys& keys,
                                                     const std::vector<crypto::PrivateKey>& signers,
                                                     std::uint64_t version, TimePoint expires);

// The director's online keys; each role is signed by every key listed for it.
struct DirectorOnlineKeys {
  std::vector<crypto::PrivateKey> targets;
  std::vector<crypto::PrivateKey> snapshot;
  std::vector<crypto::PrivateKey> timestamp;
};

// Versions of the director's files for one device (0: never signed).
struct DirectorVersions {
  std::uint64_t targets = 0;
  std::uint64_t snapshot = 0;
  std::uint64_t timestamp = 0;

  bool operator==(const DirectorVersions&) const = default;
};

struct DirectorBuildRequest {
  std::string device_id;
  std::string hardware;       // the device's model
  std::uint64_t counter = 0;  // the check-in counter of this request
  // Image-repository targets to install now: path, length and hashes are copied; custom and
  // any other field are replaced by the director's.
  std::vector<TargetFile> assignments;
  // What was last signed for this device. `previous_targets` and `previous_snapshot` (the bytes)
  // are optional: with them an unchanged assignment keeps its targets and snapshot.
  DirectorVersions previous;
  std::optional<std::string> previous_targets;
  std::optional<std::string> previous_snapshot;
  TimePoint now{};
  std::chrono::seconds targets_validity = std::chrono::days(7);
  std::chrono::seconds snapshot_validity = std::chrono::days(7);
  std::chrono::seconds timestamp_validity = std::chrono::days(1);
};

struct DirectorRepository {
  std::string targets;    // targets.json
  std::string snapshot;   // snapshot.json
  std::string timestamp;  // timestamp.json
  DirectorVersions versions;
  bool targets_changed = true;  // false when the previous targets and snapshot were kept
};

// Signs the director's files for one device and check-in with `root`'s online keys.
//
// Version rule: the timestamp is always re-signed at previous.timestamp + 1. Targets and snapshot
// are kept as they were (same bytes and versions, including the counter they were signed at)
// when the previous files are given, still verify under `root`, name the same device, hardware
// and assignment, and stay valid until the new timestamp expires; otherwise both are re-signed
// at previous + 1 with `counter`.
//
// Errors: InvalidMetadata (root with consistent_snapshot, invalid device ID or hardware),
// InvalidTargetPath and InvalidTargetHash (an assignment unusable as a target, or one without a
// sha256 hash), ThresholdNotMet (the keys do not meet the root's threshold for a role), signing
// errors.
[[nodiscard]] Result<DirectorRepository> BuildDirectorRepository(
    const Root& root, const DirectorOnlineKeys& keys, const DirectorBuildRequest& request);

// ---------------------------------------------------------------------------------------------
// Device side

// The director's files of one check-in answer (docs/formats/device-api.md), as sent.
struct DirectorFiles {
  std::vector<std::string> roots;  // roots newer than the device's, any order
  std::string timestamp;
  std::string snapshot;
  std::string targets;
};

struct DirectorDevice {
  std::string device_id;
  std::string hardware;                // the device's model
  std::uint64_t sent_counter = 0;      // the counter of the check-in this answer replies to
  std::uint64_t accepted_counter = 0;  // the director counter of the last accepted answer
};

struct DirectorVerified {
  // The image repository's targets to install (update metadata from the image repository),
  // in the director's order (by path). Empty: nothing to install.
  std::vector<TargetFile> images;
  // The director's counter; the caller stores it as the next accepted_counter.
  std::uint64_t counter = 0;
};

// Uptane full verification (5.4.4.2) of director targets already verified by TUF, against the
// image repository through `image_updater` (refreshed by the caller, or on first use).
// Errors, in the order checked:
//   DirectorHasDelegations       the director's targets delegate (5.4.4.6 step 6)
//   InvalidMetadata              a "upkeep_director" object is missing or malformed
//   DirectorWrongDevice          it names another device
//   DirectorWrongHardware        it names another model
//   DirectorStaleCounter         its counter is below accepted_counter (replayed answer)
//   DirectorCounterAhead         its counter is above sent_counter
//   InvalidTargetPath, InvalidTargetHash
//   DirectorTargetNotInImageRepository  the image repository lists no such path
//   DirectorImageMismatch        length differs, a hash both list differs, or no sha256 in both
//   DirectorImageNotForHardware  the image target's update metadata excludes the device's model
//   the image repository's own errors (FetchFailed, Expired, ...) and update metadata errors.
[[nodiscard]] Result<DirectorVerified> FullVerification(const Targets& director_targets,
                                                        Updater& image_updater,
                                                        const DirectorDevice& device);

// The whole device side: TUF over `answer` with the director metadata kept in `metadata_dir`
// (it holds the pinned director root as root.json; every TUF rule applies: signatures,
// thresholds, rollback, expiry, root rotation), then FullVerification. The director metadata
// that verified is stored even when full verification then fails (TUF rollback protection).
// Errors: the Updater's (ThresholdNotMet, VersionRollback, Expired, ...), InvalidMetadata for a
// root in `answer` that does not parse or a duplicate root version, MetadataTooLarge for a root
// above UpdaterConfig's root_max_length, and FullVerification's.
[[nodiscard]] Result<DirectorVerified> VerifyDirectorAnswer(
    const DirectorFiles& answer, const std::filesystem::path& metadata_dir, Filesystem& filesystem,
    const Clock& clock, Updater& image_updater, const DirectorDevice& device);

}  // namespace upkeep::metadata
