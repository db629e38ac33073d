// Offline bundles (docs/formats/bundle.md): built from a published repository (the tuf-js
// fixtures), verified by the device with the same Updater and trusted root as a network update;
// a modified byte anywhere is rejected.

#include "upkeep/install/bundle.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "cli.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/metadata/errc.hpp"
#include "upkeep/metadata/updater.hpp"

namespace upkeep::install {
namespace {

namespace fs = std::filesystem;
const fs::path kFixtures = fs::path(UPKEEP_TESTDATA_DIR) / "tufjs";

class BundleTest : public ::testing::Test {
 protected:
  std::string Root(const std::string& scenario) {
    return testing::ReadFileOrEmpty(kFixtures / scenario / "initial_root.json");
  }

  Result<std::vector<BundleEntry>> Create(const std::string& scenario,
                                          const std::vector<std::string>& targets) {
    return CreateBundle(kFixtures / scenario, Root(scenario), targets, dir_ / "update.upkb");
  }

  // What a device does with a bundle: open it, refresh from it with its own trusted root, and
  // download every target. Returns the downloaded contents by path.
  Result<std::map<std::string, std::string>> Install(const std::string& scenario,
                                                     const std::vector<std::string>& targets,
                                                     const fs::path& bundle_path) {
    testing::TempDir device;
    std::ofstream(device / "root.json", std::ios::binary) << Root(scenario);
    UPKEEP_ASSIGN_OR_RETURN(Bundle bundle, Bundle::Open(bundle_path));
    BundleFetcher fetcher(bundle);
    LocalFilesystem fs;
    SystemClock clock;
    metadata::Updater updater(device.path(), kBundleMetadataUrl, fetcher, fs, clock);
    UPKEEP_TRY(updater.Refresh());
    std::map<std::string, std::string> out;
    for (const auto& t : targets) {
      UPKEEP_ASSIGN_OR_RETURN(auto info, updater.GetTargetInfo(t));
      UPKEEP_ASSIGN_OR_RETURN(auto file,
                              updater.DownloadTarget(info, kBundleTargetsUrl, device.path()));
      out[t] = testing::ReadFileOrEmpty(file);
    }
    return out;
  }

  testing::TempDir dir_;
};

const std::vector<std::string> kTargets{"a/deep/two.txt", "t/four.txt", "top.txt"};

TEST_F(BundleTest, DeviceInstallsTargetsFromBundle) {
  ASSERT_TRUE(Create("delegations", kTargets));
  auto installed = Install("delegations", kTargets, dir_ / "update.upkb");
  ASSERT_TRUE(installed) << installed.error().ToString();
  const auto expected =
      metadata::Json::parse(testing::ReadFileOrEmpty(kFixtures / "delegations" / "expected.json"));
  for (const auto& t : kTargets) {
    EXPECT_EQ(HexEncode(crypto::Sha256((*installed)[t])),
              expected["targets"][t]["sha256"].get<std::string>())
        << t;
  }
}

// The bundle carries the root rotations a device at the given root needs, in order.
TEST_F(BundleTest, CarriesRootRotations) {
  auto entries = Create("rotation-threshold", {"hello.txt"});
  ASSERT_TRUE(entries) << entries.error().ToString();
  ASSERT_GE(entries->size(), 2u);
  EXPECT_EQ((*entries)[0].name, "metadata/2.root.json");
  EXPECT_EQ((*entries)[1].name, "metadata/3.root.json");
  EXPECT_TRUE(Install("rotation-threshold", {"hello.txt"}, dir_ / "update.upkb"));
}

// A bundle is never built from a repository a device would reject.
TEST_F(BundleTest, RefusesToBundleARepositoryThatDoesNotVerify) {
  EXPECT_ERRC(Create("expired-timestamp", {"hello.txt"}), metadata::Errc::Expired);
  EXPECT_ERRC(Create("tampered-target", {"hello.txt"}), metadata::Errc::TargetHashMismatch);
  EXPECT_ERRC(Create("basic", {"no/such/target"}), metadata::Errc::TargetNotFound);
  EXPECT_FALSE(fs::exists(dir_ / "update.upkb"));
}

class TamperedBundleTest : public BundleTest {
 protected:
  void SetUp() override {
    auto entries = Create("delegations", kTargets);
    ASSERT_TRUE(entries) << entries.error().ToString();
    entries_ = *entries;
    good_ = testing::ReadFileOrEmpty(dir_ / "update.upkb");
  }
  Result<std::map<std::string, std::string>> InstallWithFlip(std::size_t pos) {
    std::string bad = good_;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x01);
    std::ofstream(dir_ / "bad.upkb", std::ios::binary | std::ios::trunc) << bad;
    return Install("delegations", kTargets, dir_ / "bad.upkb");
  }
  const BundleEntry& Entry(const std::string& name) {
    for (const auto& e : entries_) {
      if (e.name == name) return e;
    }
    throw std::runtime_error("no entry " + name);
  }
  std::vector<BundleEntry> entries_;
  std::string good_;
};

TEST_F(TamperedBundleTest, RejectsBadHeader) {
  EXPECT_ERRC(InstallWithFlip(0), Errc::BundleMalformed);  // magic
  EXPECT_ERRC(InstallWithFlip(9), Errc::BundleMalformed);  // table of contents length
}

TEST_F(TamperedBundleTest, RejectsBadTableOfContents) {
  EXPECT_ERRC(InstallWithFlip(16), Errc::BundleMalformed);  // first byte of the JSON
  const std::size_t length_digit = good_.find("\"length\":") + 9;
  EXPECT_ERRC(InstallWithFlip(length_digit), Errc::BundleMalformed);
}

TEST_F(TamperedBundleTest, RejectsModifiedSignedMetadata) {
  const BundleEntry& ts = Entry("metadata/timestamp.json");
  // "expires": "2099-…" becomes 2098: still well-formed, no longer what was signed.
  const std::size_t year = good_.find("2099", good_.find("\"expires\"", ts.offset)) + 3;
  ASSERT_LT(year, ts.offset + ts.length);
  EXPECT_ERRC(InstallWithFlip(year), metadata::Errc::ThresholdNotMet);
}

TEST_F(TamperedBundleTest, RejectsModifiedTarget) {
  for (const auto& e : entries_) {
    if (e.name.starts_with("targets/")) {
      SCOPED_TRACE(e.name);
      EXPECT_ERRC(InstallWithFlip(e.offset), metadata::Errc::TargetHashMismatch);
    }
  }
}

// Whatever byte is modified, the device installs nothing (every byte is read and covered).
TEST_F(TamperedBundleTest, RejectsAModifiedByteAnywhere) {
  ASSERT_TRUE(Install("delegations", kTargets, dir_ / "update.upkb"));
  for (std::size_t pos = 0; pos < good_.size(); pos += 13) {
    EXPECT_FALSE(InstallWithFlip(pos)) << "byte " << pos << " of " << good_.size();
  }
}

TEST_F(TamperedBundleTest, RejectsTruncationAndTrailingBytes) {
  std::ofstream(dir_ / "short.upkb", std::ios::binary) << good_.substr(0, good_.size() - 1);
  EXPECT_ERRC(Bundle::Open(dir_ / "short.upkb"), Errc::BundleMalformed);
  std::ofstream(dir_ / "long.upkb", std::ios::binary) << good_ << "x";
  EXPECT_ERRC(Bundle::Open(dir_ / "long.upkb"), Errc::BundleMalformed);
  std::ofstream(dir_ / "empty.upkb", std::ios::binary);
  EXPECT_ERRC(Bundle::Open(dir_ / "empty.upkb"), Errc::BundleMalformed);
  EXPECT_ERRC(Bundle::Open(dir_ / "missing.upkb"), Errc::ReadFailed);
}

// `upkeep bundle create` and `upkeep bundle verify` on the command line.
TEST_F(BundleTest, CommandLineCreatesAndVerifiesBundles) {
  auto run = [](std::vector<std::string> args) {
    std::vector<const char*> argv{"upkeep"};
    for (const auto& a : args) argv.push_back(a.c_str());
    std::ostringstream out, err;
    return tool::Main(static_cast<int>(argv.size()), argv.data(), out, err);
  };
  const std::string root = (kFixtures / "delegations" / "initial_root.json").string();
  const std::string file = (dir_ / "cli.upkb").string();
  ASSERT_EQ(run({"bundle", "create", "--repo", (kFixtures / "delegations").string(), "--root", root,
                 "--target", "a/one.txt", "-o", file}),
            0);
  ASSERT_EQ(run({"bundle", "verify", file, "--root", root, "--target", "a/one.txt", "-o",
                 (dir_ / "ok").string()}),
            0);
  EXPECT_TRUE(fs::exists(dir_ / "ok" / "a%2Fone.txt"));
  std::string bad = testing::ReadFileOrEmpty(file);
  bad[bad.size() - 1] ^= 0x01;  // inside the target
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bad;
  EXPECT_EQ(run({"bundle", "verify", file, "--root", root, "--target", "a/one.txt", "-o",
                 (dir_ / "bad").string()}),
            1);
  EXPECT_FALSE(fs::exists(dir_ / "bad" / "a%2Fone.txt"));
  EXPECT_EQ(run({"bundle", "create", "--repo", (kFixtures / "expired-timestamp").string(), "--root",
                 root, "--target", "hello.txt", "-o", (dir_ / "x.upkb").string()}),
            1);
  EXPECT_EQ(run({"bundle", "verify"}), 2);
}

}  // namespace
}  // namespace upkeep::install

namespace upkeep::install {
namespace {

// A bundle whose header and table of contents are `toc`, with `body` after them.
void WriteBundle(const fs::path& path, const std::string& toc, std::uint64_t toc_length,
                 const std::string& body = "") {
  std::string header(kBundleMagic, sizeof kBundleMagic);
  for (int i = 0; i < 8; ++i) header += static_cast<char>((toc_length >> (8 * i)) & 0xff);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << header << toc << body;
}

// A header declaring a table of contents of 2^63 bytes is refused before anything is allocated.
TEST_F(BundleTest, RefusesHeaderDeclaringAHugeTableOfContents) {
  WriteBundle(dir_ / "huge.upkb", "{}", 1ull << 63);
  EXPECT_ERRC(Bundle::Open(dir_ / "huge.upkb"), Errc::BundleMalformed);
  WriteBundle(dir_ / "huge.upkb", "{}", kMaxBundleTocBytes + 1);
  EXPECT_ERRC(Bundle::Open(dir_ / "huge.upkb"), Errc::BundleMalformed);
}

// An entry declaring more bytes than the file holds (up to 2^64 - 1) is refused.
TEST_F(BundleTest, RefusesEntryDeclaringAHugeLength) {
  const std::string toc =
      R"({"entries":[{"length":18446744073709551615,"name":"targets/x"}],"format":1})";
  WriteBundle(dir_ / "huge.upkb", toc, toc.size(), "abc");
  EXPECT_ERRC(Bundle::Open(dir_ / "huge.upkb"), Errc::BundleMalformed);
}

// Without a usable temporary directory CreateBundle returns an error (no exception escapes).
TEST_F(BundleTest, CreateBundleWithoutTemporaryDirectoryIsWriteFailed) {
  const char* old = std::getenv("TMPDIR");
  const std::string saved = old != nullptr ? old : "";
  ::setenv("TMPDIR", (dir_ / "missing" / "tmp").c_str(), 1);
  auto r = Create("delegations", kTargets);
  if (old != nullptr) {
    ::setenv("TMPDIR", saved.c_str(), 1);
  } else {
    ::unsetenv("TMPDIR");
  }
  EXPECT_ERRC(r, Errc::WriteFailed);
}

// CreateBundle checks the repository's expiry against the clock it is given.
TEST_F(BundleTest, CreateBundleChecksExpiryWithTheGivenClock) {
  LocalFilesystem fs;
  FakeClock late(FakeClock::TimePoint(std::chrono::sys_days(std::chrono::year(2200) / 1 / 1)));
  EXPECT_ERRC(CreateBundle(kFixtures / "delegations", Root("delegations"), kTargets,
                           dir_ / "late.upkb", fs, late),
              metadata::Errc::Expired);
  FakeClock now(FakeClock::TimePoint(std::chrono::sys_days(std::chrono::year(2030) / 1 / 1)));
  EXPECT_TRUE(CreateBundle(kFixtures / "delegations", Root("delegations"), kTargets,
                           dir_ / "now.upkb", fs, now)
                  .has_value());
}

}  // namespace
}  // namespace upkeep::install
