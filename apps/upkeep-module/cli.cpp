#include "cli.hpp"

#include <string>
#include <string_view>

#include "module_util.hpp"
#include "upkeep/common/errc.hpp"

namespace upkeep::module_tool {

namespace {

constexpr const char* kUsage =
    "usage: upkeep-module TYPE STAGE WORKDIR\n"
    "  TYPE   file | dir | deb\n"
    "  STAGE  Download | Install | Commit | Rollback | Cleanup\n"
    "WORKDIR holds header.json (with module_args), files/ and tmp/;\n"
    "see docs/formats/update-module.md.\n";

using StageFn = Result<void> (*)(modules::Stage, const ModuleContext&);

StageFn FindModule(std::string_view type) {
  if (type == "file") return &RunFileModule;
  if (type == "dir") return &RunDirModule;
  if (type == "deb") return &RunDebModule;
  return nullptr;
}

}  // namespace

int Main(int argc, char** argv, std::ostream& out, std::ostream& err) {
  if (argc == 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h")) {
    out << kUsage;
    return 0;
  }
  if (argc != 4) {
    err << kUsage;
    return 2;
  }
  const std::string type = argv[1];
  StageFn module = FindModule(type);
  if (module == nullptr) {
    err << "upkeep-module: unknown module type \"" << type << "\"\n" << kUsage;
    return 2;
  }
  auto stage = modules::ParseStage(argv[2]);
  if (!stage) {
    err << "upkeep-module: unknown stage \"" << argv[2] << "\"\n" << kUsage;
    return 2;
  }
  const char* stage_name = modules::StageName(*stage);

  ModuleContext ctx;
  ctx.work_dir = argv[3];
  ctx.log = &out;
  auto header = modules::ReadHeader(ctx.work_dir);
  if (!header) {
    err << "upkeep-module " << type << " " << stage_name << ": " << header.error().ToString()
        << "\n";
    return 1;
  }
  ctx.header = std::move(header).value();
  ctx.args = nlohmann::json::parse(ctx.header.module_args_json, nullptr,
                                   /*allow_exceptions=*/false);
  if (!ctx.args.is_object()) {
    err << "upkeep-module " << type << " " << stage_name << ": module_args is not an object\n";
    return 1;
  }

  Result<void> r = Error();
  try {
    r = module(*stage, ctx);
  } catch (const std::exception& e) {  // std::filesystem or allocation failures
    r = Error(common::Errc::IoError, e.what());
  }
  out.flush();
  if (!r) {
    err << "upkeep-module " << type << " " << stage_name << " (" << ctx.header.component
        << "): " << r.error().ToString() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace upkeep::module_tool
