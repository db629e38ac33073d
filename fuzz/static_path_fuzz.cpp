// Fuzz target: the path of a request for the image repository's static files, as the fleet
// server receives it after /repository/, and HTTP dates (If-Modified-Since). An accepted path
// must stay below the directory: relative, no empty, "." or ".." segment, no segment starting
// with '.', no NUL, control character or backslash. A parsed date formats back to itself.
// Nothing may throw or abort.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "upkeep/server/static_files.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 64 * 1024) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const upkeep::server::StaticPath p = upkeep::server::CheckStaticPath(input);
  if (p.refusal == 0) {
    const std::string& s = p.relative;
    if (s.empty() || s.front() == '/') std::abort();
    std::size_t start = 0;
    for (;;) {
      const std::size_t slash = s.find('/', start);
      const std::string segment =
          s.substr(start, slash == std::string::npos ? slash : slash - start);
      if (segment.empty() || segment.front() == '.') std::abort();
      for (char c : segment) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x20 || u == 0x7f || c == '\\') std::abort();
      }
      if (slash == std::string::npos) break;
      start = slash + 1;
    }
  } else if (p.refusal != 400 && p.refusal != 404) {
    std::abort();
  }
  if (auto t = upkeep::server::ParseHttpDate(input)) {
    // Only IMF-fixdate is accepted, so what formats back has its length.
    const std::string back = upkeep::server::FormatHttpDate(*t);
    if (back.size() != 29) std::abort();
  }
  return 0;
}
