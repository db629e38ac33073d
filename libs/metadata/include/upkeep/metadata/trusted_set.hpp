#pragma once

// TrustedMetadataSet: the TUF 1.0 client workflow's verification rules (specification section 5,
// "Detailed client workflow"), in one place and without I/O. The Updater feeds it bytes in
// workflow order; each Update* either makes the new metadata trusted or returns the error code of
// the rule it broke and leaves the set as it was (except where noted for rollback protection).

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "upkeep/common/result.hpp"
#include "upkeep/metadata/model.hpp"

namespace upkeep::metadata {

class TrustedMetadataSet {
 public:
  // Loads the trusted root (5.2). It must be signed by its own threshold; its expiry is not
  // checked here (5.2: the root is updated next).
  [[nodiscard]] static Result<TrustedMetadataSet> Create(std::string_view root_bytes,
                                                         TimePoint reference_time);

  // 5.3.4-5.3.7: a new root must be signed by the trusted root's threshold and its own, and be
  // exactly one version newer. Not allowed once the timestamp is loaded.
  [[nodiscard]] Result<void> UpdateRoot(std::string_view bytes);

  // 5.3.10: the final root must not be expired (checked once the root loop ends; UpdateTimestamp
  // checks it again).
  [[nodiscard]] Result<void> CheckFinalRoot() const;

  enum class TimestampOutcome { Updated, Unchanged };
  // 5.3.10 (final root not expired), then 5.4.2-5.4.4. An equal version is `Unchanged`: the
  // trusted timestamp stays and the caller keeps its stored copy. A new timestamp that passes
  // signature and rollback checks becomes trusted even if expired, so later rollback checks use
  // it; the expiry error is still returned.
  [[nodiscard]] Result<TimestampOutcome> UpdateTimestamp(std::string_view bytes);

  // 5.5.2-5.5.6. `from_local_storage` skips the hash/length check against the timestamp (a
  // stored snapshot is checked against the timestamp's version instead, 5.5.4). Like the
  // timestamp, a snapshot that passes signature and rollback checks becomes trusted before the
  // final expiry/version checks so it can guard the next download.
  [[nodiscard]] Result<void> UpdateSnapshot(std::string_view bytes, bool from_local_storage);

  // 5.6.2-5.6.5 for top-level targets (delegator "root") and delegated roles (delegator is the
  // trusted targets role that delegates `role_name`).
  [[nodiscard]] Result<void> UpdateTargets(std::string_view bytes);
  [[nodiscard]] Result<void> UpdateDelegatedTargets(std::string_view bytes,
                                                    const std::string& role_name,
                                                    const std::string& delegator_name);

  // A role already trusted through one delegator and reached again through another must also
  // carry the threshold of the other delegator's keys for it (5.6.7: each delegation is checked
  // with its own keys). Errc::ThresholdNotMet.
  [[nodiscard]] Result<void> CheckDelegatedBy(const std::string& role_name,
                                              const std::string& delegator_name) const;

  [[nodiscard]] const Root& root() const { return root_; }
  [[nodiscard]] const std::optional<Timestamp>& timestamp() const { return timestamp_; }
  [[nodiscard]] const std::optional<Snapshot>& snapshot() const { return snapshot_; }
  // Top-level or delegated targets role by name, if trusted.
  [[nodiscard]] const Targets* targets(std::string_view role_name) const;
  [[nodiscard]] TimePoint reference_time() const { return reference_time_; }

 private:
  TrustedMetadataSet(Root root, TimePoint reference_time)
      : root_(std::move(root)), reference_time_(reference_time) {}
  [[nodiscard]] Result<void> CheckFinalTimestamp() const;
  [[nodiscard]] Result<void> CheckFinalSnapshot() const;
  // Keys and threshold `delegator_name` gives `role_name` ("root" for top-level targets).
  [[nodiscard]] Result<std::pair<const KeyMap*, RoleKeys>> SignersFor(
      const std::string& role_name, const std::string& delegator_name) const;

  Root root_;
  TimePoint reference_time_;
  std::optional<Timestamp> timestamp_;
  std::optional<Snapshot> snapshot_;
  std::map<std::string, Targets, std::less<>> targets_;
};

}  // namespace upkeep::metadata
