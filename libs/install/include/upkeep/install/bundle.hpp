#pragma once

// Offline bundles (docs/formats/bundle.md): one file carrying the TUF metadata chain and the
// target files a device needs, for a USB stick or a phone app. A bundle adds no trust of its own:
// the device reads it through BundleFetcher and runs the very same metadata::Updater, with the
// same trusted root, rollback and expiry rules, as for a network update.

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/fetcher.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/result.hpp"
#include "upkeep/install/payload.hpp"

namespace upkeep::install {

inline constexpr char kBundleMagic[8] = {'U', 'P', 'K', 'B', 'N', 'D', 'L', '1'};
inline constexpr std::uint64_t kMaxBundleTocBytes = 1 << 20;
// URL prefixes under which BundleFetcher serves the bundle's files.
inline constexpr const char* kBundleMetadataUrl = "bundle:/metadata/";
inline constexpr const char* kBundleTargetsUrl = "bundle:/targets/";

struct BundleEntry {
  std::string name;          // "metadata/2.root.json", "targets/<hash>.<name>"
  std::uint64_t offset = 0;  // in the bundle file
  std::uint64_t length = 0;
};

// An opened bundle: the table of contents is read and checked; contents are read on demand.
class Bundle {
 public:
  // Errc::BundleMalformed for a bad header, table of contents or size.
  [[nodiscard]] static Result<Bundle> Open(const std::filesystem::path& path);
  [[nodiscard]] const std::vector<BundleEntry>& entries() const { return entries_; }
  [[nodiscard]] const BundleEntry* Find(std::string_view name) const;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::vector<BundleEntry> entries_;
};

// Serves a bundle's files to metadata::Updater: URL kBundleMetadataUrl + "timestamp.json" reads
// entry "metadata/timestamp.json" (URL paths percent-decoded, as a web server would).
class BundleFetcher final : public Fetcher {
 public:
  explicit BundleFetcher(const Bundle& bundle) : bundle_(bundle) {}
  [[nodiscard]] Result<void> Fetch(const std::string& url, std::uint64_t max_bytes,
                                   const Sink& sink) override;
  // Reads the window straight from the bundle file.
  [[nodiscard]] Result<void> FetchRange(const std::string& url, std::uint64_t offset,
                                        std::uint64_t length, const Sink& sink) override;

 private:
  [[nodiscard]] Result<const BundleEntry*> Lookup(const std::string& url) const;
  [[nodiscard]] Result<void> Stream(const BundleEntry& entry, std::uint64_t offset,
                                    std::uint64_t length, const Sink& sink);
  const Bundle& bundle_;
};

// Packs what a device holding `trusted_root` needs to install `target_paths` from the published
// repository `repo_dir` (metadata/ and targets/ as served): the root versions after
// `trusted_root`, the current timestamp, snapshot, targets, the delegated metadata on the way to
// each target, and the targets, in the order a client reads them. Bundles are made with the oldest
// root still in the field. The repository is verified with the same client first, so a bundle is
// never built from metadata a device would reject (errors are metadata::Errc).
[[nodiscard]] Result<std::vector<BundleEntry>> CreateBundle(
    const std::filesystem::path& repo_dir, std::string_view trusted_root,
    const std::vector<std::string>& target_paths, const std::filesystem::path& out);
// The same through `filesystem` (repository reads, scratch metadata, the bundle itself) and with
// `clock` for the metadata's expiry.
[[nodiscard]] Result<std::vector<BundleEntry>> CreateBundle(
    const std::filesystem::path& repo_dir, std::string_view trusted_root,
    const std::vector<std::string>& target_paths, const std::filesystem::path& out,
    Filesystem& filesystem, const Clock& clock);

}  // namespace upkeep::install
