#include "upkeep/common/filesystem.hpp"

#include <gtest/gtest.h>

#include <fstream>

#include "temp_dir.hpp"
#include "upkeep/common/errc.hpp"

namespace upkeep {
namespace {

namespace fs = std::filesystem;

class LocalFilesystemTest : public ::testing::Test {
 protected:
  std::size_t Entries() const {
    return static_cast<std::size_t>(
        std::distance(fs::directory_iterator(dir_.path()), fs::directory_iterator()));
  }
  testing::TempDir dir_;
  LocalFilesystem fs_;
};

TEST_F(LocalFilesystemTest, AtomicWriteReplacesContentAndLeavesNoTemporaryFile) {
  ASSERT_TRUE(fs_.WriteFileAtomic(dir_ / "f", "one"));
  ASSERT_TRUE(fs_.WriteFileAtomic(dir_ / "f", "two"));
  EXPECT_EQ(fs_.ReadFile(dir_ / "f", 100).value(), "two");
  EXPECT_EQ(Entries(), 1u);
}

TEST_F(LocalFilesystemTest, UncommittedAtomicFileLeavesNothing) {
  ASSERT_TRUE(fs_.WriteFileAtomic(dir_ / "f", "old"));
  {
    auto file = fs_.CreateAtomic(dir_ / "f");
    ASSERT_TRUE(file);
    ASSERT_TRUE((*file)->Append(std::span<const char>("new", 3)));
  }
  EXPECT_EQ(fs_.ReadFile(dir_ / "f", 100).value(), "old");
  EXPECT_EQ(Entries(), 1u);
}

TEST_F(LocalFilesystemTest, ReadFileEnforcesLimit) {
  ASSERT_TRUE(fs_.WriteFileAtomic(dir_ / "f", std::string(100, 'x')));
  EXPECT_TRUE(fs_.ReadFile(dir_ / "f", 100));
  EXPECT_EQ(fs_.ReadFile(dir_ / "f", 99).error().code(), common::Errc::FileTooLarge);
}

TEST_F(LocalFilesystemTest, ReportsMissingFile) {
  EXPECT_EQ(fs_.ReadFile(dir_ / "missing", 10).error().code(), common::Errc::FileNotFound);
  EXPECT_FALSE(fs_.Exists(dir_ / "missing").value());
  EXPECT_TRUE(fs_.Remove(dir_ / "missing"));
}

TEST_F(LocalFilesystemTest, WriteIntoMissingDirectoryFailsAndCreatesNothing) {
  auto r = fs_.WriteFileAtomic(dir_ / "no" / "f", "x");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), common::Errc::FileNotFound);
  EXPECT_EQ(Entries(), 0u);
}

TEST_F(LocalFilesystemTest, ReadChunksStreamsWholeFile) {
  const std::string content(3 << 20, 'q');
  ASSERT_TRUE(fs_.WriteFileAtomic(dir_ / "big", content));
  std::string back;
  ASSERT_TRUE(fs_.ReadChunks(dir_ / "big", [&](std::span<const char> piece) -> Result<void> {
    back.append(piece.data(), piece.size());
    return Ok();
  }));
  EXPECT_EQ(back, content);
}

}  // namespace
}  // namespace upkeep

namespace upkeep {
namespace {

TEST(ListDirectoryTest, ListsNamesSortedAndReportsMissingDirectory) {
  testing::TempDir dir;
  LocalFilesystem fs;
  ASSERT_TRUE(fs.WriteFileAtomic(dir.path() / "b", "1"));
  ASSERT_TRUE(fs.WriteFileAtomic(dir.path() / "a", "2"));
  ASSERT_TRUE(fs.CreateDirectories(dir.path() / "c"));
  auto names = fs.ListDirectory(dir.path());
  ASSERT_TRUE(names) << names.error().ToString();
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "b", "c"}));
  auto missing = fs.ListDirectory(dir.path() / "nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), common::Errc::FileNotFound);
}

}  // namespace
}  // namespace upkeep
