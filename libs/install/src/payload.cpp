#include "upkeep/install/payload.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <new>
#include <optional>
#include <system_error>
#include <thread>

#include "process_defaults.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/unique_fd.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/json_reader.hpp"

namespace upkeep::install {

namespace {

using metadata::Json;

const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::ReadFailed:
      return "ReadFailed";
    case Errc::WriteFailed:
      return "WriteFailed";
    case Errc::CompressFailed:
      return "CompressFailed";
    case Errc::InvalidChunkIndex:
      return "InvalidChunkIndex";
    case Errc::ChunkDigestMismatch:
      return "ChunkDigestMismatch";
    case Errc::DecompressFailed:
      return "DecompressFailed";
    case Errc::ChunkSizeMismatch:
      return "ChunkSizeMismatch";
    case Errc::ImageDigestMismatch:
      return "ImageDigestMismatch";
    case Errc::PayloadTruncated:
      return "PayloadTruncated";
    case Errc::TrailingData:
      return "TrailingData";
    case Errc::BundleMalformed:
      return "BundleMalformed";
    case Errc::SlotUnavailable:
      return "SlotUnavailable";
    case Errc::SlotTooSmall:
      return "SlotTooSmall";
    case Errc::ReadBackMismatch:
      return "ReadBackMismatch";
    case Errc::ImageSizeMismatch:
      return "ImageSizeMismatch";
    case Errc::DownloadFailed:
      return "DownloadFailed";
    case Errc::BootloaderFailed:
      return "BootloaderFailed";
    case Errc::BootEnvInvalid:
      return "BootEnvInvalid";
  }
  return "Unknown";
}

Error BadIndex(const std::string& what) { return Error(Errc::InvalidChunkIndex, what); }

Sha256Digest Digest(std::span<const char> data) {
  const auto bytes = crypto::Sha256(std::string_view(data.data(), data.size()));
  Sha256Digest d{};
  std::copy_n(bytes.begin(), d.size(), d.begin());
  return d;
}

// 64 lower-case hex characters (checked by the caller) as bytes.
Sha256Digest FromHex(const std::string& hex) {
  Sha256Digest d{};
  const auto bytes = HexDecode(hex);
  if (bytes && bytes->size() == d.size()) std::copy(bytes->begin(), bytes->end(), d.begin());
  return d;
}

bool IsSha256Hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// The chunk index is read with the one typed JSON reader (metadata/json_reader.hpp); its errors
// become InvalidChunkIndex. Unknown members are ignored, as the format says.

Result<Sha256Digest> Digest(metadata::JsonReader& r, const char* key, bool* present = nullptr) {
  auto text = r.OptionalString(key);
  if (!text) return BadIndex(text.error().message());
  if (present != nullptr) *present = text->has_value();
  if (!text->has_value()) {
    if (present != nullptr) return Sha256Digest{};
    return BadIndex(r.Path(key) + ": required");
  }
  if (!IsSha256Hex(**text)) return BadIndex(r.Path(key) + ": must be 64 lower-case hex characters");
  return FromHex(**text);
}

// One chunk on its way through the build pipeline.
// Buffers are allocated uninitialised: zero-filling two chunk-sized buffers per chunk costs more
// than hashing them.
struct Buffer {
  std::unique_ptr<char[]> data;
  std::size_t size = 0;
  void Allocate(std::size_t n) {
    data.reset(new char[n]);
    size = n;
  }
  [[nodiscard]] std::span<const char> view() const { return {data.get(), size}; }
};

struct Job {
  Buffer raw;
  Buffer compressed;
  Sha256Digest sha256{};
  Sha256Digest content_sha256{};
  bool done = false;    // compressed (or failed)
  bool hashed = false;  // raw bytes added to the image digest
  bool failed = false;
};

}  // namespace

const char* ToString(ChunkCompression c) { return c == ChunkCompression::None ? "none" : "zstd"; }

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("install", &ErrcName);
  return category;
}

namespace {

// `parse(on_chunk)` runs the streaming JSON parser over the index text; `text_size` bounds the
// number of chunks (each takes at least 90 bytes of text), so the vector is sized once: memory
// reserved beyond what is used is never touched.
template <typename Parse>
Result<ChunkIndex> ParseIndexUnguarded(const Parse& parse, std::uint64_t text_size) {
  ChunkIndex index;
  index.chunks.reserve(
      static_cast<std::size_t>(std::min<std::uint64_t>(text_size / 90 + 1, kMaxChunks)));
  // Chunks are converted as the parser completes each one, so an index of thousands of chunks
  // never exists as a JSON tree (the installer's memory stays flat with the image size).
  auto on_chunk = [&index](const Json& c) -> Result<void> {
    if (index.chunks.size() >= kMaxChunks) {
      return BadIndex("more than " + std::to_string(kMaxChunks) + " chunks");
    }
    auto reader = metadata::JsonReader::Of(c, metadata::Errc::InvalidMetadata,
                                           "chunks[" + std::to_string(index.chunks.size()) + "]");
    if (!reader) return BadIndex(reader.error().message());
    metadata::JsonReader& r = *reader;
    ChunkEntry e;
    auto read = [&r](const char* key, std::uint64_t& out) -> Result<void> {
      auto v = r.Uint(key);
      if (!v) return BadIndex(v.error().message());
      out = *v;
      return Ok();
    };
    UPKEEP_TRY(read("offset", e.offset));
    UPKEEP_TRY(read("length", e.length));
    UPKEEP_TRY(read("size", e.size));
    UPKEEP_ASSIGN_OR_RETURN(e.sha256, Digest(r, "sha256"));
    bool has_content = false;
    UPKEEP_ASSIGN_OR_RETURN(const Sha256Digest content, Digest(r, "content_sha256", &has_content));
    if (has_content) e.content_sha256 = content;
    index.chunks.push_back(std::move(e));
    return Ok();
  };
  Result<Json> doc = parse(std::function<Result<void>(const Json&)>(on_chunk));
  if (!doc) {
    if (doc.error().code() == Errc::InvalidChunkIndex) return doc.error();
    return BadIndex(doc.error().message());
  }
  auto top = metadata::JsonReader::Of(*doc, metadata::Errc::InvalidMetadata, "chunk index");
  if (!top) return BadIndex(top.error().message());
  metadata::JsonReader& r = *top;
  auto uint = [&r](const char* key) -> Result<std::uint64_t> {
    auto v = r.Uint(key);
    if (!v) return BadIndex(v.error().message());
    return *v;
  };
  if (auto chunks = r.Array("chunks"); !chunks) return BadIndex(chunks.error().message());
  UPKEEP_ASSIGN_OR_RETURN(index.format, uint("format"));
  if (index.format != kChunkIndexFormat) {
    return BadIndex("unsupported chunk index format " + std::to_string(index.format));
  }
  auto compression = r.OptionalString("compression");
  if (!compression) return BadIndex(compression.error().message());
  if (compression->has_value()) {
    if (**compression == "zstd") {
      index.compression = ChunkCompression::Zstd;
    } else if (**compression == "none") {
      index.compression = ChunkCompression::None;
    } else {
      return BadIndex("unknown compression \"" + **compression + "\"");
    }
  }
  UPKEEP_ASSIGN_OR_RETURN(index.chunk_size, uint("chunk_size"));
  UPKEEP_ASSIGN_OR_RETURN(index.image_size, uint("image_size"));
  UPKEEP_ASSIGN_OR_RETURN(index.payload_size, uint("payload_size"));
  UPKEEP_ASSIGN_OR_RETURN(const Sha256Digest image, Digest(r, "image_sha256"));
  index.image_sha256 = HexEncode(image);
  if (index.compression == ChunkCompression::None) {
    // Stored bytes are the image bytes: the stored digest is the content digest.
    for (ChunkEntry& e : index.chunks) {
      if (!e.content_sha256) e.content_sha256 = e.sha256;
    }
  }
  UPKEEP_TRY(CheckChunkIndex(index));
  return index;
}

// Out of memory while parsing (only an index far larger than any real one gets near it) is an
// invalid index, not an exception.
template <typename Parse>
Result<ChunkIndex> ParseIndex(const Parse& parse, std::uint64_t text_size) {
  try {
    return ParseIndexUnguarded(parse, text_size);
  } catch (const std::bad_alloc&) {
    return BadIndex("chunk index too large for memory");
  } catch (const std::length_error&) {
    return BadIndex("chunk index too large");
  }
}

}  // namespace

Result<void> CheckChunkIndex(const ChunkIndex& index) {
  if (index.format != kChunkIndexFormat) {
    return BadIndex("unsupported chunk index format " + std::to_string(index.format));
  }
  if (index.chunk_size < kMinChunkSize || index.chunk_size > kMaxChunkSize) {
    return BadIndex("chunk_size must be between 4 KiB and 64 MiB");
  }
  if (index.chunks.size() > kMaxChunks) {
    return BadIndex("more than " + std::to_string(kMaxChunks) + " chunks");
  }
  if (!IsSha256Hex(index.image_sha256)) {
    return BadIndex("\"image_sha256\" must be 64 lower-case hex characters");
  }
  const std::uint64_t max_length = ZSTD_compressBound(static_cast<std::size_t>(index.chunk_size));
  std::uint64_t offset = 0, image = 0;
  for (std::size_t i = 0; i < index.chunks.size(); ++i) {
    const ChunkEntry& e = index.chunks[i];
    const std::string at = "chunks[" + std::to_string(i) + "]: ";
    if (e.offset != offset) return BadIndex(at + "chunks must be contiguous");
    if (e.length == 0 || e.length > max_length) return BadIndex(at + "length out of range");
    if (index.compression == ChunkCompression::None) {
      // Stored bytes are the image bytes: one length, one digest.
      if (e.length != e.size) return BadIndex(at + "uncompressed chunk length must equal size");
      if (e.content_sha256 && *e.content_sha256 != e.sha256) {
        return BadIndex(at + "uncompressed chunk has two different digests");
      }
    }
    const bool last = i + 1 == index.chunks.size();
    if (e.size == 0 || e.size > index.chunk_size || (!last && e.size != index.chunk_size)) {
      return BadIndex(at + "size must be chunk_size (the last chunk may be shorter)");
    }
    // Bounded above (at most kMaxChunks chunks of at most kMaxChunkSize bytes): no overflow.
    offset += e.length;
    image += e.size;
  }
  if (image != index.image_size) return BadIndex("chunk sizes do not add up to image_size");
  if (offset != index.payload_size) return BadIndex("chunk lengths do not add up to payload_size");
  return Ok();
}

Result<ChunkIndex> ParseChunkIndex(std::string_view json) {
  return ParseIndex(
      [json](const auto& on_chunk) {
        return metadata::ParseJsonStreaming(json, "chunks", on_chunk);
      },
      json.size());
}

Result<ChunkIndex> ParseChunkIndexFile(const std::filesystem::path& file) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(file, ec);
  std::ifstream in(file, std::ios::binary);
  if (ec || !in) return Error(Errc::ReadFailed, file.string() + ": cannot be read");
  return ParseIndex(
      [&in](const auto& on_chunk) { return metadata::ParseJsonStreaming(in, "chunks", on_chunk); },
      size);
}

std::string SerializeChunkIndex(const ChunkIndex& index) {
  Json chunks = Json::array();
  for (const auto& c : index.chunks) {
    Json entry = {{"offset", c.offset},
                  {"length", c.length},
                  {"sha256", HexEncode(c.sha256)},
                  {"size", c.size}};
    if (c.content_sha256) entry["content_sha256"] = HexEncode(*c.content_sha256);
    chunks.push_back(std::move(entry));
  }
  const std::string image_sha256 = IsSha256Hex(index.image_sha256) ? index.image_sha256 : "";
  Json doc = {{"format", index.format},
              {"chunk_size", index.chunk_size},
              {"compression", ToString(index.compression)},
              {"image_size", index.image_size},
              {"image_sha256", image_sha256},
              {"payload_size", index.payload_size},
              {"chunks", std::move(chunks)}};
  // Integers and ASCII strings only: always canonical.
  auto text = metadata::Canonicalize(doc);
  return text ? std::move(*text) : std::string();
}

Result<ChunkIndex> BuildPayload(const std::filesystem::path& image,
                                const std::filesystem::path& payload, const BuildOptions& options) {
  if (options.chunk_size < kMinChunkSize || options.chunk_size > kMaxChunkSize) {
    return Error(Errc::InvalidChunkIndex, "chunk size must be between 4 KiB and 64 MiB");
  }
  const UniqueFd image_fd(::open(image.c_str(), O_RDONLY | O_CLOEXEC));
  const int in = image_fd.get();
  if (in < 0) return Error(Errc::ReadFailed, image.string() + ": " + std::strerror(errno));

  Filesystem& fs = options.filesystem != nullptr ? *options.filesystem : ProcessFilesystem();
  auto out = fs.CreateAtomic(payload);
  if (!out) return Error(Errc::WriteFailed, out.error().message());

  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const unsigned workers =
      std::min(64u, options.threads != 0 ? options.threads : std::max(1u, cores - 1));
  const std::size_t max_in_flight = 2 * workers;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<Job>> queue;     // waiting for a worker; guarded by mu
  std::deque<std::shared_ptr<Job>> in_order;  // every job not yet written; guarded by mu
  bool stop = false;                          // guarded by mu

  auto work = [&] {
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    std::unique_lock lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return stop || !queue.empty(); });
      if (queue.empty()) break;
      auto job = queue.front();
      queue.pop_front();
      lock.unlock();
      job->content_sha256 = Digest(job->raw.view());
      bool ok = true;
      if (options.compression == ChunkCompression::None) {
        job->sha256 = job->content_sha256;
      } else {
        job->compressed.Allocate(ZSTD_compressBound(job->raw.size));
        const std::size_t n =
            cctx == nullptr
                ? 0
                : ZSTD_compressCCtx(cctx, job->compressed.data.get(), job->compressed.size,
                                    job->raw.data.get(), job->raw.size, options.level);
        ok = cctx != nullptr && !ZSTD_isError(n);
        if (ok) {
          job->compressed.size = n;
          job->sha256 = Digest(job->compressed.view());
        }
      }
      lock.lock();
      job->done = true;
      job->failed = !ok;
      cv.notify_all();
    }
    ZSTD_freeCCtx(cctx);
  };
  // The image digest is sequential: one thread adds chunks to it in order, next to the workers.
  crypto::Hasher image_hash(crypto::HashAlgorithm::Sha256);
  std::deque<std::shared_ptr<Job>> to_hash;  // guarded by mu
  auto hash = [&] {
    std::unique_lock lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return stop || !to_hash.empty(); });
      if (to_hash.empty()) break;
      auto job = to_hash.front();
      to_hash.pop_front();
      lock.unlock();
      image_hash.Update(std::string_view(job->raw.data.get(), job->raw.size));
      lock.lock();
      job->hashed = true;
      cv.notify_all();
    }
  };
  std::vector<std::thread> pool;
  auto shutdown = [&] {
    {
      std::lock_guard lock(mu);
      stop = true;
    }
    cv.notify_all();
    for (auto& t : pool) t.join();
  };
  try {
    pool.reserve(workers + 1);
    for (unsigned i = 0; i < workers; ++i) pool.emplace_back(work);
    pool.emplace_back(hash);
  } catch (const std::system_error& e) {
    shutdown();
    return Error(Errc::CompressFailed,
                 std::string("cannot start compression threads: ") + e.what());
  }

  ChunkIndex index;
  index.chunk_size = options.chunk_size;
  index.compression = options.compression;
  std::optional<Error> failure;
  std::size_t written = 0;  // chunks appended to the payload so far
  bool eof = false;
  std::unique_lock lock(mu);
  while (!failure && (!eof || !in_order.empty())) {
    if (!eof && in_order.size() < max_in_flight) {
      lock.unlock();
      auto job = std::make_shared<Job>();
      job->raw.Allocate(options.chunk_size);
      std::size_t filled = 0;
      while (filled < job->raw.size) {
        const ssize_t n = ::read(in, job->raw.data.get() + filled, job->raw.size - filled);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          failure = Error(Errc::ReadFailed, image.string() + ": " + std::strerror(errno));
          break;
        }
        if (n == 0) break;
        filled += static_cast<std::size_t>(n);
      }
      lock.lock();
      if (failure) break;
      if (filled < job->raw.size) eof = true;
      if (filled == 0) continue;
      job->raw.size = filled;
      index.image_size += filled;
      ChunkEntry entry;
      entry.size = filled;
      index.chunks.push_back(entry);
      in_order.push_back(job);
      queue.push_back(job);
      to_hash.push_back(job);
      cv.notify_all();
      continue;
    }
    cv.wait(lock, [&] { return in_order.front()->done && in_order.front()->hashed; });
    auto job = in_order.front();
    in_order.pop_front();
    lock.unlock();
    if (job->failed) {
      failure = Error(Errc::CompressFailed, "zstd could not compress a chunk");
    } else {
      const Buffer& stored =
          options.compression == ChunkCompression::None ? job->raw : job->compressed;
      ChunkEntry& e = index.chunks[written++];
      e.offset = index.payload_size;
      e.length = stored.size;
      e.sha256 = job->sha256;
      e.content_sha256 = job->content_sha256;
      index.payload_size += e.length;
      auto w = (*out)->Append(stored.view());
      if (!w) failure = Error(Errc::WriteFailed, w.error().message());
    }
    lock.lock();
  }
  lock.unlock();
  shutdown();  // the hasher finishes what was queued before it stops
  if (failure) return *failure;
  if (index.chunks.empty()) return Error(Errc::ReadFailed, image.string() + " is empty");
  index.image_sha256 = HexEncode(image_hash.Final());
  if (auto c = (*out)->Commit(); !c) return Error(Errc::WriteFailed, c.error().message());
  return index;
}

// ---------------------------------------------------------------------------------------------

struct PayloadVerifier::State {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  crypto::Hasher image_hash{crypto::HashAlgorithm::Sha256};
  std::vector<char> image_chunk;
  ~State() { ZSTD_freeDCtx(dctx); }
};

PayloadVerifier::PayloadVerifier(const ChunkIndex& index, ImageSink sink, ImageDigest image_digest)
    : index_(index),
      sink_(std::move(sink)),
      state_(std::make_unique<State>()),
      image_digest_(image_digest) {
  // Bounded by the format's largest chunk, whatever an index built in memory says: a larger
  // chunk is then refused in CompleteChunk instead of sizing a buffer.
  if (index.compression == ChunkCompression::Zstd) {
    state_->image_chunk.resize(
        static_cast<std::size_t>(std::min<std::uint64_t>(index.chunk_size, kMaxChunkSize)));
  }
}

PayloadVerifier::~PayloadVerifier() = default;

Result<void> PayloadVerifier::Feed(std::span<const char> bytes) {
  if (failed_) return Error(Errc::ChunkDigestMismatch, "payload already rejected");
  while (!bytes.empty()) {
    if (next_ >= index_.chunks.size()) {
      failed_ = true;
      return Error(Errc::TrailingData, "payload continues after the last chunk");
    }
    const ChunkEntry& chunk = index_.chunks[next_];
    const auto length = static_cast<std::size_t>(chunk.length);
    Result<void> r = Ok();
    if (pending_.empty() && bytes.size() >= length) {
      // The whole chunk is in this piece: check it where it lies, no copy.
      r = CompleteChunk(bytes.first(length));
      bytes = bytes.subspan(length);
    } else {
      // Allocated on first use: a stream whose pieces hold whole chunks never needs it.
      if (pending_.capacity() == 0) {
        pending_.reserve(ZSTD_compressBound(
            static_cast<std::size_t>(std::min<std::uint64_t>(index_.chunk_size, kMaxChunkSize))));
      }
      const std::size_t take = std::min(length - pending_.size(), bytes.size());
      pending_.insert(pending_.end(), bytes.begin(),
                      bytes.begin() + static_cast<std::ptrdiff_t>(take));
      bytes = bytes.subspan(take);
      if (pending_.size() == length) {
        r = CompleteChunk(pending_);
        pending_.clear();
      }
    }
    if (!r) {
      failed_ = true;
      return r;
    }
  }
  return Ok();
}

Result<void> PayloadVerifier::CompleteChunk(std::span<const char> stored) {
  const ChunkEntry& chunk = index_.chunks[next_];
  // Authenticate before decompressing: the decompressor never sees unverified bytes.
  const auto actual = crypto::Sha256(std::string_view(stored.data(), stored.size()));
  if (!crypto::ConstantTimeEqual(actual, chunk.sha256)) {
    return Error(Errc::ChunkDigestMismatch,
                 "chunk " + std::to_string(next_) + " at payload offset " +
                     std::to_string(chunk.offset) + " does not match the index");
  }
  std::span<const char> out = stored;
  if (index_.compression == ChunkCompression::Zstd) {
    if (chunk.size > state_->image_chunk.size()) {
      return Error(Errc::InvalidChunkIndex,
                   "chunk " + std::to_string(next_) + " is larger than the index's chunk_size");
    }
    if (state_->dctx == nullptr) {
      return Error(Errc::DecompressFailed, "no memory for a zstd decompression context");
    }
    const std::size_t n =
        ZSTD_decompressDCtx(state_->dctx, state_->image_chunk.data(),
                            static_cast<std::size_t>(chunk.size), stored.data(), stored.size());
    if (ZSTD_isError(n) && ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall) {
      // The authenticated frame holds more than the index says: never more than `size` bytes of
      // it are produced, and none of them are used.
      return Error(Errc::ChunkSizeMismatch, "chunk " + std::to_string(next_) +
                                                " decompresses to more than the index's " +
                                                std::to_string(chunk.size) + " bytes");
    }
    if (ZSTD_isError(n)) {
      return Error(Errc::DecompressFailed,
                   "chunk " + std::to_string(next_) + ": " + ZSTD_getErrorName(n));
    }
    if (n != chunk.size) {
      return Error(Errc::ChunkSizeMismatch, "chunk " + std::to_string(next_) + " decompressed to " +
                                                std::to_string(n) + " bytes, index says " +
                                                std::to_string(chunk.size));
    }
    out = std::span<const char>(state_->image_chunk.data(), n);
  }
  return Emit(out, true);
}

Result<void> PayloadVerifier::Emit(std::span<const char> content, bool to_sink) {
  if (image_digest_ == ImageDigest::Verify) {
    state_->image_hash.Update(std::string_view(content.data(), content.size()));
  }
  if (to_sink) UPKEEP_TRY(sink_(content));
  image_out_ += content.size();
  ++next_;
  return Ok();
}

Result<bool> PayloadVerifier::TryLocalChunk(std::span<const char> content, bool to_sink) {
  if (failed_) return Error(Errc::ChunkDigestMismatch, "payload already rejected");
  if (next_ >= index_.chunks.size() || !pending_.empty()) return false;
  const ChunkEntry& chunk = index_.chunks[next_];
  if (!chunk.content_sha256 || content.size() != chunk.size) return false;
  const auto actual = crypto::Sha256(std::string_view(content.data(), content.size()));
  if (!crypto::ConstantTimeEqual(actual, *chunk.content_sha256)) return false;
  auto r = Emit(content, to_sink);
  if (!r) {
    failed_ = true;
    return r.error();
  }
  return true;
}

std::uint64_t PayloadVerifier::payload_offset() const {
  if (next_ >= index_.chunks.size()) return index_.payload_size;
  return index_.chunks[next_].offset + pending_.size();
}

Result<void> PayloadVerifier::Finish() {
  if (failed_) return Error(Errc::ChunkDigestMismatch, "payload already rejected");
  failed_ = true;  // Finish is final
  if (next_ < index_.chunks.size()) {
    return Error(Errc::PayloadTruncated, "payload ended in chunk " + std::to_string(next_) +
                                             " of " + std::to_string(index_.chunks.size()));
  }
  if (image_digest_ == ImageDigest::LeftToCaller) return Ok();
  if (image_digest_ == ImageDigest::FromChunks) {
    // Each chunk handed out was proven against the signed index, once, in order; together they
    // are the whole image when they are all there and their sizes add up.
    if (next_ != index_.chunks.size() || image_out_ != index_.image_size) {
      return Error(Errc::ImageSizeMismatch, std::to_string(image_out_) +
                                                " image bytes verified, the index declares " +
                                                std::to_string(index_.image_size));
    }
    return Ok();
  }
  const auto expected = HexDecode(index_.image_sha256);
  if (!expected || !crypto::ConstantTimeEqual(state_->image_hash.Final(), *expected)) {
    return Error(Errc::ImageDigestMismatch, "image digest does not match the index");
  }
  return Ok();
}

}  // namespace upkeep::install
