#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace upkeep {

// Lower-case hexadecimal.
[[nodiscard]] std::string HexEncode(std::span<const std::uint8_t> bytes);
// Accepts upper or lower case; nullopt for odd length or a non-hex character.
[[nodiscard]] std::optional<std::vector<std::uint8_t>> HexDecode(std::string_view hex);

// Percent-encodes every byte except ASCII letters, digits and "_.-~" (RFC 3986 unreserved),
// so the result is one path segment: "a/b c" -> "a%2Fb%20c". Used for role and target names
// in local file names and URLs.
[[nodiscard]] std::string PercentEncode(std::string_view text);

// Decodes %XX escapes (a '%' not followed by two hex digits is kept as is). nullopt when the
// result contains a NUL byte.
[[nodiscard]] std::optional<std::string> PercentDecode(std::string_view text);

// Percent-encodes each '/'-separated segment of a path, keeping the slashes: "a b/c" -> "a%20b/c".
[[nodiscard]] std::string PercentEncodePath(std::string_view path);

}  // namespace upkeep
