#pragma once

// libcurl client for JSON APIs (the device API, docs/formats/device-api.md): small requests and
// answers over HTTPS with the fleet server's CA pinned, an optional client certificate (mutual
// TLS), kept-alive connections and resumed TLS sessions across requests of one client.
//
// Rules, none of which can be turned off:
// - https only; plain http only when HttpClientOptions::allow_http is set (tests);
// - TLS 1.2 or newer; the server certificate is verified (chain and host name) against the
//   configured server CA only (no system store, no CA directory); a client without a server CA is
//   refused at creation;
// - redirects are never followed;
// - every answer body (whatever the status) is bounded by max_response_bytes;
// - the connect, low-speed, average-rate and total timeouts apply as in HttpFetcher.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "upkeep/common/result.hpp"

namespace upkeep::transport {

// The timeouts have the meaning of the HttpFetcherOptions fields of the same names
// (http_fetcher.hpp); only total_timeout differs by default, since API answers are small.
struct HttpClientOptions {
  std::chrono::seconds connect_timeout{10};
  std::uint32_t low_speed_bytes_per_second = 1024;
  std::chrono::seconds low_speed_time{30};
  std::chrono::seconds total_timeout{120};
  std::uint32_t min_average_bytes_per_second = 16 * 1024;
  std::chrono::seconds average_rate_grace{60};

  // The server's CA (PEM), as a file or in memory; exactly one is required. Only this CA is
  // trusted for the server's certificate.
  std::string server_ca_file;
  std::string server_ca_pem;
  // The client certificate and its key (PEM), as files or in memory; both or neither of a kind.
  std::string client_certificate_file;
  std::string client_key_file;
  std::string client_certificate_pem;
  std::string client_key_pem;

  // Largest answer body accepted (any status); more is common::Errc::LengthExceeded.
  std::uint64_t max_response_bytes = 4 << 20;
  // Keep connections open between requests (HTTP/1.1 keep-alive). When off, every request opens
  // a new connection (the TLS session is still resumed).
  bool reuse_connections = true;
  // Allows http:// URLs. For tests only: nothing is authenticated or private then.
  bool allow_http = false;
  std::string user_agent = "upkeep/0.1";
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpResponse {
  unsigned status = 0;
  std::string body;  // at most max_response_bytes
  // Selected response headers; empty when absent.
  std::string etag;
  std::string content_type;
  std::string retry_after;  // as sent ("120"); the caller interprets it

  [[nodiscard]] bool ok() const { return status >= 200 && status <= 299; }
};

// One request at a time (calls from several threads are serialised); the client owns one libcurl
// handle whose connection and TLS session caches live as long as the client.
class HttpClient {
 public:
  // common::Errc::InvalidArgument: no server CA, half a client identity (certificate without key
  // or the reverse), both a file and a PEM for the same item.
  [[nodiscard]] static Result<std::unique_ptr<HttpClient>> Create(HttpClientOptions options);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // POST `body` as application/json (Accept: application/json). `headers` are added; names and
  // values must not hold CR, LF or NUL (common::Errc::InvalidArgument).
  //
  // Every complete answer is returned as a value: 2xx, 304 and 4xx/5xx alike, with its body (so
  // that an API's error bodies can be read); RequireSuccess turns non-2xx into an error.
  // Errors (all common::Errc):
  //   InvalidArgument  not an https URL (or http when allowed), malformed URL, bad header;
  //                    nothing is contacted
  //   HttpStatus       a redirect (3xx other than 304): never followed; the status is in the
  //                    message
  //   LengthExceeded   the answer's Content-Length or body passes max_response_bytes
  //   Timeout          connect_timeout, low-speed limit, minimum average rate, total_timeout
  //   NetworkError     connection refused, reset or cut short, TLS failure (including a server
  //                    certificate that does not verify against the server CA)
  [[nodiscard]] Result<HttpResponse> Post(const std::string& url, const std::string& body,
                                          const HttpHeaders& headers = {});
  // GET; as Post.
  [[nodiscard]] Result<HttpResponse> Get(const std::string& url, const HttpHeaders& headers = {});

  struct Impl;

 private:
  explicit HttpClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The response when it is 2xx; otherwise common::Errc::HttpStatus with the status in the message.
[[nodiscard]] Result<HttpResponse> RequireSuccess(Result<HttpResponse> response);

}  // namespace upkeep::transport
