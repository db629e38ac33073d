#include "upkeep/metadata/trusted_set.hpp"

namespace upkeep::metadata {

namespace {

Error ExpiredError(std::string_view role, TimePoint expires) {
  return Error(Errc::Expired, std::string(role) + " metadata expired at " + FormatDateTime(expires));
}

Error NotTrusted(const std::string& what) { return Error(Errc::NotTrusted, what); }

}  // namespace

Result<TrustedMetadataSet> TrustedMetadataSet::Create(std::string_view root_bytes,
                                                      TimePoint reference_time) {
  UPKEEP_ASSIGN_OR_RETURN(Root root, ParseRoot(root_bytes));
  UPKEEP_TRY(VerifyThreshold(root.body.keys, root.body.roles.at(std::string(kRootRole)),
                             root.canonical_signed, root.signatures, Errc::RootNotSignedByItself,
                             "trusted root"));
  return TrustedMetadataSet(std::move(root), reference_time);
}

Result<void> TrustedMetadataSet::UpdateRoot(std::string_view bytes) {
  if (timestamp_) return NotTrusted("root cannot change after the timestamp is loaded");
  UPKEEP_ASSIGN_OR_RETURN(Root new_root, ParseRoot(bytes));
  const std::string root_role(kRootRole);
  // 5.3.4 (1): signed by a threshold of the trusted root's root keys.
  UPKEEP_TRY(VerifyThreshold(root_.body.keys, root_.body.roles.at(root_role),
                             new_root.canonical_signed, new_root.signatures,
                             Errc::RootNotSignedByTrustedRoot, "new root"));
  // 5.3.5: exactly version N+1.
  if (new_root.version != root_.version + 1) {
    return Error(Errc::RootVersionNotSequential,
                 "new root has version " + std::to_string(new_root.version) + ", expected " +
                     std::to_string(root_.version + 1));
  }
  // 5.3.4 (2): signed by a threshold of its own root keys.
  UPKEEP_TRY(VerifyThreshold(new_root.body.keys, new_root.body.roles.at(root_role),
                             new_root.canonical_signed, new_root.signatures,
                             Errc::RootNotSignedByItself, "new root"));
  root_ = std::move(new_root);  // 5.3.7
  return Ok();
}

Result<TrustedMetadataSet::TimestampOutcome> TrustedMetadataSet::UpdateTimestamp(
    std::string_view bytes) {
  if (snapshot_) return NotTrusted("timestamp cannot change after the snapshot is loaded");
  UPKEEP_TRY(CheckFinalRoot());

  UPKEEP_ASSIGN_OR_RETURN(Timestamp ts, ParseTimestamp(bytes));
  // 5.4.2
  UPKEEP_TRY(VerifyThreshold(root_.body.keys, root_.body.roles.at(std::string(kTimestampRole)),
                             ts.canonical_signed, ts.signatures, Errc::ThresholdNotMet,
                             "timestamp"));
  // 5.4.3
  if (timestamp_) {
    if (ts.version < timestamp_->version) {
      return Error(Errc::VersionRollback, "timestamp version " + std::to_string(ts.version) +
                                              " is older than trusted version " +
                                              std::to_string(timestamp_->version));
    }
    if (ts.version == timestamp_->version) return TimestampOutcome::Unchanged;
    if (ts.body.snapshot_meta.version < timestamp_->body.snapshot_meta.version) {
      return Error(Errc::SnapshotVersionRollback,
                   "timestamp lists snapshot version " +
                       std::to_string(ts.body.snapshot_meta.version) +
                       ", older than trusted version " +
                       std::to_string(timestamp_->body.snapshot_meta.version));
    }
  }
  // Trusted from here on for rollback checks, even if it turns out to be expired.
  timestamp_ = std::move(ts);
  // 5.4.4
  UPKEEP_TRY(CheckFinalTimestamp());
  return TimestampOutcome::Updated;
}

Result<void> TrustedMetadataSet::CheckFinalRoot() const {
  if (root_.IsExpired(reference_time_)) return ExpiredError(kRootRole, root_.expires);
  return Ok();
}

Result<void> TrustedMetadataSet::CheckFinalTimestamp() const {
  if (!timestamp_) return NotTrusted("timestamp is not loaded");
  if (timestamp_->IsExpired(reference_time_)) {
    return ExpiredError(kTimestampRole, timestamp_->expires);
  }
  return Ok();
}

Result<void> TrustedMetadataSet::UpdateSnapshot(std::string_view bytes, bool from_local_storage) {
  if (!timestamp_) return NotTrusted("snapshot needs a trusted timestamp");
  if (!targets_.empty()) return NotTrusted("snapshot cannot change after targets are loaded");
  UPKEEP_TRY(CheckFinalTimestamp());
  const MetaFile& snapshot_meta = timestamp_->body.snapshot_meta;
  // 5.5.2: hashes (and length) from the timestamp.
  if (!from_local_storage) UPKEEP_TRY(VerifyMetaFile(snapshot_meta, bytes, kSnapshotRole));

  UPKEEP_ASSIGN_OR_RETURN(Snapshot snap, ParseSnapshot(bytes));
  // 5.5.3
  UPKEEP_TRY(VerifyThreshold(root_.body.keys, root_.body.roles.at(std::string(kSnapshotRole)),
                             snap.canonical_signed, snap.signatures, Errc::ThresholdNotMet,
                             "snapshot"));
  // 5.5.5: no targets role disappears or goes back in version.
  if (snapshot_) {
    for (const auto& [name, old_meta] : snapshot_->body.meta) {
      auto it = snap.body.meta.find(name);
      if (it == snap.body.meta.end()) {
        return Error(Errc::TargetsRoleRemoved, "snapshot no longer lists " + name);
      }
      if (it->second.version < old_meta.version) {
        return Error(Errc::TargetsVersionRollback,
                     "snapshot lists " + name + " version " + std::to_string(it->second.version) +
                         ", older than trusted version " + std::to_string(old_meta.version));
      }
    }
  }
  // Trusted from here on for rollback checks; the final checks follow.
  snapshot_ = std::move(snap);
  return CheckFinalSnapshot();
}

Result<void> TrustedMetadataSet::CheckFinalSnapshot() const {
  if (!snapshot_) return NotTrusted("snapshot is not loaded");
  // 5.5.4: the version the timestamp names.
  if (snapshot_->version != timestamp_->body.snapshot_meta.version) {
    return Error(Errc::SnapshotVersionMismatch,
                 "snapshot version " + std::to_string(snapshot_->version) +
                     " differs from timestamp's " +
                     std::to_string(timestamp_->body.snapshot_meta.version));
  }
  // 5.5.6
  if (snapshot_->IsExpired(reference_time_)) {
    return ExpiredError(kSnapshotRole, snapshot_->expires);
  }
  return Ok();
}

Result<void> TrustedMetadataSet::UpdateTargets(std::string_view bytes) {
  return UpdateDelegatedTargets(bytes, std::string(kTargetsRole), std::string(kRootRole));
}

Result<void> TrustedMetadataSet::UpdateDelegatedTargets(std::string_view bytes,
                                                        const std::string& role_name,
                                                        const std::string& delegator_name) {
  if (!snapshot_) return NotTrusted("targets need a trusted snapshot");
  UPKEEP_TRY(CheckFinalSnapshot());

  UPKEEP_ASSIGN_OR_RETURN(auto signers, SignersFor(role_name, delegator_name));
  const auto& [keys, role_keys] = signers;

  // 5.6.2: the snapshot must list the role, and the bytes must match its length/hashes.
  auto meta = snapshot_->body.meta.find(role_name + ".json");
  if (meta == snapshot_->body.meta.end()) {
    return Error(Errc::RoleNotInSnapshot, "snapshot does not list " + role_name + ".json");
  }
  UPKEEP_TRY(VerifyMetaFile(meta->second, bytes, role_name));

  UPKEEP_ASSIGN_OR_RETURN(Targets t, ParseTargets(bytes));
  // 5.6.3
  UPKEEP_TRY(VerifyThreshold(*keys, role_keys, t.canonical_signed, t.signatures,
                             Errc::ThresholdNotMet, role_name));
  // 5.6.4
  if (t.version != meta->second.version) {
    return Error(Errc::TargetsVersionMismatch,
                 role_name + " version " + std::to_string(t.version) + " differs from snapshot's " +
                     std::to_string(meta->second.version));
  }
  // 5.6.5
  if (t.IsExpired(reference_time_)) return ExpiredError(role_name, t.expires);
  targets_.insert_or_assign(role_name, std::move(t));
  return Ok();
}

Result<std::pair<const KeyMap*, RoleKeys>> TrustedMetadataSet::SignersFor(
    const std::string& role_name, const std::string& delegator_name) const {
  if (delegator_name == kRootRole) {
    return std::pair(&root_.body.keys, root_.body.roles.at(std::string(kTargetsRole)));
  }
  const Targets* delegator = targets(delegator_name);
  if (delegator == nullptr) return NotTrusted("delegator " + delegator_name + " is not trusted");
  std::optional<RoleKeys> role_keys;
  if (delegator->body.delegations) role_keys = delegator->body.delegations->KeysFor(role_name);
  if (!role_keys) return NotTrusted(delegator_name + " does not delegate to " + role_name);
  return std::pair(&delegator->body.delegations->keys, *role_keys);
}

Result<void> TrustedMetadataSet::CheckDelegatedBy(const std::string& role_name,
                                                  const std::string& delegator_name) const {
  const Targets* t = targets(role_name);
  if (t == nullptr) return NotTrusted(role_name + " is not trusted");
  UPKEEP_ASSIGN_OR_RETURN(auto signers, SignersFor(role_name, delegator_name));
  return VerifyThreshold(*signers.first, signers.second, t->canonical_signed, t->signatures,
                         Errc::ThresholdNotMet, role_name + " (delegated by " + delegator_name + ")");
}

const Targets* TrustedMetadataSet::targets(std::string_view role_name) const {
  auto it = targets_.find(role_name);
  return it == targets_.end() ? nullptr : &it->second;
}

}  // namespace upkeep::metadata
