// Component namespaces: a target's path decides which component it may install, so the image
// repository's delegations decide who may ship the root filesystem, the bootloader or an
// application. Each attack below is signed correctly by some role of the repository; the device
// must refuse it with the exact error and keep its slots, journal and components as they were.

#include <gtest/gtest.h>

#include "http_test_server.hpp"
#include "simulated_device.hpp"
#include "test_util.hpp"
#include "upkeep/agent/agent.hpp"
#include "upkeep/metadata/errc.hpp"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using testing::MakeImage;
using testing::ReleaseRepo;
using testing::ReleaseSpec;
using testing::SimulatedDevice;

constexpr std::size_t kImageSize = 200 * 1024;

class NamespaceTest : public ::testing::Test {
 protected:
  NamespaceTest()
      : old_image_(MakeImage(kImageSize, 1)),
        repo_(tmp_ / "release"),
        device_(tmp_ / "device", repo_.root_path(), old_image_) {}

  void SetUp() override {
    // vendor/* belongs to a third party; apps/cam/* and apps/door/* to two application teams.
    repo_.Delegate("vendor", {"vendor/*"});
    repo_.Delegate("cam", {"apps/cam/*"});
    repo_.Delegate("door", {"apps/door/*"});
    ReleaseSpec good;
    good.image = MakeImage(kImageSize, 2);
    repo_.Add(good);
    repo_.Publish();
    fs::copy_file(repo_.root_path(), tmp_ / "root.json");
    device_.config.trust.root = tmp_ / "root.json";
    for (const std::string name : {"bootloader", "cam", "door"}) {
      ModuleConfig m;
      m.command = {UPKEEP_MODULE_BIN, "file"};
      m.args_json = metadata::Json{{"dest", (tmp_ / (name + ".bin")).string()}}.dump();
      if (name != "bootloader") m.target_namespace = "apps/" + name + "/";
      device_.config.components[name] = m;
    }
    device_.Boot();
  }

  Result<InstallOutcome> InstallFromServer(const std::string& target) {
    repo_.Publish();
    testing::HttpTestServer server(repo_.www());
    return device_.Agent().Install(server.base_url(), target);
  }

  // Nothing moved: slot a booted and intact, slot b unwritten, no update in the journal, no
  // component recorded, nothing delivered to any module.
  void ExpectDeviceUnchanged() {
    EXPECT_EQ(device_.Slot("a"), old_image_);
    EXPECT_EQ(device_.Slot("b"), "");
    auto state = device_.Agent().Status();
    ASSERT_TRUE(state.has_value()) << state.error().ToString();
    EXPECT_FALSE(state->state.update.has_value());
    EXPECT_TRUE(state->state.components.empty());
    EXPECT_TRUE(state->state.security.empty());
    ASSERT_TRUE(state->boot.has_value());
    EXPECT_EQ(state->boot->slot, "a");
    EXPECT_FALSE(state->boot->trial);
    for (const char* name : {"bootloader", "cam", "door"}) {
      EXPECT_FALSE(fs::exists(tmp_ / (std::string(name) + ".bin"))) << name;
    }
  }

  testing::TempDir tmp_;
  std::string old_image_;
  ReleaseRepo repo_;
  SimulatedDevice device_;
};

// A delegated role signs a root filesystem image under its own paths: refused, nothing written.
TEST_F(NamespaceTest, RejectsDelegatedRoleShippingRootfsUnderItsOwnPaths) {
  ReleaseSpec evil;
  evil.name = "vendor/evil";
  evil.role = "vendor";
  evil.image = MakeImage(kImageSize, 66);
  repo_.Add(evil);
  EXPECT_ERRC(InstallFromServer(ReleaseRepo::payload_target(evil)), Errc::TargetOutsideNamespace);
  ExpectDeviceUnchanged();
}

// A delegated role tries to list a target in the root filesystem's namespace: the release tool
// refuses to sign it, and TUF's delegation paths keep the device's search from ever asking that
// role for such a path, so the target does not exist for the device.
TEST_F(NamespaceTest, RejectsDelegatedRoleSigningIntoRootfsNamespace) {
  EXPECT_EQ(repo_.TryAddFile("rootfs/evil.payload", "evil", "vendor"),
            make_error_code(repository::Errc::InvalidTarget));
  EXPECT_ERRC(InstallFromServer("rootfs/evil.payload"), metadata::Errc::TargetNotFound);
  ExpectDeviceUnchanged();
}

// A delegated role signs a bootloader under its own paths: no component lives there.
TEST_F(NamespaceTest, RejectsDelegatedRoleShippingBootloader) {
  repo_.AddFile("vendor/u-boot.bin", "evil loader", metadata::Component::Bootloader, "9", 1,
                "vendor");
  EXPECT_ERRC(InstallFromServer("vendor/u-boot.bin"), Errc::TargetOutsideNamespace);
  ExpectDeviceUnchanged();
}

// One application team cannot ship the other's application: its role is never consulted for the
// other's paths, and its own paths install only its own component.
TEST_F(NamespaceTest, RejectsDelegationShippingAnotherDelegationsApplication) {
  EXPECT_EQ(repo_.TryAddFile("apps/door/app.bin", "cam's code", "cam"),
            make_error_code(repository::Errc::InvalidTarget));
  repo_.AddFile("apps/cam/app.bin", "cam 2", metadata::Component::Application, "2", 1, "cam");
  EXPECT_ERRC(InstallFromServer("apps/door/app.bin"), metadata::Errc::TargetNotFound);
  ExpectDeviceUnchanged();
  // The team's own application installs into its own component only.
  auto installed = InstallFromServer("apps/cam/app.bin");
  ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
  EXPECT_EQ(installed->component, "cam");
  EXPECT_EQ(testing::ReadFileOrEmpty(tmp_ / "cam.bin"), "cam 2");
  EXPECT_FALSE(fs::exists(tmp_ / "door.bin"));
}

// An application's role claims the root filesystem for a file in its namespace: refused.
TEST_F(NamespaceTest, RejectsApplicationTargetClaimingRootfs) {
  ReleaseSpec evil;
  evil.name = "apps/cam/rootfs";
  evil.role = "cam";
  evil.image = MakeImage(kImageSize, 66);
  repo_.Add(evil);
  EXPECT_ERRC(InstallFromServer(ReleaseRepo::payload_target(evil)), Errc::TargetOutsideNamespace);
  ExpectDeviceUnchanged();
}

// A rootfs-namespace target claiming to be an application is refused too: the root filesystem's
// paths carry root filesystem images only.
TEST_F(NamespaceTest, RejectsRootfsNamespaceTargetClaimingAnotherComponent) {
  repo_.AddFile("rootfs/app.bin", "not an image", metadata::Component::Application, "2");
  EXPECT_ERRC(InstallFromServer("rootfs/app.bin"), Errc::TargetOutsideNamespace);
  ExpectDeviceUnchanged();
}

// The chunk index decides every byte written to the slot: an index signed by a delegated role
// outside the root filesystem's namespace is refused before any byte is written.
TEST_F(NamespaceTest, RejectsRootfsWhoseChunkIndexComesFromAnotherNamespace) {
  ReleaseSpec mixed;
  mixed.name = "rootfs/mixed";
  mixed.index_name = "vendor/mixed.chunks.json";
  mixed.index_role = "vendor";
  mixed.image = MakeImage(kImageSize, 66);
  repo_.Add(mixed);
  EXPECT_ERRC(InstallFromServer(ReleaseRepo::payload_target(mixed)), Errc::TargetOutsideNamespace);
  ExpectDeviceUnchanged();
}

// Positive control: the top-level role's image in rootfs/ installs.
TEST_F(NamespaceTest, InstallsRootfsFromItsNamespace) {
  auto installed = InstallFromServer("rootfs/image-2.0.payload");
  ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
  EXPECT_EQ(installed->component, "rootfs");
  EXPECT_EQ(device_.Slot("b"), MakeImage(kImageSize, 2));
}

}  // namespace
}  // namespace upkeep::agent
