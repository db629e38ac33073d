#include "upkeep/common/log.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <cstdio>
#include <mutex>

#include "upkeep/common/utf8.hpp"

namespace upkeep::log {

namespace {

void AppendJsonString(std::string& out, std::string_view text) {
  out += '"';
  for (const char c : SanitizeUtf8(text)) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

// Writes JsonLine()s to stderr.
class JsonSink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const auto level = spdlog::level::to_string_view(msg.level);
    const std::string line =
        JsonLine(msg.time, std::string_view(level.data(), level.size()),
                 std::string_view(msg.payload.data(), msg.payload.size()));
    std::fwrite(line.data(), 1, line.size(), stderr);
  }
  void flush_() override { std::fflush(stderr); }
};

}  // namespace

std::string JsonLine(std::chrono::system_clock::time_point time, std::string_view level,
                     std::string_view message) {
  const std::time_t t = std::chrono::system_clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &utc);
  std::string out = "{\"time\":\"";
  out += stamp;
  out += "\",\"level\":";
  AppendJsonString(out, level);
  out += ",\"message\":";
  AppendJsonString(out, message);
  out += "}\n";
  return out;
}

void Init(const char* level, Format format) {
  spdlog::drop("upkeep");
  std::shared_ptr<spdlog::logger> logger;
  if (format == Format::kJson) {
    logger = std::make_shared<spdlog::logger>("upkeep", std::make_shared<JsonSink>());
    spdlog::register_logger(logger);
  } else {
    logger = spdlog::stderr_logger_mt("upkeep");
    logger->set_pattern("%Y-%m-%dT%H:%M:%S%z %^%l%$ %v");
  }
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace upkeep::log
