// The TUF 1.0 client workflow (specification section 5, "Detailed client workflow"), rule by rule.
// Each test starts from a good simulated repository, breaks one thing, and asserts the exact
// error code. Section numbers refer to tuf-spec 1.0.x.

#include "upkeep/metadata/updater.hpp"

#include <gtest/gtest.h>

#include "test_util.hpp"

#include <cctype>
#include <fstream>
#include <sstream>

#include "memory_fetcher.hpp"
#include "repository_simulator.hpp"
#include "temp_dir.hpp"
#include "upkeep/common/encoding.hpp"

namespace upkeep::metadata {
namespace {

using testing::MemoryFetcher;
using testing::RepositorySimulator;
using testing::TempDir;

class UpdaterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sim_.Publish();
    std::ofstream(dir_ / "root.json", std::ios::binary) << sim_.RootBytes(1);
  }

  Updater MakeUpdater(UpdaterConfig config = {}) {
    sim_.ServeTo(fetcher_);
    return Updater(dir_.path(), RepositorySimulator::kMetadataUrl, fetcher_, fs_, clock_, config);
  }

  Result<void> Refresh(UpdaterConfig config = {}) {
    fetcher_.ClearRequests();
    return MakeUpdater(config).Refresh();
  }

  std::string Local(const std::string& role) {
    return testing::ReadFileOrEmpty(dir_ / (role + ".json"));
  }

  // Request paths relative to the repository, in order.
  std::vector<std::string> Requests() const {
    std::vector<std::string> out;
    for (const auto& url : fetcher_.requests()) {
      const std::string meta = RepositorySimulator::kMetadataUrl;
      const std::string tgt = RepositorySimulator::kTargetsUrl;
      if (url.starts_with(meta)) out.push_back(url.substr(meta.size()));
      else if (url.starts_with(tgt)) out.push_back("targets/" + url.substr(tgt.size()));
      else out.push_back(url);
    }
    return out;
  }

  // Contents of every stored metadata file, to check that a failure changed nothing.
  std::map<std::string, std::string> Snapshot() const {
    std::map<std::string, std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
      out[e.path().filename().string()] = testing::ReadFileOrEmpty(e.path());
    }
    return out;
  }

  FakeClock clock_{*ParseDateTime("2026-01-01T00:00:00Z")};
  RepositorySimulator sim_{clock_.Now()};
  MemoryFetcher fetcher_;
  LocalFilesystem fs_;
  TempDir dir_;
};

// ---------------------------------------------------------------------------------------------
// Basic workflow

// A good repository refreshes, fetching root N+1, timestamp, snapshot and targets in that order.
TEST_F(UpdaterTest, RefreshFetchesTopLevelRolesInWorkflowOrder) {
  ASSERT_TRUE(Refresh());
  EXPECT_EQ(Requests(), (std::vector<std::string>{"2.root.json", "timestamp.json",
                                                  "1.snapshot.json", "1.targets.json"}));
  EXPECT_FALSE(Local("timestamp").empty());
  EXPECT_FALSE(Local("snapshot").empty());
  EXPECT_FALSE(Local("targets").empty());
}

// Stored snapshot and targets that still match the timestamp are not downloaded again.
TEST_F(UpdaterTest, SecondRefreshReusesStoredSnapshotAndTargets) {
  ASSERT_TRUE(Refresh());
  ASSERT_TRUE(Refresh());
  EXPECT_EQ(Requests(), (std::vector<std::string>{"2.root.json", "timestamp.json"}));
}

// Each role is persisted byte for byte as served (5.3.8, 5.4.5, 5.5.7, 5.6.6).
TEST_F(UpdaterTest, PersistsVerifiedMetadataExactlyAsServed) {
  ASSERT_TRUE(Refresh());
  EXPECT_EQ(Local("timestamp"), sim_.files[sim_.MetadataUrl("timestamp", 0)]);
  EXPECT_EQ(Local("snapshot"), sim_.files[sim_.MetadataUrl("snapshot", 1)]);
  EXPECT_EQ(Local("targets"), sim_.files[sim_.MetadataUrl("targets", 1)]);
}

// Without consistent snapshots, snapshot and targets use unversioned names (5.5.1, 5.6.1).
TEST(UpdaterNonConsistentTest, FetchesUnversionedSnapshotAndTargets) {
  FakeClock clock(*ParseDateTime("2026-01-01T00:00:00Z"));
  RepositorySimulator sim(clock.Now(), /*consistent_snapshot=*/false);
  sim.AddTarget("targets", "dir/file.txt", "hello");
  sim.Publish();
  TempDir dir;
  std::ofstream(dir / "root.json", std::ios::binary) << sim.RootBytes(1);
  MemoryFetcher fetcher;
  sim.ServeTo(fetcher);
  LocalFilesystem fs;
  Updater updater(dir.path(), RepositorySimulator::kMetadataUrl, fetcher, fs, clock);
  ASSERT_TRUE(updater.Refresh());
  auto info = updater.GetTargetInfo("dir/file.txt");
  ASSERT_TRUE(info);
  ASSERT_TRUE(updater.DownloadTarget(*info, RepositorySimulator::kTargetsUrl, dir.path()));
  EXPECT_EQ(fetcher.requests(),
            (std::vector<std::string>{sim.MetadataUrl("root", 2), sim.MetadataUrl("timestamp", 0),
                                      sim.MetadataUrl("snapshot", 0), sim.MetadataUrl("targets", 0),
                                      std::string(RepositorySimulator::kTargetsUrl) +
                                          "dir/file.txt"}));
}

// A missing trusted root is a storage error, not a crash.
TEST_F(UpdaterTest, RefreshWithoutTrustedRootFails) {
  std::filesystem::remove(dir_ / "root.json");
  EXPECT_ERRC(Refresh(), Errc::StorageFailed);
}

// ---------------------------------------------------------------------------------------------
// 5.3 Root

// 5.3.3/5.3.9: every intermediate root is fetched in turn and the newest becomes trusted.
TEST_F(UpdaterTest, UpdatesRootThroughEveryIntermediateVersion) {
  for (int i = 0; i < 2; ++i) {
    auto old_signers = sim_.signers["root"];
    sim_.RotateTopLevelKey("root");
    sim_.Bump("root");
    // Cross-signed: the old key proves continuity, the new key its own threshold.
    sim_.signers["root"].insert(sim_.signers["root"].begin(), old_signers.begin(),
                                old_signers.end());
    sim_.Publish();
    sim_.signers["root"].erase(sim_.signers["root"].begin());
  }
  ASSERT_TRUE(Refresh());
  EXPECT_EQ(Requests()[0], "2.root.json");
  EXPECT_EQ(Requests()[1], "3.root.json");
  EXPECT_EQ(Requests()[2], "4.root.json");
  EXPECT_EQ(Local("root"), sim_.RootBytes(3));
}

// 5.3.4 (1): a new root must be signed by a threshold of the trusted root's keys.
TEST_F(UpdaterTest, RejectsNewRootNotSignedByTrustedRoot) {
  sim_.RotateTopLevelKey("root");
  sim_.Bump("root");
  sim_.Publish();  // signed by the new key only
  const auto before = Snapshot();
  EXPECT_ERRC(Refresh(), Errc::RootNotSignedByTrustedRoot);
  EXPECT_EQ(Snapshot(), before);
}

// 5.3.4 (2): a new root must also be signed by a threshold of its own keys.
TEST_F(UpdaterTest, RejectsNewRootNotSignedByItself) {
  auto old_signers = sim_.signers["root"];
  sim_.RotateTopLevelKey("root");
  sim_.Bump("root");
  sim_.signers["root"] = old_signers;  // only the old key signs
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::RootNotSignedByItself);
  EXPECT_EQ(Local("root"), sim_.RootBytes(1));
}

// 5.3.4: with a 2-of-3 root, one signature is not enough.
TEST_F(UpdaterTest, RejectsNewRootBelowThreshold) {
  sim_.AddTopLevelKey("root", crypto::KeyAlgorithm::EcdsaP256);
  sim_.AddTopLevelKey("root", crypto::KeyAlgorithm::RsaPss);
  sim_.root["roles"]["root"]["threshold"] = 2;
  sim_.Bump("root");
  auto all = sim_.signers["root"];
  // v2 is signed by v1's single key (threshold 1) and by all three of its own keys.
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  // v3 is signed by one key only: v2 requires two.
  sim_.Bump("root");
  sim_.signers["root"] = {all[1]};
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::RootNotSignedByTrustedRoot);
}

// 5.3.5: the root fetched as N+1 must say it is version N+1.
TEST_F(UpdaterTest, RejectsRootWhoseVersionIsNotNPlusOne) {
  sim_.root["version"] = 3;
  sim_.Publish();  // served as 3.root.json; copy it to 2.root.json
  sim_.files[sim_.MetadataUrl("root", 2)] = sim_.RootBytes(3);
  EXPECT_ERRC(Refresh(), Errc::RootVersionNotSequential);
  EXPECT_EQ(Local("root"), sim_.RootBytes(1));
}

// 5.3.3: the root loop is bounded by max_root_rotations.
TEST_F(UpdaterTest, StopsFetchingRootsAtMaxRootRotations) {
  for (int i = 0; i < 4; ++i) {
    sim_.Bump("root");
    sim_.Publish();
  }
  UpdaterConfig config;
  config.max_root_rotations = 2;
  ASSERT_TRUE(Refresh(config));
  EXPECT_EQ(Requests()[0], "2.root.json");
  EXPECT_EQ(Requests()[1], "3.root.json");
  EXPECT_EQ(Requests()[2], "timestamp.json");
  EXPECT_EQ(Local("root"), sim_.RootBytes(3));
}

// 5.3.6: an expired intermediate root is fine; only the final root's expiry matters.
TEST_F(UpdaterTest, AcceptsExpiredIntermediateRoot) {
  sim_.root["expires"] = "2000-01-01T00:00:00Z";
  sim_.Bump("root");
  sim_.Publish();
  sim_.root["expires"] = "2030-01-01T00:00:00Z";
  sim_.Bump("root");
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  EXPECT_EQ(Local("root"), sim_.RootBytes(3));
}

// 5.3.10 (T-3 freeze): an expired final root stops the update.
TEST_F(UpdaterTest, RejectsExpiredFinalRoot) {
  sim_.root["expires"] = "2025-12-31T23:59:59Z";
  sim_.Bump("root");
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::Expired);
  // The new root itself was valid and is kept, so the next refresh starts from it; nothing
  // after the root is requested.
  EXPECT_EQ(Local("root"), sim_.RootBytes(2));
  EXPECT_TRUE(Local("timestamp").empty());
  EXPECT_EQ(Requests(), (std::vector<std::string>{"2.root.json", "3.root.json"}));
}

// 5.3.11 (T-2 fast-forward): after the timestamp key is rotated, a stored timestamp with an
// attacker-inflated version no longer blocks updates.
TEST_F(UpdaterTest, RecoversFromFastForwardAttackWhenTimestampKeyRotates) {
  sim_.timestamp["version"] = 1000;
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  ASSERT_FALSE(Local("timestamp").empty());
  sim_.RotateTopLevelKey("timestamp");
  sim_.timestamp["version"] = 1;
  sim_.Bump("root");
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  EXPECT_EQ(Local("timestamp"), sim_.files[sim_.MetadataUrl("timestamp", 0)]);
}

// 5.3.11: the same recovery for a snapshot key rotation; both stored files are discarded.
TEST_F(UpdaterTest, RecoversFromFastForwardAttackWhenSnapshotKeyRotates) {
  sim_.snapshot["version"] = 1000;
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  sim_.RotateTopLevelKey("snapshot");
  sim_.snapshot["version"] = 1;
  sim_.Bump("timestamp");
  sim_.Bump("root");
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  EXPECT_EQ(Local("snapshot"), sim_.files[sim_.MetadataUrl("snapshot", 1)]);
}

// ---------------------------------------------------------------------------------------------
// 5.4 Timestamp

// 5.4.2: a timestamp not signed by the timestamp role's keys is rejected.
TEST_F(UpdaterTest, RejectsTimestampSignedByWrongKey) {
  sim_.signers["timestamp"] = sim_.signers["snapshot"];
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::ThresholdNotMet);
  EXPECT_TRUE(Local("timestamp").empty());
}

// 5.4.2: a timestamp with no signatures at all is rejected.
TEST_F(UpdaterTest, RejectsUnsignedTimestamp) {
  sim_.signers["timestamp"].clear();
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::ThresholdNotMet);
}

// 5.4.2: a signature over different bytes (one field changed after signing) is rejected.
TEST_F(UpdaterTest, RejectsTimestampModifiedAfterSigning) {
  sim_.Publish();
  auto& bytes = sim_.files[sim_.MetadataUrl("timestamp", 0)];
  auto doc = Json::parse(bytes);
  doc["signed"]["expires"] = "2030-01-01T00:00:00Z";
  bytes = doc.dump();
  EXPECT_ERRC(Refresh(), Errc::ThresholdNotMet);
}

// 5.4.3.1 (T-2 rollback): a timestamp older than the trusted one is rejected.
TEST_F(UpdaterTest, RejectsTimestampVersionRollback) {
  sim_.timestamp["version"] = 5;
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  const auto before = Snapshot();
  sim_.timestamp["version"] = 4;
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::VersionRollback);
  EXPECT_EQ(Snapshot(), before);
}

// 5.4.3.1: an equal timestamp version is no error; the trusted copy is kept.
TEST_F(UpdaterTest, KeepsTrustedTimestampWhenVersionIsEqual) {
  ASSERT_TRUE(Refresh());
  const auto stored = Local("timestamp");
  sim_.timestamp["expires"] = "2026-01-20T00:00:00Z";  // same version, different bytes
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  EXPECT_EQ(Local("timestamp"), stored);
}

// 5.4.3.2: the timestamp may not list an older snapshot than the trusted timestamp did.
TEST_F(UpdaterTest, RejectsTimestampListingOlderSnapshot) {
  sim_.snapshot["version"] = 3;
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  sim_.snapshot["version"] = 2;
  sim_.Bump("timestamp");
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::SnapshotVersionRollback);
}

// 5.4.4 (T-3 freeze): an expired timestamp is rejected and not persisted.
TEST_F(UpdaterTest, RejectsExpiredTimestamp) {
  sim_.timestamp["expires"] = "2025-12-31T00:00:00Z";
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::Expired);
  EXPECT_TRUE(Local("timestamp").empty());
}

// T-3: metadata that was fresh goes stale when the clock passes its expiry.
TEST_F(UpdaterTest, DetectsFreezeWhenTimePassesExpiry) {
  ASSERT_TRUE(Refresh());
  clock_.Advance(std::chrono::days(31));
  EXPECT_ERRC(Refresh(), Errc::Expired);
}

// 5.4.1 (T-4 endless data): a timestamp beyond the size limit is cut off and rejected.
TEST_F(UpdaterTest, RejectsOversizedTimestamp) {
  sim_.Publish();
  sim_.files[sim_.MetadataUrl("timestamp", 0)] = std::string(20000, ' ');
  EXPECT_ERRC(Refresh(), Errc::MetadataTooLarge);
}

// Metadata of the wrong type at a role's URL is rejected.
TEST_F(UpdaterTest, RejectsSnapshotServedAsTimestamp) {
  sim_.Publish();
  sim_.files[sim_.MetadataUrl("timestamp", 0)] = sim_.files[sim_.MetadataUrl("snapshot", 1)];
  EXPECT_ERRC(Refresh(), Errc::WrongType);
}

// An unsupported major spec version is rejected.
TEST_F(UpdaterTest, RejectsUnsupportedSpecVersion) {
  sim_.timestamp["spec_version"] = "2.0.0";
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::UnsupportedSpecVersion);
}

// Garbage instead of JSON is rejected.
TEST_F(UpdaterTest, RejectsMalformedTimestamp) {
  sim_.Publish();
  sim_.files[sim_.MetadataUrl("timestamp", 0)] = "{\"signed\": ";
  EXPECT_ERRC(Refresh(), Errc::MalformedJson);
}

// A missing timestamp is a fetch failure.
TEST_F(UpdaterTest, FailsWhenTimestampIsMissing) {
  sim_.Publish();
  sim_.files.erase(sim_.MetadataUrl("timestamp", 0));
  EXPECT_ERRC(Refresh(), Errc::FetchFailed);
}

// ---------------------------------------------------------------------------------------------
// Thresholds and signatures

// 5.4.2: each key counts once, even when listed under two key IDs.
TEST_F(UpdaterTest, ThresholdCountsDistinctKeysNotKeyIds) {
  const auto& key = sim_.signers["timestamp"][0];
  const std::string alias = std::string(64, 'a');
  sim_.root["keys"][alias] = RepositorySimulator::KeyJson(key);
  sim_.root["roles"]["timestamp"]["keyids"].push_back(alias);
  sim_.root["roles"]["timestamp"]["threshold"] = 2;
  sim_.Bump("root");
  sim_.Publish();
  // Sign the timestamp once under each key ID.
  auto doc = Json::parse(sim_.files[sim_.MetadataUrl("timestamp", 0)]);
  auto sig = doc["signatures"][0];
  sig["keyid"] = alias;
  doc["signatures"].push_back(sig);
  sim_.files[sim_.MetadataUrl("timestamp", 0)] = doc.dump();
  EXPECT_ERRC(Refresh(), Errc::ThresholdNotMet);
}

// Two signatures with the same key ID make the metadata invalid.
TEST_F(UpdaterTest, RejectsDuplicateSignatureKeyIds) {
  sim_.Publish();
  auto doc = Json::parse(sim_.files[sim_.MetadataUrl("timestamp", 0)]);
  doc["signatures"].push_back(doc["signatures"][0]);
  sim_.files[sim_.MetadataUrl("timestamp", 0)] = doc.dump();
  EXPECT_ERRC(Refresh(), Errc::DuplicateSignature);
}

// Signatures from keys the role does not list are ignored, not counted.
TEST_F(UpdaterTest, IgnoresSignaturesFromUnlistedKeys) {
  sim_.signers["timestamp"].push_back(sim_.signers["targets"][0]);
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  sim_.signers["timestamp"] = {sim_.signers["targets"][0]};
  sim_.Bump("timestamp");
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::ThresholdNotMet);
}

// A key of a type upkeep does not implement does not invalidate the root; other keys count.
TEST_F(UpdaterTest, ToleratesUnknownKeyTypesInRoot) {
  sim_.root["keys"]["f00d"] = {{"keytype", "x-future"}, {"scheme", "x-future"},
                               {"keyval", {{"public", "00"}}}};
  sim_.root["roles"]["timestamp"]["keyids"].push_back("f00d");
  sim_.Bump("root");
  sim_.Publish();
  EXPECT_TRUE(Refresh());
}

// Unknown fields are part of the signed bytes: they are kept for the signature check.
TEST_F(UpdaterTest, VerifiesSignaturesOverUnknownFields) {
  sim_.timestamp["x-vendor"] = {{"note", "kept"}};
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  auto& bytes = sim_.files[sim_.MetadataUrl("timestamp", 0)];
  auto doc = Json::parse(bytes);
  doc["signed"]["x-vendor"]["note"] = "changed";
  doc["signed"]["version"] = 2;
  bytes = doc.dump();
  EXPECT_ERRC(Refresh(), Errc::ThresholdNotMet);
}

// T-6: one online key cannot sign targets.
TEST_F(UpdaterTest, RejectsTargetsSignedByOnlineKey) {
  sim_.signers["targets"] = sim_.signers["timestamp"];
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::ThresholdNotMet);
}

// ---------------------------------------------------------------------------------------------
// 5.5 Snapshot

// 5.5.2 (T-5 mix-and-match): the snapshot's hash must match the timestamp's.
TEST_F(UpdaterTest, RejectsSnapshotWhoseHashDiffersFromTimestamp) {
  sim_.meta_hashes_and_length = true;
  sim_.Publish();
  auto& bytes = sim_.files[sim_.MetadataUrl("snapshot", 1)];
  bytes[bytes.size() - 2] = bytes[bytes.size() - 2] == ' ' ? '\n' : ' ';
  EXPECT_ERRC(Refresh(), Errc::MetaHashMismatch);
  EXPECT_TRUE(Local("snapshot").empty());
}

// 5.5.1 (T-4): a snapshot longer than the timestamp's length is cut off and rejected.
TEST_F(UpdaterTest, RejectsSnapshotLongerThanTimestampSays) {
  sim_.meta_hashes_and_length = true;
  sim_.Publish();
  sim_.files[sim_.MetadataUrl("snapshot", 1)] += "    ";
  EXPECT_ERRC(Refresh(), Errc::MetaLengthMismatch);
}

// 5.5.2: a snapshot shorter than the timestamp's length is rejected.
TEST_F(UpdaterTest, RejectsSnapshotShorterThanTimestampSays) {
  sim_.meta_hashes_and_length = true;
  sim_.Publish();
  auto& bytes = sim_.files[sim_.MetadataUrl("snapshot", 1)];
  bytes.pop_back();
  EXPECT_ERRC(Refresh(), Errc::MetaLengthMismatch);
}

// 5.5.3: the snapshot must be signed by the snapshot role.
TEST_F(UpdaterTest, RejectsSnapshotSignedByWrongKey) {
  sim_.signers["snapshot"] = sim_.signers["timestamp"];
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::ThresholdNotMet);
}

// 5.5.4: the snapshot's version must be the one the timestamp names.
TEST_F(UpdaterTest, RejectsSnapshotVersionDifferentFromTimestamp) {
  sim_.Publish();
  sim_.timestamp["meta"]["snapshot.json"]["version"] = 2;
  sim_.files[sim_.MetadataUrl("snapshot", 2)] = sim_.files[sim_.MetadataUrl("snapshot", 1)];
  sim_.files[sim_.MetadataUrl("timestamp", 0)] =
      RepositorySimulator::Sign(sim_.timestamp, sim_.signers["timestamp"]);
  EXPECT_ERRC(Refresh(), Errc::SnapshotVersionMismatch);
}

// 5.5.5: a targets role listed before must stay listed.
TEST_F(UpdaterTest, RejectsSnapshotThatDropsATargetsRole) {
  sim_.AddDelegation("targets", {{"name", "apps"}, {"terminating", false}, {"paths", {"apps/*"}}});
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  sim_.Publish();
  sim_.snapshot["meta"].erase("apps.json");
  sim_.Bump("snapshot");
  sim_.Bump("timestamp");
  const std::string bytes = RepositorySimulator::Sign(sim_.snapshot, sim_.signers["snapshot"]);
  sim_.files[sim_.MetadataUrl("snapshot", 2)] = bytes;
  sim_.timestamp["meta"]["snapshot.json"] = {{"version", 2}};
  sim_.files[sim_.MetadataUrl("timestamp", 0)] =
      RepositorySimulator::Sign(sim_.timestamp, sim_.signers["timestamp"]);
  EXPECT_ERRC(Refresh(), Errc::TargetsRoleRemoved);
}

// 5.5.5 (T-2): the snapshot may not list an older targets version than the trusted snapshot.
TEST_F(UpdaterTest, RejectsSnapshotListingOlderTargets) {
  sim_.targets["version"] = 5;
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  sim_.targets["version"] = 4;
  sim_.Bump("snapshot");
  sim_.Bump("timestamp");
  sim_.Publish();
  auto before = Snapshot();
  EXPECT_ERRC(Refresh(), Errc::TargetsVersionRollback);
  auto after = Snapshot();
  before.erase("timestamp.json");  // the newer timestamp itself verified and is kept
  after.erase("timestamp.json");
  EXPECT_EQ(after, before);
}

// 5.5.6: an expired snapshot is rejected.
TEST_F(UpdaterTest, RejectsExpiredSnapshot) {
  sim_.snapshot["expires"] = "2025-06-01T00:00:00Z";
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::Expired);
  EXPECT_TRUE(Local("snapshot").empty());
}

// A stored snapshot that expired is replaced by downloading a fresh one.
TEST_F(UpdaterTest, DownloadsNewSnapshotWhenStoredOneExpired) {
  sim_.snapshot["expires"] = "2026-01-02T00:00:00Z";
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  clock_.Advance(std::chrono::days(2));
  sim_.snapshot["expires"] = "2026-02-01T00:00:00Z";
  sim_.Bump("snapshot");
  sim_.Bump("timestamp");
  sim_.Publish();
  ASSERT_TRUE(Refresh());
  EXPECT_EQ(Requests(), (std::vector<std::string>{"2.root.json", "timestamp.json",
                                                  "2.snapshot.json"}));
}

// ---------------------------------------------------------------------------------------------
// 5.6 Targets

// 5.6.2: targets must match the snapshot's hash.
TEST_F(UpdaterTest, RejectsTargetsWhoseHashDiffersFromSnapshot) {
  sim_.meta_hashes_and_length = true;
  sim_.Publish();
  auto& bytes = sim_.files[sim_.MetadataUrl("targets", 1)];
  bytes[bytes.size() - 2] = bytes[bytes.size() - 2] == ' ' ? '\n' : ' ';
  EXPECT_ERRC(Refresh(), Errc::MetaHashMismatch);
  EXPECT_TRUE(Local("targets").empty());
}

// 5.6.3: targets must be signed by the targets role.
TEST_F(UpdaterTest, RejectsTargetsSignedByWrongKey) {
  sim_.signers["targets"] = sim_.signers["snapshot"];
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::ThresholdNotMet);
}

// 5.6.4 (T-5 mix-and-match): targets must have the version the snapshot names.
TEST_F(UpdaterTest, RejectsTargetsVersionDifferentFromSnapshot) {
  sim_.Publish();
  sim_.targets["version"] = 2;
  sim_.files[sim_.MetadataUrl("targets", 1)] =
      RepositorySimulator::Sign(sim_.targets, sim_.signers["targets"]);
  EXPECT_ERRC(Refresh(), Errc::TargetsVersionMismatch);
}

// 5.6.5: expired targets are rejected.
TEST_F(UpdaterTest, RejectsExpiredTargets) {
  sim_.targets["expires"] = "2025-06-01T00:00:00Z";
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::Expired);
  EXPECT_TRUE(Local("targets").empty());
}

// 5.6.1: the snapshot must list targets.json.
TEST_F(UpdaterTest, RejectsSnapshotWithoutTargets) {
  sim_.Publish();
  sim_.snapshot["meta"].erase("targets.json");
  sim_.files[sim_.MetadataUrl("snapshot", 1)] =
      RepositorySimulator::Sign(sim_.snapshot, sim_.signers["snapshot"]);
  EXPECT_ERRC(Refresh(), Errc::RoleNotInSnapshot);
}

// ---------------------------------------------------------------------------------------------
// 5.7 Fetch target

class TargetDownloadTest : public UpdaterTest {
 protected:
  void SetUp() override {
    sim_.AddTarget("targets", "fw/image v1.bin", std::string(3000, 'x') + "end");
    UpdaterTest::SetUp();
  }
  const std::string kPath = "fw/image v1.bin";
};

// 5.7.3: with consistent snapshots the target is fetched as <dir>/<sha256>.<name> and stored
// under its percent-encoded path.
TEST_F(TargetDownloadTest, DownloadsHashPrefixedTargetAndStoresItByPath) {
  auto updater = MakeUpdater();
  auto info = updater.GetTargetInfo(kPath);
  ASSERT_TRUE(info);
  fetcher_.ClearRequests();
  auto path = updater.DownloadTarget(*info, RepositorySimulator::kTargetsUrl, dir_.path());
  ASSERT_TRUE(path) << path.error().ToString();
  EXPECT_EQ(path->filename(), "fw%2Fimage%20v1.bin");
  EXPECT_EQ(testing::ReadFileOrEmpty(*path), std::string(3000, 'x') + "end");
  ASSERT_EQ(Requests().size(), 1u);
  EXPECT_EQ(Requests()[0], "targets/fw/" + info->hashes.at("sha256") + ".image%20v1.bin");
}

// T-1 (arbitrary software): a substituted target is rejected and nothing is stored.
TEST_F(TargetDownloadTest, RejectsSubstitutedTarget) {
  auto updater = MakeUpdater();
  auto info = updater.GetTargetInfo(kPath);
  ASSERT_TRUE(info);
  for (auto& [url, body] : sim_.files) {
    if (url.find("image") != std::string::npos) body = std::string(3000, 'y') + "end";
  }
  sim_.ServeTo(fetcher_);
  EXPECT_ERRC(updater.DownloadTarget(*info, RepositorySimulator::kTargetsUrl, dir_.path()),
              Errc::TargetHashMismatch);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "fw%2Fimage%20v1.bin"));
  for (const auto& e : std::filesystem::directory_iterator(dir_.path())) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos);
  }
}

// T-4 (endless data): a target longer than its signed length is cut off at that length.
TEST_F(TargetDownloadTest, RejectsTargetLongerThanSignedLength) {
  auto updater = MakeUpdater();
  auto info = updater.GetTargetInfo(kPath);
  ASSERT_TRUE(info);
  for (auto& [url, body] : sim_.files) {
    if (url.find("image") != std::string::npos) body += std::string(100000, 'z');
  }
  sim_.ServeTo(fetcher_);
  EXPECT_ERRC(updater.DownloadTarget(*info, RepositorySimulator::kTargetsUrl, dir_.path()),
              Errc::TargetLengthMismatch);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "fw%2Fimage%20v1.bin"));
}

// A truncated download is rejected.
TEST_F(TargetDownloadTest, RejectsTruncatedTarget) {
  auto updater = MakeUpdater();
  auto info = updater.GetTargetInfo(kPath);
  ASSERT_TRUE(info);
  for (auto& [url, body] : sim_.files) {
    if (url.find("image") != std::string::npos) body.resize(100);
  }
  sim_.ServeTo(fetcher_);
  EXPECT_ERRC(updater.DownloadTarget(*info, RepositorySimulator::kTargetsUrl, dir_.path()),
              Errc::TargetLengthMismatch);
}

// A target listed with a hash algorithm upkeep cannot compute is not accepted unchecked.
TEST_F(TargetDownloadTest, RejectsTargetWithUnsupportedHashAlgorithm) {
  auto updater = MakeUpdater();
  auto info = updater.GetTargetInfo(kPath);
  ASSERT_TRUE(info);
  info->hashes["x-unknown"] = "00";
  EXPECT_ERRC(updater.DownloadTarget(*info, RepositorySimulator::kTargetsUrl, dir_.path()),
              Errc::TargetHashMismatch);
}

// ---------------------------------------------------------------------------------------------
// Target names and hash values reach URLs and file names only when they are safe

class HostileTargetTest : public UpdaterTest {
 protected:
  void SetUp() override {
    for (const auto& name : BadNames()) sim_.AddTarget("targets", name, "payload");
    const auto bad = BadHashes();
    for (std::size_t i = 0; i < bad.size(); ++i) {
      const std::string name = "fw/hash" + std::to_string(i) + ".bin";
      sim_.AddTarget("targets", name, "payload");
      sim_.targets["targets"][name]["hashes"] = Json{{bad[i].first, bad[i].second}};
    }
    UpdaterTest::SetUp();
  }
  // Hash values that are not lower-case hex of their algorithm's digest length.
  static std::vector<std::pair<std::string, std::string>> BadHashes() {
    const std::string good = HexEncode(crypto::Sha256("payload"));
    std::string upper = good;
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return {{"sha256", "../../../escape"}, {"sha256", good.substr(0, 62)}, {"sha256", upper},
            {"sha256", good + "00"},       {"sha512", good},               {"sha256", good + "/x"}};
  }
  static std::vector<std::string> BadNames() {
    return {"../../x", "fw/../../x", "/etc/passwd", "fw//x", "./x",
            "fw/./x",  "fw/",        "fw/..",       "a\nb",  "a\x01z", "del\x7f"};
  }
  // A TargetFile as a caller might build it, with a good sha256 of "payload".
  static TargetFile Info(const std::string& path) {
    TargetFile t;
    t.path = path;
    t.length = 7;
    t.hashes["sha256"] = HexEncode(crypto::Sha256("payload"));
    return t;
  }
  // True when every request stayed under the metadata or targets base URL without a "."/".."
  // segment.
  bool RequestsStayInRepository() const {
    for (const auto& url : fetcher_.requests()) {
      const bool under = url.starts_with(RepositorySimulator::kMetadataUrl) ||
                         url.starts_with(RepositorySimulator::kTargetsUrl);
      if (!under || url.find("/../") != std::string::npos ||
          url.find("/./") != std::string::npos) {
        return false;
      }
    }
    return true;
  }
};

// A signed target name with "..", a leading '/', empty or "." segments, control characters or
// invalid UTF-8 is refused with InvalidTargetPath, and no request leaves the repository.
TEST_F(HostileTargetTest, RefusesSignedTargetNamesThatEscapeTargetsDirectory) {
  auto updater = MakeUpdater();
  for (const auto& name : BadNames()) {
    EXPECT_ERRC(updater.GetTargetInfo(name), Errc::InvalidTargetPath);
  }
  EXPECT_TRUE(RequestsStayInRepository());
}

// A caller-built target with a climbing name is refused before anything is fetched.
TEST_F(HostileTargetTest, DownloadRefusesClimbingTargetNameWithoutFetching) {
  auto updater = MakeUpdater();
  ASSERT_TRUE(updater.Refresh());
  fetcher_.ClearRequests();
  for (const auto& name : BadNames()) {
    EXPECT_ERRC(updater.DownloadTarget(Info(name), RepositorySimulator::kTargetsUrl, dir_.path()),
                Errc::InvalidTargetPath);
  }
  // Names signed metadata cannot carry (the JSON parser refuses invalid UTF-8) but a caller can.
  for (const std::string name : {"", "bad\xff", "\xc0\xaf", "\xed\xa0\x80"}) {
    EXPECT_ERRC(updater.DownloadTarget(Info(name), RepositorySimulator::kTargetsUrl, dir_.path()),
                Errc::InvalidTargetPath);
  }
  EXPECT_TRUE(fetcher_.requests().empty());
}

// Consistent snapshots put the hash into the URL: a signed hash value "../../../escape" (or any
// value that is not lower-case hex of the digest's length) is refused with InvalidTargetHash and
// nothing is fetched.
TEST_F(HostileTargetTest, RefusesSignedHashValuesUnusableInUrls) {
  auto updater = MakeUpdater();
  const auto bad = BadHashes();
  for (std::size_t i = 0; i < bad.size(); ++i) {
    const std::string name = "fw/hash" + std::to_string(i) + ".bin";
    EXPECT_ERRC(updater.GetTargetInfo(name), Errc::InvalidTargetHash);
    TargetFile forged = Info(name);
    forged.hashes = Hashes{{bad[i].first, bad[i].second}};
    fetcher_.ClearRequests();
    EXPECT_ERRC(updater.DownloadTarget(forged, RepositorySimulator::kTargetsUrl, dir_.path()),
                Errc::InvalidTargetHash);
    EXPECT_TRUE(fetcher_.requests().empty()) << bad[i].second;
  }
}

// The shared rules: what a client accepts and what a repository may publish.
TEST(TargetNameRulesTest, AcceptsOrdinaryNamesAndRefusesUrlAmbiguityOnlyWhenPublishing) {
  for (const char* ok : {"a", "fw/image v1.bin", "dir/sub/file.tar.gz", "caf\xc3\xa9", "..a/b.."}) {
    EXPECT_TRUE(ValidateTargetPath(ok)) << ok;
    EXPECT_TRUE(ValidateTargetPath(ok, TargetPathRules::kPublish)) << ok;
  }
  for (const char* ambiguous : {"a%2Fb", "a?b", "a#b"}) {
    EXPECT_TRUE(ValidateTargetPath(ambiguous)) << ambiguous;
    EXPECT_ERRC(ValidateTargetPath(ambiguous, TargetPathRules::kPublish), Errc::InvalidTargetPath);
  }
  EXPECT_ERRC(ValidateTargetPath(std::string("a\0b", 3)), Errc::InvalidTargetPath);
  EXPECT_ERRC(ValidateTargetPath("\xed\xa0\x80"), Errc::InvalidTargetPath);  // a surrogate
  EXPECT_TRUE(ValidateHashValue("sha512", std::string(128, 'a')));
  EXPECT_ERRC(ValidateHashValue("md5", std::string(32, 'a')), Errc::InvalidTargetHash);
}

// 5.7.2: a path no role lists is reported as not found.
TEST_F(TargetDownloadTest, ReportsUnknownTargetAsNotFound) {
  auto updater = MakeUpdater();
  EXPECT_ERRC(updater.GetTargetInfo("fw/other.bin"), Errc::TargetNotFound);
}

// A verified copy already on disk is found; a modified copy is not.
TEST_F(TargetDownloadTest, FindsCachedTargetOnlyWhenItVerifies) {
  auto updater = MakeUpdater();
  auto info = updater.GetTargetInfo(kPath);
  ASSERT_TRUE(info);
  auto none = updater.FindCachedTarget(*info, dir_.path());
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(updater.DownloadTarget(*info, RepositorySimulator::kTargetsUrl, dir_.path()));
  auto found = updater.FindCachedTarget(*info, dir_.path());
  ASSERT_TRUE(found);
  EXPECT_TRUE(found->has_value());
  std::ofstream(dir_ / "fw%2Fimage%20v1.bin", std::ios::binary) << "tampered";
  auto tampered = updater.FindCachedTarget(*info, dir_.path());
  ASSERT_TRUE(tampered);
  EXPECT_FALSE(tampered->has_value());
}

// ---------------------------------------------------------------------------------------------
// 5.6.7 Delegations

class DelegationTest : public UpdaterTest {};

// A target in a delegated role is found; the role's metadata is fetched after targets.
TEST_F(DelegationTest, FindsTargetInDelegatedRole) {
  sim_.AddDelegation("targets", {{"name", "apps"}, {"terminating", false}, {"paths", {"apps/*"}}});
  sim_.AddTarget("apps", "apps/a.bin", "A");
  sim_.Publish();
  auto updater = MakeUpdater();
  auto info = updater.GetTargetInfo("apps/a.bin");
  ASSERT_TRUE(info) << info.error().ToString();
  EXPECT_EQ(info->length, 1u);
  EXPECT_EQ(Requests().back(), "1.apps.json");
  EXPECT_FALSE(Local("apps").empty());
}

// 5.6.7.2: delegations are searched in order; a non-terminating miss continues to the next.
TEST_F(DelegationTest, ContinuesPastNonTerminatingDelegation) {
  sim_.AddDelegation("targets", {{"name", "first"}, {"terminating", false}, {"paths", {"x/*"}}});
  sim_.AddDelegation("targets", {{"name", "second"}, {"terminating", false}, {"paths", {"x/*"}}});
  sim_.AddTarget("second", "x/file", "data");
  sim_.Publish();
  auto updater = MakeUpdater();
  ASSERT_TRUE(updater.GetTargetInfo("x/file"));
  EXPECT_EQ(Requests()[Requests().size() - 2], "1.first.json");
  EXPECT_EQ(Requests().back(), "1.second.json");
}

// 5.6.7.2.1: a terminating delegation ends the search even when it does not have the target.
TEST_F(DelegationTest, TerminatingDelegationStopsTheSearch) {
  sim_.AddDelegation("targets", {{"name", "first"}, {"terminating", true}, {"paths", {"x/*"}}});
  sim_.AddDelegation("targets", {{"name", "second"}, {"terminating", false}, {"paths", {"x/*"}}});
  sim_.AddTarget("second", "x/file", "data");
  sim_.Publish();
  auto updater = MakeUpdater();
  EXPECT_ERRC(updater.GetTargetInfo("x/file"), Errc::TargetNotFound);
  EXPECT_EQ(Requests().back(), "1.first.json");
}

// Pre-order depth-first: a child of the first delegation is searched before the second.
TEST_F(DelegationTest, SearchesDepthFirstInPreOrder) {
  sim_.AddDelegation("targets", {{"name", "a"}, {"terminating", false}, {"paths", {"*"}}});
  sim_.AddDelegation("targets", {{"name", "b"}, {"terminating", false}, {"paths", {"*"}}});
  sim_.AddDelegation("a", {{"name", "a1"}, {"terminating", false}, {"paths", {"*"}}});
  sim_.AddTarget("b", "t", "data");
  sim_.Publish();
  auto updater = MakeUpdater();
  ASSERT_TRUE(updater.GetTargetInfo("t"));
  const auto r = Requests();
  EXPECT_EQ((std::vector<std::string>(r.end() - 3, r.end())),
            (std::vector<std::string>{"1.a.json", "1.a1.json", "1.b.json"}));
}

// Path patterns match segment by segment: '*' does not cross '/'.
TEST_F(DelegationTest, PathPatternDoesNotMatchAcrossDirectories) {
  sim_.AddDelegation("targets", {{"name", "apps"}, {"terminating", false}, {"paths", {"apps/*"}}});
  sim_.AddTarget("apps", "apps/sub/deep.bin", "D");
  sim_.Publish();
  auto updater = MakeUpdater();
  EXPECT_ERRC(updater.GetTargetInfo("apps/sub/deep.bin"), Errc::TargetNotFound);
}

// A delegated role may only be trusted for paths its delegation covers.
TEST_F(DelegationTest, IgnoresTargetsOutsideDelegatedPaths) {
  sim_.AddDelegation("targets", {{"name", "apps"}, {"terminating", false}, {"paths", {"apps/*"}}});
  sim_.AddTarget("apps", "fw/evil.bin", "E");
  sim_.Publish();
  auto updater = MakeUpdater();
  EXPECT_ERRC(updater.GetTargetInfo("fw/evil.bin"), Errc::TargetNotFound);
}

// path_hash_prefixes: a role is consulted when the SHA-256 of the path starts with a prefix.
TEST_F(DelegationTest, FollowsPathHashPrefixes) {
  const std::string path = "bins/file.bin";
  const std::string prefix = HexEncode(crypto::Sha256(path)).substr(0, 2);
  sim_.AddDelegation("targets", {{"name", "hp"}, {"terminating", false},
                                 {"path_hash_prefixes", {prefix}}});
  sim_.AddTarget("hp", path, "H");
  sim_.Publish();
  auto updater = MakeUpdater();
  EXPECT_TRUE(updater.GetTargetInfo(path));
}

// Succinct hash bins: the target's bin is computed from its path hash and fetched directly.
TEST_F(DelegationTest, FindsTargetInSuccinctHashBin) {
  auto key = crypto::PrivateKey::Generate(crypto::KeyAlgorithm::Ed25519).value();
  const std::string id = RepositorySimulator::KeyId(key);
  sim_.targets["delegations"] = {
      {"keys", {{id, RepositorySimulator::KeyJson(key)}}},
      {"succinct_roles",
       {{"keyids", {id}}, {"threshold", 1}, {"bit_length", 5}, {"name_prefix", "bin"}}}};
  SuccinctRoles bins;
  bins.bit_length = 5;
  bins.name_prefix = "bin";
  const std::string path = "catalogue/item-42";
  const std::string bin = bins.RoleForTarget(path);
  Json body = sim_.targets;
  body.erase("delegations");
  body["targets"] = Json::object();
  sim_.delegated[bin] = body;
  sim_.signers[bin] = {key};
  sim_.AddTarget(bin, path, "item");
  sim_.Publish();
  auto updater = MakeUpdater();
  auto info = updater.GetTargetInfo(path);
  ASSERT_TRUE(info) << info.error().ToString();
  EXPECT_EQ(Requests().back(), "1." + bin + ".json");
}

// A delegated role signed by a key its delegator does not name is rejected.
TEST_F(DelegationTest, RejectsDelegatedRoleSignedByWrongKey) {
  sim_.AddDelegation("targets", {{"name", "apps"}, {"terminating", false}, {"paths", {"apps/*"}}});
  sim_.AddTarget("apps", "apps/a.bin", "A");
  sim_.signers["apps"] = sim_.signers["targets"];
  sim_.Publish();
  auto updater = MakeUpdater();
  EXPECT_ERRC(updater.GetTargetInfo("apps/a.bin"), Errc::ThresholdNotMet);
  EXPECT_TRUE(Local("apps").empty());
}

// 5.6.7.1: cycles in the delegation graph are not followed forever.
TEST_F(DelegationTest, StopsAtDelegationCycles) {
  sim_.AddDelegation("targets", {{"name", "a"}, {"terminating", false}, {"paths", {"*"}}});
  sim_.AddDelegation("a", {{"name", "b"}, {"terminating", false}, {"paths", {"*"}}});
  // b delegates back to a, with a's key.
  sim_.delegated["b"]["delegations"] = {
      {"keys", sim_.targets["delegations"]["keys"]},
      {"roles", {{{"name", "a"}, {"terminating", false}, {"paths", {"*"}},
                  {"keyids", sim_.targets["delegations"]["roles"][0]["keyids"]},
                  {"threshold", 1}}}}};
  sim_.Publish();
  auto updater = MakeUpdater();
  EXPECT_ERRC(updater.GetTargetInfo("nothing"), Errc::TargetNotFound);
}

// 5.6.7.1: the number of roles visited is bounded.
TEST_F(DelegationTest, BoundsTheNumberOfRolesVisited) {
  for (int i = 0; i < 6; ++i) {
    sim_.AddDelegation("targets", {{"name", "r" + std::to_string(i)}, {"terminating", false},
                                   {"paths", {"*"}}});
  }
  sim_.Publish();
  UpdaterConfig config;
  config.max_delegations = 4;
  auto updater = MakeUpdater(config);
  EXPECT_ERRC(updater.GetTargetInfo("nothing"), Errc::DelegationLimitReached);
  EXPECT_EQ(Requests().back(), "1.r2.json");  // targets, r0, r1, r2
}

// Role names are percent-encoded in URLs and local file names.
TEST_F(DelegationTest, PercentEncodesRoleNames) {
  sim_.AddDelegation("targets", {{"name", "team/ns:1 x"}, {"terminating", false},
                                 {"paths", {"t/*"}}});
  sim_.AddTarget("team/ns:1 x", "t/file", "T");
  sim_.Publish();
  auto updater = MakeUpdater();
  ASSERT_TRUE(updater.GetTargetInfo("t/file"));
  EXPECT_EQ(Requests().back(), "1.team%2Fns%3A1%20x.json");
  EXPECT_TRUE(std::filesystem::exists(dir_ / "team%2Fns%3A1%20x.json"));
}

// 5.6.7: a role trusted through one delegator, then reached through another, must also carry the
// other delegator's threshold for it.
TEST_F(DelegationTest, VerifiesCachedRoleAgainstEachDelegator) {
  sim_.AddDelegation("targets", {{"name", "a"}, {"terminating", false}, {"paths", {"*"}}});
  sim_.AddDelegation("targets", {{"name", "b"}, {"terminating", false}, {"paths", {"*"}}});
  sim_.AddDelegation("a", {{"name", "c"}, {"terminating", false}, {"paths", {"*"}}});
  // b delegates the same role c, but to a key of its own.
  auto key_b = crypto::PrivateKey::Generate(crypto::KeyAlgorithm::Ed25519).value();
  const std::string id_b = RepositorySimulator::KeyId(key_b);
  sim_.delegated["b"]["delegations"] = {
      {"keys", {{id_b, RepositorySimulator::KeyJson(key_b)}}},
      {"roles", {{{"name", "c"}, {"keyids", {id_b}}, {"threshold", 1}, {"terminating", false},
                  {"paths", {"*"}}}}}};
  sim_.Publish();  // c is signed by a's key only
  {
    auto updater = MakeUpdater();
    EXPECT_ERRC(updater.GetTargetInfo("nothing"), Errc::ThresholdNotMet);
  }
  sim_.signers["c"].push_back(key_b);  // a new version of c signed by both delegations' keys
  sim_.Bump("c");
  sim_.Bump("snapshot");
  sim_.Bump("timestamp");
  sim_.Publish();
  auto updater = MakeUpdater();
  EXPECT_ERRC(updater.GetTargetInfo("nothing"), Errc::TargetNotFound);
}

// A delegated role that the snapshot does not list is rejected.
TEST_F(DelegationTest, RejectsDelegatedRoleMissingFromSnapshot) {
  sim_.AddDelegation("targets", {{"name", "apps"}, {"terminating", false}, {"paths", {"apps/*"}}});
  sim_.Publish();
  sim_.snapshot["meta"].erase("apps.json");
  sim_.files[sim_.MetadataUrl("snapshot", 1)] =
      RepositorySimulator::Sign(sim_.snapshot, sim_.signers["snapshot"]);
  auto updater = MakeUpdater();
  EXPECT_ERRC(updater.GetTargetInfo("apps/x"), Errc::RoleNotInSnapshot);
}

// ---------------------------------------------------------------------------------------------
// Persistence

// A failed refresh leaves every stored file as it was, and the client still works afterwards.
TEST_F(UpdaterTest, FailedRefreshLeavesTrustedMetadataUsable) {
  ASSERT_TRUE(Refresh());
  const auto before = Snapshot();
  const auto original_snapshot_signers = sim_.signers["snapshot"];
  sim_.Bump("snapshot");
  sim_.Bump("timestamp");
  sim_.signers["snapshot"] = sim_.signers["targets"];
  sim_.Publish();
  EXPECT_ERRC(Refresh(), Errc::ThresholdNotMet);
  auto after = Snapshot();
  after.erase("timestamp.json");  // the new timestamp verified and was kept
  auto expected = before;
  expected.erase("timestamp.json");
  EXPECT_EQ(after, expected);
  // The repository is repaired: the client recovers from what it kept.
  sim_.signers["snapshot"] = original_snapshot_signers;
  sim_.Bump("snapshot");
  sim_.Bump("timestamp");
  sim_.Publish();
  EXPECT_TRUE(Refresh());
}

}  // namespace
}  // namespace upkeep::metadata
