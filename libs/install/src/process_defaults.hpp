#pragma once

// The process-wide local file system and system clock, for callers that are not given their own.

#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"

namespace upkeep::install {

inline Filesystem& ProcessFilesystem() {
  static LocalFilesystem filesystem;
  return filesystem;
}

inline Clock& ProcessClock() { return SystemClock::Process(); }

}  // namespace upkeep::install
