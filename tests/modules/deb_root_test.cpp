// The deb module with the real dpkg: installs upkeep-test-pkg 1, fails an upgrade to 2 and
// checks that the rollback brought 1 back. Changes the system's package database, so it runs
// only as root (label `root`) and removes the package afterwards.

#include <unistd.h>

#include "module_test_util.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/modules/module.hpp"

namespace upkeep::modules {
namespace {

namespace fs = std::filesystem;
using testing::ReadFileOrEmpty;
using testing::TempDir;
using testing::WriteTextFile;

constexpr const char* kPackage = "upkeep-test-pkg";

Result<ProcessResult> RunTool(const std::vector<std::string>& argv) {
  ProcessOptions options;
  options.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive"};
  options.timeout = std::chrono::seconds(120);
  return RunProcess(argv, options);
}

std::string InstalledVersion() {
  auto r = RunTool(
      {"/usr/bin/dpkg-query", "-W", "--showformat=${db:Status-Status} ${Version}", kPackage});
  if (!r || r->exit_code != 0) return "";
  const std::string prefix = "installed ";
  return r->output.rfind(prefix, 0) == 0 ? r->output.substr(prefix.size()) : "";
}

// Builds upkeep-test-pkg_VERSION_all.deb shipping /usr/share/upkeep-test-pkg/version.
fs::path BuildDeb(const fs::path& dir, const std::string& version) {
  const fs::path root = dir / ("pkg-" + version);
  WriteTextFile(root / "DEBIAN" / "control",
                std::string("Package: ") + kPackage + "\nVersion: " + version +
                    "\nArchitecture: all\nMaintainer: upkeep tests <tests@example.invalid>\n"
                    "Description: upkeep deb module test package\n");
  WriteTextFile(root / "usr" / "share" / kPackage / "version", version + "\n");
  const fs::path deb = dir / "out" / (std::string(kPackage) + "_" + version + "_all.deb");
  fs::create_directories(deb.parent_path());
  auto r =
      RunTool({"/usr/bin/dpkg-deb", "--root-owner-group", "--build", root.string(), deb.string()});
  EXPECT_TRUE(r && r->exit_code == 0) << (r ? r->output : r.error().ToString());
  return deb;
}

class DebModuleRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    for (const char* tool : {"/usr/bin/dpkg", "/usr/bin/dpkg-query", "/usr/bin/dpkg-deb"}) {
      if (::access(tool, X_OK) != 0) GTEST_SKIP() << tool << " not available";
    }
    Purge();
  }
  void TearDown() override {
    if (::geteuid() == 0 && ::access("/usr/bin/dpkg", X_OK) == 0) Purge();
  }
  static void Purge() { (void)RunTool({"/usr/bin/dpkg", "--purge", kPackage}); }
};

TEST_F(DebModuleRootTest, RealDpkgRollsBackFailedUpgrade) {
  TempDir tmp;
  const fs::path cache = tmp / "cache";
  const std::string args = "{\"cache_dir\": \"" + cache.string() + "\"}";
  std::vector<fs::path> v1 = {BuildDeb(tmp.path(), "1")};
  std::vector<fs::path> v2 = {BuildDeb(tmp.path(), "2")};

  auto first = InstallComponent(testing::ShippedModule("deb"),
                                testing::MakeWorkDir(tmp / "work-1", args, v1));
  ASSERT_TRUE(first) << first.error().ToString();
  EXPECT_EQ(InstalledVersion(), "1");

  auto upgrade = InstallComponent(testing::FailingAt(tmp.path(), "deb", "Commit"),
                                  testing::MakeWorkDir(tmp / "work-2", args, v2));
  EXPECT_ERRC(upgrade, Errc::RolledBack);
  EXPECT_EQ(InstalledVersion(), "1");
  EXPECT_EQ(ReadFileOrEmpty(fs::path("/usr/share") / kPackage / "version"), "1\n");
}

}  // namespace
}  // namespace upkeep::modules
