#include "upkeep/install/bundle.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "process_defaults.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/directory_fetcher.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/scratch_dir.hpp"
#include "upkeep/common/paths.hpp"
#include "upkeep/common/unique_fd.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/json_reader.hpp"
#include "upkeep/metadata/updater.hpp"

namespace upkeep::install {

namespace fs = std::filesystem;
using metadata::Json;

namespace {

constexpr std::size_t kHeaderBytes = 16;  // magic + little-endian u64 TOC length

Error Malformed(const std::string& what) { return Error(Errc::BundleMalformed, what); }

Result<void> ReadAt(int fd, std::uint64_t offset, char* out, std::size_t n) {
  while (n > 0) {
    const ssize_t got = ::pread(fd, out, n, static_cast<off_t>(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return Malformed("bundle ends early");
    out += got;
    n -= static_cast<std::size_t>(got);
    offset += static_cast<std::uint64_t>(got);
  }
  return Ok();
}

bool IsSafeName(const std::string& name) { return DirectoryFetcher::IsRepositoryPath(name); }


}  // namespace

Result<Bundle> Bundle::Open(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Error(Errc::ReadFailed, path.string() + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return Error(Errc::ReadFailed, path.string());
  const auto file_size = static_cast<std::uint64_t>(st.st_size);

  char header[kHeaderBytes];
  if (file_size < kHeaderBytes) return Malformed("shorter than the bundle header");
  UPKEEP_TRY(ReadAt(fd.get(), 0, header, kHeaderBytes));
  if (std::memcmp(header, kBundleMagic, sizeof kBundleMagic) != 0) {
    return Malformed("not an upkeep bundle (bad magic)");
  }
  std::uint64_t toc_length = 0;
  for (int i = 7; i >= 0; --i) {
    toc_length = (toc_length << 8) | static_cast<unsigned char>(header[8 + i]);
  }
  if (toc_length == 0 || toc_length > kMaxBundleTocBytes || kHeaderBytes + toc_length > file_size) {
    return Malformed("table of contents length out of range");
  }
  std::string toc(static_cast<std::size_t>(toc_length), '\0');
  UPKEEP_TRY(ReadAt(fd.get(), kHeaderBytes, toc.data(), toc.size()));
  // The table of contents is read with the one typed JSON reader (metadata/json_reader.hpp).
  auto doc = metadata::ParseJson(toc);
  if (!doc) return Malformed("table of contents: " + doc.error().message());
  auto reader = metadata::JsonReader::Of(*doc, metadata::Errc::InvalidMetadata, "toc");
  if (!reader) return Malformed(reader.error().message());
  auto format = reader->Uint("format");
  if (!format || *format != 1) return Malformed("unsupported bundle format");
  auto entries = reader->Array("entries");
  if (!entries) return Malformed(entries.error().message());
  if (auto strict = reader->NoUnknownKeys(); !strict) return Malformed(strict.error().message());

  Bundle bundle;
  bundle.path_ = path;
  std::set<std::string> names;
  std::uint64_t offset = kHeaderBytes + toc_length;
  std::size_t i = 0;
  for (const auto& e : **entries) {
    auto r = metadata::JsonReader::Of(e, metadata::Errc::InvalidMetadata,
                                      "toc.entries[" + std::to_string(i++) + "]");
    if (!r) return Malformed(r.error().message());
    auto name = r->String("name");
    auto length = r->Uint("length");
    if (!name || !length) return Malformed("each entry needs a name and a length");
    if (auto strict = r->NoUnknownKeys(); !strict) return Malformed(strict.error().message());
    BundleEntry entry{*name, offset, *length};
    if (!IsSafeName(entry.name)) return Malformed("unsafe entry name \"" + entry.name + "\"");
    if (!names.insert(entry.name).second) return Malformed("entry listed twice: " + entry.name);
    if (entry.length > file_size - offset)
      return Malformed("entry " + entry.name + " ends past the file");
    offset += entry.length;
    bundle.entries_.push_back(std::move(entry));
  }
  if (offset != file_size) return Malformed("bytes after the last entry");
  return bundle;
}

const BundleEntry* Bundle::Find(std::string_view name) const {
  for (const auto& e : entries_) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

Result<void> BundleFetcher::Fetch(const std::string& url, std::uint64_t max_bytes,
                                  const Sink& sink) {
  UPKEEP_ASSIGN_OR_RETURN(const BundleEntry* entry, Lookup(url));
  if (entry->length > max_bytes) {
    return Error(common::Errc::LengthExceeded, url + ": more than " + std::to_string(max_bytes));
  }
  return Stream(*entry, 0, entry->length, sink);
}

Result<void> BundleFetcher::FetchRange(const std::string& url, std::uint64_t offset,
                                       std::uint64_t length, const Sink& sink) {
  UPKEEP_ASSIGN_OR_RETURN(const BundleEntry* entry, Lookup(url));
  if (offset >= entry->length) return Ok();
  return Stream(*entry, offset, std::min(length, entry->length - offset), sink);
}

Result<const BundleEntry*> BundleFetcher::Lookup(const std::string& url) const {
  constexpr std::string_view kScheme = "bundle:/";
  if (!url.starts_with(kScheme)) return Error(common::Errc::InvalidArgument, url);
  auto name = PercentDecode(std::string_view(url).substr(kScheme.size()));
  const BundleEntry* entry = name ? bundle_.Find(*name) : nullptr;
  if (entry == nullptr) return Error(common::Errc::RemoteNotFound, url + " is not in the bundle");
  return entry;
}

Result<void> BundleFetcher::Stream(const BundleEntry& entry, std::uint64_t offset,
                                   std::uint64_t length, const Sink& sink) {
  UniqueFd fd(::open(bundle_.path().c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return Error(common::Errc::IoError, bundle_.path().string());
  // Large reads, with the kernel reading ahead of them: an image payload streams from here at the
  // speed of the medium while the caller hashes what it already has.
  constexpr std::uint64_t kAhead = 32 << 20;  // how far ahead of the reader the kernel reads
  constexpr std::uint64_t kStep = 4 << 20;    // in requests of this size
  const std::uint64_t start = entry.offset + offset;
  (void)::posix_fadvise(fd.get(), static_cast<off_t>(start), static_cast<off_t>(length),
                        POSIX_FADV_SEQUENTIAL);
  std::vector<char> buf(std::min<std::uint64_t>(length, 1 << 20));
  std::uint64_t requested = 0;  // read-ahead asked for up to here
  for (std::uint64_t done = 0; done < length;) {
    while (requested < length && requested < done + kAhead) {
      const std::uint64_t step = std::min(kStep, length - requested);
      (void)::posix_fadvise(fd.get(), static_cast<off_t>(start + requested),
                            static_cast<off_t>(step), POSIX_FADV_WILLNEED);
      requested += step;
    }
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), length - done));
    if (!ReadAt(fd.get(), entry.offset + offset + done, buf.data(), n)) {
      return Error(common::Errc::IoError, bundle_.path().string() + " changed while reading");
    }
    UPKEEP_TRY(sink(std::span<const char>(buf.data(), n)));
    done += n;
  }
  return Ok();
}

Result<std::vector<BundleEntry>> CreateBundle(const fs::path& repo_dir,
                                              std::string_view trusted_root,
                                              const std::vector<std::string>& target_paths,
                                              const fs::path& out) {
  return CreateBundle(repo_dir, trusted_root, target_paths, out, ProcessFilesystem(),
                      ProcessClock());
}

Result<std::vector<BundleEntry>> CreateBundle(const fs::path& repo_dir,
                                              std::string_view trusted_root,
                                              const std::vector<std::string>& target_paths,
                                              const fs::path& out, Filesystem& local,
                                              const Clock& clock) {
  // Walk the repository with the device's client, recording each file it needs.
  ScratchDir scratch("upkeep-bundle");
  if (scratch.path().empty()) return Error(Errc::WriteFailed, "cannot create a scratch directory");
  UPKEEP_TRY(local.WriteFileAtomic(scratch.path() / "root.json", trusted_root));
  DirectoryFetcher fetcher(repo_dir, local);
  metadata::Updater updater(scratch.path(), DirectoryFetcher::kMetadataUrl, fetcher, local, clock);
  UPKEEP_TRY(updater.Refresh());
  for (const auto& target : target_paths) {
    UPKEEP_ASSIGN_OR_RETURN(auto info, updater.GetTargetInfo(target));
    UPKEEP_TRY(updater.DownloadTarget(info, DirectoryFetcher::kTargetsUrl, scratch.path()));
  }

  // Exactly what the client fetched: the roots after `trusted_root`, the current timestamp,
  // snapshot and targets, the delegations on the way to each target, and the targets. A device
  // that trusts `trusted_root` reads every byte of the bundle.
  const std::vector<std::string>& names = fetcher.fetched();
  std::error_code ec;
  Json entries = Json::array();
  std::vector<BundleEntry> result;
  for (const auto& name : names) {
    const auto size = fs::file_size(repo_dir / name, ec);
    if (ec) return Error(Errc::ReadFailed, (repo_dir / name).string() + ": " + ec.message());
    entries.push_back({{"length", size}, {"name", name}});
    result.push_back({name, 0, size});
  }
  auto canonical = metadata::Canonicalize(Json{{"entries", entries}, {"format", 1}});
  if (!canonical) return Error(Errc::WriteFailed, canonical.error().message());
  const std::string toc = std::move(*canonical);
  if (toc.size() > kMaxBundleTocBytes)
    return Error(Errc::WriteFailed, "too many files for one bundle");

  auto file = local.CreateAtomic(out);
  if (!file) return Error(Errc::WriteFailed, file.error().message());
  char header[kHeaderBytes];
  std::memcpy(header, kBundleMagic, sizeof kBundleMagic);
  for (int i = 0; i < 8; ++i) header[8 + i] = static_cast<char>((toc.size() >> (8 * i)) & 0xff);
  auto append = [&](std::span<const char> data) -> Result<void> {
    auto r = (*file)->Append(data);
    if (!r) return Error(Errc::WriteFailed, r.error().message());
    return Ok();
  };
  UPKEEP_TRY(append(std::span<const char>(header, kHeaderBytes)));
  UPKEEP_TRY(append(std::span<const char>(toc.data(), toc.size())));
  // Contents are streamed, so a bundle of multi-GiB images is built in constant memory.
  std::uint64_t offset = kHeaderBytes + toc.size();
  for (auto& entry : result) {
    entry.offset = offset;
    std::uint64_t copied = 0;
    auto read = local.ReadChunks(repo_dir / entry.name, [&](std::span<const char> piece) {
      copied += piece.size();
      return append(piece);
    });
    if (!read) return Error(Errc::ReadFailed, read.error().message());
    if (copied != entry.length)
      return Error(Errc::ReadFailed, entry.name + " changed while bundling");
    offset += entry.length;
  }
  if (auto r = (*file)->Commit(); !r) return Error(Errc::WriteFailed, r.error().message());
  return result;
}

}  // namespace upkeep::install
