#pragma once

// Chunked payloads (docs/formats/payload.md): an image is cut into fixed-size chunks, each
// compressed as an independent zstd frame; the frames are concatenated into the payload file, and
// a chunk index (JSON, itself a signed TUF target) lists each frame's offset, length and SHA-256.
// A device authenticates every compressed chunk against the index before decompressing it, so no
// unauthenticated byte reaches the decompressor or the disk, and a bad chunk stops the install
// within one chunk of where it starts.

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/result.hpp"

namespace upkeep::install {

enum class Errc {
  ReadFailed = 1,            // the image or payload file cannot be read
  WriteFailed = 2,           // the output cannot be written
  CompressFailed = 3,        // zstd refused to compress
  InvalidChunkIndex = 10,    // the index does not parse or is inconsistent
  ChunkDigestMismatch = 11,  // a compressed chunk's SHA-256 differs from the index
  DecompressFailed = 12,     // an authenticated chunk does not decompress (index built wrong)
  ChunkSizeMismatch = 13,    // a chunk decompresses to another size than the index says
  ImageDigestMismatch = 14,  // the whole image's SHA-256 differs from the index
  PayloadTruncated = 15,     // the payload ended before the last chunk
  TrailingData = 16,         // bytes after the last chunk
  BundleMalformed = 20,      // an offline bundle's header, table of contents or size is wrong
  SlotUnavailable = 30,      // the slot cannot be opened, or is neither a file nor a block device
  SlotTooSmall = 31,         // the image is larger than the slot
  ReadBackMismatch = 32,     // the slot does not read back what was written
  ImageSizeMismatch = 33,    // the image's size differs from what the release declares
  DownloadFailed = 34,       // the payload could not be fetched, even after resuming
  BootloaderFailed = 40,     // the boot environment cannot be read or written
  BootEnvInvalid = 41,       // the boot environment holds values the adapter does not accept
};

}  // namespace upkeep::install

UPKEEP_DECLARE_ERRC(upkeep::install);

namespace upkeep::install {

inline constexpr std::uint64_t kChunkIndexFormat = 1;
inline constexpr std::uint64_t kDefaultChunkSize = 1ull << 20;
inline constexpr std::uint64_t kMinChunkSize = 4096;
inline constexpr std::uint64_t kMaxChunkSize = 64ull << 20;
// Chunks one index may list: 4 TiB at the default chunk size, 16 GiB at the smallest. An index
// listing more is refused as it is parsed, before its entries take memory.
inline constexpr std::uint64_t kMaxChunks = 1ull << 22;

// How each chunk is stored in the payload: an independent zstd frame, or the image bytes as they
// are (for images that do not compress, or media faster than the decompressor).
enum class ChunkCompression { Zstd, None };
[[nodiscard]] const char* ToString(ChunkCompression c);

// A SHA-256 digest as bytes: an index of thousands of chunks stays small in memory.
using Sha256Digest = std::array<std::uint8_t, 32>;

struct ChunkEntry {
  std::uint64_t offset = 0;  // of the compressed frame in the payload
  std::uint64_t length = 0;  // compressed bytes
  Sha256Digest sha256{};     // of the compressed bytes
  std::uint64_t size = 0;    // decompressed bytes
  // SHA-256 of the decompressed bytes, when the index has it. Lets a device reuse a chunk it
  // already holds instead of downloading it, and check what an interrupted install left on the
  // slot.
  std::optional<Sha256Digest> content_sha256;
};

struct ChunkIndex {
  std::uint64_t format = kChunkIndexFormat;
  ChunkCompression compression = ChunkCompression::Zstd;
  std::uint64_t chunk_size = kDefaultChunkSize;
  std::uint64_t image_size = 0;
  std::string image_sha256;  // of the whole decompressed image
  std::uint64_t payload_size = 0;
  std::vector<ChunkEntry> chunks;
};

// Strict parse and consistency check (offsets contiguous, sizes add up, lengths bounded so a
// reader's memory stays bounded). Errc::InvalidChunkIndex.
[[nodiscard]] Result<ChunkIndex> ParseChunkIndex(std::string_view json);
// The same from a file, read as it is parsed (an index of a 4 GiB image is about 1 MiB of text).
// Errc::ReadFailed when it cannot be opened.
[[nodiscard]] Result<ChunkIndex> ParseChunkIndexFile(const std::filesystem::path& file);
// The consistency checks ParseChunkIndex makes, for an index built in memory: chunk_size within
// bounds, at most kMaxChunks chunks, offsets contiguous, lengths bounded, sizes adding up to
// image_size, image_sha256 64 lower-case hex characters. Errc::InvalidChunkIndex.
[[nodiscard]] Result<void> CheckChunkIndex(const ChunkIndex& index);
// Canonical JSON of the index. An index whose image_sha256 is not hex (only an index built in
// memory can have one) is written with an empty image_sha256, which every parser refuses.
[[nodiscard]] std::string SerializeChunkIndex(const ChunkIndex& index);

struct BuildOptions {
  std::uint64_t chunk_size = kDefaultChunkSize;  // uncompressed bytes per chunk
  ChunkCompression compression = ChunkCompression::Zstd;
  int level = 3;  // zstd compression level
  // Compression workers; 0 picks one per core but one (the image digest has its own thread).
  unsigned threads = 0;
  // Writes the payload; nullptr: the process-wide local file system.
  Filesystem* filesystem = nullptr;
};

// Compresses `image` into `payload` (written atomically) and returns its index. Memory stays
// bounded by a few chunks per worker whatever the image size.
[[nodiscard]] Result<ChunkIndex> BuildPayload(const std::filesystem::path& image,
                                              const std::filesystem::path& payload,
                                              const BuildOptions& options = {});

// Checks a payload stream against its index chunk by chunk and hands out the decompressed image.
class PayloadVerifier {
 public:
  using ImageSink = std::function<Result<void>(std::span<const char>)>;
  // How the whole image is proven to be the signed one:
  // - Verify (default): the verifier also hashes every image byte and Finish compares the result
  //   with image_sha256.
  // - LeftToCaller: the caller hashes every chunk handed out (and every local chunk accepted)
  //   itself, in order, e.g. on another thread; Finish checks only that every chunk was seen.
  // - FromChunks: no second pass. Each chunk is proven on its own by the signed index (stored
  //   bytes against sha256 and, for zstd, the exact decompressed size; local chunks against
  //   content_sha256), chunks are handed out once each in order 0..n-1, and Finish checks that
  //   all n were and that their sizes add up to image_size (docs/formats/payload.md).
  enum class ImageDigest { Verify, LeftToCaller, FromChunks };
  PayloadVerifier(const ChunkIndex& index, ImageSink sink,
                  ImageDigest image_digest = ImageDigest::Verify);
  ~PayloadVerifier();
  PayloadVerifier(const PayloadVerifier&) = delete;
  PayloadVerifier& operator=(const PayloadVerifier&) = delete;

  // Payload bytes in order, any piece size. Fails at the first chunk that does not verify; after
  // an error every later call fails too.
  [[nodiscard]] Result<void> Feed(std::span<const char> bytes);
  // After the last byte: every chunk seen, and the whole image's digest matches (Verify) or the
  // chunk sizes add up to image_size (FromChunks, Errc::ImageSizeMismatch).
  [[nodiscard]] Result<void> Finish();

  // Offers the image bytes of the next chunk from a local source (the active slot, or what an
  // interrupted install already wrote): accepted when the index has the chunk's content_sha256
  // and the bytes match it and its size; they join the image digest and, if `to_sink`, go to the
  // sink. False (nothing changed) when they do not match or the index cannot vouch for them.
  // Only between chunks (no payload bytes of the next chunk fed yet).
  [[nodiscard]] Result<bool> TryLocalChunk(std::span<const char> content, bool to_sink);

  // Decompressed bytes passed to the sink so far (all authenticated).
  [[nodiscard]] std::uint64_t image_bytes_out() const { return image_out_; }
  // Index of the chunk being assembled.
  [[nodiscard]] std::size_t current_chunk() const { return next_; }
  // Payload offset of the next byte Feed expects: where a dropped download resumes.
  [[nodiscard]] std::uint64_t payload_offset() const;
  [[nodiscard]] bool failed() const { return failed_; }

 private:
  [[nodiscard]] Result<void> CompleteChunk(std::span<const char> stored);
  [[nodiscard]] Result<void> Emit(std::span<const char> content, bool to_sink);
  struct State;
  const ChunkIndex& index_;
  ImageSink sink_;
  std::unique_ptr<State> state_;
  std::vector<char> pending_;  // compressed bytes of the current chunk
  std::size_t next_ = 0;
  std::uint64_t image_out_ = 0;
  bool failed_ = false;
  ImageDigest image_digest_;
};

}  // namespace upkeep::install
