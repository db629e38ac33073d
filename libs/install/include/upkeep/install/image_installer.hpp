#pragma once

// The streaming image installer: payload bytes (from HTTP or an offline bundle, through a
// Fetcher) → authenticate each chunk against the signed chunk index → decompress → write to the
// inactive slot on a second thread → sync → check the whole image's digest → optionally read the
// slot back. Memory stays at a few chunks whatever the image size. The caller (the agent's flow)
// marks the slot bootable only after this returns success.
//
// Resuming: a dropped connection resumes at the byte it stopped (HTTP Range); an interrupted
// install (power cut, kill) resumes at the last checkpoint recorded through `on_checkpoint`, after
// re-reading and re-checking what is already on the slot. Chunks whose content the active slot
// already holds are copied locally instead of downloaded.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/fetcher.hpp"
#include "upkeep/common/result.hpp"
#include "upkeep/install/events.hpp"
#include "upkeep/install/payload.hpp"

namespace upkeep::install {

struct ImageProgress {
  std::uint64_t image_bytes = 0;       // image bytes written or accepted so far
  std::uint64_t image_size = 0;        // of the whole image
  std::uint64_t downloaded_bytes = 0;  // payload bytes fetched by this run
  std::uint64_t reused_bytes = 0;      // payload bytes not fetched thanks to local chunks
};

struct ImageInstallOptions {
  // The inactive slot: block device or file.
  std::filesystem::path target;
  // File slots only: the slot's size (0: no limit). Block devices report their own.
  std::uint64_t target_capacity = 0;
  // The active slot, to copy chunks it already holds (needs content digests in the index).
  std::optional<std::filesystem::path> reuse_from;
  // Bytes of the active slot worth scanning for reusable chunks (0: all of it).
  std::uint64_t reuse_scan_bytes = 0;
  // Chunks an earlier, interrupted run made durable (from the journal). They are read back and
  // hashed against their content digests (an index without content digests starts over); the
  // install continues at the first one that does not match.
  std::size_t start_chunk = 0;
  // Sync the slot and report progress through on_checkpoint about every this many bytes.
  std::uint64_t checkpoint_bytes = 64ull << 20;
  // Called from the writer thread after a sync with the number of leading chunks now durable.
  // An error stops the install.
  std::function<Result<void>(std::size_t durable_chunks)> on_checkpoint;
  // Called from the installing thread after each chunk.
  std::function<void(const ImageProgress&)> on_progress;
  EventSink on_event;
  // Resumes after a dropped or failed transfer, and the pause before each.
  unsigned max_resumes = 5;
  std::chrono::milliseconds resume_delay{500};
  // Waits out resume_delay (Clock::SleepFor); nullptr: the process-wide system clock.
  const Clock* clock = nullptr;
  // After syncing, drop the slot's cached pages and read the image back against its digest.
  bool read_back = false;
  // Decompressed chunks queued for the writer thread (each chunk_size bytes).
  std::size_t write_queue_depth = 2;
};

struct ImageInstallReport {
  std::uint64_t image_size = 0;
  std::uint64_t bytes_written = 0;     // image bytes written to the slot by this run
  std::uint64_t downloaded_bytes = 0;  // payload bytes fetched by this run
  std::uint64_t reused_bytes = 0;      // payload bytes saved by copying chunks locally
  std::size_t reused_chunks = 0;
  std::size_t resumed_from_chunk = 0;  // chunks kept from an interrupted run
  unsigned resumes = 0;                // transfers resumed after a drop
};

// How the installer proves the slot holds the signed image, with one SHA-256 pass over the
// payload (docs/formats/payload.md): every payload chunk is authenticated against the index before
// it is decompressed, and a zstd chunk must decompress to exactly its declared size; a chunk taken
// from the active slot, or kept from an interrupted run, is hashed as read against its
// content_sha256; chunks 0..n-1 are each written once, and their sizes add up to image_size.
// With read_back, the synced slot is then read again and compared with image_sha256.
//
// Installs the image described by `index` (already authenticated: a verified TUF target) from the
// payload at `payload_url`. Errors: InvalidChunkIndex for an inconsistent index (checked before
// anything is allocated), the verifier's (ChunkDigestMismatch, DecompressFailed,
// ChunkSizeMismatch, ImageSizeMismatch, TrailingData), PayloadTruncated when the payload ends
// early even after resuming, DownloadFailed when the transfer keeps failing, SlotUnavailable,
// SlotTooSmall, WriteFailed, ReadBackMismatch, or the checkpoint callback's own error.
[[nodiscard]] Result<ImageInstallReport> InstallImage(const ChunkIndex& index, Fetcher& fetcher,
                                                      const std::string& payload_url,
                                                      const ImageInstallOptions& options);

// SHA-256 (hex) of the first `length` bytes of a slot, read with the same bounded buffers.
[[nodiscard]] Result<std::string> DigestSlot(const std::filesystem::path& slot,
                                             std::uint64_t length);

}  // namespace upkeep::install
