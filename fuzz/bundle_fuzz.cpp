// Fuzz target: the offline bundle container (header and table of contents), then every entry
// read through BundleFetcher. Inputs are written to an in-memory file.

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include "upkeep/install/bundle.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const int fd = memfd_create("bundle", 0);
  if (fd < 0) std::abort();
  if (size > 0 && ::write(fd, data, size) != static_cast<ssize_t>(size)) std::abort();
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  auto bundle = upkeep::install::Bundle::Open(path);
  if (bundle) {
    upkeep::install::BundleFetcher fetcher(*bundle);
    for (const auto& e : bundle->entries()) {
      const std::string url = std::string("bundle:/") + e.name;
      (void)fetcher.FetchBytes(url, 1 << 20);
    }
  }
  ::close(fd);
  return 0;
}
