#pragma once

// Small rules the fleet's sources share: which names an administrator or a device may use, and
// the time unit of the database (Unix seconds).

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>

#include "upkeep/common/clock.hpp"

namespace upkeep::server {

inline bool IsNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

// [A-Za-z0-9._-]{1,max}
inline bool IsValidName(std::string_view s, std::size_t max) {
  return !s.empty() && s.size() <= max && std::all_of(s.begin(), s.end(), IsNameChar);
}

inline bool IsLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

inline std::int64_t Seconds(Clock::TimePoint t) { return t.time_since_epoch().count(); }

}  // namespace upkeep::server
