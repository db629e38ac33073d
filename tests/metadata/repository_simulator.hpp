#pragma once

// RepositorySimulator: builds and signs a TUF repository in memory so tests can start from a good
// repository and mutate one thing. Signed bodies are plain JSON the test edits directly; Publish()
// signs them and lays the files out the way a static web server would serve them.

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "memory_fetcher.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/metadata/model.hpp"

namespace upkeep::testing {

using metadata::Json;

class RepositorySimulator {
 public:
  static constexpr const char* kMetadataUrl = "https://repo.test/metadata/";
  static constexpr const char* kTargetsUrl = "https://repo.test/targets/";

  // A repository with one ed25519 key per top-level role, expiring 30 days after `now`.
  explicit RepositorySimulator(metadata::TimePoint now, bool consistent_snapshot = true);

  // Signed bodies, editable by tests.
  Json root;
  Json timestamp;
  Json snapshot;
  Json targets;
  std::map<std::string, Json> delegated;  // role name -> signed body
  // Keys that sign each role when published.
  std::map<std::string, std::vector<crypto::PrivateKey>> signers;
  // Write length and sha256 into timestamp/snapshot meta.
  bool meta_hashes_and_length = false;

  // Fresh key, listed in the TUF form in root "keys" and in roles[role].keyids, and added to the
  // role's signers.
  crypto::PrivateKey AddTopLevelKey(const std::string& role,
                                    crypto::KeyAlgorithm alg = crypto::KeyAlgorithm::Ed25519);
  // Replaces every key of a top-level role with one fresh key.
  crypto::PrivateKey RotateTopLevelKey(const std::string& role);
  // Adds a delegated role to `delegator` (top-level "targets" or a delegated role) with one fresh
  // key; `role_json` holds "name", "terminating", "paths" or "path_hash_prefixes".
  crypto::PrivateKey AddDelegation(const std::string& delegator, Json role_json);
  // Adds a target file to a targets role and serves its content.
  void AddTarget(const std::string& role, const std::string& path, const std::string& content);

  // Signs every role and lays out the files. A root whose version was not published yet is
  // published as <version>.root.json; earlier versions stay.
  void Publish();
  // Increments "version" of a role's signed body.
  void Bump(const std::string& role);

  // The envelope for a body signed by `keys`.
  static std::string Sign(const Json& body, const std::vector<crypto::PrivateKey>& keys);
  static Json KeyJson(const crypto::PrivateKey& key);
  static std::string KeyId(const crypto::PrivateKey& key);

  // Published root bytes by version (1-based).
  [[nodiscard]] const std::string& RootBytes(std::uint64_t version) const {
    return roots_.at(version);
  }
  // Files by URL; tests may replace or erase entries after Publish().
  std::map<std::string, std::string> files;
  // Serves `files` (replacing what the fetcher had).
  void ServeTo(MemoryFetcher& fetcher) const;
  // Writes `files` below `dir` as a web server would serve them (metadata/..., targets/...),
  // for clients that read a published repository directory.
  void WriteTo(const std::filesystem::path& dir) const;

  [[nodiscard]] std::string MetadataUrl(const std::string& role, std::uint64_t version) const;
  [[nodiscard]] bool consistent() const { return root["consistent_snapshot"].get<bool>(); }

 private:
  Json* Body(const std::string& role);
  std::map<std::uint64_t, std::string> roots_;
  std::map<std::string, std::string> target_contents_;  // path -> content
};

}  // namespace upkeep::testing
