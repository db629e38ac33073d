#pragma once

// Updater: runs the TUF client workflow against a repository reachable through a Fetcher, keeping
// trusted metadata in a local directory. Verification is TrustedMetadataSet's; this class decides
// what to fetch, in workflow order, and what to persist.
//
// Local directory: root.json, timestamp.json, snapshot.json, targets.json and <role>.json for
// delegated roles (role name percent-encoded), each written atomically after it verified.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/fetcher.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/metadata/trusted_set.hpp"

namespace upkeep::metadata {

struct UpdaterConfig {
  // Most root versions fetched in one refresh (5.3.3's Y).
  std::uint32_t max_root_rotations = 256;
  // Most targets roles visited while searching for one target (5.6.7.1).
  std::uint32_t max_delegations = 32;
  // Size limits when the parent does not state a length (5.3.3's W, 5.4.1's X, 5.5.1's Y, 5.6.1's Z).
  std::uint64_t root_max_length = 512'000;
  std::uint64_t timestamp_max_length = 16'384;
  std::uint64_t snapshot_max_length = 2'000'000;
  std::uint64_t targets_max_length = 5'000'000;
  // With consistent snapshots, fetch targets as <dir>/<hash>.<basename> (spec 5.7.3).
  bool prefix_targets_with_hash = true;
};

class Updater {
 public:
  // metadata_base_url and target URLs get a '/' appended when missing.
  Updater(std::filesystem::path metadata_dir, std::string metadata_base_url, Fetcher& fetcher,
          Filesystem& filesystem, const Clock& clock, UpdaterConfig config = {});

  // The whole top-level workflow (5.1-5.6.6): root, timestamp, snapshot, targets. The update
  // start time is fixed on entry. On failure the previously trusted files stay as they were.
  [[nodiscard]] Result<void> Refresh();

  // Pre-order depth-first search through delegations (5.6.7). Refreshes first if needed.
  // Errc::TargetNotFound when no role describes the path.
  [[nodiscard]] Result<TargetFile> GetTargetInfo(const std::string& target_path);

  // Path of an already downloaded copy in target_dir whose length and hashes match, if any.
  [[nodiscard]] Result<std::optional<std::filesystem::path>> FindCachedTarget(
      const TargetFile& target, const std::filesystem::path& target_dir);

  // Downloads (at most target.length bytes), verifies length and every hash, and only then
  // stores the file atomically as target_dir/<percent-encoded path>.
  [[nodiscard]] Result<std::filesystem::path> DownloadTarget(
      const TargetFile& target, const std::string& target_base_url,
      const std::filesystem::path& target_dir);

  // Where a target is fetched from below `target_base_url` (hash-prefixed with consistent
  // snapshots, 5.7.3), for callers that stream a target themselves.
  [[nodiscard]] std::string TargetUrl(const TargetFile& target,
                                      const std::string& target_base_url) const;
  // Local file name used for a target path: the path percent-encoded into one name.
  [[nodiscard]] static std::string TargetFileName(const std::string& target_path);

  // Null before the first successful load of the trusted root.
  [[nodiscard]] const TrustedMetadataSet* trusted() const {
    return trusted_ ? &*trusted_ : nullptr;
  }

 private:
  [[nodiscard]] Result<void> LoadRoot();
  [[nodiscard]] Result<void> LoadTimestamp();
  [[nodiscard]] Result<void> LoadSnapshot();
  [[nodiscard]] Result<TargetFile> SearchTarget(const std::string& target_path);
  [[nodiscard]] Result<const Targets*> LoadTargets(const std::string& role,
                                                   const std::string& delegator);
  [[nodiscard]] Result<std::string> FetchMetadata(const std::string& role,
                                                  std::optional<std::uint64_t> version,
                                                  std::uint64_t max_length, bool length_is_signed);
  [[nodiscard]] Result<std::optional<std::string>> ReadLocal(const std::string& role,
                                                             std::uint64_t max_length);
  [[nodiscard]] Result<void> Persist(const std::string& role, std::string_view bytes);
  [[nodiscard]] Result<void> RemoveLocal(const std::string& role);
  [[nodiscard]] Result<void> SyncPersisted();
  [[nodiscard]] std::filesystem::path LocalPath(const std::string& role) const;
  [[nodiscard]] std::string MetadataUrl(const std::string& role,
                                        std::optional<std::uint64_t> version) const;

  std::filesystem::path metadata_dir_;
  std::string metadata_base_url_;
  Fetcher& fetcher_;
  Filesystem& fs_;
  const Clock& clock_;
  UpdaterConfig config_;
  std::optional<TrustedMetadataSet> trusted_;
  bool refreshed_ = false;
  bool unsynced_ = false;  // a file was replaced since the directory was last synced
};

}  // namespace upkeep::metadata
