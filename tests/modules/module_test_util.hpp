#pragma once

// Helpers for the update module tests: scripts as modules, work directories, the shipped
// upkeep-module binary.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "upkeep/modules/module.hpp"

namespace upkeep::testing {

// Path of the built upkeep-module executable (a compile definition from CMake).
inline constexpr const char* kModuleBinary = UPKEEP_MODULE_BIN;

inline void WriteTextFile(const std::filesystem::path& path, const std::string& content,
                          std::filesystem::perms perms = std::filesystem::perms(0644)) {
  std::filesystem::create_directories(path.parent_path());
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
  }
  std::filesystem::permissions(path, perms);
}

// Writes an executable /bin/sh script.
inline std::filesystem::path WriteScript(const std::filesystem::path& path,
                                         const std::string& body) {
  WriteTextFile(path, "#!/bin/sh\n" + body + "\n", std::filesystem::perms(0755));
  return path;
}

// A work directory prepared with PrepareWorkDir; aborts the test on failure.
// `version` also names the target ("components/test-component-VERSION").
inline std::filesystem::path MakeWorkDir(const std::filesystem::path& work_dir,
                                         const std::string& module_args_json,
                                         const std::vector<std::filesystem::path>& artifacts,
                                         const std::string& version = "1.0") {
  modules::ComponentHeader header;
  header.component = "test-component";
  header.version = version;
  header.target = "components/test-component-" + version;
  header.module_args_json = module_args_json;
  auto r = modules::PrepareWorkDir(work_dir, header, artifacts);
  if (!r) ADD_FAILURE() << r.error().ToString();
  return work_dir;
}

// The shipped module of `type`, with a timeout generous enough for slow CI machines.
inline modules::ModuleSpec ShippedModule(const std::string& type) {
  modules::ModuleSpec spec;
  spec.command = {kModuleBinary, type};
  spec.timeout = std::chrono::seconds(60);
  return spec;
}

// A module that behaves like the shipped `type` but fails (exit 1) at `failing_stage`.
inline modules::ModuleSpec FailingAt(const std::filesystem::path& script_dir,
                                     const std::string& type, const std::string& failing_stage) {
  auto script = WriteScript(script_dir / ("fail-at-" + failing_stage + ".sh"),
                            "if [ \"$1\" = " + failing_stage +
                                " ]; then echo \"forced failure\"; exit 1; fi\n"
                                "exec " +
                                std::string(kModuleBinary) + " " + type + " \"$@\"");
  modules::ModuleSpec spec;
  spec.command = {script.string()};
  spec.timeout = std::chrono::seconds(60);
  return spec;
}

}  // namespace upkeep::testing
