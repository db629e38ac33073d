#include "upkeep/common/main_guard.hpp"

#include <exception>
#include <string>

namespace upkeep {

int GuardMain(std::string_view program, std::ostream& err, int internal_exit,
              const std::function<int()>& body) noexcept {
  const char* what = "unknown exception";
  std::string owned;
  try {
    return body();
  } catch (const std::exception& e) {
    try {
      owned = e.what();
      what = owned.c_str();
    } catch (...) {  // out of memory while copying the message: keep the generic one
    }
  } catch (...) {
  }
  try {
    err << program << ": internal error: " << what << "\n" << std::flush;
  } catch (...) {  // the error stream itself failed: the exit code still tells
  }
  return internal_exit;
}

}  // namespace upkeep
