#pragma once

// Update lifecycle events. Each has a stable ID that log processors and fleet dashboards may rely
// on; docs/events.md is the catalogue (what each means and which fields it carries). IDs are
// never reused or renamed: a changed meaning gets a new ID.

#include <functional>
#include <string>

#include "upkeep/metadata/canonical_json.hpp"

namespace upkeep::install {

namespace event {
inline constexpr const char* kInstallStarted = "install.started";
inline constexpr const char* kInstallResumed = "install.resumed";
inline constexpr const char* kInstallRefused = "install.refused";
inline constexpr const char* kInstallFailed = "install.failed";
inline constexpr const char* kDownloadStarted = "download.started";
inline constexpr const char* kDownloadResumed = "download.resumed";
inline constexpr const char* kChunksReused = "download.chunks_reused";
inline constexpr const char* kChunkRejected = "verify.chunk_rejected";
inline constexpr const char* kImageVerified = "verify.image_verified";
inline constexpr const char* kInstalled = "install.installed";
inline constexpr const char* kRebootRequested = "boot.reboot_requested";
inline constexpr const char* kTrialBoot = "boot.trial";
inline constexpr const char* kHealthPassed = "health.passed";
inline constexpr const char* kHealthFailed = "health.failed";
inline constexpr const char* kCommitted = "update.committed";
inline constexpr const char* kRolledBack = "update.rolled_back";
inline constexpr const char* kModuleInstalled = "module.installed";
inline constexpr const char* kModuleFailed = "module.failed";
}  // namespace event

struct Event {
  std::string id;                                  // one of event::k*
  std::string message;                             // one line for people
  metadata::Json data = metadata::Json::object();  // fields listed in docs/events.md
};

using EventSink = std::function<void(const Event&)>;

}  // namespace upkeep::install
