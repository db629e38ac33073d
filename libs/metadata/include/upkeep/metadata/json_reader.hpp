#pragma once

// JsonReader: typed reads of the members of one JSON object, for every format upkeep parses from
// JSON: TUF metadata, update metadata, the agent journal, the chunk index and the bundle table of
// contents.
//
// One set of rules everywhere:
// - a member is read as one kind (string, unsigned integer, boolean, object, array of strings);
//   anything else is an error, never a conversion (1.5, "1" and true are not integers);
// - integers are whole JSON numbers in [min, max] (defaults 0 .. 2^64-1); floats are refused;
// - strings must be valid UTF-8 (already true for documents from ParseJson; checked again for
//   values built in code) and, unless allowed, not empty;
// - every failure is an Error with the reader's code and the member's path in the message
//   ("custom.upkeep.disruption.downtime_seconds: must be a non-negative integer"), never an
//   exception;
// - the reader remembers which members were read: NoUnknownKeys() rejects the rest (strict
//   formats), Unrecognized() returns them (formats that keep unknown fields, like signed TUF
//   metadata, where signatures cover them).
//
// Example:
//
//   UPKEEP_ASSIGN_OR_RETURN(JsonReader r, JsonReader::Of(doc, Errc::InvalidUpdateMetadata,
//                                                        "custom.upkeep"));
//   UPKEEP_ASSIGN_OR_RETURN(std::string component, r.String("component"));
//   UPKEEP_ASSIGN_OR_RETURN(std::uint64_t schema, r.Uint("schema", {.min = 1, .max = 1}));
//   UPKEEP_ASSIGN_OR_RETURN(JsonReader payload, r.Object("payload"));
//   UPKEEP_ASSIGN_OR_RETURN(std::optional<bool> reboot, r.OptionalBool("reboot"));
//   UPKEEP_TRY(r.NoUnknownKeys());

#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/result.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/errc.hpp"

namespace upkeep::metadata {

// True when `text` is well-formed UTF-8: shortest forms only, no surrogates, at most U+10FFFF.
[[nodiscard]] bool IsValidUtf8(std::string_view text);

struct UintRange {
  std::uint64_t min = 0;
  std::uint64_t max = std::numeric_limits<std::uint64_t>::max();
};

struct StringRules {
  bool allow_empty = false;
  std::size_t max_length = std::numeric_limits<std::size_t>::max();
};

struct StringListRules {
  bool allow_empty_list = true;
  bool allow_empty_strings = false;
  bool unique = false;  // reject an entry listed twice
};

// An unsigned integer value outside an object (array entries, map values). `path` names it.
[[nodiscard]] Result<std::uint64_t> ReadUint(const Json& value, Errc code, const std::string& path,
                                             UintRange range = {});

class JsonReader {
 public:
  // `object` must be a JSON object and outlive the reader. `path` names it in messages ("" for
  // the document itself).
  JsonReader(const Json& object, Errc code, std::string path)
      : object_(&object), code_(code), path_(std::move(path)) {}
  // Fails unless `value` is an object.
  [[nodiscard]] static Result<JsonReader> Of(const Json& value, Errc code, std::string path);

  // Any kind; the member must be present.
  [[nodiscard]] Result<const Json*> Required(std::string_view key);
  // Any kind; nullptr when absent.
  [[nodiscard]] const Json* Optional(std::string_view key);

  [[nodiscard]] Result<std::string> String(std::string_view key, StringRules rules = {});
  [[nodiscard]] Result<std::optional<std::string>> OptionalString(std::string_view key,
                                                                  StringRules rules = {});
  [[nodiscard]] Result<std::uint64_t> Uint(std::string_view key, UintRange range = {});
  [[nodiscard]] Result<std::optional<std::uint64_t>> OptionalUint(std::string_view key,
                                                                  UintRange range = {});
  [[nodiscard]] Result<bool> Bool(std::string_view key);
  [[nodiscard]] Result<std::optional<bool>> OptionalBool(std::string_view key);
  [[nodiscard]] Result<std::vector<std::string>> Strings(std::string_view key,
                                                         StringListRules rules = {});
  // The member as an object (a reader for it, whose path extends this one's) or array.
  [[nodiscard]] Result<JsonReader> Object(std::string_view key);
  [[nodiscard]] Result<std::optional<JsonReader>> OptionalObject(std::string_view key);
  [[nodiscard]] Result<const Json*> Array(std::string_view key);

  // Fails on the first member that was not read (or named by MarkRead).
  [[nodiscard]] Result<void> NoUnknownKeys() const;
  // The members that were not read, as an object.
  [[nodiscard]] Json Unrecognized() const;
  // Counts `key` as read without reading it.
  void MarkRead(std::string_view key) { read_.emplace(key); }

  // "path.key" (or "key" at the top).
  [[nodiscard]] std::string Path(std::string_view key) const;
  // An error with this reader's code: "<path.key>: <what>".
  [[nodiscard]] Error Fail(std::string_view key, const std::string& what) const;
  [[nodiscard]] const Json& json() const { return *object_; }
  [[nodiscard]] Errc code() const { return code_; }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  const Json* object_;
  Errc code_;
  std::string path_;
  std::set<std::string, std::less<>> read_;
};

}  // namespace upkeep::metadata
