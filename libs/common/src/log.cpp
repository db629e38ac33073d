#include "upkeep/common/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>

namespace upkeep::log {

void Init(const char* level) {
  auto logger = spdlog::get("upkeep");
  if (!logger) logger = spdlog::stderr_logger_mt("upkeep");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S%z %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

}  // namespace upkeep::log
