#include "upkeep/common/filesystem.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "upkeep/common/errc.hpp"
#include "upkeep/common/unique_fd.hpp"

namespace upkeep {

namespace fs = std::filesystem;

namespace {

Error IoError(const std::string& what, const fs::path& path, int err) {
  return Error(err == ENOENT ? common::Errc::FileNotFound : common::Errc::IoError,
               what + " " + path.string() + ": " + std::strerror(err));
}

Result<void> FsyncDirectory(const fs::path& dir) {
  UniqueFd fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return IoError("open directory", dir, errno);
  if (::fsync(fd.get()) != 0) return IoError("fsync directory", dir, errno);
  return Ok();
}

}  // namespace

Result<std::string> LocalFilesystem::ReadFile(const fs::path& path, std::uint64_t max_bytes) const {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return IoError("open", path, errno);
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError("read", path, errno);
    }
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_bytes) {
      return Error(common::Errc::FileTooLarge,
                   path.string() + " is larger than " + std::to_string(max_bytes) + " bytes");
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

namespace {

class LocalAtomicFile final : public AtomicFile {
 public:
  LocalAtomicFile(fs::path path, fs::path tmp, int fd)
      : path_(std::move(path)), tmp_(std::move(tmp)), fd_(fd) {}
  LocalAtomicFile(const LocalAtomicFile&) = delete;
  LocalAtomicFile& operator=(const LocalAtomicFile&) = delete;
  ~LocalAtomicFile() override {
    if (!committed_) ::unlink(tmp_.c_str());
  }

  Result<void> Append(std::span<const char> data) override {
    if (fd_.get() < 0) return Error(common::Errc::InvalidArgument, "file already committed");
    std::size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(fd_.get(), data.data() + done, data.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return IoError("write", tmp_, errno);
      }
      done += static_cast<std::size_t>(n);
    }
    return Ok();
  }

  Result<void> Commit(Durability durability) override {
    if (fd_.get() < 0) return Error(common::Errc::InvalidArgument, "file already committed");
    if (::fsync(fd_.get()) != 0) return IoError("fsync", tmp_, errno);
    if (::close(fd_.release()) != 0) return IoError("close", tmp_, errno);
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) return IoError("rename onto", path_, errno);
    committed_ = true;
    if (durability == Durability::kFileOnly) return Ok();
    return FsyncDirectory(path_.parent_path());
  }

 private:
  fs::path path_;
  fs::path tmp_;
  UniqueFd fd_;
  bool committed_ = false;
};

}  // namespace

Result<std::unique_ptr<AtomicFile>> LocalFilesystem::CreateAtomic(const fs::path& path) {
  // Unique per process and call; O_EXCL below catches any leftover from a crashed run.
  static std::atomic<std::uint64_t> counter{0};
  fs::path tmp = path.string() + ".tmp-" + std::to_string(::getpid()) + "-" +
                 std::to_string(counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return IoError("create", tmp, errno);
  return std::unique_ptr<AtomicFile>(std::make_unique<LocalAtomicFile>(path, std::move(tmp), fd));
}

Result<void> LocalFilesystem::WriteFileAtomic(const fs::path& path, std::string_view content,
                                              Durability durability) {
  UPKEEP_ASSIGN_OR_RETURN(auto file, CreateAtomic(path));
  UPKEEP_TRY(file->Append(std::span<const char>(content.data(), content.size())));
  return file->Commit(durability);
}

Result<void> LocalFilesystem::SyncDirectory(const fs::path& dir) { return FsyncDirectory(dir); }

Result<void> LocalFilesystem::ReadChunks(const fs::path& path, const ChunkSink& sink) const {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return IoError("open", path, errno);
  // The buffer fits the file (at most 1 MiB): reading a 1 KiB metadata file must not allocate
  // and touch a megabyte that the allocator then keeps.
  struct stat st {};
  std::size_t size = std::size_t{1} << 20;
  if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 0) {
    size = std::clamp<std::size_t>(static_cast<std::size_t>(st.st_size) + 1, 4096, size);
  }
  std::unique_ptr<char[]> buf(new (std::nothrow) char[size]);
  if (!buf) return Error(common::Errc::IoError, "read " + path.string() + ": out of memory");
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.get(), size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError("read", path, errno);
    }
    if (n == 0) return Ok();
    UPKEEP_TRY(sink(std::span<const char>(buf.get(), static_cast<std::size_t>(n))));
  }
}

Result<bool> LocalFilesystem::Exists(const fs::path& path) const {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) return true;
  if (errno == ENOENT || errno == ENOTDIR) return false;
  return IoError("stat", path, errno);
}

Result<void> LocalFilesystem::Remove(const fs::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return IoError("remove", path, errno);
  return Ok();
}

Result<void> LocalFilesystem::CreateDirectories(const fs::path& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return IoError("create directory", path, ec.value());
  return Ok();
}

Result<void> LocalFilesystem::AppendFile(const fs::path& path, std::string_view data) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640));
  if (fd.get() < 0) return IoError("open for append", path, errno);
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd.get(), data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError("append", path, errno);
    }
    done += static_cast<std::size_t>(n);
  }
  return Ok();
}

Result<std::uint64_t> LocalFilesystem::FileSize(const fs::path& path) const {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return IoError("stat", path, errno);
  return static_cast<std::uint64_t>(st.st_size);
}

Result<void> LocalFilesystem::Rename(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) return IoError("rename onto", to, errno);
  return Ok();
}

Result<std::vector<std::string>> LocalFilesystem::ListDirectory(const fs::path& dir) const {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) {
      return Error(common::Errc::FileNotFound, dir.string() + ": no such directory");
    }
    return Error(common::Errc::IoError, dir.string() + ": " + ec.message());
  }
  std::vector<std::string> names;
  for (fs::directory_iterator end; it != end; it.increment(ec)) {
    if (ec) return Error(common::Errc::IoError, dir.string() + ": " + ec.message());
    names.push_back(it->path().filename().string());
  }
  if (ec) return Error(common::Errc::IoError, dir.string() + ": " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace upkeep
