#include "cli.hpp"

#include <CLI/CLI.hpp>
#include <filesystem>
#include <optional>
#include <ostream>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/install/bundle.hpp"
#include "upkeep/install/payload.hpp"
#include "upkeep/metadata/updater.hpp"
#include "upkeep/repository/repository.hpp"

namespace upkeep::tool {

namespace fs = std::filesystem;

namespace {

constexpr int kOk = 0;
constexpr int kFailed = 1;
constexpr int kUsage = 2;

int Fail(std::ostream& err, const Error& e) {
  err << "upkeep: " << e.ToString() << "\n";
  return kFailed;
}

struct ImageOptions {
  std::string image;
  std::string out_dir;
  std::uint64_t chunk_size = install::kDefaultChunkSize;
  int level = 3;
  unsigned threads = 0;
  std::string compression = "zstd";
  std::string index;
  std::string payload;
  std::string image_out;
};

int ImageBuild(const ImageOptions& o, std::ostream& out, std::ostream& err) {
  LocalFilesystem fs;
  if (auto r = fs.CreateDirectories(o.out_dir); !r) return Fail(err, r.error());
  const std::string base = fs::path(o.image).filename().string();
  const fs::path payload = fs::path(o.out_dir) / (base + ".payload");
  const fs::path index_path = fs::path(o.out_dir) / (base + ".chunks.json");
  install::BuildOptions options;
  options.chunk_size = o.chunk_size;
  options.level = o.level;
  options.threads = o.threads;
  options.compression =
      o.compression == "none" ? install::ChunkCompression::None : install::ChunkCompression::Zstd;
  auto index = install::BuildPayload(o.image, payload, options);
  if (!index) return Fail(err, index.error());
  if (auto r = fs.WriteFileAtomic(index_path, install::SerializeChunkIndex(*index)); !r) {
    return Fail(err, r.error());
  }
  out << "image    " << o.image << " (" << index->image_size << " bytes, sha256 "
      << index->image_sha256 << ")\n"
      << "payload  " << payload.string() << " (" << index->payload_size << " bytes, "
      << index->chunks.size() << " chunks of " << index->chunk_size << ")\n"
      << "index    " << index_path.string() << "\n";
  return kOk;
}

int ImageVerify(const ImageOptions& o, std::ostream& out, std::ostream& err) {
  LocalFilesystem fs;
  auto text = fs.ReadFile(o.index, 64ull << 20);
  if (!text) return Fail(err, text.error());
  auto index = install::ParseChunkIndex(*text);
  if (!index) return Fail(err, index.error());
  std::unique_ptr<AtomicFile> image;
  if (!o.image_out.empty()) {
    auto created = fs.CreateAtomic(o.image_out);
    if (!created) return Fail(err, created.error());
    image = std::move(created).value();
  }
  install::PayloadVerifier verifier(*index, [&](std::span<const char> data) -> Result<void> {
    return image ? image->Append(data) : Ok();
  });
  auto fed = fs.ReadChunks(o.payload, [&](std::span<const char> data) { return verifier.Feed(data); });
  if (!fed) return Fail(err, fed.error());
  if (auto r = verifier.Finish(); !r) return Fail(err, r.error());
  if (image) {
    if (auto r = image->Commit(); !r) return Fail(err, r.error());
  }
  out << "verified " << index->chunks.size() << " chunks, " << verifier.image_bytes_out()
      << " image bytes, sha256 " << index->image_sha256 << "\n";
  return kOk;
}

struct BundleOptions {
  std::string repo;
  std::string root;
  std::vector<std::string> targets;
  std::string file;
  std::string out_dir;
};

int BundleCreate(const BundleOptions& o, std::ostream& out, std::ostream& err) {
  LocalFilesystem fs;
  auto root = fs.ReadFile(o.root, metadata::UpdaterConfig{}.root_max_length);
  if (!root) return Fail(err, root.error());
  auto entries = install::CreateBundle(o.repo, *root, o.targets, o.file);
  if (!entries) return Fail(err, entries.error());
  std::uint64_t total = 0;
  for (const auto& e : *entries) {
    out << "  " << e.name << " (" << e.length << " bytes)\n";
    total += e.length;
  }
  out << "bundle " << o.file << ": " << entries->size() << " files, " << total << " bytes\n";
  return kOk;
}

// Verifies a bundle exactly as a device does, and writes the verified targets to DIR.
int BundleVerify(const BundleOptions& o, std::ostream& out, std::ostream& err) {
  LocalFilesystem fs;
  auto bundle = install::Bundle::Open(o.file);
  if (!bundle) return Fail(err, bundle.error());
  // DIR keeps the verified metadata like a device's metadata directory, so verifying a newer
  // bundle into the same DIR applies the rollback rules too.
  const fs::path dir = o.out_dir;
  if (auto r = fs.CreateDirectories(dir / "metadata"); !r) return Fail(err, r.error());
  auto root = fs.ReadFile(o.root, metadata::UpdaterConfig{}.root_max_length);
  if (!root) return Fail(err, root.error());
  if (auto r = fs.WriteFileAtomic(dir / "metadata" / "root.json", *root); !r) {
    return Fail(err, r.error());
  }
  install::BundleFetcher fetcher(*bundle);
  SystemClock clock;
  metadata::Updater updater(dir / "metadata", install::kBundleMetadataUrl, fetcher, fs, clock);
  if (auto r = updater.Refresh(); !r) return Fail(err, r.error());
  for (const auto& target : o.targets) {
    auto info = updater.GetTargetInfo(target);
    if (!info) return Fail(err, info.error());
    auto file = updater.DownloadTarget(*info, install::kBundleTargetsUrl, dir);
    if (!file) return Fail(err, file.error());
    out << "verified " << target << " (" << info->length << " bytes) -> " << file->string() << "\n";
  }
  out << "bundle verified against root v" << updater.trusted()->root().version << "\n";
  return kOk;
}

struct RepoOptions {
  std::string repo;
  std::string key_type = "ed25519";
  std::uint32_t root_keys = 1, root_threshold = 1, targets_keys = 1, targets_threshold = 1;
  std::string file;
  std::string name;
  std::string meta;
  std::string role;
  std::string key;
  std::string out_dir;
  std::uint32_t add_keys = 0;
  std::vector<std::string> remove_keyids;
  std::optional<std::uint32_t> threshold;
  std::string target_role = "targets";
  std::string delegator = "targets";
  std::vector<std::string> paths;
  std::vector<std::string> hash_prefixes;
  bool terminating = false;
  std::uint32_t bin_bits = 0;
  std::uint32_t root_days = 365, targets_days = 90, snapshot_days = 7, timestamp_days = 1;
  std::string pkcs11_module = "/usr/lib/softhsm/libsofthsm2.so";
  std::string pkcs11_token;
  std::string pkcs11_key;
};

// A token key named on the command line; the PIN comes from UPKEEP_PKCS11_PIN.
crypto::Pkcs11KeyRef TokenKey(const RepoOptions& o) {
  const char* pin = std::getenv("UPKEEP_PKCS11_PIN");
  return {o.pkcs11_module, o.pkcs11_token, o.pkcs11_key, pin == nullptr ? "" : pin};
}

crypto::KeyAlgorithm KeyType(const std::string& name) {
  if (name == "ecdsa") return crypto::KeyAlgorithm::EcdsaP256;
  if (name == "rsa") return crypto::KeyAlgorithm::RsaPss;
  return crypto::KeyAlgorithm::Ed25519;
}

// Private key passphrases come from the environment, never from the command line.
crypto::SecretString Passphrase() {
  const char* p = std::getenv("UPKEEP_KEY_PASSPHRASE");
  return p == nullptr ? crypto::SecretString() : crypto::SecretString(p);
}

int Repo(const std::string& command, const RepoOptions& o, std::ostream& out, std::ostream& err) {
  SystemClock clock;
  LocalFilesystem fs;
  if (command == "init") {
    repository::InitOptions init;
    init.key_type = KeyType(o.key_type);
    init.root_keys = o.root_keys;
    init.root_threshold = o.root_threshold;
    init.targets_keys = o.targets_keys;
    init.targets_threshold = o.targets_threshold;
    init.root_expiry_days = o.root_days;
    init.targets_expiry_days = o.targets_days;
    init.snapshot_expiry_days = o.snapshot_days;
    init.timestamp_expiry_days = o.timestamp_days;
    init.passphrase = Passphrase();
    if (!o.pkcs11_key.empty()) init.targets_token_key = TokenKey(o);
    auto repo = repository::Repository::Init(o.repo, init, fs, clock);
    if (!repo) return Fail(err, repo.error());
    out << "initialised " << o.repo << " (root " << o.root_threshold << "-of-" << o.root_keys
        << ", targets " << o.targets_threshold << "-of-" << o.targets_keys << ", " << o.key_type
        << " keys in " << (fs::path(o.repo) / "keys").string() << ")\n";
    return kOk;
  }
  auto repo = repository::Repository::Open(o.repo, fs, clock, Passphrase());
  if (!repo) return Fail(err, repo.error());
  Result<void> done;
  if (command == "add-target") {
    auto meta = fs.ReadFile(o.meta, 1 << 20);
    if (!meta) return Fail(err, meta.error());
    auto custom = metadata::ParseJson(*meta);
    if (!custom) return Fail(err, custom.error().WithContext(o.meta));
    done = repo->AddTarget(o.file, o.name, *custom, o.target_role);
  } else if (command == "remove-target") {
    done = repo->RemoveTarget(o.name, o.target_role);
  } else if (command == "delegate") {
    repository::Repository::Delegation d;
    d.name = o.role;
    d.delegator = o.delegator;
    d.paths = o.paths;
    d.hash_prefixes = o.hash_prefixes;
    d.bin_bits = o.bin_bits;
    d.terminating = o.terminating;
    d.keys = o.add_keys == 0 ? 1 : o.add_keys;
    d.threshold = o.threshold.value_or(1);
    d.key_type = KeyType(o.key_type);
    auto ids = repo->Delegate(d);
    if (!ids) return Fail(err, ids.error());
    for (const auto& id : *ids) out << "new " << o.role << " key " << id << "\n";
  } else if (command == "rotate") {
    auto added = repo->Rotate(o.role, o.add_keys, o.remove_keyids, o.threshold, KeyType(o.key_type));
    if (!added) return Fail(err, added.error());
    for (const auto& id : *added) out << "new " << o.role << " key " << id << "\n";
  } else if (command == "sign") {
    if (!o.pkcs11_key.empty()) {
      auto key = crypto::PrivateKey::FromPkcs11(TokenKey(o));
      if (!key) return Fail(err, key.error());
      done = repo->SignWith(o.role, *key);
    } else if (!o.key.empty()) {
      done = repo->Sign(o.role, o.key);
    } else {
      err << "upkeep: sign needs --key FILE or --pkcs11-key LABEL\n";
      return kUsage;
    }
  } else if (command == "publish" || command == "refresh") {
    done = repo->Publish(o.out_dir);
  }
  if (!done) return Fail(err, done.error());
  auto status = repo->Status();
  if (!status) return Fail(err, status.error());
  for (const auto& st : *status) {
    out << st.role << " v" << st.version << ": " << st.valid_signatures << "/" << st.threshold
        << " signatures";
    if (st.valid_signatures < st.threshold) {
      out << " (missing: ";
      for (std::size_t i = 0; i < st.missing_keyids.size(); ++i) {
        out << (i ? ", " : "") << st.missing_keyids[i].substr(0, 16);
      }
      out << ")";
    }
    out << "\n";
  }
  if (command == "publish" || command == "refresh") out << "published to " << o.out_dir << "\n";
  return kOk;
}

}  // namespace

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"upkeep: release tooling for the upkeep update system", "upkeep"};
  app.require_subcommand(1);
  ImageOptions o;
  auto* image = app.add_subcommand("image", "Build and check installable image payloads");
  image->require_subcommand(1);
  auto* build = image->add_subcommand(
      "build", "Compress IMAGE into zstd chunks plus a chunk index (docs/formats/payload.md)");
  build->add_option("IMAGE", o.image, "Raw image, e.g. a root filesystem")->required();
  build->add_option("-o,--output", o.out_dir, "Directory for IMAGE.payload and IMAGE.chunks.json")
      ->required();
  build->add_option("--chunk-size", o.chunk_size, "Uncompressed bytes per chunk")
      ->check(CLI::Range(install::kMinChunkSize, install::kMaxChunkSize));
  build->add_option("--level", o.level, "zstd level")->check(CLI::Range(1, 19));
  build->add_option("--compression", o.compression,
                    "zstd, or none for images that do not compress (chunks stored as they are)")
      ->check(CLI::IsMember({"zstd", "none"}));
  build->add_option("--threads", o.threads,
                    "Compression threads (default: one per core but one, which hashes)")
      ->check(CLI::Range(1, 64));
  auto* verify = image->add_subcommand("verify", "Check a payload against its chunk index");
  verify->add_option("INDEX", o.index, "Chunk index (IMAGE.chunks.json)")->required();
  verify->add_option("PAYLOAD", o.payload, "Payload (IMAGE.payload)")->required();
  verify->add_option("-o,--output", o.image_out, "Write the verified image here");

  BundleOptions b;
  auto* bundle = app.add_subcommand("bundle", "Offline bundles for USB sticks and phone apps");
  bundle->require_subcommand(1);
  auto* create = bundle->add_subcommand(
      "create", "Pack metadata and targets from a published repository (docs/formats/bundle.md)");
  create->add_option("--repo", b.repo, "Published repository (metadata/ and targets/)")->required();
  create->add_option("--root", b.root, "Oldest root.json still trusted by devices")->required();
  create->add_option("--target", b.targets, "Target path to include (repeatable)")->required();
  create->add_option("-o,--output", b.file, "Bundle file to write")->required();
  auto* check = bundle->add_subcommand("verify", "Verify a bundle as a device would");
  check->add_option("BUNDLE", b.file, "Bundle file")->required();
  check->add_option("--root", b.root, "The device's trusted root.json")->required();
  check->add_option("--target", b.targets, "Target path to verify (repeatable)")->required();
  check->add_option("-o,--output", b.out_dir, "Directory for the verified files and metadata")
      ->required();

  RepoOptions r;
  auto* repo = app.add_subcommand("repo", "The signed image repository (docs/repository.md)");
  repo->require_subcommand(1);
  auto* init = repo->add_subcommand("init", "Create a repository with new keys");
  init->add_option("REPO", r.repo, "Repository directory")->required();
  init->add_option("--key-type", r.key_type, "ed25519, ecdsa or rsa")
      ->check(CLI::IsMember({"ed25519", "ecdsa", "rsa"}));
  init->add_option("--root-keys", r.root_keys, "Number of root keys")->check(CLI::Range(1, 16));
  init->add_option("--root-threshold", r.root_threshold, "Root signatures required")
      ->check(CLI::Range(1, 16));
  init->add_option("--targets-keys", r.targets_keys, "Number of targets keys")
      ->check(CLI::Range(1, 16));
  init->add_option("--targets-threshold", r.targets_threshold, "Targets signatures required")
      ->check(CLI::Range(1, 16));
  init->add_option("--targets-pkcs11-key", r.pkcs11_key,
                   "Use this PKCS#11 token key as the targets key (PIN in UPKEEP_PKCS11_PIN)");
  init->add_option("--pkcs11-module", r.pkcs11_module, "PKCS#11 module");
  init->add_option("--root-expiry-days", r.root_days, "Lifetime of each root version")
      ->check(CLI::Range(1, 3650));
  init->add_option("--targets-expiry-days", r.targets_days,
                   "Lifetime of targets and delegated roles")->check(CLI::Range(1, 3650));
  init->add_option("--snapshot-expiry-days", r.snapshot_days, "Lifetime of each snapshot")
      ->check(CLI::Range(1, 365));
  init->add_option("--timestamp-expiry-days", r.timestamp_days,
                   "Lifetime of each timestamp (refresh more often than this)")
      ->check(CLI::Range(1, 365));
  init->add_option("--pkcs11-token", r.pkcs11_token, "PKCS#11 token label");
  auto* add = repo->add_subcommand("add-target", "Stage a target with its update metadata");
  add->add_option("REPO", r.repo, "Repository directory")->required();
  add->add_option("FILE", r.file, "Target file")->required();
  add->add_option("--name", r.name, "Target path devices ask for")->required();
  add->add_option("--meta", r.meta, "Update metadata JSON (docs/formats/update-metadata.md)")
      ->required();
  add->add_option("--role", r.target_role, "Targets role to list it in (default: targets)");
  auto* remove = repo->add_subcommand("remove-target", "Stage the removal of a target");
  remove->add_option("REPO", r.repo, "Repository directory")->required();
  remove->add_option("--name", r.name, "Target path")->required();
  remove->add_option("--role", r.target_role, "Targets role that lists it (default: targets)");
  auto* delegate = repo->add_subcommand("delegate", "Delegate target paths to a new role");
  delegate->add_option("REPO", r.repo, "Repository directory")->required();
  delegate->add_option("ROLE", r.role, "New role name")->required();
  auto* paths = delegate->add_option("--paths", r.paths, "Path patterns (shell style, per segment)");
  auto* prefixes = delegate->add_option("--hash-prefixes", r.hash_prefixes,
                                        "Prefixes of the hex SHA-256 of target paths");
  auto* bins = delegate->add_option("--hash-bins", r.bin_bits,
                                    "Succinct hash bins: 2^BITS roles ROLE-<hex> sharing keys")
                    ->check(CLI::Range(1, 16));
  paths->excludes(prefixes);
  paths->excludes(bins);
  prefixes->excludes(bins);
  delegate->add_flag("--terminating", r.terminating, "Stop the search at this role");
  delegate->add_option("--keys", r.add_keys, "Number of keys for the role")->check(CLI::Range(1, 16));
  delegate->add_option("--threshold", r.threshold, "Signatures required")->check(CLI::Range(1, 16));
  delegate->add_option("--delegator", r.delegator, "Role that delegates (default: targets)");
  delegate->add_option("--key-type", r.key_type, "ed25519, ecdsa or rsa")
      ->check(CLI::IsMember({"ed25519", "ecdsa", "rsa"}));
  auto* sign = repo->add_subcommand("sign", "Add one key's signature to a staged offline role");
  sign->add_option("REPO", r.repo, "Repository directory")->required();
  sign->add_option("ROLE", r.role, "root or targets")->required();
  auto* key_file = sign->add_option("--key", r.key, "Private key file (PEM, mode 0600)");
  auto* token_key = sign->add_option("--pkcs11-key", r.pkcs11_key,
                                     "Label of a key in a PKCS#11 token (PIN in UPKEEP_PKCS11_PIN)");
  key_file->excludes(token_key);
  sign->add_option("--pkcs11-module", r.pkcs11_module, "PKCS#11 module");
  sign->add_option("--pkcs11-token", r.pkcs11_token, "PKCS#11 token label");
  auto* rotate = repo->add_subcommand(
      "rotate", "Stage a new root that adds or removes a role's keys (also revokes online keys)");
  rotate->add_option("REPO", r.repo, "Repository directory")->required();
  rotate->add_option("ROLE", r.role, "root, targets, snapshot or timestamp")->required();
  rotate->add_option("--add-keys", r.add_keys, "Number of new keys")->check(CLI::Range(0, 16));
  rotate->add_option("--remove-key", r.remove_keyids, "Key ID to remove (repeatable)");
  rotate->add_option("--threshold", r.threshold, "New threshold")->check(CLI::Range(1, 16));
  rotate->add_option("--key-type", r.key_type, "ed25519, ecdsa or rsa")
      ->check(CLI::IsMember({"ed25519", "ecdsa", "rsa"}));
  auto* status = repo->add_subcommand("status", "Show staged versions and missing signatures");
  status->add_option("REPO", r.repo, "Repository directory")->required();
  auto* publish = repo->add_subcommand("publish", "Sign snapshot and timestamp and publish to DIR");
  publish->add_option("REPO", r.repo, "Repository directory")->required();
  publish->add_option("DIR", r.out_dir, "Directory a web server serves")->required();
  auto* refresh = repo->add_subcommand(
      "refresh", "Re-sign snapshot and timestamp with fresh expiry (run from cron)");
  refresh->add_option("REPO", r.repo, "Repository directory")->required();
  refresh->add_option("DIR", r.out_dir, "Directory a web server serves")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      const CLI::App* shown = &app;
      for (const CLI::App* sub :
           {image, build, verify, bundle, create, check, repo, init, add, remove, delegate, rotate,
            sign, status, publish, refresh}) {
        if (sub->parsed()) shown = sub;
      }
      out << shown->help();
      return kOk;
    }
    err << "upkeep: " << e.what() << "\n";
    return kUsage;
  }
  if (build->parsed()) return ImageBuild(o, out, err);
  if (verify->parsed()) return ImageVerify(o, out, err);
  if (create->parsed()) return BundleCreate(b, out, err);
  if (check->parsed()) return BundleVerify(b, out, err);
  for (const CLI::App* sub :
       {init, add, remove, delegate, rotate, sign, status, publish, refresh}) {
    if (sub->parsed()) return Repo(sub->get_name(), r, out, err);
  }
  return kUsage;
}

}  // namespace upkeep::tool
