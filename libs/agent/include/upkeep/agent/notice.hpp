#pragma once

// Notices to the user before an update installs (EN 303 645 5.3-11 and 5.3-12, the settings
// impact the CRA asks for; docs/notices.md). A notice is built only from the target's signed
// update metadata (docs/formats/update-metadata.md), never from the server: that a security
// update is required, the risks it mitigates (severity, CVEs, plain text), whether the device
// restarts, the expected downtime and what keeps working, and whether settings change.
//
// The agent publishes a notice on its local API and hands it to a notifier command (a device's
// UI, LEDs or companion-app bridge), which reads the notice as JSON on its standard input.

#include <chrono>
#include <string>
#include <vector>

#include "upkeep/common/result.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/update_metadata.hpp"

namespace upkeep::agent {

struct Notice {
  std::string update_id;
  std::string target;
  metadata::UpdateMetadata update;
};

// Notice format 1 as JSON (docs/notices.md), with "text": one plain-language paragraph for
// displays that show no structure. Strings from the metadata appear as signed (valid UTF-8, the
// metadata parser checked); a display must still escape them for its own markup.
[[nodiscard]] metadata::Json NoticeJson(const Notice& notice);
[[nodiscard]] std::string NoticeText(const Notice& notice);

struct NotifierOptions {
  // argv of the notifier (no shell); empty: no notifier.
  std::vector<std::string> command;
  // The notifier must exit within this time; it is killed (SIGKILL) otherwise.
  std::chrono::milliseconds timeout{10000};
};

// Runs the notifier with the notice JSON (one line) on its standard input and its standard
// output and error discarded. Errors: agent::Errc::NotifierFailed (cannot start, killed after the
// timeout, or a nonzero exit status; the message says which). An empty command does nothing.
// Installing never waits on a failed notifier: the caller logs the error and goes on.
[[nodiscard]] Result<void> RunNotifier(const NotifierOptions& options, const Notice& notice);

}  // namespace upkeep::agent
