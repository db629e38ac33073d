#include "upkeep/metadata/updater.hpp"

#include <set>
#include <utility>
#include <vector>

#include "upkeep/common/encoding.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/common/log.hpp"

namespace upkeep::metadata {

namespace fs = std::filesystem;

namespace {

std::string WithSlash(std::string url) {
  if (url.empty() || url.back() != '/') url.push_back('/');
  return url;
}

// Maps a Fetcher error to the metadata error a caller acts on.
Error FetchError(const Error& e, const std::string& what, bool length_is_signed) {
  if (e.code() == common::Errc::LengthExceeded) {
    return Error(length_is_signed ? Errc::MetaLengthMismatch : Errc::MetadataTooLarge,
                 what + ": " + e.message());
  }
  return Error(Errc::FetchFailed, what + ": " + e.ToString());
}

bool IsNotFound(const Error& e) { return e.code() == common::Errc::RemoteNotFound; }

// Streams bytes into a set of digests and counts them.
class TargetVerifier {
 public:
  explicit TargetVerifier(const TargetFile& target) : target_(target) {
    for (const auto& [name, hex] : target.hashes) {
      auto alg = crypto::HashAlgorithmFromName(name);
      if (alg) hashers_.emplace_back(name, crypto::Hasher(*alg));
      else unsupported_ = name;
    }
  }
  void Update(std::span<const char> data) {
    received_ += data.size();
    for (auto& [name, h] : hashers_) {
      h.Update(std::string_view(data.data(), data.size()));
    }
  }
  Result<void> Finish() {
    if (received_ != target_.length) {
      return Error(Errc::TargetLengthMismatch,
                   target_.path + ": " + std::to_string(received_) + " bytes, signed length is " +
                       std::to_string(target_.length));
    }
    if (!unsupported_.empty()) {
      return Error(Errc::TargetHashMismatch,
                   target_.path + ": cannot check unsupported hash algorithm " + unsupported_);
    }
    for (auto& [name, h] : hashers_) {
      auto expected = HexDecode(target_.hashes.find(name)->second);
      if (!expected || !crypto::ConstantTimeEqual(h.Final(), *expected)) {
        return Error(Errc::TargetHashMismatch, target_.path + ": " + name + " does not match");
      }
    }
    return Ok();
  }
  [[nodiscard]] std::uint64_t received() const { return received_; }

 private:
  const TargetFile& target_;
  std::vector<std::pair<std::string, crypto::Hasher>> hashers_;
  std::string unsupported_;
  std::uint64_t received_ = 0;
};

}  // namespace

Updater::Updater(fs::path metadata_dir, std::string metadata_base_url, Fetcher& fetcher,
                 Filesystem& filesystem, const Clock& clock, UpdaterConfig config)
    : metadata_dir_(std::move(metadata_dir)),
      metadata_base_url_(WithSlash(std::move(metadata_base_url))),
      fetcher_(fetcher),
      fs_(filesystem),
      clock_(clock),
      config_(config) {}

std::string Updater::TargetFileName(const std::string& target_path) {
  return PercentEncode(target_path);
}

fs::path Updater::LocalPath(const std::string& role) const {
  return metadata_dir_ / (PercentEncode(role) + ".json");
}

Result<std::optional<std::string>> Updater::ReadLocal(const std::string& role,
                                                      std::uint64_t max_length) {
  auto bytes = fs_.ReadFile(LocalPath(role), max_length);
  if (!bytes) {
    if (bytes.error().code() == common::Errc::FileNotFound ||
        bytes.error().code() == common::Errc::FileTooLarge) {
      return std::optional<std::string>();
    }
    return Error(Errc::StorageFailed, bytes.error().message());
  }
  // nothrow: the error case returned just above
  return std::optional<std::string>(std::move(bytes).value());
}

Result<void> Updater::Persist(const std::string& role, std::string_view bytes) {
  // Each file is replaced atomically; the directory is synced once when the refresh ends
  // (SyncPersisted), since every stored file is re-verified on the next refresh anyway.
  auto r = fs_.WriteFileAtomic(LocalPath(role), bytes, Durability::kFileOnly);
  if (!r) return Error(Errc::StorageFailed, r.error().message());
  unsynced_ = true;
  return Ok();
}

Result<void> Updater::SyncPersisted() {
  if (!unsynced_) return Ok();
  unsynced_ = false;
  auto r = fs_.SyncDirectory(metadata_dir_);
  if (!r) return Error(Errc::StorageFailed, r.error().message());
  return Ok();
}

Result<void> Updater::RemoveLocal(const std::string& role) {
  auto r = fs_.Remove(LocalPath(role));
  if (!r) return Error(Errc::StorageFailed, r.error().message());
  return Ok();
}

std::string Updater::MetadataUrl(const std::string& role,
                                 std::optional<std::uint64_t> version) const {
  std::string url = metadata_base_url_;
  if (version) url += std::to_string(*version) + ".";
  return url + PercentEncode(role) + ".json";
}

Result<std::string> Updater::FetchMetadata(const std::string& role,
                                           std::optional<std::uint64_t> version,
                                           std::uint64_t max_length, bool length_is_signed) {
  auto bytes = fetcher_.FetchBytes(MetadataUrl(role, version), max_length);
  if (!bytes) return FetchError(bytes.error(), role, length_is_signed);
  return bytes;
}

Result<void> Updater::Refresh() {
  // 5.1: fix the update start time; 5.2: load the trusted root.
  refreshed_ = false;
  UPKEEP_ASSIGN_OR_RETURN(auto root_bytes, ReadLocal(std::string(kRootRole),
                                                      config_.root_max_length));
  if (!root_bytes) {
    return Error(Errc::StorageFailed, "no trusted root at " + LocalPath("root").string());
  }
  UPKEEP_ASSIGN_OR_RETURN(auto set, TrustedMetadataSet::Create(*root_bytes, clock_.Now()));
  trusted_.emplace(std::move(set));

  auto result = [&]() -> Result<void> {
    UPKEEP_TRY(LoadRoot());
    UPKEEP_TRY(LoadTimestamp());
    UPKEEP_TRY(LoadSnapshot());
    return LoadTargets(std::string(kTargetsRole), std::string(kRootRole)).and_then(
        [](const Targets*) { return Ok(); });
  }();
  // What verified before a failure stays trusted, so it is made durable either way.
  auto synced = SyncPersisted();
  UPKEEP_TRY(result);
  UPKEEP_TRY(synced);
  refreshed_ = true;
  return Ok();
}

Result<void> Updater::LoadRoot() {
  const std::string root(kRootRole);
  const RootBody initial = trusted_->root().body;
  // 5.3.2-5.3.9: fetch N+1 until the repository has no newer root, bounded by
  // max_root_rotations.
  const std::uint64_t first = trusted_->root().version + 1;
  for (std::uint64_t v = first; v < first + config_.max_root_rotations; ++v) {
    auto bytes = fetcher_.FetchBytes(MetadataUrl(root, v), config_.root_max_length);
    if (!bytes) {
      if (IsNotFound(bytes.error())) break;  // the newest root is trusted now
      return FetchError(bytes.error(), root, false);
    }
    UPKEEP_TRY(trusted_->UpdateRoot(*bytes));
    UPKEEP_TRY(Persist(root, *bytes));  // 5.3.8
  }
  // 5.3.10: freeze attack on the root.
  UPKEEP_TRY(trusted_->CheckFinalRoot());
  // 5.3.11: fast-forward attack recovery. If the timestamp or snapshot keys changed, the stored
  // timestamp and snapshot must not be used for rollback checks any more.
  const RootBody& now = trusted_->root().body;
  auto same_role = [&](std::string_view name) {
    const RoleKeys& a = initial.roles.find(name)->second;
    const RoleKeys& b = now.roles.find(name)->second;
    return a.threshold == b.threshold &&
           std::set<std::string>(a.keyids.begin(), a.keyids.end()) ==
               std::set<std::string>(b.keyids.begin(), b.keyids.end());
  };
  if (!same_role(kTimestampRole) || !same_role(kSnapshotRole)) {
    log::info("timestamp or snapshot keys rotated: discarding stored timestamp and snapshot");
    UPKEEP_TRY(RemoveLocal(std::string(kTimestampRole)));
    UPKEEP_TRY(RemoveLocal(std::string(kSnapshotRole)));
  }
  return Ok();
}

Result<void> Updater::LoadTimestamp() {
  const std::string role(kTimestampRole);
  // The stored timestamp, if it still verifies, is the reference for rollback checks (5.4.3).
  UPKEEP_ASSIGN_OR_RETURN(auto local, ReadLocal(role, config_.timestamp_max_length));
  if (local) {
    auto r = trusted_->UpdateTimestamp(*local);
    if (!r) log::debug("stored timestamp not usable as final: {}", r.error().ToString());
  }
  // 5.4.1
  UPKEEP_ASSIGN_OR_RETURN(std::string bytes,
                          FetchMetadata(role, std::nullopt, config_.timestamp_max_length, false));
  UPKEEP_ASSIGN_OR_RETURN(auto outcome, trusted_->UpdateTimestamp(bytes));
  if (outcome == TrustedMetadataSet::TimestampOutcome::Unchanged) return Ok();
  return Persist(role, bytes);  // 5.4.5
}

Result<void> Updater::LoadSnapshot() {
  const std::string role(kSnapshotRole);
  // A stored snapshot that matches the trusted timestamp needs no download.
  UPKEEP_ASSIGN_OR_RETURN(auto local, ReadLocal(role, config_.snapshot_max_length));
  if (local) {
    auto r = trusted_->UpdateSnapshot(*local, /*from_local_storage=*/true);
    if (r) return Ok();
    log::debug("stored snapshot not usable as final: {}", r.error().ToString());
  }
  // 5.5.1
  const MetaFile& meta = trusted_->timestamp()->body.snapshot_meta;
  const std::optional<std::uint64_t> version =
      trusted_->root().body.ConsistentSnapshot() ? std::optional(meta.version) : std::nullopt;
  UPKEEP_ASSIGN_OR_RETURN(std::string bytes,
                          FetchMetadata(role, version, meta.length.value_or(config_.snapshot_max_length),
                                        meta.length.has_value()));
  UPKEEP_TRY(trusted_->UpdateSnapshot(bytes, /*from_local_storage=*/false));
  return Persist(role, bytes);  // 5.5.7
}

Result<const Targets*> Updater::LoadTargets(const std::string& role,
                                            const std::string& delegator) {
  if (const Targets* t = trusted_->targets(role)) {
    UPKEEP_TRY(trusted_->CheckDelegatedBy(role, delegator));  // reached through another delegator
    return t;
  }
  // A stored copy that matches the trusted snapshot needs no download.
  UPKEEP_ASSIGN_OR_RETURN(auto local, ReadLocal(role, config_.targets_max_length));
  if (local) {
    auto r = trusted_->UpdateDelegatedTargets(*local, role, delegator);
    if (r) return trusted_->targets(role);
    log::debug("stored {} not usable as final: {}", role, r.error().ToString());
  }
  // 5.6.1
  const auto& meta_map = trusted_->snapshot()->body.meta;
  auto meta = meta_map.find(role + ".json");
  if (meta == meta_map.end()) {
    return Error(Errc::RoleNotInSnapshot, "snapshot does not list " + role + ".json");
  }
  const std::optional<std::uint64_t> version =
      trusted_->root().body.ConsistentSnapshot() ? std::optional(meta->second.version)
                                                : std::nullopt;
  UPKEEP_ASSIGN_OR_RETURN(
      std::string bytes,
      FetchMetadata(role, version, meta->second.length.value_or(config_.targets_max_length),
                    meta->second.length.has_value()));
  UPKEEP_TRY(trusted_->UpdateDelegatedTargets(bytes, role, delegator));
  UPKEEP_TRY(Persist(role, bytes));  // 5.6.6
  return trusted_->targets(role);
}

Result<TargetFile> Updater::GetTargetInfo(const std::string& target_path) {
  if (!refreshed_) UPKEEP_TRY(Refresh());
  auto found = SearchTarget(target_path);
  // Delegated metadata that verified during the search is kept, found or not.
  UPKEEP_TRY(SyncPersisted());
  // The name and hashes become a local file name and a URL: a signed "../x" or a hash that is not
  // hex must not leave the targets directory.
  if (found) UPKEEP_TRY(ValidateTargetFile(*found));
  return found;
}

Result<TargetFile> Updater::SearchTarget(const std::string& target_path) {
  // 5.6.7: pre-order depth-first search from the top-level targets role.
  std::vector<std::pair<std::string, std::string>> to_visit{
      {std::string(kTargetsRole), std::string(kRootRole)}};
  std::set<std::pair<std::string, std::string>> visited;
  while (!to_visit.empty()) {
    if (visited.size() >= config_.max_delegations) {
      return Error(Errc::DelegationLimitReached,
                   target_path + ": searched " + std::to_string(visited.size()) +
                       " roles without finding it");
    }
    auto current = std::move(to_visit.back());
    to_visit.pop_back();
    if (visited.contains(current)) continue;  // 5.6.7.1: skip cycles
    UPKEEP_ASSIGN_OR_RETURN(const Targets* t, LoadTargets(current.first, current.second));
    if (auto it = t->body.targets.find(target_path); it != t->body.targets.end()) {
      return it->second;
    }
    visited.insert(current);
    if (!t->body.delegations) continue;
    std::vector<std::pair<std::string, std::string>> children;
    for (const auto& [child, terminating] : t->body.delegations->RolesForTarget(target_path)) {
      children.emplace_back(child, current.first);
      if (terminating) {  // 5.6.7.2.1: nothing after a terminating delegation is searched
        to_visit.clear();
        break;
      }
    }
    to_visit.insert(to_visit.end(), children.rbegin(), children.rend());
  }
  return Error(Errc::TargetNotFound, "no trusted role lists " + target_path);
}

Result<std::optional<fs::path>> Updater::FindCachedTarget(const TargetFile& target,
                                                          const fs::path& target_dir) {
  const fs::path path = target_dir / TargetFileName(target.path);
  auto exists = fs_.Exists(path);
  if (!exists || !*exists) return std::optional<fs::path>();
  TargetVerifier verifier(target);
  auto read = fs_.ReadChunks(path, [&](std::span<const char> piece) -> Result<void> {
    verifier.Update(piece);
    if (verifier.received() > target.length) {
      return Error(Errc::TargetLengthMismatch, "cached copy is too long");
    }
    return Ok();
  });
  if (!read || !verifier.Finish()) return std::optional<fs::path>();
  return std::optional<fs::path>(path);
}

std::string Updater::TargetUrl(const TargetFile& target, const std::string& target_base_url) const {
  std::string remote = target.path;
  const std::string* hash = UrlHash(target);
  if (trusted_ && trusted_->root().body.ConsistentSnapshot() && config_.prefix_targets_with_hash &&
      hash != nullptr) {
    // 5.7.3: <dir>/<hash>.<basename>, using the first hash of a supported algorithm (checked
    // to be lower-case hex of the digest's length).
    const auto slash = remote.rfind('/');
    const std::string dir = slash == std::string::npos ? "" : remote.substr(0, slash + 1);
    const std::string base = slash == std::string::npos ? remote : remote.substr(slash + 1);
    remote = dir + *hash + "." + base;
  }
  return WithSlash(target_base_url) + PercentEncodePath(remote);
}

Result<fs::path> Updater::DownloadTarget(const TargetFile& target,
                                         const std::string& target_base_url,
                                         const fs::path& target_dir) {
  UPKEEP_TRY(ValidateTargetFile(target));
  if (UrlHash(target) == nullptr) {
    return Error(Errc::TargetHashMismatch,
                 target.path + ": no hash of a supported algorithm to verify the download");
  }
  const std::string url = TargetUrl(target, target_base_url);
  const fs::path path = target_dir / TargetFileName(target.path);

  auto file = fs_.CreateAtomic(path);
  if (!file) return Error(Errc::StorageFailed, file.error().message());
  TargetVerifier verifier(target);
  auto fetched = fetcher_.Fetch(url, target.length, [&](std::span<const char> piece) {
    verifier.Update(piece);
    return (*file)->Append(piece);
  });
  if (!fetched) {
    if (fetched.error().code() == common::Errc::LengthExceeded) {
      return Error(Errc::TargetLengthMismatch,
                   target.path + ": server sent more than the signed length " +
                       std::to_string(target.length));
    }
    if (fetched.error().code().category() == common::ErrcCategory() &&
        fetched.error().code() != common::Errc::IoError) {
      return Error(Errc::FetchFailed, target.path + ": " + fetched.error().ToString());
    }
    return Error(Errc::StorageFailed, fetched.error().message());
  }
  UPKEEP_TRY(verifier.Finish());  // the temporary file is discarded on failure
  auto committed = (*file)->Commit();
  if (!committed) return Error(Errc::StorageFailed, committed.error().message());
  return path;
}

}  // namespace upkeep::metadata
