// Agent configuration: parse, validate, reject unknown keys, dump.

#include "upkeep/agent/config.hpp"

#include <gtest/gtest.h>

#include "test_util.hpp"

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
