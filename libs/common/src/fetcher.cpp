#include "upkeep/common/fetcher.hpp"

namespace upkeep {

Result<std::string> Fetcher::FetchBytes(const std::string& url, std::uint64_t max_bytes) {
  std::string body;
  UPKEEP_TRY(Fetch(url, max_bytes, [&body](std::span<const char> piece) -> Result<void> {
    body.append(piece.data(), piece.size());
    return Ok();
  }));
  return body;
}

}  // namespace upkeep
