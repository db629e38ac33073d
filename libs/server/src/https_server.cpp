// The HTTPS front end on Boost.Beast and Asio. This file is the one place in libs/server that
// sees OpenSSL (through Asio's TLS stream): ADR 0007.

#include "upkeep/server/https_server.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <list>
#include <mutex>
#include <optional>
#include <thread>

#include "upkeep/common/log.hpp"

namespace upkeep::server {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::InvalidTlsIdentity:
      return "InvalidTlsIdentity";
    case Errc::CannotListen:
      return "CannotListen";
    case Errc::InvalidConfig:
      return "InvalidConfig";
    case Errc::InvalidDeviceCa:
      return "InvalidDeviceCa";
    case Errc::DeviceNotFound:
      return "DeviceNotFound";
    case Errc::InvalidArgument:
      return "InvalidArgument";
    case Errc::NotFound:
      return "NotFound";
    case Errc::Conflict:
      return "Conflict";
  }
  return "Unknown";
}

}  // namespace

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("server", &ErrcName);
  return category;
}

class Session;

struct HttpsServer::Impl {
  // Declared first, destroyed last: sessions still queued in the io_context when it is destroyed
  // update these counters and the list.
  HttpsOptions options;
  Handler handler;
  std::atomic<bool> stopping{false};
  std::atomic<std::uint32_t> active{0};
  std::atomic<std::uint64_t> connections{0}, handshakes{0}, resumed{0}, requests{0}, rejected{0};
  std::mutex sessions_mutex;
  std::list<std::weak_ptr<Session>> sessions;  // for Stop(): idle connections close at once
  std::mutex stop_mutex;
  bool stopped = false;
  std::uint16_t port = 0;

  asio::io_context io;
  ssl::context tls{ssl::context::tls_server};
  tcp::acceptor acceptor{io};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;

  void Accept();
  void Track(const std::shared_ptr<Session>& s);
};

// One TLS connection: handshake, then requests one after the other (keep-alive) until the peer
// closes, a limit is broken, a timeout fires, or the server stops.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, HttpsServer::Impl& server)
      : server_(server), stream_(std::move(socket), server.tls) {
    boost::system::error_code ec;
    const auto endpoint = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    if (!ec) remote_ = endpoint.address().to_string();
  }
  ~Session() { --server_.active; }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  void Run() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->Handshake(); });
  }

  // From Stop(): a connection waiting for its next request closes now; one in the middle of a
  // request finishes it and closes afterwards (Connection: close).
  void CloseIfIdle() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
      if (self->idle_) beast::get_lowest_layer(self->stream_).cancel();
    });
  }

 private:
  void Handshake() {
    beast::get_lowest_layer(stream_).expires_after(server_.options.request_timeout);
    stream_.async_handshake(
        ssl::stream_base::server,
        [self = shared_from_this()](beast::error_code ec) { self->OnHandshake(ec); });
  }

  void OnHandshake(beast::error_code ec) {
    if (ec) return;  // includes a client certificate that does not chain to the client CA
    ++server_.handshakes;
    if (SSL_session_reused(stream_.native_handle()) == 1) ++server_.resumed;
    ReadHeader();
  }

  void ReadHeader() {
    if (server_.stopping) return Close();
    parser_.emplace();
    parser_->body_limit(server_.options.max_body_bytes);
    parser_->header_limit(server_.options.max_header_bytes);
    idle_ = buffer_.size() == 0;
    beast::get_lowest_layer(stream_).expires_after(server_.options.idle_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              self->idle_at_error_ = !self->parser_->got_some();
                              self->idle_ = false;
                              self->OnHeader(ec);
                            });
  }

  void OnHeader(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    idle_at_error_ = false;
    beast::get_lowest_layer(stream_).expires_after(server_.options.request_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code e, std::size_t) { self->OnRead(e); });
  }

  void OnReadError(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == ssl::error::stream_truncated) {
      // The connection ended between requests: keep its TLS session for resumption (OpenSSL
      // drops sessions of connections that were not shut down).
      if (idle_at_error_)
        SSL_set_shutdown(stream_.native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
      return Close();
    }
    ++server_.rejected;
    unsigned status = 400;
    if (ec == http::error::body_limit) status = 413;
    if (ec == http::error::header_limit) status = 431;
    Respond(status == 400 ? ErrorBody(400, "bad_request", "the request is malformed")
                          : ErrorBody(status, "too_large", "the request is too large"),
            false);
  }

  void OnRead(beast::error_code ec) {
    if (ec) return OnReadError(ec);
    ++server_.requests;
    const auto& msg = parser_->get();
    Request req;
    req.method = std::string(msg.method_string());
    const std::string target(msg.target());
    const auto q = target.find('?');
    req.path = target.substr(0, q);
    if (q != std::string::npos) req.query = target.substr(q + 1);
    for (const auto& field : msg) {
      std::string name(field.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      // nothrow: a header field's value, not an optional
      req.headers[name] = std::string(field.value());
    }
    req.body = msg.body();
    req.remote_address = remote_;
    req.peer_certificate_der = PeerCertificate();
    Response res;
    try {
      res = server_.handler(req);
    } catch (const std::exception& e) {
      log::error("https: handler failed on {} {}: {}", req.method, req.path, e.what());
      res = ErrorBody(500, "internal", "internal error");
    } catch (...) {
      log::error("https: handler failed on {} {}", req.method, req.path);
      res = ErrorBody(500, "internal", "internal error");
    }
    Respond(std::move(res), msg.keep_alive(), msg.method() == http::verb::head);
  }

  // The verified client certificate (DER), or empty.
  std::string PeerCertificate() {
    SSL* ssl = stream_.native_handle();
    X509* cert = SSL_get1_peer_certificate(ssl);
    if (cert == nullptr) return {};
    std::string der;
    if (SSL_get_verify_result(ssl) == X509_V_OK) {
      const int n = i2d_X509(cert, nullptr);
      if (n > 0) {
        der.resize(static_cast<std::size_t>(n));
        auto* out = reinterpret_cast<unsigned char*>(der.data());
        if (i2d_X509(cert, &out) != n) der.clear();
      }
    }
    X509_free(cert);
    return der;
  }

  // Errors the front end answers itself, in the device API's form {"error", "message"}.
  static Response ErrorBody(unsigned status, const char* code, const char* message) {
    Response r;
    r.status = status;
    r.body = std::string("{\"error\":\"") + code + "\",\"message\":\"" + message + "\"}";
    return r;
  }

  void Respond(Response r, bool keep_alive, bool head = false) {
    keep_alive =
        keep_alive && !server_.stopping && r.status != 400 && r.status != 413 && r.status != 431;
    const bool no_body = r.status < 200 || r.status == 204 || r.status == 304;
    if (r.file && !head && !no_body && r.file->length > 0)
      return RespondFile(std::move(r), keep_alive);
    if (head || no_body) {
      auto res = std::make_shared<http::response<http::empty_body>>(
          static_cast<http::status>(r.status), 11);
      SetHeaders(*res, r, keep_alive);
      // HEAD: the length the body would have had.
      if (!no_body) res->content_length(r.file ? r.file->length : r.body.size());
      return Send(std::move(res), keep_alive);
    }
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(r.status), 11);
    SetHeaders(*res, r, keep_alive);
    res->body() = r.file ? std::string() : std::move(r.body);
    res->prepare_payload();
    Send(std::move(res), keep_alive);
  }

  template <typename Message>
  static void SetHeaders(Message& res, const Response& r, bool keep_alive) {
    res.set(http::field::server, "upkeep");
    res.set(http::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers) res.set(name, value);
    res.keep_alive(keep_alive);
  }

  template <typename Message>
  void Send(std::shared_ptr<Message> res, bool keep_alive) {
    beast::get_lowest_layer(stream_).expires_after(server_.options.request_timeout);
    http::async_write(
        stream_, *res,
        [self = shared_from_this(), res, keep_alive](beast::error_code ec, std::size_t) {
          if (ec) return self->Close();
          if (keep_alive) return self->ReadHeader();
          self->Shutdown();
        });
  }

  // A file body, read and written 64 KiB at a time: the header, then one piece after the other.
  struct FileWrite {
    explicit FileWrite(std::shared_ptr<const FileBody> f, bool keep)
        : file(std::move(f)), keep_alive(keep) {}
    http::response<http::buffer_body> res;
    http::response_serializer<http::buffer_body> serializer{res};
    std::shared_ptr<const FileBody> file;
    std::uint64_t sent = 0;
    std::vector<char> buffer = std::vector<char>(64 * 1024);
    bool keep_alive;
  };

  void RespondFile(Response r, bool keep_alive) {
    auto w = std::make_shared<FileWrite>(std::move(r.file), keep_alive);
    w->res.result(static_cast<http::status>(r.status));
    w->res.version(11);
    SetHeaders(w->res, r, keep_alive);
    w->res.content_length(w->file->length);
    w->res.body().data = nullptr;
    w->res.body().more = true;
    beast::get_lowest_layer(stream_).expires_after(server_.options.request_timeout);
    http::async_write_header(stream_, w->serializer,
                             [self = shared_from_this(), w](beast::error_code ec, std::size_t) {
                               if (ec) return self->Close();
                               self->WriteFilePiece(w);
                             });
  }

  void WriteFilePiece(const std::shared_ptr<FileWrite>& w) {
    const std::uint64_t left = w->file->length - w->sent;
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(w->buffer.size(), left));
    ssize_t n = -1;
    do {
      n = ::pread(w->file->fd.get(), w->buffer.data(), want,
                  static_cast<off_t>(w->file->offset + w->sent));
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      // The file shrank or cannot be read: the promised length cannot be kept, so the client
      // must see the connection end early rather than a short body.
      log::warn("https: a file body ended after {} of {} bytes", w->sent, w->file->length);
      return Close();
    }
    w->sent += static_cast<std::uint64_t>(n);
    w->res.body().data = w->buffer.data();
    w->res.body().size = static_cast<std::size_t>(n);
    w->res.body().more = w->sent < w->file->length;
    beast::get_lowest_layer(stream_).expires_after(server_.options.request_timeout);
    http::async_write(stream_, w->serializer,
                      [self = shared_from_this(), w](beast::error_code ec, std::size_t) {
                        if (ec == http::error::need_buffer) ec = {};
                        if (ec) return self->Close();
                        if (!w->serializer.is_done()) return self->WriteFilePiece(w);
                        if (w->keep_alive) return self->ReadHeader();
                        self->Shutdown();
                      });
  }

  void Shutdown() {
    beast::get_lowest_layer(stream_).expires_after(std::chrono::seconds(5));
    stream_.async_shutdown([self = shared_from_this()](beast::error_code) { self->Close(); });
  }

  void Close() {
    beast::error_code ec;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(stream_).close();
  }

  HttpsServer::Impl& server_;
  beast::ssl_stream<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string remote_;
  bool idle_ = false;           // waiting for the first byte of the next request
  bool idle_at_error_ = false;  // a read ended before any byte of a request arrived
};

void HttpsServer::Impl::Track(const std::shared_ptr<Session>& s) {
  std::lock_guard lock(sessions_mutex);
  sessions.remove_if([](const std::weak_ptr<Session>& w) { return w.expired(); });
  sessions.push_back(s);
}

void HttpsServer::Impl::Accept() {
  acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
    if (!ec) {
      ++connections;
      if (stopping || active >= options.max_connections) {
        beast::error_code ignored;
        socket.close(ignored);
      } else {
        ++active;
        // Answers go out at once: without this, Nagle's algorithm holds a TLS record back until
        // the peer's delayed acknowledgement (40 ms) whenever a handshake or answer takes two
        // writes.
        beast::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        auto session = std::make_shared<Session>(std::move(socket), *this);
        Track(session);
        session->Run();
      }
    }
    if (!stopping && acceptor.is_open()) Accept();
  });
}

HttpsServer::HttpsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpsServer::~HttpsServer() { Stop(std::chrono::milliseconds(0)); }

Result<std::unique_ptr<HttpsServer>> HttpsServer::Start(const HttpsOptions& options,
                                                        Handler handler) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->handler = std::move(handler);
  auto& tls = impl->tls;
  boost::system::error_code ec;
  tls.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                      ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                      ssl::context::single_dh_use,
                  ec);
  SSL_CTX* native = tls.native_handle();
  bool ok = !ec && SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) == 1;
  // Resumption (session IDs and TLS 1.3 tickets) must know which configuration a session belongs
  // to, or OpenSSL refuses to resume sessions that carried a client certificate.
  static const unsigned char kSessionContext[] = "upkeep-server";
  ok = ok &&
       SSL_CTX_set_session_id_context(native, kSessionContext, sizeof kSessionContext - 1) == 1;
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_SERVER);
  // One TLS 1.3 ticket per handshake (OpenSSL sends two by default): a device keeps one session,
  // and each ticket costs an encryption of the session, client certificate included.
  ok = ok && SSL_CTX_set_num_tickets(native, 1) == 1;
  if (!ok) return Error(Errc::InvalidTlsIdentity, "cannot configure TLS");
  tls.use_certificate_chain(asio::buffer(options.certificate_pem), ec);
  if (ec) return Error(Errc::InvalidTlsIdentity, "server certificate: " + ec.message());
  tls.use_private_key(asio::buffer(options.private_key_pem), ssl::context::pem, ec);
  if (ec) return Error(Errc::InvalidTlsIdentity, "server key: " + ec.message());
  if (!options.client_ca_pem.empty()) {
    tls.add_certificate_authority(asio::buffer(options.client_ca_pem), ec);
    if (ec) return Error(Errc::InvalidTlsIdentity, "client CA: " + ec.message());
    tls.set_verify_mode(ssl::verify_peer, ec);  // asked for, not required (enrolment has none)
    if (ec) return Error(Errc::InvalidTlsIdentity, "client verification: " + ec.message());
  }

  auto address = asio::ip::make_address(options.address, ec);
  if (ec) return Error(Errc::CannotListen, "address " + options.address + ": " + ec.message());
  const tcp::endpoint endpoint(address, options.port);
  auto& acceptor = impl->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Error(Errc::CannotListen,
                 options.address + ":" + std::to_string(options.port) + ": " + ec.message());
  }
  impl->port = acceptor.local_endpoint(ec).port();
  impl->work.emplace(impl->io.get_executor());
  impl->Accept();
  Impl* raw = impl.get();
  const unsigned n = options.threads == 0 ? 1 : options.threads;
  for (unsigned i = 0; i < n; ++i) {
    raw->threads.emplace_back([raw] {
      for (;;) {
        try {
          raw->io.run();
          return;
        } catch (const std::exception& e) {  // a handler's escape is caught per request; defence
          log::error("https: {}", e.what());
        }
      }
    });
  }
  return std::unique_ptr<HttpsServer>(new HttpsServer(std::move(impl)));
}

std::uint16_t HttpsServer::port() const { return impl_->port; }

ServerStats HttpsServer::stats() const {
  return ServerStats{impl_->connections, impl_->handshakes, impl_->resumed, impl_->requests,
                     impl_->rejected};
}

void HttpsServer::Stop(std::chrono::milliseconds grace) {
  std::lock_guard lock(impl_->stop_mutex);
  if (impl_->stopped) return;
  impl_->stopped = true;
  impl_->stopping = true;
  asio::post(impl_->io, [impl = impl_.get()] {
    beast::error_code ec;
    impl->acceptor.close(ec);
  });
  {
    std::lock_guard sessions_lock(impl_->sessions_mutex);
    for (auto& weak : impl_->sessions) {
      if (auto s = weak.lock()) s->CloseIfIdle();
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + grace;
  while (impl_->active > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  impl_->work.reset();
  impl_->io.stop();
  for (auto& t : impl_->threads) {
    if (t.joinable()) t.join();
  }
}

}  // namespace upkeep::server
