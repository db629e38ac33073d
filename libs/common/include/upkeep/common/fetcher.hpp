#pragma once

// The Fetcher contract: how verification code obtains remote bytes without doing I/O itself.
// libs/transport implements it with libcurl; tests and offline bundles provide their own.

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "upkeep/common/result.hpp"

namespace upkeep {

class Fetcher {
 public:
  // Receives each piece of the body in order; returning an error aborts the transfer and that
  // error is what Fetch returns.
  using Sink = std::function<Result<void>(std::span<const char>)>;

  virtual ~Fetcher() = default;

  // Streams `url` into `sink`. Never delivers more than `max_bytes` in total: the transfer is
  // aborted with common::Errc::LengthExceeded as soon as the limit would be passed.
  // A missing file is common::Errc::RemoteNotFound.
  [[nodiscard]] virtual Result<void> Fetch(const std::string& url, std::uint64_t max_bytes,
                                           const Sink& sink) = 0;

  // Streams bytes [offset, offset + length) of `url`, to resume a download or skip what is already
  // on the device. A file that ends inside the window delivers what it has and succeeds: the caller
  // counts bytes. The default fetches from the start and passes on only the window; fetchers that
  // can seek (HTTP Range, bundles) override it.
  [[nodiscard]] virtual Result<void> FetchRange(const std::string& url, std::uint64_t offset,
                                                std::uint64_t length, const Sink& sink);

  // Convenience: the whole body in memory (for metadata, which is small and bounded).
  [[nodiscard]] Result<std::string> FetchBytes(const std::string& url, std::uint64_t max_bytes);
};

}  // namespace upkeep
