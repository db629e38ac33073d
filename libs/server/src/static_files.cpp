// Static files beneath one directory (the image repository): strict paths, openat2
// RESOLVE_BENEATH, conditional requests and single byte ranges; the body is streamed by the
// HTTPS front end from the open file.

#include "upkeep/server/static_files.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <vector>

#include "upkeep/common/log.hpp"

namespace upkeep::server {

namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Response Fail(unsigned status, const char* code, const char* message) {
  Response r;
  r.status = status;
  r.body = std::string("{\"error\":\"") + code + "\",\"message\":\"" + message + "\"}";
  return r;
}

Response Refusal(unsigned status) {
  switch (status) {
    case 400:
      return Fail(400, "bad_request", "the path is not allowed");
    case 405: {
      Response r = Fail(405, "method_not_allowed", "use GET or HEAD");
      r.headers.emplace_back("Allow", "GET, HEAD");
      return r;
    }
    case 503:
      return Fail(503, "unavailable", "the file cannot be read now; retry later");
    default:
      return Fail(404, "not_found", "no such file");
  }
}

constexpr std::array<const char*, 7> kDays = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr std::array<const char*, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

std::string Hex(std::uint64_t v) {
  std::array<char, 32> buf{};
  const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v, 16);
  return ec == std::errc() ? std::string(buf.data(), end) : std::string("0");
}

// The entity tags in an If-None-Match value match `etag` (weak comparison, RFC 9110 13.1.2).
bool NoneMatchHits(std::string_view header, std::string_view etag) {
  std::size_t pos = 0;
  while (pos < header.size()) {
    std::size_t comma = header.find(',', pos);
    if (comma == std::string_view::npos) comma = header.size();
    std::string_view tag = header.substr(pos, comma - pos);
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
    if (tag == "*") return true;
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    if (tag == etag) return true;
    pos = comma + 1;
  }
  return false;
}

bool ParseUint(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 19) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

// One byte range of a file of `size` bytes.
struct ByteRange {
  enum Kind { kNone, kSatisfiable, kUnsatisfiable } kind = kNone;
  std::uint64_t first = 0;
  std::uint64_t length = 0;
};

// Range: bytes=A-B | A- | -N (one range). Another unit or several ranges: ignored (the whole
// file, RFC 9110 14.2 lets a server do so). A malformed bytes range or one starting past the
// end: unsatisfiable.
ByteRange ParseRange(std::string_view header, std::uint64_t size) {
  ByteRange r;
  constexpr std::string_view kUnit = "bytes=";
  if (header.size() < kUnit.size()) return r;
  for (std::size_t i = 0; i < kUnit.size(); ++i) {
    const char c = header[i];
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != kUnit[i]) return r;
  }
  std::string_view spec = header.substr(kUnit.size());
  while (!spec.empty() && spec.front() == ' ') spec.remove_prefix(1);
  while (!spec.empty() && spec.back() == ' ') spec.remove_suffix(1);
  if (spec.find(',') != std::string_view::npos) return r;
  r.kind = ByteRange::kUnsatisfiable;
  const std::size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return r;
  const std::string_view a = spec.substr(0, dash);
  const std::string_view b = spec.substr(dash + 1);
  std::uint64_t first = 0, last = 0;
  if (a.empty()) {  // the last N bytes
    if (!ParseUint(b, last) || last == 0 || size == 0) return r;
    r.length = std::min(last, size);
    r.first = size - r.length;
  } else {
    if (!ParseUint(a, first) || first >= size) return r;
    if (b.empty()) {
      last = size - 1;
    } else if (!ParseUint(b, last) || last < first) {
      return r;
    }
    last = std::min(last, size - 1);
    r.first = first;
    r.length = last - first + 1;
  }
  r.kind = ByteRange::kSatisfiable;
  return r;
}

}  // namespace

StaticPath CheckStaticPath(std::string_view encoded) {
  StaticPath out;
  std::string decoded;
  decoded.reserve(encoded.size());
  for (std::size_t i = 0; i < encoded.size(); ++i) {
    char c = encoded[i];
    if (c == '%') {
      if (i + 2 >= encoded.size() || HexDigit(encoded[i + 1]) < 0 || HexDigit(encoded[i + 2]) < 0) {
        out.refusal = 400;
        return out;
      }
      c = static_cast<char>(HexDigit(encoded[i + 1]) * 16 + HexDigit(encoded[i + 2]));
      i += 2;
    }
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '\\') {
      out.refusal = 400;
      return out;
    }
    decoded.push_back(c);
  }
  if (decoded.empty()) {
    out.refusal = 404;  // the directory itself: no listings
    return out;
  }
  std::size_t start = 0;
  bool hidden = false;
  for (;;) {
    const std::size_t slash = decoded.find('/', start);
    const std::string_view segment =
        std::string_view(decoded).substr(start, slash == std::string::npos ? slash : slash - start);
    // Empty segments include a leading '/' (an absolute path) and "a//b".
    if (segment.empty() || segment == "." || segment == "..") {
      out.refusal = 400;
      return out;
    }
    if (segment.front() == '.') hidden = true;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  if (hidden) {
    out.refusal = 404;
    return out;
  }
  out.relative = std::move(decoded);
  return out;
}

std::string FormatHttpDate(std::int64_t unix_seconds) {
  std::tm tm{};
  const auto t = static_cast<std::time_t>(unix_seconds);
  if (gmtime_r(&t, &tm) == nullptr) return {};
  std::array<char, 40> buf{};
  const int n = std::snprintf(buf.data(), buf.size(), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                              kDays[static_cast<std::size_t>(tm.tm_wday) % 7], tm.tm_mday,
                              kMonths[static_cast<std::size_t>(tm.tm_mon) % 12], tm.tm_year + 1900,
                              tm.tm_hour, tm.tm_min, tm.tm_sec);
  return n > 0 ? std::string(buf.data(), static_cast<std::size_t>(n)) : std::string();
}

std::optional<std::int64_t> ParseHttpDate(std::string_view s) {
  // "Sun, 06 Nov 1994 08:49:37 GMT"
  if (s.size() != 29 || s.substr(3, 2) != ", " || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
      s[19] != ':' || s[22] != ':' || s.substr(25) != " GMT") {
    return std::nullopt;
  }
  auto number = [&](std::size_t pos, std::size_t len, int& out) {
    std::uint64_t v = 0;
    if (!ParseUint(s.substr(pos, len), v)) return false;
    out = static_cast<int>(v);
    return true;
  };
  std::tm tm{};
  int month = -1;
  for (std::size_t i = 0; i < kMonths.size(); ++i) {
    if (s.substr(8, 3) == kMonths[i]) month = static_cast<int>(i);
  }
  int year = 0;
  if (month < 0 || !number(5, 2, tm.tm_mday) || !number(12, 4, year) ||
      !number(17, 2, tm.tm_hour) || !number(20, 2, tm.tm_min) || !number(23, 2, tm.tm_sec)) {
    return std::nullopt;
  }
  tm.tm_mon = month;
  tm.tm_year = year - 1900;
  if (tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60) {
    return std::nullopt;
  }
  return static_cast<std::int64_t>(timegm(&tm));
}

Result<std::unique_ptr<StaticFiles>> StaticFiles::Create(const std::string& directory,
                                                         std::string url_prefix) {
  if (url_prefix.empty() || url_prefix.front() != '/' || url_prefix.back() != '/') {
    return Error(Errc::InvalidConfig, "static files: the URL prefix must start and end with '/'");
  }
  UniqueFd root(::open(directory.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (root.get() < 0) {
    return Error(Errc::InvalidConfig,
                 "repository directory " + directory + ": " + std::strerror(errno));
  }
  return std::unique_ptr<StaticFiles>(new StaticFiles(std::move(root), std::move(url_prefix)));
}

UniqueFd StaticFiles::Open(const std::string& relative, unsigned& refusal) const {
  refusal = 404;
  constexpr std::uint64_t kFileFlags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  open_how how{};
  how.flags = kFileFlags;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  long fd = -1;  // NOLINT(google-runtime-int): syscall(2)'s type
  do {
    fd = ::syscall(SYS_openat2, root_.get(), relative.c_str(), &how, sizeof how);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0 && (errno == ENOSYS || errno == EPERM)) {
    // No openat2: walk the path one segment at a time and follow no symbolic link at all.
    UniqueFd dir;
    int at = root_.get();
    std::size_t start = 0;
    for (;;) {
      const std::size_t slash = relative.find('/', start);
      const std::string segment =
          relative.substr(start, slash == std::string::npos ? slash : slash - start);
      if (slash == std::string::npos) {
        fd = ::openat(at, segment.c_str(), static_cast<int>(kFileFlags) | O_NOFOLLOW);
        break;
      }
      UniqueFd next(::openat(at, segment.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (next.get() < 0) return UniqueFd();
      dir = std::move(next);
      at = dir.get();
      start = slash + 1;
    }
  }
  if (fd < 0) {
    if (errno == EXDEV || errno == ELOOP) {
      log::warn("static files: refused {}: it leads out of the directory", relative);
    } else if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
      refusal = 503;
    }
    return UniqueFd();
  }
  UniqueFd file(static_cast<int>(fd));
  struct stat st {};
  if (::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) return UniqueFd();
  refusal = 0;
  return file;
}

Response StaticFiles::Handle(const Request& request) const {
  const bool head = request.method == "HEAD";
  if (request.method != "GET" && !head) return Refusal(405);
  if (!request.path.starts_with(prefix_)) return Refusal(404);
  const StaticPath path = CheckStaticPath(std::string_view(request.path).substr(prefix_.size()));
  if (path.refusal != 0) return Refusal(path.refusal);
  unsigned refusal = 0;
  UniqueFd fd = Open(path.relative, refusal);
  if (fd.get() < 0) return Refusal(refusal);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Refusal(404);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  const auto mtime_ns = static_cast<std::uint64_t>(st.st_mtim.tv_sec) * 1000000000u +
                        static_cast<std::uint64_t>(st.st_mtim.tv_nsec);
  const std::string etag = "\"" + Hex(size) + "-" + Hex(mtime_ns) + "\"";
  const std::string last_modified = FormatHttpDate(st.st_mtim.tv_sec);

  Response r;
  r.content_type =
      path.relative.ends_with(".json") ? "application/json" : "application/octet-stream";
  r.headers.emplace_back("ETag", etag);
  r.headers.emplace_back("Last-Modified", last_modified);
  r.headers.emplace_back("Accept-Ranges", "bytes");

  // Conditional requests (RFC 9110 13.2.2): If-None-Match wins over If-Modified-Since.
  const std::string none_match = request.Header("if-none-match");
  bool not_modified = false;
  if (!none_match.empty()) {
    not_modified = NoneMatchHits(none_match, etag);
  } else if (auto since = ParseHttpDate(request.Header("if-modified-since"))) {
    not_modified = st.st_mtim.tv_sec <= *since;
  }
  if (not_modified) {
    r.status = 304;
    return r;
  }

  auto file = std::make_shared<FileBody>();
  file->offset = 0;
  file->length = size;
  const std::string range_header = request.Header("range");
  const std::string if_range = request.Header("if-range");
  // If-Range: the range applies only to the representation named (strong ETag or the date).
  const bool range_applies = if_range.empty() || if_range == etag || if_range == last_modified;
  if (!range_header.empty() && range_applies) {
    const ByteRange range = ParseRange(range_header, size);
    if (range.kind == ByteRange::kUnsatisfiable) {
      Response refused = Fail(416, "range_not_satisfiable", "the range is not satisfiable");
      refused.headers = r.headers;
      refused.headers.emplace_back("Content-Range", "bytes */" + std::to_string(size));
      return refused;
    }
    if (range.kind == ByteRange::kSatisfiable) {
      r.status = 206;
      file->offset = range.first;
      file->length = range.length;
      r.headers.emplace_back("Content-Range", "bytes " + std::to_string(range.first) + "-" +
                                                  std::to_string(range.first + range.length - 1) +
                                                  "/" + std::to_string(size));
    }
  }
  // HEAD needs the length only: the descriptor closes with the answer either way.
  file->fd = std::move(fd);
  r.file = std::move(file);
  return r;
}

Handler StaticFiles::AsHandler() const {
  return [this](const Request& r) { return Handle(r); };
}

}  // namespace upkeep::server
