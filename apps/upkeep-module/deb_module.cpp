// The "deb" module: installs a Debian package with dpkg -i and rolls back to the previously
// installed version (from module_args "cache_dir") or removes the package.
//
// State in WORKDIR, written before dpkg runs for the first time:
//   deb.package   the package name
//   deb.previous  the version installed before the update, or
//   deb.absent    marker: the package was not installed before the update
// cache_dir holds NAME_VERSION.deb of the committed version of each package (":" in the
// version written as "%3a"); Commit stores the new one there and drops older ones.

#include <cerrno>
#include <system_error>

#include "module_util.hpp"

namespace upkeep::module_tool {

namespace fs = std::filesystem;
using modules::Stage;

namespace {

struct DebTools {
  std::string dpkg = "/usr/bin/dpkg";
  std::string dpkg_query = "/usr/bin/dpkg-query";
  std::string dpkg_deb = "/usr/bin/dpkg-deb";
  std::optional<fs::path> cache_dir;
};

struct DebState {
  fs::path package;
  fs::path previous;
  fs::path absent;
};

DebState StateFor(const ModuleContext& ctx) {
  return DebState{ctx.work_dir / "deb.package", ctx.work_dir / "deb.previous",
                  ctx.work_dir / "deb.absent"};
}

Result<DebTools> ToolsFor(const ModuleContext& ctx) {
  UPKEEP_TRY(CheckArgs(ctx, {"cache_dir", "dpkg", "dpkg-query", "dpkg-deb"}));
  DebTools tools;
  UPKEEP_ASSIGN_OR_RETURN(auto dpkg, StringArg(ctx, "dpkg"));
  UPKEEP_ASSIGN_OR_RETURN(auto query, StringArg(ctx, "dpkg-query"));
  UPKEEP_ASSIGN_OR_RETURN(auto deb, StringArg(ctx, "dpkg-deb"));
  UPKEEP_ASSIGN_OR_RETURN(auto cache, StringArg(ctx, "cache_dir"));
  if (dpkg) tools.dpkg = *dpkg;
  if (query) tools.dpkg_query = *query;
  if (deb) tools.dpkg_deb = *deb;
  if (cache) {
    if (!fs::path(*cache).is_absolute()) {
      return InvalidArgument("module_args: \"cache_dir\" must be absolute");
    }
    tools.cache_dir = fs::path(*cache);
  }
  return tools;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  std::size_t start = 0;
  while (start < s.size() && s[start] == ' ') ++start;
  return s.substr(start);
}

bool ValidPackageName(const std::string& name) {
  if (name.size() < 2 || name.size() > 128) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              (i > 0 && (c == '+' || c == '-' || c == '.'));
    if (!ok) return false;
  }
  return true;
}

bool ValidVersion(const std::string& version) {
  if (version.empty() || version.size() > 256) return false;
  for (char c : version) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '+' || c == '-' || c == '~' || c == ':';
    if (!ok) return false;
  }
  return true;
}

// A tool run that must succeed; its stdout (and stderr when captured) is returned.
Result<std::string> MustRun(const ModuleContext& ctx, const std::vector<std::string>& argv,
                            bool capture_stderr = true) {
  UPKEEP_ASSIGN_OR_RETURN(modules::ProcessResult r, RunTool(ctx, argv, capture_stderr));
  if (!r.Succeeded()) {
    *ctx.log << r.output;
    return InvalidArgument(
        argv.front() + " failed with status " + std::to_string(r.exit_code) +
        (r.term_signal != 0 ? " (signal " + std::to_string(r.term_signal) + ")" : std::string()));
  }
  return r.output;
}

Result<std::string> DebField(const ModuleContext& ctx, const DebTools& tools, const fs::path& deb,
                             const char* field) {
  UPKEEP_ASSIGN_OR_RETURN(std::string out,
                          MustRun(ctx, {tools.dpkg_deb, "-f", deb.string(), field}, false));
  return Trim(out);
}

// The installed version of `package`, or nullopt when it is not fully installed.
Result<std::optional<std::string>> InstalledVersion(const ModuleContext& ctx, const DebTools& tools,
                                                    const std::string& package) {
  UPKEEP_ASSIGN_OR_RETURN(
      modules::ProcessResult r,
      RunTool(ctx, {tools.dpkg_query, "-W", "--showformat=${db:Status-Status} ${Version}", package},
              /*capture_stderr=*/false));
  if (!r.Succeeded()) return std::optional<std::string>();  // unknown package
  std::string out = Trim(r.output);
  const std::string prefix = "installed ";
  if (out.rfind(prefix, 0) != 0) return std::optional<std::string>();
  return std::optional<std::string>(out.substr(prefix.size()));
}

fs::path CachedDeb(const fs::path& cache_dir, const std::string& package,
                   const std::string& version) {
  std::string v;
  for (char c : version) v += (c == ':') ? std::string("%3a") : std::string(1, c);
  return cache_dir / (package + "_" + v + ".deb");
}

Result<void> RunDpkg(const ModuleContext& ctx, const DebTools& tools,
                     const std::vector<std::string>& args) {
  std::vector<std::string> argv = {tools.dpkg};
  argv.insert(argv.end(), args.begin(), args.end());
  UPKEEP_ASSIGN_OR_RETURN(std::string out, MustRun(ctx, argv));
  *ctx.log << out;
  return Ok();
}

struct PackageInfo {
  std::string name;
  std::string version;
};

Result<PackageInfo> ReadPackage(const ModuleContext& ctx, const DebTools& tools,
                                const fs::path& deb) {
  PackageInfo info;
  UPKEEP_ASSIGN_OR_RETURN(info.name, DebField(ctx, tools, deb, "Package"));
  UPKEEP_ASSIGN_OR_RETURN(info.version, DebField(ctx, tools, deb, "Version"));
  if (!ValidPackageName(info.name)) {
    return InvalidArgument("invalid package name in " + deb.string() + ": " + info.name);
  }
  if (!ValidVersion(info.version)) {
    return InvalidArgument("invalid version in " + deb.string() + ": " + info.version);
  }
  return info;
}

Result<void> Install(const ModuleContext& ctx, const DebTools& tools) {
  UPKEEP_ASSIGN_OR_RETURN(fs::path deb, SingleArtifact(ctx));
  UPKEEP_ASSIGN_OR_RETURN(PackageInfo pkg, ReadPackage(ctx, tools, deb));
  const DebState state = StateFor(ctx);
  if (!PathExists(state.previous) && !PathExists(state.absent)) {
    UPKEEP_TRY(WriteStateFile(state.package, pkg.name + "\n"));
    UPKEEP_ASSIGN_OR_RETURN(auto previous, InstalledVersion(ctx, tools, pkg.name));
    if (previous) {
      *ctx.log << "deb: " << pkg.name << " " << *previous << " is installed\n";
      UPKEEP_TRY(WriteStateFile(state.previous, *previous + "\n"));
    } else {
      *ctx.log << "deb: " << pkg.name << " is not installed yet\n";
      UPKEEP_TRY(WriteStateFile(state.absent, "absent\n"));
    }
  }
  UPKEEP_TRY(RunDpkg(ctx, tools, {"-i", deb.string()}));
  UPKEEP_ASSIGN_OR_RETURN(auto now, InstalledVersion(ctx, tools, pkg.name));
  if (!now || *now != pkg.version) {
    return InvalidArgument("after dpkg -i, " + pkg.name + " is at version " +
                           now.value_or("(not installed)") + ", expected " + pkg.version);
  }
  return Ok();
}

Result<void> DropState(const DebState& state) {
  UPKEEP_TRY(RemoveDurably(state.previous));
  UPKEEP_TRY(RemoveDurably(state.absent));
  return RemoveDurably(state.package);
}

Result<void> Rollback(const ModuleContext& ctx, const DebTools& tools) {
  const DebState state = StateFor(ctx);
  const bool had_previous = PathExists(state.previous);
  if (!had_previous && !PathExists(state.absent)) {
    *ctx.log << "deb: nothing to roll back (Install did not start or rollback is done)\n";
    return RemoveDurably(state.package);
  }
  UPKEEP_ASSIGN_OR_RETURN(std::string package, ReadStateFile(state.package));
  package = Trim(package);
  if (!ValidPackageName(package)) return InvalidArgument("invalid deb.package: " + package);
  UPKEEP_ASSIGN_OR_RETURN(auto current, InstalledVersion(ctx, tools, package));

  if (had_previous) {
    UPKEEP_ASSIGN_OR_RETURN(std::string previous, ReadStateFile(state.previous));
    previous = Trim(previous);
    if (current && *current == previous) {
      *ctx.log << "deb: " << package << " is at the previous version " << previous << "\n";
    } else {
      if (!tools.cache_dir) {
        return InvalidArgument("cannot restore " + package + " " + previous +
                               ": no cache_dir in module_args");
      }
      const fs::path cached = CachedDeb(*tools.cache_dir, package, previous);
      if (!PathExists(cached)) {
        return InvalidArgument("cannot restore " + package + " " + previous + ": " +
                               cached.string() + " is missing");
      }
      *ctx.log << "deb: reinstalling " << package << " " << previous << "\n";
      UPKEEP_TRY(RunDpkg(ctx, tools, {"-i", cached.string()}));
      UPKEEP_ASSIGN_OR_RETURN(auto after, InstalledVersion(ctx, tools, package));
      if (!after || *after != previous) {
        return InvalidArgument("rollback left " + package + " at " +
                               after.value_or("(not installed)") + ", expected " + previous);
      }
    }
  } else if (current) {
    *ctx.log << "deb: removing " << package << " (it was not installed before)\n";
    UPKEEP_TRY(RunDpkg(ctx, tools, {"-r", package}));
  }
  return DropState(state);
}

Result<void> Commit(const ModuleContext& ctx, const DebTools& tools) {
  if (tools.cache_dir) {
    UPKEEP_ASSIGN_OR_RETURN(fs::path deb, SingleArtifact(ctx));
    UPKEEP_ASSIGN_OR_RETURN(PackageInfo pkg, ReadPackage(ctx, tools, deb));
    std::error_code ec;
    fs::create_directories(*tools.cache_dir, ec);
    if (ec) return IoError("create", *tools.cache_dir, ec.value());
    const fs::path keep = CachedDeb(*tools.cache_dir, pkg.name, pkg.version);
    *ctx.log << "deb: caching " << keep.string() << "\n";
    UPKEEP_TRY(CopyFileAtomic(deb, keep, 0644, std::nullopt));
    // Older versions of this package are no longer needed for a rollback.
    const std::string prefix = pkg.name + "_";
    std::vector<fs::path> stale;
    for (const auto& entry : fs::directory_iterator(*tools.cache_dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (entry.path() != keep && name.rfind(prefix, 0) == 0 && name.size() > 4 &&
          name.compare(name.size() - 4, 4, ".deb") == 0) {
        stale.push_back(entry.path());
      }
    }
    if (ec) return IoError("list", *tools.cache_dir, ec.value());
    for (const auto& path : stale) UPKEEP_TRY(RemoveDurably(path));
  }
  return DropState(StateFor(ctx));
}

}  // namespace

Result<void> RunDebModule(Stage stage, const ModuleContext& ctx) {
  UPKEEP_ASSIGN_OR_RETURN(DebTools tools, ToolsFor(ctx));
  switch (stage) {
    case Stage::Download:
      return Ok();
    case Stage::Install:
      return Install(ctx, tools);
    case Stage::Commit:
      return Commit(ctx, tools);
    case Stage::Rollback:
      return Rollback(ctx, tools);
    case Stage::Cleanup:
      return ClearTmp(ctx);
  }
  return Ok();
}

}  // namespace upkeep::module_tool
