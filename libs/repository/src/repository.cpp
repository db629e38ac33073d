#include "upkeep/repository/repository.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <set>

#include "upkeep/common/encoding.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/paths.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/update_metadata.hpp"

namespace upkeep::repository {

namespace fs = std::filesystem;
using metadata::Json;

namespace {

const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::AlreadyExists: return "AlreadyExists";
    case Errc::NotARepository: return "NotARepository";
    case Errc::KeyFileInsecure: return "KeyFileInsecure";
    case Errc::KeyNotAuthorized: return "KeyNotAuthorized";
    case Errc::ThresholdNotMet: return "ThresholdNotMet";
    case Errc::MissingOnlineKey: return "MissingOnlineKey";
    case Errc::InvalidTarget: return "InvalidTarget";
    case Errc::InvalidUpdateMetadata: return "InvalidUpdateMetadata";
    case Errc::UnknownRole: return "UnknownRole";
    case Errc::IoError: return "IoError";
    case Errc::InvalidDelegation: return "InvalidDelegation";
    case Errc::Expired: return "Expired";
  }
  return "Unknown";
}

constexpr const char* kSpecVersion = "1.0.31";
constexpr std::uint64_t kMaxKeyFile = 64 * 1024;

Error Io(const Error& e) { return Error(Errc::IoError, e.message()); }

Json KeyJson(const crypto::PublicKey& pub) {
  return Json{{"keytype", pub.keytype()}, {"scheme", pub.scheme()},
              {"keyval", {{"public", pub.public_value()}}}};
}

std::string KeyIdOf(const crypto::PublicKey& pub) {
  return metadata::ComputeKeyId(KeyJson(pub)).value();
}

std::string Canonical(const Json& j) { return metadata::Canonicalize(j).value(); }

Result<Json> SignatureBy(const crypto::PrivateKey& key, const Json& signed_body) {
  const std::string bytes = Canonical(signed_body);
  UPKEEP_ASSIGN_OR_RETURN(auto sig, key.Sign(std::span<const std::uint8_t>(
                                        reinterpret_cast<const std::uint8_t*>(bytes.data()),
                                        bytes.size())));
  return Json{{"keyid", KeyIdOf(key.public_key())}, {"sig", HexEncode(sig)}};
}

// Adds or replaces `key`'s signature in the envelope.
Result<void> AddSignature(Json& envelope, const crypto::PrivateKey& key) {
  UPKEEP_ASSIGN_OR_RETURN(Json sig, SignatureBy(key, envelope["signed"]));
  Json& sigs = envelope["signatures"];
  for (auto& s : sigs) {
    if (s["keyid"] == sig["keyid"]) {
      s = sig;
      return Ok();
    }
  }
  sigs.push_back(sig);
  return Ok();
}

// The name of hash bin `bin` (TAP 15: prefix, '-', zero-padded lower-case hex).
std::string BinName(const metadata::SuccinctRoles& bins, std::uint64_t bin) {
  const std::size_t width = (bins.bit_length + 3) / 4;
  std::string suffix(width, '0');
  for (std::size_t i = width; i-- > 0; bin >>= 4) suffix[i] = "0123456789abcdef"[bin & 0xf];
  return bins.name_prefix + "-" + suffix;
}

std::string HashPrefixed(const std::string& name, const std::string& sha256) {
  const auto slash = name.rfind('/');
  if (slash == std::string::npos) return sha256 + "." + name;
  return name.substr(0, slash + 1) + sha256 + "." + name.substr(slash + 1);
}

}  // namespace

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("repository", &ErrcName);
  return category;
}

metadata::TimePoint Repository::Expiry(const std::string& role) const {
  const Json& days_by_role = settings_["expiry_days"];
  const auto days = (days_by_role.contains(role) ? days_by_role[role] : days_by_role["targets"])
                        .get<std::uint32_t>();
  return clock_->Now() + std::chrono::days(days);
}

Result<Repository> Repository::Init(const fs::path& dir, const InitOptions& o, const Clock& clock) {
  LocalFilesystem fs;
  if (fs.Exists(dir / "repo.json").value_or(false)) {
    return Error(Errc::AlreadyExists, dir.string() + " already holds a repository");
  }
  for (const char* sub : {"keys", "staged", "targets"}) {
    if (auto r = fs.CreateDirectories(dir / sub); !r) return Io(r.error());
  }
  ::chmod((dir / "keys").c_str(), 0700);
  if (o.root_threshold < 1 || o.root_threshold > o.root_keys ||
      (!o.targets_token_key && (o.targets_threshold < 1 || o.targets_threshold > o.targets_keys))) {
    return Error(Errc::ThresholdNotMet, "thresholds must be between 1 and the number of keys");
  }

  Repository repo(dir, clock);
  repo.passphrase_ = o.passphrase;
  repo.settings_ = {{"format", 1},
                    {"expiry_days",
                     {{"root", o.root_expiry_days},
                      {"targets", o.targets_expiry_days},
                      {"snapshot", o.snapshot_expiry_days},
                      {"timestamp", o.timestamp_expiry_days}}},
                    {"published", {{"root", 0}, {"targets", 0}, {"snapshot", 0}, {"timestamp", 0}}},
                    {"delegations", Json::object()}};

  Json keys = Json::object();
  Json roles = Json::object();
  std::map<std::string, std::vector<crypto::PrivateKey>> generated;
  const std::pair<const char*, std::pair<std::uint32_t, std::uint32_t>> plan[] = {
      {"root", {o.root_keys, o.root_threshold}},
      {"targets", {o.targets_keys, o.targets_threshold}},
      {"snapshot", {1, 1}},
      {"timestamp", {1, 1}}};
  std::optional<crypto::PrivateKey> token_key;
  if (o.targets_token_key) {
    auto key = crypto::PrivateKey::FromPkcs11(*o.targets_token_key);
    if (!key) return std::move(key).error();
    token_key = std::move(key).value();
  }
  for (const auto& [role, counts] : plan) {
    Json ids = Json::array();
    if (std::string_view(role) == "targets" && token_key) {
      const std::string id = KeyIdOf(token_key->public_key());
      keys[id] = KeyJson(token_key->public_key());
      ids.push_back(id);
      generated[role].push_back(*token_key);
      roles[role] = {{"keyids", ids}, {"threshold", 1}};
      continue;
    }
    for (std::uint32_t i = 0; i < counts.first; ++i) {
      UPKEEP_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::Generate(o.key_type));
      const std::string id = KeyIdOf(key.public_key());
      keys[id] = KeyJson(key.public_key());
      ids.push_back(id);
      UPKEEP_ASSIGN_OR_RETURN(std::string pem, key.ToPem(o.passphrase));
      const fs::path file = dir / "keys" / (id + ".pem");
      if (auto r = fs.WriteFileAtomic(file, pem); !r) return Io(r.error());
      ::chmod(file.c_str(), 0600);
      generated[role].push_back(std::move(key));
    }
    roles[role] = {{"keyids", ids}, {"threshold", counts.second}};
  }

  Json root = {{"_type", "root"}, {"spec_version", kSpecVersion}, {"version", 1},
               {"expires", metadata::FormatDateTime(repo.Expiry("root"))},
               {"consistent_snapshot", o.consistent_snapshot}, {"keys", keys}, {"roles", roles}};
  Json targets = {{"_type", "targets"}, {"spec_version", kSpecVersion}, {"version", 1},
                  {"expires", metadata::FormatDateTime(repo.Expiry("targets"))},
                  {"targets", Json::object()}};
  repo.staged_["root"] = {{"signed", root}, {"signatures", Json::array()}};
  repo.staged_["targets"] = {{"signed", targets}, {"signatures", Json::array()}};
  for (const auto& key : generated["root"]) UPKEEP_TRY(AddSignature(repo.staged_["root"], key));
  for (const auto& key : generated["targets"]) {
    UPKEEP_TRY(AddSignature(repo.staged_["targets"], key));
  }
  UPKEEP_TRY(repo.Save("root"));
  UPKEEP_TRY(repo.Save("targets"));
  if (auto r = fs.WriteFileAtomic(dir / "repo.json", repo.settings_.dump(2) + "\n"); !r) {
    return Io(r.error());
  }
  return repo;
}

Result<Repository> Repository::Open(const fs::path& dir, const Clock& clock, std::string passphrase) {
  Repository repo(dir, clock);
  repo.passphrase_ = std::move(passphrase);
  UPKEEP_TRY(repo.Load());
  return repo;
}

Result<void> Repository::Load() {
  LocalFilesystem fs;
  auto settings = fs.ReadFile(dir_ / "repo.json", 1 << 20);
  if (!settings) return Error(Errc::NotARepository, dir_.string() + ": no repo.json");
  auto parsed = metadata::ParseJson(*settings);
  if (!parsed || !parsed->contains("expiry_days") || !parsed->contains("published")) {
    return Error(Errc::NotARepository, dir_.string() + ": repo.json is not valid");
  }
  settings_ = *parsed;
  if (!settings_.contains("delegations")) settings_["delegations"] = Json::object();
  std::vector<std::string> roles{"root"};
  for (const auto& r : TargetsRoles()) roles.push_back(r);
  for (const auto& role : roles) {
    auto bytes = fs.ReadFile(dir_ / "staged" / (PercentEncode(role) + ".json"), 16 << 20);
    if (!bytes) return Error(Errc::NotARepository, bytes.error().message());
    auto env = metadata::ParseJson(*bytes);
    if (!env || !env->contains("signed")) {
      return Error(Errc::NotARepository, "staged " + role + ".json is not valid");
    }
    staged_[role] = *env;
  }
  return Ok();
}

Result<void> Repository::Save(const std::string& role) {
  LocalFilesystem fs;
  auto r = fs.WriteFileAtomic(dir_ / "staged" / (PercentEncode(role) + ".json"),
                              staged_.at(role).dump(1) + "\n");
  if (!r) return Io(r.error());
  return Ok();
}

Result<crypto::PrivateKey> Repository::LoadKey(const fs::path& file) const {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return Error(Errc::IoError, file.string() + ": not found");
  if ((st.st_mode & 077) != 0) {
    return Error(Errc::KeyFileInsecure,
                 file.string() + " is readable by others; run chmod 600 on it");
  }
  LocalFilesystem fs;
  auto pem = fs.ReadFile(file, kMaxKeyFile);
  if (!pem) return Io(pem.error());
  return crypto::PrivateKey::FromPem(*pem, passphrase_);
}

Result<std::vector<crypto::PrivateKey>> Repository::OnlineKeys(const std::string& role) const {
  const Json& root = staged_.at("root")["signed"];
  const Json& r = root["roles"][role];
  std::vector<crypto::PrivateKey> out;
  for (const auto& id : r["keyids"]) {
    const fs::path file = dir_ / "keys" / (id.get<std::string>() + ".pem");
    if (!fs::exists(file)) continue;
    UPKEEP_ASSIGN_OR_RETURN(auto key, LoadKey(file));
    out.push_back(std::move(key));
    if (out.size() >= r["threshold"].get<std::uint64_t>()) break;
  }
  if (out.size() < r["threshold"].get<std::uint64_t>()) {
    return Error(Errc::MissingOnlineKey, "not enough " + role + " keys in " + (dir_ / "keys").string());
  }
  return out;
}

std::vector<std::string> Repository::TargetsRoles() const {
  std::vector<std::string> out{"targets"};
  for (const auto& [name, delegator] : settings_["delegations"].items()) out.push_back(name);
  return out;
}

std::optional<metadata::SuccinctRoles> Repository::BinsNamed(const std::string& prefix) const {
  for (const auto& role : TargetsRoles()) {
    const Json& sig = staged_.at(role)["signed"];
    if (!sig.contains("delegations") || !sig["delegations"].contains("succinct_roles")) continue;
    const Json& sr = sig["delegations"]["succinct_roles"];
    if (sr["name_prefix"] != prefix) continue;
    metadata::SuccinctRoles bins;
    bins.bit_length = sr["bit_length"].get<std::uint32_t>();
    bins.name_prefix = prefix;
    return bins;
  }
  return std::nullopt;
}

void Repository::Restage(const std::string& role) {
  Json& env = staged_.at(role);
  const Json& published = settings_["published"];
  env["signed"]["version"] =
      (published.contains(role) ? published[role].get<std::uint64_t>() : 0) + 1;
  env["signed"]["expires"] = metadata::FormatDateTime(Expiry(role));
  env["signatures"] = Json::array();  // changed content: the threshold must sign again
}

Result<void> Repository::AddTarget(const fs::path& file, const std::string& name,
                                   const Json& custom, const std::string& requested_role) {
  // A hash-bin prefix routes the target to the bin its path hashes to.
  std::string role = requested_role;
  if (auto bins = BinsNamed(requested_role)) role = bins->RoleForTarget(name);
  if (!staged_.contains(role) || role == "root") {
    return Error(Errc::UnknownRole, "no targets role " + role);
  }
  if (!IsSafeRelativePath(name)) return Error(Errc::InvalidTarget, "bad target name \"" + name + "\"");
  if (role != "targets") {
    // A delegated role may only list paths its delegation covers.
    const std::string delegator = settings_["delegations"][role].get<std::string>();
    const Json& delegations = staged_.at(delegator)["signed"]["delegations"];
    if (delegations.contains("succinct_roles")) {
      metadata::SuccinctRoles bins;
      bins.bit_length = delegations["succinct_roles"]["bit_length"].get<std::uint32_t>();
      bins.name_prefix = delegations["succinct_roles"]["name_prefix"].get<std::string>();
      if (bins.RoleForTarget(name) != role) {
        return Error(Errc::InvalidTarget, name + " belongs in " + bins.RoleForTarget(name));
      }
    }
    for (const auto& d : delegations.value("roles", Json::array())) {
      if (d["name"] != role) continue;
      metadata::DelegatedRole dr;
      if (d.contains("paths")) dr.paths = d["paths"].get<std::vector<std::string>>();
      if (d.contains("path_hash_prefixes")) {
        dr.path_hash_prefixes = d["path_hash_prefixes"].get<std::vector<std::string>>();
      }
      if (!dr.IsDelegatedPath(name)) {
        return Error(Errc::InvalidTarget, name + " is outside the paths delegated to " + role);
      }
    }
  }
  if (auto m = metadata::ParseUpdateMetadata(custom); !m) {
    return Error(Errc::InvalidUpdateMetadata, m.error().message());
  }
  LocalFilesystem fs;
  if (auto r = fs.CreateDirectories((dir_ / "targets" / name).parent_path()); !r) return Io(r.error());
  auto out = fs.CreateAtomic(dir_ / "targets" / name);
  if (!out) return Io(out.error());
  crypto::Hasher hash(crypto::HashAlgorithm::Sha256);
  std::uint64_t length = 0;
  auto copied = fs.ReadChunks(file, [&](std::span<const char> piece) -> Result<void> {
    hash.Update(std::string_view(piece.data(), piece.size()));
    length += piece.size();
    return (*out)->Append(piece);
  });
  if (!copied) return Error(Errc::InvalidTarget, file.string() + ": " + copied.error().message());
  if (auto r = (*out)->Commit(); !r) return Io(r.error());

  staged_.at(role)["signed"]["targets"][name] = {
      {"length", length}, {"hashes", {{"sha256", HexEncode(hash.Final())}}}, {"custom", custom}};
  Restage(role);
  return Save(role);
}

Result<void> Repository::RemoveTarget(const std::string& name, const std::string& role) {
  if (!staged_.contains(role) || role == "root") {
    return Error(Errc::UnknownRole, "no targets role " + role);
  }
  Json& env = staged_.at(role);
  if (!env["signed"]["targets"].contains(name)) {
    return Error(Errc::InvalidTarget, "no target \"" + name + "\" in " + role);
  }
  env["signed"]["targets"].erase(name);
  Restage(role);
  return Save(role);
}

Result<std::vector<std::string>> Repository::Delegate(const Delegation& d) {
  const bool top_level = d.name == "root" || d.name == "targets" || d.name == "snapshot" ||
                         d.name == "timestamp";
  if (d.name.empty() || top_level || staged_.contains(d.name) || d.name.size() > 255) {
    return Error(Errc::InvalidDelegation, "cannot delegate to \"" + d.name + "\"");
  }
  if (!staged_.contains(d.delegator) || d.delegator == "root") {
    return Error(Errc::UnknownRole, "no targets role " + d.delegator);
  }
  const bool bins = d.bin_bits > 0;
  if ((d.paths.empty() ? 0 : 1) + (d.hash_prefixes.empty() ? 0 : 1) + (bins ? 1 : 0) != 1) {
    return Error(Errc::InvalidDelegation, "give exactly one of paths, hash prefixes or hash bins");
  }
  if (bins && d.bin_bits > 16) {
    return Error(Errc::InvalidDelegation, "at most 16 bits of hash bins (65536 roles)");
  }
  if (d.threshold < 1 || d.threshold > d.keys) {
    return Error(Errc::InvalidDelegation, "threshold must be between 1 and the number of keys");
  }
  LocalFilesystem fs;
  Json& delegator = staged_.at(d.delegator)["signed"];
  if (delegator.contains("delegations") &&
      (bins || delegator["delegations"].contains("succinct_roles"))) {
    return Error(Errc::InvalidDelegation,
                 d.delegator + " already delegates; hash bins cannot be mixed with other roles");
  }
  if (!delegator.contains("delegations")) {
    delegator["delegations"] = {{"keys", Json::object()}};
    if (!bins) delegator["delegations"]["roles"] = Json::array();
  }
  Json role = {{"name", d.name}, {"keyids", Json::array()}, {"threshold", d.threshold},
               {"terminating", d.terminating}};
  if (!d.paths.empty()) role["paths"] = d.paths;
  else role["path_hash_prefixes"] = d.hash_prefixes;
  std::vector<crypto::PrivateKey> keys;
  std::vector<std::string> ids;
  for (std::uint32_t i = 0; i < d.keys; ++i) {
    UPKEEP_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::Generate(d.key_type));
    const std::string id = KeyIdOf(key.public_key());
    UPKEEP_ASSIGN_OR_RETURN(std::string pem, key.ToPem(passphrase_));
    const fs::path file = dir_ / "keys" / (id + ".pem");
    if (auto r = fs.WriteFileAtomic(file, pem); !r) return Io(r.error());
    ::chmod(file.c_str(), 0600);
    delegator["delegations"]["keys"][id] = KeyJson(key.public_key());
    role["keyids"].push_back(id);
    ids.push_back(id);
    keys.push_back(std::move(key));
  }
  std::vector<std::string> new_roles;
  if (bins) {
    delegator["delegations"]["succinct_roles"] = {
        {"keyids", role["keyids"]}, {"threshold", d.threshold}, {"bit_length", d.bin_bits},
        {"name_prefix", d.name}};
    metadata::SuccinctRoles succinct;
    succinct.bit_length = d.bin_bits;
    succinct.name_prefix = d.name;
    for (std::uint64_t bin = 0; bin < succinct.NumberOfBins(); ++bin) {
      new_roles.push_back(BinName(succinct, bin));
    }
  } else {
    delegator["delegations"]["roles"].push_back(role);
    new_roles.push_back(d.name);
  }
  Restage(d.delegator);

  for (const auto& name : new_roles) {
    if (staged_.contains(name)) return Error(Errc::InvalidDelegation, name + " exists already");
    Json body = {{"_type", "targets"}, {"spec_version", kSpecVersion}, {"version", 1},
                 {"expires", metadata::FormatDateTime(Expiry(name))},
                 {"targets", Json::object()}};
    staged_[name] = {{"signed", body}, {"signatures", Json::array()}};
    for (const auto& key : keys) UPKEEP_TRY(AddSignature(staged_[name], key));
    settings_["delegations"][name] = d.delegator;
    UPKEEP_TRY(Save(name));
  }
  UPKEEP_TRY(Save(d.delegator));
  if (auto r = fs.WriteFileAtomic(dir_ / "repo.json", settings_.dump(2) + "\n"); !r) {
    return Io(r.error());
  }
  return ids;
}

Result<std::pair<metadata::KeyMap, metadata::RoleKeys>> Repository::SignersOf(
    const std::string& role) const {
  if (role == "root" || role == "targets") {
    UPKEEP_ASSIGN_OR_RETURN(auto root, metadata::ParseRoot(staged_.at("root").dump()));
    return std::pair(root.body.keys, root.body.roles.at(role));
  }
  if (!settings_["delegations"].contains(role)) return Error(Errc::UnknownRole, "no role " + role);
  const std::string delegator = settings_["delegations"][role].get<std::string>();
  auto parent = metadata::ParseTargets(staged_.at(delegator).dump());
  if (!parent || !parent->body.delegations) {
    return Error(Errc::InvalidDelegation, delegator + " does not delegate to " + role);
  }
  auto keys = parent->body.delegations->KeysFor(role);
  if (!keys) return Error(Errc::InvalidDelegation, delegator + " does not delegate to " + role);
  return std::pair(parent->body.delegations->keys, *keys);
}

Result<void> Repository::Sign(const std::string& role, const fs::path& key_file) {
  if (!staged_.contains(role) && !BinsNamed(role)) {
    return Error(Errc::UnknownRole,
                 "only root, targets and delegated roles are signed offline; got " + role);
  }
  UPKEEP_ASSIGN_OR_RETURN(auto key, LoadKey(key_file));
  return SignWith(role, key);
}

Result<void> Repository::SignWith(const std::string& role, const crypto::PrivateKey& key) {
  if (auto bins = BinsNamed(role)) {  // every bin shares the same keys
    for (std::uint64_t bin = 0; bin < bins->NumberOfBins(); ++bin) {
      UPKEEP_TRY(SignWith(BinName(*bins, bin), key));
    }
    return Ok();
  }
  if (!staged_.contains(role)) {
    return Error(Errc::UnknownRole, "no offline role " + role);
  }
  const std::string id = KeyIdOf(key.public_key());
  auto listed = [&](const Json& root) {
    const Json& ids = root["signed"]["roles"][role]["keyids"];
    return std::find(ids.begin(), ids.end(), id) != ids.end();
  };
  bool authorized = false;
  if (role == "root" || role == "targets") {
    authorized = listed(staged_.at("root"));
  } else {
    UPKEEP_ASSIGN_OR_RETURN(auto signers, SignersOf(role));
    authorized = std::find(signers.second.keyids.begin(), signers.second.keyids.end(), id) !=
                 signers.second.keyids.end();
  }
  if (!authorized && role == "root") {
    LocalFilesystem fs;
    if (auto prev = fs.ReadFile(dir_ / "published-root.json", 16 << 20)) {
      if (auto doc = metadata::ParseJson(*prev)) authorized = listed(*doc);
    }
  }
  if (!authorized) return Error(Errc::KeyNotAuthorized, "key " + id + " is not a " + role + " key");
  UPKEEP_TRY(AddSignature(staged_.at(role), key));
  return Save(role);
}

Result<std::vector<std::string>> Repository::Rotate(const std::string& role, std::uint32_t add_keys,
                                                   const std::vector<std::string>& remove_keyids,
                                                   std::optional<std::uint32_t> threshold,
                                                   crypto::KeyAlgorithm key_type) {
  if (role != "root" && role != "targets" && role != "snapshot" && role != "timestamp") {
    return Error(Errc::UnknownRole, "no top-level role " + role);
  }
  Json root = staged_.at("root")["signed"];
  Json& ids = root["roles"][role]["keyids"];
  for (const auto& id : remove_keyids) {
    auto it = std::find(ids.begin(), ids.end(), id);
    if (it == ids.end()) return Error(Errc::KeyNotAuthorized, id + " is not a " + role + " key");
    ids.erase(it);
  }
  LocalFilesystem fs;
  std::vector<std::string> added;
  std::vector<std::pair<fs::path, std::string>> key_files;
  for (std::uint32_t i = 0; i < add_keys; ++i) {
    UPKEEP_ASSIGN_OR_RETURN(auto key, crypto::PrivateKey::Generate(key_type));
    const std::string id = KeyIdOf(key.public_key());
    root["keys"][id] = KeyJson(key.public_key());
    ids.push_back(id);
    UPKEEP_ASSIGN_OR_RETURN(std::string pem, key.ToPem(passphrase_));
    key_files.emplace_back(dir_ / "keys" / (id + ".pem"), std::move(pem));
    added.push_back(id);
  }
  if (threshold) root["roles"][role]["threshold"] = *threshold;
  const auto t = root["roles"][role]["threshold"].get<std::uint64_t>();
  if (t < 1 || t > ids.size()) {
    return Error(Errc::ThresholdNotMet, role + " would have " + std::to_string(ids.size()) +
                                            " keys for a threshold of " + std::to_string(t));
  }
  // Drop key objects no role lists any more (a revoked key leaves the root entirely).
  std::set<std::string> used;
  for (const auto& [name, r] : root["roles"].items()) {
    for (const auto& id : r["keyids"]) used.insert(id.get<std::string>());
  }
  for (auto it = root["keys"].begin(); it != root["keys"].end();) {
    if (!used.contains(it.key())) it = root["keys"].erase(it);
    else ++it;
  }
  for (const auto& [path, pem] : key_files) {
    if (auto r = fs.WriteFileAtomic(path, pem); !r) return Io(r.error());
    ::chmod(path.c_str(), 0600);
  }
  root["version"] = settings_["published"]["root"].get<std::uint64_t>() + 1;
  root["expires"] = metadata::FormatDateTime(Expiry("root"));
  staged_["root"] = {{"signed", root}, {"signatures", Json::array()}};
  UPKEEP_TRY(Save("root"));
  return added;
}

Result<void> Repository::CheckRootContinuity() const {
  LocalFilesystem fs;
  auto prev_bytes = fs.ReadFile(dir_ / "published-root.json", 16 << 20);
  if (!prev_bytes) return Ok();  // nothing published yet
  UPKEEP_ASSIGN_OR_RETURN(auto prev, metadata::ParseRoot(*prev_bytes));
  UPKEEP_ASSIGN_OR_RETURN(auto next, metadata::ParseRoot(staged_.at("root").dump()));
  if (next.version == prev.version) return Ok();
  if (next.version != prev.version + 1) {
    return Error(Errc::ThresholdNotMet, "staged root must be version " +
                                            std::to_string(prev.version + 1));
  }
  auto r = metadata::VerifyThreshold(prev.body.keys, prev.body.roles.at("root"),
                                     next.canonical_signed, next.signatures,
                                     metadata::Errc::RootNotSignedByTrustedRoot, "root");
  if (!r) {
    return Error(Errc::ThresholdNotMet,
                 "root v" + std::to_string(next.version) +
                     " also needs the threshold of the published root v" +
                     std::to_string(prev.version) + "'s keys: " + r.error().message());
  }
  return Ok();
}

Result<RoleStatus> Repository::StatusOf(const std::string& role) const {
  const Json& env = staged_.at(role);
  UPKEEP_ASSIGN_OR_RETURN(auto signers, SignersOf(role));
  const metadata::KeyMap& key_map = signers.first;
  const metadata::RoleKeys& keys = signers.second;
  RoleStatus st;
  st.role = role;
  st.version = env["signed"]["version"].get<std::uint64_t>();
  st.threshold = keys.threshold;
  const std::string canonical = Canonical(env["signed"]);
  for (const auto& id : keys.keyids) {
    bool signed_by = false;
    for (const auto& s : env["signatures"]) {
      if (s["keyid"] != id) continue;
      std::vector<metadata::Signature> one{{id, s["sig"].get<std::string>()}};
      signed_by = metadata::VerifyThreshold(key_map, metadata::RoleKeys{{id}, 1}, canonical,
                                            one, metadata::Errc::ThresholdNotMet, role)
                      .has_value();
    }
    if (signed_by) ++st.valid_signatures;
    else st.missing_keyids.push_back(id);
  }
  return st;
}

Result<std::vector<RoleStatus>> Repository::Status() const {
  std::vector<RoleStatus> out;
  std::vector<std::string> roles{"root"};
  for (const auto& r : TargetsRoles()) roles.push_back(r);
  for (const auto& role : roles) {
    UPKEEP_ASSIGN_OR_RETURN(auto st, StatusOf(role));
    out.push_back(std::move(st));
  }
  return out;
}

Result<void> Repository::Publish(const fs::path& out) {
  // Offline roles must carry their threshold before anything is written.
  std::vector<std::string> offline{"root"};
  for (const auto& r : TargetsRoles()) offline.push_back(r);
  for (const auto& role : offline) {
    const auto expires = metadata::ParseDateTime(staged_.at(role)["signed"]["expires"].get<std::string>());
    if (!expires || *expires <= clock_->Now()) {
      return Error(Errc::Expired, role + " expired at " +
                                      staged_.at(role)["signed"]["expires"].get<std::string>() +
                                      "; restage it (add-target, rotate) and sign it again");
    }
    UPKEEP_ASSIGN_OR_RETURN(auto st, StatusOf(role));
    if (st.valid_signatures < st.threshold) {
      return Error(Errc::ThresholdNotMet,
                   role + " v" + std::to_string(st.version) + " has " +
                       std::to_string(st.valid_signatures) + " of " + std::to_string(st.threshold) +
                       " signatures; sign it with: upkeep repo sign REPO " + role + " --key KEY");
    }
  }
  UPKEEP_TRY(CheckRootContinuity());
  UPKEEP_ASSIGN_OR_RETURN(auto snapshot_keys, OnlineKeys("snapshot"));
  UPKEEP_ASSIGN_OR_RETURN(auto timestamp_keys, OnlineKeys("timestamp"));

  LocalFilesystem fs;
  for (const char* sub : {"metadata", "targets"}) {
    if (auto r = fs.CreateDirectories(out / sub); !r) return Io(r.error());
  }
  auto write_new = [&](const fs::path& path, const std::string& bytes) -> Result<void> {
    auto r = fs.WriteFileAtomic(path, bytes);
    if (!r) return Io(r.error());
    return Ok();
  };
  // 1. Target files under their hash-prefixed names (existing ones are kept).
  for (const auto& role : TargetsRoles()) {
    for (const auto& [name, info] : staged_.at(role)["signed"]["targets"].items()) {
      const fs::path dest = out / "targets" / HashPrefixed(name, info["hashes"]["sha256"]);
      if (fs::exists(dest)) continue;
      if (auto r = fs.CreateDirectories(dest.parent_path()); !r) return Io(r.error());
      auto copy = fs.CreateAtomic(dest);
      if (!copy) return Io(copy.error());
      auto read = fs.ReadChunks(dir_ / "targets" / name, [&](std::span<const char> piece) {
        return (*copy)->Append(piece);
      });
      if (!read) return Io(read.error());
      if (auto r = (*copy)->Commit(); !r) return Io(r.error());
    }
  }
  // 2. Versioned metadata (never overwritten: a client mid-update still finds what it expects).
  //    A role name with '/' lands in a subdirectory, where web servers look after decoding %2F.
  const std::string root_bytes = staged_.at("root").dump(1);
  const auto root_version = staged_.at("root")["signed"]["version"].get<std::uint64_t>();
  UPKEEP_TRY(write_new(out / "metadata" / (std::to_string(root_version) + ".root.json"), root_bytes));
  auto meta_of = [](std::uint64_t version, const std::string& bytes) {
    return Json{{"version", version},
                {"length", bytes.size()},
                {"hashes", {{"sha256", HexEncode(crypto::Sha256(bytes))}}}};
  };
  Json snapshot_meta = Json::object();
  Json published = settings_["published"];
  for (const auto& role : TargetsRoles()) {
    const std::string bytes = staged_.at(role).dump(1);
    const auto version = staged_.at(role)["signed"]["version"].get<std::uint64_t>();
    const fs::path path = out / "metadata" / (std::to_string(version) + "." + role + ".json");
    if (auto r = fs.CreateDirectories(path.parent_path()); !r) return Io(r.error());
    UPKEEP_TRY(write_new(path, bytes));
    snapshot_meta[role + ".json"] = meta_of(version, bytes);
    published[role] = version;
  }
  const auto snapshot_version = settings_["published"]["snapshot"].get<std::uint64_t>() + 1;
  Json snapshot = {{"signed",
                    {{"_type", "snapshot"}, {"spec_version", kSpecVersion},
                     {"version", snapshot_version},
                     {"expires", metadata::FormatDateTime(Expiry("snapshot"))},
                     {"meta", snapshot_meta}}},
                   {"signatures", Json::array()}};
  for (const auto& key : snapshot_keys) UPKEEP_TRY(AddSignature(snapshot, key));
  const std::string snapshot_bytes = snapshot.dump(1);
  UPKEEP_TRY(write_new(out / "metadata" / (std::to_string(snapshot_version) + ".snapshot.json"),
                       snapshot_bytes));
  // 3. The timestamp last: until it is replaced, clients see the previous complete state.
  const auto timestamp_version = settings_["published"]["timestamp"].get<std::uint64_t>() + 1;
  Json timestamp = {{"signed",
                     {{"_type", "timestamp"}, {"spec_version", kSpecVersion},
                      {"version", timestamp_version},
                      {"expires", metadata::FormatDateTime(Expiry("timestamp"))},
                      {"meta", {{"snapshot.json", meta_of(snapshot_version, snapshot_bytes)}}}}},
                    {"signatures", Json::array()}};
  for (const auto& key : timestamp_keys) UPKEEP_TRY(AddSignature(timestamp, key));
  UPKEEP_TRY(write_new(out / "metadata" / "timestamp.json", timestamp.dump(1)));

  if (auto r = fs.WriteFileAtomic(dir_ / "published-root.json", root_bytes); !r) {
    return Io(r.error());
  }
  published["root"] = root_version;
  published["snapshot"] = snapshot_version;
  published["timestamp"] = timestamp_version;
  settings_["published"] = published;
  if (auto r = fs.WriteFileAtomic(dir_ / "repo.json", settings_.dump(2) + "\n"); !r) {
    return Io(r.error());
  }
  return Ok();
}

}  // namespace upkeep::repository
