// The module work directory: header.json, files/, tmp/.

#include <nlohmann/json.hpp>
#include <system_error>

#include "upkeep/common/filesystem.hpp"
#include "upkeep/modules/module.hpp"

namespace upkeep::modules {

namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

// header.json is small; anything larger is not a header.
constexpr std::uint64_t kMaxHeaderBytes = 1024 * 1024;

Error WorkDirError(const std::string& what, const fs::path& path, const std::error_code& ec) {
  return Error(Errc::WorkDirFailed, what + " " + path.string() + ": " + ec.message());
}

Result<void> MakeDir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return WorkDirError("create directory", dir, ec);
  return Ok();
}

// Places `source` at `dest`: a hard link when both are on one filesystem, else a copy that is
// fsynced before it appears under its name.
Result<void> PlaceArtifact(LocalFilesystem& local, const fs::path& source, const fs::path& dest) {
  std::error_code ec;
  fs::remove(dest, ec);
  if (ec) return WorkDirError("remove", dest, ec);
  fs::create_hard_link(source, dest, ec);
  if (!ec) return Ok();
  auto file = local.CreateAtomic(dest);
  if (!file) return Error(Errc::WorkDirFailed, file.error().ToString());
  auto copied =
      local.ReadChunks(source, [&](std::span<const char> chunk) { return (*file)->Append(chunk); });
  if (!copied) return Error(Errc::WorkDirFailed, "copy artifact: " + copied.error().ToString());
  if (auto r = (*file)->Commit(); !r) {
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

Result<void> PrepareWorkDir(const fs::path& work_dir, const ComponentHeader& header,
                            std::span<const fs::path> artifacts) {
  if (header.component.empty()) return Error(Errc::InvalidHeader, "component name is empty");
  Json args = Json::parse(header.module_args_json, nullptr, /*allow_exceptions=*/false);
  if (!args.is_object()) return Error(Errc::InvalidHeader, "module_args is not a JSON object");

  UPKEEP_TRY(MakeDir(work_dir / "files"));
  UPKEEP_TRY(MakeDir(work_dir / "tmp"));
  LocalFilesystem local;
  for (const auto& artifact : artifacts) {
    if (!artifact.has_filename()) {
      return Error(Errc::WorkDirFailed, "artifact path has no file name: " + artifact.string());
    }
    UPKEEP_TRY(PlaceArtifact(local, artifact, work_dir / "files" / artifact.filename()));
  }
  if (auto r = local.SyncDirectory(work_dir / "files"); !r) {
    return Error(Errc::WorkDirFailed, r.error().ToString());
  }

  Json j = Json::object();
  j["component"] = header.component;
  j["version"] = header.version;
  j["target"] = header.target;
  j["module_args"] = std::move(args);
  std::string text;
  try {
    text = j.dump(2) + "\n";
  } catch (const Json::exception& e) {  // invalid UTF-8 in a string
    return Error(Errc::InvalidHeader, std::string("header.json: ") + e.what());
  }
  if (auto r = local.WriteFileAtomic(work_dir / "header.json", text); !r) {
    return Error(Errc::WorkDirFailed, r.error().ToString());
  }
  return Ok();
}

Result<ComponentHeader> ReadHeader(const fs::path& work_dir) {
  LocalFilesystem local;
  auto text = local.ReadFile(work_dir / "header.json", kMaxHeaderBytes);
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
    header.module_args_json = args->dump();
  }
  if (header.component.empty()) return Error(Errc::InvalidHeader, "header.json: empty component");
  return header;
}

}  // namespace upkeep::modules
