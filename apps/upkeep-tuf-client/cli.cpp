#include "cli.hpp"

#include <CLI/CLI.hpp>
#include <filesystem>
#include <ostream>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/common/utf8.hpp"
#include "upkeep/metadata/trusted_set.hpp"
#include "upkeep/metadata/updater.hpp"
#include "upkeep/transport/http_fetcher.hpp"

namespace upkeep::tufclient {

namespace fs = std::filesystem;

namespace {

constexpr int kOk = 0;
constexpr int kFailed = 1;

struct Options {
  std::string metadata_dir;
  std::string metadata_url;
  std::string target_name;
  std::string target_base_url;
  std::string target_dir;
  std::string trusted_root;
  std::string log_level = "warn";
};

int Fail(std::ostream& err, const Error& e) {
  err << "upkeep-tuf-client: " << PrintableText(e.ToString()) << "\n";
  return kFailed;
}

int Init(const Options& o, std::ostream& out, std::ostream& err) {
  // The trusted root arrives out of band; it must at least be a root signed by its own threshold
  // (TUF 5.2), so a corrupt or wrong file is refused here instead of at the first refresh. Its
  // expiry is not checked: the first refresh rotates it forward.
  LocalFilesystem fs;
  auto bytes = fs.ReadFile(o.trusted_root, metadata::UpdaterConfig{}.root_max_length);
  if (!bytes) return Fail(err, bytes.error());
  SystemClock clock;
  auto trusted = metadata::TrustedMetadataSet::Create(*bytes, clock.Now());
  if (!trusted) return Fail(err, trusted.error().WithContext("trusted root " + o.trusted_root));
  if (auto r = fs.CreateDirectories(o.metadata_dir); !r) return Fail(err, r.error());
  if (auto r = fs.WriteFileAtomic(fs::path(o.metadata_dir) / "root.json", *bytes); !r) {
    return Fail(err, r.error());
  }
  out << "installed trusted root in " << o.metadata_dir << " (root version "
      << trusted->root().version << ")\n";
  return kOk;
}

void PrintTrusted(const metadata::TrustedMetadataSet& t, std::ostream& out) {
  out << "verified root v" << t.root().version;
  if (t.timestamp()) out << ", timestamp v" << t.timestamp()->version;
  if (t.snapshot()) out << ", snapshot v" << t.snapshot()->version;
  if (const auto* targets = t.targets(metadata::kTargetsRole)) {
    out << ", targets v" << targets->version << " (" << targets->body.targets.size() << " targets)";
  }
  out << "\n";
}

// The local filesystem, the system clock and libcurl, wired into an Updater for DIR and URL.
struct Client {
  explicit Client(const Options& o) : updater(o.metadata_dir, o.metadata_url, fetcher, fs, clock) {}
  LocalFilesystem fs;
  SystemClock clock;
  transport::HttpFetcher fetcher;
  metadata::Updater updater;
};

int Refresh(const Options& o, std::ostream& out, std::ostream& err) {
  Client c(o);
  if (auto r = c.updater.Refresh(); !r) return Fail(err, r.error());
  PrintTrusted(*c.updater.trusted(), out);
  return kOk;
}

int Download(const Options& o, std::ostream& out, std::ostream& err) {
  Client c(o);
  if (auto r = c.updater.Refresh(); !r) return Fail(err, r.error());
  PrintTrusted(*c.updater.trusted(), out);
  auto info = c.updater.GetTargetInfo(o.target_name);
  if (!info) return Fail(err, info.error());
  if (auto r = c.fs.CreateDirectories(o.target_dir); !r) return Fail(err, r.error());
  auto cached = c.updater.FindCachedTarget(*info, o.target_dir);
  if (!cached) return Fail(err, cached.error());
  if (*cached) {
    out << "already have " << o.target_name << " (" << info->length << " bytes, verified) at "
        << cached->value().string() << "\n";
    return kOk;
  }
  auto path = c.updater.DownloadTarget(*info, o.target_base_url, o.target_dir);
  if (!path) return Fail(err, path.error());
  out << "downloaded " << o.target_name << " (" << info->length << " bytes, verified) to "
      << path->string() << "\n";
  return kOk;
}

}  // namespace

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  Options o;
  CLI::App app{"upkeep-tuf-client: verify and download from a TUF 1.0 repository",
               "upkeep-tuf-client"};
  app.require_subcommand(1);
  app.add_option("--metadata-dir", o.metadata_dir, "Directory with the trusted metadata")
      ->required();
  app.add_option("--metadata-url", o.metadata_url, "Base URL of the repository's metadata");
  app.add_option("--target-name", o.target_name, "Target path to download");
  app.add_option("--target-base-url", o.target_base_url, "Base URL of the repository's targets");
  app.add_option("--target-dir", o.target_dir, "Directory to store downloaded targets in");
  app.add_option("--log-level", o.log_level, "debug, info, warn, error or off");

  auto* init = app.add_subcommand("init", "Install TRUSTED_ROOT as the trusted root (no network)");
  init->add_option("TRUSTED_ROOT", o.trusted_root, "Root metadata file")->required();
  auto* refresh = app.add_subcommand("refresh", "Update the top-level metadata");
  auto* download = app.add_subcommand("download", "Refresh, then download and verify a target");
  for (auto* sub : {init, refresh, download}) sub->fallthrough();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help
      out << app.help();
      return kOk;
    }
    err << "upkeep-tuf-client: " << e.what() << "\n" << app.help();
    return kFailed;
  }
  log::Init(o.log_level.c_str());

  auto need = [&](const std::string& value, const char* flag) {
    if (value.empty()) err << "upkeep-tuf-client: " << flag << " is required for this command\n";
    return !value.empty();
  };
  if (init->parsed()) return Init(o, out, err);
  if (!need(o.metadata_url, "--metadata-url")) return kFailed;
  if (refresh->parsed()) return Refresh(o, out, err);
  if (!need(o.target_name, "--target-name") || !need(o.target_base_url, "--target-base-url") ||
      !need(o.target_dir, "--target-dir")) {
    return kFailed;
  }
  return Download(o, out, err);
}

}  // namespace upkeep::tufclient
