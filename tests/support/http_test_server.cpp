#include "http_test_server.hpp"

#include "upkeep/common/encoding.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace upkeep::testing {

namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kMaxEndlessBytes = 64ull << 20;
constexpr auto kMaxDrip = std::chrono::seconds(10);

bool SendAll(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

bool SendAll(int fd, const std::string& s) { return SendAll(fd, s.data(), s.size()); }

// Percent-decodes a URL path like a typical static web server (including %2F); nullopt when the
// result would leave the served directory.
std::optional<std::string> DecodePath(const std::string& target) {
  auto out = PercentDecode(target.substr(0, target.find('?')));
  if (!out) return std::nullopt;
  std::stringstream segments(*out);
  std::string segment;
  while (std::getline(segments, segment, '/')) {
    if (segment == ".." || segment == ".") return std::nullopt;
  }
  return out;
}

std::string StatusText(int status) {
  switch (status) {
    case 200: return "OK";
    case 206: return "Partial Content";
    case 302: return "Found";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 500: return "Internal Server Error";
    default: return "Status";
  }
}

std::string Head(int status, const std::vector<std::string>& headers) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + StatusText(status) + "\r\n";
  for (const auto& line : headers) h += line + "\r\n";
  h += "Connection: close\r\n\r\n";
  return h;
}

}  // namespace

HttpTestServer::HttpTestServer(fs::path root) : root_(std::move(root)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw std::runtime_error("socket failed");
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);  // 127.0.0.1 only
  addr.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 64) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error("bind/listen on 127.0.0.1 failed");
  }
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { Serve(); });
}

HttpTestServer::~HttpTestServer() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
}

std::string HttpTestServer::base_url() const {
  return "http://127.0.0.1:" + std::to_string(port_);
}

std::vector<std::string> HttpTestServer::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

void HttpTestServer::ClearRequests() {
  std::lock_guard lock(mu_);
  requests_.clear();
}

void HttpTestServer::SetFault(const std::string& path, Fault fault) {
  std::lock_guard lock(mu_);
  faults_[path] = std::move(fault);
}

void HttpTestServer::ClearFaults() {
  std::lock_guard lock(mu_);
  faults_.clear();
}

void HttpTestServer::Serve() {
  std::vector<std::thread> connections;
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    connections.emplace_back([this, fd] {
      Handle(fd);
      ::close(fd);
    });
  }
  for (auto& t : connections) t.join();
}

void HttpTestServer::Handle(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string request;
  char buf[4096];
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < 16384) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return;
    request.append(buf, static_cast<std::size_t>(n));
  }
  std::istringstream in(request);
  std::string method, target, version;
  in >> method >> target >> version;
  std::optional<std::uint64_t> range_start;
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line) && line != "\r") {
    if (line.size() > 13 && strncasecmp(line.c_str(), "range: bytes=", 13) == 0) {
      range_start = std::stoull(line.substr(13));
    }
  }
  Fault fault;
  {
    std::lock_guard lock(mu_);
    requests_.push_back(target);
    const std::string path = target.substr(0, target.find('?'));
    if (auto it = faults_.find(path); it != faults_.end()) fault = it->second;
  }
  if (method != "GET" && method != "HEAD") {
    SendAll(fd, Head(400, {"Content-Length: 0"}));
    return;
  }
  const bool head_only = method == "HEAD";
  if (fault.redirect_to) {
    SendAll(fd, Head(302, {"Location: " + *fault.redirect_to, "Content-Length: 0"}));
    return;
  }
  if (fault.status) {
    SendAll(fd, Head(*fault.status, {"Content-Length: 0"}));
    return;
  }
  if (fault.endless) {
    SendAll(fd, Head(200, {}));
    const std::string chunk(16384, 'A');
    for (std::uint64_t sent = 0; !head_only && sent < kMaxEndlessBytes && !stopping_;
         sent += chunk.size()) {
      if (!SendAll(fd, chunk)) break;
    }
    return;
  }

  auto decoded = DecodePath(target);
  const fs::path file = decoded ? root_ / fs::path(*decoded).relative_path() : fs::path();
  std::error_code ec;
  if (!decoded || !fs::is_regular_file(file, ec)) {
    SendAll(fd, Head(404, {"Content-Length: 0"}));
    return;
  }
  std::ifstream f(file, std::ios::binary);
  std::string body((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());

  int status = 200;
  std::vector<std::string> headers;
  if (range_start && *range_start < body.size()) {
    status = 206;
    headers.push_back("Content-Range: bytes " + std::to_string(*range_start) + "-" +
                      std::to_string(body.size() - 1) + "/" + std::to_string(body.size()));
    body = body.substr(*range_start);
  }
  if (!fault.omit_length) {
    headers.push_back("Content-Length: " +
                      std::to_string(fault.declared_length.value_or(body.size())));
  }
  if (!SendAll(fd, Head(status, headers)) || head_only) return;

  std::uint64_t limit = fault.drop_after.value_or(body.size());
  if (limit > body.size()) limit = body.size();
  if (fault.drip_interval) {
    const auto deadline = std::chrono::steady_clock::now() + kMaxDrip;
    for (std::uint64_t i = 0; i < limit && !stopping_; ++i) {
      if (std::chrono::steady_clock::now() > deadline) break;
      if (!SendAll(fd, body.data() + i, 1)) break;
      std::this_thread::sleep_for(*fault.drip_interval);
    }
    return;
  }
  SendAll(fd, body.data(), static_cast<std::size_t>(limit));
}

}  // namespace upkeep::testing
