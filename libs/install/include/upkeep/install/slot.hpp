#pragma once

// A/B slot storage: a block device or partition on real hardware (a loop device in tests), or a
// plain file for simulated devices. The installer writes an image to the inactive slot with
// positioned writes, syncs it, and reads it back to verify; the active slot is only ever read
// (to reuse chunks it already holds).

#include <cstdint>
#include <filesystem>
#include <span>

#include "upkeep/common/result.hpp"
#include "upkeep/common/unique_fd.hpp"

namespace upkeep::install {

enum class SlotKind { File, BlockDevice };

class SlotDevice {
 public:
  // Opens `path` for reading, or for writing too. A block device's capacity is its size; a file
  // slot's capacity is `file_capacity` (0: it grows as needed, and a missing file is created
  // when opened for writing). Errc::SlotUnavailable when it cannot be opened or is neither a
  // regular file nor a block device.
  [[nodiscard]] static Result<SlotDevice> Open(const std::filesystem::path& path, bool writable,
                                               std::uint64_t file_capacity = 0);

  [[nodiscard]] SlotKind kind() const { return kind_; }
  // Bytes an image may occupy; UINT64_MAX for a growable file.
  [[nodiscard]] std::uint64_t capacity() const { return capacity_; }
  // Current size (a file's length, a device's capacity).
  [[nodiscard]] Result<std::uint64_t> Size() const;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  // Alignment a write needs to bypass the page cache; 0 when it never does (files, read-only).
  [[nodiscard]] std::size_t direct_alignment() const { return direct_fd_.get() >= 0 ? align_ : 0; }

  // Reads exactly `out.size()` bytes at `offset`; Errc::ReadFailed on error or short read.
  [[nodiscard]] Result<void> ReadAt(std::uint64_t offset, std::span<char> out) const;
  // Writes all of `data` at `offset`; Errc::WriteFailed (also past the capacity). On a block
  // device, a write whose offset, length and buffer address are multiples of direct_alignment()
  // bypasses the page cache (O_DIRECT): no copy of the data into the kernel, and nothing left for
  // writeback. Other writes, and every write where O_DIRECT is refused, go through the cache.
  // Reads are coherent with both.
  [[nodiscard]] Result<void> WriteAt(std::uint64_t offset, std::span<const char> data);
  // Makes everything written so far durable (fdatasync; on a block device also the device's
  // write cache). Errc::WriteFailed.
  [[nodiscard]] Result<void> Sync();
  // Drops cached pages of the range, so that a read-back reads the medium (best effort).
  void DropCache(std::uint64_t offset, std::uint64_t length) const;

 private:
  SlotDevice() = default;
  std::filesystem::path path_;
  UniqueFd fd_;
  UniqueFd direct_fd_;     // the block device opened with O_DIRECT, when it can be
  std::size_t align_ = 0;  // of offsets, lengths and buffers for direct_fd_
  SlotKind kind_ = SlotKind::File;
  std::uint64_t capacity_ = 0;
};

}  // namespace upkeep::install
