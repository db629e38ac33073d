#pragma once

// Logging through spdlog. Never log keys, tokens or passwords.

#include <spdlog/spdlog.h>

#include <chrono>
#include <string>
#include <string_view>

namespace upkeep::log {

using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::warn;

enum class Format {
  kText,  // "2026-12-07T10:50:40+0000 info message"
  kJson,  // one JSON object per line: {"time":"2026-12-07T10:50:40Z","level":"info","message":"..."}
};

// Sends log lines to stderr at `level` ("debug", "info", "warn", "error", "off").
void Init(const char* level, Format format = Format::kText);

// One JSON log line (with its newline): the message's invalid UTF-8 becomes U+FFFD and every
// control character is escaped, so a line is always one valid JSON object.
[[nodiscard]] std::string JsonLine(std::chrono::system_clock::time_point time,
                                   std::string_view level, std::string_view message);

}  // namespace upkeep::log
