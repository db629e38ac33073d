#include "http_test_server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>

#include "upkeep/common/encoding.hpp"

namespace upkeep::testing {

namespace fs = std::filesystem;

namespace {

constexpr std::uint64_t kMaxStreamBytes = 64ull << 20;     // endless bodies stop here
constexpr auto kMaxStreamTime = std::chrono::seconds(10);  // endless and dripping bodies too
constexpr std::size_t kMaxRequestHead = 16384;
constexpr std::size_t kPiece = 64 * 1024;

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

bool SendAll(int fd, std::string_view s) { return SendAll(fd, s.data(), s.size()); }

// Percent-decodes a URL path like a typical static web server (including %2F); nullopt when the
// result would leave the served directory.
std::optional<std::string> DecodePath(const std::string& target) {
  if (!target.starts_with('/')) return std::nullopt;
  auto out = PercentDecode(target.substr(0, target.find('?')));
  if (!out || out->find('\0') != std::string::npos) return std::nullopt;
  std::stringstream segments(*out);
  std::string segment;
  while (std::getline(segments, segment, '/')) {
    if (segment == ".." || segment == ".") return std::nullopt;
  }
  return out;
}

std::string StatusText(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 416:
      return "Range Not Satisfiable";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Status";
  }
}

std::string Head(int status, const std::vector<std::string>& headers) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + StatusText(status) + "\r\n";
  for (const auto& line : headers) h += line + "\r\n";
  h += "Connection: close\r\n\r\n";
  return h;
}

// A response without a file behind it. The small body is an error page a client must not take
// for the file it asked for.
void SendSimple(int fd, bool head_only, int status, std::vector<std::string> headers = {}) {
  const std::string body =
      "<html><body>" + std::to_string(status) + " " + StatusText(status) + "</body></html>\n";
  headers.push_back("Content-Type: text/html");
  headers.push_back("Content-Length: " + std::to_string(body.size()));
  std::string response = Head(status, headers);
  if (!head_only) response += body;
  SendAll(fd, response);
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

std::optional<std::uint64_t> ParseNumber(std::string_view s) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// "bytes=N-" or "bytes=N-M"; anything else (suffix ranges, several ranges) is ignored, which
// RFC 9110 allows: the whole file is served with 200.
struct ByteRange {
  std::uint64_t first = 0;
  std::optional<std::uint64_t> last;
};
std::optional<ByteRange> ParseRange(std::string_view value) {
  if (!value.starts_with("bytes=")) return std::nullopt;
  value.remove_prefix(6);
  const auto dash = value.find('-');
  if (dash == std::string_view::npos || value.find(',') != std::string_view::npos) {
    return std::nullopt;
  }
  auto first = ParseNumber(Trim(value.substr(0, dash)));
  if (!first) return std::nullopt;
  ByteRange r{*first, std::nullopt};
  const std::string_view last = Trim(value.substr(dash + 1));
  if (!last.empty()) {
    r.last = ParseNumber(last);
    if (!r.last || *r.last < r.first) return std::nullopt;
  }
  return r;
}

struct Request {
  std::string method;
  std::string target;
  std::optional<std::string> range;
};

// Reads and parses the request head; nullopt when the client sent none.
std::optional<Request> ReadRequest(int fd) {
  std::string head;
  char buf[4096];
  while (head.find("\r\n\r\n") == std::string::npos && head.size() < kMaxRequestHead) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return std::nullopt;
    head.append(buf, static_cast<std::size_t>(n));
  }
  std::istringstream in(head);
  Request r;
  std::string version;
  in >> r.method >> r.target >> version;
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line) && line != "\r" && !line.empty()) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    if (Lower(Trim(line.substr(0, colon))) == "range") {
      r.range = std::string(Trim(std::string_view(line).substr(colon + 1)));
    }
  }
  return r;
}

// Writes a body either raw or as HTTP/1.1 chunks.
class BodyWriter {
 public:
  BodyWriter(int fd, bool chunked) : fd_(fd), chunked_(chunked) {}
  bool Write(const char* data, std::size_t size) {
    if (size == 0) return true;
    if (chunked_) {
      std::ostringstream size_line;
      size_line << std::hex << size << "\r\n";
      if (!SendAll(fd_, size_line.str())) return false;
    }
    if (!SendAll(fd_, data, size)) return false;
    return !chunked_ || SendAll(fd_, "\r\n");
  }
  bool Finish() { return !chunked_ || SendAll(fd_, "0\r\n\r\n"); }

 private:
  int fd_;
  bool chunked_;
};

}  // namespace

HttpTestServer::HttpTestServer(fs::path root) : root_(std::move(root)) {
  if (::pipe2(wake_pipe_, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) {
    ::close(wake_pipe_[0]);
    ::close(wake_pipe_[1]);
    throw std::runtime_error("socket failed");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);  // 127.0.0.1 only
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 64) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(listen_fd_);
    ::close(wake_pipe_[0]);
    ::close(wake_pipe_[1]);
    throw std::runtime_error("bind/listen on 127.0.0.1 failed");
  }
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { Serve(); });
}

HttpTestServer::~HttpTestServer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  const char byte = 0;
  while (::write(wake_pipe_[1], &byte, 1) < 0 && errno == EINTR) {
  }
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
  ::close(wake_pipe_[0]);
  ::close(wake_pipe_[1]);
}

std::string HttpTestServer::base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

std::vector<std::string> HttpTestServer::requests() const {
  std::lock_guard lock(mu_);
  return requests_;
}

void HttpTestServer::ClearRequests() {
  std::lock_guard lock(mu_);
  requests_.clear();
  ranges_.clear();
}

std::vector<std::string> HttpTestServer::ranges() const {
  std::lock_guard lock(mu_);
  return ranges_;
}

void HttpTestServer::SetFault(const std::string& path, Fault fault) {
  std::lock_guard lock(mu_);
  faults_[path] = std::move(fault);
}

void HttpTestServer::ClearFaults() {
  std::lock_guard lock(mu_);
  faults_.clear();
}

bool HttpTestServer::SleepUnlessStopping(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return !stop_cv_.wait_for(lock, d, [this] { return stopping(); });
}

void HttpTestServer::CloseConnection(int fd) {
  // Under mu_, so that the accept thread never shuts down a descriptor number already reused.
  std::lock_guard lock(mu_);
  open_fds_.erase(fd);
  ::close(fd);
}

void HttpTestServer::Serve() {
  const auto reap = [this](bool all) {
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (all || (*it)->done) {
        (*it)->thread.join();
        it = connections_.erase(it);
      } else {
        ++it;
      }
    }
  };
  while (!stopping()) {
    reap(false);
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (::poll(p, 2, 200) <= 0 || (p[0].revents & POLLIN) == 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // e.g. out of descriptors
      }
      continue;
    }
    {
      std::lock_guard lock(mu_);
      open_fds_.insert(fd);
    }
    auto conn = std::make_unique<Connection>();
    conn->fd = fd;
    Connection* c = conn.get();
    conn->thread = std::thread([this, c] {
      try {
        Handle(c->fd);
      } catch (const std::exception&) {
        // A test helper must not take the test binary down; the client sees a closed connection.
      }
      CloseConnection(c->fd);
      c->done = true;
    });
    connections_.push_back(std::move(conn));
  }
  {
    // Interrupt blocked reads and writes (a client that went quiet, a full send buffer).
    std::lock_guard lock(mu_);
    for (const int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
  }
  reap(true);
}

void HttpTestServer::Handle(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const auto request = ReadRequest(fd);
  if (!request) return;
  Fault fault;
  {
    std::lock_guard lock(mu_);
    requests_.push_back(request->target);
    ranges_.push_back(request->range.value_or(""));
    const std::string path = request->target.substr(0, request->target.find('?'));
    if (auto it = faults_.find(path); it != faults_.end()) {
      if (!it->second.times || *it->second.times > 0) fault = it->second;
      if (it->second.times && *it->second.times > 0) --*it->second.times;
    }
  }
  if (request->method != "GET" && request->method != "HEAD") {
    SendSimple(fd, false, 405, {"Allow: GET, HEAD"});
    return;
  }
  const bool head_only = request->method == "HEAD";
  if (fault.redirect_to) {
    SendSimple(fd, head_only, 302, {"Location: " + *fault.redirect_to});
    return;
  }
  if (fault.status) {
    SendSimple(fd, head_only, *fault.status);
    return;
  }
  const auto started = std::chrono::steady_clock::now();
  const auto out_of_time = [&] {
    return stopping() || std::chrono::steady_clock::now() - started > kMaxStreamTime;
  };
  if (fault.endless) {
    std::vector<std::string> headers = {"Content-Type: application/octet-stream"};
    if (fault.chunked) headers.emplace_back("Transfer-Encoding: chunked");
    if (!SendAll(fd, Head(200, headers)) || head_only) return;
    BodyWriter body(fd, fault.chunked);
    const std::string piece(16384, 'A');
    for (std::uint64_t sent = 0; sent < kMaxStreamBytes && !out_of_time(); sent += piece.size()) {
      if (!body.Write(piece.data(), piece.size())) break;
    }
    return;  // never a proper end: the connection just closes
  }

  const auto decoded = DecodePath(request->target);
  const fs::path file = decoded ? root_ / fs::path(*decoded).relative_path() : fs::path();
  std::error_code ec;
  std::ifstream in;
  std::uint64_t size = 0;
  if (decoded && fs::is_regular_file(file, ec)) {
    size = fs::file_size(file, ec);
    if (!ec) in.open(file, std::ios::binary);
  }
  if (!in.is_open()) {
    SendSimple(fd, head_only, 404);
    return;
  }

  int status = 200;
  std::uint64_t first = 0;
  std::uint64_t count = size;
  std::vector<std::string> headers = {"Content-Type: application/octet-stream",
                                      "Accept-Ranges: bytes"};
  if (const auto range = request->range ? ParseRange(*request->range) : std::nullopt) {
    if (range->first >= size) {
      SendSimple(fd, head_only, 416, {"Content-Range: bytes */" + std::to_string(size)});
      return;
    }
    const std::uint64_t last = std::min(range->last.value_or(size - 1), size - 1);
    status = 206;
    first = range->first;
    count = last - first + 1;
    headers.push_back("Content-Range: bytes " + std::to_string(first) + "-" + std::to_string(last) +
                      "/" + std::to_string(size));
  }
  if (fault.chunked) {
    headers.emplace_back("Transfer-Encoding: chunked");
  } else if (!fault.omit_length) {
    headers.push_back("Content-Length: " + std::to_string(fault.declared_length.value_or(count)));
  }
  if (!SendAll(fd, Head(status, headers)) || head_only) return;

  in.seekg(static_cast<std::streamoff>(first));
  const std::uint64_t limit = std::min(count, fault.drop_after.value_or(count));
  BodyWriter body(fd, fault.chunked);
  std::vector<char> buf(kPiece);
  std::uint64_t sent = 0;
  while (sent < limit) {
    const bool dripping = fault.drip_interval && sent >= fault.drip_after;
    std::uint64_t want = std::min<std::uint64_t>(limit - sent, kPiece);
    if (fault.drip_interval && !dripping) want = std::min(want, fault.drip_after - sent);
    if (dripping) want = 1;
    in.read(buf.data(), static_cast<std::streamsize>(want));
    const auto got = static_cast<std::size_t>(in.gcount());
    if (got == 0 || !body.Write(buf.data(), got)) return;
    sent += got;
    body_bytes_sent_ += got;
    if (dripping && (out_of_time() || !SleepUnlessStopping(*fault.drip_interval))) return;
  }
  if (sent == count) body.Finish();  // a dropped connection gets no final chunk
}

}  // namespace upkeep::testing
