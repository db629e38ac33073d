// upkeep-server director rotate: the next director root, made where the root keys are (offline).

#include "director_cli.hpp"

#include <filesystem>
#include <fstream>
#include <ostream>

#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/utf8.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/metadata/director.hpp"
#include "upkeep/metadata/errc.hpp"
#include "upkeep/server/https_server.hpp"

namespace upkeep::server {

namespace {

namespace fs = std::filesystem;

Result<std::string> Read(const std::string& path) {
  const LocalFilesystem local;
  return local.ReadFile(path, 1 << 20);
}

Result<crypto::PrivateKey> ReadKey(const std::string& path) {
  UPKEEP_ASSIGN_OR_RETURN(std::string pem, Read(path));
  auto key = crypto::PrivateKey::FromPem(pem);
  if (!key) return std::move(key).error().WithContext(path);
  return key;
}

// The public keys and threshold a root gives a role.
Result<metadata::DirectorRoleKeys> RoleOf(const metadata::Root& root, const std::string& role) {
  auto it = root.body.roles.find(role);
  if (it == root.body.roles.end()) return Error(Errc::InvalidArgument, "root has no " + role);
  metadata::DirectorRoleKeys out;
  out.threshold = it->second.threshold;
  for (const std::string& id : it->second.keyids) {
    auto key = root.body.keys.find(id);
    if (key == root.body.keys.end() || key->second.PublicKey() == nullptr) {
      return Error(Errc::InvalidArgument, "root: unusable key " + id + " for " + role);
    }
    out.keys.push_back(*key->second.PublicKey());
  }
  return out;
}

Result<std::string> Rotate(const DirectorRotateOptions& o, const Clock& clock, std::ostream& out) {
  UPKEEP_ASSIGN_OR_RETURN(std::string current_bytes, Read(o.current_root));
  UPKEEP_ASSIGN_OR_RETURN(metadata::Root current, metadata::ParseRoot(current_bytes));
  metadata::DirectorRootKeys keys;
  UPKEEP_ASSIGN_OR_RETURN(keys.root, RoleOf(current, "root"));
  UPKEEP_ASSIGN_OR_RETURN(keys.targets, RoleOf(current, "targets"));
  UPKEEP_ASSIGN_OR_RETURN(keys.snapshot, RoleOf(current, "snapshot"));
  UPKEEP_ASSIGN_OR_RETURN(keys.timestamp, RoleOf(current, "timestamp"));

  std::vector<crypto::PrivateKey> signers;
  for (const std::string& path : o.root_keys) {
    UPKEEP_ASSIGN_OR_RETURN(crypto::PrivateKey key, ReadKey(path));
    signers.push_back(std::move(key));
  }
  if (!o.new_root_keys.empty()) {
    keys.root.keys.clear();
    for (const std::string& path : o.new_root_keys) {
      UPKEEP_ASSIGN_OR_RETURN(crypto::PrivateKey key, ReadKey(path));
      keys.root.keys.push_back(key.public_key());
      signers.push_back(std::move(key));
    }
    keys.root.threshold = o.new_root_threshold;
  }
  if (!o.new_online_dir.empty()) {
    std::error_code ec;
    fs::create_directories(o.new_online_dir, ec);
    if (ec) return Error(Errc::InvalidArgument, "cannot create " + o.new_online_dir);
    for (auto [role, name] : {std::pair{&keys.targets, "targets.key"},
                              std::pair{&keys.snapshot, "snapshot.key"},
                              std::pair{&keys.timestamp, "timestamp.key"}}) {
      UPKEEP_ASSIGN_OR_RETURN(crypto::PrivateKey key,
                              crypto::PrivateKey::Generate(crypto::KeyAlgorithm::Ed25519));
      UPKEEP_ASSIGN_OR_RETURN(std::string pem, key.ToPem());
      UPKEEP_TRY(crypto::WritePrivateKeyFile(fs::path(o.new_online_dir) / name, pem));
      *role = metadata::DirectorRoleKeys{{key.public_key()}, 1};
    }
  }
  UPKEEP_ASSIGN_OR_RETURN(
      std::string next,
      metadata::CreateDirectorRoot(keys, signers, current.version + 1,
                                   clock.Now() + std::chrono::days(o.expires_days)));
  // Devices accept the new root only when the current root's threshold of root keys signed it
  // (Uptane 5.4.4.3): refuse to write one they would refuse.
  UPKEEP_ASSIGN_OR_RETURN(metadata::Root parsed, metadata::ParseRoot(next));
  UPKEEP_ASSIGN_OR_RETURN(std::string signed_bytes, parsed.CanonicalSigned());
  auto root_role = current.body.roles.find("root");
  if (root_role == current.body.roles.end()) return Error(Errc::InvalidArgument, "no root role");
  UPKEEP_TRY(metadata::VerifyThreshold(current.body.keys, root_role->second, signed_bytes,
                                       parsed.signatures, metadata::Errc::ThresholdNotMet,
                                       "root"));
  std::error_code ec;
  if (fs::exists(o.output, ec)) return Error(Errc::Conflict, o.output + " exists already");
  std::ofstream file(o.output, std::ios::binary);
  file << next;
  file.close();
  if (!file) return Error(Errc::InvalidArgument, "cannot write " + o.output);
  out << "director root " << current.version + 1 << " written to " << o.output << "\n";
  return next;
}

}  // namespace

void AddDirectorCommands(CLI::App& app, DirectorRotateOptions& o) {
  auto* director = app.add_subcommand("director", "the director repository's offline root");
  director->require_subcommand(1);
  auto* rotate = director->add_subcommand(
      "rotate", "sign the next director root with the current root keys (run offline)");
  rotate->add_option("--root", o.current_root, "the current director root (N.root.json)")
      ->required();
  rotate->add_option("--root-key", o.root_keys, "a current root key (repeat up to its threshold)")
      ->required();
  rotate->add_option("--new-root-key", o.new_root_keys,
                     "replace the root keys with these (they sign too; repeatable)");
  rotate->add_option("--new-root-threshold", o.new_root_threshold, "threshold of the new root keys")
      ->capture_default_str()
      ->check(CLI::Range(1u, 100u));
  rotate->add_option("--new-online-keys", o.new_online_dir,
                     "generate new targets, snapshot and timestamp keys into this directory");
  rotate->add_option("--expires-days", o.expires_days, "validity of the new root")
      ->capture_default_str()
      ->check(CLI::Range(1u, 36500u));
  rotate->add_option("-o,--output", o.output, "where to write N+1.root.json")->required();
}

std::optional<int> RunDirectorCommands(const CLI::App& app, const DirectorRotateOptions& o,
                                       const Clock& clock, std::ostream& out, std::ostream& err) {
  const CLI::App* director = app.get_subcommand("director");
  if (!director->parsed()) return std::nullopt;
  auto next = Rotate(o, clock, out);
  if (!next) {
    err << "upkeep-server: " << PrintableText(next.error().ToString()) << "\n";
    if (next.error().code() == Errc::Conflict) return kExitConflict;
    if (next.error().code().category() == metadata::ErrcCategory()) return kExitRejected;
    return kExitUsage;
  }
  out << "next: add it to [director].roots (after the current root)"
      << (o.new_online_dir.empty() ? ""
                                   : ", point targets_key, snapshot_key and timestamp_key at the "
                                     "new keys")
      << " and restart the server; devices follow the rotation at their next check-in\n";
  return kExitOk;
}

}  // namespace upkeep::server
