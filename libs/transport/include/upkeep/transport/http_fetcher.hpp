#pragma once

// libcurl implementation of upkeep::Fetcher.

#include <chrono>
#include <cstdint>
#include <memory>
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
  // Upper bound for one whole request; zero means none (large payloads rely on low_speed_*).
  std::chrono::seconds total_timeout{0};
  // Redirects are refused unless enabled (a mirror must serve what it is asked for).
  bool follow_redirects = false;
  // CA bundle for https; empty uses the system default.
  std::string ca_file;
  std::string user_agent = "upkeep/0.1";
};

class HttpFetcher final : public Fetcher {
 public:
  explicit HttpFetcher(HttpFetcherOptions options = {});
  ~HttpFetcher() override;
  HttpFetcher(const HttpFetcher&) = delete;
  HttpFetcher& operator=(const HttpFetcher&) = delete;

  // Only http:// and https:// URLs. 404/403 -> common::Errc::RemoteNotFound; other non-2xx ->
  // HttpStatus; more than max_bytes -> LengthExceeded (aborted as soon as the limit is passed,
  // or before the transfer when Content-Length already says so); timeouts -> Timeout.
  [[nodiscard]] Result<void> Fetch(const std::string& url, std::uint64_t max_bytes,
                                   const Sink& sink) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace upkeep::transport
