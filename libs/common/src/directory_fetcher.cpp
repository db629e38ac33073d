#include "upkeep/common/directory_fetcher.hpp"

#include <algorithm>

#include "upkeep/common/encoding.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/common/paths.hpp"

namespace upkeep {

bool DirectoryFetcher::IsRepositoryPath(const std::string& name) {
  return IsSafeRelativePath(name) &&
         (name.starts_with("metadata/") || name.starts_with("targets/"));
}

Result<void> DirectoryFetcher::Fetch(const std::string& url, std::uint64_t max_bytes,
                                     const Sink& sink) {
  constexpr std::string_view kScheme = "repo:/";
  if (!url.starts_with(kScheme)) return Error(common::Errc::InvalidArgument, url);
  auto name = PercentDecode(std::string_view(url).substr(kScheme.size()));
  if (!name || !IsRepositoryPath(*name)) return Error(common::Errc::RemoteNotFound, url);
  auto bytes = fs_.ReadFile(root_ / *name, max_bytes);
  if (!bytes) {
    if (bytes.error().code() == common::Errc::FileTooLarge) {
      return Error(common::Errc::LengthExceeded, url);
    }
    return Error(common::Errc::RemoteNotFound, url);
  }
  UPKEEP_TRY(sink(std::span<const char>(bytes->data(), bytes->size())));
  if (std::find(fetched_.begin(), fetched_.end(), *name) == fetched_.end()) {
    fetched_.push_back(*name);
  }
  return Ok();
}

}  // namespace upkeep
