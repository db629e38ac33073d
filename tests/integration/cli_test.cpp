// The upkeep-tuf-client command-line contract (README "upkeep-tuf-client"), run in-process
// against tuf-js fixtures served on 127.0.0.1: arguments in any order, exit codes, the files left
// in the metadata and target directories, and the requests made.

#include <gtest/gtest.h>

#include "test_util.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "cli.hpp"
#include "http_test_server.hpp"
#include "temp_dir.hpp"

namespace upkeep {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(UPKEEP_TESTDATA_DIR) / "tufjs";

std::set<std::string> Listing(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    out.insert(fs::relative(e.path(), dir).string());
  }
  return out;
}

class CliTest : public ::testing::Test {
 protected:
  int Run(std::vector<std::string> args) {
    std::vector<const char*> argv{"upkeep-tuf-client"};
    for (const auto& a : args) argv.push_back(a.c_str());
    out_.str("");
    err_.str("");
    return tufclient::Main(static_cast<int>(argv.size()), argv.data(), out_, err_);
  }
  std::string MetadataUrl(const std::string& scenario) const {
    return server_.base_url() + "/" + scenario + "/metadata";
  }
  std::string TargetsUrl(const std::string& scenario) const {
    return server_.base_url() + "/" + scenario + "/targets";
  }
  int Init(const std::string& scenario) {
    return Run({"--metadata-dir", meta_.path().string(), "init",
                (kFixtures / scenario / "initial_root.json").string()});
  }
  int Refresh(const std::string& scenario) {
    return Run({"--metadata-dir", meta_.path().string(), "--metadata-url", MetadataUrl(scenario),
                "refresh"});
  }
  int Download(const std::string& scenario, const std::string& target) {
    return Run({"--metadata-dir", meta_.path().string(), "--metadata-url", MetadataUrl(scenario),
                "--target-name", target, "--target-base-url", TargetsUrl(scenario), "--target-dir",
                targets_.path().string(), "download"});
  }

  testing::HttpTestServer server_{kFixtures};
  testing::TempDir meta_;
  testing::TempDir targets_;
  std::ostringstream out_;
  std::ostringstream err_;
};

// init copies the trusted root into DIR as root.json without any request.
TEST_F(CliTest, InitInstallsTrustedRootWithoutNetwork) {
  ASSERT_EQ(Init("basic"), 0) << err_.str();
  EXPECT_EQ(testing::ReadFileOrEmpty(meta_ / "root.json"), testing::ReadFileOrEmpty(kFixtures / "basic" / "initial_root.json"));
  EXPECT_TRUE(server_.requests().empty());
}

TEST_F(CliTest, InitFailsForMissingRootFile) {
  EXPECT_EQ(Run({"--metadata-dir", meta_.path().string(), "init", "/nonexistent/root.json"}), 1);
  EXPECT_FALSE(fs::exists(meta_ / "root.json"));
}

// TUF 5.2: a trusted root that does not parse or is not signed by its own threshold is refused
// at init, with the exact error, and nothing is installed.
TEST_F(CliTest, InitRefusesRootThatIsNotASelfSignedRoot) {
  const auto bad = meta_.path() / ".." / "bad-root.json";
  const std::string good = testing::ReadFileOrEmpty(kFixtures / "basic" / "initial_root.json");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"\xff\xfe", "metadata.MalformedJson"},
      {good.substr(0, good.size() / 2), "metadata.MalformedJson"},
      {testing::ReadFileOrEmpty(kFixtures / "basic" / "initial_root.json").replace(
           good.find("\"sig\": \"") + 8, 4, "0000"),
       "metadata.RootNotSignedByItself"},
  };
  for (const auto& [bytes, code] : cases) {
    SCOPED_TRACE(code);
    std::ofstream(bad, std::ios::binary | std::ios::trunc) << bytes;
    EXPECT_EQ(Run({"--metadata-dir", meta_.path().string(), "init", bad.string()}), 1);
    EXPECT_NE(err_.str().find(code), std::string::npos) << err_.str();
    EXPECT_FALSE(fs::exists(meta_ / "root.json"));
  }
}

// refresh fetches the top-level roles in workflow order and stores only unversioned names.
TEST_F(CliTest, RefreshStoresUnversionedTopLevelMetadata) {
  ASSERT_EQ(Init("basic"), 0);
  ASSERT_EQ(Refresh("basic"), 0) << err_.str();
  EXPECT_EQ(server_.requests(),
            (std::vector<std::string>{"/basic/metadata/2.root.json", "/basic/metadata/timestamp.json",
                                      "/basic/metadata/1.snapshot.json",
                                      "/basic/metadata/1.targets.json"}));
  EXPECT_EQ(Listing(meta_.path()),
            (std::set<std::string>{"root.json", "timestamp.json", "snapshot.json", "targets.json"}));
}

// Options may come in any order before the command.
TEST_F(CliTest, AcceptsOptionsInAnyOrder) {
  ASSERT_EQ(Init("basic"), 0);
  EXPECT_EQ(Run({"--metadata-url", MetadataUrl("basic"), "--metadata-dir", meta_.path().string(),
                 "refresh"}),
            0)
      << err_.str();
  EXPECT_EQ(Run({"--target-dir", targets_.path().string(), "--target-base-url",
                 TargetsUrl("basic"), "--metadata-url", MetadataUrl("basic"), "--target-name",
                 "hello.txt", "--metadata-dir", meta_.path().string(), "download"}),
            0)
      << err_.str();
}

// Rotated roots are followed and root.json ends as the newest.
TEST_F(CliTest, RefreshFollowsRootRotations) {
  ASSERT_EQ(Init("rotation-threshold"), 0);
  ASSERT_EQ(Refresh("rotation-threshold"), 0) << err_.str();
  EXPECT_EQ(testing::ReadFileOrEmpty(meta_ / "root.json"),
            testing::ReadFileOrEmpty(kFixtures / "rotation-threshold" / "metadata" / "3.root.json"));
}

TEST_F(CliTest, RefreshFailsOnExpiredTimestamp) {
  ASSERT_EQ(Init("expired-timestamp"), 0);
  EXPECT_EQ(Refresh("expired-timestamp"), 1);
  EXPECT_NE(err_.str().find("Expired"), std::string::npos) << err_.str();
  EXPECT_FALSE(fs::exists(meta_ / "timestamp.json"));
}

TEST_F(CliTest, RefreshFailsWithoutMetadataUrl) {
  ASSERT_EQ(Init("basic"), 0);
  EXPECT_EQ(Run({"--metadata-dir", meta_.path().string(), "refresh"}), 1);
}

TEST_F(CliTest, RejectsUnknownCommand) {
  EXPECT_EQ(Run({"--metadata-dir", meta_.path().string(), "explode"}), 1);
}

// download stores the verified target as TDIR/<percent-encoded path>.
TEST_F(CliTest, DownloadStoresTargetUnderEncodedPath) {
  ASSERT_EQ(Init("basic"), 0);
  ASSERT_EQ(Download("basic", "dir/nested file.bin"), 0) << err_.str();
  EXPECT_EQ(Listing(targets_.path()), (std::set<std::string>{"dir%2Fnested%20file.bin"}));
}

// A target with matching hashes already in TDIR is not downloaded again.
TEST_F(CliTest, DownloadReusesVerifiedCopy) {
  ASSERT_EQ(Init("basic"), 0);
  ASSERT_EQ(Download("basic", "hello.txt"), 0) << err_.str();
  server_.ClearRequests();
  ASSERT_EQ(Download("basic", "hello.txt"), 0) << err_.str();
  for (const auto& r : server_.requests()) {
    EXPECT_EQ(r.find("/targets/"), std::string::npos) << r;
  }
}

// download refreshes first, even when the target does not exist (then it fails).
TEST_F(CliTest, DownloadOfUnknownTargetRefreshesThenFails) {
  ASSERT_EQ(Init("basic"), 0);
  EXPECT_EQ(Download("basic", "nonexistent artifact"), 1);
  EXPECT_TRUE(fs::exists(meta_ / "targets.json"));
  EXPECT_TRUE(Listing(targets_.path()).empty());
}

TEST_F(CliTest, DownloadRejectsTamperedTarget) {
  ASSERT_EQ(Init("tampered-target"), 0);
  EXPECT_EQ(Download("tampered-target", "hello.txt"), 1);
  EXPECT_NE(err_.str().find("TargetHashMismatch"), std::string::npos) << err_.str();
  EXPECT_TRUE(Listing(targets_.path()).empty());
}

// Delegated metadata is stored under the percent-encoded role name.
TEST_F(CliTest, DownloadThroughDelegationStoresEncodedRoleNames) {
  ASSERT_EQ(Init("delegations"), 0);
  ASSERT_EQ(Download("delegations", "t/four.txt"), 0) << err_.str();
  EXPECT_TRUE(fs::exists(meta_ / "team%2Fns%3A1.json"));
  EXPECT_EQ(server_.requests().back(),
            "/delegations/targets/t/"
            "b06b29e81e9fac8eab16720c5548cf6446d4a1b30da66d91b134d2f7046f7fad.four.txt");
}

// The client reads the time through libc: faketime moves it past the fixtures' expiry (2099).
TEST_F(CliTest, ReadsTimeThroughLibcSoFaketimeApplies) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "faketime's preloaded library cannot be combined with sanitizer runtimes";
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
  GTEST_SKIP() << "faketime's preloaded library cannot be combined with sanitizer runtimes";
#endif
#endif
  if (std::system("command -v faketime >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "faketime is not installed";
  }
  ASSERT_EQ(Init("basic"), 0);
  const std::string base = std::string("timeout 60 faketime '2100-01-01 00:00:00' ") +
                           UPKEEP_TUF_CLIENT +
                           " --metadata-dir " + meta_.path().string() + " --metadata-url " +
                           MetadataUrl("basic") + " refresh >/dev/null 2>&1";
  EXPECT_NE(std::system(base.c_str()), 0);
  const std::string now = std::string("timeout 60 ") + UPKEEP_TUF_CLIENT + " --metadata-dir " +
                          meta_.path().string() + " --metadata-url " + MetadataUrl("basic") +
                          " refresh >/dev/null 2>&1";
  EXPECT_EQ(std::system(now.c_str()), 0);
}

}  // namespace
}  // namespace upkeep
