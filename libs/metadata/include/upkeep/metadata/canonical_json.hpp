#pragma once

// JSON parsing for metadata and the OLPC canonical form used for signatures and key IDs.
//
// Canonical form (byte-identical to the npm package @tufjs/canonical-json):
// - no insignificant white space; object keys sorted by UTF-16 code units (JavaScript's order);
// - strings: only '\' and '"' are escaped (as \\ and \"); every other character, including
//   control characters, is written as its raw UTF-8 bytes;
// - integers in decimal; floating-point numbers are rejected.

#include <string>
#include <functional>
#include <istream>
#include <string_view>

#include <nlohmann/json.hpp>

#include "upkeep/common/result.hpp"
#include "upkeep/metadata/errc.hpp"

namespace upkeep::metadata {

using Json = nlohmann::json;

// Strict parse of untrusted bytes: RFC 8259 JSON, valid UTF-8, no duplicate object keys
// (Errc::MalformedJson), nesting at most kMaxJsonDepth levels.
inline constexpr int kMaxJsonDepth = 64;
[[nodiscard]] Result<Json> ParseJson(std::string_view text);
// The same rules, for documents with one long array: each element of the top-level member
// `array_key` is handed to `on_element` as soon as it is complete and is not kept, so memory
// stays at one element however long the array (the returned document holds the member as an empty
// array). An error from `on_element` stops the parse and is returned.
[[nodiscard]] Result<Json> ParseJsonStreaming(
    std::string_view text, const std::string& array_key,
    const std::function<Result<void>(const Json& element)>& on_element);
// The same, reading the document from `in` (never holding all of its text).
[[nodiscard]] Result<Json> ParseJsonStreaming(
    std::istream& in, const std::string& array_key,
    const std::function<Result<void>(const Json& element)>& on_element);

// Errc::NotCanonicalizable for floating-point numbers.
[[nodiscard]] Result<std::string> Canonicalize(const Json& value);

}  // namespace upkeep::metadata
