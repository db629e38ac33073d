// Fuzz target: boot environments as the agent reads them after the firmware (or anyone with access
// to the boot partition) wrote them: the plain-file format and GRUB's environment block. Whatever
// reads must write back and read again to the same variables.

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "upkeep/install/bootloader.hpp"

namespace {

std::string TempPath(const char* name) {
  return "/tmp/upkeep-fuzz-" + std::to_string(::getpid()) + "-" + name;
}

void Check(std::unique_ptr<upkeep::install::BootEnv> env, const std::string& path,
           const std::uint8_t* data, std::size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto vars = env->Read();
  if (vars) {
    std::map<std::string, std::optional<std::string>> same;
    for (const auto& [k, v] : *vars) same[k] = v;
    // Values read may be ones the writer refuses (the writer is stricter); if accepted, they
    // must read back unchanged.
    if (env->Write(same)) {
      auto again = env->Read();
      if (!again || *again != *vars) std::abort();
    }
  }
  std::remove(path.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 4096) return 0;
  const std::string file = TempPath("bootenv");
  Check(upkeep::install::MakeFileBootEnv(file), file, data, size);
  const std::string grub = TempPath("grubenv");
  Check(upkeep::install::MakeGrubEnv(grub), grub, data, size);
  return 0;
}
