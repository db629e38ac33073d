// Tree removal relative to opened directory descriptors (openat/unlinkat), never following a
// symbolic link, so that a link planted anywhere in the tree cannot redirect the removal.

#include "upkeep/modules/tree.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "upkeep/common/errc.hpp"
#include "upkeep/common/unique_fd.hpp"

namespace upkeep::modules {

namespace fs = std::filesystem;

namespace {

// Deeper trees are refused rather than exhausting file descriptors.
constexpr int kMaxDepth = 128;

Error TreeError(const std::string& what, const fs::path& path, int err) {
  return Error(common::Errc::IoError, what + " " + path.string() + ": " + std::strerror(err));
}

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

Result<void> RemoveAt(int parent, const std::string& name, const fs::path& shown, int depth);

// Removes every entry of the directory open as `fd` (ownership stays with the caller).
Result<void> EmptyAt(int fd, const fs::path& shown, int depth) {
  if (depth > kMaxDepth) return TreeError("remove", shown, ELOOP);
  const int listing_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (listing_fd < 0) return TreeError("open", shown, errno);
  std::unique_ptr<DIR, DirCloser> dir(::fdopendir(listing_fd));
  if (!dir) {
    const int err = errno;
    ::close(listing_fd);
    return TreeError("list", shown, err);
  }
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(dir.get());
    if (entry == nullptr) {
      if (errno != 0) return TreeError("list", shown, errno);
      break;
    }
    const std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  for (const auto& name : names) UPKEEP_TRY(RemoveAt(fd, name, shown / name, depth + 1));
  return Ok();
}

Result<void> RemoveAt(int parent, const std::string& name, const fs::path& shown, int depth) {
  struct stat st {};
  if (::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return Ok();
    return TreeError("stat", shown, errno);
  }
  if (S_ISDIR(st.st_mode)) {
    UniqueFd fd(
        ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY));
    if (fd.get() < 0) return TreeError("open", shown, errno);
    UPKEEP_TRY(EmptyAt(fd.get(), shown, depth));
    if (::unlinkat(parent, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      return TreeError("remove", shown, errno);
    }
    return Ok();
  }
  if (::unlinkat(parent, name.c_str(), 0) != 0 && errno != ENOENT) {
    return TreeError("remove", shown, errno);
  }
  return Ok();
}

}  // namespace

Result<void> RemoveTree(const fs::path& path) {
  const fs::path name = path.filename();
  if (name.empty() || name == "." || name == "..") {
    return Error(common::Errc::InvalidArgument, "cannot remove " + path.string());
  }
  const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
  UniqueFd parent_fd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (parent_fd.get() < 0) {
    if (errno == ENOENT) return Ok();
    return TreeError("open", parent, errno);
  }
  return RemoveAt(parent_fd.get(), name.string(), path, 0);
}

Result<void> EmptyDirectory(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (fd.get() < 0) return TreeError("open directory", dir, errno);
  return EmptyAt(fd.get(), dir, 0);
}

}  // namespace upkeep::modules
