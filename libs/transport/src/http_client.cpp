#include "upkeep/transport/http_client.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <mutex>
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

// State shared with libcurl's callbacks for one request.
struct Exchange {
  std::uint64_t max_bytes = 0;
  HttpResponse response;  // of the response being received (the last status line seen)
  bool too_large = false;
  RateGuard rate;
};

// Records the status line and the selected headers of each response (interim ones are replaced by
// the final one); refuses a Content-Length over the limit before any body byte.
std::size_t OnHeader(char* data, std::size_t size, std::size_t count, void* user) {
  auto* x = static_cast<Exchange*>(user);
  const std::size_t n = size * count;
  const std::string_view line(data, n);
  if (line.starts_with("HTTP/")) {
    x->response = HttpResponse{};
    const auto space = line.find(' ');
    if (space != std::string_view::npos) {
      const std::string_view code = line.substr(space + 1, 3);
      unsigned value = 0;
      const auto [end, ec] = std::from_chars(code.data(), code.data() + code.size(), value);
      if (ec == std::errc() && end == code.data() + code.size()) x->response.status = value;
    }
  } else if (StartsWithNoCase(line, "content-length:")) {
    const std::string_view value = Trim(line.substr(15));
    std::uint64_t length = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
    if (ec == std::errc::result_out_of_range ||
        (ec == std::errc() && end == value.data() + value.size() && length > x->max_bytes)) {
      x->too_large = true;
      return 0;
    }
  } else if (StartsWithNoCase(line, "etag:")) {
    x->response.etag = std::string(Trim(line.substr(5)));
  } else if (StartsWithNoCase(line, "content-type:")) {
    x->response.content_type = std::string(Trim(line.substr(13)));
  } else if (StartsWithNoCase(line, "retry-after:")) {
    x->response.retry_after = std::string(Trim(line.substr(12)));
  }
  return n;
}

std::size_t OnBody(char* data, std::size_t size, std::size_t count, void* user) {
  auto* x = static_cast<Exchange*>(user);
  const std::size_t n = size * count;
  if (n > x->max_bytes - x->response.body.size()) {
    x->too_large = true;
    return 0;
  }
  try {
    x->response.body.append(data, n);
  } catch (...) {  // std::bad_alloc must not cross libcurl
    x->too_large = true;
    return 0;
  }
  return n;
}

bool HasHeaderBreak(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

}  // namespace

struct HttpClient::Impl {
  HttpClientOptions options;
  std::mutex mutex;  // one request at a time on the handle
  CurlPtr curl{nullptr, &curl_easy_cleanup};

  Result<HttpResponse> Perform(const std::string& url, const std::string* post_body,
                               const HttpHeaders& headers);
};

HttpClient::HttpClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpClient::~HttpClient() = default;

Result<std::unique_ptr<HttpClient>> HttpClient::Create(HttpClientOptions options) {
  GlobalInit();
  const auto& o = options;
  if (o.server_ca_file.empty() == o.server_ca_pem.empty()) {
    return Error(common::Errc::InvalidArgument,
                 "http client: exactly one of server_ca_file and server_ca_pem is required");
  }
  const bool cert_file = !o.client_certificate_file.empty();
  const bool key_file = !o.client_key_file.empty();
  const bool cert_pem = !o.client_certificate_pem.empty();
  const bool key_pem = !o.client_key_pem.empty();
  if ((cert_file || cert_pem) != (key_file || key_pem) || (cert_file && cert_pem) ||
      (key_file && key_pem)) {
    return Error(common::Errc::InvalidArgument,
                 "http client: a client certificate needs exactly one certificate and one key");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->curl.reset(curl_easy_init());
  if (!impl->curl) return Error(common::Errc::NetworkError, "http client: cannot create a handle");
  return std::unique_ptr<HttpClient>(new HttpClient(std::move(impl)));
}

Result<HttpResponse> HttpClient::Post(const std::string& url, const std::string& body,
                                      const HttpHeaders& headers) {
  return impl_->Perform(url, &body, headers);
}

Result<HttpResponse> HttpClient::Get(const std::string& url, const HttpHeaders& headers) {
  return impl_->Perform(url, nullptr, headers);
}

Result<HttpResponse> HttpClient::Impl::Perform(const std::string& url, const std::string* post_body,
                                               const HttpHeaders& headers) {
  const auto& o = options;
  const bool https = StartsWithNoCase(url, "https://");
  if (!https && !(o.allow_http && StartsWithNoCase(url, "http://"))) {
    return Error(common::Errc::InvalidArgument,
                 o.allow_http ? "only http and https URLs: " + url : "only https URLs: " + url);
  }
  // Our own headers first; Expect is sent empty so that no POST waits for 100-continue.
  SlistPtr list(nullptr, &curl_slist_free_all);
  const auto append = [&](const std::string& line) {
    curl_slist* next = curl_slist_append(list.get(), line.c_str());
    if (next == nullptr) return false;
    (void)list.release();
    list.reset(next);
    return true;
  };
  bool listed = append("Accept: application/json") && append("Accept-Encoding: identity") &&
                append("Expect:");
  if (post_body != nullptr) listed = listed && append("Content-Type: application/json");
  for (const auto& [name, value] : headers) {
    if (name.empty() || HasHeaderBreak(name) || HasHeaderBreak(value) ||
        name.find_first_of(": \t") != std::string::npos) {
      return Error(common::Errc::InvalidArgument, "unusable request header: " + name);
    }
    listed = listed && append(name + ": " + value);
  }
  if (!listed) return Error(common::Errc::NetworkError, "cannot build the request for " + url);

  std::lock_guard lock(mutex);
  CURL* c = curl.get();
  curl_easy_reset(c);  // keeps live connections and the TLS session cache

  Exchange x;
  x.max_bytes = o.max_response_bytes;
  x.rate.min_average = o.min_average_bytes_per_second;
  x.rate.grace = o.average_rate_grace;
  char error_detail[CURL_ERROR_SIZE] = {};
  const auto secs = [](std::chrono::seconds s) { return static_cast<CurlLong>(s.count()); };
  const auto blob = [](const std::string& pem) {
    return curl_blob{const_cast<char*>(pem.data()), pem.size(), CURL_BLOB_COPY};
  };

  bool ok = true;
  const auto set = [&](CURLoption option, auto value) {
    ok = ok && curl_easy_setopt(c, option, value) == CURLE_OK;
  };
  set(CURLOPT_ERRORBUFFER, static_cast<char*>(error_detail));
  set(CURLOPT_URL, url.c_str());
  set(CURLOPT_PROTOCOLS_STR, o.allow_http ? "http,https" : "https");
  set(CURLOPT_FOLLOWLOCATION, CurlLong{0});
  set(CURLOPT_HTTP_VERSION, static_cast<CurlLong>(CURL_HTTP_VERSION_1_1));
  set(CURLOPT_NOSIGNAL, CurlLong{1});
  set(CURLOPT_FAILONERROR, CurlLong{0});
  set(CURLOPT_CONNECTTIMEOUT, secs(o.connect_timeout));
  set(CURLOPT_LOW_SPEED_LIMIT, static_cast<CurlLong>(o.low_speed_bytes_per_second));
  set(CURLOPT_LOW_SPEED_TIME, secs(o.low_speed_time));
  set(CURLOPT_TIMEOUT, secs(o.total_timeout));
  set(CURLOPT_FORBID_REUSE, o.reuse_connections ? CurlLong{0} : CurlLong{1});
  set(CURLOPT_TCP_KEEPALIVE, CurlLong{1});
  set(CURLOPT_HTTPHEADER, list.get());
  set(CURLOPT_HTTP_CONTENT_DECODING, CurlLong{0});
  set(CURLOPT_USERAGENT, o.user_agent.c_str());
  // TLS: 1.2 or newer, the server verified against the configured CA alone.
  set(CURLOPT_SSLVERSION, static_cast<CurlLong>(CURL_SSLVERSION_TLSv1_2));
  set(CURLOPT_SSL_VERIFYPEER, CurlLong{1});
  set(CURLOPT_SSL_VERIFYHOST, CurlLong{2});
  set(CURLOPT_SSL_SESSIONID_CACHE, CurlLong{1});
  set(CURLOPT_CAPATH, static_cast<const char*>(nullptr));
  curl_blob ca_blob = blob(o.server_ca_pem);
  if (!o.server_ca_file.empty()) {
    set(CURLOPT_CAINFO, o.server_ca_file.c_str());
  } else {
    set(CURLOPT_CAINFO, static_cast<const char*>(nullptr));  // no default bundle besides
    set(CURLOPT_CAINFO_BLOB, &ca_blob);
  }
  curl_blob cert_blob = blob(o.client_certificate_pem);
  curl_blob key_blob = blob(o.client_key_pem);
  if (!o.client_certificate_file.empty()) {
    set(CURLOPT_SSLCERT, o.client_certificate_file.c_str());
    set(CURLOPT_SSLKEY, o.client_key_file.c_str());
  } else if (!o.client_certificate_pem.empty()) {
    set(CURLOPT_SSLCERTTYPE, "PEM");
    set(CURLOPT_SSLCERT_BLOB, &cert_blob);
    set(CURLOPT_SSLKEYTYPE, "PEM");
    set(CURLOPT_SSLKEY_BLOB, &key_blob);
  }
  set(CURLOPT_HEADERFUNCTION, &OnHeader);
  set(CURLOPT_HEADERDATA, &x);
  set(CURLOPT_WRITEFUNCTION, &OnBody);
  set(CURLOPT_WRITEDATA, &x);
  set(CURLOPT_XFERINFOFUNCTION, &OnProgress);
  set(CURLOPT_XFERINFODATA, &x.rate);
  set(CURLOPT_NOPROGRESS, CurlLong{0});
  if (post_body != nullptr) {
    set(CURLOPT_POST, CurlLong{1});
    set(CURLOPT_POSTFIELDS, post_body->c_str());
    set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(post_body->size()));
  } else {
    set(CURLOPT_HTTPGET, CurlLong{1});
  }
  if (!ok) return Error(common::Errc::NetworkError, "cannot configure the request for " + url);

  const CURLcode rc = curl_easy_perform(c);
  // The handle keeps no pointer into this frame's buffers or header list past the request.
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, static_cast<char*>(nullptr));
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, static_cast<curl_slist*>(nullptr));

  if (x.rate.too_slow) return TooSlowError(url, x.rate, x.response.body.size());
  if (x.too_large) {
    return Error(common::Errc::LengthExceeded,
                 url + ": answer larger than " + std::to_string(x.max_bytes) + " bytes");
  }
  if (rc != CURLE_OK) return CurlError(rc, error_detail, url);
  const unsigned status = x.response.status;
  if (status < 200 || (status >= 300 && status < 400 && status != 304) || status > 599) {
    const bool redirect = status >= 300 && status < 400;
    return Error(common::Errc::HttpStatus, "HTTP " + std::to_string(status) + " for " + url +
                                               (redirect ? " (redirects are not followed)" : ""));
  }
  return std::move(x.response);
}

Result<HttpResponse> RequireSuccess(Result<HttpResponse> response) {
  if (response && !response->ok()) {
    return Error(common::Errc::HttpStatus, "HTTP " + std::to_string(response->status));
  }
  return response;
}

}  // namespace upkeep::transport
