#pragma once

#include <string_view>

namespace upkeep {

// A relative path that stays below the directory it is joined to: not empty, at most 1024 bytes,
// no leading or trailing '/', no empty, "." or ".." segments, no NUL byte. Used for target names
// and bundle entries, which come from metadata and files an attacker may have written.
[[nodiscard]] bool IsSafeRelativePath(std::string_view path);

}  // namespace upkeep
