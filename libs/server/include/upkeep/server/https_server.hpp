#pragma once

// The fleet server's HTTPS front end (ADR 0007): HTTP/1.1 with keep-alive over TLS 1.2+ (session
// resumption on), optional client certificates checked against the device CA, strict limits on
// what a peer may send, and a graceful stop that lets requests in flight finish. It knows nothing
// about devices: each parsed request goes to one Handler, which says what to answer.
//
// Every listening address is the caller's choice; tests and benchmarks use 127.0.0.1 port 0.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "upkeep/common/result.hpp"
#include "upkeep/common/unique_fd.hpp"

namespace upkeep::server {

enum class Errc {
  InvalidTlsIdentity = 1,  // the server certificate, key or client CA cannot be loaded
  CannotListen = 2,        // the address cannot be bound
  InvalidConfig = 3,    // the server's configuration file is missing, malformed or has bad values
  InvalidDeviceCa = 4,  // the device CA certificate or key cannot be used
  DeviceNotFound = 5,   // no device has the ID given
  InvalidArgument = 6,  // a model, group or other name an administrator gave is not allowed
  NotFound = 7,         // no release, campaign or other record has the name given
  Conflict = 8,         // the record exists already, or is not in a state the action applies to
};

}  // namespace upkeep::server

UPKEEP_DECLARE_ERRC(upkeep::server);

namespace upkeep::server {

struct HttpsOptions {
  // Where to listen. Port 0 picks a free port (HttpsServer::port() tells which).
  std::string address = "127.0.0.1";
  std::uint16_t port = 0;
  // The server's TLS identity (PEM) and the CA whose client certificates are accepted (PEM).
  // Without a client CA no client certificate is asked for.
  std::string certificate_pem;
  std::string private_key_pem;
  std::string client_ca_pem;
  // Largest request body and header block accepted (413 and 431 beyond).
  std::uint64_t max_body_bytes = 1 << 20;
  std::uint32_t max_header_bytes = 16 * 1024;
  // A connection that sends nothing for this long is closed; a TLS handshake or one request that
  // takes longer than request_timeout is cut off (slow-loris defence).
  std::chrono::seconds idle_timeout{60};
  std::chrono::seconds request_timeout{15};
  // Threads running the network and the handlers.
  unsigned threads = 2;
  // Connections beyond this are closed as soon as they are accepted.
  std::uint32_t max_connections = 20000;
};

struct Request {
  std::string method;                          // "GET", "POST", ...
  std::string path;                            // without the query
  std::string query;                           // after '?', undecoded; empty when none
  std::map<std::string, std::string> headers;  // names lower-case
  std::string body;
  // The client certificate (DER), present only when it chains to the client CA (OpenSSL checked
  // signature and validity during the handshake); empty when the client sent none.
  std::string peer_certificate_der;
  std::string remote_address;

  [[nodiscard]] std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

// A response body read from an open file: `length` bytes from `offset`. The front end streams it
// in pieces of 64 KiB, so memory stays constant whatever the file's size.
struct FileBody {
  UniqueFd fd;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

struct Response {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  // When set, the body is the file's bytes and `body` is ignored.
  std::shared_ptr<const FileBody> file = nullptr;
};

// Called on a server thread for each request; it may block (database work). An exception from it
// becomes a 500 answer and a log line. The answer to a HEAD request is sent without its body but
// with the Content-Length the body has; 204 and 304 answers never carry a body.
using Handler = std::function<Response(const Request&)>;

// Counters for metrics and tests.
struct ServerStats {
  std::uint64_t connections = 0;       // accepted
  std::uint64_t handshakes = 0;        // completed TLS handshakes
  std::uint64_t resumed_sessions = 0;  // of which resumed a previous TLS session
  std::uint64_t requests = 0;
  std::uint64_t rejected_requests = 0;  // malformed or over a limit
};

class HttpsServer {
 public:
  [[nodiscard]] static Result<std::unique_ptr<HttpsServer>> Start(const HttpsOptions& options,
                                                                  Handler handler);
  ~HttpsServer();  // Stop(0 s) if still running
  HttpsServer(const HttpsServer&) = delete;
  HttpsServer& operator=(const HttpsServer&) = delete;

  [[nodiscard]] std::uint16_t port() const;
  [[nodiscard]] ServerStats stats() const;
  // Stops accepting, lets requests in flight finish (their connections then close) for at most
  // `grace`, then closes what is left and joins the threads. Idempotent.
  void Stop(std::chrono::milliseconds grace = std::chrono::seconds(10));

  struct Impl;

 private:
  explicit HttpsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace upkeep::server
