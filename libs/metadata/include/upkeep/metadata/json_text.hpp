#pragma once

// JSON text for records and output that may carry bytes from untrusted sources (a mirror's error
// page, a module's output, a hand-edited file): never throws, whatever the strings hold.

#include <string>

#include "upkeep/metadata/canonical_json.hpp"

namespace upkeep::metadata {

// Serialises `value` (indent < 0: one line). Bytes that are not valid UTF-8 are written as
// U+FFFD, so the text is always valid JSON; nlohmann's dump() would throw instead. Only running
// out of memory can still throw (std::bad_alloc).
[[nodiscard]] inline std::string DumpJson(const Json& value, int indent = -1) {
  // nothrow: the replace handler never throws on text; only std::bad_alloc
  return value.dump(indent, ' ', false, Json::error_handler_t::replace);
}

}  // namespace upkeep::metadata
