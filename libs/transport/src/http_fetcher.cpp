#include "upkeep/transport/http_fetcher.hpp"

#include <curl/curl.h>

#include <cstdlib>
#include <mutex>
#include <optional>

#include "upkeep/common/errc.hpp"

namespace upkeep::transport {

namespace {

using CurlPtr = std::unique_ptr<CURL, decltype(&curl_easy_cleanup)>;
using SlistPtr = std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)>;

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// State shared with libcurl's callbacks for one transfer.
struct Transfer {
  const Fetcher::Sink* sink = nullptr;
  std::uint64_t max_bytes = 0;
  std::uint64_t delivered = 0;
  long status = 0;  // NOLINT(google-runtime-int): libcurl's type
  bool too_large = false;
  bool bad_status = false;
  std::optional<Error> sink_error;
  CURL* curl = nullptr;
};

// Status line and Content-Length are checked before any body byte reaches the sink.
std::size_t OnHeader(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::string_view line(data, size * count);
  if (line.starts_with("HTTP/")) {
    t->bad_status = false;
    const auto space = line.find(' ');
    if (space != std::string_view::npos && line.size() >= space + 4) {
      t->status = std::strtol(std::string(line.substr(space + 1, 3)).c_str(), nullptr, 10);
    }
  }
  return size * count;
}

std::size_t OnBody(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  if (t->status < 200 || t->status > 299) {
    t->bad_status = true;
    return 0;  // never hand an error page to the sink
  }
  if (t->delivered + n > t->max_bytes) {
    // Deliver what still fits, then abort: the sink never sees more than the limit.
    const std::size_t room = static_cast<std::size_t>(t->max_bytes - t->delivered);
    if (room > 0) {
      auto r = (*t->sink)(std::span<const char>(data, room));
      if (!r) t->sink_error = std::move(r).error();
      t->delivered += room;
    }
    t->too_large = true;
    return 0;
  }
  auto r = (*t->sink)(std::span<const char>(data, n));
  if (!r) {
    t->sink_error = std::move(r).error();
    return 0;
  }
  t->delivered += n;
  return n;
}

Error StatusError(long status, const std::string& url) {  // NOLINT(google-runtime-int)
  if (status == 404 || status == 403) {
    return Error(common::Errc::RemoteNotFound, "HTTP " + std::to_string(status) + " for " + url);
  }
  return Error(common::Errc::HttpStatus, "HTTP " + std::to_string(status) + " for " + url);
}

}  // namespace

struct HttpFetcher::Impl {
  HttpFetcherOptions options;
  CurlPtr curl{nullptr, &curl_easy_cleanup};
};

HttpFetcher::HttpFetcher(HttpFetcherOptions options) : impl_(std::make_unique<Impl>()) {
  GlobalInit();
  impl_->options = std::move(options);
}

HttpFetcher::~HttpFetcher() = default;

Result<void> HttpFetcher::Fetch(const std::string& url, std::uint64_t max_bytes,
                                const Sink& sink) {
  if (!url.starts_with("http://") && !url.starts_with("https://")) {
    return Error(common::Errc::InvalidArgument, "only http and https URLs: " + url);
  }
  if (!impl_->curl) impl_->curl.reset(curl_easy_init());
  CURL* c = impl_->curl.get();
  if (c == nullptr) return Error(common::Errc::NetworkError, "cannot create a transfer");
  curl_easy_reset(c);

  Transfer t;
  t.sink = &sink;
  t.max_bytes = max_bytes;
  t.curl = c;
  const auto& o = impl_->options;

  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, o.follow_redirects ? 1L : 0L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 3L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_FAILONERROR, 0L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(o.connect_timeout.count()));
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, static_cast<long>(o.low_speed_bytes_per_second));
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(o.low_speed_time.count()));
  curl_easy_setopt(c, CURLOPT_TIMEOUT, static_cast<long>(o.total_timeout.count()));
  // Refuse up front when the server announces more than allowed (checked before the body).
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(max_bytes));
  curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, nullptr);  // identity: count on-wire file bytes
  curl_easy_setopt(c, CURLOPT_USERAGENT, o.user_agent.c_str());
  if (!o.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, o.ca_file.c_str());
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &OnHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &OnBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);

  const CURLcode rc = curl_easy_perform(c);
  long status = 0;  // NOLINT(google-runtime-int)
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);

  if (t.sink_error) return std::move(*t.sink_error);
  if (t.too_large || rc == CURLE_FILESIZE_EXCEEDED) {
    if (status >= 200 && status <= 299) {
      return Error(common::Errc::LengthExceeded,
                   url + ": more than " + std::to_string(max_bytes) + " bytes");
    }
  }
  if (t.bad_status || (rc == CURLE_OK && (status < 200 || status > 299)) ||
      (rc == CURLE_FILESIZE_EXCEEDED && (status < 200 || status > 299))) {
    return StatusError(status, url);
  }
  switch (rc) {
    case CURLE_OK:
      return Ok();
    case CURLE_OPERATION_TIMEDOUT:
      return Error(common::Errc::Timeout, url + ": " + curl_easy_strerror(rc));
    case CURLE_UNSUPPORTED_PROTOCOL:
      return Error(common::Errc::InvalidArgument, url + ": " + curl_easy_strerror(rc));
    default:
      return Error(common::Errc::NetworkError, url + ": " + curl_easy_strerror(rc));
  }
}

}  // namespace upkeep::transport
