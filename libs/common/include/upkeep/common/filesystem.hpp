#pragma once

// Filesystem access behind an interface (LevelDB's Env), so tests can inject failures and
// the update flow never touches std::filesystem directly.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/result.hpp"

namespace upkeep {

// How far an atomic replace waits for the disk before returning.
enum class Durability {
  // File content and the rename are both on disk (fsync of the file and of its directory).
  kFileAndDirectory,
  // File content is on disk; the rename becomes durable with the directory's next fsync
  // (SyncDirectory). After a power cut the path holds the old or the new content, never a mix.
  kFileOnly,
};

// A file being written that appears at its final path only on Commit(): written to a temporary
// file in the same directory, fsynced, renamed, and (per Durability) the directory fsynced.
// Destroying it without Commit() removes the temporary file.
class AtomicFile {
 public:
  virtual ~AtomicFile() = default;
  [[nodiscard]] virtual Result<void> Append(std::span<const char> data) = 0;
  [[nodiscard]] virtual Result<void> Commit(
      Durability durability = Durability::kFileAndDirectory) = 0;
};

class Filesystem {
 public:
  using ChunkSink = std::function<Result<void>(std::span<const char>)>;
  virtual ~Filesystem() = default;

  // Reads a whole file; fails with common::Errc::FileTooLarge above max_bytes.
  [[nodiscard]] virtual Result<std::string> ReadFile(const std::filesystem::path& path,
                                                     std::uint64_t max_bytes) const = 0;
  // Replaces `path` atomically: write a temporary file in the same directory, fsync it,
  // rename it over `path`, fsync the directory. Readers see the old or the new content only.
  [[nodiscard]] virtual Result<void> WriteFileAtomic(
      const std::filesystem::path& path, std::string_view content,
      Durability durability = Durability::kFileAndDirectory) = 0;
  // Makes earlier renames in `dir` durable (fsync of the directory).
  [[nodiscard]] virtual Result<void> SyncDirectory(const std::filesystem::path& dir) = 0;
  [[nodiscard]] virtual Result<std::unique_ptr<AtomicFile>> CreateAtomic(
      const std::filesystem::path& path) = 0;
  // Streams a file's content in pieces (for files too large to hold in memory).
  [[nodiscard]] virtual Result<void> ReadChunks(const std::filesystem::path& path,
                                                const ChunkSink& sink) const = 0;
  [[nodiscard]] virtual Result<bool> Exists(const std::filesystem::path& path) const = 0;
  // Removes a file; removing a file that is not there succeeds.
  [[nodiscard]] virtual Result<void> Remove(const std::filesystem::path& path) = 0;
  [[nodiscard]] virtual Result<void> CreateDirectories(const std::filesystem::path& path) = 0;
  // Appends to a log-like file, creating it (mode 0640) if needed; never follows a symbolic link
  // at `path`. Not synced: for records whose loss in a power cut is acceptable.
  [[nodiscard]] virtual Result<void> AppendFile(const std::filesystem::path& path,
                                                std::string_view data) = 0;
  // The size of a regular file; common::Errc::FileNotFound when absent.
  [[nodiscard]] virtual Result<std::uint64_t> FileSize(const std::filesystem::path& path) const = 0;
  // rename(2): replaces `to` atomically.
  [[nodiscard]] virtual Result<void> Rename(const std::filesystem::path& from,
                                            const std::filesystem::path& to) = 0;
  // Names of the entries of a directory (not "." or ".."), sorted; common::Errc::FileNotFound
  // when it does not exist.
  [[nodiscard]] virtual Result<std::vector<std::string>> ListDirectory(
      const std::filesystem::path& dir) const = 0;
};

// The real filesystem (POSIX).
class LocalFilesystem final : public Filesystem {
 public:
  [[nodiscard]] Result<std::string> ReadFile(const std::filesystem::path& path,
                                             std::uint64_t max_bytes) const override;
  [[nodiscard]] Result<void> WriteFileAtomic(
      const std::filesystem::path& path, std::string_view content,
      Durability durability = Durability::kFileAndDirectory) override;
  [[nodiscard]] Result<void> SyncDirectory(const std::filesystem::path& dir) override;
  [[nodiscard]] Result<std::unique_ptr<AtomicFile>> CreateAtomic(
      const std::filesystem::path& path) override;
  [[nodiscard]] Result<void> ReadChunks(const std::filesystem::path& path,
                                        const ChunkSink& sink) const override;
  [[nodiscard]] Result<bool> Exists(const std::filesystem::path& path) const override;
  [[nodiscard]] Result<void> Remove(const std::filesystem::path& path) override;
  [[nodiscard]] Result<void> CreateDirectories(const std::filesystem::path& path) override;
  [[nodiscard]] Result<void> AppendFile(const std::filesystem::path& path,
                                        std::string_view data) override;
  [[nodiscard]] Result<std::uint64_t> FileSize(const std::filesystem::path& path) const override;
  [[nodiscard]] Result<void> Rename(const std::filesystem::path& from,
                                    const std::filesystem::path& to) override;
  [[nodiscard]] Result<std::vector<std::string>> ListDirectory(
      const std::filesystem::path& dir) const override;
};

}  // namespace upkeep
