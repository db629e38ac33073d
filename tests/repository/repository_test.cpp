// The signed image repository (docs/repository.md): a full release lifecycle, checked by upkeep's
// client and by the independent tuf-js client, and bad input that changes nothing.

#include "upkeep/repository/repository.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <optional>

#include "device.hpp"
#include "http_test_server.hpp"
#include "temp_dir.hpp"
#include "tufjs_client.hpp"
#include "test_util.hpp"
#include "upkeep/metadata/update_metadata.hpp"
#include "upkeep/metadata/updater.hpp"
#include "upkeep/transport/http_fetcher.hpp"

namespace upkeep::repository {
namespace {

namespace fs = std::filesystem;
using metadata::Json;

Json Meta(bool security) {
  Json u = {{"schema", 1}, {"component", "rootfs"}, {"version", security ? "2.4.1" : "2.5.0"},
            {"hardware", {"acme-cam-v2"}}, {"security_version", security ? 7 : 7},
            {"kind", security ? Json{"security"} : Json{"feature"}},
            {"disruption", {{"reboot", true}, {"downtime_seconds", 40},
                            {"available_during_update", Json::array()}}},
            {"settings_impact", {{"effect", "none"}, {"note", ""}}},
            {"payload", {{"format", "raw"}, {"installed_size", 12}}}};
  if (security) {
    u["security"] = {{"severity", "critical"}, {"cves", {"CVE-2026-4242"}},
                     {"risks_mitigated", "Closes a remote login flaw."}};
  }
  return Json{{"upkeep", u}};
}

class RepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(work_ / "security.img", std::ios::binary) << "security fix";
    std::ofstream(work_ / "feature.img", std::ios::binary) << "new feature!";
    InitOptions o;
    o.root_keys = 3;
    o.root_threshold = 2;
    o.targets_keys = 3;
    o.targets_threshold = 2;
    auto repo = Repository::Init(work_ / "repo", o, fs_, clock_);
    ASSERT_TRUE(repo) << repo.error().ToString();
  }
  Repository Open() { return Repository::Open(work_ / "repo", fs_, clock_).value(); }
  std::vector<fs::path> KeysOf(const std::string& role) {
    auto root = Json::parse(testing::ReadFileOrEmpty(work_ / "repo" / "staged" / "root.json"));
    std::vector<fs::path> out;
    for (const auto& id : root["signed"]["roles"][role]["keyids"]) {
      out.push_back(work_ / "repo" / "keys" / (id.get<std::string>() + ".pem"));
    }
    return out;
  }

  // Downloads `target` from `server` with tuf-js, trusting the published root v1.
  std::optional<int> TufJsDownload(const testing::HttpTestServer& server,
                                   const std::string& target) {
    return testing::TufJsDownload(server.base_url(), work_ / "www" / "metadata" / "1.root.json",
                                  target);
  }

  LocalFilesystem fs_;
  SystemClock clock_;
  testing::TempDir work_;
};

// init, add a security and a feature target, sign targets in two separate steps, publish; both
// upkeep's client and the tuf-js client accept the published repository.
TEST_F(RepositoryTest, PublishedRepositoryVerifiesWithUpkeepAndTufJs) {
  auto repo = Open();
  ASSERT_TRUE(repo.AddTarget(work_ / "security.img", "fw/security.img", Meta(true)));
  ASSERT_TRUE(repo.AddTarget(work_ / "feature.img", "fw/feature.img", Meta(false)));
  EXPECT_ERRC(repo.Publish(work_ / "www"), Errc::ThresholdNotMet);  // targets unsigned
  EXPECT_FALSE(fs::exists(work_ / "www" / "metadata" / "timestamp.json"));
  const auto keys = KeysOf("targets");
  ASSERT_TRUE(Open().Sign("targets", keys[0]));  // one machine
  repo = Open();
  EXPECT_ERRC(repo.Publish(work_ / "www"), Errc::ThresholdNotMet);  // 1 of 2
  ASSERT_TRUE(Open().Sign("targets", keys[2]));  // another machine
  repo = Open();
  ASSERT_TRUE(repo.Publish(work_ / "www"));

  testing::Device device(work_ / "www", work_ / "device", clock_);
  auto& server = device.server;
  metadata::Updater updater = device.Client();
  ASSERT_TRUE(updater.Refresh());
  auto info = updater.GetTargetInfo("fw/security.img");
  ASSERT_TRUE(info) << info.error().ToString();
  auto meta = metadata::UpdateMetadataOf(*info);
  ASSERT_TRUE(meta);
  EXPECT_TRUE(meta->is_security);
  auto file = updater.DownloadTarget(*info, server.base_url() + "/targets/", work_ / "device");
  ASSERT_TRUE(file) << file.error().ToString();
  EXPECT_EQ(testing::ReadFileOrEmpty(*file), "security fix");

  auto feature = TufJsDownload(server, "fw/feature.img");
  if (!feature) GTEST_SKIP() << "node or the tuf-js test tooling is not installed";
  EXPECT_EQ(*feature, 0);
  // A tampered target is refused by tuf-js too.
  for (const auto& e : fs::recursive_directory_iterator(work_ / "www" / "targets")) {
    if (e.is_regular_file() && e.path().filename().string().ends_with("security.img")) {
      std::ofstream(e.path(), std::ios::binary | std::ios::trunc) << "security fiX";
    }
  }
  EXPECT_NE(TufJsDownload(server, "fw/security.img"), 0);
}

// Publishing again keeps older versions for devices that are mid-update.
TEST_F(RepositoryTest, RepublishKeepsOlderVersions) {
  auto repo = Open();
  ASSERT_TRUE(repo.Publish(work_ / "www"));
  ASSERT_TRUE(repo.AddTarget(work_ / "feature.img", "fw/feature.img", Meta(false)));
  for (const auto& k : KeysOf("targets")) ASSERT_TRUE(repo.Sign("targets", k));
  ASSERT_TRUE(repo.Publish(work_ / "www"));
  for (const char* f : {"1.targets.json", "2.targets.json", "1.snapshot.json", "2.snapshot.json"}) {
    EXPECT_TRUE(fs::exists(work_ / "www" / "metadata" / f)) << f;
  }
}

// Root rotations need the published root's threshold and their own; a timestamp key rotation
// revokes the old online key. Every published state verifies with upkeep's client and tuf-js.
TEST_F(RepositoryTest, RotatesRootAndTimestampKeysWithContinuity) {
  auto repo = Open();
  ASSERT_TRUE(repo.AddTarget(work_ / "security.img", "fw/security.img", Meta(true)));
  for (const auto& k : KeysOf("targets")) ASSERT_TRUE(repo.Sign("targets", k));
  ASSERT_TRUE(repo.Publish(work_ / "www"));
  testing::Device device(work_ / "www", work_ / "device", clock_);
  auto& server = device.server;
  auto device_refresh = [&]() -> Result<std::uint64_t> {
    metadata::Updater updater = device.Client();
    UPKEEP_TRY(updater.Refresh());
    UPKEEP_TRY(updater.GetTargetInfo("fw/security.img"));
    return updater.trusted()->root().version;
  };
  ASSERT_EQ(device_refresh().value(), 1u);

  // v2: replace one of the three root keys. Two keys common to v1 and v2 sign.
  const auto v1_keys = KeysOf("root");
  auto first_id = v1_keys[0].stem().string();
  auto added = repo.Rotate("root", 1, {first_id}, std::nullopt, crypto::KeyAlgorithm::Ed25519);
  ASSERT_TRUE(added) << added.error().ToString();
  ASSERT_TRUE(repo.Sign("root", v1_keys[1]));
  ASSERT_TRUE(repo.Sign("root", v1_keys[2]));
  ASSERT_TRUE(repo.Publish(work_ / "www"));
  EXPECT_EQ(device_refresh().value(), 2u);

  // v3: replace two more keys. Signatures by v3's new keys alone do not chain from v2.
  const auto v2_keys = KeysOf("root");  // v1_keys[1], v1_keys[2], new key
  added = repo.Rotate("root", 2, {v1_keys[1].stem().string(), v1_keys[2].stem().string()},
                      std::nullopt, crypto::KeyAlgorithm::EcdsaP256);
  ASSERT_TRUE(added);
  for (const auto& id : *added) ASSERT_TRUE(repo.Sign("root", work_ / "repo" / "keys" / (id + ".pem")));
  EXPECT_ERRC(repo.Publish(work_ / "www"), Errc::ThresholdNotMet);
  // Keys of the published v2 add continuity: one v2 key that v3 dropped, and v2's new key.
  ASSERT_TRUE(repo.Sign("root", v1_keys[1]));
  EXPECT_ERRC(repo.Publish(work_ / "www"), Errc::ThresholdNotMet);  // 1 of v2's 2
  for (const auto& k : v2_keys) {
    if (std::find(v1_keys.begin(), v1_keys.end(), k) == v1_keys.end()) {
      ASSERT_TRUE(repo.Sign("root", k));
    }
  }
  ASSERT_TRUE(repo.Publish(work_ / "www"));
  EXPECT_EQ(device_refresh().value(), 3u);

  // v4: the timestamp key is compromised: rotate it out.
  const std::string old_timestamp = KeysOf("timestamp")[0].stem().string();
  ASSERT_TRUE(repo.Rotate("timestamp", 1, {old_timestamp}, std::nullopt,
                          crypto::KeyAlgorithm::Ed25519));
  for (const auto& k : KeysOf("root")) ASSERT_TRUE(repo.Sign("root", k));
  ASSERT_TRUE(repo.Publish(work_ / "www"));
  EXPECT_EQ(device_refresh().value(), 4u);
  auto root = Json::parse(testing::ReadFileOrEmpty(work_ / "www" / "metadata" / "4.root.json"));
  EXPECT_FALSE(root["signed"]["keys"].contains(old_timestamp));

  auto accepted = TufJsDownload(server, "fw/security.img");
  if (!accepted) GTEST_SKIP() << "node or the tuf-js test tooling is not installed";
  EXPECT_EQ(*accepted, 0);
}

// Delegated roles: paths are enforced when adding targets, each role collects its own signatures,
// and devices (upkeep and tuf-js) find targets through the delegation.
TEST_F(RepositoryTest, PublishesDelegatedRoles) {
  auto repo = Open();
  Repository::Delegation d;
  d.name = "apps/team:1";
  d.paths = {"apps/*"};
  d.terminating = true;
  d.keys = 2;
  d.threshold = 2;
  auto ids = repo.Delegate(d);
  ASSERT_TRUE(ids) << ids.error().ToString();
  EXPECT_ERRC(repo.Delegate(d), Errc::InvalidDelegation);  // exists already
  d.name = "snapshot";
  EXPECT_ERRC(repo.Delegate(d), Errc::InvalidDelegation);
  EXPECT_ERRC(repo.AddTarget(work_ / "feature.img", "fw/outside.img", Meta(false), "apps/team:1"),
              Errc::InvalidTarget);
  ASSERT_TRUE(repo.AddTarget(work_ / "feature.img", "apps/viewer.img", Meta(false), "apps/team:1"));
  for (const auto& k : KeysOf("targets")) ASSERT_TRUE(repo.Sign("targets", k));
  EXPECT_ERRC(repo.Sign("apps/team:1", KeysOf("targets")[0]), Errc::KeyNotAuthorized);
  ASSERT_TRUE(repo.Sign("apps/team:1", work_ / "repo" / "keys" / ((*ids)[0] + ".pem")));
  EXPECT_ERRC(repo.Publish(work_ / "www"), Errc::ThresholdNotMet);  // 1 of 2 for the role
  ASSERT_TRUE(Open().Sign("apps/team:1", work_ / "repo" / "keys" / ((*ids)[1] + ".pem")));
  ASSERT_TRUE(Open().Publish(work_ / "www"));

  testing::Device device(work_ / "www", work_ / "device", clock_);
  auto& server = device.server;
  metadata::Updater updater = device.Client();
  auto info = updater.GetTargetInfo("apps/viewer.img");
  ASSERT_TRUE(info) << info.error().ToString();
  auto file = updater.DownloadTarget(*info, server.base_url() + "/targets/", work_ / "device");
  ASSERT_TRUE(file) << file.error().ToString();
  EXPECT_EQ(testing::ReadFileOrEmpty(*file), "new feature!");

  auto accepted = TufJsDownload(server, "apps/viewer.img");
  if (!accepted) GTEST_SKIP() << "node or the tuf-js test tooling is not installed";
  EXPECT_EQ(*accepted, 0);
}

// Succinct hash bins (TAP 15) for large catalogues: targets are routed to the bin their path
// hashes to, one key signs every bin, and devices find each target in its bin.
TEST_F(RepositoryTest, PublishesSuccinctHashBins) {
  auto repo = Open();
  Repository::Delegation d;
  d.name = "catalogue";
  d.bin_bits = 3;
  auto ids = repo.Delegate(d);
  ASSERT_TRUE(ids) << ids.error().ToString();
  d.name = "more";
  d.paths = {"x/*"};
  d.bin_bits = 0;
  EXPECT_ERRC(repo.Delegate(d), Errc::InvalidDelegation);  // cannot mix with the bins
  std::vector<std::string> paths;
  for (int i = 0; i < 12; ++i) {
    paths.push_back("catalogue/item-" + std::to_string(i) + ".bin");
    ASSERT_TRUE(repo.AddTarget(work_ / "feature.img", paths.back(), Meta(false), "catalogue"));
  }
  metadata::SuccinctRoles bins;
  bins.bit_length = 3;
  bins.name_prefix = "catalogue";
  const std::string wrong_bin = bins.RoleForTarget(paths[0]) == "catalogue-0" ? "catalogue-1"
                                                                              : "catalogue-0";
  EXPECT_ERRC(repo.AddTarget(work_ / "feature.img", paths[0], Meta(false), wrong_bin),
              Errc::InvalidTarget);
  ASSERT_TRUE(repo.Sign("catalogue", work_ / "repo" / "keys" / ((*ids)[0] + ".pem")));
  for (const auto& k : KeysOf("targets")) ASSERT_TRUE(repo.Sign("targets", k));
  ASSERT_TRUE(repo.Publish(work_ / "www"));

  testing::Device device(work_ / "www", work_ / "device", clock_);
  auto& server = device.server;
  metadata::Updater updater = device.Client();
  for (const auto& p : paths) {
    auto info = updater.GetTargetInfo(p);
    ASSERT_TRUE(info) << p << ": " << info.error().ToString();
  }
  auto accepted = TufJsDownload(server, paths[5]);
  if (!accepted) GTEST_SKIP() << "node or the tuf-js test tooling is not installed";
  EXPECT_EQ(*accepted, 0);
}

TEST_F(RepositoryTest, RefusesRotationsThatBreakTheThreshold) {
  auto repo = Open();
  const auto keys = KeysOf("targets");
  EXPECT_ERRC(repo.Rotate("targets", 0,
                          {keys[0].stem().string(), keys[1].stem().string()}, std::nullopt,
                          crypto::KeyAlgorithm::Ed25519),
              Errc::ThresholdNotMet);  // 1 key left, threshold 2
  EXPECT_ERRC(repo.Rotate("targets", 0, {"not-a-key"}, std::nullopt, crypto::KeyAlgorithm::Ed25519),
              Errc::KeyNotAuthorized);
  EXPECT_ERRC(repo.Rotate("mirrors", 1, {}, std::nullopt, crypto::KeyAlgorithm::Ed25519),
              Errc::UnknownRole);
}

// Invalid update metadata: a clear error, and neither the staged targets nor the files change.
TEST_F(RepositoryTest, RejectsInvalidUpdateMetadataAndChangesNothing) {
  auto repo = Open();
  const std::string before = testing::ReadFileOrEmpty(work_ / "repo" / "staged" / "targets.json");
  Json bad = Meta(true);
  bad["upkeep"]["security"]["cves"] = {"CVE-1"};
  EXPECT_ERRC(repo.AddTarget(work_ / "security.img", "fw/security.img", bad),
              Errc::InvalidUpdateMetadata);
  EXPECT_ERRC(repo.AddTarget(work_ / "security.img", "../escape", Meta(true)), Errc::InvalidTarget);
  EXPECT_ERRC(repo.AddTarget(work_ / "missing.img", "fw/x.img", Meta(true)), Errc::InvalidTarget);
  EXPECT_EQ(testing::ReadFileOrEmpty(work_ / "repo" / "staged" / "targets.json"), before);
  EXPECT_FALSE(fs::exists(work_ / "repo" / "targets" / "fw" / "security.img"));
}

// Staged offline metadata that has expired is not published (devices would reject it).
TEST_F(RepositoryTest, RefusesToPublishExpiredOfflineMetadata) {
  FakeClock later(clock_.Now() + std::chrono::days(400));  // root expires after 365 days
  auto repo = Repository::Open(work_ / "repo", fs_, later);
  ASSERT_TRUE(repo);
  EXPECT_ERRC(repo->Publish(work_ / "www"), Errc::Expired);
  EXPECT_FALSE(fs::exists(work_ / "www" / "metadata" / "timestamp.json"));
}

TEST_F(RepositoryTest, RefusesKeyFilesOthersCanRead) {
  const fs::path key = KeysOf("targets")[0];
  ::chmod(key.c_str(), 0644);
  EXPECT_ERRC(Open().Sign("targets", key), Errc::KeyFileInsecure);
}

TEST_F(RepositoryTest, RefusesKeysOfAnotherRole) {
  EXPECT_ERRC(Open().Sign("targets", KeysOf("timestamp")[0]), Errc::KeyNotAuthorized);
  EXPECT_ERRC(Open().Sign("snapshot", KeysOf("snapshot")[0]), Errc::UnknownRole);
}

TEST_F(RepositoryTest, RefusesToInitTwiceOrOpenNothing) {
  EXPECT_ERRC(Repository::Init(work_ / "repo", InitOptions{}, fs_, clock_), Errc::AlreadyExists);
  EXPECT_ERRC(Repository::Open(work_ / "nothing", fs_, clock_), Errc::NotARepository);
}

// Online keys must be on this machine to publish.
TEST_F(RepositoryTest, PublishNeedsTheOnlineKeys) {
  fs::remove(KeysOf("timestamp")[0]);
  EXPECT_ERRC(Open().Publish(work_ / "www"), Errc::MissingOnlineKey);
  EXPECT_FALSE(fs::exists(work_ / "www" / "metadata" / "timestamp.json"));
}

// Keys can be kept encrypted; the wrong passphrase cannot sign and is reported as such.
TEST(RepositoryKeysTest, EncryptsPrivateKeysWithPassphrase) {
  testing::TempDir work;
  LocalFilesystem fs_;
  SystemClock clock;
  InitOptions o;
  o.passphrase = "correct horse";
  ASSERT_TRUE(Repository::Init(work / "repo", o, fs_, clock));
  for (const auto& e : fs::directory_iterator(work / "repo" / "keys")) {
    EXPECT_NE(testing::ReadFileOrEmpty(e.path()).find("ENCRYPTED"), std::string::npos);
    EXPECT_EQ(fs::status(e.path()).permissions() & fs::perms::group_all, fs::perms::none);
  }
  EXPECT_TRUE(Repository::Open(work / "repo", fs_, clock, "correct horse").value().Publish(work / "www"));
  EXPECT_ERRC(Repository::Open(work / "repo", fs_, clock, "wrong").value().Publish(work / "www2"),
              Errc::BadPassphrase);
  EXPECT_FALSE(fs::exists(work / "www2" / "metadata" / "timestamp.json"));
}

}  // namespace
}  // namespace upkeep::repository
