// A full disk while publishing: publish fails with a clear error, the repository is unchanged,
// and what a web server serves from the output is still the previous complete state. Needs root
// to mount a small tmpfs (ctest label `root`); skipped elsewhere.

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <fstream>

#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/repository/repository.hpp"

namespace upkeep::repository {
namespace {

namespace fs = std::filesystem;
using metadata::Json;

TEST(FullDiskTest, PublishFailsCleanlyWhenTheOutputDiskIsFull) {
  testing::TempDir work;
  const fs::path out = work / "www";
  fs::create_directories(out);
  if (::geteuid() != 0 || ::mount("tmpfs", out.c_str(), "tmpfs", 0, "size=256k") != 0) {
    GTEST_SKIP() << "needs root to mount a small tmpfs";
  }
  struct Unmount {
    fs::path dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{out};

  LocalFilesystem fs_;
  SystemClock clock;
  auto repo = Repository::Init(work / "repo", InitOptions{}, fs_, clock);
  ASSERT_TRUE(repo);
  ASSERT_TRUE(repo->Publish(out));  // a first, small release fits
  const std::string served_timestamp = testing::ReadFileOrEmpty(out / "metadata" / "timestamp.json");
  const std::string settings = testing::ReadFileOrEmpty(work / "repo" / "repo.json");

  std::ofstream(work / "big.img", std::ios::binary) << std::string(1 << 20, 'x');  // > 256 KiB
  Json meta = {{"upkeep",
                {{"schema", 1}, {"component", "rootfs"}, {"version", "2"}, {"hardware", {"hw"}},
                 {"security_version", 1}, {"kind", {"feature"}},
                 {"disruption", {{"reboot", true}, {"downtime_seconds", 1},
                                 {"available_during_update", Json::array()}}},
                 {"settings_impact", {{"effect", "none"}, {"note", ""}}},
                 {"payload", {{"format", "raw"}, {"installed_size", 1 << 20}}}}}};
  ASSERT_TRUE(repo->AddTarget(work / "big.img", "fw/big.img", meta));
  auto root = Json::parse(testing::ReadFileOrEmpty(work / "repo" / "staged" / "root.json"));
  const std::string targets_key = root["signed"]["roles"]["targets"]["keyids"][0];
  ASSERT_TRUE(repo->Sign("targets", work / "repo" / "keys" / (targets_key + ".pem")));

  auto published = repo->Publish(out);
  ASSERT_FALSE(published);
  EXPECT_EQ(published.error().code(), Errc::IoError) << published.error().ToString();
  // Clients still see the previous release; the repository did not record a publication.
  EXPECT_EQ(testing::ReadFileOrEmpty(out / "metadata" / "timestamp.json"), served_timestamp);
  EXPECT_EQ(testing::ReadFileOrEmpty(work / "repo" / "repo.json"), settings);
  // No temporary file is left behind on the full disk.
  for (const auto& e : fs::recursive_directory_iterator(out)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }
}

}  // namespace
}  // namespace upkeep::repository
