#include "upkeep/metadata/model.hpp"

#include <algorithm>
#include <cstdio>
#include <initializer_list>
#include <mutex>
#include <set>

#include "upkeep/common/encoding.hpp"
#include "upkeep/metadata/json_reader.hpp"

namespace upkeep::metadata {

namespace {

constexpr Errc kInvalid = Errc::InvalidMetadata;
// TUF metadata allows empty strings (a key ID, a path pattern); upkeep's own rules check names.
constexpr StringRules kAnyString{.allow_empty = true};
constexpr UintRange kPositive{.min = 1};

Error Invalid(const std::string& where, const std::string& what) {
  return Error(kInvalid, where + ": " + what);
}

// Adds the kept unknown members to `out` (known members already set win).
void AddUnrecognized(Json& out, const Json& unrecognized) {
  if (!unrecognized.is_object()) return;
  for (auto it = unrecognized.begin(); it != unrecognized.end(); ++it) {
    // nothrow: an object iterator's value, not an optional
    if (!out.contains(it.key())) out[it.key()] = it.value();
  }
}

Result<Hashes> ParseHashes(const Json& v, const std::string& path) {
  if (!v.is_object() || v.empty()) return Invalid(path, "must be a non-empty object");
  Hashes out;
  for (const auto& [alg, digest] : v.items()) {
    if (!digest.is_string()) return Invalid(path + "." + alg, "must be a string");
    out.emplace(alg, digest.get<std::string>());
  }
  return out;
}

// The "keys" member of `parent`: key ID -> key object.
Result<KeyMap> ParseKeys(JsonReader& parent) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader keys, parent.Object("keys"));
  KeyMap out;
  for (const auto& [keyid, unused] : keys.json().items()) {
    UPKEEP_ASSIGN_OR_RETURN(JsonReader k, keys.Object(keyid));
    Key key;
    key.keyid = keyid;
    UPKEEP_ASSIGN_OR_RETURN(key.keytype, k.String("keytype", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(key.scheme, k.String("scheme", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(JsonReader keyval, k.Object("keyval"));
    // A key without a usable "public" still parses; it can never sign (Key::PublicKey is null).
    if (const Json* pub = keyval.Optional("public"); pub != nullptr && pub->is_string()) {
      key.public_value = pub->get<std::string>();
    }
    key.json = k.json();  // kept whole: its canonical form is the key ID
    out.emplace(keyid, std::move(key));
  }
  return out;
}

// "keyids" and "threshold" of a role object; the caller keeps the object's other members.
Result<RoleKeys> ParseRoleKeys(JsonReader& role) {
  RoleKeys out;
  UPKEEP_ASSIGN_OR_RETURN(out.keyids,
                          role.Strings("keyids", {.allow_empty_strings = true, .unique = true}));
  UPKEEP_ASSIGN_OR_RETURN(out.threshold, role.Uint("threshold", kPositive));
  return out;
}

Result<MetaFile> ParseMetaFile(JsonReader& meta, std::string_view name) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader v, meta.Object(name));
  MetaFile out;
  UPKEEP_ASSIGN_OR_RETURN(out.version, v.Uint("version", kPositive));
  UPKEEP_ASSIGN_OR_RETURN(out.length, v.OptionalUint("length"));
  if (const Json* hashes = v.Optional("hashes"); hashes != nullptr) {
    UPKEEP_ASSIGN_OR_RETURN(out.hashes, ParseHashes(*hashes, v.Path("hashes")));
  }
  out.unrecognized_fields = v.Unrecognized();
  return out;
}

bool IsTopLevelRole(std::string_view name) {
  return name == kRootRole || name == kTimestampRole || name == kSnapshotRole ||
         name == kTargetsRole;
}

Result<RootBody> ParseRootBody(JsonReader& s) {
  RootBody out;
  UPKEEP_ASSIGN_OR_RETURN(out.consistent_snapshot, s.OptionalBool("consistent_snapshot"));
  UPKEEP_ASSIGN_OR_RETURN(out.keys, ParseKeys(s));
  UPKEEP_ASSIGN_OR_RETURN(JsonReader roles, s.Object("roles"));
  for (const auto& [name, unused] : roles.json().items()) {
    if (!IsTopLevelRole(name)) return roles.Fail(name, "unknown role");
    UPKEEP_ASSIGN_OR_RETURN(JsonReader role, roles.Object(name));
    UPKEEP_ASSIGN_OR_RETURN(auto keys, ParseRoleKeys(role));
    keys.unrecognized_fields = role.Unrecognized();
    out.roles.emplace(name, std::move(keys));
  }
  if (out.roles.size() != 4) {
    return Invalid(roles.path(), "must define root, timestamp, snapshot and targets");
  }
  return out;
}

Result<TimestampBody> ParseTimestampBody(JsonReader& s) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader meta, s.Object("meta"));
  if (!meta.json().contains("snapshot.json")) return meta.Fail("snapshot.json", "missing");
  TimestampBody out;
  UPKEEP_ASSIGN_OR_RETURN(out.snapshot_meta, ParseMetaFile(meta, "snapshot.json"));
  out.other_meta = meta.Unrecognized();
  return out;
}

Result<SnapshotBody> ParseSnapshotBody(JsonReader& s) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader meta, s.Object("meta"));
  SnapshotBody out;
  for (const auto& [name, unused] : meta.json().items()) {
    UPKEEP_ASSIGN_OR_RETURN(auto mf, ParseMetaFile(meta, name));
    out.meta.emplace(name, std::move(mf));
  }
  return out;
}

Result<DelegatedRole> ParseDelegatedRole(JsonReader& r, std::set<std::string, std::less<>>& names) {
  DelegatedRole role;
  UPKEEP_ASSIGN_OR_RETURN(role.name, r.String("name", kAnyString));
  if (IsTopLevelRole(role.name)) return r.Fail("name", "a top-level role cannot be delegated");
  if (!names.insert(role.name).second) return r.Fail("name", "role listed twice");
  UPKEEP_ASSIGN_OR_RETURN(role.keys, ParseRoleKeys(r));
  UPKEEP_ASSIGN_OR_RETURN(role.terminating, r.Bool("terminating"));
  const bool has_paths = r.Optional("paths") != nullptr;
  const bool has_prefixes = r.Optional("path_hash_prefixes") != nullptr;
  if (has_paths == has_prefixes) {
    return Invalid(r.path(), "exactly one of \"paths\" and \"path_hash_prefixes\" must be set");
  }
  if (has_paths) {
    UPKEEP_ASSIGN_OR_RETURN(role.paths, r.Strings("paths", {.allow_empty_strings = true}));
  } else {
    UPKEEP_ASSIGN_OR_RETURN(role.path_hash_prefixes,
                            r.Strings("path_hash_prefixes", {.allow_empty_strings = true}));
  }
  role.unrecognized_fields = r.Unrecognized();
  return role;
}

Result<Delegations> ParseDelegations(JsonReader& d) {
  Delegations out;
  UPKEEP_ASSIGN_OR_RETURN(out.keys, ParseKeys(d));
  const Json* roles = d.Optional("roles");
  const Json* succinct = d.Optional("succinct_roles");
  if ((roles == nullptr) == (succinct == nullptr)) {
    return Invalid(d.path(), "exactly one of \"roles\" and \"succinct_roles\" must be present");
  }
  if (roles != nullptr) {
    if (!roles->is_array()) return d.Fail("roles", "must be an array");
    std::set<std::string, std::less<>> names;
    for (std::size_t i = 0; i < roles->size(); ++i) {
      const std::string at = d.Path("roles") + "[" + std::to_string(i) + "]";
      UPKEEP_ASSIGN_OR_RETURN(JsonReader r, JsonReader::Of((*roles)[i], kInvalid, at));
      UPKEEP_ASSIGN_OR_RETURN(auto role, ParseDelegatedRole(r, names));
      out.roles.push_back(std::move(role));
    }
  } else {
    UPKEEP_ASSIGN_OR_RETURN(JsonReader sr, d.Object("succinct_roles"));
    SuccinctRoles s;
    UPKEEP_ASSIGN_OR_RETURN(s.keys, ParseRoleKeys(sr));
    UPKEEP_ASSIGN_OR_RETURN(std::uint64_t bits, sr.Uint("bit_length", {.min = 1, .max = 32}));
    s.bit_length = static_cast<std::uint32_t>(bits);
    UPKEEP_ASSIGN_OR_RETURN(s.name_prefix, sr.String("name_prefix", kAnyString));
    s.unrecognized_fields = sr.Unrecognized();
    out.succinct = std::move(s);
  }
  out.unrecognized_fields = d.Unrecognized();
  return out;
}

Result<TargetsBody> ParseTargetsBody(JsonReader& s) {
  TargetsBody out;
  UPKEEP_ASSIGN_OR_RETURN(JsonReader targets, s.Object("targets"));
  for (const auto& [path, unused] : targets.json().items()) {
    UPKEEP_ASSIGN_OR_RETURN(JsonReader t, targets.Object(path));
    TargetFile file;
    file.path = path;
    UPKEEP_ASSIGN_OR_RETURN(file.length, t.Uint("length"));
    UPKEEP_ASSIGN_OR_RETURN(const Json* hashes, t.Required("hashes"));
    UPKEEP_ASSIGN_OR_RETURN(file.hashes, ParseHashes(*hashes, t.Path("hashes")));
    const Json* custom = t.Optional("custom");
    file.unrecognized_fields = t.Unrecognized();
    if (custom != nullptr) {
      // An explicit "custom": null stays among the unrecognized fields, so it is written back.
      if (custom->is_null()) file.unrecognized_fields["custom"] = nullptr;
      file.custom = *custom;
    }
    out.targets.emplace(path, std::move(file));
  }
  UPKEEP_ASSIGN_OR_RETURN(auto delegations, s.OptionalObject("delegations"));
  if (delegations) {
    UPKEEP_ASSIGN_OR_RETURN(out.delegations, ParseDelegations(*delegations));
  }
  return out;
}

bool SpecVersionSupported(const std::string& v) {
  // "MAJOR.MINOR" or "MAJOR.MINOR.PATCH", digits only, MAJOR == 1.
  std::vector<std::string> parts(1);
  for (char c : v) {
    if (c == '.') {
      parts.emplace_back();
    } else if (c >= '0' && c <= '9') {
      parts.back().push_back(c);
    } else {
      return false;
    }
  }
  if (parts.size() < 2 || parts.size() > 3) return false;
  for (const auto& p : parts) {
    if (p.empty()) return false;
  }
  return parts[0] == "1";
}

template <typename Body, typename BodyParser>
Result<Metadata<Body>> ParseEnvelope(std::string_view bytes, std::string_view expected_type,
                                     BodyParser parse_body) {
  UPKEEP_ASSIGN_OR_RETURN(Json doc, ParseJson(bytes));
  const std::string where(expected_type);
  UPKEEP_ASSIGN_OR_RETURN(JsonReader envelope, JsonReader::Of(doc, kInvalid, where));
  UPKEEP_ASSIGN_OR_RETURN(const Json* sigs, envelope.Array("signatures"));
  UPKEEP_ASSIGN_OR_RETURN(JsonReader s, envelope.Object("signed"));

  Metadata<Body> md;
  UPKEEP_ASSIGN_OR_RETURN(md.type, s.String("_type", kAnyString));
  if (md.type != expected_type) {
    return Error(Errc::WrongType, "expected \"" + where + "\" metadata, got \"" + md.type + "\"");
  }
  UPKEEP_ASSIGN_OR_RETURN(md.spec_version, s.String("spec_version", kAnyString));
  if (!SpecVersionSupported(md.spec_version)) {
    return Error(Errc::UnsupportedSpecVersion,
                 where + ": spec_version \"" + md.spec_version + "\" is not 1.x");
  }
  UPKEEP_ASSIGN_OR_RETURN(md.version, s.Uint("version", kPositive));
  UPKEEP_ASSIGN_OR_RETURN(std::string expires, s.String("expires", kAnyString));
  auto when = ParseDateTime(expires);
  if (!when) return s.Fail("expires", "is not YYYY-MM-DDTHH:MM:SSZ: " + expires);
  md.expires = *when;

  std::set<std::string, std::less<>> seen;
  for (std::size_t i = 0; i < sigs->size(); ++i) {
    const std::string at = envelope.Path("signatures") + "[" + std::to_string(i) + "]";
    UPKEEP_ASSIGN_OR_RETURN(JsonReader sig, JsonReader::Of((*sigs)[i], kInvalid, at));
    Signature out;
    UPKEEP_ASSIGN_OR_RETURN(out.keyid, sig.String("keyid", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(out.sig_hex, sig.String("sig", kAnyString));
    out.unrecognized_fields = sig.Unrecognized();
    if (!seen.insert(out.keyid).second) {
      return Error(Errc::DuplicateSignature, where + ": two signatures by key " + out.keyid);
    }
    md.signatures.push_back(std::move(out));
  }
  UPKEEP_ASSIGN_OR_RETURN(md.canonical_signed, Canonicalize(s.json()));
  UPKEEP_ASSIGN_OR_RETURN(md.body, parse_body(s));
  md.unrecognized_fields = s.Unrecognized();
  md.unrecognized_envelope_fields = envelope.Unrecognized();
  return md;
}

// Python fnmatch semantics for one path segment: '*', '?', "[seq]", "[!seq]".
bool MatchSegment(std::string_view text, std::string_view pattern) {
  std::size_t t = 0, p = 0;
  std::size_t star_p = std::string_view::npos, star_t = 0;
  auto match_class = [&](std::size_t& pi, char c, bool& ok) -> bool {
    // Returns false when pattern[pi] does not start a complete class (treat '[' literally).
    std::size_t i = pi + 1;
    bool negate = false;
    if (i < pattern.size() && pattern[i] == '!') {
      negate = true;
      ++i;
    }
    std::size_t start = i;
    if (i < pattern.size() && pattern[i] == ']') ++i;  // a leading ']' is literal
    while (i < pattern.size() && pattern[i] != ']') ++i;
    if (i >= pattern.size()) return false;
    bool found = false;
    for (std::size_t k = start; k < i; ++k) {
      if (k + 2 < i && pattern[k + 1] == '-') {
        if (pattern[k] <= c && c <= pattern[k + 2]) found = true;
        k += 2;
      } else if (pattern[k] == c) {
        found = true;
      }
    }
    ok = found != negate;
    pi = i + 1;
    return true;
  };
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star_p = p++;
      star_t = t;
      continue;
    }
    if (p < pattern.size()) {
      if (pattern[p] == '?') {
        ++p;
        ++t;
        continue;
      }
      if (pattern[p] == '[') {
        std::size_t pi = p;
        bool ok = false;
        if (match_class(pi, text[t], ok)) {
          if (ok) {
            p = pi;
            ++t;
            continue;
          }
        } else if (text[t] == '[') {
          ++p;
          ++t;
          continue;
        }
      } else if (pattern[p] == text[t]) {
        ++p;
        ++t;
        continue;
      }
    }
    if (star_p == std::string_view::npos) return false;
    p = star_p + 1;
    t = ++star_t;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::vector<std::string_view> SplitPath(std::string_view s) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = s.find('/', start);
    if (slash == std::string_view::npos) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, slash - start));
    start = slash + 1;
  }
}

}  // namespace

std::optional<TimePoint> ParseDateTime(std::string_view text) {
  // Exactly "YYYY-MM-DDTHH:MM:SSZ".
  if (text.size() != 20 || text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' ||
      text[16] != ':' || text[19] != 'Z') {
    return std::nullopt;
  }
  auto num = [&](std::size_t pos, std::size_t len) -> int {
    int v = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (text[i] < '0' || text[i] > '9') return -1;
      v = v * 10 + (text[i] - '0');
    }
    return v;
  };
  const int y = num(0, 4), mo = num(5, 2), d = num(8, 2), h = num(11, 2), mi = num(14, 2),
            s = num(17, 2);
  if (y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || s < 0 ||
      s > 59) {
    return std::nullopt;
  }
  const std::chrono::year_month_day ymd{std::chrono::year{y},
                                        std::chrono::month{static_cast<unsigned>(mo)},
                                        std::chrono::day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return std::nullopt;
  return TimePoint(std::chrono::sys_days(ymd)) + std::chrono::hours(h) + std::chrono::minutes(mi) +
         std::chrono::seconds(s);
}

std::string FormatDateTime(TimePoint t) {
  const auto days = std::chrono::floor<std::chrono::days>(t);
  const std::chrono::year_month_day ymd{days};
  const std::chrono::hh_mm_ss hms{t - days};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return buf;
}

namespace {

// Decoded keys by (keytype, scheme, public value), shared across metadata objects: a device
// refreshing periodically decodes each of its repository's keys once, not once per refresh.
std::shared_ptr<const std::optional<crypto::PublicKey>> DecodeKey(const std::string& keytype,
                                                                  const std::string& scheme,
                                                                  const std::string& public_value) {
  constexpr std::size_t kMaxCachedKeys = 1024;
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const std::optional<crypto::PublicKey>>> cache;
  std::string id = keytype;
  id.push_back('\0');
  id += scheme;
  id.push_back('\0');
  id += public_value;
  std::lock_guard lock(mu);
  if (auto it = cache.find(id); it != cache.end()) return it->second;
  auto parsed = crypto::PublicKey::FromTuf(keytype, scheme, public_value);
  auto decoded = std::make_shared<const std::optional<crypto::PublicKey>>(
      // nothrow: the error case returned just above
      parsed ? std::optional<crypto::PublicKey>(std::move(parsed).value()) : std::nullopt);
  if (cache.size() >= kMaxCachedKeys) cache.clear();
  cache.emplace(std::move(id), decoded);
  return decoded;
}

}  // namespace

const crypto::PublicKey* Key::PublicKey() const {
  if (!decoded_) decoded_ = DecodeKey(keytype, scheme, public_value);
  return decoded_->has_value() ? &**decoded_ : nullptr;
}

bool DelegatedRole::IsDelegatedPath(std::string_view target_path) const {
  if (path_hash_prefixes) {
    const auto digest = crypto::Sha256(target_path);
    const std::string hex = HexEncode(digest);
    for (const auto& prefix : *path_hash_prefixes) {
      if (hex.starts_with(prefix)) return true;
    }
    return false;
  }
  if (paths) {
    const auto target_parts = SplitPath(target_path);
    for (const auto& pattern : *paths) {
      const auto pattern_parts = SplitPath(pattern);
      if (pattern_parts.size() != target_parts.size()) continue;
      bool all = true;
      for (std::size_t i = 0; i < target_parts.size() && all; ++i) {
        all = MatchSegment(target_parts[i], pattern_parts[i]);
      }
      if (all) return true;
    }
  }
  return false;
}

std::string SuccinctRoles::RoleForTarget(std::string_view target_path) const {
  const auto digest = crypto::Sha256(target_path);
  const std::uint32_t first = (std::uint32_t{digest[0]} << 24) | (std::uint32_t{digest[1]} << 16) |
                              (std::uint32_t{digest[2]} << 8) | std::uint32_t{digest[3]};
  const std::uint64_t bin = std::uint64_t{first} >> (32 - bit_length);
  const std::size_t width = (bit_length + 3) / 4;
  std::string suffix(width, '0');
  std::uint64_t rest = bin;
  for (std::size_t i = width; i-- > 0; rest >>= 4) suffix[i] = "0123456789abcdef"[rest & 0xf];
  return name_prefix + "-" + suffix;
}

bool SuccinctRoles::IsDelegatedRole(std::string_view role_name) const {
  const std::string prefix = name_prefix + "-";
  if (!role_name.starts_with(prefix)) return false;
  const std::string_view suffix = role_name.substr(prefix.size());
  if (suffix.size() != (bit_length + 3) / 4) return false;
  std::uint64_t value = 0;
  for (char c : suffix) {
    int v = -1;
    if (c >= '0' && c <= '9') v = c - '0';
    if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    if (v < 0) return false;
    value = value * 16 + static_cast<std::uint64_t>(v);
  }
  return value < NumberOfBins();
}

std::vector<std::pair<std::string, bool>> Delegations::RolesForTarget(
    std::string_view target_path) const {
  std::vector<std::pair<std::string, bool>> out;
  if (succinct) {
    out.emplace_back(succinct->RoleForTarget(target_path), true);
    return out;
  }
  for (const auto& role : roles) {
    if (role.IsDelegatedPath(target_path)) out.emplace_back(role.name, role.terminating);
  }
  return out;
}

std::optional<RoleKeys> Delegations::KeysFor(std::string_view role_name) const {
  if (succinct) {
    if (succinct->IsDelegatedRole(role_name)) return succinct->keys;
    return std::nullopt;
  }
  for (const auto& role : roles) {
    if (role.name == role_name) return role.keys;
  }
  return std::nullopt;
}

Result<Root> ParseRoot(std::string_view bytes) {
  return ParseEnvelope<RootBody>(bytes, kRootRole, ParseRootBody);
}
Result<Timestamp> ParseTimestamp(std::string_view bytes) {
  return ParseEnvelope<TimestampBody>(bytes, kTimestampRole, ParseTimestampBody);
}
Result<Snapshot> ParseSnapshot(std::string_view bytes) {
  return ParseEnvelope<SnapshotBody>(bytes, kSnapshotRole, ParseSnapshotBody);
}
Result<Targets> ParseTargets(std::string_view bytes) {
  return ParseEnvelope<TargetsBody>(bytes, kTargetsRole, ParseTargetsBody);
}

Result<std::string> ComputeKeyId(const Json& key_object) {
  UPKEEP_ASSIGN_OR_RETURN(std::string canonical, Canonicalize(key_object));
  return HexEncode(crypto::Sha256(canonical));
}

Result<void> VerifyThreshold(const KeyMap& keys, const RoleKeys& role,
                             std::string_view signed_bytes,
                             const std::vector<Signature>& signatures, Errc failure_code,
                             std::string_view role_name) {
  const std::span<const std::uint8_t> message(
      reinterpret_cast<const std::uint8_t*>(signed_bytes.data()), signed_bytes.size());
  std::set<std::vector<std::uint8_t>> counted;  // distinct key material
  for (const auto& keyid : role.keyids) {
    auto key = keys.find(keyid);
    if (key == keys.end()) continue;
    const crypto::PublicKey* pub = key->second.PublicKey();
    if (pub == nullptr || counted.contains(pub->spki_der())) continue;
    for (const auto& sig : signatures) {
      if (sig.keyid != keyid) continue;
      auto raw = HexDecode(sig.sig_hex);
      if (raw && pub->Verify(message, *raw)) {
        counted.insert(pub->spki_der());
      }
      break;
    }
    if (counted.size() >= role.threshold) return Ok();
  }
  return Error(failure_code, std::string(role_name) + ": " + std::to_string(counted.size()) +
                                 " valid signature(s) from distinct keys, threshold is " +
                                 std::to_string(role.threshold));
}

Result<void> VerifyMetaFile(const MetaFile& meta, std::string_view bytes,
                            std::string_view role_name) {
  if (meta.length && *meta.length != bytes.size()) {
    return Error(Errc::MetaLengthMismatch, std::string(role_name) + ": length " +
                                               std::to_string(bytes.size()) + ", expected " +
                                               std::to_string(*meta.length));
  }
  if (meta.hashes) {
    for (const auto& [alg, expected_hex] : *meta.hashes) {
      auto algorithm = crypto::HashAlgorithmFromName(alg);
      auto expected = HexDecode(expected_hex);
      if (!algorithm || !expected ||
          !crypto::ConstantTimeEqual(crypto::Digest(*algorithm, bytes), *expected)) {
        return Error(Errc::MetaHashMismatch,
                     std::string(role_name) + ": " + alg + " hash does not match");
      }
    }
  }
  return Ok();
}

// ---------------------------------------------------------------------------------------------
// Serialisation

namespace {

Json RoleKeysToJson(const RoleKeys& r) {
  Json out = {{"keyids", r.keyids}, {"threshold", r.threshold}};
  AddUnrecognized(out, r.unrecognized_fields);
  return out;
}

Json KeysToJson(const KeyMap& keys) {
  Json out = Json::object();
  for (const auto& [id, key] : keys) out[id] = key.ToJson();
  return out;
}

Json MetaFileToJson(const MetaFile& m) {
  Json out = {{"version", m.version}};
  if (m.length) out["length"] = *m.length;
  if (m.hashes) out["hashes"] = *m.hashes;
  AddUnrecognized(out, m.unrecognized_fields);
  return out;
}

Json DelegationsToJson(const Delegations& d) {
  Json out = {{"keys", KeysToJson(d.keys)}};
  if (d.succinct) {
    Json s = {{"keyids", d.succinct->keys.keyids},
              {"threshold", d.succinct->keys.threshold},
              {"bit_length", d.succinct->bit_length},
              {"name_prefix", d.succinct->name_prefix}};
    AddUnrecognized(s, d.succinct->keys.unrecognized_fields);
    AddUnrecognized(s, d.succinct->unrecognized_fields);
    out["succinct_roles"] = std::move(s);
  } else {
    Json roles = Json::array();
    for (const auto& role : d.roles) {
      Json r = {{"name", role.name},
                {"keyids", role.keys.keyids},
                {"threshold", role.keys.threshold},
                {"terminating", role.terminating}};
      if (role.paths) r["paths"] = *role.paths;
      if (role.path_hash_prefixes) r["path_hash_prefixes"] = *role.path_hash_prefixes;
      AddUnrecognized(r, role.keys.unrecognized_fields);
      AddUnrecognized(r, role.unrecognized_fields);
      roles.push_back(std::move(r));
    }
    out["roles"] = std::move(roles);
  }
  AddUnrecognized(out, d.unrecognized_fields);
  return out;
}

void BodyToJson(const RootBody& b, Json& out) {
  if (b.consistent_snapshot) out["consistent_snapshot"] = *b.consistent_snapshot;
  out["keys"] = KeysToJson(b.keys);
  Json roles = Json::object();
  for (const auto& [name, r] : b.roles) roles[name] = RoleKeysToJson(r);
  out["roles"] = std::move(roles);
}

void BodyToJson(const TimestampBody& b, Json& out) {
  Json meta = {{"snapshot.json", MetaFileToJson(b.snapshot_meta)}};
  AddUnrecognized(meta, b.other_meta);
  out["meta"] = std::move(meta);
}

void BodyToJson(const SnapshotBody& b, Json& out) {
  Json meta = Json::object();
  for (const auto& [name, m] : b.meta) meta[name] = MetaFileToJson(m);
  out["meta"] = std::move(meta);
}

void BodyToJson(const TargetsBody& b, Json& out) {
  Json targets = Json::object();
  for (const auto& [path, t] : b.targets) {
    Json entry = {{"length", t.length}, {"hashes", t.hashes}};
    if (!t.custom.is_null()) entry["custom"] = t.custom;
    AddUnrecognized(entry, t.unrecognized_fields);
    targets[path] = std::move(entry);
  }
  out["targets"] = std::move(targets);
  if (b.delegations) out["delegations"] = DelegationsToJson(*b.delegations);
}

// JSON text of `value`; nlohmann throws on strings that are not UTF-8.
Result<std::string> Dump(const Json& value, int indent) {
  try {
    // nothrow: inside try; the catch below returns an error
    return value.dump(indent);
  } catch (const Json::exception& e) {
    return Error(Errc::InvalidMetadata, std::string("cannot serialise metadata: ") + e.what());
  }
}

}  // namespace

Json Key::ToJson() const {
  Json out = json.is_object() ? json : Json::object();
  out["keytype"] = keytype;
  out["scheme"] = scheme;
  if (!out.contains("keyval") || !out["keyval"].is_object()) out["keyval"] = Json::object();
  Json& keyval = out["keyval"];
  // A key read without a string "public" keeps whatever it had (or lacked).
  if (!public_value.empty()) keyval["public"] = public_value;
  return out;
}

Key Key::FromPublicKey(const crypto::PublicKey& key) {
  Key out;
  out.keytype = key.keytype();
  out.scheme = key.scheme();
  out.public_value = key.public_value();
  out.json = out.ToJson();
  // Canonicalize cannot fail here: the object holds only strings.
  out.keyid = ComputeKeyId(out.json).value_or(std::string());
  return out;
}

template <typename Body>
Metadata<Body> Metadata<Body>::Create(TimePoint expires) {
  Metadata<Body> md;
  md.type = std::string(Body::kType);
  md.spec_version = std::string(kSpecVersion);
  md.version = 1;
  md.expires = expires;
  return md;
}

template <typename Body>
Json Metadata<Body>::SignedToJson() const {
  Json out = {{"_type", type},
              {"spec_version", spec_version},
              {"version", version},
              {"expires", FormatDateTime(expires)}};
  BodyToJson(body, out);
  AddUnrecognized(out, unrecognized_fields);
  return out;
}

template <typename Body>
Json Metadata<Body>::ToJson() const {
  Json sigs = Json::array();
  for (const auto& sig : signatures) {
    Json s = {{"keyid", sig.keyid}, {"sig", sig.sig_hex}};
    AddUnrecognized(s, sig.unrecognized_fields);
    sigs.push_back(std::move(s));
  }
  Json out = {{"signed", SignedToJson()}, {"signatures", std::move(sigs)}};
  AddUnrecognized(out, unrecognized_envelope_fields);
  return out;
}

template <typename Body>
Result<std::string> Metadata<Body>::ToBytes() const {
  return Dump(ToJson(), 1);
}

template <typename Body>
Result<std::string> Metadata<Body>::CanonicalSigned() const {
  const Json s = SignedToJson();
  UPKEEP_TRY(Dump(s, -1));  // rejects strings that are not UTF-8 before canonicalising them
  return Canonicalize(s);
}

template <typename Body>
Result<void> Metadata<Body>::Sign(const crypto::PrivateKey& key) {
  UPKEEP_ASSIGN_OR_RETURN(std::string canonical, CanonicalSigned());
  UPKEEP_ASSIGN_OR_RETURN(
      auto sig, key.Sign(std::span<const std::uint8_t>(
                    reinterpret_cast<const std::uint8_t*>(canonical.data()), canonical.size())));
  const std::string keyid = Key::FromPublicKey(key.public_key()).keyid;
  canonical_signed = std::move(canonical);
  for (auto& s : signatures) {
    if (s.keyid == keyid) {
      s.sig_hex = HexEncode(sig);
      return Ok();
    }
  }
  signatures.push_back(Signature{keyid, HexEncode(sig), Json::object()});
  return Ok();
}

template struct Metadata<RootBody>;
template struct Metadata<TimestampBody>;
template struct Metadata<SnapshotBody>;
template struct Metadata<TargetsBody>;

// ---------------------------------------------------------------------------------------------
// Target names and hash values

Result<void> ValidateTargetPath(std::string_view path, TargetPathRules rules) {
  auto bad = [&](const std::string& why) {
    std::string shown(path);  // control characters never reach a log line
    for (char& c : shown) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    }
    return Error(Errc::InvalidTargetPath, "target name \"" + shown + "\" " + why);
  };
  if (path.empty()) return Error(Errc::InvalidTargetPath, "empty target name");
  if (path.front() == '/') return bad("starts with '/'");
  if (!IsValidUtf8(path)) return Error(Errc::InvalidTargetPath, "target name is not valid UTF-8");
  for (const char ch : path) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) return bad("contains a control character");
    if (rules == TargetPathRules::kPublish && (c == '%' || c == '?' || c == '#')) {
      return bad("contains '%', '?' or '#', which TUF clients put into URLs differently");
    }
  }
  for (std::string_view segment : SplitPath(path)) {
    if (segment.empty()) return bad("has an empty segment");
    if (segment == "." || segment == "..") return bad("has a '.' or '..' segment");
  }
  return Ok();
}

Result<void> ValidateHashValue(std::string_view algorithm, std::string_view value) {
  const auto alg = crypto::HashAlgorithmFromName(algorithm);
  if (!alg) {
    return Error(Errc::InvalidTargetHash,
                 "hash algorithm \"" + std::string(algorithm) + "\" is not supported");
  }
  const bool hex = std::all_of(value.begin(), value.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
  if (!hex || value.size() != 2 * crypto::DigestSize(*alg)) {
    return Error(Errc::InvalidTargetHash, std::string(algorithm) + " value is not " +
                                              std::to_string(2 * crypto::DigestSize(*alg)) +
                                              " lower-case hex digits");
  }
  return Ok();
}

Result<void> ValidateTargetFile(const TargetFile& target, TargetPathRules rules) {
  UPKEEP_TRY(ValidateTargetPath(target.path, rules));
  for (const auto& [alg, value] : target.hashes) {
    // Other algorithms are never put into a URL; the download fails on them (TargetHashMismatch).
    if (!crypto::HashAlgorithmFromName(alg)) continue;
    if (auto r = ValidateHashValue(alg, value); !r) {
      return Error(Errc::InvalidTargetHash, target.path + ": " + r.error().message());
    }
  }
  return Ok();
}

const std::string* UrlHash(const TargetFile& target) {
  for (const auto& [alg, value] : target.hashes) {
    if (crypto::HashAlgorithmFromName(alg) && ValidateHashValue(alg, value)) return &value;
  }
  return nullptr;
}

}  // namespace upkeep::metadata
