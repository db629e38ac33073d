// Release choice without a fleet server: from the image repository's targets, per component the
// newest release for this device's hardware that is newer than what is installed.

#include "upkeep/agent/release_choice.hpp"

#include <gtest/gtest.h>

#include "update_metadata_fixture.hpp"

namespace upkeep::agent {
namespace {

using metadata::Json;

metadata::TargetFile Target(const std::string& path, const std::string& version,
                            std::uint64_t security_version,
                            const std::vector<std::string>& hardware = {"acme-cam-v2"},
                            const std::string& component = "rootfs") {
  metadata::TargetFile t;
  t.path = path;
  t.length = 100;
  t.hashes["sha256"] = std::string(64, 'a');
  t.custom = testing::ReleaseCustom("feature", version, hardware);
  t.custom["upkeep"]["security_version"] = security_version;
  t.custom["upkeep"]["component"] = component;
  return t;
}

class ReleaseChoiceTest : public ::testing::Test {
 protected:
  ReleaseChoiceTest() {
    config_.device.hardware = "acme-cam-v2";
    config_.components["app"].target_namespace = "app/";
    state_.components["rootfs"] = {"2.4.0", "rootfs/2.4.0.payload", "", 0, 3, "a"};
    state_.security["rootfs"] = {3, 0};
  }
  void Add(metadata::TargetFile t) { targets_[t.path] = std::move(t); }
  std::vector<std::string> Chosen() {
    std::vector<std::string> out;
    for (const auto& c : ChooseReleases(config_, state_, targets_)) {
      out.push_back(c.component + ":" + c.target.path);
    }
    return out;
  }
  AgentConfig config_;
  DeviceState state_;
  std::map<std::string, metadata::TargetFile, std::less<>> targets_;
};

TEST(CompareVersionsTest, ComparesSegmentsNumericallyAndByText) {
  EXPECT_LT(CompareVersions("2.4.9", "2.4.10"), 0);
  EXPECT_LT(CompareVersions("2.4", "2.4.1"), 0);
  EXPECT_EQ(CompareVersions("2.4.1", "2.4.1"), 0);
  EXPECT_GT(CompareVersions("10.0", "9.9.9"), 0);
  EXPECT_LT(CompareVersions("2.5.0-beta", "2.5.0-rc"), 0);
  EXPECT_GT(CompareVersions("3", "2.99"), 0);
}

TEST_F(ReleaseChoiceTest, TakesNewestReleaseForThisHardwarePerComponent) {
  Add(Target("rootfs/2.5.0.payload", "2.5.0", 3));
  Add(Target("rootfs/2.10.0.payload", "2.10.0", 3));
  Add(Target("rootfs/9.0.0.payload", "9.0.0", 9, {"other-model"}));  // not for this device
  Add(Target("app/1.2.tar", "1.2", 0, {"acme-cam-v2"}, "application"));
  EXPECT_EQ(Chosen(), (std::vector<std::string>{"app:app/1.2.tar", "rootfs:rootfs/2.10.0.payload"}));
}

// A higher security version wins over a higher version number; nothing below the floor or not
// newer than the installed release is taken.
TEST_F(ReleaseChoiceTest, PrefersHigherSecurityVersionAndNeverGoesBack) {
  Add(Target("rootfs/2.4.0.payload", "2.4.0", 3));    // installed
  Add(Target("rootfs/2.3.9.payload", "2.3.9", 2));    // below the floor
  Add(Target("rootfs/2.6.0.payload", "2.6.0", 3));
  Add(Target("rootfs/2.5.1.payload", "2.5.1", 4));    // security fix: wins
  EXPECT_EQ(Chosen(), std::vector<std::string>{"rootfs:rootfs/2.5.1.payload"});
  state_.components["rootfs"] = {"2.5.1", "rootfs/2.5.1.payload", "", 0, 4, "b"};
  state_.security["rootfs"] = {4, 0};
  EXPECT_TRUE(Chosen().empty());  // 2.6.0 carries security_version 3: below the floor
}

// Targets a repository lists for other purposes are skipped, never an error: no update
// metadata, a namespace this device does not have, metadata claiming another component, chunk
// indexes.
TEST_F(ReleaseChoiceTest, SkipsTargetsThatAreNotReleasesForThisDevice) {
  metadata::TargetFile plain;
  plain.path = "rootfs/readme.txt";
  plain.length = 1;
  Add(plain);
  Add(Target("vendor/blob.bin", "5.0", 9, {"acme-cam-v2"}, "application"));
  Add(Target("rootfs/evil.payload", "9.0", 9, {"acme-cam-v2"}, "application"));
  auto chunked = Target("rootfs/2.7.0.payload", "2.7.0", 3);
  chunked.custom["upkeep"]["payload"] = {
      {"format", "chunked"}, {"installed_size", 100}, {"chunk_index", "rootfs/2.7.0.chunks.json"}};
  Add(chunked);
  Add(Target("rootfs/2.7.0.chunks.json", "2.7.0", 3));
  EXPECT_EQ(Chosen(), std::vector<std::string>{"rootfs:rootfs/2.7.0.payload"});
}

}  // namespace
}  // namespace upkeep::agent
