// The module work directory: header.json, files/, tmp/.
//
// The directory is removed and created anew for every installation. Creating and emptying it
// uses POSIX calls relative to opened directories (O_NOFOLLOW, mkdirat, linkat), which the
// Filesystem interface does not offer; the artifact copy, header.json and the syncs go through
// the injected Filesystem.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/unique_fd.hpp"
#include "upkeep/modules/module.hpp"
#include "upkeep/modules/tree.hpp"

namespace upkeep::modules {

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

// header.json is small; anything larger is not a header.
constexpr std::uint64_t kMaxHeaderBytes = 1024 * 1024;

Error WorkDirError(const std::string& what, const fs::path& path, int err) {
  return Error(Errc::WorkDirFailed, what + " " + path.string() + ": " + std::strerror(err));
}

Error WorkDirError(const Error& cause) { return Error(Errc::WorkDirFailed, cause.ToString()); }

// Removes whatever is at work_dir (refusing a symbolic link there) and creates it empty, with
// files/ and tmp/, readable by the agent's user only. Returns the open work directory.
Result<UniqueFd> CreateFreshWorkDir(Filesystem& fs, const fs::path& work_dir) {
  const fs::path name = work_dir.filename();
  if (name.empty() || name == "." || name == "..") {
    return Error(Errc::WorkDirFailed, "unusable work directory path " + work_dir.string());
  }
  const fs::path parent = work_dir.has_parent_path() ? work_dir.parent_path() : fs::path(".");
  if (auto r = fs.CreateDirectories(parent); !r) return WorkDirError(r.error());
  UniqueFd parent_fd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (parent_fd.get() < 0) return WorkDirError("open", parent, errno);

  struct stat st {};
  if (::fstatat(parent_fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (S_ISLNK(st.st_mode)) {
      return Error(Errc::WorkDirFailed,
                   "work directory " + work_dir.string() + " is a symbolic link; refusing it");
    }
    if (auto r = RemoveTree(work_dir); !r) return WorkDirError(r.error());
  } else if (errno != ENOENT) {
    return WorkDirError("stat", work_dir, errno);
  }
  if (::mkdirat(parent_fd.get(), name.c_str(), 0700) != 0) {
    return WorkDirError("create directory", work_dir, errno);
  }
  UniqueFd dir(
      ::openat(parent_fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (dir.get() < 0) return WorkDirError("open", work_dir, errno);
  for (const char* sub : {"files", "tmp"}) {
    if (::mkdirat(dir.get(), sub, 0700) != 0)
      return WorkDirError("create directory", work_dir / sub, errno);
  }
  if (::fsync(parent_fd.get()) != 0) return WorkDirError("fsync", parent, errno);
  return dir;
}

// Places `source` as files/NAME: a hard link when both are on one filesystem, else a copy that
// is fsynced before it appears under its name. The source must be a regular file.
Result<void> PlaceArtifact(Filesystem& fs, int files_fd, const fs::path& source,
                           const fs::path& dest) {
  struct stat st {};
  if (::lstat(source.c_str(), &st) != 0) return WorkDirError("stat artifact", source, errno);
  if (!S_ISREG(st.st_mode)) {
    return Error(Errc::WorkDirFailed, "artifact " + source.string() + " is not a regular file");
  }
  const std::string name = dest.filename().string();
  if (::linkat(AT_FDCWD, source.c_str(), files_fd, name.c_str(), 0) == 0) return Ok();
  if (errno == EEXIST) {
    return Error(Errc::WorkDirFailed, "two artifacts named " + name);
  }
  auto file = fs.CreateAtomic(dest);
  if (!file) return WorkDirError(file.error());
  auto copied =
      fs.ReadChunks(source, [&](std::span<const char> chunk) { return (*file)->Append(chunk); });
  if (!copied) return Error(Errc::WorkDirFailed, "copy artifact: " + copied.error().ToString());
  if (auto r = (*file)->Commit(Durability::kFileOnly); !r) {
    return Error(Errc::WorkDirFailed, "copy artifact: " + r.error().ToString());
  }
  return Ok();
}

Result<std::string> StringField(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    return Error(Errc::InvalidHeader,
                 std::string("header.json: \"") + key + "\" missing or not a string");
  }
  return it->get<std::string>();
}

}  // namespace

Result<void> PrepareWorkDir(Filesystem& fs, const fs::path& work_dir, const ComponentHeader& header,
                            std::span<const fs::path> artifacts) {
  // Everything that can be checked is checked before the previous work directory goes.
  if (header.component.empty()) return Error(Errc::InvalidHeader, "component name is empty");
  Json args = Json::parse(header.module_args_json, nullptr, /*allow_exceptions=*/false);
  if (!args.is_object()) return Error(Errc::InvalidHeader, "module_args is not a JSON object");
  Json j = Json::object();
  j["component"] = header.component;
  j["version"] = header.version;
  j["target"] = header.target;
  j["module_args"] = std::move(args);
  std::string text;
  try {
    // nothrow: inside try; the catch below returns an error
    text = j.dump(2) + "\n";
  } catch (const Json::exception& e) {  // invalid UTF-8 in a string
    return Error(Errc::InvalidHeader, std::string("header.json: ") + e.what());
  }
  for (const auto& artifact : artifacts) {
    if (!artifact.has_filename()) {
      return Error(Errc::WorkDirFailed, "artifact path has no file name: " + artifact.string());
    }
  }

  UPKEEP_ASSIGN_OR_RETURN(UniqueFd dir, CreateFreshWorkDir(fs, work_dir));
  UniqueFd files_fd(::openat(dir.get(), "files", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (files_fd.get() < 0) return WorkDirError("open", work_dir / "files", errno);
  for (const auto& artifact : artifacts) {
    UPKEEP_TRY(
        PlaceArtifact(fs, files_fd.get(), artifact, work_dir / "files" / artifact.filename()));
  }
  if (auto r = fs.SyncDirectory(work_dir / "files"); !r) return WorkDirError(r.error());
  if (auto r = fs.WriteFileAtomic(work_dir / "header.json", text); !r) {
    return WorkDirError(r.error());
  }
  return Ok();
}

Result<void> PrepareWorkDir(const fs::path& work_dir, const ComponentHeader& header,
                            std::span<const fs::path> artifacts) {
  LocalFilesystem local;
  return PrepareWorkDir(local, work_dir, header, artifacts);
}

Result<ComponentHeader> ReadHeader(const Filesystem& fs, const fs::path& work_dir) {
  auto text = fs.ReadFile(work_dir / "header.json", kMaxHeaderBytes);
  if (!text) return Error(Errc::InvalidHeader, text.error().ToString());
  Json j = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Error(Errc::InvalidHeader, "header.json is not a JSON object");
  ComponentHeader header;
  UPKEEP_ASSIGN_OR_RETURN(header.component, StringField(j, "component"));
  UPKEEP_ASSIGN_OR_RETURN(header.version, StringField(j, "version"));
  UPKEEP_ASSIGN_OR_RETURN(header.target, StringField(j, "target"));
  auto args = j.find("module_args");
  if (args == j.end()) {
    header.module_args_json = "{}";
  } else if (!args->is_object()) {
    return Error(Errc::InvalidHeader, "header.json: \"module_args\" is not an object");
  } else {
    // Parsed JSON holds valid UTF-8 only, so dump() cannot throw here.
    header.module_args_json = args->dump();
  }
  if (header.component.empty()) return Error(Errc::InvalidHeader, "header.json: empty component");
  return header;
}

Result<ComponentHeader> ReadHeader(const fs::path& work_dir) {
  const LocalFilesystem local;
  return ReadHeader(local, work_dir);
}

}  // namespace upkeep::modules
