// The streaming image installer: chunk authentication before anything is written, resume after a
// dropped transfer and after a restart, chunk reuse, slot limits, read-back.

#include "upkeep/install/image_installer.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "memory_fetcher.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/install/slot.hpp"

namespace upkeep::install {
namespace {

namespace fs = std::filesystem;
constexpr std::uint64_t kChunk = 4096;
constexpr const char* kUrl = "mem:/payload";

std::string RandomBytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

void Write(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(bytes.data(),
                                                             static_cast<std::streamsize>(bytes.size()));
}

// A fetcher whose transfers break after `break_after` bytes, the first `breaks` times.
class FlakyFetcher final : public Fetcher {
 public:
  FlakyFetcher(std::string body, std::uint64_t break_after, int breaks)
      : body_(std::move(body)), break_after_(break_after), breaks_(breaks) {}
  Result<void> Fetch(const std::string&, std::uint64_t, const Sink&) override {
    return Error(common::Errc::InvalidArgument, "ranges only");
  }
  Result<void> FetchRange(const std::string&, std::uint64_t offset, std::uint64_t length,
                          const Sink& sink) override {
    windows.emplace_back(offset, length);
    const std::uint64_t end = std::min<std::uint64_t>(offset + length, body_.size());
    std::uint64_t stop = end;
    const bool breaking = breaks_ > 0;
    if (breaking) stop = std::min(end, offset + break_after_);
    if (offset < stop) {
      UPKEEP_TRY(sink(std::span<const char>(body_.data() + offset, stop - offset)));
      delivered += stop - offset;
    }
    if (breaking && stop < end) {
      --breaks_;
      return Error(common::Errc::NetworkError, "connection reset");
    }
    return Ok();
  }
  std::vector<std::pair<std::uint64_t, std::uint64_t>> windows;
  std::uint64_t delivered = 0;

 private:
  std::string body_;
  std::uint64_t break_after_;
  int breaks_;
};

class ImageInstallerTest : public ::testing::Test {
 protected:
  void Build(const std::string& image, ChunkCompression compression = ChunkCompression::Zstd) {
    image_ = image;
    Write(tmp_ / "image", image);
    BuildOptions b;
    b.chunk_size = kChunk;
    b.compression = compression;
    auto index = BuildPayload(tmp_ / "image", tmp_ / "payload", b);
    ASSERT_TRUE(index.has_value()) << index.error().ToString();
    index_ = *index;
    payload_ = testing::ReadFileOrEmpty(tmp_ / "payload");
    fetcher_.Set(kUrl, payload_);
  }
  ImageInstallOptions Options() {
    ImageInstallOptions o;
    o.target = tmp_ / "slot-b";
    o.resume_delay = std::chrono::milliseconds(0);
    o.checkpoint_bytes = 4 * kChunk;
    o.on_event = [this](const Event& e) { events_.push_back(e.id); };
    return o;
  }
  std::string Slot() { return testing::ReadFileOrEmpty(tmp_ / "slot-b"); }

  testing::TempDir tmp_;
  std::string image_;
  std::string payload_;
  ChunkIndex index_;
  testing::MemoryFetcher fetcher_;
  std::vector<std::string> events_;
};

TEST_F(ImageInstallerTest, WritesVerifiedImageAndChecksDigest) {
  Build(RandomBytes(10 * kChunk + 123, 1));
  std::vector<std::size_t> checkpoints;
  auto o = Options();
  o.on_checkpoint = [&](std::size_t n) -> Result<void> {
    checkpoints.push_back(n);
    return Ok();
  };
  auto r = InstallImage(index_, fetcher_, kUrl, o);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(Slot(), image_);
  EXPECT_EQ(r->bytes_written, image_.size());
  EXPECT_EQ(r->downloaded_bytes, payload_.size());
  // Every 4 chunks a sync is requested; requests made while one runs are merged into the next.
  ASSERT_FALSE(checkpoints.empty());
  for (std::size_t i = 0; i < checkpoints.size(); ++i) {
    EXPECT_EQ(checkpoints[i] % 4, 0u);
    if (i > 0) {
      EXPECT_GT(checkpoints[i], checkpoints[i - 1]);
    }
  }
  EXPECT_LE(checkpoints.back(), 8u);
  EXPECT_EQ(events_.back(), event::kImageVerified);
}

TEST_F(ImageInstallerTest, InstallsUncompressedPayload) {
  Build(RandomBytes(6 * kChunk, 2), ChunkCompression::None);
  EXPECT_EQ(payload_, image_);
  ASSERT_TRUE(InstallImage(index_, fetcher_, kUrl, Options()).has_value());
  EXPECT_EQ(Slot(), image_);
}

// A tampered chunk is rejected before it is decompressed or written: the slot holds exactly the
// chunks before it.
TEST_F(ImageInstallerTest, StopsAtTamperedChunkWithoutWritingIt) {
  Build(RandomBytes(10 * kChunk, 3));
  const std::size_t bad = 6;
  payload_[index_.chunks[bad].offset + 7] ^= 0x40;
  fetcher_.Set(kUrl, payload_);
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, Options()), Errc::ChunkDigestMismatch);
  EXPECT_EQ(Slot(), image_.substr(0, bad * kChunk));
  EXPECT_EQ(events_.back(), event::kChunkRejected);
}

TEST_F(ImageInstallerTest, RejectsWrongImageDigest) {
  Build(RandomBytes(3 * kChunk, 4));
  index_.image_sha256 = std::string(64, '0');
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, Options()), Errc::ImageDigestMismatch);
}

// A payload that ends early: resumed, then reported as truncated.
TEST_F(ImageInstallerTest, ShortPayloadIsPayloadTruncated) {
  Build(RandomBytes(5 * kChunk, 5));
  fetcher_.Set(kUrl, payload_.substr(0, payload_.size() / 2));
  auto o = Options();
  o.max_resumes = 2;
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, o), Errc::PayloadTruncated);
}

TEST_F(ImageInstallerTest, MissingPayloadIsDownloadFailed) {
  Build(RandomBytes(2 * kChunk, 6));
  fetcher_.Erase(kUrl);
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, Options()), Errc::DownloadFailed);
}

// A broken transfer resumes at the exact byte where it stopped; nothing is fetched twice.
TEST_F(ImageInstallerTest, ResumesBrokenTransferAtTheByteItStopped) {
  Build(RandomBytes(8 * kChunk + 1000, 7));
  FlakyFetcher flaky(payload_, payload_.size() / 3, 2);
  auto r = InstallImage(index_, flaky, kUrl, Options());
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(Slot(), image_);
  EXPECT_EQ(r->resumes, 2u);
  EXPECT_EQ(flaky.delivered, payload_.size());
  ASSERT_EQ(flaky.windows.size(), 3u);
  EXPECT_EQ(flaky.windows[1].first, payload_.size() / 3);
  EXPECT_EQ(flaky.windows[2].first, 2 * (payload_.size() / 3));
}

TEST_F(ImageInstallerTest, GivesUpAfterMaxResumes) {
  Build(RandomBytes(8 * kChunk, 8));
  FlakyFetcher flaky(payload_, 100, 50);
  auto o = Options();
  o.max_resumes = 3;
  EXPECT_ERRC(InstallImage(index_, flaky, kUrl, o), Errc::DownloadFailed);
  EXPECT_EQ(flaky.windows.size(), 4u);
}

// After a restart the durable chunks are re-checked on the slot and only the rest is fetched.
TEST_F(ImageInstallerTest, ResumesAfterRestartFromDurableChunks) {
  Build(RandomBytes(10 * kChunk, 9));
  Write(tmp_ / "slot-b", image_.substr(0, 6 * kChunk));
  auto o = Options();
  o.start_chunk = 6;
  auto r = InstallImage(index_, fetcher_, kUrl, o);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->resumed_from_chunk, 6u);
  EXPECT_EQ(r->bytes_written, 4 * kChunk);
  EXPECT_EQ(r->downloaded_bytes, payload_.size() - index_.chunks[6].offset);
  EXPECT_EQ(Slot(), image_);
}

// A chunk the journal called durable but that no longer matches is written again.
TEST_F(ImageInstallerTest, RewritesDurableChunksThatNoLongerMatch) {
  Build(RandomBytes(10 * kChunk, 10));
  std::string partial = image_.substr(0, 6 * kChunk);
  partial[3 * kChunk + 5] ^= 1;
  Write(tmp_ / "slot-b", partial);
  auto o = Options();
  o.start_chunk = 6;
  auto r = InstallImage(index_, fetcher_, kUrl, o);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->resumed_from_chunk, 3u);
  EXPECT_EQ(Slot(), image_);
}

// Chunks already on the active slot (anywhere, chunk-aligned) are copied instead of fetched.
TEST_F(ImageInstallerTest, CopiesChunksTheActiveSlotHolds) {
  const std::string common = RandomBytes(6 * kChunk, 11);
  Build(common + RandomBytes(2 * kChunk, 12) + common.substr(0, 2 * kChunk));
  Write(tmp_ / "slot-a", RandomBytes(kChunk, 13) + common);  // shifted by one chunk
  auto o = Options();
  o.reuse_from = tmp_ / "slot-a";
  auto r = InstallImage(index_, fetcher_, kUrl, o);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->reused_chunks, 8u);
  EXPECT_EQ(r->downloaded_bytes, index_.chunks[6].length + index_.chunks[7].length);
  EXPECT_EQ(Slot(), image_);
}

TEST_F(ImageInstallerTest, RefusesImageLargerThanTheSlot) {
  Build(RandomBytes(4 * kChunk, 14));
  auto o = Options();
  o.target_capacity = 3 * kChunk;
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, o), Errc::SlotTooSmall);
  EXPECT_EQ(Slot(), "");
}

TEST_F(ImageInstallerTest, ReadBackVerifiesTheSlot) {
  Build(RandomBytes(4 * kChunk, 15));
  auto o = Options();
  o.read_back = true;
  ASSERT_TRUE(InstallImage(index_, fetcher_, kUrl, o).has_value());
  auto digest = DigestSlot(tmp_ / "slot-b", index_.image_size);
  ASSERT_TRUE(digest.has_value());
  EXPECT_EQ(*digest, index_.image_sha256);
}

// A checkpoint that cannot be recorded stops the install (the journal must never run behind
// what it claims).
TEST_F(ImageInstallerTest, CheckpointFailureStopsTheInstall) {
  Build(RandomBytes(10 * kChunk, 16));
  auto o = Options();
  o.on_checkpoint = [](std::size_t) -> Result<void> {
    return Error(common::Errc::IoError, "disk full");
  };
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, o), common::Errc::IoError);
}

TEST(SlotDeviceTest, RefusesDirectoriesAndMissingSlotsForReading) {
  testing::TempDir tmp;
  EXPECT_ERRC(SlotDevice::Open(tmp.path(), false), Errc::SlotUnavailable);
  EXPECT_ERRC(SlotDevice::Open(tmp / "missing", false), Errc::SlotUnavailable);
  auto created = SlotDevice::Open(tmp / "new", true, 8192);
  ASSERT_TRUE(created.has_value());
  EXPECT_EQ(created->kind(), SlotKind::File);
  EXPECT_EQ(created->capacity(), 8192u);
  const std::string data(4096, 'x');
  EXPECT_TRUE(created->WriteAt(4096, data).has_value());
  EXPECT_ERRC(created->WriteAt(4097, data), Errc::WriteFailed);
}

}  // namespace
}  // namespace upkeep::install
