// The streaming image installer: chunk authentication before anything is written, resume after a
// dropped transfer and after a restart, chunk reuse, slot limits, read-back.

#include "upkeep/install/image_installer.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "memory_fetcher.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/crypto/crypto.hpp"
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
  std::ofstream(p, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
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

// Read-back compares the synced slot with the signed image digest: an index whose chunks do not
// add up to its own image_sha256 is refused.
TEST_F(ImageInstallerTest, ReadBackRefusesAnImageDigestTheChunksDoNotProduce) {
  Build(RandomBytes(3 * kChunk, 4));
  index_.image_sha256 = std::string(64, '0');
  auto o = Options();
  o.read_back = true;
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, o), Errc::ReadBackMismatch);
}

// Replaces chunk `k`'s stored frame with the single frame of `content` (built with a chunk size
// that holds it whole), signing it into the index as a release tool would: the frame is
// authentic, but its content is not `size` bytes long.
void SpliceFrame(ChunkIndex& index, std::string& payload, std::size_t k, const std::string& content,
                 const fs::path& dir) {
  Write(dir / "other", content);
  BuildOptions b;
  b.chunk_size = 4 * kChunk;
  auto other = BuildPayload(dir / "other", dir / "other.payload", b);
  ASSERT_TRUE(other.has_value()) << other.error().ToString();
  ASSERT_EQ(other->chunks.size(), 1u);
  const std::string frame = testing::ReadFileOrEmpty(dir / "other.payload");
  ChunkEntry& c = index.chunks[k];
  payload.replace(static_cast<std::size_t>(c.offset), static_cast<std::size_t>(c.length), frame);
  c.length = frame.size();
  c.sha256 = other->chunks[0].sha256;
  std::uint64_t offset = 0;
  for (auto& e : index.chunks) {
    e.offset = offset;
    offset += e.length;
  }
  index.payload_size = offset;
  ASSERT_TRUE(CheckChunkIndex(index).has_value());
}

// A signed zstd chunk that decompresses to more bytes than the index declares is refused with
// ChunkSizeMismatch, and nothing of it reaches the slot.
TEST_F(ImageInstallerTest, RefusesZstdChunkLongerThanDeclared) {
  Build(RandomBytes(6 * kChunk, 40));
  SpliceFrame(index_, payload_, 3, RandomBytes(kChunk + 1, 41), tmp_.path());
  fetcher_.Set(kUrl, payload_);
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, Options()), Errc::ChunkSizeMismatch);
  EXPECT_EQ(Slot(), image_.substr(0, 3 * kChunk));
}

// A signed zstd chunk that decompresses to fewer bytes than the index declares is refused with
// ChunkSizeMismatch, and nothing of it reaches the slot.
TEST_F(ImageInstallerTest, RefusesZstdChunkShorterThanDeclared) {
  Build(RandomBytes(6 * kChunk, 42));
  SpliceFrame(index_, payload_, 3, RandomBytes(kChunk - 1, 43), tmp_.path());
  fetcher_.Set(kUrl, payload_);
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, Options()), Errc::ChunkSizeMismatch);
  EXPECT_EQ(Slot(), image_.substr(0, 3 * kChunk));
}

// A short last chunk whose frame holds more than its declared size is refused the same way.
TEST_F(ImageInstallerTest, RefusesLastZstdChunkLongerThanDeclared) {
  Build(RandomBytes(4 * kChunk + 100, 44));
  SpliceFrame(index_, payload_, 4, RandomBytes(200, 45), tmp_.path());
  fetcher_.Set(kUrl, payload_);
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, Options()), Errc::ChunkSizeMismatch);
  EXPECT_EQ(Slot(), image_.substr(0, 4 * kChunk));
}

// An index whose sizes would size the installer's buffers (a chunk_size of 1 TiB) is refused
// before anything is allocated or opened.
TEST_F(ImageInstallerTest, RefusesIndexWithHugeChunkSizeBeforeAllocating) {
  Build(RandomBytes(2 * kChunk, 46));
  index_.chunk_size = 1ull << 40;
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, Options()), Errc::InvalidChunkIndex);
  EXPECT_FALSE(fs::exists(tmp_ / "slot-b"));
}

// A chunk larger than the index's chunk_size is refused before it could overrun a buffer.
TEST_F(ImageInstallerTest, RefusesChunkLargerThanChunkSize) {
  Build(RandomBytes(2 * kChunk, 47));
  index_.chunks.back().size = 4 * kChunk;
  index_.image_size = 5 * kChunk;
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, Options()), Errc::InvalidChunkIndex);
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

// Each resume waits resume_delay on the injected clock (no real sleeping).
TEST_F(ImageInstallerTest, WaitsTheResumeDelayBeforeEachResume) {
  Build(RandomBytes(8 * kChunk + 1000, 48));
  FlakyFetcher flaky(payload_, payload_.size() / 4, 3);
  FakeClock clock(FakeClock::TimePoint(std::chrono::seconds(1'000'000)));
  auto o = Options();
  o.resume_delay = std::chrono::minutes(10);
  o.clock = &clock;
  auto r = InstallImage(index_, flaky, kUrl, o);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->resumes, 3u);
  EXPECT_EQ(clock.sleeps(), std::vector<std::chrono::milliseconds>(3, std::chrono::minutes(10)));
  EXPECT_EQ(clock.slept(), std::chrono::minutes(30));
  EXPECT_EQ(clock.Now(), FakeClock::TimePoint(std::chrono::seconds(1'000'000 + 1800)));
  EXPECT_EQ(Slot(), image_);
}

// A transfer that keeps failing is given up after max_resumes resumes, each after the delay.
TEST_F(ImageInstallerTest, GivesUpAfterMaxResumesHavingWaitedBeforeEach) {
  Build(RandomBytes(8 * kChunk, 49));
  FlakyFetcher flaky(payload_, 100, 50);
  FakeClock clock(FakeClock::TimePoint(std::chrono::seconds(0)));
  auto o = Options();
  o.max_resumes = 4;
  o.resume_delay = std::chrono::milliseconds(1500);
  o.clock = &clock;
  EXPECT_ERRC(InstallImage(index_, flaky, kUrl, o), Errc::DownloadFailed);
  EXPECT_EQ(flaky.windows.size(), 5u);
  EXPECT_EQ(clock.sleeps(),
            std::vector<std::chrono::milliseconds>(4, std::chrono::milliseconds(1500)));
  EXPECT_EQ(clock.slept(), std::chrono::milliseconds(6000));
}

// A payload that keeps ending early is PayloadTruncated after max_resumes waits.
TEST_F(ImageInstallerTest, TruncatedPayloadIsGivenUpAfterMaxResumes) {
  Build(RandomBytes(5 * kChunk, 50));
  fetcher_.Set(kUrl, payload_.substr(0, payload_.size() / 2));
  FakeClock clock(FakeClock::TimePoint(std::chrono::seconds(0)));
  auto o = Options();
  o.max_resumes = 2;
  o.resume_delay = std::chrono::seconds(7);
  o.clock = &clock;
  EXPECT_ERRC(InstallImage(index_, fetcher_, kUrl, o), Errc::PayloadTruncated);
  EXPECT_EQ(clock.sleeps(), std::vector<std::chrono::milliseconds>(2, std::chrono::seconds(7)));
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

// A durable prefix changed on the slot (tampered or corrupted) is detected as it is read back:
// the install continues from the first chunk that does not match, and the slot ends up exactly
// the image.
TEST_F(ImageInstallerTest, DetectsTamperedResumedPrefix) {
  Build(RandomBytes(10 * kChunk, 51));
  std::string partial = image_.substr(0, 8 * kChunk);
  partial[1 * kChunk + 77] ^= 0x20;
  Write(tmp_ / "slot-b", partial);
  auto o = Options();
  o.start_chunk = 8;
  auto r = InstallImage(index_, fetcher_, kUrl, o);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->resumed_from_chunk, 1u);
  EXPECT_EQ(r->bytes_written, 9 * kChunk);
  EXPECT_EQ(Slot(), image_);
}

// Without content digests the index cannot vouch for anything on the slot: a resume starts over
// and rewrites the (here tampered) prefix.
TEST_F(ImageInstallerTest, ResumeWithoutContentDigestsStartsOver) {
  Build(RandomBytes(6 * kChunk, 52));
  for (auto& c : index_.chunks) c.content_sha256.reset();
  std::string partial = image_.substr(0, 4 * kChunk);
  partial[2 * kChunk] ^= 0x01;
  Write(tmp_ / "slot-b", partial);
  auto o = Options();
  o.start_chunk = 4;
  auto r = InstallImage(index_, fetcher_, kUrl, o);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_EQ(r->resumed_from_chunk, 0u);
  EXPECT_EQ(Slot(), image_);
}

// A chunk the active slot held when it was scanned, but changed before it was copied, is not
// used: the bytes copied are hashed as they are read, and the chunk is downloaded instead.
TEST_F(ImageInstallerTest, DoesNotReuseAChunkWhoseActiveSlotContentChanged) {
  const std::string common = RandomBytes(4 * kChunk, 53);
  Build(RandomBytes(2 * kChunk, 54) + common);
  Write(tmp_ / "slot-a", common);
  auto o = Options();
  o.reuse_from = tmp_ / "slot-a";
  bool changed = false;
  o.on_progress = [&](const ImageProgress&) {
    if (changed) return;
    changed = true;  // after the scan, before chunk 3 (slot-a offset kChunk) is copied
    std::fstream f(tmp_ / "slot-a", std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(static_cast<std::streamoff>(kChunk + 9));
    f.put(static_cast<char>(common[kChunk + 9] ^ 0x01));
  };
  auto r = InstallImage(index_, fetcher_, kUrl, o);
  ASSERT_TRUE(r.has_value()) << r.error().ToString();
  EXPECT_TRUE(changed);
  EXPECT_EQ(r->reused_chunks, 3u);
  EXPECT_EQ(r->downloaded_bytes,
            index_.chunks[0].length + index_.chunks[1].length + index_.chunks[3].length);
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
