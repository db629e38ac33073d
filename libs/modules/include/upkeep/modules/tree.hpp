#pragma once

// Removing directory trees without following symbolic links, for the module work directory
// and the shipped modules' staging paths. A symbolic link met on the way is removed itself;
// its target is never read, listed or changed.

#include <filesystem>

#include "upkeep/common/result.hpp"

namespace upkeep::modules {

// Removes `path`: a file or link is unlinked, a directory is emptied depth-first (entries
// opened relative to their directory with O_NOFOLLOW) and removed. A missing path is success.
// The parent directories of `path` are resolved normally. Errors: common::Errc::IoError.
[[nodiscard]] Result<void> RemoveTree(const std::filesystem::path& path);

// Removes everything inside the directory `dir` and keeps `dir`. Fails with
// common::Errc::IoError when `dir` is a symbolic link or not a directory.
[[nodiscard]] Result<void> EmptyDirectory(const std::filesystem::path& dir);

}  // namespace upkeep::modules
