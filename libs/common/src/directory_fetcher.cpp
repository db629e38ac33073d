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
  // Streamed: a payload may be far larger than memory, and a range read stops at its window.
  UPKEEP_ASSIGN_OR_RETURN(const bool exists, fs_.Exists(root_ / *name));
  if (!exists) return Error(common::Errc::RemoteNotFound, url);
  std::uint64_t delivered = 0;
  auto read = fs_.ReadChunks(root_ / *name, [&](std::span<const char> piece) -> Result<void> {
    if (delivered + piece.size() > max_bytes) {
      const auto room = static_cast<std::size_t>(max_bytes - delivered);
      if (room > 0) UPKEEP_TRY(sink(piece.first(room)));
      delivered = max_bytes;
      return Error(common::Errc::LengthExceeded, url);
    }
    delivered += piece.size();
    return sink(piece);
  });
  if (!read) {
    if (read.error().code() == common::Errc::FileNotFound) {
      return Error(common::Errc::RemoteNotFound, url);
    }
    return read.error();
  }
  if (std::find(fetched_.begin(), fetched_.end(), *name) == fetched_.end()) {
    fetched_.push_back(*name);
  }
  return Ok();
}

}  // namespace upkeep
