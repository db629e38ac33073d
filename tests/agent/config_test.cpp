// Agent configuration: parse, validate, reject unknown keys, dump.

#include "upkeep/agent/config.hpp"

#include <gtest/gtest.h>

#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/common/filesystem.hpp"

namespace upkeep::agent {
namespace {

constexpr const char* kMinimal = R"(
[device]
hardware = "cam-v2"
[slots]
a = "/dev/mmcblk0p2"
b = "/dev/mmcblk0p3"
[bootloader]
type = "uboot"
env = "/etc/fw_env.config"
)";

TEST(ConfigTest, ParsesMinimalConfigWithDefaults) {
  auto c = ParseConfig(kMinimal);
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->device.hardware, "cam-v2");
  EXPECT_EQ(c->device.data_dir, "/var/lib/upkeep");
  EXPECT_EQ(c->bootloader.type, "uboot");
  EXPECT_EQ(c->bootloader.boot_limit, 3u);
  EXPECT_EQ(c->install.checkpoint_mib, 64u);
  EXPECT_TRUE(c->install.reuse_chunks);
}

TEST(ConfigTest, ParsesHealthChecksAndModules) {
  auto c = ParseConfig(std::string(kMinimal) + R"(
[health]
commands = [["/bin/systemctl", "is-system-running", "--wait"], ["/usr/bin/app-selftest"]]
timeout_seconds = 30
systemd_units = ["multi-user.target"]
[components.app]
module = ["/usr/libexec/upkeep/upkeep-module", "file"]
timeout_seconds = 60
args = { dest = "/opt/app/app.bin", mode = "0755" }
)");
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  ASSERT_EQ(c->health.commands.size(), 2u);
  EXPECT_EQ(c->health.commands[0][1], "is-system-running");
  EXPECT_EQ(c->health.timeout, std::chrono::seconds(30));
  EXPECT_EQ(c->health.systemd_units, std::vector<std::string>{"multi-user.target"});
  ASSERT_TRUE(c->components.contains("app"));
  EXPECT_EQ(c->components.at("app").command[1], "file");
  EXPECT_EQ(c->components.at("app").args_json, R"({"dest":"/opt/app/app.bin","mode":"0755"})");
  // What --dump-config prints parses back to the same configuration.
  auto again = ParseConfig(DumpConfig(*c));
  ASSERT_TRUE(again.has_value()) << again.error().ToString() << "\n" << DumpConfig(*c);
  EXPECT_EQ(again->components.at("app").args_json, c->components.at("app").args_json);
  EXPECT_EQ(again->health.commands, c->health.commands);
}

// A typo is an error, never a silent default.
TEST(ConfigTest, RejectsUnknownKeysAndSections) {
  EXPECT_ERRC(ParseConfig(std::string(kMinimal) + "[install]\ncheckpoint_mb = 4\n"),
              Errc::InvalidConfig);
  EXPECT_ERRC(ParseConfig(std::string(kMinimal) + "[instal]\n"), Errc::InvalidConfig);
}

TEST(ConfigTest, RejectsBadValues) {
  EXPECT_ERRC(ParseConfig("[device]\nhardware = \"x\"\n"), Errc::InvalidConfig);  // no slots
  EXPECT_ERRC(ParseConfig(std::string(kMinimal) + "[install]\ncheckpoint_mib = 0\n"),
              Errc::InvalidConfig);
  EXPECT_ERRC(ParseConfig(std::string(kMinimal) + "[repository]\nurl = \"ftp://x\"\n"),
              Errc::InvalidConfig);
  EXPECT_ERRC(ParseConfig(std::string(kMinimal) + "[health]\ncommands = [[]]\n"),
              Errc::InvalidConfig);
  EXPECT_ERRC(ParseConfig(std::string(kMinimal) + "[components.rootfs]\nmodule = [\"/x\"]\n"),
              Errc::InvalidConfig);
  EXPECT_ERRC(ParseConfig("not toml = = ="), Errc::InvalidConfig);
  std::string same = kMinimal;
  same.replace(same.find("mmcblk0p3"), 9, "mmcblk0p2");
  EXPECT_ERRC(ParseConfig(same), Errc::InvalidConfig);
}

// Each component owns a namespace of target paths: the root filesystem "rootfs/" and a module
// component "<name>/" unless configured; namespaces must be whole path segments and disjoint, so
// every target belongs to at most one component.
// The daemon's sections (docs/agent-daemon.md): every value read, printed by --dump-config and
// read back the same.
TEST(ConfigTest, ParsesDaemonSectionsAndDumpsThemBack) {
  auto c = ParseConfig(std::string(kMinimal) + R"(
[repository]
url = "https://updates.example.com/fw"
[server]
url = "https://fleet.example.com"
ca_file = "/etc/upkeep/fleet-ca.pem"
token_file = "/etc/upkeep/enrol.token"
[schedule]
boot_delay_min_seconds = 10
boot_delay_max_seconds = 20
period_seconds = 43200
window_start_seconds = 3600
window_length_seconds = 7200
backoff_base_seconds = 30
backoff_cap_seconds = 3600
[policy]
security_postpone_cap_hours = 72
reboot_deadline_hours = 12
maintenance_window = "23:00-02:30"
utc_offset_minutes = -300
[notices]
command = ["/usr/bin/show-notice", "--json"]
timeout_seconds = 5
[local_api]
socket = "/run/upkeep/agent.sock"
mode = "0660"
group = "upkeep"
dbus = true
lan_listen = "0.0.0.0:8443"
lan_certificate = "/etc/upkeep/lan.pem"
lan_key = "/etc/upkeep/lan.key"
[daemon]
low_priority = false
)");
  ASSERT_TRUE(c) << c.error().ToString();
  EXPECT_EQ(c->server.url, "https://fleet.example.com");
  EXPECT_EQ(c->schedule.period, std::chrono::hours(12));
  EXPECT_EQ(c->schedule.window_length, std::chrono::hours(2));
  EXPECT_EQ(c->policy.security_postpone_cap, std::chrono::hours(72));
  ASSERT_TRUE(c->policy.maintenance_window.has_value());
  EXPECT_EQ(c->policy.maintenance_window->start, std::chrono::minutes(23 * 60));
  EXPECT_EQ(c->policy.maintenance_window->length, std::chrono::minutes(210));
  EXPECT_EQ(c->policy.maintenance_window->utc_offset, std::chrono::minutes(-300));
  EXPECT_EQ(c->notices.command.size(), 2u);
  EXPECT_EQ(c->local_api.mode, 0660u);
  EXPECT_TRUE(c->local_api.dbus);
  EXPECT_FALSE(c->daemon.low_priority);
  auto again = ParseConfig(DumpConfig(*c));
  ASSERT_TRUE(again) << again.error().ToString() << "\n" << DumpConfig(*c);
  EXPECT_EQ(DumpConfig(*again), DumpConfig(*c));
}

TEST(ConfigTest, RejectsBadDaemonValuesNamingTheKey) {
  const std::pair<const char*, const char*> cases[] = {
      {"[server]\nurl = \"http://fleet\"\nca_file = \"/ca\"\n", "server.url"},
      {"[server]\nurl = \"https://fleet\"\n", "server.ca_file"},
      {"[repository]\nurl = \"https://r\"\n[server]\nurl = \"https://f\"\nca_file = \"/ca\"\n"
       "manufacturer_key = \"/k\"\n",
       "server.manufacturer_key"},
      {"[server]\nurl = \"https://f\"\nca_file = \"/ca\"\n", "repository.url"},
      {"[schedule]\nperiod_seconds = 10\n", "schedule.period_seconds"},
      {"[schedule]\nboot_delay_min_seconds = 50\nboot_delay_max_seconds = 10\n", "schedule"},
      {"[policy]\nmaintenance_window = \"25:00-02:00\"\n", "policy.maintenance_window"},
      {"[policy]\nmaintenance_window = \"02:00-02:00\"\n", "policy.maintenance_window"},
      {"[policy]\nutc_offset_minutes = 60\n", "policy.utc_offset_minutes"},
      {"[policy]\nsecurity_postpone_cap_hours = 0\n", "policy.security_postpone_cap_hours"},
      {"[local_api]\nmode = \"0666\"\n", "local_api.mode"},
      {"[local_api]\nmode = \"rw\"\n", "local_api.mode"},
      {"[local_api]\nsocket = \"agent.sock\"\n", "local_api.socket"},
      {"[local_api]\nlan_listen = \"0.0.0.0:99999\"\nlan_certificate = \"/c\"\nlan_key = \"/k\"\n",
       "local_api.lan_listen"},
      {"[local_api]\nlan_listen = \"0.0.0.0:8443\"\n", "local_api.lan_certificate"},
      {"[daemon]\nlow_priority = 1\n", "daemon.low_priority"},
      {"[device]\nsupport_until = \"31.12.2031\"\n", "device.support_until"},
  };
  for (const auto& [text, key] : cases) {
    std::string config = kMinimal;
    if (std::string_view(text).starts_with("[device]")) {
      config.replace(config.find("[device]\n"), 9, std::string("[device]\n") + (text + 9));
    } else {
      config += text;
    }
    auto c = ParseConfig(config);
    ASSERT_FALSE(c) << text;
    EXPECT_EQ(c.error().code(), Errc::InvalidConfig) << text;
    EXPECT_NE(c.error().message().find(key), std::string::npos) << c.error().message();
  }
}

TEST(ConfigTest, ComponentNamespacesDefaultAndMustBeDisjoint) {
  const std::string modules = std::string(kMinimal) +
                              "[components.cam]\nmodule = [\"/m\"]\nnamespace = \"apps/cam/\"\n"
                              "[components.door]\nmodule = [\"/m\"]\n";
  auto c = ParseConfig(modules);
  ASSERT_TRUE(c.has_value()) << c.error().ToString();
  EXPECT_EQ(c->slots.target_namespace, "rootfs/");
  EXPECT_EQ(c->components.at("cam").target_namespace, "apps/cam/");
  EXPECT_EQ(c->components.at("door").target_namespace, "door/");
  auto again = ParseConfig(DumpConfig(*c));
  ASSERT_TRUE(again.has_value()) << again.error().ToString();
  EXPECT_EQ(again->components.at("cam").target_namespace, "apps/cam/");

  const auto with_slots_namespace = [](const std::string& ns) {
    std::string text = kMinimal;
    text.replace(text.find("[bootloader]"), 0, "namespace = \"" + ns + "\"\n");
    return text;
  };
  EXPECT_TRUE(ParseConfig(with_slots_namespace("fw/main/")).has_value());
  for (const std::string bad : {"", "rootfs", "/rootfs/", "a//", "../x/", "./", "fw/*/", "a%b/"}) {
    SCOPED_TRACE(bad);
    EXPECT_ERRC(ParseConfig(with_slots_namespace(bad)), Errc::InvalidConfig);
  }
  // A module namespace inside the root filesystem's, or the reverse: ambiguous, refused.
  EXPECT_ERRC(ParseConfig(std::string(kMinimal) +
                          "[components.x]\nmodule = [\"/m\"]\nnamespace = \"rootfs/x/\"\n"),
              Errc::InvalidConfig);
  EXPECT_ERRC(ParseConfig(with_slots_namespace("apps/") +
                          "[components.cam]\nmodule = [\"/m\"]\nnamespace = \"apps/cam/\"\n"),
              Errc::InvalidConfig);
}

}  // namespace
}  // namespace upkeep::agent

namespace upkeep::agent {
namespace {

// Drop-ins (agent.conf.d/*.toml) lay over the main file in name order: tables merge key by key,
// later values win, non-TOML files are ignored; an unknown key or a syntax error in a drop-in is
// an error naming it.
TEST(ConfigDropInTest, DropInsOverrideInNameOrderAndKeepTheRules) {
  testing::TempDir dir;
  LocalFilesystem fs;
  const auto main_file = dir.path() / "agent.toml";
  ASSERT_TRUE(fs.WriteFileAtomic(main_file, kMinimal));
  auto plain = LoadConfig(main_file, fs);
  ASSERT_TRUE(plain) << plain.error().ToString();
  ASSERT_TRUE(fs.CreateDirectories(dir.path() / "agent.conf.d"));
  ASSERT_TRUE(fs.WriteFileAtomic(dir.path() / "agent.conf.d" / "10-maker.toml",
                                 "[install]\ncheckpoint_mib = 16\n[device]\nhardware = \"cam-v3\"\n"
                                 "[components.app]\nmodule = [\"/usr/lib/upkeep/app\"]\n"));
  ASSERT_TRUE(fs.WriteFileAtomic(dir.path() / "agent.conf.d" / "20-site.toml",
                                 "[install]\ncheckpoint_mib = 8\n"));
  ASSERT_TRUE(fs.WriteFileAtomic(dir.path() / "agent.conf.d" / "notes.txt", "not toml ["));
  auto layered = LoadConfig(main_file, fs);
  ASSERT_TRUE(layered) << layered.error().ToString();
  EXPECT_EQ(layered->install.checkpoint_mib, 8u);         // 20-site over 10-maker
  EXPECT_EQ(layered->device.hardware, "cam-v3");           // a drop-in over the main file
  EXPECT_EQ(layered->slots.a, plain->slots.a);              // untouched keys stay
  ASSERT_TRUE(layered->components.contains("app"));        // tables merge
  EXPECT_EQ(layered->components.at("app").command,
            std::vector<std::string>{"/usr/lib/upkeep/app"});

  ASSERT_TRUE(fs.WriteFileAtomic(dir.path() / "agent.conf.d" / "30-typo.toml",
                                 "[install]\ncheckpoint_mb = 4\n"));
  auto typo = LoadConfig(main_file, fs);
  ASSERT_FALSE(typo);
  EXPECT_EQ(typo.error().code(), Errc::InvalidConfig);
  EXPECT_NE(typo.error().message().find("checkpoint_mb"), std::string::npos);
  ASSERT_TRUE(fs.WriteFileAtomic(dir.path() / "agent.conf.d" / "30-typo.toml", "[install\n"));
  auto broken = LoadConfig(main_file, fs);
  ASSERT_FALSE(broken);
  EXPECT_EQ(broken.error().code(), Errc::InvalidConfig);
  EXPECT_NE(broken.error().ToString().find("30-typo.toml"), std::string::npos)
      << broken.error().ToString();
}

}  // namespace
}  // namespace upkeep::agent
