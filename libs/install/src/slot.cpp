#include "upkeep/install/slot.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "upkeep/install/payload.hpp"

namespace upkeep::install {

namespace {

std::string Describe(const std::filesystem::path& path, const char* what) {
  return path.string() + ": " + what + ": " + std::strerror(errno);
}

}  // namespace

Result<SlotDevice> SlotDevice::Open(const std::filesystem::path& path, bool writable,
                                    std::uint64_t file_capacity) {
  SlotDevice slot;
  slot.path_ = path;
  int flags = O_CLOEXEC | (writable ? O_RDWR : O_RDONLY);
  struct stat st {};
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (!exists && !writable) return Error(Errc::SlotUnavailable, Describe(path, "stat"));
  if (!exists || S_ISREG(st.st_mode)) flags |= O_CREAT;
  if (exists && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
    return Error(Errc::SlotUnavailable, path.string() + " is neither a file nor a block device");
  }
  slot.fd_ = UniqueFd(::open(path.c_str(), flags, 0600));
  if (slot.fd_.get() < 0) return Error(Errc::SlotUnavailable, Describe(path, "open"));
  if (::fstat(slot.fd_.get(), &st) != 0)
    return Error(Errc::SlotUnavailable, Describe(path, "fstat"));
  if (S_ISBLK(st.st_mode)) {
    slot.kind_ = SlotKind::BlockDevice;
    std::uint64_t bytes = 0;
    if (::ioctl(slot.fd_.get(), BLKGETSIZE64, &bytes) != 0) {
      return Error(Errc::SlotUnavailable, Describe(path, "BLKGETSIZE64"));
    }
    slot.capacity_ = bytes;
    if (writable) {
      int logical = 0;
      if (::ioctl(slot.fd_.get(), BLKSSZGET, &logical) == 0 && logical > 0) {
        slot.direct_fd_ = UniqueFd(::open(path.c_str(), O_CLOEXEC | O_WRONLY | O_DIRECT));
        slot.align_ = std::max<std::size_t>(4096, static_cast<std::size_t>(logical));
      }
    }
  } else {
    slot.kind_ = SlotKind::File;
    slot.capacity_ = file_capacity != 0 ? file_capacity : std::numeric_limits<std::uint64_t>::max();
  }
  return slot;
}

Result<std::uint64_t> SlotDevice::Size() const {
  if (kind_ == SlotKind::BlockDevice) return capacity_;
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return Error(Errc::ReadFailed, Describe(path_, "fstat"));
  return static_cast<std::uint64_t>(st.st_size);
}

Result<void> SlotDevice::ReadAt(std::uint64_t offset, std::span<char> out) const {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd_.get(), out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error(Errc::ReadFailed, Describe(path_, "read"));
    if (n == 0) {
      return Error(Errc::ReadFailed,
                   path_.string() + ": ends before offset " + std::to_string(offset + out.size()));
    }
    done += static_cast<std::size_t>(n);
  }
  return Ok();
}

Result<void> SlotDevice::WriteAt(std::uint64_t offset, std::span<const char> data) {
  if (offset > capacity_ || data.size() > capacity_ - offset) {
    return Error(Errc::WriteFailed, path_.string() + ": write past the slot's capacity");
  }
  if (direct_fd_.get() >= 0 && offset % align_ == 0 && data.size() % align_ == 0 &&
      reinterpret_cast<std::uintptr_t>(data.data()) % align_ == 0) {
    std::size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::pwrite(direct_fd_.get(), data.data() + done, data.size() - done,
                                 static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EINVAL && done == 0) {
        direct_fd_.reset();  // the device refuses direct I/O: the page cache from now on
        break;
      }
      if (n <= 0) return Error(Errc::WriteFailed, Describe(path_, "write"));
      done += static_cast<std::size_t>(n);
    }
    if (done == data.size()) return Ok();
  }
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::pwrite(fd_.get(), data.data() + done, data.size() - done,
                               static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Error(Errc::WriteFailed, Describe(path_, "write"));
    done += static_cast<std::size_t>(n);
  }
  // Start writeback now rather than at the next sync, so that syncs find little left to do and
  // dirty pages do not pile up in memory (best effort).
  (void)::sync_file_range(fd_.get(), static_cast<off_t>(offset), static_cast<off_t>(data.size()),
                          SYNC_FILE_RANGE_WRITE);
  return Ok();
}

Result<void> SlotDevice::Sync() {
  // fsync rather than fdatasync on block devices: it also flushes the device's volatile cache.
  const int rc = kind_ == SlotKind::BlockDevice ? ::fsync(fd_.get()) : ::fdatasync(fd_.get());
  if (rc != 0) return Error(Errc::WriteFailed, Describe(path_, "sync"));
  return Ok();
}

void SlotDevice::DropCache(std::uint64_t offset, std::uint64_t length) const {
  (void)::posix_fadvise(fd_.get(), static_cast<off_t>(offset), static_cast<off_t>(length),
                        POSIX_FADV_DONTNEED);
}

}  // namespace upkeep::install
