#pragma once

// Static files from one directory: the fleet server serving the image repository as
// `upkeep repo publish` writes it (docs/repository.md, docs/server.md "The image repository").
// The files are public and devices verify every one of them, so no client certificate is asked
// for; what matters is that nothing outside the directory is ever served.
//
// - GET and HEAD; Content-Length; ETag and Last-Modified, with If-None-Match / If-Modified-Since
//   answered 304; one byte range per request (Range: bytes=A-B, A-, -N; If-Range) answered 206,
//   or 416 with Content-Range: bytes */SIZE when it starts beyond the end.
// - Paths are percent-decoded once and then checked: no empty, "." or ".." segment, no leading
//   '/', no control character or backslash (400); no segment starting with '.' (404). An encoded
//   '/' (%2F) separates segments like a literal one and meets the same rules, as static web
//   servers treat it (docs/formats/metadata.md: delegated role names with '/').
// - The file is opened beneath the directory (openat2 RESOLVE_BENEATH: a symbolic link may
//   point within the directory, never out of it; where the kernel lacks openat2, no symbolic
//   link is followed at all); only regular files are served, never a directory listing.
// - The body is streamed from the open file by the HTTPS front end (Response::file): memory stays
//   constant whatever the file's size.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "upkeep/common/result.hpp"
#include "upkeep/common/unique_fd.hpp"
#include "upkeep/server/https_server.hpp"

namespace upkeep::server {

// The URL prefix the image repository is served under.
inline constexpr std::string_view kRepositoryPrefix = "/repository/";

// The path below the directory that the request path's part after the prefix names (undecoded,
// as it arrived), or the status refusing it: 400 for a malformed or traversing path, 404 for a
// hidden file or an empty path.
struct StaticPath {
  std::string relative;  // decoded, checked: "metadata/1.root.json"
  unsigned refusal = 0;  // 0: use `relative`
};
[[nodiscard]] StaticPath CheckStaticPath(std::string_view encoded);

// An HTTP date (IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT") and back; nullopt when malformed.
[[nodiscard]] std::string FormatHttpDate(std::int64_t unix_seconds);
[[nodiscard]] std::optional<std::int64_t> ParseHttpDate(std::string_view text);

class StaticFiles {
 public:
  // Serves the files below `directory` for request paths starting with `url_prefix` (which ends
  // in '/'). Errc::InvalidConfig when the directory cannot be opened.
  [[nodiscard]] static Result<std::unique_ptr<StaticFiles>> Create(
      const std::string& directory, std::string url_prefix = std::string(kRepositoryPrefix));

  // Answers one request; safe to call from several threads.
  [[nodiscard]] Response Handle(const Request& request) const;
  // The StaticFiles must outlive the handler.
  [[nodiscard]] Handler AsHandler() const;

 private:
  StaticFiles(UniqueFd root, std::string prefix)
      : root_(std::move(root)), prefix_(std::move(prefix)) {}
  // The regular file at `relative` below the directory; on failure an empty descriptor and
  // `refusal` set to the status to answer.
  [[nodiscard]] UniqueFd Open(const std::string& relative, unsigned& refusal) const;

  UniqueFd root_;
  std::string prefix_;
};

}  // namespace upkeep::server
