// bench/checkin_load: a bounded load generator for the fleet server (bench/server.sh).
//
//   checkin_load enrol --url URL --ca PEM --model M --tokens FILE --out DIR
//     enrols one device per token (one per line) through the device API with
//     deviceapi::DeviceClient (the device's key generated here, a CSR, the server's certificate
//     checked), saves each identity under DIR/NNNNN and prints the device IDs, one per line.
//   checkin_load run --url URL --ca PEM --devices DIR --mode new-connection|kept-alive
//                    --request checkin|static [--path P] [--duration S] [--max-requests N]
//                    [--concurrency C] [--if-none-match] [--expect-body-contains TEXT]
//                    [--label TEXT]
//     runs requests with each device's own client certificate (mutual TLS), at most one request
//     in flight per device, C devices at once, until S seconds have passed or N requests were
//     made. new-connection: a TCP and TLS connection per request, the device's TLS session kept
//     and offered for resumption, as a daily-checking device does; kept-alive: one persistent
//     HTTP/1.1 connection per device. checkin: POST /api/v1/checkin with an increasing counter
//     (devices start at the run's start time in microseconds, so counters grow across runs),
//     If-None-Match with the last ETag when asked (200 and 304 are then both accepted); static:
//     GET of PATH (a web server's file, the baseline).
//     Prints "LABEL: N/s, p50 X ms, p99 Y ms" and a detail line; exit 1 when any answer had
//     another status, did not contain TEXT, or a request failed.
//
// Boost.Asio C++20 coroutines with OpenSSL on one io_context (--threads, default 1): the
// generator must not be the bottleneck on a small machine. Connects to 127.0.0.1 (or the URL's
// literal address) only; every loop is bounded by the request count and the duration.

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/main_guard.hpp"
#include "upkeep/deviceapi/client.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;

constexpr std::chrono::seconds kIoTimeout{10};
constexpr std::size_t kMaxAnswerBytes = 4 << 20;
constexpr std::uint64_t kCounterPlaceholder = 987654321987654ULL;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// https://HOST:PORT with a literal IPv4 or IPv6 address (the benchmark never resolves names).
struct Target {
  std::string host;
  unsigned short port = 0;
};

std::optional<Target> ParseUrl(const std::string& url) {
  const std::string prefix = "https://";
  if (url.rfind(prefix, 0) != 0) return std::nullopt;
  std::string rest = url.substr(prefix.size());
  if (auto slash = rest.find('/'); slash != std::string::npos) rest.resize(slash);
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos) return std::nullopt;
  Target t;
  t.host = rest.substr(0, colon);
  if (t.host.size() > 2 && t.host.front() == '[') t.host = t.host.substr(1, t.host.size() - 2);
  const std::string port = rest.substr(colon + 1);
  unsigned long p = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || p > 65535) return std::nullopt;
    p = p * 10 + static_cast<unsigned long>(c - '0');
  }
  if (port.empty() || p == 0 || p > 65535) return std::nullopt;
  t.port = static_cast<unsigned short>(p);
  return t;
}

// ------------------------------------------------------------------------------------------------
// enrol

int Enrol(const std::string& url, const std::string& ca_file, const std::string& model,
          const std::string& tokens_file, const std::string& out_dir) {
  const std::string ca = ReadFile(ca_file);
  std::ifstream tokens(tokens_file);
  upkeep::LocalFilesystem filesystem;
  std::string token;
  unsigned n = 0;
  for (; std::getline(tokens, token) && n < 1000000; ++n) {
    if (token.empty()) continue;
    upkeep::deviceapi::ServerEndpoint endpoint;
    endpoint.server_url = url;
    endpoint.server_ca_pem = ca;
    auto client = upkeep::deviceapi::DeviceClient::ForEnrolment(endpoint);
    if (!client) {
      std::cerr << "checkin_load: " << client.error().ToString() << "\n";
      return 1;
    }
    char serial[32];
    std::snprintf(serial, sizeof serial, "bench-%05u", n);
    auto identity = (*client)->Enrol(token, model, serial);
    if (!identity) {
      std::cerr << "checkin_load: enrolling device " << n << ": " << identity.error().ToString()
                << "\n";
      return 1;
    }
    char name[16];
    std::snprintf(name, sizeof name, "%05u", n);
    if (auto r = upkeep::deviceapi::SaveIdentity(filesystem, fs::path(out_dir) / name, *identity);
        !r) {
      std::cerr << "checkin_load: " << r.error().ToString() << "\n";
      return 1;
    }
    std::cout << identity->device_id << "\n";
  }
  return 0;
}

// ------------------------------------------------------------------------------------------------
// run

struct RunOptions {
  std::string url;
  std::string ca_file;
  std::string devices_dir;
  std::string mode = "new-connection";
  std::string request = "checkin";
  std::string path = "/api/v1/checkin";
  std::string label = "checkin_load";
  std::string expect_body_contains;
  double duration = 10;
  std::uint64_t max_requests = 1000000;
  unsigned concurrency = 8;
  unsigned threads = 1;
  bool if_none_match = false;
  bool warm_up = false;    // one unmeasured request per device first (TLS sessions, first signing)
  bool no_resume = false;  // never offer a TLS session: every new connection a full handshake
};

using Stream = beast::ssl_stream<beast::tcp_stream>;

struct Device {
  std::string id;
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
  SSL_SESSION* session = nullptr;  // the last resumable session
  std::string etag;
  std::uint64_t counter = 0;
  std::unique_ptr<Stream> conn;  // kept-alive: the open connection
  beast::flat_buffer buffer;
  ~Device() {
    if (session != nullptr) SSL_SESSION_free(session);
    if (key != nullptr) EVP_PKEY_free(key);
    if (cert != nullptr) X509_free(cert);
  }
};

struct Shared {
  Shared(const RunOptions& o, ssl::context& context, tcp::endpoint e)
      : options(o), tls(context), endpoint(std::move(e)) {}
  const RunOptions& options;
  ssl::context& tls;
  tcp::endpoint endpoint;
  std::string host_header;
  std::string body_prefix, body_suffix;  // the check-in body around the counter
  SteadyClock::time_point deadline;
  std::atomic<std::uint64_t> started{0};
  std::atomic<bool> failed{false};
  bool recording = true;  // false during the warm-up (set before the workers run)
  std::mutex mutex;       // guards everything below
  std::vector<std::uint32_t> latencies_us;
  std::map<unsigned, std::uint64_t> statuses;
  std::uint64_t connections = 0, resumed = 0, reconnects = 0;
  std::uint64_t answer_bytes = 0;
  SteadyClock::time_point last_done;
  std::string first_failure;

  void Fail(const std::string& what) {
    std::lock_guard lock(mutex);
    if (first_failure.empty()) first_failure = what;
    failed = true;
  }
};

bool LoadDevice(const fs::path& dir, Device& d, std::string& error) {
  upkeep::LocalFilesystem filesystem;
  auto identity = upkeep::deviceapi::LoadIdentity(filesystem, dir);
  if (!identity) {
    error = identity.error().ToString();
    return false;
  }
  d.id = identity->device_id;
  BIO* cb = BIO_new_mem_buf(identity->certificate_pem.data(),
                            static_cast<int>(identity->certificate_pem.size()));
  d.cert = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
  BIO_free(cb);
  BIO* kb = BIO_new_mem_buf(identity->private_key_pem.data(),
                            static_cast<int>(identity->private_key_pem.size()));
  d.key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
  BIO_free(kb);
  if (d.cert == nullptr || d.key == nullptr) {
    error = "unusable certificate or key in " + dir.string();
    return false;
  }
  return true;
}

// One request for one device: connects (and handshakes) when there is no open connection.
asio::awaitable<void> OneRequest(Shared& s, Device& d, bool keep) {
  const auto t0 = SteadyClock::now();
  bool reused_connection = d.conn != nullptr;
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      if (!d.conn) {
        auto executor = co_await asio::this_coro::executor;
        d.conn = std::make_unique<Stream>(executor, s.tls);
        d.buffer.clear();
        SSL* native = d.conn->native_handle();
        SSL_use_certificate(native, d.cert);
        SSL_use_PrivateKey(native, d.key);
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(native),
                                      s.endpoint.address().to_string().c_str());
        if (d.session != nullptr && !s.options.no_resume) SSL_set_session(native, d.session);
        auto& lowest = beast::get_lowest_layer(*d.conn);
        lowest.expires_after(kIoTimeout);
        co_await lowest.async_connect(s.endpoint, asio::use_awaitable);
        lowest.socket().set_option(tcp::no_delay(true));
        co_await d.conn->async_handshake(ssl::stream_base::client, asio::use_awaitable);
        const bool resumed = SSL_session_reused(native) == 1;
        std::lock_guard lock(s.mutex);
        if (s.recording) {
          ++s.connections;
          if (resumed) ++s.resumed;
        }
      }
      http::request<http::string_body> req;
      req.version(11);
      req.target(s.options.path);
      req.set(http::field::host, s.host_header);
      req.set(http::field::user_agent, "upkeep-checkin-load");
      if (s.options.request == "checkin") {
        req.method(http::verb::post);
        req.set(http::field::content_type, "application/json");
        req.body() = s.body_prefix + std::to_string(++d.counter) + s.body_suffix;
        if (s.options.if_none_match && !d.etag.empty()) req.set(http::field::if_none_match, d.etag);
      } else {
        req.method(http::verb::get);
      }
      req.keep_alive(keep);
      req.prepare_payload();
      beast::get_lowest_layer(*d.conn).expires_after(kIoTimeout);
      co_await http::async_write(*d.conn, req, asio::use_awaitable);
      http::response_parser<http::string_body> parser;
      parser.body_limit(kMaxAnswerBytes);
      co_await http::async_read(*d.conn, d.buffer, parser, asio::use_awaitable);
      const auto t1 = SteadyClock::now();
      auto& res = parser.get();
      const unsigned status = res.result_int();
      std::string failure;
      const bool may_304 = s.options.if_none_match && !d.etag.empty() &&
                           req.find(http::field::if_none_match) != req.end();
      if (status == 200) {
        if (!s.options.expect_body_contains.empty() &&
            res.body().find(s.options.expect_body_contains) == std::string::npos) {
          failure = "a 200 answer without \"" + s.options.expect_body_contains + "\"";
        }
        if (auto etag = res.find(http::field::etag); etag != res.end()) {
          d.etag = std::string(etag->value());
        }
      } else if (!(status == 304 && may_304)) {
        failure = "status " + std::to_string(status) + ": " + res.body().substr(0, 300);
      }
      // Keep the newest resumable session (TLS 1.3 tickets arrive after the handshake).
      SSL* native = d.conn->native_handle();
      if (SSL_SESSION* session = SSL_get1_session(native); session != nullptr) {
        if (SSL_SESSION_is_resumable(session) == 1) {
          if (d.session != nullptr) SSL_SESSION_free(d.session);
          d.session = session;
        } else {
          SSL_SESSION_free(session);
        }
      }
      const bool close = !keep || !res.keep_alive();
      if (close) {
        // A device that is done closes the connection; marking it shut down keeps the session
        // resumable in OpenSSL (an unclean close would drop it).
        SSL_set_shutdown(native, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        beast::error_code ignored;
        beast::get_lowest_layer(*d.conn).socket().shutdown(tcp::socket::shutdown_both, ignored);
        beast::get_lowest_layer(*d.conn).close();
        d.conn.reset();
      }
      if (s.recording) {
        std::lock_guard lock(s.mutex);
        ++s.statuses[status];
        s.answer_bytes += res.body().size();
        s.latencies_us.push_back(static_cast<std::uint32_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0).count()));
        s.last_done = t1;
      }
      if (!failure.empty()) s.Fail(d.id + ": " + failure);
      co_return;
    } catch (const std::exception& e) {
      d.conn.reset();
      // A kept-alive connection the server closed while idle: connect again, once.
      if (reused_connection && attempt == 0) {
        reused_connection = false;
        std::lock_guard lock(s.mutex);
        if (s.recording) ++s.reconnects;
        continue;
      }
      s.Fail(d.id + ": " + e.what());
      co_return;
    }
  }
}

// Worker w serves devices w, w + C, w + 2C, ... in turn: one request in flight per device.
asio::awaitable<void> Worker(Shared& s, std::vector<Device*> devices) {
  const bool keep = s.options.mode == "kept-alive";
  for (std::size_t i = 0; !devices.empty(); ++i) {
    if (s.failed || SteadyClock::now() >= s.deadline) break;
    if (s.started.fetch_add(1) >= s.options.max_requests) break;
    co_await OneRequest(s, *devices[i % devices.size()], keep);
  }
  for (Device* d : devices) {
    if (d->conn) {
      SSL_set_shutdown(d->conn->native_handle(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
      beast::get_lowest_layer(*d->conn).close();
      d->conn.reset();
    }
  }
}

// The warm-up: one request per device, then the connection closed (the session kept).
asio::awaitable<void> WarmUp(Shared& s, std::vector<Device*> devices) {
  for (Device* d : devices) {
    if (s.failed) break;
    co_await OneRequest(s, *d, false);
  }
}

double Percentile(const std::vector<std::uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const std::size_t i =
      std::min(sorted.size() - 1, static_cast<std::size_t>(p * static_cast<double>(sorted.size())));
  return sorted[i] / 1000.0;
}

int Run(const RunOptions& o) {
  const auto target = ParseUrl(o.url);
  if (!target) {
    std::cerr << "checkin_load: --url must be https://ADDRESS:PORT\n";
    return 2;
  }
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(target->host, ec);
  if (ec) {
    std::cerr << "checkin_load: --url needs a literal IP address\n";
    return 2;
  }
  // The devices, in directory order.
  std::vector<fs::path> dirs;
  std::error_code fec;
  for (const auto& entry : fs::directory_iterator(o.devices_dir, fec)) {
    if (entry.is_directory(fec)) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  if (dirs.empty()) {
    std::cerr << "checkin_load: no device identities in " << o.devices_dir << "\n";
    return 2;
  }
  std::vector<std::unique_ptr<Device>> devices;
  const auto base =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  for (const auto& dir : dirs) {
    auto d = std::make_unique<Device>();
    std::string error;
    if (!LoadDevice(dir, *d, error)) {
      std::cerr << "checkin_load: " << error << "\n";
      return 2;
    }
    d->counter = base;
    devices.push_back(std::move(d));
  }

  ssl::context tls(ssl::context::tls_client);
  tls.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                  ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  SSL_CTX_set_min_proto_version(tls.native_handle(), TLS1_2_VERSION);
  const std::string ca = ReadFile(o.ca_file);
  tls.add_certificate_authority(asio::buffer(ca), ec);
  if (ec) {
    std::cerr << "checkin_load: --ca: " << ec.message() << "\n";
    return 2;
  }
  tls.set_verify_mode(ssl::verify_peer);

  Shared s(o, tls, tcp::endpoint(address, target->port));
  s.host_header = o.url.substr(std::string("https://").size());
  if (auto slash = s.host_header.find('/'); slash != std::string::npos) s.host_header.resize(slash);
  if (o.request == "checkin") {
    upkeep::deviceapi::CheckInRequest req;
    req.counter = kCounterPlaceholder;
    req.model = "bench-dev";
    req.hardware = "bench-dev";
    req.components["rootfs"] = {"1.0", "rootfs/1.0.payload", 1};
    auto body = upkeep::deviceapi::CheckInRequestJson(req);
    if (!body) {
      std::cerr << "checkin_load: " << body.error().ToString() << "\n";
      return 2;
    }
    const std::string placeholder = std::to_string(kCounterPlaceholder);
    const auto at = body->find(placeholder);
    if (at == std::string::npos) {
      std::cerr << "checkin_load: cannot place the counter in the check-in body\n";
      return 2;
    }
    s.body_prefix = body->substr(0, at);
    s.body_suffix = body->substr(at + placeholder.size());
  }
  s.latencies_us.reserve(
      static_cast<std::size_t>(std::min<std::uint64_t>(o.max_requests, 1 << 24)));

  asio::io_context io(static_cast<int>(o.threads));
  const unsigned workers =
      std::max(1u, static_cast<unsigned>(std::min<std::size_t>(o.concurrency, devices.size())));
  std::vector<std::vector<Device*>> shares(workers);
  for (std::size_t i = 0; i < devices.size(); ++i) shares[i % workers].push_back(devices[i].get());
  if (o.warm_up) {
    s.recording = false;
    s.deadline = SteadyClock::now() + std::chrono::seconds(600);
    for (auto& share : shares) {
      asio::co_spawn(asio::make_strand(io), WarmUp(s, share), [&s](std::exception_ptr e) {
        if (e) s.Fail("a warm-up worker stopped on an exception");
      });
    }
    io.run();
    io.restart();
    s.recording = true;
    if (s.failed) {
      std::fprintf(stderr, "checkin_load: %s: warm-up FAILED: %s\n", o.label.c_str(),
                   s.first_failure.c_str());
      return 1;
    }
  }
  const auto start = SteadyClock::now();
  s.deadline = start + std::chrono::duration_cast<SteadyClock::duration>(
                           std::chrono::duration<double>(o.duration));
  s.last_done = start;
  for (auto& share : shares) {
    asio::co_spawn(asio::make_strand(io), Worker(s, share), [&s](std::exception_ptr e) {
      if (e) s.Fail("a worker stopped on an exception");
    });
  }
  std::vector<std::thread> threads;
  for (unsigned t = 1; t < o.threads; ++t) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();

  std::sort(s.latencies_us.begin(), s.latencies_us.end());
  const double elapsed = std::chrono::duration<double>(s.last_done - start).count();
  const std::size_t n = s.latencies_us.size();
  const double rate = elapsed > 0 ? static_cast<double>(n) / elapsed : 0;
  std::printf("%s: %.0f/s, p50 %.2f ms, p99 %.2f ms\n", o.label.c_str(), rate,
              Percentile(s.latencies_us, 0.50), Percentile(s.latencies_us, 0.99));
  std::string statuses;
  for (const auto& [status, count] : s.statuses) {
    statuses +=
        (statuses.empty() ? "" : " ") + std::to_string(status) + "x" + std::to_string(count);
  }
  std::printf(
      "    %zu requests in %.2f s from %zu devices, %u in flight; %llu connections (%llu resumed, "
      "%llu reconnects); answers %s, %.0f bytes on average\n",
      n, elapsed, devices.size(), workers, static_cast<unsigned long long>(s.connections),
      static_cast<unsigned long long>(s.resumed), static_cast<unsigned long long>(s.reconnects),
      statuses.c_str(), n > 0 ? static_cast<double>(s.answer_bytes) / static_cast<double>(n) : 0.0);
  // The generator's own CPU time: near `elapsed` per thread means it may be the bottleneck.
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double cpu = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                     static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  std::printf("    load generator CPU %.2f s (%.0f%% of %u thread%s)\n", cpu,
              elapsed > 0 ? 100.0 * cpu / (elapsed * o.threads) : 0.0, o.threads,
              o.threads == 1 ? "" : "s");
  if (s.failed || n == 0) {
    std::fprintf(stderr, "checkin_load: %s: FAILED: %s\n", o.label.c_str(),
                 s.first_failure.empty() ? "no request completed" : s.first_failure.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return upkeep::GuardMain("checkin_load", std::cerr, 3, [&] {
    CLI::App app("load generator for the fleet server's device API (bench/server.sh)");
    app.require_subcommand(1);
    std::string url, ca, model = "bench-dev", tokens, out;
    auto* enrol = app.add_subcommand("enrol", "enrol one device per token");
    enrol->add_option("--url", url, "server base URL https://ADDRESS:PORT")->required();
    enrol->add_option("--ca", ca, "CA certificate (PEM) of the server")->required();
    enrol->add_option("--model", model, "device model the tokens were made for");
    enrol->add_option("--tokens", tokens, "file with one enrolment token per line")->required();
    enrol->add_option("--out", out, "directory for the identities")->required();
    RunOptions o;
    auto* run = app.add_subcommand("run", "run check-ins or static GETs");
    run->add_option("--url", o.url, "server base URL https://ADDRESS:PORT")->required();
    run->add_option("--ca", o.ca_file, "CA certificate (PEM) of the server")->required();
    run->add_option("--devices", o.devices_dir, "directory of identities (from enrol)")->required();
    run->add_option("--mode", o.mode, "new-connection or kept-alive")
        ->check(CLI::IsMember({"new-connection", "kept-alive"}));
    run->add_option("--request", o.request, "checkin or static")
        ->check(CLI::IsMember({"checkin", "static"}));
    run->add_option("--path", o.path, "request path");
    run->add_option("--label", o.label, "label of the result line");
    run->add_option("--duration", o.duration, "seconds (bound)")->check(CLI::Range(0.1, 3600.0));
    run->add_option("--max-requests", o.max_requests, "requests (bound)")
        ->check(CLI::Range(1, 100000000));
    run->add_option("--concurrency", o.concurrency, "devices with a request in flight")
        ->check(CLI::Range(1, 10000));
    run->add_option("--threads", o.threads, "threads running the io_context")
        ->check(CLI::Range(1, 64));
    run->add_flag("--warm-up", o.warm_up,
                  "one unmeasured request per device first (its TLS session, first signing)");
    run->add_flag("--no-resume", o.no_resume, "never resume a TLS session (full handshakes)");
    run->add_flag("--if-none-match", o.if_none_match, "send the last ETag (200 or 304 accepted)");
    run->add_option("--expect-body-contains", o.expect_body_contains,
                    "every 200 answer must contain this text");
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    if (enrol->parsed()) return Enrol(url, ca, model, tokens, out);
    return Run(o);
  });
}
