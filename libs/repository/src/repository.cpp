#include "upkeep/repository/repository.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <set>

#include "upkeep/common/encoding.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/update_metadata.hpp"

namespace upkeep::repository {

namespace fs = std::filesystem;
using metadata::Json;

namespace {

const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::AlreadyExists:
      return "AlreadyExists";
    case Errc::NotARepository:
      return "NotARepository";
    case Errc::KeyFileInsecure:
      return "KeyFileInsecure";
    case Errc::KeyNotAuthorized:
      return "KeyNotAuthorized";
    case Errc::ThresholdNotMet:
      return "ThresholdNotMet";
    case Errc::MissingOnlineKey:
      return "MissingOnlineKey";
    case Errc::InvalidTarget:
      return "InvalidTarget";
    case Errc::InvalidUpdateMetadata:
      return "InvalidUpdateMetadata";
    case Errc::UnknownRole:
      return "UnknownRole";
    case Errc::IoError:
      return "IoError";
    case Errc::InvalidDelegation:
      return "InvalidDelegation";
    case Errc::Expired:
      return "Expired";
    case Errc::CorruptFile:
      return "CorruptFile";
    case Errc::BadPassphrase:
      return "BadPassphrase";
  }
  return "Unknown";
}

constexpr std::uint64_t kMaxKeyFile = 64 * 1024;
constexpr std::uint64_t kMaxSettingsFile = 1 << 20;
constexpr std::uint64_t kMaxMetadataFile = 16 << 20;
constexpr const char* kTopLevelRoles[] = {"root", "targets", "snapshot", "timestamp"};

Error Io(const Error& e) { return Error(Errc::IoError, e.message()); }

Error Corrupt(const std::string& file, const Error& e) {
  return Error(Errc::CorruptFile, file + ": " + e.message());
}

std::string KeyIdOf(const crypto::PublicKey& pub) {
  return metadata::Key::FromPublicKey(pub).keyid;
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

bool Contains(const std::vector<std::string>& list, const std::string& value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

// Serialised metadata as written to disk.
template <typename Body>
Result<std::string> Bytes(const metadata::Metadata<Body>& md) {
  auto bytes = md.ToBytes();
  if (!bytes) return Error(Errc::CorruptFile, bytes.error().message());
  return bytes;
}

Result<std::uint64_t> SettingUint(const Json& v, const std::string& where, std::uint64_t max) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<std::int64_t>() >= 0)) {
    return Error(Errc::NotARepository, "repo.json: " + where + " must be a non-negative integer");
  }
  const auto n = v.is_number_unsigned() ? v.get<std::uint64_t>()
                                        : static_cast<std::uint64_t>(v.get<std::int64_t>());
  if (n > max) {
    return Error(Errc::NotARepository,
                 "repo.json: " + where + " must be at most " + std::to_string(max));
  }
  return n;
}

}  // namespace

Result<Settings> ParseSettings(std::string_view bytes) {
  auto doc = metadata::ParseJson(bytes);
  if (!doc) return Error(Errc::NotARepository, "repo.json: " + doc.error().message());
  auto bad = [](const std::string& what) {
    return Error(Errc::NotARepository, "repo.json: " + what);
  };
  if (!doc->is_object()) return bad("must be a JSON object");
  Settings out;
  for (const auto& [key, value] : doc->items()) {
    if (key == "format") {
      UPKEEP_ASSIGN_OR_RETURN(out.format, SettingUint(value, "\"format\"", 1));
      if (out.format != 1) return bad("\"format\" must be 1");
    } else if (key == "expiry_days") {
      if (!value.is_object()) return bad("\"expiry_days\" must be an object");
      for (const auto& [role, days] : value.items()) {
        if (!Contains({std::begin(kTopLevelRoles), std::end(kTopLevelRoles)}, role)) {
          return bad("\"expiry_days\" has an unknown role \"" + role + "\"");
        }
        UPKEEP_ASSIGN_OR_RETURN(auto n, SettingUint(days, "expiry_days." + role, kMaxExpiryDays));
        if (n == 0) return bad("expiry_days." + role + " must be at least 1");
        out.expiry_days.emplace(role, static_cast<std::uint32_t>(n));
      }
    } else if (key == "published") {
      if (!value.is_object()) return bad("\"published\" must be an object");
      for (const auto& [role, version] : value.items()) {
        UPKEEP_ASSIGN_OR_RETURN(auto n, SettingUint(version, "published." + role, kMaxVersion));
        out.published.emplace(role, n);
      }
    } else if (key == "delegations") {
      if (!value.is_object()) return bad("\"delegations\" must be an object");
      for (const auto& [role, delegator] : value.items()) {
        if (!delegator.is_string()) return bad("delegations." + role + " must be a string");
        out.delegations.emplace(role, delegator.get<std::string>());
      }
    } else {
      return bad("unknown key \"" + key + "\"");
    }
  }
  if (!doc->contains("format")) return bad("\"format\" is missing");
  for (const char* role : kTopLevelRoles) {
    if (!out.expiry_days.contains(role))
      return bad(std::string("expiry_days.") + role + " is missing");
    if (!out.published.contains(role)) return bad(std::string("published.") + role + " is missing");
  }
  for (const auto& [role, delegator] : out.delegations) {
    const bool top_level = Contains({std::begin(kTopLevelRoles), std::end(kTopLevelRoles)}, role);
    // Role names become file names under REPO/staged and the published metadata directory.
    const bool usable_name =
        metadata::ValidateTargetPath(role, metadata::TargetPathRules::kPublish).has_value();
    if (!usable_name || top_level || delegator == "root" || delegator == role ||
        (delegator != "targets" && !out.delegations.contains(delegator))) {
      return bad("delegation \"" + role + "\" from \"" + delegator + "\" is not valid");
    }
  }
  return out;
}

std::string SettingsToBytes(const Settings& settings) {
  Json doc = {{"format", settings.format},
              {"expiry_days", settings.expiry_days},
              {"published", settings.published},
              {"delegations", Json::object()}};
  for (const auto& [role, delegator] : settings.delegations) doc["delegations"][role] = delegator;
  // Role names were checked as target-role names (UTF-8) before they were stored.
  // nothrow: the replace handler never throws on text
  return doc.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("repository", &ErrcName);
  return category;
}

metadata::TimePoint Repository::Expiry(const std::string& role) const {
  auto it = settings_.expiry_days.find(role);
  if (it == settings_.expiry_days.end()) it = settings_.expiry_days.find("targets");
  const std::uint32_t days = it == settings_.expiry_days.end() ? 1 : it->second;
  return clock_->Now() + std::chrono::days(days);
}

Result<void> Repository::WriteKey(const crypto::PrivateKey& key, const std::string& keyid) {
  auto pem = key.ToPem(passphrase_.view());
  if (!pem) return std::move(pem).error();
  // nothrow: the error case returned just above
  crypto::SecretString secret(std::move(pem).value());
  auto written = crypto::WritePrivateKeyFile(dir_ / "keys" / (keyid + ".pem"), secret.view());
  if (!written) return Error(Errc::IoError, written.error().message());
  return Ok();
}

Result<void> Repository::SaveSettings() {
  if (auto r = fs_->WriteFileAtomic(dir_ / "repo.json", SettingsToBytes(settings_)); !r) {
    return Io(r.error());
  }
  return Ok();
}

Result<Repository> Repository::Init(const fs::path& dir, const InitOptions& o, Filesystem& fs,
                                    const Clock& clock) {
  if (fs.Exists(dir / "repo.json").value_or(false)) {
    return Error(Errc::AlreadyExists, dir.string() + " already holds a repository");
  }
  if (o.root_threshold < 1 || o.root_threshold > o.root_keys ||
      (!o.targets_token_key && (o.targets_threshold < 1 || o.targets_threshold > o.targets_keys))) {
    return Error(Errc::ThresholdNotMet, "thresholds must be between 1 and the number of keys");
  }
  for (std::uint32_t days : {o.root_expiry_days, o.targets_expiry_days, o.snapshot_expiry_days,
                             o.timestamp_expiry_days}) {
    if (days < 1 || days > kMaxExpiryDays) {
      return Error(Errc::NotARepository, "expiry periods must be between 1 and " +
                                             std::to_string(kMaxExpiryDays) + " days");
    }
  }
  for (const char* sub : {"keys", "staged", "targets"}) {
    if (auto r = fs.CreateDirectories(dir / sub); !r) return Io(r.error());
  }
  if (::chmod((dir / "keys").c_str(), 0700) != 0) {
    return Error(Errc::IoError, (dir / "keys").string() + ": cannot restrict to 0700");
  }

  Repository repo(dir, fs, clock);
  repo.passphrase_ = o.passphrase;
  repo.settings_.expiry_days = {{"root", o.root_expiry_days},
                                {"targets", o.targets_expiry_days},
                                {"snapshot", o.snapshot_expiry_days},
                                {"timestamp", o.timestamp_expiry_days}};
  repo.settings_.published = {{"root", 0}, {"targets", 0}, {"snapshot", 0}, {"timestamp", 0}};

  metadata::Root root = metadata::Root::Create(repo.Expiry("root"));
  root.body.consistent_snapshot = o.consistent_snapshot;
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
    // nothrow: the error case returned just above
    token_key = std::move(key).value();
  }
  for (const auto& [role, counts] : plan) {
    metadata::RoleKeys role_keys;
    if (std::string_view(role) == "targets" && token_key) {
      const metadata::Key key = metadata::Key::FromPublicKey(token_key->public_key());
      root.body.keys[key.keyid] = key;
      role_keys.keyids.push_back(key.keyid);
      generated[role].push_back(*token_key);
      root.body.roles[role] = role_keys;
      continue;
    }
    for (std::uint32_t i = 0; i < counts.first; ++i) {
      UPKEEP_ASSIGN_OR_RETURN(auto private_key, crypto::PrivateKey::Generate(o.key_type));
      const metadata::Key key = metadata::Key::FromPublicKey(private_key.public_key());
      root.body.keys[key.keyid] = key;
      role_keys.keyids.push_back(key.keyid);
      UPKEEP_TRY(repo.WriteKey(private_key, key.keyid));
      generated[role].push_back(std::move(private_key));
    }
    role_keys.threshold = counts.second;
    root.body.roles[role] = role_keys;
  }

  metadata::Targets targets = metadata::Targets::Create(repo.Expiry("targets"));
  for (const auto& key : generated["root"]) UPKEEP_TRY(root.Sign(key));
  for (const auto& key : generated["targets"]) UPKEEP_TRY(targets.Sign(key));
  repo.root_ = std::move(root);
  repo.targets_.emplace("targets", std::move(targets));
  UPKEEP_TRY(repo.Save("root"));
  UPKEEP_TRY(repo.Save("targets"));
  UPKEEP_TRY(repo.SaveSettings());
  return repo;
}

Result<Repository> Repository::Open(const fs::path& dir, Filesystem& fs, const Clock& clock,
                                    crypto::SecretString passphrase) {
  Repository repo(dir, fs, clock);
  repo.passphrase_ = std::move(passphrase);
  UPKEEP_TRY(repo.Load());
  return repo;
}

Result<void> Repository::Load() {
  auto settings = fs_->ReadFile(dir_ / "repo.json", kMaxSettingsFile);
  if (!settings) {
    return Error(Errc::NotARepository,
                 dir_.string() + ": no readable repo.json: " + settings.error().message());
  }
  UPKEEP_ASSIGN_OR_RETURN(settings_, ParseSettings(*settings));
  std::vector<std::string> roles{"root"};
  for (const auto& r : TargetsRoles()) roles.push_back(r);
  for (const auto& role : roles) {
    const std::string name = "staged/" + PercentEncode(role) + ".json";
    auto bytes = fs_->ReadFile(dir_ / name, kMaxMetadataFile);
    if (!bytes) return Corrupt(name, bytes.error());
    if (role == "root") {
      auto root = metadata::ParseRoot(*bytes);
      if (!root) return Corrupt(name, root.error());
      // nothrow: the error case returned just above
      root_ = std::move(root).value();
      if (root_.version > kMaxVersion) {
        return Error(Errc::CorruptFile,
                     name + ": version is larger than " + std::to_string(kMaxVersion));
      }
    } else {
      auto targets = metadata::ParseTargets(*bytes);
      if (!targets) return Corrupt(name, targets.error());
      if (targets->version > kMaxVersion) {
        return Error(Errc::CorruptFile,
                     name + ": version is larger than " + std::to_string(kMaxVersion));
      }
      for (const auto& [path, target] : targets->body.targets) {
        if (auto ok = metadata::ValidateTargetFile(target, metadata::TargetPathRules::kPublish);
            !ok) {
          return Corrupt(name, ok.error());
        }
        if (!target.hashes.contains("sha256")) {
          return Error(Errc::CorruptFile, name + ": target " + path + " has no sha256 hash");
        }
      }
      // nothrow: the error case returned just above
      targets_.insert_or_assign(role, std::move(targets).value());
    }
  }
  return Ok();
}

Result<void> Repository::Save(const std::string& role) {
  Result<std::string> bytes = role == "root" ? Bytes(root_) : Bytes(targets_.at(role));
  if (!bytes) return std::move(bytes).error();
  auto r = fs_->WriteFileAtomic(dir_ / "staged" / (PercentEncode(role) + ".json"), *bytes + "\n");
  if (!r) return Io(r.error());
  return Ok();
}

Result<crypto::PrivateKey> Repository::LoadKey(const fs::path& file) const {
  struct stat st {};
  if (::lstat(file.c_str(), &st) != 0) return Error(Errc::IoError, file.string() + ": not found");
  if (!S_ISREG(st.st_mode)) {
    return Error(Errc::KeyFileInsecure, file.string() + " is not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    return Error(Errc::KeyFileInsecure,
                 file.string() + " is readable by others; run chmod 600 on it");
  }
  auto read = fs_->ReadFile(file, kMaxKeyFile);
  if (!read) return Io(read.error());
  // nothrow: the error case returned just above
  const crypto::SecretString pem(std::move(read).value());
  auto key = crypto::PrivateKey::FromPem(pem.view(), passphrase_.view());
  if (!key) {
    if (key.error().code() == crypto::Errc::BadPassphrase) {
      return Error(Errc::BadPassphrase,
                   file.string() + ": " + key.error().message() + " (set UPKEEP_KEY_PASSPHRASE)");
    }
    return Corrupt(file.string(), key.error());
  }
  return key;
}

Result<std::optional<metadata::Root>> Repository::PublishedRoot() const {
  auto exists = fs_->Exists(dir_ / "published-root.json");
  if (!exists) return Io(exists.error());
  if (!*exists) return std::optional<metadata::Root>();
  auto bytes = fs_->ReadFile(dir_ / "published-root.json", kMaxMetadataFile);
  if (!bytes) return Io(bytes.error());
  auto root = metadata::ParseRoot(*bytes);
  if (!root) return Corrupt("published-root.json", root.error());
  // nothrow: the error case returned just above
  return std::optional<metadata::Root>(std::move(root).value());
}

Result<std::vector<crypto::PrivateKey>> Repository::OnlineKeys(const std::string& role) const {
  const metadata::RoleKeys& r = root_.body.roles.at(role);
  std::vector<crypto::PrivateKey> out;
  for (const auto& id : r.keyids) {
    const fs::path file = dir_ / "keys" / (id + ".pem");
    auto exists = fs_->Exists(file);
    if (!exists) return Io(exists.error());
    if (!*exists) continue;
    UPKEEP_ASSIGN_OR_RETURN(auto key, LoadKey(file));
    out.push_back(std::move(key));
    if (out.size() >= r.threshold) break;
  }
  if (out.size() < r.threshold) {
    return Error(Errc::MissingOnlineKey,
                 "not enough " + role + " keys in " + (dir_ / "keys").string());
  }
  return out;
}

std::vector<std::string> Repository::TargetsRoles() const {
  std::vector<std::string> out{"targets"};
  for (const auto& [name, delegator] : settings_.delegations) out.push_back(name);
  return out;
}

std::optional<metadata::SuccinctRoles> Repository::BinsNamed(const std::string& prefix) const {
  for (const auto& [role, targets] : targets_) {
    const auto& delegations = targets.body.delegations;
    if (delegations && delegations->succinct && delegations->succinct->name_prefix == prefix) {
      return delegations->succinct;
    }
  }
  return std::nullopt;
}

void Repository::Restage(const std::string& role) {
  auto published = settings_.published.find(role);
  metadata::Targets& t = TargetsRole(role);
  t.version = (published == settings_.published.end() ? 0 : published->second) + 1;
  t.expires = Expiry(role);
  t.ClearSignatures();  // changed content: the threshold must sign again
}

Result<void> Repository::AddTarget(const fs::path& file, const std::string& name,
                                   const Json& custom, const std::string& requested_role) {
  // A hash-bin prefix routes the target to the bin its path hashes to.
  std::string role = requested_role;
  if (auto bins = BinsNamed(requested_role)) role = bins->RoleForTarget(name);
  if (!HasTargetsRole(role)) return Error(Errc::UnknownRole, "no targets role " + role);
  // The name becomes a path under REPO/targets and part of every client's URL.
  if (auto ok = metadata::ValidateTargetPath(name, metadata::TargetPathRules::kPublish); !ok) {
    return Error(Errc::InvalidTarget, ok.error().message());
  }
  if (role != "targets") {
    // A delegated role may only list paths its delegation covers.
    const metadata::Targets& parent = TargetsRole(settings_.delegations.at(role));
    const auto& delegations = parent.body.delegations;
    if (!delegations) {
      return Error(Errc::InvalidDelegation,
                   settings_.delegations.at(role) + " does not delegate to " + role);
    }
    if (delegations->succinct && delegations->succinct->RoleForTarget(name) != role) {
      return Error(Errc::InvalidTarget,
                   name + " belongs in " + delegations->succinct->RoleForTarget(name));
    }
    for (const auto& d : delegations->roles) {
      if (d.name == role && !d.IsDelegatedPath(name)) {
        return Error(Errc::InvalidTarget, name + " is outside the paths delegated to " + role);
      }
    }
  }
  if (auto m = metadata::ParseUpdateMetadata(custom); !m) {
    return Error(Errc::InvalidUpdateMetadata, m.error().message());
  }
  if (auto r = fs_->CreateDirectories((dir_ / "targets" / name).parent_path()); !r) {
    return Io(r.error());
  }
  auto out = fs_->CreateAtomic(dir_ / "targets" / name);
  if (!out) return Io(out.error());
  crypto::Hasher hash(crypto::HashAlgorithm::Sha256);
  std::uint64_t length = 0;
  auto copied = fs_->ReadChunks(file, [&](std::span<const char> piece) -> Result<void> {
    hash.Update(std::string_view(piece.data(), piece.size()));
    length += piece.size();
    return (*out)->Append(piece);
  });
  if (!copied) return Error(Errc::InvalidTarget, file.string() + ": " + copied.error().message());
  if (auto r = (*out)->Commit(); !r) return Io(r.error());

  metadata::TargetFile target;
  target.path = name;
  target.length = length;
  target.hashes["sha256"] = HexEncode(hash.Final());
  target.custom = custom;
  TargetsRole(role).body.targets.insert_or_assign(name, std::move(target));
  Restage(role);
  return Save(role);
}

Result<void> Repository::RemoveTarget(const std::string& name, const std::string& role) {
  if (!HasTargetsRole(role)) return Error(Errc::UnknownRole, "no targets role " + role);
  if (TargetsRole(role).body.targets.erase(name) == 0) {
    return Error(Errc::InvalidTarget, "no target \"" + name + "\" in " + role);
  }
  Restage(role);
  return Save(role);
}

Result<std::vector<std::string>> Repository::Delegate(const Delegation& d) {
  const bool top_level =
      d.name == "root" || d.name == "targets" || d.name == "snapshot" || d.name == "timestamp";
  if (d.name.empty() || top_level || HasTargetsRole(d.name) || d.name.size() > 255 ||
      !metadata::ValidateTargetPath(d.name, metadata::TargetPathRules::kPublish)) {
    return Error(Errc::InvalidDelegation, "cannot delegate to \"" + d.name + "\"");
  }
  if (!HasTargetsRole(d.delegator))
    return Error(Errc::UnknownRole, "no targets role " + d.delegator);
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
  metadata::Targets& delegator = TargetsRole(d.delegator);
  if (delegator.body.delegations && (bins || delegator.body.delegations->succinct)) {
    return Error(Errc::InvalidDelegation,
                 d.delegator + " already delegates; hash bins cannot be mixed with other roles");
  }
  std::vector<std::string> new_roles;
  metadata::SuccinctRoles succinct;
  if (bins) {
    succinct.bit_length = d.bin_bits;
    succinct.name_prefix = d.name;
    for (std::uint64_t bin = 0; bin < succinct.NumberOfBins(); ++bin) {
      new_roles.push_back(BinName(succinct, bin));
    }
  } else {
    new_roles.push_back(d.name);
  }
  for (const auto& name : new_roles) {
    if (HasTargetsRole(name)) return Error(Errc::InvalidDelegation, name + " exists already");
  }

  metadata::Delegations delegations = delegator.body.delegations.value_or(metadata::Delegations{});
  metadata::RoleKeys role_keys;
  role_keys.threshold = d.threshold;
  std::vector<crypto::PrivateKey> keys;
  for (std::uint32_t i = 0; i < d.keys; ++i) {
    UPKEEP_ASSIGN_OR_RETURN(auto private_key, crypto::PrivateKey::Generate(d.key_type));
    const metadata::Key key = metadata::Key::FromPublicKey(private_key.public_key());
    UPKEEP_TRY(WriteKey(private_key, key.keyid));
    delegations.keys[key.keyid] = key;
    role_keys.keyids.push_back(key.keyid);
    keys.push_back(std::move(private_key));
  }
  if (bins) {
    succinct.keys = role_keys;
    delegations.succinct = succinct;
  } else {
    metadata::DelegatedRole role;
    role.name = d.name;
    role.keys = role_keys;
    role.terminating = d.terminating;
    if (!d.paths.empty())
      role.paths = d.paths;
    else
      role.path_hash_prefixes = d.hash_prefixes;
    delegations.roles.push_back(std::move(role));
  }
  delegator.body.delegations = std::move(delegations);
  Restage(d.delegator);

  for (const auto& name : new_roles) {
    metadata::Targets role = metadata::Targets::Create(Expiry(name));
    for (const auto& key : keys) UPKEEP_TRY(role.Sign(key));
    targets_.insert_or_assign(name, std::move(role));
    settings_.delegations[name] = d.delegator;
    UPKEEP_TRY(Save(name));
  }
  UPKEEP_TRY(Save(d.delegator));
  UPKEEP_TRY(SaveSettings());
  std::vector<std::string> ids = role_keys.keyids;
  return ids;
}

Result<std::pair<metadata::KeyMap, metadata::RoleKeys>> Repository::SignersOf(
    const std::string& role) const {
  if (role == "root" || role == "targets") {
    return std::pair(root_.body.keys, root_.body.roles.at(role));
  }
  auto delegator = settings_.delegations.find(role);
  if (delegator == settings_.delegations.end()) return Error(Errc::UnknownRole, "no role " + role);
  const auto& delegations = targets_.at(delegator->second).body.delegations;
  auto keys = delegations ? delegations->KeysFor(role) : std::nullopt;
  if (!keys) {
    return Error(Errc::InvalidDelegation, delegator->second + " does not delegate to " + role);
  }
  return std::pair(delegations->keys, *keys);
}

Result<void> Repository::Sign(const std::string& role, const fs::path& key_file) {
  if (role != "root" && !HasTargetsRole(role) && !BinsNamed(role)) {
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
  if (role != "root" && !HasTargetsRole(role)) {
    return Error(Errc::UnknownRole, "no offline role " + role);
  }
  const std::string id = KeyIdOf(key.public_key());
  UPKEEP_ASSIGN_OR_RETURN(auto signers, SignersOf(role));
  bool authorized = Contains(signers.second.keyids, id);
  if (!authorized && role == "root") {
    UPKEEP_ASSIGN_OR_RETURN(auto published, PublishedRoot());
    authorized = published && Contains(published->body.roles.at("root").keyids, id);
  }
  if (!authorized) return Error(Errc::KeyNotAuthorized, "key " + id + " is not a " + role + " key");
  if (role == "root") {
    UPKEEP_TRY(root_.Sign(key));
  } else {
    UPKEEP_TRY(TargetsRole(role).Sign(key));
  }
  return Save(role);
}

Result<std::vector<std::string>> Repository::Rotate(const std::string& role, std::uint32_t add_keys,
                                                    const std::vector<std::string>& remove_keyids,
                                                    std::optional<std::uint32_t> threshold,
                                                    crypto::KeyAlgorithm key_type) {
  if (role != "root" && role != "targets" && role != "snapshot" && role != "timestamp") {
    return Error(Errc::UnknownRole, "no top-level role " + role);
  }
  metadata::Root root = root_;
  std::vector<std::string>& ids = root.body.roles.at(role).keyids;
  for (const auto& id : remove_keyids) {
    auto it = std::find(ids.begin(), ids.end(), id);
    if (it == ids.end()) return Error(Errc::KeyNotAuthorized, id + " is not a " + role + " key");
    ids.erase(it);
  }
  std::vector<std::string> added;
  std::vector<std::pair<std::string, crypto::PrivateKey>> new_keys;
  for (std::uint32_t i = 0; i < add_keys; ++i) {
    UPKEEP_ASSIGN_OR_RETURN(auto private_key, crypto::PrivateKey::Generate(key_type));
    const metadata::Key key = metadata::Key::FromPublicKey(private_key.public_key());
    root.body.keys[key.keyid] = key;
    ids.push_back(key.keyid);
    added.push_back(key.keyid);
    new_keys.emplace_back(key.keyid, std::move(private_key));
  }
  if (threshold) root.body.roles.at(role).threshold = *threshold;
  const std::uint64_t t = root.body.roles.at(role).threshold;
  if (t < 1 || t > ids.size()) {
    return Error(Errc::ThresholdNotMet, role + " would have " + std::to_string(ids.size()) +
                                            " keys for a threshold of " + std::to_string(t));
  }
  // Drop key objects no role lists any more (a revoked key leaves the root entirely).
  std::set<std::string, std::less<>> used;
  for (const auto& [name, r] : root.body.roles) used.insert(r.keyids.begin(), r.keyids.end());
  std::erase_if(root.body.keys, [&](const auto& entry) { return !used.contains(entry.first); });
  for (const auto& [id, private_key] : new_keys) UPKEEP_TRY(WriteKey(private_key, id));
  root.version = settings_.published.at("root") + 1;
  root.expires = Expiry("root");
  root.ClearSignatures();
  root_ = std::move(root);
  UPKEEP_TRY(Save("root"));
  return added;
}

Result<void> Repository::CheckRootContinuity() const {
  UPKEEP_ASSIGN_OR_RETURN(auto prev, PublishedRoot());
  if (!prev) return Ok();  // nothing published yet
  const metadata::Root& next = root_;
  if (next.version == prev->version) return Ok();
  if (next.version != prev->version + 1) {
    return Error(Errc::ThresholdNotMet,
                 "staged root must be version " + std::to_string(prev->version + 1));
  }
  UPKEEP_ASSIGN_OR_RETURN(std::string canonical, next.CanonicalSigned());
  auto r = metadata::VerifyThreshold(prev->body.keys, prev->body.roles.at("root"), canonical,
                                     next.signatures, metadata::Errc::RootNotSignedByTrustedRoot,
                                     "root");
  if (!r) {
    return Error(Errc::ThresholdNotMet, "root v" + std::to_string(next.version) +
                                            " also needs the threshold of the published root v" +
                                            std::to_string(prev->version) +
                                            "'s keys: " + r.error().message());
  }
  return Ok();
}

Result<RoleStatus> Repository::StatusOf(const std::string& role) const {
  UPKEEP_ASSIGN_OR_RETURN(auto signers, SignersOf(role));
  const metadata::KeyMap& key_map = signers.first;
  const metadata::RoleKeys& keys = signers.second;
  const bool is_root = role == "root";
  const auto& signatures = is_root ? root_.signatures : targets_.at(role).signatures;
  auto canonical = is_root ? root_.CanonicalSigned() : targets_.at(role).CanonicalSigned();
  if (!canonical) return Error(Errc::CorruptFile, role + ": " + canonical.error().message());
  RoleStatus st;
  st.role = role;
  st.version = is_root ? root_.version : targets_.at(role).version;
  st.threshold = keys.threshold;
  for (const auto& id : keys.keyids) {
    bool signed_by = false;
    for (const auto& s : signatures) {
      if (s.keyid != id) continue;
      signed_by = metadata::VerifyThreshold(key_map, metadata::RoleKeys{{id}, 1, Json::object()},
                                            *canonical, {s}, metadata::Errc::ThresholdNotMet, role)
                      .has_value();
    }
    if (signed_by)
      ++st.valid_signatures;
    else
      st.missing_keyids.push_back(id);
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
    const metadata::TimePoint expires = role == "root" ? root_.expires : targets_.at(role).expires;
    if (expires <= clock_->Now()) {
      return Error(Errc::Expired, role + " expired at " + metadata::FormatDateTime(expires) +
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

  for (const char* sub : {"metadata", "targets"}) {
    if (auto r = fs_->CreateDirectories(out / sub); !r) return Io(r.error());
  }
  auto write_new = [&](const fs::path& path, const std::string& bytes) -> Result<void> {
    auto r = fs_->WriteFileAtomic(path, bytes);
    if (!r) return Io(r.error());
    return Ok();
  };
  // 1. Target files under their hash-prefixed names (existing ones are kept).
  for (const auto& role : TargetsRoles()) {
    for (const auto& [name, info] : targets_.at(role).body.targets) {
      const fs::path dest = out / "targets" / HashPrefixed(name, info.hashes.at("sha256"));
      auto exists = fs_->Exists(dest);
      if (!exists) return Io(exists.error());
      if (*exists) continue;
      if (auto r = fs_->CreateDirectories(dest.parent_path()); !r) return Io(r.error());
      auto copy = fs_->CreateAtomic(dest);
      if (!copy) return Io(copy.error());
      auto read = fs_->ReadChunks(dir_ / "targets" / name, [&](std::span<const char> piece) {
        return (*copy)->Append(piece);
      });
      if (!read) return Io(read.error());
      if (auto r = (*copy)->Commit(); !r) return Io(r.error());
    }
  }
  // 2. Versioned metadata (never overwritten: a client mid-update still finds what it expects).
  //    A role name with '/' lands in a subdirectory, where web servers look after decoding %2F.
  UPKEEP_ASSIGN_OR_RETURN(const std::string root_bytes, Bytes(root_));
  UPKEEP_TRY(
      write_new(out / "metadata" / (std::to_string(root_.version) + ".root.json"), root_bytes));
  auto meta_of = [](std::uint64_t version, const std::string& bytes) {
    metadata::MetaFile meta;
    meta.version = version;
    meta.length = bytes.size();
    meta.hashes = metadata::Hashes{{"sha256", HexEncode(crypto::Sha256(bytes))}};
    return meta;
  };
  metadata::Snapshot snapshot = metadata::Snapshot::Create(Expiry("snapshot"));
  Settings published = settings_;
  for (const auto& role : TargetsRoles()) {
    const metadata::Targets& t = targets_.at(role);
    UPKEEP_ASSIGN_OR_RETURN(const std::string bytes, Bytes(t));
    const fs::path path = out / "metadata" / (std::to_string(t.version) + "." + role + ".json");
    if (auto r = fs_->CreateDirectories(path.parent_path()); !r) return Io(r.error());
    UPKEEP_TRY(write_new(path, bytes));
    snapshot.body.meta[role + ".json"] = meta_of(t.version, bytes);
    published.published[role] = t.version;
  }
  snapshot.version = settings_.published.at("snapshot") + 1;
  for (const auto& key : snapshot_keys) UPKEEP_TRY(snapshot.Sign(key));
  UPKEEP_ASSIGN_OR_RETURN(const std::string snapshot_bytes, Bytes(snapshot));
  UPKEEP_TRY(write_new(out / "metadata" / (std::to_string(snapshot.version) + ".snapshot.json"),
                       snapshot_bytes));
  // 3. The timestamp last: until it is replaced, clients see the previous complete state.
  metadata::Timestamp timestamp = metadata::Timestamp::Create(Expiry("timestamp"));
  timestamp.version = settings_.published.at("timestamp") + 1;
  timestamp.body.snapshot_meta = meta_of(snapshot.version, snapshot_bytes);
  for (const auto& key : timestamp_keys) UPKEEP_TRY(timestamp.Sign(key));
  UPKEEP_ASSIGN_OR_RETURN(const std::string timestamp_bytes, Bytes(timestamp));
  UPKEEP_TRY(write_new(out / "metadata" / "timestamp.json", timestamp_bytes));

  if (auto r = fs_->WriteFileAtomic(dir_ / "published-root.json", root_bytes); !r) {
    return Io(r.error());
  }
  published.published["root"] = root_.version;
  published.published["snapshot"] = snapshot.version;
  published.published["timestamp"] = timestamp.version;
  settings_ = std::move(published);
  return SaveSettings();
}

}  // namespace upkeep::repository
