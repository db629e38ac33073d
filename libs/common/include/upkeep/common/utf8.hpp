#pragma once

// UTF-8 helpers for text that comes from outside (a module's output, a server's message) and is
// put into an Error, a log line or a JSON document: nlohmann::json's dump() throws on invalid
// UTF-8, and a byte limit must not split a multi-byte character.

#include <cstddef>
#include <string>
#include <string_view>

namespace upkeep {

// `text` with every byte that is not part of a well-formed UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF) replaced by U+FFFD. Valid text is
// returned unchanged. The result may be longer than the input (3 bytes per replaced byte).
[[nodiscard]] std::string SanitizeUtf8(std::string_view text);

// The longest prefix of `text` of at most `max_bytes` bytes that does not end inside a
// multi-byte UTF-8 sequence which `text` itself continues. Invalid bytes are not repaired (use
// SanitizeUtf8); the cut only never splits a character that was complete in `text`.
[[nodiscard]] std::string_view TruncateUtf8(std::string_view text, std::size_t max_bytes);

// Text safe to print on a terminal: SanitizeUtf8, then every control character other than
// newline and tab (C0, DEL) replaced by '?', so no escape sequence from a mirror, a module or a
// file reaches the terminal.
[[nodiscard]] std::string PrintableText(std::string_view text);

}  // namespace upkeep
