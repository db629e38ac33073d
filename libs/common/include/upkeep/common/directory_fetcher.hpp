#pragma once

// A Fetcher over a published repository directory (metadata/ and targets/, as `upkeep repo`
// publishes it), for clients that read a repository from disk exactly as devices read it over
// HTTP: bundle building and the fleet server's release import.
//
// URLs are "repo:/" followed by a percent-encoded path relative to the directory; only safe
// relative paths under metadata/ or targets/ are read (anything else is RemoteNotFound, as a web
// server answers 404). It records each distinct file it delivered, in order.

#include <filesystem>
#include <string>
#include <vector>

#include "upkeep/common/fetcher.hpp"
#include "upkeep/common/filesystem.hpp"

namespace upkeep {

class DirectoryFetcher final : public Fetcher {
 public:
  static constexpr const char* kMetadataUrl = "repo:/metadata/";
  static constexpr const char* kTargetsUrl = "repo:/targets/";

  DirectoryFetcher(std::filesystem::path root, Filesystem& filesystem)
      : root_(std::move(root)), fs_(filesystem) {}

  [[nodiscard]] Result<void> Fetch(const std::string& url, std::uint64_t max_bytes,
                                   const Sink& sink) override;
  // Paths relative to the directory, each once, in the order first fetched.
  [[nodiscard]] const std::vector<std::string>& fetched() const { return fetched_; }

  // A safe relative path under metadata/ or targets/.
  [[nodiscard]] static bool IsRepositoryPath(const std::string& name);

 private:
  std::filesystem::path root_;
  Filesystem& fs_;
  std::vector<std::string> fetched_;
};

}  // namespace upkeep
