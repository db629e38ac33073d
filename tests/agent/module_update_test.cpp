// Repeated updates of one module component through the real Agent: every version replaces the
// previous one, a failed update leaves the last good version in place (content and journal),
// and the next update still works.

#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "simulated_device.hpp"
#include "test_util.hpp"
#include "upkeep/agent/agent.hpp"
#include "upkeep/metadata/canonical_json.hpp"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using testing::MakeImage;
using testing::ReadFileOrEmpty;
using testing::ReleaseRepo;
using testing::SimulatedDevice;

// A ustar archive of regular files (name -> content), as a dir module release carries.
std::string Tarball(const std::map<std::string, std::string>& files) {
  std::string out;
  for (const auto& [name, content] : files) {
    char header[512] = {};
    std::snprintf(header, 100, "%s", name.c_str());
    std::snprintf(header + 100, 8, "%07o", 0644);
    std::snprintf(header + 108, 8, "%07o", 0);
    std::snprintf(header + 116, 8, "%07o", 0);
    std::snprintf(header + 124, 12, "%011o", static_cast<unsigned>(content.size()));
    std::snprintf(header + 136, 12, "%011o", 1700000000u);
    header[156] = '0';
    std::memcpy(header + 257, "ustar", 6);
    std::memcpy(header + 263, "00", 2);
    std::memset(header + 148, ' ', 8);
    unsigned sum = 0;
    for (char c : header) sum += static_cast<unsigned char>(c);
    std::snprintf(header + 148, 8, "%06o", sum);
    out.append(header, sizeof header);
    out += content;
    out.append((512 - content.size() % 512) % 512, '\0');
  }
  out.append(1024, '\0');
  return out;
}

// The dir module release of version `n`: "version" holds n, and "only-in-N" exists in this
// version only.
std::string TreeVersion(int n) {
  const std::string v = std::to_string(n);
  return Tarball({{"version", v + "\n"}, {"only-in-" + v, v + "\n"}});
}

void ExpectTreeVersion(const fs::path& dir, int n, int versions) {
  EXPECT_EQ(ReadFileOrEmpty(dir / "version"), std::to_string(n) + "\n");
  for (int other = 1; other <= versions; ++other) {
    EXPECT_EQ(fs::exists(dir / ("only-in-" + std::to_string(other))), other == n)
        << "only-in-" << other << " after version " << n;
  }
}

class ModuleUpdateTest : public ::testing::Test {
 protected:
  ModuleUpdateTest()
      : repo_(tmp_ / "release"), device_(tmp_ / "device", repo_.root_path(), MakeImage(4096, 1)) {}
  void SetUp() override {
    repo_.Publish();
    fs::copy_file(repo_.root_path(), tmp_ / "root.json");
    device_.config.trust.root = tmp_ / "root.json";
    device_.Boot();
  }

  // Configures component "app" with the shipped module `type` and `args`.
  void UseModule(const std::string& type, const metadata::Json& args) {
    ModuleConfig module;
    module.command = {UPKEEP_MODULE_BIN, type};
    module.args_json = args.dump();
    device_.config.components["app"] = module;
  }

  // Signs `bytes` as app/<file> at `version` (security_version = version) and installs it from
  // a bundle with a fresh agent.
  Result<InstallOutcome> Release(const std::string& file, const std::string& bytes, int version) {
    const std::string target = "app/" + file;
    repo_.AddFile(target, bytes, metadata::Component::Application, std::to_string(version),
                  static_cast<std::uint64_t>(version));
    repo_.Publish();
    const auto bundle = repo_.BundleTargets({target}, "app-" + std::to_string(version) + ".upkb");
    return device_.Agent().Install(bundle.string(), target);
  }

  // The journal records `version` for "app" and a security floor of `version`.
  void ExpectJournal(int version) {
    auto status = device_.Agent().Status();
    ASSERT_TRUE(status.has_value()) << status.error().ToString();
    ASSERT_EQ(status->state.components.count("app"), 1u);
    EXPECT_EQ(status->state.components.at("app").version, std::to_string(version));
    ASSERT_EQ(status->state.security.count("app"), 1u);
    EXPECT_EQ(status->state.security.at("app").security_version,
              static_cast<std::uint64_t>(version));
  }

  testing::TempDir tmp_;
  ReleaseRepo repo_;
  SimulatedDevice device_;
};

// Three updates of a dir component in a row each replace the tree: a later update is neither
// skipped (stale swap state taken as done) nor recorded without its content.
TEST_F(ModuleUpdateTest, SecondAndThirdDirUpdateReplaceTheTree) {
  const fs::path dest = tmp_ / "srv" / "app";
  fs::create_directories(dest.parent_path());
  UseModule("dir", {{"dest", dest.string()}});
  for (int v = 1; v <= 3; ++v) {
    SCOPED_TRACE("version " + std::to_string(v));
    auto installed = Release("tree-" + std::to_string(v) + ".tar", TreeVersion(v), v);
    ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
    ExpectTreeVersion(dest, v, 3);
    ExpectJournal(v);
  }
}

// A refused dir update after several good ones leaves the last good tree and journal entry;
// the next update installs normally.
TEST_F(ModuleUpdateTest, FailedDirUpdateKeepsPreviousTreeAndNextUpdateSucceeds) {
  const fs::path dest = tmp_ / "srv" / "app";
  fs::create_directories(dest.parent_path());
  UseModule("dir", {{"dest", dest.string()}});
  for (int v = 1; v <= 3; ++v) {
    ASSERT_TRUE(Release("tree-" + std::to_string(v) + ".tar", TreeVersion(v), v).has_value());
  }
  // Version 4 is not a tar archive: the module refuses it at Install and rolls back.
  EXPECT_ERRC(Release("tree-4.tar", "#mtree\n./version type=file contents=/etc/hostname\n", 4),
              Errc::ModuleFailed);
  ExpectTreeVersion(dest, 3, 5);
  ExpectJournal(3);
  auto fifth = Release("tree-5.tar", TreeVersion(5), 5);
  ASSERT_TRUE(fifth.has_value()) << fifth.error().ToString();
  ExpectTreeVersion(dest, 5, 5);
  ExpectJournal(5);
}

// Three updates of a file component in a row, each with its own artifact name: every one
// installs (no leftover artifact of an earlier update makes the module fail).
TEST_F(ModuleUpdateTest, SecondAndThirdFileUpdateReplaceTheFile) {
  const fs::path dest = tmp_ / "etc" / "app.conf";
  fs::create_directories(dest.parent_path());
  UseModule("file", {{"dest", dest.string()}});
  for (int v = 1; v <= 3; ++v) {
    SCOPED_TRACE("version " + std::to_string(v));
    auto installed =
        Release("app-" + std::to_string(v) + ".conf", "setting=" + std::to_string(v) + "\n", v);
    ASSERT_TRUE(installed.has_value()) << installed.error().ToString();
    EXPECT_EQ(ReadFileOrEmpty(dest), "setting=" + std::to_string(v) + "\n");
    ExpectJournal(v);
  }
}

// A file update whose Commit fails is rolled back to the previous version (content and
// journal); the next update installs normally.
TEST_F(ModuleUpdateTest, FailedFileUpdateKeepsPreviousFileAndNextUpdateSucceeds) {
  const fs::path dest = tmp_ / "etc" / "app.conf";
  fs::create_directories(dest.parent_path());
  UseModule("file", {{"dest", dest.string()}});
  for (int v = 1; v <= 3; ++v) {
    ASSERT_TRUE(
        Release("app-" + std::to_string(v) + ".conf", "setting=" + std::to_string(v) + "\n", v)
            .has_value());
  }
  // The shipped module, except that its Commit stage fails.
  const fs::path script = tmp_ / "fail-at-commit.sh";
  testing::WriteBytes(script, std::string("#!/bin/sh\n") +
                                  "if [ \"$1\" = Commit ]; then echo forced failure; exit 1; fi\n"
                                  "exec " +
                                  UPKEEP_MODULE_BIN + " file \"$@\"\n");
  fs::permissions(script, fs::perms(0755));
  device_.config.components["app"].command = {script.string()};
  EXPECT_ERRC(Release("app-4.conf", "setting=4\n", 4), Errc::ModuleFailed);
  EXPECT_EQ(ReadFileOrEmpty(dest), "setting=3\n");
  ExpectJournal(3);

  UseModule("file", {{"dest", dest.string()}});
  auto fifth = Release("app-5.conf", "setting=5\n", 5);
  ASSERT_TRUE(fifth.has_value()) << fifth.error().ToString();
  EXPECT_EQ(ReadFileOrEmpty(dest), "setting=5\n");
  ExpectJournal(5);
}

}  // namespace
}  // namespace upkeep::agent
