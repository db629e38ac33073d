#pragma once

// Logging through spdlog. Never log keys, tokens or passwords.

#include <spdlog/spdlog.h>

namespace upkeep::log {

using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::warn;

// Sends log lines to stderr at `level` ("debug", "info", "warn", "error", "off").
void Init(const char* level);

}  // namespace upkeep::log
