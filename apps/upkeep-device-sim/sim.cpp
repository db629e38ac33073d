#include "sim.hpp"

#include <CLI/CLI.hpp>
#include <filesystem>
#include <ostream>

#include "upkeep/common/directory_fetcher.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/common/utf8.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/deviceapi/client.hpp"
#include "upkeep/metadata/director.hpp"
#include "upkeep/metadata/json_reader.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/metadata/update_metadata.hpp"
#include "upkeep/transport/http_fetcher.hpp"

namespace upkeep::devicesim {

namespace {

namespace fs = std::filesystem;
using metadata::Json;

struct Options {
  std::string state = "device-sim";
  // enrol
  std::string server_url;
  std::string server_ca;
  std::string model = "acme-cam-v2";
  std::vector<std::string> tokens;
  std::string token_file;
  std::string installed = "rootfs/1.0.0.payload";
  std::string installed_version = "1.0.0";
  // run
  std::string image_repo;
  std::string image_root;
  std::string image_ca;
  unsigned rounds = 1;
  unsigned fail_percent = 0;
  bool json = false;
};

// What a simulated device keeps besides its identity (device.json).
struct DeviceState {
  std::uint64_t counter = 0;           // last check-in counter sent
  std::uint64_t accepted_counter = 0;  // the director counter of the last accepted answer
  std::string etag;
  std::string target;   // installed root filesystem target
  std::string version;  // its version
  std::uint64_t security_version = 0;
};

int Fail(std::ostream& err, const Error& e, int code = kExitFailure) {
  err << "upkeep-device-sim: " << PrintableText(e.ToString()) << "\n";
  return code;
}

Result<void> SaveState(Filesystem& fs, const fs::path& dir, const DeviceState& s) {
  const Json j{{"counter", s.counter},
               {"accepted_counter", s.accepted_counter},
               {"etag", s.etag},
               {"target", s.target},
               {"version", s.version},
               {"security_version", s.security_version}};
  return fs.WriteFileAtomic(dir / "device.json", metadata::DumpJson(j));
}

Result<DeviceState> LoadState(const Filesystem& fs, const fs::path& dir) {
  UPKEEP_ASSIGN_OR_RETURN(std::string text, fs.ReadFile(dir / "device.json", 1 << 16));
  UPKEEP_ASSIGN_OR_RETURN(Json doc, metadata::ParseJson(text));
  UPKEEP_ASSIGN_OR_RETURN(metadata::JsonReader r,
                          metadata::JsonReader::Of(doc, metadata::Errc::InvalidMetadata,
                                                   (dir / "device.json").string()));
  DeviceState s;
  UPKEEP_ASSIGN_OR_RETURN(s.counter, r.Uint("counter"));
  UPKEEP_ASSIGN_OR_RETURN(s.accepted_counter, r.Uint("accepted_counter"));
  UPKEEP_ASSIGN_OR_RETURN(s.etag, r.String("etag", {.allow_empty = true}));
  UPKEEP_ASSIGN_OR_RETURN(s.target, r.String("target"));
  UPKEEP_ASSIGN_OR_RETURN(s.version, r.String("version"));
  UPKEEP_ASSIGN_OR_RETURN(s.security_version, r.Uint("security_version"));
  return s;
}

std::vector<fs::path> DeviceDirs(const fs::path& state) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(state, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory(ec) && it->path().filename().string().starts_with("device-")) {
      out.push_back(it->path());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

int Enrol(const Options& o, std::ostream& out, std::ostream& err) {
  LocalFilesystem fs;
  std::vector<std::string> tokens = o.tokens;
  if (!o.token_file.empty()) {
    auto text = fs.ReadFile(o.token_file, 1 << 24);
    if (!text) return Fail(err, text.error());
    std::size_t start = 0;
    while (start < text->size()) {
      std::size_t end = text->find('\n', start);
      if (end == std::string::npos) end = text->size();
      std::string line = text->substr(start, end - start);
      if (!line.empty()) tokens.push_back(std::move(line));
      start = end + 1;
    }
  }
  if (tokens.empty()) return Fail(err, Error(common::Errc::InvalidArgument, "no tokens"), 1);
  auto ca = fs.ReadFile(o.server_ca, 1 << 20);
  if (!ca) return Fail(err, ca.error());
  const fs::path state = o.state;
  std::size_t index = DeviceDirs(state).size();
  for (const std::string& token : tokens) {
    const fs::path dir = state / ("device-" + std::to_string(1000 + index++).substr(1));
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return Fail(err, Error(common::Errc::IoError, "cannot create " + dir.string()));
    auto client = deviceapi::DeviceClient::ForEnrolment({o.server_url, *ca, "", ""});
    if (!client) return Fail(err, client.error());
    const std::string serial = "SIM-" + dir.filename().string();
    auto identity = (*client)->Enrol(token, o.model, serial);
    if (!identity) return Fail(err, identity.error().WithContext(serial));
    if (auto saved = deviceapi::SaveIdentity(fs, dir, *identity); !saved) {
      return Fail(err, saved.error());
    }
    // The director root the device pins, and its own copy of the image repository's trust.
    fs::create_directories(dir / "director", ec);
    if (!identity->director_root) {
      return Fail(err, Error(common::Errc::InvalidArgument,
                             "the server has no director: configure [director]"));
    }
    if (auto w = fs.WriteFileAtomic(dir / "director" / "root.json", *identity->director_root); !w) {
      return Fail(err, w.error());
    }
    DeviceState s;
    s.target = o.installed;
    s.version = o.installed_version;
    if (auto w = SaveState(fs, dir, s); !w) return Fail(err, w.error());
    out << identity->device_id << " enrolled (" << PrintableText(serial) << ")\n";
  }
  return kExitOk;
}

// Whether this device's install fails on purpose (a stable choice per device ID).
bool InjectedFailure(const std::string& device_id, unsigned percent) {
  if (percent == 0) return false;
  const auto digest = crypto::Sha256("fail/" + device_id);
  return (std::uint32_t{digest[0]} * 256 + digest[1]) % 100 < percent;
}

struct Tally {
  unsigned checked_in = 0;
  unsigned installed = 0;
  unsigned failed = 0;
  unsigned rejected = 0;
  unsigned nothing = 0;
};

// One check-in of one device: verify the director's answer against the image repository (Uptane
// full verification), download and verify each image, and report the outcome.
Result<void> Cycle(const Options& o, const fs::path& dir, Filesystem& fs, Fetcher& image_fetcher,
                   const std::string& image_metadata_url, const std::string& image_targets_url,
                   std::ostream& out, Tally& tally) {
  UPKEEP_ASSIGN_OR_RETURN(deviceapi::DeviceIdentity identity, deviceapi::LoadIdentity(fs, dir));
  UPKEEP_ASSIGN_OR_RETURN(DeviceState state, LoadState(fs, dir));
  UPKEEP_ASSIGN_OR_RETURN(auto client, deviceapi::DeviceClient::ForIdentity(identity));
  deviceapi::CheckInRequest q;
  q.counter = ++state.counter;
  UPKEEP_TRY(SaveState(fs, dir, state));  // the counter is persisted before it is sent
  q.model = o.model;
  q.hardware = o.model;
  q.components["rootfs"] = {state.version, state.target, state.security_version};
  q.if_none_match = state.etag;
  UPKEEP_ASSIGN_OR_RETURN(deviceapi::CheckInAnswer answer, client->CheckIn(q));
  ++tally.checked_in;
  const std::string& id = identity.device_id;
  if (answer.not_modified) {
    ++tally.nothing;
    out << id << ": nothing new (304)\n";
    return Ok();
  }
  state.etag = answer.etag;
  UPKEEP_TRY(SaveState(fs, dir, state));

  std::error_code ec;
  fs::create_directories(dir / "image", ec);
  if (!fs::exists(dir / "image" / "root.json", ec)) {
    UPKEEP_ASSIGN_OR_RETURN(std::string root, fs.ReadFile(o.image_root, 1 << 20));
    UPKEEP_TRY(fs.WriteFileAtomic(dir / "image" / "root.json", root));
  }
  metadata::Updater image(dir / "image", image_metadata_url, image_fetcher, fs,
                          SystemClock::Process());
  const metadata::DirectorFiles files{answer.director.roots, answer.director.timestamp,
                                      answer.director.snapshot, answer.director.targets};
  auto verified = metadata::VerifyDirectorAnswer(files, dir / "director", fs,
                                                 SystemClock::Process(), image,
                                                 {id, o.model, q.counter, state.accepted_counter});
  if (!verified) {
    // Nothing is installed; the detail goes to the fleet's administrators only.
    ++tally.rejected;
    out << id << ": update rejected\n";
    deviceapi::IncidentBody incident;
    incident.incident_id = "sim-" + HexEncode(crypto::Sha256(id + std::to_string(q.counter)));
    incident.kind = "verification_failed";
    incident.source = "network";
    incident.error = verified.error().code().category().name() + std::string(".") +
                     std::to_string(verified.error().code().value());
    incident.detail = verified.error().ToString();
    incident.time = static_cast<std::uint64_t>(SystemClock::Process().Now().time_since_epoch().count());
    return client->Incident(incident);
  }
  state.accepted_counter = verified->counter;
  UPKEEP_TRY(SaveState(fs, dir, state));
  if (verified->images.empty()) {
    ++tally.nothing;
    out << id << ": nothing to install\n";
    return Ok();
  }
  for (const metadata::TargetFile& target : verified->images) {
    UPKEEP_ASSIGN_OR_RETURN(metadata::UpdateMetadata meta, metadata::UpdateMetadataOf(target));
    deviceapi::ReportBody report;
    report.report_id =
        "sim-" + HexEncode(crypto::Sha256(id + "/" + target.path + "/" + std::to_string(q.counter)))
                     .substr(0, 32);
    report.update_id = report.report_id;
    report.target = target.path;
    const std::uint64_t now =
        static_cast<std::uint64_t>(SystemClock::Process().Now().time_since_epoch().count());
    // The image is downloaded and its length and hashes checked, as the installer would.
    fs::create_directories(dir / "downloads", ec);
    auto downloaded = image.DownloadTarget(target, image_targets_url, dir / "downloads");
    if (downloaded) fs::remove(*downloaded, ec);
    if (!downloaded || InjectedFailure(id, o.fail_percent)) {
      report.outcome = deviceapi::ReportOutcome::Failed;
      report.events.push_back({now, "install.failed", Json::object()});
      ++tally.failed;
      out << id << ": failed " << PrintableText(target.path)
          << (downloaded ? " (injected failure)" : " (" + downloaded.error().ToString() + ")")
          << "\n";
    } else {
      report.outcome = deviceapi::ReportOutcome::Committed;
      report.events.push_back({now, "install.committed", Json::object()});
      state.target = target.path;
      state.version = meta.version;
      state.security_version = std::max(state.security_version, meta.security_version);
      ++tally.installed;
      out << id << ": installed " << PrintableText(target.path) << " "
          << PrintableText(meta.version) << (meta.is_security ? " (security update)" : "")
          << "\n";
    }
    UPKEEP_TRY(SaveState(fs, dir, state));
    UPKEEP_TRY(client->Report(report));
  }
  return Ok();
}

int Run(const Options& o, std::ostream& out, std::ostream& err) {
  LocalFilesystem fs;
  std::unique_ptr<Fetcher> fetcher;
  std::string metadata_url;
  std::string targets_url;
  if (o.image_repo.starts_with("https://") || o.image_repo.starts_with("http://")) {
    transport::HttpFetcherOptions http;
    http.ca_file = o.image_ca;
    fetcher = std::make_unique<transport::HttpFetcher>(http);
    std::string base = o.image_repo;
    if (!base.ends_with('/')) base += '/';
    metadata_url = base + "metadata/";
    targets_url = base + "targets/";
  } else {
    fetcher = std::make_unique<DirectoryFetcher>(o.image_repo, fs);
    metadata_url = DirectoryFetcher::kMetadataUrl;
    targets_url = DirectoryFetcher::kTargetsUrl;
  }
  const auto dirs = DeviceDirs(o.state);
  if (dirs.empty()) {
    return Fail(err, Error(common::Errc::FileNotFound, "no enrolled devices in " + o.state), 1);
  }
  int code = kExitOk;
  for (unsigned round = 1; round <= o.rounds; ++round) {
    Tally tally;
    for (const fs::path& dir : dirs) {
      if (auto r = Cycle(o, dir, fs, *fetcher, metadata_url, targets_url, out, tally); !r) {
        err << "upkeep-device-sim: " << dir.filename().string() << ": "
            << PrintableText(r.error().ToString()) << "\n";
        code = kExitFailure;
      }
    }
    out << "round " << round << ": " << tally.checked_in << " checked in, " << tally.installed
        << " installed, " << tally.failed << " failed, " << tally.rejected << " rejected, "
        << tally.nothing << " nothing to do\n";
  }
  return code;
}

}  // namespace

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  Options o;
  CLI::App app{
      "upkeep-device-sim: simulated devices for a fleet server (enrol, check in, verify the "
      "director's answer against the image repository, download, report)"};
  app.add_option("--state", o.state, "directory holding the simulated devices")
      ->capture_default_str();
  auto* enrol = app.add_subcommand("enrol", "enrol one device per token");
  enrol->add_option("--server", o.server_url, "fleet server base URL")->required();
  enrol->add_option("--server-ca", o.server_ca, "CA of the server's certificate (PEM)")
      ->required();
  enrol->add_option("--model", o.model, "device model")->capture_default_str();
  enrol->add_option("--token", o.tokens, "enrolment token (repeatable)");
  enrol->add_option("--token-file", o.token_file, "file with one enrolment token per line");
  enrol->add_option("--installed", o.installed, "installed root filesystem target")
      ->capture_default_str();
  enrol->add_option("--installed-version", o.installed_version, "its version")
      ->capture_default_str();
  auto* run = app.add_subcommand("run", "check every device in, install what verifies");
  run->add_option("--image-repo", o.image_repo, "image repository: directory or URL")
      ->required();
  run->add_option("--image-root", o.image_root, "the image repository root devices trust")
      ->required();
  run->add_option("--image-ca", o.image_ca, "CA file for an https image repository");
  run->add_option("--model", o.model, "device model")->capture_default_str();
  run->add_option("--rounds", o.rounds, "check-ins per device")->capture_default_str()->check(
      CLI::Range(1u, 1000u));
  run->add_option("--fail-percent", o.fail_percent,
                  "make this share of devices fail their installs")
      ->capture_default_str()
      ->check(CLI::Range(0u, 100u));
  app.require_subcommand(1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err) == 0 ? kExitOk : kExitUsage;
  }
  log::Init("warn");
  if (enrol->parsed()) return Enrol(o, out, err);
  return Run(o, out, err);
}

}  // namespace upkeep::devicesim
