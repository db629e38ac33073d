// Chunked payloads (docs/formats/payload.md): building, and verification that authenticates each
// compressed chunk before decompressing it and stops at the first bad one.

#include "upkeep/install/payload.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "cli.hpp"
#include "temp_dir.hpp"
#include "test_util.hpp"
#include "upkeep/metadata/canonical_json.hpp"

namespace upkeep::install {
namespace {

namespace fs = std::filesystem;
constexpr std::uint64_t kChunk = 64 * 1024;

class PayloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Half random (incompressible), half repetitive, not a multiple of the chunk size.
    std::mt19937 rng(42);
    image_.resize(10 * kChunk + 1234);
    for (std::size_t i = 0; i < image_.size(); ++i) {
      image_[i] = i < image_.size() / 2 ? static_cast<char>(rng()) : static_cast<char>('a' + i % 7);
    }
    std::ofstream(dir_ / "image.bin", std::ios::binary) << image_;
  }

  ChunkIndex Build(unsigned threads = 2) {
    BuildOptions o;
    o.chunk_size = kChunk;
    o.threads = threads;
    auto index = BuildPayload(dir_ / "image.bin", dir_ / "image.payload", o);
    EXPECT_TRUE(index) << index.error().ToString();
    payload_ = testing::ReadFileOrEmpty(dir_ / "image.payload");
    return index.value();
  }

  // Feeds `payload` in pieces of `piece` bytes; returns Finish()'s result (or the first error).
  Result<void> Verify(const ChunkIndex& index, const std::string& payload,
                      std::size_t piece = 7777) {
    out_.clear();
    verifier_ =
        std::make_unique<PayloadVerifier>(index, [this](std::span<const char> d) -> Result<void> {
          out_.append(d.data(), d.size());
          return Ok();
        });
    for (std::size_t i = 0; i < payload.size(); i += piece) {
      UPKEEP_TRY(verifier_->Feed(
          std::span<const char>(payload.data() + i, std::min(piece, payload.size() - i))));
    }
    return verifier_->Finish();
  }

  testing::TempDir dir_;
  std::string image_;
  std::string payload_;
  std::string out_;
  std::unique_ptr<PayloadVerifier> verifier_;
};

TEST_F(PayloadTest, RoundTripsImageThroughChunks) {
  const ChunkIndex index = Build();
  EXPECT_EQ(index.chunks.size(), 11u);
  EXPECT_EQ(index.image_size, image_.size());
  EXPECT_EQ(index.payload_size, payload_.size());
  EXPECT_LT(payload_.size(), image_.size());
  ASSERT_TRUE(Verify(index, payload_));
  EXPECT_EQ(out_, image_);
}

// The payload does not depend on how many threads compressed it.
TEST_F(PayloadTest, BuildIsDeterministicAcrossThreadCounts) {
  const ChunkIndex one = Build(1);
  const std::string single = payload_;
  const ChunkIndex four = Build(4);
  EXPECT_EQ(payload_, single);
  EXPECT_EQ(SerializeChunkIndex(one), SerializeChunkIndex(four));
}

TEST_F(PayloadTest, IndexRoundTripsThroughJson) {
  const ChunkIndex index = Build();
  auto parsed = ParseChunkIndex(SerializeChunkIndex(index));
  ASSERT_TRUE(parsed) << parsed.error().ToString();
  EXPECT_EQ(SerializeChunkIndex(*parsed), SerializeChunkIndex(index));
}

// The installer reads the index from its verified file while parsing: same result, same rules.
TEST_F(PayloadTest, IndexFileParsesLikeTheText) {
  const ChunkIndex index = Build();
  std::ofstream(dir_ / "index.json", std::ios::binary) << SerializeChunkIndex(index);
  auto parsed = ParseChunkIndexFile(dir_ / "index.json");
  ASSERT_TRUE(parsed) << parsed.error().ToString();
  EXPECT_EQ(SerializeChunkIndex(*parsed), SerializeChunkIndex(index));
  std::ofstream(dir_ / "bad.json", std::ios::binary) << "{\"chunks\":[{\"offset\":1}]}";
  EXPECT_ERRC(ParseChunkIndexFile(dir_ / "bad.json"), Errc::InvalidChunkIndex);
  EXPECT_ERRC(ParseChunkIndexFile(dir_ / "missing.json"), Errc::ReadFailed);
}

// A flipped byte in chunk k is caught before decompression; only chunks before k reach the sink.
TEST_F(PayloadTest, StopsAtFirstTamperedChunk) {
  const ChunkIndex index = Build();
  for (std::size_t k : {0u, 5u, 10u}) {
    std::string bad = payload_;
    bad[index.chunks[k].offset + index.chunks[k].length / 2] ^= 0x20;
    EXPECT_ERRC(Verify(index, bad), Errc::ChunkDigestMismatch);
    EXPECT_EQ(verifier_->current_chunk(), k);
    EXPECT_EQ(out_.size(), k * kChunk);
    EXPECT_EQ(out_, image_.substr(0, k * kChunk));
  }
}

TEST_F(PayloadTest, RejectsTruncatedPayload) {
  const ChunkIndex index = Build();
  EXPECT_ERRC(Verify(index, payload_.substr(0, payload_.size() - 1)), Errc::PayloadTruncated);
}

TEST_F(PayloadTest, RejectsBytesAfterTheLastChunk) {
  const ChunkIndex index = Build();
  EXPECT_ERRC(Verify(index, payload_ + "x"), Errc::TrailingData);
}

// An index signed with the wrong image digest is caught at the end.
TEST_F(PayloadTest, RejectsImageDigestMismatch) {
  ChunkIndex index = Build();
  index.image_sha256 = std::string(64, '0');
  EXPECT_ERRC(Verify(index, payload_), Errc::ImageDigestMismatch);
}

// An authenticated chunk that decompresses to another size than the index says is rejected.
TEST_F(PayloadTest, RejectsChunkOfWrongDecompressedSize) {
  ChunkIndex index = Build();
  index.chunks.back().size += 1;
  EXPECT_ERRC(Verify(index, payload_), Errc::ChunkSizeMismatch);
  index.chunks.back().size -= 2;  // too small to hold the frame's content
  EXPECT_ERRC(Verify(index, payload_), Errc::ChunkSizeMismatch);
}

// With the image proven chunk by chunk, Finish still refuses an index whose chunk sizes do not
// add up to the image size it declares.
TEST_F(PayloadTest, FromChunksRefusesSizesNotAddingUpToTheImage) {
  ChunkIndex index = Build();
  index.image_size += 1;
  PayloadVerifier v(
      index, [](std::span<const char>) -> Result<void> { return Ok(); },
      PayloadVerifier::ImageDigest::FromChunks);
  ASSERT_TRUE(v.Feed(payload_).has_value());
  EXPECT_ERRC(v.Finish(), Errc::ImageSizeMismatch);
}

// An index built in memory with a digest that is not hex serialises without throwing, to a text
// every parser refuses.
TEST_F(PayloadTest, SerializingANonHexImageDigestDoesNotThrow) {
  ChunkIndex index = Build();
  index.image_sha256 = "\xff\xfe not hex";
  std::string text;
  EXPECT_NO_THROW(text = SerializeChunkIndex(index));
  EXPECT_ERRC(ParseChunkIndex(text), Errc::InvalidChunkIndex);
}

// A verifier given an index built in memory with hostile sizes neither throws nor sizes a buffer
// from them: a chunk larger than the format allows is refused.
TEST_F(PayloadTest, VerifierRefusesHostileSizesWithoutAllocating) {
  ChunkIndex index = Build();
  index.chunk_size = 1ull << 62;
  index.chunks[0].size = 1ull << 40;
  EXPECT_ERRC(Verify(index, payload_), Errc::InvalidChunkIndex);
}

// An in-memory index with a chunk size outside the format's bounds is refused by the same checks
// the parser applies.
TEST_F(PayloadTest, CheckChunkIndexRefusesHostileSizes) {
  ChunkIndex index = Build();
  EXPECT_TRUE(CheckChunkIndex(index).has_value());
  index.chunk_size = 1ull << 62;
  EXPECT_ERRC(CheckChunkIndex(index), Errc::InvalidChunkIndex);
  index = Build();
  index.chunks[0].length = 1ull << 62;
  EXPECT_ERRC(CheckChunkIndex(index), Errc::InvalidChunkIndex);
}

TEST_F(PayloadTest, ReportsMissingImage) {
  EXPECT_ERRC(BuildPayload(dir_ / "missing.img", dir_ / "out.payload"), Errc::ReadFailed);
  EXPECT_FALSE(fs::exists(dir_ / "out.payload"));
  std::ofstream(dir_ / "empty.img");
  EXPECT_ERRC(BuildPayload(dir_ / "empty.img", dir_ / "out.payload"), Errc::ReadFailed);
  EXPECT_FALSE(fs::exists(dir_ / "out.payload"));
}

class ChunkIndexTest : public PayloadTest {
 protected:
  metadata::Json Good() { return metadata::Json::parse(SerializeChunkIndex(Build())); }
};

TEST_F(ChunkIndexTest, RejectsInconsistentIndexes) {
  auto expect_bad = [](metadata::Json doc, const char* why) {
    auto r = ParseChunkIndex(doc.dump());
    ASSERT_FALSE(r) << why;
    EXPECT_EQ(r.error().code(), Errc::InvalidChunkIndex) << why;
  };
  auto doc = Good();
  doc["format"] = 2;
  expect_bad(doc, "unknown format");
  doc = Good();
  doc["chunk_size"] = 1024;
  expect_bad(doc, "chunk size too small");
  doc = Good();
  doc["chunks"][1]["offset"] = doc["chunks"][1]["offset"].get<std::uint64_t>() + 1;
  expect_bad(doc, "gap between chunks");
  doc = Good();
  doc["chunks"][0]["size"] = 100;
  expect_bad(doc, "short chunk before the last");
  doc = Good();
  doc["chunks"][0]["length"] = 1ull << 40;
  expect_bad(doc, "length beyond the compression bound");
  doc = Good();
  doc["image_size"] = doc["image_size"].get<std::uint64_t>() + 1;
  expect_bad(doc, "sizes do not add up");
  doc = Good();
  doc["chunks"][2]["sha256"] = "XYZ";
  expect_bad(doc, "bad digest");
  doc = Good();
  doc["payload_size"] = 1;
  expect_bad(doc, "payload size does not add up");
  doc = Good();
  doc["chunk_size"] = 1ull << 62;
  expect_bad(doc, "chunk size beyond 64 MiB");
  doc = Good();
  doc["image_size"] = ~0ull;
  expect_bad(doc, "image size the chunks cannot hold");
  EXPECT_EQ(ParseChunkIndex("not json").error().code(), Errc::InvalidChunkIndex);
}

// `upkeep image build` and `upkeep image verify` on the command line.
TEST_F(PayloadTest, CommandLineBuildsAndVerifies) {
  auto run = [](std::vector<std::string> args) {
    std::vector<const char*> argv{"upkeep"};
    for (const auto& a : args) argv.push_back(a.c_str());
    std::ostringstream out, err;
    return tool::Main(static_cast<int>(argv.size()), argv.data(), out, err);
  };
  const std::string out_dir = (dir_ / "out").string();
  ASSERT_EQ(run({"image", "build", (dir_ / "image.bin").string(), "-o", out_dir, "--chunk-size",
                 "65536"}),
            0);
  const std::string index = out_dir + "/image.bin.chunks.json";
  const std::string payload = out_dir + "/image.bin.payload";
  ASSERT_EQ(run({"image", "verify", index, payload, "-o", (dir_ / "back.bin").string()}), 0);
  EXPECT_EQ(testing::ReadFileOrEmpty(dir_ / "back.bin"), image_);
  std::string bad = testing::ReadFileOrEmpty(payload);
  bad[bad.size() / 2] ^= 1;
  std::ofstream(payload, std::ios::binary) << bad;
  EXPECT_EQ(run({"image", "verify", index, payload, "-o", (dir_ / "back2.bin").string()}), 1);
  EXPECT_FALSE(fs::exists(dir_ / "back2.bin"));
  EXPECT_EQ(run({"image", "build"}), 2);
}

}  // namespace
}  // namespace upkeep::install
