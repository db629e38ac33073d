#pragma once

// What HttpFetcher and HttpClient share about driving libcurl: global set-up, header parsing
// helpers, the minimum-average-rate rule and the mapping of libcurl's errors. Private to
// libs/transport.

#include <curl/curl.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"

namespace upkeep::transport::internal {

// libcurl's global state, set up once per process before the first handle, thread-safely.
void GlobalInit();

bool StartsWithNoCase(std::string_view text, std::string_view prefix);
// Without surrounding blanks and the line ending.
std::string_view Trim(std::string_view s);

// The minimum average rate: after `grace`, a transfer whose body has arrived more slowly on
// average than `min_average` bytes per second since the request started is abandoned.
struct RateGuard {
  std::uint32_t min_average = 0;  // 0: off
  std::chrono::steady_clock::duration grace{};
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  bool too_slow = false;
};
// CURLOPT_XFERINFOFUNCTION for a RateGuard* (CURLOPT_XFERINFODATA).
int OnProgress(void* guard, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
               curl_off_t ulnow);
// common::Errc::Timeout naming the rate and what had arrived.
Error TooSlowError(const std::string& url, const RateGuard& guard, std::uint64_t delivered);

// A failed curl_easy_perform as common::Errc (Timeout, InvalidArgument, NetworkError).
Error CurlError(CURLcode rc, const char* detail, const std::string& url);

}  // namespace upkeep::transport::internal
