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
