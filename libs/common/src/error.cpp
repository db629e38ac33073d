#include "upkeep/common/error.hpp"

#include <cstdio>

#include "upkeep/common/errc.hpp"
#include "upkeep/common/result.hpp"

namespace upkeep {

std::string Error::ToString() const {
  std::string out = code_.category().name();
  out += ".";
  out += code_.message();
  if (!message_.empty()) {
    out += ": ";
    out += message_;
  }
  return out;
}

namespace detail {
void ResultAccessFailed(const Error& e) noexcept {
  std::fprintf(stderr, "upkeep: value() called on a Result holding an error: %s\n",
               e.ToString().c_str());
  std::abort();
}
}  // namespace detail

namespace common {
namespace {
const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::IoError: return "IoError";
    case Errc::FileNotFound: return "FileNotFound";
    case Errc::InvalidArgument: return "InvalidArgument";
    case Errc::FileTooLarge: return "FileTooLarge";
    case Errc::Internal: return "Internal";
    case Errc::RemoteNotFound: return "RemoteNotFound";
    case Errc::LengthExceeded: return "LengthExceeded";
    case Errc::Timeout: return "Timeout";
    case Errc::NetworkError: return "NetworkError";
    case Errc::HttpStatus: return "HttpStatus";
    case Errc::Aborted: return "Aborted";
  }
  return "Unknown";
}
}  // namespace

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("common", &ErrcName);
  return category;
}
}  // namespace common

}  // namespace upkeep
