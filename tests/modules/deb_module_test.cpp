// The deb module against fake dpkg tools (shell scripts keeping a package database in a
// temporary directory), so that these tests never touch the real system.

#include "module_test_util.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/modules/module.hpp"

namespace upkeep::modules {
namespace {

namespace fs = std::filesystem;
using testing::ReadFileOrEmpty;
using testing::TempDir;
using testing::WriteScript;
using testing::WriteTextFile;

class DebModuleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(db_);
    // A fake .deb is a text file of "Field: value" lines.
    WriteScript(tmp_ / "bin" / "dpkg-deb",
                "[ \"$1\" = -f ] || exit 2\n"
                "sed -n \"s/^$3: //p\" \"$2\"");
    WriteScript(tmp_ / "bin" / "dpkg-query",
                "[ \"$1\" = -W ] || exit 2\n"
                "[ \"$2\" = '--showformat=${db:Status-Status} ${Version}' ] || exit 2\n"
                "if [ -f " +
                    db_.string() +
                    "/\"$3\" ]; then\n"
                    "  printf 'installed %s' \"$(cat " +
                    db_.string() +
                    "/\"$3\")\"\n"
                    "else echo \"dpkg-query: no packages found matching $3\" >&2; exit 1; fi");
    WriteScript(
        tmp_ / "bin" / "dpkg",
        "echo \"$*\" >> " + (db_ / "log").string() +
            "\n"
            "case \"$1\" in\n"
            "  -i) name=$(sed -n 's/^Package: //p' \"$2\")\n"
            "      if grep -q '^Fail: yes' \"$2\"; then echo 'postinst failed'; exit 1; fi\n"
            "      sed -n 's/^Version: //p' \"$2\" > " +
            db_.string() +
            "/\"$name\";;\n"
            "  -r) rm -f " +
            db_.string() +
            "/\"$2\";;\n"
            "  *) exit 2;;\n"
            "esac");
  }

  // The module_args pointing the module at the fake tools and the cache.
  std::string Args(bool with_cache = true) const {
    std::string args = "{\"dpkg\": \"" + (tmp_ / "bin" / "dpkg").string() +
                       "\", \"dpkg-query\": \"" + (tmp_ / "bin" / "dpkg-query").string() +
                       "\", \"dpkg-deb\": \"" + (tmp_ / "bin" / "dpkg-deb").string() + "\"";
    if (with_cache) args += ", \"cache_dir\": \"" + cache_.string() + "\"";
    return args + "}";
  }

  // A work directory for version `version` of the fake package (tmp/work-VERSION unless
  // `work` names one).
  fs::path WorkFor(const std::string& version, bool fail = false, bool with_cache = true,
                   const std::string& work = "") {
    fs::path deb = tmp_ / ("artifact-" + version) / ("upkeep-fake_" + version + ".deb");
    WriteTextFile(deb,
                  "Package: upkeep-fake\nVersion: " + version + "\n" + (fail ? "Fail: yes\n" : ""));
    return testing::MakeWorkDir(tmp_ / (work.empty() ? "work-" + version : work), Args(with_cache),
                                {deb}, version);
  }

  void SetInstalled(const std::string& version) {
    WriteTextFile(db_ / "upkeep-fake", version + "\n");
  }
  std::string Installed() const { return ReadFileOrEmpty(db_ / "upkeep-fake"); }
  std::string DpkgLog() const { return ReadFileOrEmpty(db_ / "log"); }

  TempDir tmp_;
  fs::path db_ = tmp_ / "db";
  fs::path cache_ = tmp_ / "cache";
  ModuleSpec module_ = testing::ShippedModule("deb");
};

TEST_F(DebModuleTest, InstallsAndCachesCommittedVersion) {
  auto r = InstallComponent(module_, WorkFor("1.0"));
  ASSERT_TRUE(r) << r.error().ToString();
  EXPECT_EQ(Installed(), "1.0\n");
  EXPECT_TRUE(fs::exists(cache_ / "upkeep-fake_1.0.deb"));
  // The next committed version replaces the cached one.
  ASSERT_TRUE(InstallComponent(module_, WorkFor("2:1.1")));
  EXPECT_EQ(Installed(), "2:1.1\n");
  EXPECT_TRUE(fs::exists(cache_ / "upkeep-fake_2%3a1.1.deb"));
  EXPECT_FALSE(fs::exists(cache_ / "upkeep-fake_1.0.deb"));
}

TEST_F(DebModuleTest, RollbackReinstallsPreviousVersionFromCache) {
  ASSERT_TRUE(InstallComponent(module_, WorkFor("1.0")));
  auto r = InstallComponent(testing::FailingAt(tmp_.path(), "deb", "Commit"), WorkFor("2.0"));
  EXPECT_ERRC(r, Errc::RolledBack);
  EXPECT_EQ(Installed(), "1.0\n");
  EXPECT_NE(DpkgLog().find("-i " + (cache_ / "upkeep-fake_1.0.deb").string()), std::string::npos)
      << DpkgLog();
}

TEST_F(DebModuleTest, FailedDpkgInstallIsRolledBack) {
  SetInstalled("1.0");
  auto r = InstallComponent(module_, WorkFor("2.0", /*fail=*/true));
  EXPECT_ERRC(r, Errc::RolledBack);
  EXPECT_NE(r.error().message().find("postinst failed"), std::string::npos) << r.error().message();
  EXPECT_EQ(Installed(), "1.0\n");
}

TEST_F(DebModuleTest, RollbackRemovesPackageThatWasNotInstalled) {
  auto r = InstallComponent(testing::FailingAt(tmp_.path(), "deb", "Commit"), WorkFor("1.0"));
  EXPECT_ERRC(r, Errc::RolledBack);
  EXPECT_EQ(Installed(), "");
  EXPECT_NE(DpkgLog().find("-r upkeep-fake"), std::string::npos) << DpkgLog();
}

// Without a copy of the previous .deb the previous version cannot come back: the caller
// must learn that the rollback failed.
TEST_F(DebModuleTest, RollbackFailsWithoutCachedPreviousVersion) {
  SetInstalled("0.9");
  auto r = InstallComponent(testing::FailingAt(tmp_.path(), "deb", "Commit"), WorkFor("1.0"));
  EXPECT_ERRC(r, Errc::RollbackFailed);
  EXPECT_NE(r.error().message().find("0.9"), std::string::npos) << r.error().message();
}

// Install retried after a crash records the version from before the update, not its own.
TEST_F(DebModuleTest, InstallTwiceThenRollbackRestoresOriginalVersion) {
  ASSERT_TRUE(InstallComponent(module_, WorkFor("1.0")));
  auto work = WorkFor("2.0");
  ASSERT_TRUE(RunStage(module_, Stage::Install, work));
  ASSERT_TRUE(RunStage(module_, Stage::Install, work));
  EXPECT_EQ(Installed(), "2.0\n");
  ASSERT_TRUE(RunStage(module_, Stage::Rollback, work));
  EXPECT_EQ(Installed(), "1.0\n");
  ASSERT_TRUE(RunStage(module_, Stage::Rollback, work));  // idempotent
  EXPECT_EQ(Installed(), "1.0\n");
}

// Successive updates prepared in the same work directory (as the agent does) each install: the
// previous update's artifact does not remain beside the new one.
TEST_F(DebModuleTest, SuccessiveUpdatesInOneWorkDirEachInstall) {
  for (const std::string version : {"1.0", "2.0", "3.0"}) {
    auto r = InstallComponent(module_, WorkFor(version, false, true, "work"));
    ASSERT_TRUE(r) << version << ": " << r.error().ToString();
    EXPECT_EQ(Installed(), version + "\n");
    EXPECT_TRUE(fs::exists(cache_ / ("upkeep-fake_" + version + ".deb")));
  }
  // A failing fourth update rolls back to 3.0 from the cache.
  auto r = InstallComponent(module_, WorkFor("4.0", /*fail=*/true, true, "work"));
  EXPECT_ERRC(r, Errc::RolledBack);
  EXPECT_EQ(Installed(), "3.0\n");
}

TEST_F(DebModuleTest, RejectsUnknownModuleArgs) {
  fs::path deb = tmp_ / "a" / "x.deb";
  WriteTextFile(deb, "Package: upkeep-fake\nVersion: 1\n");
  auto work = testing::MakeWorkDir(tmp_ / "w", R"({"dpkg_path": "/bin/false"})", {deb});
  EXPECT_ERRC(RunStage(module_, Stage::Install, work), Errc::ModuleFailed);
}

}  // namespace
}  // namespace upkeep::modules
