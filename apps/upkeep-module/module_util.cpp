#include "module_util.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "upkeep/common/errc.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/unique_fd.hpp"
#include "upkeep/modules/tree.hpp"

namespace upkeep::module_tool {

namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kMaxStateFileBytes = 64 * 1024;

Error FsError(const std::string& what, const fs::path& path, const std::error_code& ec) {
  return Error(common::Errc::IoError, what + " " + path.string() + ": " + ec.message());
}

}  // namespace

Error IoError(const std::string& what, const fs::path& path, int err) {
  return Error(common::Errc::IoError, what + " " + path.string() + ": " + std::strerror(err));
}

Error InvalidArgument(const std::string& what) {
  return Error(common::Errc::InvalidArgument, what);
}

Result<void> CheckArgs(const ModuleContext& ctx, std::initializer_list<const char*> allowed) {
  for (const auto& [key, value] : ctx.args.items()) {
    bool known = false;
    for (const char* a : allowed) known = known || key == a;
    if (!known) return InvalidArgument("module_args: unknown key \"" + key + "\"");
  }
  return Ok();
}

Result<std::optional<std::string>> StringArg(const ModuleContext& ctx, const char* key) {
  auto it = ctx.args.find(key);
  if (it == ctx.args.end()) return std::optional<std::string>();
  if (!it->is_string()) {
    return InvalidArgument(std::string("module_args: \"") + key + "\" is not a string");
  }
  return std::optional<std::string>(it->get<std::string>());
}

Result<fs::path> DestArg(const ModuleContext& ctx) {
  UPKEEP_ASSIGN_OR_RETURN(auto dest, StringArg(ctx, "dest"));
  if (!dest || dest->empty()) return InvalidArgument("module_args: \"dest\" is required");
  fs::path p(*dest);
  if (!p.is_absolute()) return InvalidArgument("module_args: \"dest\" must be absolute");
  for (const auto& part : p.relative_path()) {
    if (part == "." || part == ".." || part.empty()) {
      return InvalidArgument("module_args: \"dest\" must be a normalized path: " + *dest);
    }
  }
  if (p == p.root_path()) return InvalidArgument("module_args: \"dest\" must not be /");
  return p;
}

Result<bool> BoolArg(const ModuleContext& ctx, const char* key, bool fallback) {
  auto it = ctx.args.find(key);
  if (it == ctx.args.end()) return fallback;
  if (!it->is_boolean()) {
    return InvalidArgument(std::string("module_args: \"") + key + "\" is not a boolean");
  }
  return it->get<bool>();
}

Result<fs::path> SingleArtifact(const ModuleContext& ctx) {
  std::error_code ec;
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(ctx.work_dir / "files", ec)) {
    if (entry.is_regular_file(ec) && !entry.is_symlink(ec)) found.push_back(entry.path());
  }
  if (ec) return FsError("list", ctx.work_dir / "files", ec);
  if (found.size() != 1) {
    return InvalidArgument("expected exactly one artifact in " + (ctx.work_dir / "files").string() +
                           ", found " + std::to_string(found.size()));
  }
  return found.front();
}

bool PathExists(const fs::path& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

Result<void> SyncDir(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return IoError("open directory", dir, errno);
  if (::fsync(fd.get()) != 0) return IoError("fsync directory", dir, errno);
  return Ok();
}

std::string TempPrefixFor(const fs::path& dest) {
  return "." + dest.filename().string() + ".upkeep-tmp-";
}

namespace {

constexpr std::size_t kTempSuffixLength = 6;

// Six random characters from [A-Za-z0-9].
Result<std::string> RandomSuffix() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  unsigned char bytes[kTempSuffixLength];
  std::size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("getrandom", "", errno);
    got += static_cast<std::size_t>(n);
  }
  std::string out;
  for (unsigned char b : bytes) out += kAlphabet[b % (sizeof kAlphabet - 1)];
  return out;
}

Result<void> WriteAll(int fd, const char* data, std::size_t size, const std::string& shown) {
  std::size_t done = 0;
  while (done < size) {
    const ssize_t w = ::write(fd, data + done, size - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return IoError("write", shown, errno);
    done += static_cast<std::size_t>(w);
  }
  return Ok();
}

// Removes a temporary file by name relative to its directory when it is not committed.
class TempFileGuard {
 public:
  TempFileGuard(int dir_fd, std::string name) : dir_fd_(dir_fd), name_(std::move(name)) {}
  TempFileGuard(const TempFileGuard&) = delete;
  TempFileGuard& operator=(const TempFileGuard&) = delete;
  ~TempFileGuard() {
    if (!name_.empty()) ::unlinkat(dir_fd_, name_.c_str(), 0);
  }
  void Release() { name_.clear(); }

 private:
  int dir_fd_;
  std::string name_;
};

}  // namespace

Result<void> CopyFileAtomic(const fs::path& source, const fs::path& dest, mode_t mode,
                            std::optional<FileOwner> owner) {
  UniqueFd in(::open(source.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY));
  if (in.get() < 0) return IoError("open", source, errno);
  const fs::path dir = dest.parent_path();
  UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0) return IoError("open directory", dir, errno);

  // A fresh, unpredictable name, created exclusively: nothing planted in the directory can
  // redirect the write (O_EXCL fails on any existing name, links included).
  std::string tmp_name;
  UniqueFd out;
  for (int attempt = 0; attempt < 100 && out.get() < 0; ++attempt) {
    UPKEEP_ASSIGN_OR_RETURN(std::string suffix, RandomSuffix());
    tmp_name = TempPrefixFor(dest) + suffix;
    out = UniqueFd(::openat(dir_fd.get(), tmp_name.c_str(),
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (out.get() < 0 && errno != EEXIST) return IoError("create", dir / tmp_name, errno);
  }
  if (out.get() < 0) return IoError("create", dir / tmp_name, EEXIST);
  TempFileGuard guard(dir_fd.get(), tmp_name);
  const std::string shown = (dir / tmp_name).string();

  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(in.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("read", source, errno);
    if (n == 0) break;
    UPKEEP_TRY(WriteAll(out.get(), buf, static_cast<std::size_t>(n), shown));
  }
  if (owner && ::geteuid() == 0 && ::fchown(out.get(), owner->uid, owner->gid) != 0) {
    return IoError("chown", shown, errno);
  }
  // After chown, which clears set-id bits.
  if (::fchmod(out.get(), mode) != 0) return IoError("chmod", shown, errno);
  if (::fsync(out.get()) != 0) return IoError("fsync", shown, errno);
  if (::close(out.release()) != 0) return IoError("close", shown, errno);
  const std::string name = dest.filename().string();
  if (::renameat(dir_fd.get(), tmp_name.c_str(), dir_fd.get(), name.c_str()) != 0) {
    return IoError("rename to", dest, errno);
  }
  guard.Release();
  if (::fsync(dir_fd.get()) != 0) return IoError("fsync directory", dir, errno);
  return Ok();
}

Result<void> RemoveStaleTemps(const fs::path& dest) {
  const fs::path dir = dest.parent_path();
  const std::string prefix = TempPrefixFor(dest);
  const std::string legacy = prefix.substr(0, prefix.size() - 1);  // ".NAME.upkeep-tmp"
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name == legacy ||
        (name.size() == prefix.size() + kTempSuffixLength && name.rfind(prefix, 0) == 0)) {
      stale.push_back(entry.path());
    }
  }
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) return Ok();
    return FsError("list", dir, ec);
  }
  for (const auto& path : stale) UPKEEP_TRY(RemoveDurably(path));
  return Ok();
}

Result<void> WriteStateFile(const fs::path& path, const std::string& content) {
  LocalFilesystem local;
  return local.WriteFileAtomic(path, content);
}

Result<std::string> ReadStateFile(const fs::path& path) {
  LocalFilesystem local;
  return local.ReadFile(path, kMaxStateFileBytes);
}

Result<void> RemoveDurably(const fs::path& path) {
  if (!PathExists(path)) return Ok();
  UPKEEP_TRY(modules::RemoveTree(path));
  return SyncDir(path.parent_path());
}

Result<void> RenameDurably(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return IoError("rename " + from.string() + " to", to, errno);
  }
  return SyncDir(to.parent_path());
}

Result<void> ClearTmp(const ModuleContext& ctx) {
  const fs::path tmp = ctx.work_dir / "tmp";
  struct stat st {};
  if (::lstat(tmp.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return modules::EmptyDirectory(tmp);
  UPKEEP_TRY(modules::RemoveTree(tmp));
  if (::mkdir(tmp.c_str(), 0700) != 0) return IoError("create directory", tmp, errno);
  return Ok();
}

Result<modules::ProcessResult> RunTool(const ModuleContext& ctx,
                                       const std::vector<std::string>& argv, bool capture_stderr) {
  std::string line = "+";
  for (const auto& a : argv) line += " " + a;
  *ctx.log << line << "\n";
  modules::ProcessOptions options;
  options.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive",
                 "LC_ALL=C"};
  // Stay in the module's process group: a stage timeout then ends the tool as well.
  options.new_process_group = false;
  options.capture_stderr = capture_stderr;
  auto r = modules::RunProcess(argv, options);
  if (!r) return std::move(r).error().WithContext(argv.front());
  return r;
}

}  // namespace upkeep::module_tool
