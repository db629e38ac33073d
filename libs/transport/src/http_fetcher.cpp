#include "upkeep/transport/http_fetcher.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <string_view>

#include "curl_common.hpp"
#include "upkeep/common/errc.hpp"

namespace upkeep::transport {

namespace {

using internal::CurlError;
using internal::GlobalInit;
using internal::OnProgress;
using internal::RateGuard;
using internal::StartsWithNoCase;
using internal::TooSlowError;
using internal::Trim;

using CurlPtr = std::unique_ptr<CURL, decltype(&curl_easy_cleanup)>;
using SlistPtr = std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)>;
using CurlLong = long;  // NOLINT(google-runtime-int): libcurl's option and info type

bool IsSuccess(CurlLong status) { return status >= 200 && status <= 299; }

// State shared with libcurl's callbacks for one transfer.
struct Transfer {
  const Fetcher::Sink* sink = nullptr;
  std::uint64_t max_bytes = 0;
  std::uint64_t delivered = 0;
  CurlLong status = 0;      // of the response being received (the last status line seen)
  bool too_large = false;   // announced or delivered more than max_bytes
  bool bad_status = false;  // a body arrived for a non-2xx response
  // Range requests: the first byte wanted; a 200 answer (Range ignored) skips up to it, a 206
  // answer must start exactly there.
  std::optional<std::uint64_t> range_offset;
  std::uint64_t skipped = 0;
  bool bad_range = false;
  std::optional<Error> sink_error;
  std::exception_ptr sink_exception;  // rethrown after curl_easy_perform; never crosses libcurl
  RateGuard rate;                     // the minimum average rate
};

// Runs before any body byte: records the status of each response (interim, redirect, final) and
// refuses a success response whose Content-Length is already over the limit.
std::size_t OnHeader(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  const std::string_view line(data, n);
  if (line.starts_with("HTTP/")) {
    t->status = 0;
    const auto space = line.find(' ');
    if (space != std::string_view::npos) {
      const std::string_view code = line.substr(space + 1, 3);
      int value = 0;
      const auto [end, ec] = std::from_chars(code.data(), code.data() + code.size(), value);
      if (ec == std::errc() && end == code.data() + code.size()) t->status = value;
    }
  } else if (t->range_offset && t->status == 206 && StartsWithNoCase(line, "content-range:")) {
    // "bytes FIRST-LAST/TOTAL": a window elsewhere than asked would corrupt the stream.
    const std::string_view value = Trim(line.substr(14));
    std::uint64_t first = 0;
    const bool prefixed = StartsWithNoCase(value, "bytes ");
    const auto [end, ec] =
        std::from_chars(value.data() + (prefixed ? 6 : 0), value.data() + value.size(), first);
    if (!prefixed || ec != std::errc() || end == value.data() + value.size() || *end != '-' ||
        first != *t->range_offset) {
      t->bad_range = true;
      return 0;
    }
  } else if (!t->range_offset && IsSuccess(t->status) &&
             StartsWithNoCase(line, "content-length:")) {
    const std::string_view value = Trim(line.substr(15));
    std::uint64_t length = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
    if (ec == std::errc::result_out_of_range ||
        (ec == std::errc() && end == value.data() + value.size() && length > t->max_bytes)) {
      t->too_large = true;
      return 0;  // abort before the body: nothing reaches the sink
    }
  }
  return n;
}

// Delivers body bytes to the sink, never more than max_bytes in total, and never the body of an
// error response.
std::size_t OnBody(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  if (!IsSuccess(t->status)) {
    t->bad_status = true;
    return 0;
  }
  if (t->range_offset && t->status != 206 && t->skipped < *t->range_offset) {
    // The server ignored Range and sends the whole file: drop what precedes the window.
    const auto drop =
        static_cast<std::size_t>(std::min<std::uint64_t>(n, *t->range_offset - t->skipped));
    t->skipped += drop;
    data += drop;
    if (drop == n) return n;
    return drop + OnBody(data, 1, n - drop, user);
  }
  const std::uint64_t room = t->max_bytes - t->delivered;
  const bool over = n > room;
  const std::size_t take = over ? static_cast<std::size_t>(room) : n;
  if (take > 0) {
    try {
      auto r = (*t->sink)(std::span<const char>(data, take));
      if (!r) {
        t->sink_error = std::move(r).error();
        return 0;
      }
    } catch (...) {
      t->sink_exception = std::current_exception();
      return 0;
    }
    t->delivered += take;
  }
  if (over) {
    // The sink has exactly max_bytes; the byte after the limit aborts the transfer.
    t->too_large = true;
    return 0;
  }
  return n;
}

Error StatusError(CurlLong status, const std::string& url) {
  const std::string message = "HTTP " + std::to_string(status) + " for " + url;
  if (status == 404 || status == 403) return Error(common::Errc::RemoteNotFound, message);
  return Error(common::Errc::HttpStatus, message);
}

bool HasHttpScheme(std::string_view url) {
  return StartsWithNoCase(url, "http://") || StartsWithNoCase(url, "https://");
}

}  // namespace

struct HttpFetcher::Impl {
  HttpFetcherOptions options;
  CurlPtr curl{nullptr, &curl_easy_cleanup};
  SlistPtr headers{nullptr, &curl_slist_free_all};
};

HttpFetcher::HttpFetcher(HttpFetcherOptions options) : impl_(std::make_unique<Impl>()) {
  GlobalInit();
  impl_->options = std::move(options);
}

HttpFetcher::~HttpFetcher() = default;

Result<void> HttpFetcher::Fetch(const std::string& url, std::uint64_t max_bytes, const Sink& sink) {
  return Perform(url, max_bytes, std::nullopt, sink);
}

Result<void> HttpFetcher::FetchRange(const std::string& url, std::uint64_t offset,
                                     std::uint64_t length, const Sink& sink) {
  if (length == 0) return Ok();
  return Perform(url, length, offset, sink);
}

Result<void> HttpFetcher::Perform(const std::string& url, std::uint64_t max_bytes,
                                  std::optional<std::uint64_t> range_offset, const Sink& sink) {
  if (!HasHttpScheme(url)) {
    return Error(common::Errc::InvalidArgument, "only http and https URLs: " + url);
  }
  if (!impl_->curl) impl_->curl.reset(curl_easy_init());
  if (!impl_->headers) {
    // Identity only, so that byte counts and limits apply to the file's own bytes.
    impl_->headers.reset(curl_slist_append(nullptr, "Accept-Encoding: identity"));
  }
  CURL* c = impl_->curl.get();
  if (c == nullptr || !impl_->headers) {
    return Error(common::Errc::NetworkError, "cannot create a transfer for " + url);
  }
  curl_easy_reset(c);  // keeps the connection cache, forgets the previous transfer's options

  Transfer t;
  t.sink = &sink;
  t.max_bytes = max_bytes;
  t.range_offset = range_offset;
  t.rate.min_average = impl_->options.min_average_bytes_per_second;
  t.rate.grace = impl_->options.average_rate_grace;
  const std::string range = range_offset ? std::to_string(*range_offset) + "-" +
                                               std::to_string(*range_offset + max_bytes - 1)
                                         : std::string();
  char error_detail[CURL_ERROR_SIZE] = {};
  const auto& o = impl_->options;
  const auto secs = [](std::chrono::seconds s) { return static_cast<CurlLong>(s.count()); };

  // Every option is checked: a fetcher that silently lost its protocol or size rules must not run.
  bool ok = true;
  const auto set = [&](CURLoption option, auto value) {
    ok = ok && curl_easy_setopt(c, option, value) == CURLE_OK;
  };
  set(CURLOPT_ERRORBUFFER, static_cast<char*>(error_detail));
  set(CURLOPT_URL, url.c_str());
  set(CURLOPT_PROTOCOLS_STR, "http,https");
  set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  set(CURLOPT_FOLLOWLOCATION, o.follow_redirects ? CurlLong{1} : CurlLong{0});
  set(CURLOPT_MAXREDIRS, CurlLong{3});
  set(CURLOPT_NOSIGNAL, CurlLong{1});
  set(CURLOPT_FAILONERROR, CurlLong{0});  // statuses are handled here, before any body byte
  set(CURLOPT_CONNECTTIMEOUT, secs(o.connect_timeout));
  set(CURLOPT_LOW_SPEED_LIMIT, static_cast<CurlLong>(o.low_speed_bytes_per_second));
  set(CURLOPT_LOW_SPEED_TIME, secs(o.low_speed_time));
  set(CURLOPT_TIMEOUT, secs(o.total_timeout));
  set(CURLOPT_HTTPHEADER, impl_->headers.get());
  set(CURLOPT_HTTP_CONTENT_DECODING, CurlLong{0});
  set(CURLOPT_USERAGENT, o.user_agent.c_str());
  if (!o.ca_file.empty()) set(CURLOPT_CAINFO, o.ca_file.c_str());
  set(CURLOPT_HEADERFUNCTION, &OnHeader);
  set(CURLOPT_HEADERDATA, &t);
  set(CURLOPT_WRITEFUNCTION, &OnBody);
  set(CURLOPT_WRITEDATA, &t);
  set(CURLOPT_XFERINFOFUNCTION, &OnProgress);
  set(CURLOPT_XFERINFODATA, &t.rate);
  set(CURLOPT_NOPROGRESS, CurlLong{0});
  if (range_offset) set(CURLOPT_RANGE, range.c_str());
  if (!ok) return Error(common::Errc::NetworkError, "cannot configure the transfer for " + url);

  const CURLcode rc = curl_easy_perform(c);
  CurlLong status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);

  if (t.sink_exception) std::rethrow_exception(t.sink_exception);  // the caller's own exception
  if (t.sink_error) return std::move(*t.sink_error);
  if (t.rate.too_slow) return TooSlowError(url, t.rate, t.delivered);
  if (t.bad_range) {
    return Error(common::Errc::HttpStatus, url + ": the server answered another range than asked");
  }
  // A range request stops at the window's end: a longer answer is cut there, not an error.
  if (t.too_large && range_offset && t.delivered == max_bytes) return Ok();
  if (t.too_large) {
    return Error(common::Errc::LengthExceeded,
                 url + ": more than " + std::to_string(max_bytes) + " bytes");
  }
  // A window that starts at or after the end of the file: nothing to deliver.
  if (range_offset && status == 416) return Ok();
  // The server's answer wins over what happened to the connection afterwards.
  if (t.bad_status || (!IsSuccess(status) && (status != 0 || rc == CURLE_OK))) {
    return StatusError(status, url);
  }
  if (rc != CURLE_OK) return CurlError(rc, error_detail, url);
  return Ok();
}

}  // namespace upkeep::transport
