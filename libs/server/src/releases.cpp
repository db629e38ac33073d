// Release import (campaigns.hpp): a published image repository is read with the device's own TUF
// client from the root the devices trust, and each named target's update metadata says which
// models it is for and whether it is a security update. The server stores what it verified.

#include <algorithm>
#include <map>
#include <set>

#include "names.hpp"
#include "upkeep/common/directory_fetcher.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/scratch_dir.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/metadata/update_metadata.hpp"
#include "upkeep/metadata/updater.hpp"
#include "upkeep/server/campaigns.hpp"
#include "upkeep/server/https_server.hpp"
#include "upkeep/transport/http_fetcher.hpp"

namespace upkeep::server {

namespace {

namespace fs = std::filesystem;


std::string_view Namespace(std::string_view path) {
  const auto slash = path.find('/');
  return slash == std::string_view::npos ? path : path.substr(0, slash);
}

// The verified targets, with their update metadata.
Result<std::vector<ReleaseTarget>> ReadTargets(const ImportOptions& o, const Clock& clock) {
  ScratchDir scratch("upkeep-import");
  if (scratch.path().empty()) {
    return Error(Errc::InvalidArgument, "cannot create a scratch directory");
  }
  LocalFilesystem local;
  UPKEEP_TRY(local.WriteFileAtomic(scratch.path() / "root.json", o.trusted_root));
  std::unique_ptr<Fetcher> fetcher;
  std::string metadata_url;
  if (o.repository.starts_with("https://") || o.repository.starts_with("http://")) {
    transport::HttpFetcherOptions http;
    if (!o.ca_pem.empty()) {
      UPKEEP_TRY(local.WriteFileAtomic(scratch.path() / "ca.pem", o.ca_pem));
      http.ca_file = (scratch.path() / "ca.pem").string();
    }
    fetcher = std::make_unique<transport::HttpFetcher>(http);
    metadata_url = o.repository;
    if (!metadata_url.ends_with('/')) metadata_url += '/';
    metadata_url += "metadata/";
  } else {
    fetcher = std::make_unique<DirectoryFetcher>(o.repository, local);
    metadata_url = DirectoryFetcher::kMetadataUrl;
  }
  // Its own directory for the trusted metadata, beside the CA file.
  const fs::path trusted = scratch.path() / "trusted";
  std::error_code ec;
  fs::create_directory(trusted, ec);
  if (ec) return Error(Errc::InvalidArgument, "cannot create " + trusted.string());
  UPKEEP_TRY(local.WriteFileAtomic(trusted / "root.json", o.trusted_root));
  metadata::Updater updater(trusted, metadata_url, *fetcher, local, clock);
  UPKEEP_TRY(updater.Refresh());
  std::vector<ReleaseTarget> out;
  for (const std::string& path : o.targets) {
    auto info = updater.GetTargetInfo(path);
    if (!info) return std::move(info).error().WithContext(path);
    auto meta = metadata::UpdateMetadataOf(*info);
    if (!meta) return std::move(meta).error().WithContext(path);
    auto sha = info->hashes.find("sha256");
    if (sha == info->hashes.end() || sha->second.size() != 64 || !IsLowerHex(sha->second)) {
      return Error(Errc::InvalidArgument, path + ": the image repository lists no sha256");
    }
    for (const std::string& hw : meta->hardware) {
      if (!IsValidName(hw, 64)) {
        return Error(Errc::InvalidArgument, path + ": hardware \"" + hw + "\" is not a model name");
      }
      out.push_back(ReleaseTarget{hw, path, info->length, sha->second, meta->version,
                                  meta->is_security});
    }
  }
  return out;
}

}  // namespace

Result<Release> ImportRelease(storage::Database& db, const Clock& clock,
                              const ImportOptions& options) {
  if (!IsValidName(options.name, 64)) return Error(Errc::InvalidArgument, "name: not valid");
  if (options.targets.empty()) return Error(Errc::InvalidArgument, "a release needs a target");
  if (options.targets.size() > 256) return Error(Errc::InvalidArgument, "too many targets");
  std::set<std::string> unique(options.targets.begin(), options.targets.end());
  if (unique.size() != options.targets.size()) {
    return Error(Errc::InvalidArgument, "a target is named twice");
  }
  UPKEEP_ASSIGN_OR_RETURN(std::vector<ReleaseTarget> targets, ReadTargets(options, clock));
  // One target per namespace and model: the director names one per namespace.
  std::set<std::pair<std::string, std::string>> seen;
  for (const ReleaseTarget& t : targets) {
    if (!seen.emplace(t.hardware, std::string(Namespace(t.path))).second) {
      return Error(Errc::InvalidArgument, "two targets of namespace " +
                                              std::string(Namespace(t.path)) + " for model " +
                                              t.hardware);
    }
  }
  std::sort(targets.begin(), targets.end(), [](const auto& a, const auto& b) {
    return std::tie(a.hardware, a.path) < std::tie(b.hardware, b.path);
  });
  Release release;
  release.id = options.name;
  release.security = std::all_of(targets.begin(), targets.end(),
                                 [](const ReleaseTarget& t) { return t.security; });
  release.source = options.repository;
  release.created_at = Seconds(clock.Now());
  release.targets = std::move(targets);
  auto stored = db.InTransaction([&](storage::Tx& tx) -> Result<void> {
    UPKEEP_ASSIGN_OR_RETURN(storage::Rows existing,
                            tx.Query("SELECT id FROM releases WHERE id = $1", {release.id}));
    if (!existing.empty()) return Error(Errc::Conflict, "release " + release.id + " exists");
    UPKEEP_ASSIGN_OR_RETURN(storage::Rows seq,
                            tx.Query("SELECT COALESCE(MAX(seq), 0) + 1 FROM releases"));
    if (seq.size() != 1) return Error(storage::Errc::InvalidQuery, "no release sequence");
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t next, seq[0].Get<std::int64_t>(0));
    UPKEEP_TRY(tx.Exec(
        "INSERT INTO releases (id, seq, security, source, created_at) VALUES ($1, $2, $3, $4, $5)",
        {release.id, next, std::int64_t{release.security ? 1 : 0}, release.source,
         release.created_at}));
    for (const ReleaseTarget& t : release.targets) {
      UPKEEP_TRY(tx.Exec(
          "INSERT INTO release_targets (release_id, hardware, target_path, length, sha256, "
          "version, security) VALUES ($1, $2, $3, $4, $5, $6, $7)",
          {release.id, t.hardware, t.path, static_cast<std::int64_t>(t.length), t.sha256,
           t.version, std::int64_t{t.security ? 1 : 0}}));
    }
    return Ok();
  });
  if (!stored) return std::move(stored).error();
  log::info("imported release {} ({} targets, {})", release.id, release.targets.size(),
            release.security ? "security" : "feature");
  return release;
}

Result<std::vector<Release>> ListReleases(storage::Database& db) {
  UPKEEP_ASSIGN_OR_RETURN(
      storage::Rows rows,
      db.Query("SELECT r.id, r.security, r.source, r.created_at, t.hardware, t.target_path, "
               "t.length, t.sha256, t.version, t.security FROM releases r JOIN release_targets t "
               "ON t.release_id = r.id ORDER BY r.seq, t.hardware, t.target_path"));
  std::vector<Release> out;
  for (const storage::Row& row : rows) {
    UPKEEP_ASSIGN_OR_RETURN(std::string id, row.Get<std::string>(0));
    if (out.empty() || out.back().id != id) {
      Release r;
      r.id = id;
      UPKEEP_ASSIGN_OR_RETURN(std::int64_t security, row.Get<std::int64_t>(1));
      r.security = security != 0;
      UPKEEP_ASSIGN_OR_RETURN(r.source, row.Get<std::string>(2));
      UPKEEP_ASSIGN_OR_RETURN(r.created_at, row.Get<std::int64_t>(3));
      out.push_back(std::move(r));
    }
    ReleaseTarget t;
    UPKEEP_ASSIGN_OR_RETURN(t.hardware, row.Get<std::string>(4));
    UPKEEP_ASSIGN_OR_RETURN(t.path, row.Get<std::string>(5));
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t length, row.Get<std::int64_t>(6));
    t.length = static_cast<std::uint64_t>(length);
    UPKEEP_ASSIGN_OR_RETURN(t.sha256, row.Get<std::string>(7));
    UPKEEP_ASSIGN_OR_RETURN(t.version, row.Get<std::string>(8));
    UPKEEP_ASSIGN_OR_RETURN(std::int64_t security, row.Get<std::int64_t>(9));
    t.security = security != 0;
    out.back().targets.push_back(std::move(t));
  }
  return out;
}

}  // namespace upkeep::server
