// Private key files and secrets in memory: files are owner-only from their first byte and never
// written through a symbolic link; secrets are overwritten once used.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/crypto/crypto.hpp"

namespace upkeep::crypto {
namespace {

namespace fs = std::filesystem;

// The file is created with mode 0600 whatever the umask, and holds exactly the content.
TEST(KeyFileTest, CreatesKeyFileOwnerOnly) {
  testing::TempDir dir;
  const mode_t old = ::umask(0);
  auto written = WritePrivateKeyFile(dir / "k.pem", "secret pem");
  ::umask(old);
  ASSERT_TRUE(written) << written.error().ToString();
  struct stat st {};
  ASSERT_EQ(::lstat((dir / "k.pem").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(testing::ReadFileOrEmpty(dir / "k.pem"), "secret pem");
}

// A symbolic link planted at the key path is not followed: the key is not written to its target.
TEST(KeyFileTest, DoesNotFollowSymlinkAtKeyPath) {
  testing::TempDir dir;
  std::ofstream(dir / "victim") << "original";
  fs::create_symlink(dir / "victim", dir / "k.pem");
  EXPECT_ERRC(WritePrivateKeyFile(dir / "k.pem", "secret pem"), Errc::KeyFileFailed);
  EXPECT_EQ(testing::ReadFileOrEmpty(dir / "victim"), "original");
  fs::create_symlink(dir / "absent", dir / "dangling.pem");
  EXPECT_ERRC(WritePrivateKeyFile(dir / "dangling.pem", "secret pem"), Errc::KeyFileFailed);
  EXPECT_FALSE(fs::exists(dir / "absent"));
}

// An existing file is never replaced.
TEST(KeyFileTest, RefusesToReplaceExistingFile) {
  testing::TempDir dir;
  std::ofstream(dir / "k.pem") << "old";
  EXPECT_ERRC(WritePrivateKeyFile(dir / "k.pem", "new"), Errc::KeyFileFailed);
  EXPECT_EQ(testing::ReadFileOrEmpty(dir / "k.pem"), "old");
}

// Cleanse overwrites the whole buffer and empties the string; SecretString cleanses what it moves.
TEST(SecretTest, CleanseOverwritesBuffer) {
  std::string s = "correct horse battery staple, long enough to be on the heap";
  const char* data = s.data();
  const std::size_t size = s.size();
  Cleanse(s);
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(s.data(), data);  // same buffer, now zeroed
  for (std::size_t i = 0; i < size; ++i) EXPECT_EQ(data[i], '\0');

  SecretString a("pin");
  SecretString b(std::move(a));
  EXPECT_EQ(b.value(), "pin");
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): moved-from is defined as empty
}

}  // namespace
}  // namespace upkeep::crypto
