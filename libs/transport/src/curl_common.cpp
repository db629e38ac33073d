#include "curl_common.hpp"

#include <algorithm>
#include <cctype>
#include <mutex>

#include "upkeep/common/errc.hpp"

namespace upkeep::transport::internal {

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

bool StartsWithNoCase(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() &&
         std::equal(prefix.begin(), prefix.end(), text.begin(), [](char a, char b) {
           return std::tolower(static_cast<unsigned char>(a)) ==
                  std::tolower(static_cast<unsigned char>(b));
         });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

// libcurl calls this about once a second and on every chunk.
int OnProgress(void* guard, curl_off_t /*dltotal*/, curl_off_t dlnow, curl_off_t /*ultotal*/,
               curl_off_t /*ulnow*/) {
  auto* g = static_cast<RateGuard*>(guard);
  if (g->min_average == 0) return 0;
  const auto elapsed = std::chrono::steady_clock::now() - g->started;
  if (elapsed < g->grace) return 0;
  const double seconds = std::chrono::duration<double>(elapsed).count();
  if (static_cast<double>(dlnow) < seconds * static_cast<double>(g->min_average)) {
    g->too_slow = true;
    return 1;  // aborts with CURLE_ABORTED_BY_CALLBACK
  }
  return 0;
}

Error TooSlowError(const std::string& url, const RateGuard& guard, std::uint64_t delivered) {
  return Error(common::Errc::Timeout, url + ": slower than " + std::to_string(guard.min_average) +
                                          " bytes/s on average; transfer abandoned after " +
                                          std::to_string(delivered) + " bytes");
}

Error CurlError(CURLcode rc, const char* detail, const std::string& url) {
  std::string message = url + ": " + curl_easy_strerror(rc);
  if (detail[0] != '\0') message += std::string(" (") + detail + ")";
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      return Error(common::Errc::Timeout, message);
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return Error(common::Errc::InvalidArgument, message);
    default:
      return Error(common::Errc::NetworkError, message);
  }
}

}  // namespace upkeep::transport::internal
