// The director repository and Uptane full verification (director.hpp, docs/formats/director.md).
// The server side signs a per-device repository; the device verifies it with the TUF workflow
// against its pinned director root and checks every target against the image repository. Section
// numbers refer to the Uptane Standard (5.2.3.1 "Metadata about images", 5.3.2 "Director
// repository", 5.4.4.2 "Full verification", 5.4.4.3-5.4.4.6 "How to check ... metadata").

#include "upkeep/metadata/director.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <stdexcept>

#include "memory_fetcher.hpp"
#include "repository_simulator.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "update_metadata_fixture.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/metadata/update_metadata.hpp"

namespace upkeep::metadata {
namespace {

using testing::MemoryFetcher;
using testing::RepositorySimulator;
using testing::TempDir;

constexpr const char* kDevice = "d-5f2c";
constexpr const char* kOtherDevice = "d-9a01";
constexpr const char* kModel = "acme-cam-v2";
constexpr const char* kImage = "rootfs/2.5.0.payload";
constexpr const char* kImageContent = "rootfs 2.5.0 image bytes";
constexpr const char* kOtherModelImage = "rootfs/other-2.5.0.payload";

template <typename T>
T Must(Result<T> r) {
  if (!r) throw std::runtime_error(r.error().ToString());
  return std::move(r).value();
}

crypto::PrivateKey NewKey() {
  return Must(crypto::PrivateKey::Generate(crypto::KeyAlgorithm::Ed25519));
}

// Update metadata of an image-repository target for `hardware`.
Json UpdateCustom(const std::vector<std::string>& hardware) {
  return testing::ImageUpdateCustom(hardware);
}

// The director's keys: one offline root key and one online key per role.
struct DirectorKeys {
  crypto::PrivateKey root = NewKey();
  DirectorOnlineKeys online{{NewKey()}, {NewKey()}, {NewKey()}};

  [[nodiscard]] DirectorRootKeys RootKeys() const {
    return {{{root.public_key()}, 1},
            {{online.targets[0].public_key()}, 1},
            {{online.snapshot[0].public_key()}, 1},
            {{online.timestamp[0].public_key()}, 1}};
  }
};

class DirectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_.AddTarget("targets", kImage, kImageContent);
    image_.targets["targets"][kImage]["custom"] = UpdateCustom({kModel, "acme-cam-v2-pro"});
    image_.AddTarget("targets", kOtherModelImage, "other model image");
    image_.targets["targets"][kOtherModelImage]["custom"] = UpdateCustom({"acme-doorbell"});
    image_.Publish();
    image_.ServeTo(image_fetcher_);
    std::filesystem::create_directories(image_dir_);
    std::filesystem::create_directories(director_dir_);
    std::ofstream(image_dir_ / "root.json", std::ios::binary) << image_.RootBytes(1);

    root_bytes_ = Must(CreateDirectorRoot(keys_.RootKeys(), {keys_.root}, 1, Now() + kYear));
    root_ = Must(ParseRoot(root_bytes_));
    std::ofstream(director_dir_ / "root.json", std::ios::binary) << root_bytes_;

    image_target_ = Must(image_updater_.GetTargetInfo(kImage));
  }

  static constexpr std::chrono::days kYear{365};
  [[nodiscard]] TimePoint Now() const { return clock_.Now(); }

  DirectorBuildRequest Request(std::vector<TargetFile> assignments, std::uint64_t counter,
                               const std::string& device = kDevice) const {
    DirectorBuildRequest r;
    r.device_id = device;
    r.hardware = kModel;
    r.counter = counter;
    r.assignments = std::move(assignments);
    r.previous = last_.versions;
    r.now = Now();
    return r;
  }

  // Builds with `keys` (the server's by default) and remembers the versions, as the server does.
  DirectorRepository Build(const DirectorBuildRequest& request) {
    return Build(request, root_, keys_.online);
  }
  DirectorRepository Build(const DirectorBuildRequest& request, const Root& root,
                           const DirectorOnlineKeys& keys) {
    last_ = Must(BuildDirectorRepository(root, keys, request));
    return last_;
  }

  static DirectorFiles Files(const DirectorRepository& repo, std::vector<std::string> roots = {}) {
    return {std::move(roots), repo.timestamp, repo.snapshot, repo.targets};
  }

  Result<DirectorVerified> Verify(const DirectorFiles& files, std::uint64_t sent,
                                  std::uint64_t accepted = 0) {
    return VerifyDirectorAnswer(files, director_dir_, fs_, clock_, image_updater_,
                                {kDevice, kModel, sent, accepted});
  }

  // Re-signs a built repository after `edit` changed its targets, as a holder of the online keys
  // can (versions one above what was built).
  DirectorFiles Resign(const DirectorRepository& repo, const std::function<void(Targets&)>& edit) {
    Targets targets = Must(ParseTargets(repo.targets));
    edit(targets);
    targets.version += 1;
    targets.ClearSignatures();
    EXPECT_TRUE(targets.Sign(keys_.online.targets[0]));
    const std::string targets_bytes = Must(targets.ToBytes());
    Snapshot snapshot = Snapshot::Create(Now() + std::chrono::days(7));
    snapshot.version = repo.versions.snapshot + 1;
    snapshot.body.meta["targets.json"].version = targets.version;
    EXPECT_TRUE(snapshot.Sign(keys_.online.snapshot[0]));
    const std::string snapshot_bytes = Must(snapshot.ToBytes());
    Timestamp timestamp = Timestamp::Create(Now() + std::chrono::days(1));
    timestamp.version = repo.versions.timestamp + 1;
    timestamp.body.snapshot_meta.version = snapshot.version;
    EXPECT_TRUE(timestamp.Sign(keys_.online.timestamp[0]));
    return {{}, Must(timestamp.ToBytes()), snapshot_bytes, targets_bytes};
  }

  FakeClock clock_{*ParseDateTime("2026-06-01T00:00:00Z")};
  RepositorySimulator image_{clock_.Now()};
  MemoryFetcher image_fetcher_;
  LocalFilesystem fs_;
  TempDir dir_;
  std::filesystem::path image_dir_ = dir_.path() / "image";
  std::filesystem::path director_dir_ = dir_.path() / "director";
  Updater image_updater_{image_dir_, RepositorySimulator::kMetadataUrl, image_fetcher_, fs_,
                         clock_};
  DirectorKeys keys_;
  std::string root_bytes_;
  Root root_;
  TargetFile image_target_;
  DirectorRepository last_;
};

// ---------------------------------------------------------------------------------------------
// Server side

// Uptane 5.2.3.1.1 Custom metadata about images: the director copies path, length and hashes and
// replaces custom by the device, hardware and counter.
TEST_F(DirectorTest, SignsAssignmentWithDeviceHardwareAndCounter) {
  const auto repo = Build(Request({image_target_}, 42));
  EXPECT_EQ(repo.versions, (DirectorVersions{1, 1, 1}));
  const Targets targets = Must(ParseTargets(repo.targets));
  ASSERT_EQ(targets.body.targets.size(), 1u);
  const TargetFile& file = targets.body.targets.at(kImage);
  EXPECT_EQ(file.length, image_target_.length);
  EXPECT_EQ(file.hashes, image_target_.hashes);
  const Json expected = {
      {"upkeep_director", {{"device", kDevice}, {"hardware", kModel}, {"counter", 42}}}};
  EXPECT_EQ(file.custom, expected);
  EXPECT_EQ(targets.unrecognized_fields.at("custom"), expected);
}

// Uptane 5.3.2.1 Directing installation: an unchanged assignment keeps targets and snapshot and
// re-signs only the timestamp; a changed one moves every version up by one.
TEST_F(DirectorTest, VersionsGrowByOneAndUnchangedAssignmentKeepsTargets) {
  const auto first = Build(Request({image_target_}, 10));
  ASSERT_TRUE(Verify(Files(first), 10));
  auto again_request = Request({image_target_}, 11);
  again_request.previous_targets = first.targets;
  again_request.previous_snapshot = first.snapshot;
  const auto again = Build(again_request);
  EXPECT_FALSE(again.targets_changed);
  EXPECT_EQ(again.versions, (DirectorVersions{1, 1, 2}));
  EXPECT_EQ(again.targets, first.targets);
  EXPECT_EQ(again.snapshot, first.snapshot);
  // The kept targets carry the counter they were signed at, which the device still accepts.
  auto verified = Verify(Files(again), 11, 10);
  ASSERT_TRUE(verified) << verified.error().ToString();
  EXPECT_EQ(verified->counter, 10u);
  EXPECT_EQ(verified->images.size(), 1u);

  auto changed_request = Request({}, 12);
  changed_request.previous_targets = again.targets;
  changed_request.previous_snapshot = again.snapshot;
  const auto changed = Build(changed_request);
  EXPECT_TRUE(changed.targets_changed);
  EXPECT_EQ(changed.versions, (DirectorVersions{2, 2, 3}));

  // Without the previous files every role is re-signed.
  const auto resigned = Build(Request({}, 13));
  EXPECT_EQ(resigned.versions, (DirectorVersions{3, 3, 4}));
}

// Uptane 5.4.4.6 step 3: the server refuses to sign with keys its root does not list, since every
// device would reject the answer.
TEST_F(DirectorTest, RefusesToSignWithKeysTheRootDoesNotList) {
  DirectorOnlineKeys wrong = keys_.online;
  wrong.snapshot = {NewKey()};
  EXPECT_ERRC(BuildDirectorRepository(root_, wrong, Request({image_target_}, 1)),
              Errc::ThresholdNotMet);
}

// Uptane 5.4.4.3 step 2.3: a director root that its own root keys do not sign is not created.
TEST_F(DirectorTest, CreateRootNeedsItsOwnThreshold) {
  EXPECT_ERRC(CreateDirectorRoot(keys_.RootKeys(), {NewKey()}, 1, Now() + kYear),
              Errc::ThresholdNotMet);
  auto no_threshold = keys_.RootKeys();
  no_threshold.timestamp.threshold = 2;
  EXPECT_ERRC(CreateDirectorRoot(no_threshold, {keys_.root}, 1, Now() + kYear),
              Errc::InvalidMetadata);
}

// ---------------------------------------------------------------------------------------------
// Device side

// Uptane 5.4.4.2 Full verification: the director's answer verifies and yields the image
// repository's target, with the image repository's update metadata.
TEST_F(DirectorTest, RoundTripYieldsImageRepositoryTarget) {
  auto verified = Verify(Files(Build(Request({image_target_}, 42))), 42);
  ASSERT_TRUE(verified) << verified.error().ToString();
  EXPECT_EQ(verified->counter, 42u);
  ASSERT_EQ(verified->images.size(), 1u);
  EXPECT_EQ(verified->images[0], image_target_);
  auto update = UpdateMetadataOf(verified->images[0]);
  ASSERT_TRUE(update) << update.error().ToString();
  EXPECT_EQ(update->version, "2.5.0");
}

// Uptane 5.2.3.1 Metadata about images: an empty assignment still names the device, verifies and
// yields nothing to install.
TEST_F(DirectorTest, EmptyAssignmentVerifiesWithNothingToInstall) {
  auto verified = Verify(Files(Build(Request({}, 7))), 7);
  ASSERT_TRUE(verified) << verified.error().ToString();
  EXPECT_TRUE(verified->images.empty());
  EXPECT_EQ(verified->counter, 7u);
}

// Uptane 5.4.4.2 step 2 / 5.4.4.3 step 2: the device follows a director root rotation, and the
// online keys of the old root no longer sign for it.
TEST_F(DirectorTest, FollowsDirectorRootRotation) {
  ASSERT_TRUE(Verify(Files(Build(Request({}, 1))), 1));
  DirectorKeys next;
  const std::string root2 =
      Must(CreateDirectorRoot(next.RootKeys(), {keys_.root, next.root}, 2, Now() + kYear));
  const Root parsed2 = Must(ParseRoot(root2));
  auto verified =
      Verify(Files(Build(Request({image_target_}, 2), parsed2, next.online), {root2}), 2, 1);
  ASSERT_TRUE(verified) << verified.error().ToString();
  EXPECT_EQ(verified->images.size(), 1u);
  EXPECT_EQ(testing::ReadFileOrEmpty(director_dir_ / "root.json"), root2);

  // Old online keys, signing as if nothing rotated.
  EXPECT_ERRC(Verify(Files(Build(Request({image_target_}, 3), root_, keys_.online)), 3, 2),
              Errc::ThresholdNotMet);
}

// Uptane 5.4.4.3 step 2.3: a director root rotation not signed by the pinned root's keys is
// refused.
TEST_F(DirectorTest, RejectsRootRotationNotSignedByPinnedRoot) {
  DirectorKeys attacker;
  const std::string root2 =
      Must(CreateDirectorRoot(attacker.RootKeys(), {attacker.root}, 2, Now() + kYear));
  const Root parsed2 = Must(ParseRoot(root2));
  EXPECT_ERRC(
      Verify(Files(Build(Request({image_target_}, 2), parsed2, attacker.online), {root2}), 2),
      Errc::RootNotSignedByTrustedRoot);
  EXPECT_EQ(testing::ReadFileOrEmpty(director_dir_ / "root.json"), root_bytes_);
}

// Uptane 5.4.4.3: roots in the answer must parse and name distinct versions.
TEST_F(DirectorTest, RejectsAnswerWithMalformedOrDuplicateRoot) {
  const auto repo = Build(Request({}, 1));
  EXPECT_ERRC(Verify(Files(repo, {"{not json"}), 1), Errc::InvalidMetadata);
  DirectorKeys next;
  const std::string root2 =
      Must(CreateDirectorRoot(next.RootKeys(), {keys_.root, next.root}, 2, Now() + kYear));
  EXPECT_ERRC(Verify(Files(repo, {root2, root2}), 1), Errc::InvalidMetadata);
}

// Uptane 5.4.4.2 step 10.1: a compromised director cannot install an image the image repository
// does not list.
TEST_F(DirectorTest, CompromisedDirectorCannotInstallUnlistedImage) {
  TargetFile evil;
  evil.path = "rootfs/evil.payload";
  evil.length = 4;
  evil.hashes["sha256"] = HexEncode(crypto::Sha256("evil"));
  EXPECT_ERRC(Verify(Files(Build(Request({evil}, 5))), 5),
              Errc::DirectorTargetNotInImageRepository);
}

// Uptane 5.4.4.2 step 10.2.1: a compromised director cannot swap the hash of a listed image.
TEST_F(DirectorTest, CompromisedDirectorCannotChangeImageHash) {
  TargetFile evil = image_target_;
  evil.hashes["sha256"] = HexEncode(crypto::Sha256("evil"));
  EXPECT_ERRC(Verify(Files(Build(Request({evil}, 5))), 5), Errc::DirectorImageMismatch);
}

// Uptane 5.4.4.2 step 10.2.1: a compromised director cannot change the length of a listed image.
TEST_F(DirectorTest, CompromisedDirectorCannotChangeImageLength) {
  TargetFile evil = image_target_;
  evil.length += 1;
  EXPECT_ERRC(Verify(Files(Build(Request({evil}, 5))), 5), Errc::DirectorImageMismatch);
}

// Uptane 5.4.4.2 step 10.2.2: a compromised director cannot install an image the image repository
// approved for other hardware only.
TEST_F(DirectorTest, CompromisedDirectorCannotInstallImageForOtherHardware) {
  const TargetFile other = Must(image_updater_.GetTargetInfo(kOtherModelImage));
  EXPECT_ERRC(Verify(Files(Build(Request({other}, 5))), 5), Errc::DirectorImageNotForHardware);
}

// Uptane 5.2.3.1.1: a director target naming another hardware model is refused.
TEST_F(DirectorTest, RejectsDirectorTargetForOtherHardware) {
  auto request = Request({image_target_}, 5);
  request.hardware = "acme-cam-v2-pro";
  EXPECT_ERRC(Verify(Files(Build(request)), 5), Errc::DirectorWrongHardware);
}

// Uptane 5.4.4.4 step 3: a replayed older answer is a timestamp rollback.
TEST_F(DirectorTest, RejectsReplayedOlderAnswer) {
  const auto old_answer = Files(Build(Request({image_target_}, 10)));
  ASSERT_TRUE(Verify(old_answer, 10));
  ASSERT_TRUE(Verify(Files(Build(Request({}, 11))), 11, 10));
  EXPECT_ERRC(Verify(old_answer, 12, 11), Errc::VersionRollback);
}

// Uptane 5.2.3.1 (identifier against replay): a compromised director re-signing an old
// assignment at an older counter than the device accepted is refused.
TEST_F(DirectorTest, CompromisedDirectorCannotReplayOlderCounter) {
  ASSERT_TRUE(Verify(Files(Build(Request({}, 10))), 10));
  EXPECT_ERRC(Verify(Files(Build(Request({image_target_}, 9))), 11, 10),
              Errc::DirectorStaleCounter);
}

// Uptane 5.2.3.1: an answer signed ahead for a counter the device has not sent is refused.
TEST_F(DirectorTest, RejectsCounterAboveTheOneSent) {
  EXPECT_ERRC(Verify(Files(Build(Request({image_target_}, 12))), 11), Errc::DirectorCounterAhead);
}

// Uptane 5.2.3.1.1 (ECU identifier): a compromised director cannot serve this device an answer
// made for another device, with or without images.
TEST_F(DirectorTest, CompromisedDirectorCannotServeAnotherDevicesAnswer) {
  EXPECT_ERRC(Verify(Files(Build(Request({image_target_}, 5, kOtherDevice))), 5),
              Errc::DirectorWrongDevice);
  EXPECT_ERRC(Verify(Files(Build(Request({}, 6, kOtherDevice))), 6), Errc::DirectorWrongDevice);
}

// Uptane 5.4.4.2 / 5.2.3.1.1: each target names the device, not only the targets role.
TEST_F(DirectorTest, RejectsTargetNamingAnotherDevice) {
  const auto repo = Build(Request({image_target_}, 5));
  auto files = Resign(repo, [](Targets& t) {
    t.body.targets.at(kImage).custom["upkeep_director"]["device"] = kOtherDevice;
  });
  EXPECT_ERRC(Verify(files, 5), Errc::DirectorWrongDevice);
}

// Uptane 5.2.3.1: director targets without the director's object are refused.
TEST_F(DirectorTest, RejectsTargetsWithoutDirectorObject) {
  const auto repo = Build(Request({}, 5));
  auto files = Resign(repo, [](Targets& t) { t.unrecognized_fields.erase("custom"); });
  EXPECT_ERRC(Verify(files, 5), Errc::InvalidMetadata);
}

// Uptane 5.4.4.6 step 6: director targets must not delegate.
TEST_F(DirectorTest, RejectsDirectorTargetsWithDelegations) {
  const auto repo = Build(Request({}, 5));
  auto files = Resign(repo, [](Targets& t) { t.body.delegations = Delegations{}; });
  EXPECT_ERRC(Verify(files, 5), Errc::DirectorHasDelegations);
}

// Uptane 5.4.4.4 step 2: an answer signed by keys the pinned director root does not list fails
// TUF.
TEST_F(DirectorTest, RejectsAnswerSignedByKeysNotInPinnedRoot) {
  DirectorKeys attacker;
  const Root attacker_root = Must(
      ParseRoot(Must(CreateDirectorRoot(attacker.RootKeys(), {attacker.root}, 1, Now() + kYear))));
  EXPECT_ERRC(Verify(Files(Build(Request({image_target_}, 5), attacker_root, attacker.online)), 5),
              Errc::ThresholdNotMet);
}

// Uptane 5.4.4.4 step 4: an expired director timestamp is a freeze attack.
TEST_F(DirectorTest, RejectsExpiredDirectorTimestamp) {
  auto request = Request({image_target_}, 5);
  request.now = Now() - std::chrono::days(2);
  EXPECT_ERRC(Verify(Files(Build(request)), 5), Errc::Expired);
}

}  // namespace
}  // namespace upkeep::metadata
