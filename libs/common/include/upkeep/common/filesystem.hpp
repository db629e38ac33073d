#pragma once

// Filesystem access behind an interface (LevelDB's Env), so tests can inject failures and
// the update flow never touches std::filesystem directly.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/result.hpp"

namespace upkeep {

class Filesystem {
 public:
  virtual ~Filesystem() = default;

  // Reads a whole file; fails with common::Errc::FileTooLarge above max_bytes.
  [[nodiscard]] virtual Result<std::string> ReadFile(const std::filesystem::path& path,
                                                     std::uint64_t max_bytes) const = 0;
  // Replaces `path` atomically: write a temporary file in the same directory, fsync it,
  // rename it over `path`, fsync the directory. Readers see the old or the new content only.
  [[nodiscard]] virtual Result<void> WriteFileAtomic(const std::filesystem::path& path,
                                                     std::string_view content) = 0;
  [[nodiscard]] virtual Result<bool> Exists(const std::filesystem::path& path) const = 0;
  // Removes a file; removing a file that is not there succeeds.
  [[nodiscard]] virtual Result<void> Remove(const std::filesystem::path& path) = 0;
  [[nodiscard]] virtual Result<void> CreateDirectories(const std::filesystem::path& path) = 0;
};

// The real filesystem (POSIX).
class LocalFilesystem final : public Filesystem {
 public:
  [[nodiscard]] Result<std::string> ReadFile(const std::filesystem::path& path,
                                             std::uint64_t max_bytes) const override;
  [[nodiscard]] Result<void> WriteFileAtomic(const std::filesystem::path& path,
                                             std::string_view content) override;
  [[nodiscard]] Result<bool> Exists(const std::filesystem::path& path) const override;
  [[nodiscard]] Result<void> Remove(const std::filesystem::path& path) override;
  [[nodiscard]] Result<void> CreateDirectories(const std::filesystem::path& path) override;
};

}  // namespace upkeep
