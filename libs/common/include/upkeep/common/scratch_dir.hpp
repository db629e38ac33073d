#pragma once

// A private temporary directory (mkdtemp, mode 0700) removed with its contents when the object
// goes away. path() is empty when it could not be created: callers report that.

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace upkeep {

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix = "upkeep") {
    std::error_code ec;
    const std::filesystem::path tmp = std::filesystem::temp_directory_path(ec);
    if (ec) return;
    std::string pattern = (tmp / (prefix + "-XXXXXX")).string();
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace upkeep
