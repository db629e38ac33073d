#include "module_util.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "upkeep/common/errc.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/unique_fd.hpp"

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

Result<fs::path> SingleArtifact(const ModuleContext& ctx) {
  std::error_code ec;
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(ctx.work_dir / "files", ec)) {
    if (entry.is_regular_file(ec)) found.push_back(entry.path());
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

fs::path TempPathFor(const fs::path& dest) {
  return dest.parent_path() / ("." + dest.filename().string() + ".upkeep-tmp");
}

Result<void> CopyFileAtomic(const fs::path& source, const fs::path& dest, mode_t mode,
                            std::optional<FileOwner> owner) {
  UniqueFd in(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) return IoError("open", source, errno);
  const fs::path tmp = TempPathFor(dest);
  ::unlink(tmp.c_str());
  UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (out.get() < 0) return IoError("create", tmp, errno);
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(in.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return IoError("read", source, errno);
    if (n == 0) break;
    std::size_t done = 0;
    while (done < static_cast<std::size_t>(n)) {
      ssize_t w = ::write(out.get(), buf + done, static_cast<std::size_t>(n) - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        return IoError("write", tmp, err);
      }
      done += static_cast<std::size_t>(w);
    }
  }
  if (owner && ::geteuid() == 0 && ::fchown(out.get(), owner->uid, owner->gid) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return IoError("chown", tmp, err);
  }
  // After chown, which clears set-id bits.
  if (::fchmod(out.get(), mode) != 0 || ::fsync(out.get()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return IoError("chmod/fsync", tmp, err);
  }
  out.reset();
  if (::rename(tmp.c_str(), dest.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    return IoError("rename to", dest, err);
  }
  return SyncDir(dest.parent_path());
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
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return FsError("remove", path, ec);
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
  std::error_code ec;
  if (!fs::exists(tmp, ec)) return Ok();
  for (const auto& entry : fs::directory_iterator(tmp, ec)) {
    fs::remove_all(entry.path(), ec);
    if (ec) return FsError("remove", entry.path(), ec);
  }
  if (ec) return FsError("list", tmp, ec);
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
