#include "upkeep/install/image_installer.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

#include "process_defaults.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/install/slot.hpp"

namespace upkeep::install {

namespace {

using metadata::Json;

// Hands authenticated image chunks to a writer thread, which writes them, so that chunk
// authentication and decompression (this thread) overlap with writing. A fixed pool of chunk
// buffers bounds memory; the producer waits for a free one. Every `checkpoint_bytes` the writer
// asks a third thread to sync the slot and report how many leading chunks are durable, and goes on
// writing meanwhile (a sync covers everything written before it started; requests that pile up are
// merged).
class WritePipeline {
 public:
  // Errc::WriteFailed when the buffers or threads cannot be had.
  [[nodiscard]] static Result<std::unique_ptr<WritePipeline>> Create(
      SlotDevice& slot, std::size_t buffers, std::size_t buffer_size,
      std::uint64_t checkpoint_bytes, std::function<Result<void>(std::size_t)> on_checkpoint) {
    try {
      return std::make_unique<WritePipeline>(slot, buffers, buffer_size, checkpoint_bytes,
                                             std::move(on_checkpoint));
    } catch (const std::bad_alloc&) {
      return Error(Errc::WriteFailed, "no memory for " + std::to_string(buffers) +
                                          " write buffers of " + std::to_string(buffer_size) +
                                          " bytes");
    } catch (const std::system_error& e) {
      return Error(Errc::WriteFailed, std::string("cannot start the writer: ") + e.what());
    }
  }

  WritePipeline(SlotDevice& slot, std::size_t buffers, std::size_t buffer_size,
                std::uint64_t checkpoint_bytes,
                std::function<Result<void>(std::size_t)> on_checkpoint)
      : slot_(slot), checkpoint_bytes_(checkpoint_bytes), on_checkpoint_(std::move(on_checkpoint)) {
    // Page-aligned buffers, so that a block-device slot takes whole chunks without copying them
    // into the page cache (SlotDevice::WriteAt).
    const std::size_t rounded =
        (buffer_size + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment;
    for (std::size_t i = 0; i < std::clamp<std::size_t>(buffers, 1, kMaxBuffers); ++i) {
      free_.push_back(std::make_unique<Job>());
      free_.back()->data.reset(static_cast<char*>(std::aligned_alloc(kBufferAlignment, rounded)));
      // nothrow: caught by WritePipeline::Create, which returns WriteFailed
      if (!free_.back()->data) throw std::bad_alloc();
    }
    thread_ = std::thread([this] { Run(); });
    if (on_checkpoint_) {
      try {
        syncer_ = std::thread([this] { RunSyncs(); });
      } catch (...) {
        Stop();
        // nothrow: rethrown to WritePipeline::Create, which returns WriteFailed
        throw;
      }
    }
  }
  WritePipeline(const WritePipeline&) = delete;
  WritePipeline& operator=(const WritePipeline&) = delete;
  ~WritePipeline() { Stop(); }

  // Queues a copy of `data`, chunk `chunk` of the image, for writing at `offset`. Chunks must come
  // in image order.
  [[nodiscard]] Result<void> Submit(std::size_t chunk, std::uint64_t offset,
                                    std::span<const char> data) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return error_ || !free_.empty(); });
    if (error_) return *error_;
    auto job = std::move(free_.front());
    free_.pop_front();
    lock.unlock();
    job->chunk = chunk;
    job->offset = offset;
    job->size = data.size();
    std::copy(data.begin(), data.end(), job->data.get());
    lock.lock();
    queue_.push_back(std::move(job));
    cv_.notify_all();
    return Ok();
  }

  // Waits until everything queued is written, then syncs the slot.
  [[nodiscard]] Result<void> Drain() {
    std::unique_lock lock(mu_);
    cv_.wait(lock,
             [&] { return error_ || (queue_.empty() && !busy_ && !sync_request_ && !syncing_); });
    if (error_) return *error_;
    lock.unlock();
    return slot_.Sync();
  }

 private:
  static constexpr std::size_t kBufferAlignment = 4096;
  static constexpr std::size_t kMaxBuffers = 16;
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  struct Job {
    std::unique_ptr<char[], Free> data;
    std::size_t size = 0;
    std::size_t chunk = 0;
    std::uint64_t offset = 0;
  };

  void Stop() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    if (syncer_.joinable()) syncer_.join();
  }

  void Run() {
    std::uint64_t since_sync = 0;
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;
      auto job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      lock.unlock();
      const std::span<const char> data(job->data.get(), job->size);
      const Result<void> r = slot_.WriteAt(job->offset, data);
      since_sync += job->size;
      lock.lock();
      if (r && on_checkpoint_ && since_sync >= checkpoint_bytes_) {
        since_sync = 0;
        sync_request_ = job->chunk + 1;
      }
      busy_ = false;
      if (!r && !error_) error_ = r.error();
      free_.push_back(std::move(job));
      cv_.notify_all();
    }
  }

  void RunSyncs() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || sync_request_; });
      if (stop_) return;
      const std::size_t durable = *sync_request_;
      sync_request_.reset();
      syncing_ = true;
      lock.unlock();
      auto r = slot_.Sync();
      if (r) r = on_checkpoint_(durable);
      lock.lock();
      syncing_ = false;
      if (!r && !error_) error_ = r.error();
      cv_.notify_all();
    }
  }

  SlotDevice& slot_;
  const std::uint64_t checkpoint_bytes_;
  const std::function<Result<void>(std::size_t)> on_checkpoint_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Job>> free_;    // guarded by mu_
  std::deque<std::unique_ptr<Job>> queue_;   // guarded by mu_
  bool busy_ = false;                        // guarded by mu_: the writer holds a job
  bool stop_ = false;                        // guarded by mu_
  std::optional<Error> error_;               // guarded by mu_: first write or sync failure
  std::optional<std::size_t> sync_request_;  // guarded by mu_: durable count once synced
  bool syncing_ = false;                     // guarded by mu_
  std::thread thread_;
  std::thread syncer_;
};

bool Retryable(const Error& e) {
  return e.code() == common::Errc::NetworkError || e.code() == common::Errc::Timeout ||
         e.code() == common::Errc::HttpStatus || e.code() == common::Errc::IoError;
}

void Emit(const ImageInstallOptions& o, const char* id, std::string message, Json data) {
  if (o.on_event) o.on_event(Event{id, std::move(message), std::move(data)});
}

// Where each chunk's content can be found on the active slot (chunk-aligned offsets), by content
// digest. Costs one sequential read of the scanned part of the active slot.
Result<std::map<Sha256Digest, std::uint64_t>> ScanActiveSlot(const SlotDevice& active,
                                                             const ChunkIndex& index,
                                                             std::uint64_t scan_bytes,
                                                             std::vector<char>& buffer) {
  std::map<Sha256Digest, std::uint64_t> found;
  UPKEEP_ASSIGN_OR_RETURN(const std::uint64_t size, active.Size());
  const std::uint64_t limit = scan_bytes != 0 ? std::min(scan_bytes, size) : size;
  for (std::uint64_t off = 0; off + index.chunk_size <= limit; off += index.chunk_size) {
    UPKEEP_TRY(active.ReadAt(off, buffer));
    const auto digest = crypto::Sha256(std::string_view(buffer.data(), buffer.size()));
    Sha256Digest key{};
    std::copy_n(digest.begin(), key.size(), key.begin());
    found.emplace(key, off);
  }
  return found;
}

Result<ImageInstallReport> InstallImageChecked(const ChunkIndex& index, Fetcher& fetcher,
                                               const std::string& payload_url,
                                               const ImageInstallOptions& o);

}  // namespace

Result<ImageInstallReport> InstallImage(const ChunkIndex& index, Fetcher& fetcher,
                                        const std::string& payload_url,
                                        const ImageInstallOptions& o) {
  // Sizes below come from the index: bounded before any buffer is sized from them.
  UPKEEP_TRY(CheckChunkIndex(index));
  try {
    return InstallImageChecked(index, fetcher, payload_url, o);
  } catch (const std::bad_alloc&) {
    return Error(Errc::WriteFailed, "out of memory while installing");
  }
}

namespace {

Result<ImageInstallReport> InstallImageChecked(const ChunkIndex& index, Fetcher& fetcher,
                                               const std::string& payload_url,
                                               const ImageInstallOptions& o) {
  const Clock& clock = o.clock != nullptr ? *o.clock : ProcessClock();
  UPKEEP_ASSIGN_OR_RETURN(auto slot, SlotDevice::Open(o.target, true, o.target_capacity));
  if (index.image_size > slot.capacity()) {
    return Error(Errc::SlotTooSmall, "image of " + std::to_string(index.image_size) +
                                         " bytes does not fit " + o.target.string() + " (" +
                                         std::to_string(slot.capacity()) + " bytes)");
  }
  const auto chunk_bytes = static_cast<std::size_t>(index.chunk_size);
  const std::size_t n = index.chunks.size();
  ImageInstallReport report;
  report.image_size = index.image_size;
  std::vector<char> local;  // a chunk read from a slot; allocated only when needed

  UPKEEP_ASSIGN_OR_RETURN(auto pipe, WritePipeline::Create(slot, o.write_queue_depth, chunk_bytes,
                                                           o.checkpoint_bytes, o.on_checkpoint));
  // While the sink runs, current_chunk() is the chunk being handed out. Every chunk is proven by
  // the signed index as it is handed out; no second pass over the image.
  PayloadVerifier verifier(
      index,
      [&](std::span<const char> content) -> Result<void> {
        const std::size_t chunk = verifier.current_chunk();
        report.bytes_written += content.size();
        return pipe->Submit(chunk, chunk * index.chunk_size, content);
      },
      PayloadVerifier::ImageDigest::FromChunks);
  ImageProgress progress;
  progress.image_size = index.image_size;
  auto report_progress = [&] {
    progress.image_bytes = verifier.image_bytes_out();
    progress.downloaded_bytes = report.downloaded_bytes;
    progress.reused_bytes = report.reused_bytes;
    if (o.on_progress) o.on_progress(progress);
  };

  // 1. What an interrupted run already made durable is kept without being written again, as
  //    far as each chunk, read back now, still matches its content digest. The journal's count
  //    only says where to look: it proves nothing about the slot's bytes.
  for (std::size_t i = 0; i < std::min(o.start_chunk, n); ++i) {
    local.resize(static_cast<std::size_t>(index.chunks[i].size));
    if (!slot.ReadAt(i * index.chunk_size, local)) break;
    UPKEEP_ASSIGN_OR_RETURN(const bool kept, verifier.TryLocalChunk(local, false));
    if (!kept) break;
  }
  report.resumed_from_chunk = verifier.current_chunk();
  if (o.start_chunk > 0) {
    Emit(o, event::kInstallResumed,
         "resuming at chunk " + std::to_string(report.resumed_from_chunk) + " of " +
             std::to_string(n),
         {{"chunk", report.resumed_from_chunk}, {"chunks", n}});
  }

  // 2. Chunks the active slot already holds.
  std::map<Sha256Digest, std::uint64_t> reusable;
  std::optional<SlotDevice> active;
  const bool has_content_digests =
      std::all_of(index.chunks.begin(), index.chunks.end(),
                  [](const ChunkEntry& c) { return c.content_sha256.has_value(); });
  if (o.reuse_from && has_content_digests) {
    auto opened = SlotDevice::Open(*o.reuse_from, false);
    if (opened) {
      active.emplace(std::move(*opened));
      local.resize(chunk_bytes);
      auto scanned = ScanActiveSlot(*active, index, o.reuse_scan_bytes, local);
      if (scanned) reusable = std::move(*scanned);
    }
  }
  auto local_offset = [&](std::size_t i) -> std::optional<std::uint64_t> {
    if (!active) return std::nullopt;
    const ChunkEntry& c = index.chunks[i];
    if (auto it = reusable.find(*c.content_sha256); it != reusable.end()) return it->second;
    // A short last chunk is only looked for where it lies in the new image.
    if (c.size != index.chunk_size) return i * index.chunk_size;
    return std::nullopt;
  };

  // 3. Fetch runs of chunks, taking local ones in between.
  bool download_started = false;
  std::size_t first_reused = n;
  std::size_t i = verifier.current_chunk();
  while (i < n) {
    if (auto off = local_offset(i)) {
      const ChunkEntry& c = index.chunks[i];
      local.resize(static_cast<std::size_t>(c.size));
      bool taken = false;
      if (active->ReadAt(*off, local)) {
        UPKEEP_ASSIGN_OR_RETURN(taken, verifier.TryLocalChunk(local, true));
      }
      if (taken) {
        report.reused_bytes += c.length;
        ++report.reused_chunks;
        first_reused = std::min(first_reused, i);
        ++i;
        report_progress();
        continue;
      }
    }
    // The run ends before the next chunk the active slot is known to hold.
    std::size_t end = i + 1;
    while (end < n && !(index.chunks[end].content_sha256 &&
                        reusable.contains(*index.chunks[end].content_sha256))) {
      ++end;
    }
    const std::uint64_t run_end = index.chunks[end - 1].offset + index.chunks[end - 1].length;
    unsigned attempts = 0;
    while (verifier.current_chunk() < end) {
      const std::uint64_t from = verifier.payload_offset();
      if (!download_started || attempts > 0) {
        Emit(o, download_started ? event::kDownloadResumed : event::kDownloadStarted,
             (download_started ? "resuming payload download at byte "
                               : "downloading payload from byte ") +
                 std::to_string(from),
             {{"offset", from}, {"payload_size", index.payload_size}, {"url", payload_url}});
        download_started = true;
      }
      auto r = fetcher.FetchRange(payload_url, from, run_end - from,
                                  [&](std::span<const char> piece) -> Result<void> {
                                    report.downloaded_bytes += piece.size();
                                    const std::size_t before = verifier.current_chunk();
                                    UPKEEP_TRY(verifier.Feed(piece));
                                    if (verifier.current_chunk() != before) report_progress();
                                    return Ok();
                                  });
      if (verifier.failed()) {
        if (r) r = Error(Errc::ChunkDigestMismatch, "payload rejected");  // a fetcher hid it
        const std::size_t bad = verifier.current_chunk();
        Emit(o, event::kChunkRejected,
             "chunk " + std::to_string(bad) + " rejected: " + r.error().message(),
             {{"chunk", bad},
              {"offset", bad < n ? index.chunks[bad].offset : index.payload_size},
              {"error", r.error().ToString()}});
        return r.error();
      }
      if (r && verifier.current_chunk() >= end) break;
      if (!r && !Retryable(r.error())) {
        return Error(Errc::DownloadFailed, r.error().ToString()).WithContext(payload_url);
      }
      if (++attempts > o.max_resumes) {
        if (r) {
          return Error(Errc::PayloadTruncated, "payload ends at byte " +
                                                   std::to_string(verifier.payload_offset()) +
                                                   " of " + std::to_string(index.payload_size));
        }
        return Error(Errc::DownloadFailed, r.error().ToString()).WithContext(payload_url);
      }
      ++report.resumes;
      if (o.resume_delay.count() > 0) clock.SleepFor(o.resume_delay);
    }
    i = verifier.current_chunk();
  }
  if (report.reused_chunks > 0) {
    Emit(o, event::kChunksReused,
         std::to_string(report.reused_chunks) + " chunks copied from the active slot",
         {{"chunks", report.reused_chunks},
          {"bytes_saved", report.reused_bytes},
          {"first", first_reused}});
  }

  // 4. Durable, complete (every chunk proven once, sizes adding up), and so the signed image.
  UPKEEP_TRY(pipe->Drain());
  UPKEEP_TRY(verifier.Finish());
  if (o.read_back) {
    slot.DropCache(0, index.image_size);
    UPKEEP_ASSIGN_OR_RETURN(const std::string digest, DigestSlot(o.target, index.image_size));
    if (digest != index.image_sha256) {
      return Error(Errc::ReadBackMismatch, o.target.string() + " does not read back the image");
    }
  }
  Emit(o, event::kImageVerified, "image written and verified",
       {{"image_size", index.image_size},
        {"image_sha256", index.image_sha256},
        {"read_back", o.read_back}});
  report_progress();
  return report;
}

}  // namespace

Result<std::string> DigestSlot(const std::filesystem::path& path, std::uint64_t length) {
  UPKEEP_ASSIGN_OR_RETURN(const auto slot, SlotDevice::Open(path, false));
  crypto::Hasher hash(crypto::HashAlgorithm::Sha256);
  std::vector<char> buffer(1 << 20);
  for (std::uint64_t done = 0; done < length;) {
    const auto take =
        static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), length - done));
    UPKEEP_TRY(slot.ReadAt(done, std::span<char>(buffer.data(), take)));
    hash.Update(std::string_view(buffer.data(), take));
    done += take;
  }
  return HexEncode(hash.Final());
}

}  // namespace upkeep::install
