#pragma once

// TUF 1.0 metadata as typed values, parsed from untrusted bytes.
//
// Parsing checks structure only (types, required fields, value ranges). Whether the metadata is
// signed, fresh and consistent is decided by TrustedMetadataSet (trusted_set.hpp), the one place
// that holds the client workflow's rules. Every object keeps its JSON, so fields upkeep does not
// know are still covered by the signature check.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/result.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/metadata/canonical_json.hpp"

namespace upkeep::metadata {

using TimePoint = std::chrono::sys_seconds;

inline constexpr std::string_view kRootRole = "root";
inline constexpr std::string_view kTimestampRole = "timestamp";
inline constexpr std::string_view kSnapshotRole = "snapshot";
inline constexpr std::string_view kTargetsRole = "targets";

// Parses "YYYY-MM-DDTHH:MM:SSZ" (UTC) strictly.
[[nodiscard]] std::optional<TimePoint> ParseDateTime(std::string_view text);
[[nodiscard]] std::string FormatDateTime(TimePoint t);

// A key object. Keys of a type upkeep cannot use still parse (other keys may meet the threshold);
// PublicKey() is then null and signatures by that key never count. The key material is decoded
// on first use, so metadata listing many keys costs only for the keys that sign.
struct Key {
  std::string keyid;
  std::string keytype;
  std::string scheme;
  std::string public_value;  // keyval.public; empty when absent or not a string
  Json json;                 // the key object as written

  [[nodiscard]] const crypto::PublicKey* PublicKey() const;

 private:
  mutable std::shared_ptr<const std::optional<crypto::PublicKey>> decoded_;
};
using KeyMap = std::map<std::string, Key, std::less<>>;

// Key IDs allowed to sign for a role, and how many distinct keys must.
struct RoleKeys {
  std::vector<std::string> keyids;
  std::uint64_t threshold = 1;
};

struct Signature {
  std::string keyid;
  std::string sig_hex;
};

// Hashes by algorithm name ("sha256", ...), hex values.
using Hashes = std::map<std::string, std::string, std::less<>>;

// What a parent role says about a metadata file (timestamp -> snapshot, snapshot -> targets).
struct MetaFile {
  std::uint64_t version = 0;
  std::optional<std::uint64_t> length;
  std::optional<Hashes> hashes;
};

struct TargetFile {
  std::string path;
  std::uint64_t length = 0;
  Hashes hashes;
  Json custom;  // null when absent; upkeep's update metadata lives here
};

struct DelegatedRole {
  std::string name;
  RoleKeys keys;
  bool terminating = false;
  std::optional<std::vector<std::string>> paths;
  std::optional<std::vector<std::string>> path_hash_prefixes;

  // TUF "paths" (shell-style patterns matched per '/'-separated segment) or
  // "path_hash_prefixes" (prefixes of the hex SHA-256 of the target path).
  [[nodiscard]] bool IsDelegatedPath(std::string_view target_path) const;
};

// Succinct hash bin delegation (TAP 15): 2^bit_length bins named "<prefix>-<hex bin number>".
struct SuccinctRoles {
  RoleKeys keys;
  std::uint32_t bit_length = 1;
  std::string name_prefix;

  [[nodiscard]] std::uint64_t NumberOfBins() const { return std::uint64_t{1} << bit_length; }
  [[nodiscard]] std::string RoleForTarget(std::string_view target_path) const;
  [[nodiscard]] bool IsDelegatedRole(std::string_view role_name) const;
};

struct Delegations {
  KeyMap keys;
  std::vector<DelegatedRole> roles;        // in order of appearance
  std::optional<SuccinctRoles> succinct;   // exclusive with roles

  // Delegated roles that may hold `target_path`, in search order, with their terminating flag.
  [[nodiscard]] std::vector<std::pair<std::string, bool>> RolesForTarget(
      std::string_view target_path) const;
  // Keys and threshold for a delegated role name, or nullopt if this delegator does not delegate it.
  [[nodiscard]] std::optional<RoleKeys> KeysFor(std::string_view role_name) const;
};

struct RootBody {
  bool consistent_snapshot = false;
  KeyMap keys;
  std::map<std::string, RoleKeys, std::less<>> roles;  // exactly root, timestamp, snapshot, targets
};

struct TimestampBody {
  MetaFile snapshot_meta;  // meta["snapshot.json"]
};

struct SnapshotBody {
  std::map<std::string, MetaFile, std::less<>> meta;  // "targets.json", "<role>.json"
};

struct TargetsBody {
  std::map<std::string, TargetFile, std::less<>> targets;
  std::optional<Delegations> delegations;
};

// A signed envelope: {"signed": {...}, "signatures": [...]}.
template <typename Body>
struct Metadata {
  std::string type;          // "_type"
  std::string spec_version;
  std::uint64_t version = 0;
  TimePoint expires{};
  Body body;
  std::vector<Signature> signatures;
  std::string canonical_signed;  // the canonical JSON bytes that signatures cover

  [[nodiscard]] bool IsExpired(TimePoint reference_time) const { return reference_time >= expires; }
};

using Root = Metadata<RootBody>;
using Timestamp = Metadata<TimestampBody>;
using Snapshot = Metadata<SnapshotBody>;
using Targets = Metadata<TargetsBody>;

// Parse untrusted bytes. Errors: MalformedJson, InvalidMetadata, WrongType,
// UnsupportedSpecVersion, DuplicateSignature, KeyIdMismatch.
[[nodiscard]] Result<Root> ParseRoot(std::string_view bytes);
[[nodiscard]] Result<Timestamp> ParseTimestamp(std::string_view bytes);
[[nodiscard]] Result<Snapshot> ParseSnapshot(std::string_view bytes);
[[nodiscard]] Result<Targets> ParseTargets(std::string_view bytes);

// SHA-256 of the canonical form of a key object, lower-case hex.
[[nodiscard]] Result<std::string> ComputeKeyId(const Json& key_object);

// Checks that `signed_bytes` carries valid signatures from at least `role.threshold` distinct
// keys among `role.keyids` (looked up in `keys`). Each key counts once, however many key IDs or
// signatures name it. Fails with `failure_code` (ThresholdNotMet or a root-specific code).
[[nodiscard]] Result<void> VerifyThreshold(const KeyMap& keys, const RoleKeys& role,
                                           std::string_view signed_bytes,
                                           const std::vector<Signature>& signatures,
                                           Errc failure_code, std::string_view role_name);

// Checks bytes against a parent's length and hashes (absent fields are not checked).
[[nodiscard]] Result<void> VerifyMetaFile(const MetaFile& meta, std::string_view bytes,
                                          std::string_view role_name);

}  // namespace upkeep::metadata
