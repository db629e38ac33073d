#pragma once

// A TUF image repository on the release engineer's machine (docs/repository.md): keys, staged
// metadata that collects signatures, and publishing to a directory any web server can serve.
//
//   REPO/repo.json           settings (expiry per role)
//   REPO/keys/<keyid>.pem    private keys kept here (0600; online keys must be here)
//   REPO/staged/<role>.json  signed envelopes, possibly still missing signatures
//   REPO/published-root.json the last published root (the trust a new root must chain from)
//   REPO/targets/<path>      target files added so far
//
// Every file is read with the typed metadata model (upkeep/metadata/model.hpp), edited as typed
// values and written with its serialiser. A hand-edited or corrupt file is reported as an error
// (NotARepository for repo.json, CorruptFile for staged metadata, the published root and key
// files), never by an exception.
//
// Root and targets are offline roles: a change clears their signatures, and `Sign` adds one key's
// signature at a time, so a threshold can be gathered from separate machines. Snapshot and
// timestamp are online roles, signed by Publish/Refresh with keys in REPO/keys.

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/result.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/metadata/model.hpp"

namespace upkeep::repository {

enum class Errc {
  AlreadyExists = 1,          // init over an existing repository
  NotARepository = 2,         // REPO/repo.json missing or invalid
  KeyFileInsecure = 3,        // a private key file readable by group or others
  KeyNotAuthorized = 4,       // the key is not one of the role's keys
  ThresholdNotMet = 5,        // a role to publish lacks signatures
  MissingOnlineKey = 6,       // no usable key for snapshot/timestamp in REPO/keys
  InvalidTarget = 7,          // bad target name or unreadable file
  InvalidUpdateMetadata = 8,  // the update metadata does not validate
  UnknownRole = 9,
  IoError = 10,
  InvalidDelegation = 11,  // bad role name, paths, or a role that already exists
  Expired = 12,            // a staged offline role would be published already expired
  CorruptFile = 13,        // staged metadata, the published root or a key file does not parse
  BadPassphrase = 14,      // an encrypted private key file cannot be decrypted
};

}  // namespace upkeep::repository

UPKEEP_DECLARE_ERRC(upkeep::repository);

namespace upkeep::repository {

// REPO/repo.json: the repository's settings, written by upkeep and read back strictly.
struct Settings {
  std::uint64_t format = 1;
  // Expiry periods in days for root, targets, snapshot, timestamp (delegated roles use targets').
  std::map<std::string, std::uint32_t, std::less<>> expiry_days;
  // The last published version of each role (0: never published).
  std::map<std::string, std::uint64_t, std::less<>> published;
  // Delegated role -> the role that delegates to it.
  std::map<std::string, std::string, std::less<>> delegations;
};
// Longest expiry period accepted (100 years); later dates do not fit TUF's date-time format.
inline constexpr std::uint32_t kMaxExpiryDays = 36500;
// Largest version accepted in repository files: every TUF client (JavaScript numbers included)
// reads it exactly, and the next version cannot overflow.
inline constexpr std::uint64_t kMaxVersion = (std::uint64_t{1} << 53) - 1;
// Errc::NotARepository for anything but the format Init writes: a JSON object with "format" 1,
// "expiry_days" (root, targets, snapshot, timestamp: 1..kMaxExpiryDays), "published" (the same
// roles and any delegated ones: 0..kMaxVersion), optional "delegations" (role -> delegator).
[[nodiscard]] Result<Settings> ParseSettings(std::string_view bytes);
[[nodiscard]] std::string SettingsToBytes(const Settings& settings);

struct InitOptions {
  crypto::KeyAlgorithm key_type = crypto::KeyAlgorithm::Ed25519;
  std::uint32_t root_keys = 1, root_threshold = 1;
  std::uint32_t targets_keys = 1, targets_threshold = 1;
  bool consistent_snapshot = true;
  // Expiry periods in days.
  std::uint32_t root_expiry_days = 365, targets_expiry_days = 90;
  std::uint32_t snapshot_expiry_days = 7, timestamp_expiry_days = 1;
  crypto::SecretString passphrase;  // encrypts the private key files when not empty
  // When set, the targets role gets this token-held key instead of generated ones (threshold 1).
  std::optional<crypto::Pkcs11KeyRef> targets_token_key;
};

struct RoleStatus {
  std::string role;
  std::uint64_t version = 0;
  std::uint64_t threshold = 0;
  std::uint64_t valid_signatures = 0;
  std::vector<std::string> missing_keyids;  // listed keys that have not signed
};

class Repository {
 public:
  // `fs` and `clock` must outlive the repository.
  [[nodiscard]] static Result<Repository> Init(const std::filesystem::path& dir,
                                               const InitOptions& options, Filesystem& fs,
                                               const Clock& clock);
  // Errors: NotARepository (repo.json missing or invalid), CorruptFile (a staged role).
  [[nodiscard]] static Result<Repository> Open(const std::filesystem::path& dir, Filesystem& fs,
                                               const Clock& clock,
                                               crypto::SecretString passphrase = {});

  // Adds (or replaces) a target with validated update metadata ({"upkeep": {...}}) in `role`
  // ("targets" or a delegated role whose paths cover `name`); the role then needs its threshold of
  // signatures again.
  [[nodiscard]] Result<void> AddTarget(const std::filesystem::path& file, const std::string& name,
                                       const metadata::Json& custom,
                                       const std::string& role = "targets");
  [[nodiscard]] Result<void> RemoveTarget(const std::string& name,
                                          const std::string& role = "targets");

  struct Delegation {
    std::string name;
    std::string delegator = "targets";
    std::vector<std::string> paths;          // shell-style patterns, or
    std::vector<std::string> hash_prefixes;  // prefixes of the hex SHA-256 of target paths, or
    std::uint32_t bin_bits = 0;  // > 0: succinct hash bins "<name>-<hex>", 2^bin_bits roles
                                 // sharing one key set (TAP 15), for large catalogues
    bool terminating = false;
    std::uint32_t keys = 1, threshold = 1;
    crypto::KeyAlgorithm key_type = crypto::KeyAlgorithm::Ed25519;
  };
  // Delegates to a new role with fresh keys (saved in REPO/keys); the delegator must be signed
  // again. Returns the new key IDs. For hash bins, AddTarget/Sign accept the bin prefix as the
  // role: a target goes to the bin its path hashes to, and Sign signs every bin.
  [[nodiscard]] Result<std::vector<std::string>> Delegate(const Delegation& d);
  // Stages a new root version that changes `role`'s keys: adds `add_keys` fresh keys (saved in
  // REPO/keys), removes `remove_keyids`, and sets the threshold when given. The new root must then
  // be signed by the threshold of the last published root and by its own. Rotating the timestamp
  // or snapshot keys also revokes a compromised online key; devices recover from any versions it
  // signed (TUF 5.3.11).
  [[nodiscard]] Result<std::vector<std::string>> Rotate(
      const std::string& role, std::uint32_t add_keys,
      const std::vector<std::string>& remove_keyids, std::optional<std::uint32_t> threshold,
      crypto::KeyAlgorithm key_type);
  // Adds the signature of the key in `key_file` to the staged `role` (root or targets). For root,
  // keys of the last published root may sign too (continuity across a rotation).
  [[nodiscard]] Result<void> Sign(const std::string& role, const std::filesystem::path& key_file);
  // The same with a key already loaded (e.g. from a PKCS#11 token).
  [[nodiscard]] Result<void> SignWith(const std::string& role, const crypto::PrivateKey& key);
  [[nodiscard]] Result<std::vector<RoleStatus>> Status() const;
  // Signs snapshot and timestamp with the online keys and writes a consistent-snapshot layout to
  // `out`: new versioned files first, timestamp.json last (atomic replace), old versions kept.
  [[nodiscard]] Result<void> Publish(const std::filesystem::path& out);

 private:
  Repository(std::filesystem::path dir, Filesystem& fs, const Clock& clock)
      : dir_(std::move(dir)), fs_(&fs), clock_(&clock) {}
  [[nodiscard]] Result<void> Load();
  [[nodiscard]] Result<void> Save(const std::string& role);
  [[nodiscard]] Result<crypto::PrivateKey> LoadKey(const std::filesystem::path& file) const;
  [[nodiscard]] Result<std::vector<crypto::PrivateKey>> OnlineKeys(const std::string& role) const;
  [[nodiscard]] metadata::TimePoint Expiry(const std::string& role) const;
  [[nodiscard]] Result<RoleStatus> StatusOf(const std::string& role) const;
  // Keys and threshold that sign a targets role: root's for "targets", the delegator's otherwise.
  [[nodiscard]] Result<std::pair<metadata::KeyMap, metadata::RoleKeys>> SignersOf(
      const std::string& role) const;
  [[nodiscard]] std::vector<std::string> TargetsRoles() const;  // "targets" then delegated
  [[nodiscard]] Result<void> SaveSettings();
  // Writes a new private key file (0600 from the first byte) for `key` in REPO/keys.
  [[nodiscard]] Result<void> WriteKey(const crypto::PrivateKey& key, const std::string& keyid);
  // The last published root, if any. CorruptFile when it does not parse.
  [[nodiscard]] Result<std::optional<metadata::Root>> PublishedRoot() const;
  [[nodiscard]] metadata::Targets& TargetsRole(const std::string& role) {
    return targets_.at(role);
  }
  [[nodiscard]] bool HasTargetsRole(const std::string& role) const {
    return targets_.contains(role);
  }
  void Restage(const std::string& role);  // new version, fresh expiry, no signatures
  // The succinct hash bins delegated under `prefix`, if `prefix` names some.
  [[nodiscard]] std::optional<metadata::SuccinctRoles> BinsNamed(const std::string& prefix) const;
  // Checks the staged root against the last published root's root threshold (TUF 5.3.4).
  [[nodiscard]] Result<void> CheckRootContinuity() const;

  std::filesystem::path dir_;
  Filesystem* fs_;
  const Clock* clock_;
  crypto::SecretString passphrase_;
  Settings settings_;
  metadata::Root root_;                               // staged root
  std::map<std::string, metadata::Targets> targets_;  // staged "targets" and delegated roles
};

}  // namespace upkeep::repository
