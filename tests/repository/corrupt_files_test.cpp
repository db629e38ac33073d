// Hand-edited and corrupt repository files (repo.json, staged/<role>.json, published-root.json,
// key files): each is reported with an exact repository::Errc, never an exception, and target
// names are refused before they reach a URL.

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <sstream>

#include "cli.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/repository/repository.hpp"

namespace upkeep::repository {
namespace {

namespace fs = std::filesystem;
using metadata::Json;

Json Meta() {
  return Json{
      {"upkeep",
       {{"schema", 1},
        {"component", "rootfs"},
        {"version", "1.0.0"},
        {"hardware", {"acme-cam-v2"}},
        {"security_version", 1},
        {"kind", {"feature"}},
        {"disruption",
         {{"reboot", true}, {"downtime_seconds", 40}, {"available_during_update", Json::array()}}},
        {"settings_impact", {{"effect", "none"}, {"note", ""}}},
        {"payload", {{"format", "raw"}, {"installed_size", 12}}}}}};
}

class CorruptFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(work_ / "image.img", std::ios::binary) << "image bytes!";
    ASSERT_TRUE(Repository::Init(work_ / "repo", InitOptions{}, fs_, clock_));
  }
  Result<Repository> Open() { return Repository::Open(work_ / "repo", fs_, clock_); }
  fs::path Repo(const std::string& name) { return work_ / "repo" / name; }
  std::string Read(const std::string& name) { return testing::ReadFileOrEmpty(Repo(name)); }
  void Write(const std::string& name, const std::string& bytes) {
    std::ofstream(Repo(name), std::ios::binary | std::ios::trunc) << bytes;
  }
  // Edits the JSON of `name`, writes it back, and returns the error of opening the repository.
  void ExpectOpenFails(const std::string& name, const std::function<void(Json&)>& edit,
                       Errc expected, const std::string& what) {
    const std::string original = Read(name);
    Json doc = Json::parse(original);
    edit(doc);
    Write(name, doc.dump(1));
    auto opened = Open();
    EXPECT_FALSE(opened.has_value()) << what;
    if (!opened) {
      EXPECT_EQ(opened.error().code(), expected) << what << ": " << opened.error().ToString();
    }
    Write(name, original);
  }
  void ExpectOpenFailsWithBytes(const std::string& name, const std::string& bytes, Errc expected,
                                const std::string& what) {
    const std::string original = Read(name);
    Write(name, bytes);
    auto opened = Open();
    EXPECT_FALSE(opened.has_value()) << what;
    if (!opened) {
      EXPECT_EQ(opened.error().code(), expected) << what << ": " << opened.error().ToString();
    }
    Write(name, original);
  }
  std::vector<fs::path> Keys() {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(Repo("keys"))) out.push_back(e.path());
    return out;
  }

  LocalFilesystem fs_;
  SystemClock clock_;
  testing::TempDir work_;
};

// A staged role without "expires" once made publish die on an uncaught exception; every
// hand-edited staged role is now CorruptFile when the repository is opened.
TEST_F(CorruptFilesTest, ReportsHandEditedStagedTargetsAsCorruptFile) {
  const std::string name = "staged/targets.json";
  ExpectOpenFails(
      name, [](Json& d) { d["signed"].erase("expires"); }, Errc::CorruptFile, "missing expires");
  ExpectOpenFails(
      name, [](Json& d) { d["signed"]["expires"] = 5; }, Errc::CorruptFile, "expires not a string");
  ExpectOpenFails(
      name, [](Json& d) { d["signed"]["expires"] = "tomorrow"; }, Errc::CorruptFile,
      "expires not a date");
  ExpectOpenFails(
      name, [](Json& d) { d["signed"]["version"] = "2"; }, Errc::CorruptFile, "version a string");
  ExpectOpenFails(
      name, [](Json& d) { d["signed"]["targets"] = Json::array(); }, Errc::CorruptFile,
      "targets an array");
  ExpectOpenFails(
      name, [](Json& d) { d["signatures"] = Json::object(); }, Errc::CorruptFile,
      "signatures an object");
  ExpectOpenFails(
      name, [](Json& d) { d["signed"]["_type"] = "root"; }, Errc::CorruptFile, "wrong _type");
  ExpectOpenFails(
      name, [](Json& d) { d["signed"]["version"] = std::uint64_t{1} << 60; }, Errc::CorruptFile,
      "version beyond what clients read exactly");
  ExpectOpenFails(
      name,
      [](Json& d) {
        d["signed"]["targets"]["../escape"] = {{"length", 1},
                                               {"hashes", {{"sha256", std::string(64, 'a')}}}};
      },
      Errc::CorruptFile, "target name climbing out");
  ExpectOpenFails(
      name,
      [](Json& d) {
        d["signed"]["targets"]["fw/x"] = {{"length", 1}, {"hashes", {{"sha256", "../../x"}}}};
      },
      Errc::CorruptFile, "hash not hex");
  ExpectOpenFails(
      name,
      [](Json& d) {
        d["signed"]["targets"]["fw/x"] = {{"length", 1},
                                          {"hashes", {{"sha512", std::string(128, 'a')}}}};
      },
      Errc::CorruptFile, "no sha256 to publish the file under");
  const std::string good = Read(name);
  ExpectOpenFailsWithBytes(name, good.substr(0, good.size() / 2), Errc::CorruptFile, "truncated");
  ExpectOpenFailsWithBytes(name, "", Errc::CorruptFile, "empty");
  std::string bad_utf8 = good;
  bad_utf8.replace(bad_utf8.find("targets\""), 7, "t\xff\xfe");
  ExpectOpenFailsWithBytes(name, bad_utf8, Errc::CorruptFile, "invalid UTF-8");
  std::string huge = good;
  const auto at = huge.find("\"version\": 1");
  ASSERT_NE(at, std::string::npos);
  huge.replace(at, 12, "\"version\": 123456789012345678901234567890");
  ExpectOpenFailsWithBytes(name, huge, Errc::CorruptFile, "number beyond 64 bits");
  // Unchanged, it opens.
  EXPECT_TRUE(Open());
}

TEST_F(CorruptFilesTest, ReportsHandEditedStagedRootAsCorruptFile) {
  const std::string name = "staged/root.json";
  ExpectOpenFails(
      name, [](Json& d) { d["signed"]["roles"].erase("timestamp"); }, Errc::CorruptFile,
      "role missing");
  ExpectOpenFails(
      name, [](Json& d) { d["signed"]["roles"]["root"]["threshold"] = 0; }, Errc::CorruptFile,
      "threshold 0");
  ExpectOpenFails(
      name, [](Json& d) { d["signed"]["keys"] = "none"; }, Errc::CorruptFile, "keys a string");
  ExpectOpenFails(
      name, [](Json& d) { d["signed"]["consistent_snapshot"] = "yes"; }, Errc::CorruptFile,
      "consistent_snapshot a string");
  ExpectOpenFailsWithBytes(name, "[]", Errc::CorruptFile, "not an object");
  fs::remove(Repo(name));
  EXPECT_ERRC(Open(), Errc::CorruptFile);
}

// `upkeep repo publish` on a staged targets.json without "expires" once died on an uncaught
// exception; it now fails with exit status 1 and names the file.
TEST_F(CorruptFilesTest, PublishCommandReportsStagedTargetsWithoutExpires) {
  Json doc = Json::parse(Read("staged/targets.json"));
  doc["signed"].erase("expires");
  Write("staged/targets.json", doc.dump(1));
  const std::string repo = Repo("").string(), www = (work_ / "www").string();
  const char* argv[] = {"upkeep", "repo", "publish", repo.c_str(), www.c_str()};
  std::ostringstream out, err;
  EXPECT_EQ(tool::Main(5, argv, out, err), 1);
  EXPECT_NE(err.str().find("staged/targets.json"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("expires"), std::string::npos) << err.str();
  EXPECT_FALSE(fs::exists(work_ / "www" / "metadata" / "timestamp.json"));
}

// repo.json is parsed strictly: each hand edit is NotARepository.
TEST_F(CorruptFilesTest, ReportsHandEditedSettingsAsNotARepository) {
  const std::string name = "repo.json";
  ExpectOpenFails(
      name, [](Json& d) { d.erase("expiry_days"); }, Errc::NotARepository, "expiry_days missing");
  ExpectOpenFails(
      name, [](Json& d) { d["expiry_days"]["targets"] = "90"; }, Errc::NotARepository,
      "expiry a string");
  ExpectOpenFails(
      name, [](Json& d) { d["expiry_days"]["targets"] = 0; }, Errc::NotARepository, "expiry 0");
  ExpectOpenFails(
      name, [](Json& d) { d["expiry_days"]["targets"] = std::uint64_t{1} << 40; },
      Errc::NotARepository, "expiry beyond the date format");
  ExpectOpenFails(
      name, [](Json& d) { d["expiry_days"]["targets"] = -1; }, Errc::NotARepository,
      "expiry negative");
  ExpectOpenFails(
      name, [](Json& d) { d["published"]["snapshot"] = ~std::uint64_t{0}; }, Errc::NotARepository,
      "published version that would overflow");
  ExpectOpenFails(
      name, [](Json& d) { d["published"].erase("timestamp"); }, Errc::NotARepository,
      "published role missing");
  ExpectOpenFails(
      name, [](Json& d) { d["format"] = 2; }, Errc::NotARepository, "format 2");
  ExpectOpenFails(
      name, [](Json& d) { d["extra"] = true; }, Errc::NotARepository, "unknown key");
  ExpectOpenFails(
      name, [](Json& d) { d["delegations"]["apps"] = 3; }, Errc::NotARepository,
      "delegator not a string");
  ExpectOpenFails(
      name, [](Json& d) { d["delegations"]["apps"] = "nobody"; }, Errc::NotARepository,
      "delegator unknown");
  ExpectOpenFails(
      name, [](Json& d) { d["delegations"]["snapshot"] = "targets"; }, Errc::NotARepository,
      "top-level role delegated");
  const std::string good = Read(name);
  ExpectOpenFailsWithBytes(name, good.substr(0, good.size() - 5), Errc::NotARepository,
                           "truncated");
  ExpectOpenFailsWithBytes(name, "{\"format\": \"\xff\"}", Errc::NotARepository, "invalid UTF-8");
  ExpectOpenFailsWithBytes(name, "{\"format\": 1e400}", Errc::NotARepository, "huge number");
  EXPECT_TRUE(Open());
}

// A corrupt last-published root (the trust a new root must chain from) stops publishing.
TEST_F(CorruptFilesTest, ReportsCorruptPublishedRoot) {
  ASSERT_TRUE(Open().value().Publish(work_ / "www"));
  Write("published-root.json", "{\"signed\": ");
  auto repo = Open();
  ASSERT_TRUE(repo);
  EXPECT_ERRC(repo->Publish(work_ / "www"), Errc::CorruptFile);
}

// A key file that is not a PEM private key is CorruptFile; a symbolic link is not used as one.
TEST_F(CorruptFilesTest, ReportsCorruptKeyFiles) {
  const fs::path key = work_ / "garbage.pem";
  std::ofstream(key) << "-----BEGIN PRIVATE KEY-----\nnot base64\n";
  ::chmod(key.c_str(), 0600);
  EXPECT_ERRC(Open().value().Sign("targets", key), Errc::CorruptFile);
  const fs::path link = work_ / "link.pem";
  fs::create_symlink(Keys().front(), link);
  EXPECT_ERRC(Open().value().Sign("root", link), Errc::KeyFileInsecure);
}

// Private key files are created 0600 (owner only) from the first byte.
TEST_F(CorruptFilesTest, CreatesPrivateKeyFilesOwnerOnly) {
  ASSERT_FALSE(Keys().empty());
  for (const auto& key : Keys()) {
    struct stat st {};
    ASSERT_EQ(::lstat(key.c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode)) << key;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << key;
  }
  struct stat dir {};
  ASSERT_EQ(::stat(Repo("keys").c_str(), &dir), 0);
  EXPECT_EQ(dir.st_mode & 0777, 0700u);
}

// add-target refuses names that climb out of targets/, are ambiguous in URLs ('%', '?', '#',
// which TUF clients encode differently) or are not valid UTF-8 without control characters.
TEST_F(CorruptFilesTest, AddTargetRefusesUnsafeNames) {
  auto repo = Open();
  ASSERT_TRUE(repo);
  const std::string before = Read("staged/targets.json");
  for (const std::string& name : std::vector<std::string>{
           "", "../x", "fw/../../x", "/abs", "fw//x", "./x", "fw/.", "fw/", "a\nb", "a\x01z",
           "del\x7f", "bad\xff", "\xc0\xaf", "a%2e%2e", "a?b", "a#b", std::string("a\0b", 3)}) {
    EXPECT_ERRC(repo->AddTarget(work_ / "image.img", name, Meta()), Errc::InvalidTarget);
  }
  EXPECT_EQ(Read("staged/targets.json"), before);
  ASSERT_TRUE(repo->AddTarget(work_ / "image.img", "fw/image v1.bin", Meta()));
}

}  // namespace
}  // namespace upkeep::repository
