#pragma once

// TUF 1.0 metadata as typed values: parsed from untrusted bytes, edited, serialised and signed
// (the shape of python-tuf's Metadata API: from_bytes / to_bytes / sign).
//
// Parsing checks structure only (types, required fields, value ranges). Whether the metadata is
// signed, fresh and consistent is decided by TrustedMetadataSet (trusted_set.hpp), the one place
// that holds the client workflow's rules.
//
// Round trip: every object keeps the fields upkeep does not know (`unrecognized_fields`, at every
// level: envelope, "signed", keys, roles, meta and target entries, delegations), because
// signatures cover them. For parsed metadata m, Parse(m.ToBytes()) == m.
//
// Building and signing a role in code, e.g. per-device targets signed by a director:
//
//   auto targets = metadata::Targets::Create(clock.Now() + std::chrono::days(1));
//   targets.version = 7;
//   metadata::TargetFile file;
//   file.length = image_size;
//   file.hashes["sha256"] = image_sha256_hex;
//   file.custom = update_metadata_json;           // {"upkeep": {...}}, or null
//   targets.body.targets.emplace("fw/image-1.2.bin", std::move(file));
//   UPKEEP_TRY(targets.Sign(director_key));       // adds or replaces this key's signature
//   UPKEEP_ASSIGN_OR_RETURN(std::string bytes, targets.ToBytes());
//
// Any edit after Sign() invalidates the signatures: call ClearSignatures() and sign again.
// Target names and hash values are not checked here; ValidateTargetFile (below) does that.

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
  // The key object {"keytype", "scheme", "keyval": {"public"}} with the fields of `json` that
  // upkeep does not know.
  [[nodiscard]] Json ToJson() const;
  // The TUF key object of `key`, with its key ID (SHA-256 of the canonical key object).
  [[nodiscard]] static Key FromPublicKey(const crypto::PublicKey& key);

  bool operator==(const Key& other) const {
    return keyid == other.keyid && keytype == other.keytype && scheme == other.scheme &&
           public_value == other.public_value && ToJson() == other.ToJson();
  }

 private:
  mutable std::shared_ptr<const std::optional<crypto::PublicKey>> decoded_;
};
using KeyMap = std::map<std::string, Key, std::less<>>;

// Key IDs allowed to sign for a role, and how many distinct keys must.
struct RoleKeys {
  std::vector<std::string> keyids;
  std::uint64_t threshold = 1;
  Json unrecognized_fields = Json::object();

  bool operator==(const RoleKeys&) const = default;
};

struct Signature {
  std::string keyid;
  std::string sig_hex;
  Json unrecognized_fields = Json::object();

  bool operator==(const Signature&) const = default;
};

// Hashes by algorithm name ("sha256", ...), hex values.
using Hashes = std::map<std::string, std::string, std::less<>>;

// What a parent role says about a metadata file (timestamp -> snapshot, snapshot -> targets).
struct MetaFile {
  std::uint64_t version = 0;
  std::optional<std::uint64_t> length;
  std::optional<Hashes> hashes;
  Json unrecognized_fields = Json::object();

  bool operator==(const MetaFile&) const = default;
};

struct TargetFile {
  std::string path;
  std::uint64_t length = 0;
  Hashes hashes;
  Json custom;  // null when absent; upkeep's update metadata lives here
  Json unrecognized_fields = Json::object();

  bool operator==(const TargetFile&) const = default;
};

struct DelegatedRole {
  std::string name;
  RoleKeys keys;
  bool terminating = false;
  std::optional<std::vector<std::string>> paths;
  std::optional<std::vector<std::string>> path_hash_prefixes;
  Json unrecognized_fields = Json::object();

  bool operator==(const DelegatedRole&) const = default;

  // TUF "paths" (shell-style patterns matched per '/'-separated segment) or
  // "path_hash_prefixes" (prefixes of the hex SHA-256 of the target path).
  [[nodiscard]] bool IsDelegatedPath(std::string_view target_path) const;
};

// Succinct hash bin delegation (TAP 15): 2^bit_length bins named "<prefix>-<hex bin number>".
struct SuccinctRoles {
  RoleKeys keys;
  std::uint32_t bit_length = 1;
  std::string name_prefix;
  Json unrecognized_fields = Json::object();

  bool operator==(const SuccinctRoles&) const = default;

  [[nodiscard]] std::uint64_t NumberOfBins() const { return std::uint64_t{1} << bit_length; }
  [[nodiscard]] std::string RoleForTarget(std::string_view target_path) const;
  [[nodiscard]] bool IsDelegatedRole(std::string_view role_name) const;
};

struct Delegations {
  KeyMap keys;
  std::vector<DelegatedRole> roles;       // in order of appearance
  std::optional<SuccinctRoles> succinct;  // exclusive with roles
  Json unrecognized_fields = Json::object();

  bool operator==(const Delegations&) const = default;

  // Delegated roles that may hold `target_path`, in search order, with their terminating flag.
  [[nodiscard]] std::vector<std::pair<std::string, bool>> RolesForTarget(
      std::string_view target_path) const;
  // Keys and threshold for a delegated role name, or nullopt if this delegator does not delegate
  // it.
  [[nodiscard]] std::optional<RoleKeys> KeysFor(std::string_view role_name) const;
};

struct RootBody {
  static constexpr std::string_view kType = kRootRole;
  // Absent in the document reads as false (and stays absent when written back).
  std::optional<bool> consistent_snapshot = true;
  KeyMap keys;
  std::map<std::string, RoleKeys, std::less<>> roles;  // exactly root, timestamp, snapshot, targets

  [[nodiscard]] bool ConsistentSnapshot() const { return consistent_snapshot.value_or(false); }
  bool operator==(const RootBody&) const = default;
};

struct TimestampBody {
  static constexpr std::string_view kType = kTimestampRole;
  MetaFile snapshot_meta;            // meta["snapshot.json"]
  Json other_meta = Json::object();  // any other entries of "meta", kept as written

  bool operator==(const TimestampBody&) const = default;
};

struct SnapshotBody {
  static constexpr std::string_view kType = kSnapshotRole;
  std::map<std::string, MetaFile, std::less<>> meta;  // "targets.json", "<role>.json"

  bool operator==(const SnapshotBody&) const = default;
};

struct TargetsBody {
  static constexpr std::string_view kType = kTargetsRole;
  std::map<std::string, TargetFile, std::less<>> targets;
  std::optional<Delegations> delegations;

  bool operator==(const TargetsBody&) const = default;
};

// The spec version upkeep writes into metadata it creates.
inline constexpr std::string_view kSpecVersion = "1.0.31";

// A signed envelope: {"signed": {...}, "signatures": [...]}.
template <typename Body>
struct Metadata {
  std::string type;  // "_type"
  std::string spec_version;
  std::uint64_t version = 0;
  TimePoint expires{};
  Body body;
  std::vector<Signature> signatures;
  // The canonical JSON bytes that signatures cover: set by parsing and by Sign(), not updated by
  // edits to the fields above (CanonicalSigned() computes it from the fields).
  std::string canonical_signed;
  Json unrecognized_fields = Json::object();           // unknown keys of "signed"
  Json unrecognized_envelope_fields = Json::object();  // unknown keys beside "signed"

  // A new role with version 1, no signatures, the current spec version and `expires`.
  [[nodiscard]] static Metadata Create(TimePoint expires);

  [[nodiscard]] bool IsExpired(TimePoint reference_time) const { return reference_time >= expires; }

  // The "signed" object from the fields, including the unrecognized ones.
  [[nodiscard]] Json SignedToJson() const;
  // The envelope {"signed": ..., "signatures": [...]}.
  [[nodiscard]] Json ToJson() const;
  // The envelope as JSON text (one-space indent, sorted keys). Errc::InvalidMetadata when a
  // string is not valid UTF-8.
  [[nodiscard]] Result<std::string> ToBytes() const;
  // The canonical form of SignedToJson(): the bytes a signature covers.
  [[nodiscard]] Result<std::string> CanonicalSigned() const;
  // Signs the canonical form of "signed" with `key` and adds the signature, replacing an earlier
  // one by the same key ID. Also refreshes canonical_signed. Errors: NotCanonicalizable,
  // InvalidMetadata, and the key's signing errors (crypto::Errc).
  [[nodiscard]] Result<void> Sign(const crypto::PrivateKey& key);
  void ClearSignatures() { signatures.clear(); }

  bool operator==(const Metadata&) const = default;
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

// Errors of Parse* come from untrusted bytes; ToBytes() of a parsed object parses back equal.

// SHA-256 of the canonical form of a key object, lower-case hex.
[[nodiscard]] Result<std::string> ComputeKeyId(const Json& key_object);

// Checks that `signed_bytes` carries valid signatures from at least `role.threshold` distinct
// keys among `role.keyids` (looked up in `keys`). Each key counts once, however many key IDs or
// signatures name it. Fails with `failure_code` (ThresholdNotMet or a root-specific code).
[[nodiscard]] Result<void> VerifyThreshold(const KeyMap& keys, const RoleKeys& role,
                                           std::string_view signed_bytes,
                                           const std::vector<Signature>& signatures,
                                           Errc failure_code, std::string_view role_name);

// Target names and hash values reach file names and URLs (5.7.3 puts the hash into the URL), so
// both are checked before a target is used.
enum class TargetPathRules {
  // What a client accepts: not empty, no leading '/', no empty, "." or ".." segment, no control
  // character (< 0x20, 0x7f), valid UTF-8.
  kClient,
  // What a repository publishes: the client rules, and no '%', '?' or '#' (TUF clients differ in
  // how they put these into a URL: python-tuf and tuf-js unescaped, upkeep percent-encoded).
  kPublish,
};
// Errc::InvalidTargetPath.
[[nodiscard]] Result<void> ValidateTargetPath(std::string_view path,
                                              TargetPathRules rules = TargetPathRules::kClient);
// Errc::InvalidTargetHash unless `algorithm` is supported ("sha256", "sha512") and `value` is its
// digest in lower-case hex (64 or 128 digits).
[[nodiscard]] Result<void> ValidateHashValue(std::string_view algorithm, std::string_view value);
// The path rules, and ValidateHashValue for every hash of a supported algorithm (hashes of other
// algorithms are never used in a URL; verifying the download fails on them).
// Errc::InvalidTargetPath, Errc::InvalidTargetHash.
[[nodiscard]] Result<void> ValidateTargetFile(const TargetFile& target,
                                              TargetPathRules rules = TargetPathRules::kClient);
// The hash that names the target in a consistent-snapshot URL: the first valid value of a
// supported algorithm, or null when there is none.
[[nodiscard]] const std::string* UrlHash(const TargetFile& target);

// Checks bytes against a parent's length and hashes (absent fields are not checked).
[[nodiscard]] Result<void> VerifyMetaFile(const MetaFile& meta, std::string_view bytes,
                                          std::string_view role_name);

}  // namespace upkeep::metadata
