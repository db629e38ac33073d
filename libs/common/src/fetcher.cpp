#include "upkeep/common/fetcher.hpp"

#include "upkeep/common/errc.hpp"

namespace upkeep {

Result<std::string> Fetcher::FetchBytes(const std::string& url, std::uint64_t max_bytes) {
  std::string body;
  UPKEEP_TRY(Fetch(url, max_bytes, [&body](std::span<const char> piece) -> Result<void> {
    body.append(piece.data(), piece.size());
    return Ok();
  }));
  return body;
}

Result<void> Fetcher::FetchRange(const std::string& url, std::uint64_t offset,
                                 std::uint64_t length, const Sink& sink) {
  std::uint64_t seen = 0;
  const std::uint64_t end = offset + length;
  auto r = Fetch(url, end, [&](std::span<const char> piece) -> Result<void> {
    const std::uint64_t start = seen;
    seen += piece.size();
    if (seen <= offset) return Ok();
    const std::uint64_t skip = offset > start ? offset - start : 0;
    return sink(piece.subspan(static_cast<std::size_t>(skip)));
  });
  // A longer file stops at the window's end: that is the point, not an error.
  if (!r && r.error().code() == common::Errc::LengthExceeded && seen >= end) return Ok();
  return r;
}

}  // namespace upkeep
