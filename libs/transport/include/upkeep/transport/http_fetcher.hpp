#pragma once

// libcurl implementation of upkeep::Fetcher: http and https only, identity encoding (limits count
// the file's own bytes), redirects refused unless enabled, every response status checked before
// any body byte reaches the sink.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "upkeep/common/fetcher.hpp"

namespace upkeep::transport {

struct HttpFetcherOptions {
  // Give up if no connection is established within this time.
  std::chrono::seconds connect_timeout{10};
  // Slow-retrieval defence: abort when fewer than low_speed_bytes_per_second arrive for
  // low_speed_time.
  std::uint32_t low_speed_bytes_per_second = 1024;
  std::chrono::seconds low_speed_time{30};
  // Upper bound for one whole request; zero means none (large payloads rely on the rates).
  std::chrono::seconds total_timeout{0};
  // Slow-retrieval defence for long transfers: after average_rate_grace, abort when the body's
  // average rate since the request started is below min_average_bytes_per_second. A peer that
  // sends just above the low-speed limit cannot stretch a large payload to days: at the default
  // a 256 MiB transfer ends within about 4.5 hours. Zero disables the check.
  std::uint32_t min_average_bytes_per_second = 16 * 1024;
  std::chrono::seconds average_rate_grace{60};
  // Redirects are refused unless enabled (a mirror must serve what it is asked for).
  bool follow_redirects = false;
  // CA bundle for https; empty uses the system default.
  std::string ca_file;
  std::string user_agent = "upkeep/0.1";
};

// One transfer at a time: a fetcher owns one libcurl handle (and its connection cache), so
// threads that download in parallel use one fetcher each.
class HttpFetcher final : public Fetcher {
 public:
  explicit HttpFetcher(HttpFetcherOptions options = {});
  ~HttpFetcher() override;
  HttpFetcher(const HttpFetcher&) = delete;
  HttpFetcher& operator=(const HttpFetcher&) = delete;

  // Errors (all common::Errc):
  //   InvalidArgument  the URL is not http:// or https:// (file://, ftp://, ...) or is malformed;
  //                    nothing is contacted
  //   RemoteNotFound   the server answered 404 or 403
  //   HttpStatus       any other non-2xx answer, including a redirect that is not followed
  //                    (follow_redirects off, more than 3 hops, or to a scheme other than http(s))
  //   LengthExceeded   a 2xx Content-Length over max_bytes (refused before the body; the sink
  //                    gets nothing), or a body that passes max_bytes (the sink gets exactly
  //                    max_bytes, then the transfer is aborted)
  //   Timeout          connect_timeout, the low-speed limit, the minimum average rate, or
  //                    total_timeout
  //   NetworkError     connection refused, reset or cut short, TLS failure
  // The body of a non-2xx response never reaches the sink. An error returned by the sink aborts
  // the transfer and is returned exactly; an exception thrown by the sink is rethrown after
  // libcurl has unwound.
  [[nodiscard]] Result<void> Fetch(const std::string& url, std::uint64_t max_bytes,
                                   const Sink& sink) override;
  // `Range: bytes=offset-(offset+length-1)`. A 206 answer must start at `offset` (else
  // HttpStatus); a 200 answer (the server ignores ranges) is skipped up to `offset`; either is
  // cut after `length` bytes; 416 (the window starts past the end) delivers nothing and succeeds.
  // Other errors as Fetch.
  [[nodiscard]] Result<void> FetchRange(const std::string& url, std::uint64_t offset,
                                        std::uint64_t length, const Sink& sink) override;

 private:
  [[nodiscard]] Result<void> Perform(const std::string& url, std::uint64_t max_bytes,
                                     std::optional<std::uint64_t> range_offset, const Sink& sink);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace upkeep::transport
