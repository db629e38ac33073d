// Notices before an update (EN 303 645 5.3-11, 5.3-12; docs/notices.md): built from the signed
// update metadata only, and handed to the notifier command.

#include "upkeep/agent/notice.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "temp_dir.hpp"
#include "upkeep/agent/config.hpp"
#include "upkeep/metadata/json_text.hpp"

namespace upkeep::agent {
namespace {

using metadata::Json;

Notice SecurityNotice() {
  Notice n;
  n.update_id = "u-1";
  n.target = "rootfs/2.4.1.payload";
  metadata::UpdateMetadata& u = n.update;
  u.version = "2.4.1";
  u.hardware = {"acme-cam-v2"};
  u.is_security = true;
  u.security = metadata::SecurityInfo{metadata::Severity::High,
                                      {"CVE-2026-12345", "CVE-2026-23456"},
                                      "Stops attackers on your network from viewing the camera feed."};
  u.disruption = {true, 45, {"motion alerts"}};
  u.settings_impact = {metadata::SettingsEffect::Migrated, "Schedules move to the new format."};
  return n;
}

// 5.3-11/5.3-12: the notice says a security update is required, what it mitigates (severity,
// CVEs, risks), that the device restarts, how long it is down, what keeps working, and how the
// settings change.
TEST(NoticeTest, SecurityNoticeCarriesRisksDowntimeAndSettingsImpact) {
  const Json j = NoticeJson(SecurityNotice());
  EXPECT_EQ(j["notice"], 1);
  EXPECT_EQ(j["security_update_required"], true);
  EXPECT_EQ(j["kind"], Json::array({"security"}));
  EXPECT_EQ(j["security"]["severity"], "high");
  EXPECT_EQ(j["security"]["cves"], Json::array({"CVE-2026-12345", "CVE-2026-23456"}));
  EXPECT_EQ(j["disruption"]["reboot"], true);
  EXPECT_EQ(j["disruption"]["downtime_seconds"], 45);
  EXPECT_EQ(j["disruption"]["available_during_update"], Json::array({"motion alerts"}));
  EXPECT_EQ(j["settings"]["effect"], "migrated");
  EXPECT_EQ(j["target"], "rootfs/2.4.1.payload");
  EXPECT_EQ(j["text"],
            "A security update (version 2.4.1) is required. Stops attackers on your network from "
            "viewing the camera feed. Severity: high (CVE-2026-12345 and CVE-2026-23456). The "
            "device restarts and is unavailable for about 45 seconds. Motion alerts keep working "
            "during the update. Your settings are carried over: Schedules move to the new format.");
}

TEST(NoticeTest, FeatureNoticeWithoutDowntimeSaysDeviceKeepsWorking) {
  Notice n;
  n.update.version = "2.6.0";
  n.update.is_feature = true;
  const Json j = NoticeJson(n);
  EXPECT_EQ(j["security_update_required"], false);
  EXPECT_FALSE(j.contains("security"));
  EXPECT_EQ(j["text"],
            "An update to version 2.6.0 is available. The device keeps working during the update. "
            "Your settings do not change.");
  n.update.settings_impact = {metadata::SettingsEffect::Reset, "Pairings must be made again."};
  n.update.disruption = {false, 7200, {}};
  EXPECT_EQ(NoticeText(n),
            "An update to version 2.6.0 is available. The device is unavailable for about 2 "
            "hours; it does not restart. Your settings are reset: Pairings must be made again.");
}

TEST(NotifierTest, NotifierReadsNoticeJsonOnStandardInput) {
  testing::TempDir dir;
  const std::string out = (dir.path() / "notice.json").string();
  NotifierOptions o{{"/bin/sh", "-c", "cat > \"$0\"", out}, std::chrono::seconds(10)};
  ASSERT_TRUE(RunNotifier(o, SecurityNotice()));
  std::ifstream in(out);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  auto parsed = metadata::ParseJson(text.substr(0, text.size() - 1));
  ASSERT_TRUE(parsed) << text;
  EXPECT_EQ(*parsed, NoticeJson(SecurityNotice()));
}

// A notifier that cannot start, fails, hangs or never reads is an error value, never a hang or
// a signal in the agent.
TEST(NotifierTest, FailingHangingOrMissingNotifierIsNotifierFailed) {
  const Notice n = SecurityNotice();
  auto missing = RunNotifier({{"/nonexistent/notifier"}, std::chrono::seconds(5)}, n);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::NotifierFailed);
  auto failing = RunNotifier({{"/bin/sh", "-c", "exit 3"}, std::chrono::seconds(5)}, n);
  ASSERT_FALSE(failing);
  EXPECT_EQ(failing.error().code(), Errc::NotifierFailed);
  EXPECT_NE(failing.error().message().find("exit status 3"), std::string::npos);
  auto hanging = RunNotifier({{"/bin/sh", "-c", "exec sleep 30"}, std::chrono::milliseconds(200)}, n);
  ASSERT_FALSE(hanging);
  EXPECT_EQ(hanging.error().code(), Errc::NotifierFailed);
  EXPECT_NE(hanging.error().message().find("killed"), std::string::npos);
  // Exits at once without reading its input: no SIGPIPE for the agent.
  EXPECT_TRUE(RunNotifier({{"/bin/true"}, std::chrono::seconds(5)}, n));
  EXPECT_TRUE(RunNotifier({{}, std::chrono::seconds(5)}, n));
}

}  // namespace
}  // namespace upkeep::agent
