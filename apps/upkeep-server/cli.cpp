#include "cli.hpp"

#include <pthread.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <ostream>

#include "admin_rollout.hpp"
#include "config.hpp"
#include "director_cli.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/common/utf8.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/crypto/x509.hpp"
#include "upkeep/metadata/director.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/server/fleet.hpp"
#include "upkeep/server/https_server.hpp"
#include "upkeep/server/campaigns.hpp"
#include "upkeep/server/incident_delivery.hpp"
#include "upkeep/server/periodic.hpp"
#include "upkeep/server/metrics.hpp"
#include "upkeep/server/router.hpp"
#include "upkeep/server/static_files.hpp"
#include "upkeep/storage/database.hpp"

namespace upkeep::server {

namespace {

namespace x509 = crypto::x509;
using metadata::Json;

struct Options {
  std::string config = "/etc/upkeep-server/server.toml";
  bool dump_config = false;
  std::string log_level = "info";
  std::string log_format = "text";
  // init
  std::string init_dir;
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  // admin
  std::string model;
  std::string group;
  unsigned expires_days = 7;
  bool json = false;
  std::string device_id;
  std::string target;
  std::uint64_t length = 0;
  std::string sha256;
  bool undelivered = false;
};

int Fail(std::ostream& err, const Error& e, int code = kExitFailure) {
  err << "upkeep-server: " << PrintableText(e.ToString()) << "\n";
  return code;
}

Result<std::string> ReadText(const std::string& path) {
  const LocalFilesystem fs;
  return fs.ReadFile(path, 1 << 20);
}

Result<std::unique_ptr<storage::Database>> OpenFleetDatabase(const ServerConfig& c) {
  UPKEEP_ASSIGN_OR_RETURN(auto db, storage::OpenDatabase(c.database.url));
  UPKEEP_TRY(MigrateFleetSchema(*db));
  return db;
}

// Blocks SIGTERM and SIGINT in this thread (and the threads it starts), then waits for one.
class ShutdownSignals {
 public:
  ShutdownSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~ShutdownSignals() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  int Wait() {
    int sig = 0;
    while (sigwait(&set_, &sig) != 0) {
    }
    return sig;
  }

 private:
  sigset_t set_{};
  sigset_t old_{};
};

Result<void> WriteNewFile(const std::filesystem::path& path, const std::string& text);
IncidentDeliveryOptions DeliveryOptions(const IncidentsConfig& c);

Result<crypto::PrivateKey> ReadSigningKey(const std::string& path) {
  UPKEEP_ASSIGN_OR_RETURN(std::string pem, ReadText(path));
  auto key = crypto::PrivateKey::FromPem(pem);
  if (!key) return std::move(key).error().WithContext(path);
  return key;
}

Result<DirectorOptions> LoadDirector(const DirectorConfig& c) {
  DirectorOptions d;
  for (const std::string& path : c.roots) {
    UPKEEP_ASSIGN_OR_RETURN(std::string root, ReadText(path));
    d.roots.push_back(std::move(root));
  }
  UPKEEP_ASSIGN_OR_RETURN(crypto::PrivateKey targets, ReadSigningKey(c.targets_key));
  UPKEEP_ASSIGN_OR_RETURN(crypto::PrivateKey snapshot, ReadSigningKey(c.snapshot_key));
  UPKEEP_ASSIGN_OR_RETURN(crypto::PrivateKey timestamp, ReadSigningKey(c.timestamp_key));
  d.keys.targets.push_back(std::move(targets));
  d.keys.snapshot.push_back(std::move(snapshot));
  d.keys.timestamp.push_back(std::move(timestamp));
  d.targets_validity = std::chrono::days(c.targets_expiry_days);
  d.snapshot_validity = std::chrono::days(c.snapshot_expiry_days);
  d.timestamp_validity = std::chrono::hours(c.timestamp_expiry_hours);
  return d;
}

// The director's keys: the root key (offline: DIR/director-root.key) and one online key per role
// under DIR/director/, and its root 1 (DIR/director/1.root.json).
Result<DirectorConfig> CreateDirector(const std::filesystem::path& dir, Clock::TimePoint now) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path online = dir / "director";
  fs::create_directories(online, ec);
  if (ec) return Error(Errc::InvalidArgument, "cannot create " + online.string());
  auto generate = [] { return crypto::PrivateKey::Generate(crypto::KeyAlgorithm::Ed25519); };
  UPKEEP_ASSIGN_OR_RETURN(crypto::PrivateKey root, generate());
  UPKEEP_ASSIGN_OR_RETURN(crypto::PrivateKey targets, generate());
  UPKEEP_ASSIGN_OR_RETURN(crypto::PrivateKey snapshot, generate());
  UPKEEP_ASSIGN_OR_RETURN(crypto::PrivateKey timestamp, generate());
  const metadata::DirectorRootKeys keys{{{root.public_key()}, 1},
                                        {{targets.public_key()}, 1},
                                        {{snapshot.public_key()}, 1},
                                        {{timestamp.public_key()}, 1}};
  UPKEEP_ASSIGN_OR_RETURN(
      std::string root_bytes,
      metadata::CreateDirectorRoot(keys, {root}, 1, now + std::chrono::days(3650)));
  DirectorConfig c;
  c.configured = true;
  c.roots = {(online / "1.root.json").string()};
  c.targets_key = (online / "targets.key").string();
  c.snapshot_key = (online / "snapshot.key").string();
  c.timestamp_key = (online / "timestamp.key").string();
  UPKEEP_ASSIGN_OR_RETURN(std::string root_pem, root.ToPem());
  UPKEEP_ASSIGN_OR_RETURN(std::string targets_pem, targets.ToPem());
  UPKEEP_ASSIGN_OR_RETURN(std::string snapshot_pem, snapshot.ToPem());
  UPKEEP_ASSIGN_OR_RETURN(std::string timestamp_pem, timestamp.ToPem());
  UPKEEP_TRY(crypto::WritePrivateKeyFile(dir / "director-root.key", root_pem));
  UPKEEP_TRY(crypto::WritePrivateKeyFile(c.targets_key, targets_pem));
  UPKEEP_TRY(crypto::WritePrivateKeyFile(c.snapshot_key, snapshot_pem));
  UPKEEP_TRY(crypto::WritePrivateKeyFile(c.timestamp_key, timestamp_pem));
  UPKEEP_TRY(WriteNewFile(c.roots[0], root_bytes));
  return c;
}

// The listener's handler: the device API, with [metrics] (instrumented, /metrics) and
// [repository] (/repository/...) when configured. `metrics_endpoint` and `repository` keep what
// the handler refers to.
Result<Handler> Routed(const ServerConfig& c, storage::Database& db, Fleet& fleet, Metrics& metrics,
                       std::unique_ptr<MetricsEndpoint>& metrics_endpoint,
                       std::unique_ptr<StaticFiles>& repository) {
  Routes routes;
  routes.fallback = fleet.AsHandler();
  if (c.repository.configured) {
    UPKEEP_ASSIGN_OR_RETURN(repository, StaticFiles::Create(c.repository.directory));
    routes.repository = repository->AsHandler();
  }
  if (!c.metrics.configured) return Route(std::move(routes));
  auto token = ReadText(c.metrics.token_file);
  if (!token) return std::move(token).error().WithContext("metrics.token_file");
  UPKEEP_ASSIGN_OR_RETURN(metrics_endpoint, MetricsEndpoint::Create(metrics, *token));
  routes.metrics = metrics_endpoint->AsHandler();
  UPKEEP_TRY(metrics.AddCollector("fleet", FleetCollector(db, SystemClock::Process())));
  UPKEEP_TRY(metrics.AddCollector(
      "campaigns", [&db] { return CampaignMetrics(db, SystemClock::Process()); }));
  return InstrumentHandler(metrics, Route(std::move(routes)));
}

int Serve(const ServerConfig& c, std::ostream& err) {
  ShutdownSignals signals;  // before any thread starts, so only Wait() sees them
  auto db = OpenFleetDatabase(c);
  if (!db) return Fail(err, db.error().WithContext(storage::RedactUrl(c.database.url)));
  FleetOptions fo;
  auto ca = ReadText(c.devices.ca_certificate);
  if (!ca) return Fail(err, ca.error());
  auto ca_key = ReadText(c.devices.ca_private_key);
  if (!ca_key) return Fail(err, ca_key.error());
  fo.device_ca_pem = *ca;
  fo.device_ca_key_pem = *ca_key;
  fo.certificate_validity = std::chrono::days(c.devices.certificate_validity_days);
  fo.next_checkin_seconds = c.devices.next_checkin_seconds;
  fo.enrol_burst = c.enrolment.burst;
  fo.enrol_refill_seconds = c.enrolment.refill_seconds;
  fo.models = c.models;
  if (!c.enrolment.manufacturer_ca.empty()) {
    auto maker = ReadText(c.enrolment.manufacturer_ca);
    if (!maker) return Fail(err, maker.error());
    fo.manufacturer_ca_pem = *maker;
    fo.manufacturer_group = c.enrolment.manufacturer_group;
  }
  if (c.director.configured) {
    auto director = LoadDirector(c.director);
    if (!director) return Fail(err, director.error());
    fo.director = std::move(*director);
  }
  auto fleet = Fleet::Create(**db, SystemClock::Process(), fo);
  if (!fleet) return Fail(err, fleet.error());
  std::unique_ptr<IncidentDelivery> delivery;
  if (c.incidents.configured) {
    auto d = IncidentDelivery::Create(**db, SystemClock::Process(), DeliveryOptions(c.incidents));
    if (!d) return Fail(err, d.error());
    delivery = std::move(*d);
  } else {
    log::warn("upkeep-server: no [incidents] section: incidents are stored but not delivered");
  }

  HttpsOptions ho;
  ho.address = c.server.address;
  ho.port = c.server.port;
  auto cert = ReadText(c.server.certificate);
  if (!cert) return Fail(err, cert.error());
  auto key = ReadText(c.server.private_key);
  if (!key) return Fail(err, key.error());
  ho.certificate_pem = *cert;
  ho.private_key_pem = *key;
  // Device certificates for every endpoint; manufacturer certificates for enrolment only (the
  // Fleet checks which CA issued a certificate before it trusts it).
  ho.client_ca_pem = *ca + fo.manufacturer_ca_pem;
  ho.threads = c.server.threads;
  ho.max_body_bytes = std::max<std::uint64_t>(ho.max_body_bytes, fo.max_body_bytes);
  Metrics metrics;
  std::unique_ptr<MetricsEndpoint> metrics_endpoint;
  std::unique_ptr<StaticFiles> repository;
  auto handler = Routed(c, **db, **fleet, metrics, metrics_endpoint, repository);
  if (!handler) {
    return Fail(err, handler.error(),
                handler.error().code() == Errc::InvalidConfig ? kExitUsage : kExitFailure);
  }
  auto server = HttpsServer::Start(ho, std::move(*handler));
  if (!server) return Fail(err, server.error());
  if (c.metrics.configured) {
    if (auto r = metrics.AddCollector("https", HttpsStatsCollector(**server)); !r) {
      return Fail(err, r.error());
    }
  }
  log::info("upkeep-server: serving the device API on {}:{} (database {})", c.server.address,
            (*server)->port(), storage::RedactUrl(c.database.url));
  std::unique_ptr<PeriodicTask> delivering;
  if (delivery) {
    delivering = std::make_unique<PeriodicTask>(
        std::chrono::seconds(c.incidents.poll_interval_seconds), [&delivery] {
          if (auto r = delivery->RunOnce(); !r) {
            log::warn("upkeep-server: incident delivery: {}", PrintableText(r.error().ToString()));
          }
        });
  }
  // Campaign phases open when anyone looks (check-ins, admin commands); this keeps them, and the
  // metrics that show them, current in a quiet fleet too.
  PeriodicTask advancing(std::chrono::seconds(60), [&db] {
    if (auto r = AdvanceCampaigns(**db, SystemClock::Process()); !r) {
      log::warn("upkeep-server: campaigns: {}", PrintableText(r.error().ToString()));
    }
  });
  const int sig = signals.Wait();
  advancing.Stop();
  // A delivery round ends after the incident in flight, while requests in flight finish.
  if (delivery) delivery->Cancel();
  log::info("upkeep-server: signal {}: stopping (grace {} s)", sig,
            c.server.shutdown_grace_seconds);
  (*server)->Stop(std::chrono::seconds(c.server.shutdown_grace_seconds));
  if (delivering) delivering->Stop();
  log::info("upkeep-server: stopped");
  return kExitOk;
}

IncidentDeliveryOptions DeliveryOptions(const IncidentsConfig& c) {
  IncidentDeliveryOptions o;
  o.webhook_url = c.webhook_url;
  o.secret_file = c.secret_file;
  o.ca_file = c.ca_file;
  o.connect_timeout = std::chrono::seconds(c.connect_timeout_seconds);
  o.request_timeout = std::chrono::seconds(c.timeout_seconds);
  o.retry_base = std::chrono::seconds(c.retry_base_seconds);
  o.retry_cap = std::chrono::seconds(c.retry_max_seconds);
  o.claim_lease = std::chrono::seconds(c.claim_lease_seconds);
  o.batch_size = c.batch_size;
  return o;
}

// Unix seconds as "YYYY-MM-DDTHH:MM:SSZ".
std::string UtcTime(std::int64_t seconds) {
  const std::time_t t = static_cast<std::time_t>(seconds);
  std::tm tm{};
  char text[32] = "?";
  if (gmtime_r(&t, &tm) != nullptr) std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

int ListIncidentsCommand(const Options& o, storage::Database& db, std::ostream& out,
                         std::ostream& err) {
  auto list = ListIncidents(db, o.undelivered, 100000);
  if (!list) return Fail(err, list.error());
  auto opt = [](const std::optional<std::int64_t>& v) { return v ? Json(*v) : Json(); };
  if (o.json) {
    Json a = Json::array();
    for (const auto& i : *list) {
      a.push_back(Json{{"incident_id", i.incident_id},
                       {"device_id", i.device_id},
                       {"kind", i.kind},
                       {"received_at", i.received_at},
                       {"delivered_at", opt(i.delivered_at)},
                       {"delivered_by", i.delivered_by},
                       {"attempts", i.attempts},
                       {"next_attempt_at", i.delivered_at ? Json() : Json(i.next_attempt_at)},
                       {"last_attempt_at", opt(i.last_attempt_at)},
                       {"last_error", i.last_error}});
    }
    out << metadata::DumpJson(a) << "\n";
    return kExitOk;
  }
  for (const auto& i : *list) {
    out << PrintableText(i.incident_id) << "  " << i.device_id << "  " << PrintableText(i.kind)
        << "  " << UtcTime(i.received_at) << "  ";
    if (i.delivered_at) {
      out << "delivered " << UtcTime(*i.delivered_at) << " (attempts " << i.attempts << ")";
    } else {
      out << "pending (attempts " << i.attempts << ", next " << UtcTime(i.next_attempt_at) << ")";
      if (!i.last_error.empty()) out << ": " << PrintableText(i.last_error);
    }
    out << "\n";
  }
  return kExitOk;
}

Result<void> WriteNewFile(const std::filesystem::path& path, const std::string& text) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    return Error(Errc::InvalidArgument, path.string() + " exists already");
  }
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return Error(Errc::InvalidArgument, "cannot write " + path.string());
  return Ok();
}

int Init(const Options& o, std::ostream& out, std::ostream& err) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path dir = fs::absolute(o.init_dir, ec);
  if (ec) return Fail(err, Error(Errc::InvalidArgument, "bad directory"), kExitUsage);
  fs::create_directories(dir, ec);
  if (ec) return Fail(err, Error(Errc::InvalidArgument, "cannot create " + dir.string()));
  x509::ServerNames names{o.dns_names, o.ip_addresses};
  if (names.dns_names.empty() && names.ip_addresses.empty()) names.dns_names = {"localhost"};

  const auto now = SystemClock::Process().Now();
  auto run = [&]() -> Result<void> {
    UPKEEP_ASSIGN_OR_RETURN(x509::TlsKey ca_key, x509::TlsKey::Generate());
    UPKEEP_ASSIGN_OR_RETURN(std::string ca, x509::CreateCa(ca_key, "upkeep device CA",
                                                           {now - std::chrono::hours(1),
                                                            now + std::chrono::days(7300)}));
    UPKEEP_ASSIGN_OR_RETURN(x509::TlsKey server_key, x509::TlsKey::Generate());
    UPKEEP_ASSIGN_OR_RETURN(
        x509::IssuedCertificate server,
        x509::IssueServerCertificate(ca, ca_key, server_key.public_key(), names,
                                     {now - std::chrono::hours(1), now + std::chrono::days(825)}));
    UPKEEP_ASSIGN_OR_RETURN(std::string ca_key_pem, ca_key.ToPem());
    UPKEEP_ASSIGN_OR_RETURN(std::string server_key_pem, server_key.ToPem());
    UPKEEP_TRY(crypto::WritePrivateKeyFile(dir / "device-ca.key", ca_key_pem));
    UPKEEP_TRY(crypto::WritePrivateKeyFile(dir / "server.key", server_key_pem));
    UPKEEP_TRY(WriteNewFile(dir / "device-ca.pem", ca));
    UPKEEP_TRY(WriteNewFile(dir / "server.pem", server.pem));
    ServerConfig c;
    c.server.certificate = (dir / "server.pem").string();
    c.server.private_key = (dir / "server.key").string();
    c.devices.ca_certificate = (dir / "device-ca.pem").string();
    c.devices.ca_private_key = (dir / "device-ca.key").string();
    c.database.url = "sqlite:" + (dir / "fleet.db").string();
    UPKEEP_ASSIGN_OR_RETURN(c.director, CreateDirector(dir, now));
    UPKEEP_TRY(WriteNewFile(dir / "server.toml",
                            DumpServerConfig(c) +
                                "\n# Support period per model, answered by GET /api/v1/support:\n"
                                "# [models.acme-cam-v2]\n"
                                "# security_updates_until = \"2031-12-31\"\n"
                                "# url = \"https://example.com/support/acme-cam-v2\"\n"));
    return Ok();
  };
  if (auto r = run(); !r) return Fail(err, r.error());
  out << "created the device CA, a server certificate, the director's keys and root, and "
      << (dir / "server.toml").string() << "\nmove " << (dir / "director-root.key").string()
      << " offline: it signs new director roots only"
      << "\nstart with: upkeep-server -c " << (dir / "server.toml").string() << " serve\n";
  return kExitOk;
}

int Admin(const Options& o, const RolloutOptions& rollout, const CLI::App& admin,
          const ServerConfig& c, std::ostream& out, std::ostream& err) {
  auto db = OpenFleetDatabase(c);
  if (!db) return Fail(err, db.error().WithContext(storage::RedactUrl(c.database.url)));
  if (auto code = RunRolloutCommands(admin, rollout, **db, SystemClock::Process(), out, err)) {
    return *code;
  }
  const CLI::App* token = admin.get_subcommand("token");
  if (token->parsed()) {
    auto t = CreateEnrolmentToken(**db, SystemClock::Process(), o.model, o.group,
                                  std::chrono::days(o.expires_days));
    if (!t)
      return Fail(err, t.error(),
                  t.error().code() == Errc::InvalidArgument ? kExitUsage : kExitFailure);
    // The token is shown once: only its digest is stored.
    out << *t << "\n";
    return kExitOk;
  }
  if (admin.get_subcommand("incidents")->parsed()) return ListIncidentsCommand(o, **db, out, err);
  const CLI::App* devices = admin.get_subcommand("devices");
  if (devices->get_subcommand("assign")->parsed() ||
      devices->get_subcommand("unassign")->parsed()) {
    const bool assign = devices->get_subcommand("assign")->parsed();
    auto r = assign ? AssignTarget(**db, o.device_id, o.target, o.length, o.sha256)
                    : UnassignTarget(**db, o.device_id, o.target);
    if (!r) {
      const int code = r.error().code() == Errc::DeviceNotFound    ? kExitNotFound
                       : r.error().code() == Errc::InvalidArgument ? kExitUsage
                                                                   : kExitFailure;
      return Fail(err, r.error(), code);
    }
    log::info("upkeep-server: {} {} for device {}", assign ? "assigned" : "unassigned",
              PrintableText(o.target), o.device_id);
    out << (assign ? "assigned " : "unassigned ") << PrintableText(o.target) << " "
        << (assign ? "to " : "from ") << o.device_id << "\n";
    return kExitOk;
  }
  if (devices->get_subcommand("block")->parsed()) {
    auto r = BlockDevice(**db, o.device_id);
    if (!r) {
      return Fail(err, r.error(),
                  r.error().code() == Errc::DeviceNotFound ? kExitNotFound : kExitFailure);
    }
    log::info("upkeep-server: blocked device {}", o.device_id);
    out << "blocked " << o.device_id << "\n";
    return kExitOk;
  }
  auto list = ListDevices(**db);
  if (!list) return Fail(err, list.error());
  if (o.json) {
    Json a = Json::array();
    for (const auto& d : *list) {
      a.push_back(Json{{"id", d.id},
                       {"model", d.model},
                       {"serial", d.serial},
                       {"hardware", d.hardware},
                       {"group", d.group},
                       {"certificate_serial", d.certificate_serial},
                       {"blocked", d.blocked},
                       {"enrolled_at", d.enrolled_at},
                       {"last_checkin_at", d.last_checkin_at ? Json(*d.last_checkin_at) : Json()},
                       {"checkin_counter", d.checkin_counter}});
    }
    out << metadata::DumpJson(a) << "\n";
    return kExitOk;
  }
  for (const auto& d : *list) {
    out << d.id << "  " << PrintableText(d.model) << "  " << PrintableText(d.serial) << "  "
        << (d.group.empty() ? "-" : d.group) << (d.blocked ? "  blocked" : "") << "\n";
  }
  return kExitOk;
}

}  // namespace

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  Options o;
  RolloutOptions rollout;
  DirectorRotateOptions rotate;
  CLI::App app{"upkeep-server: the fleet server (device API, enrolment, inventory)"};
  app.add_option("-c,--config", o.config, "configuration file")->capture_default_str();
  app.add_flag("--dump-config", o.dump_config, "print the effective configuration and exit");
  app.add_option("--log-level", o.log_level, "debug, info, warn, error or off")
      ->capture_default_str();
  app.add_option("--log-format", o.log_format, "text, or json (one object per line)")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));
  app.add_subcommand("serve", "serve the device API until SIGTERM or SIGINT");
  auto* init = app.add_subcommand("init", "create a device CA, a server certificate and a config");
  init->add_option("dir", o.init_dir, "directory for the files")->required();
  init->add_option("--dns", o.dns_names, "DNS name of the server (repeatable)");
  init->add_option("--ip", o.ip_addresses, "IP address of the server (repeatable)");
  auto* admin = app.add_subcommand("admin", "administration");
  admin->require_subcommand(1);
  auto* incidents = admin->add_subcommand("incidents", "incidents and their delivery");
  incidents->require_subcommand(1);
  auto* incidents_list = incidents->add_subcommand("list", "list incidents and delivery state");
  incidents_list->add_flag("--json", o.json, "JSON output");
  incidents_list->add_flag("--undelivered", o.undelivered, "only incidents not delivered yet");
  auto* token = admin->add_subcommand("token", "enrolment tokens");
  token->require_subcommand(1);
  auto* create = token->add_subcommand("create", "create a one-time enrolment token");
  create->add_option("--model", o.model, "device model")->required();
  create->add_option("--group", o.group, "device group");
  create->add_option("--expires-days", o.expires_days, "validity in days")
      ->capture_default_str()
      ->check(CLI::Range(1u, 3650u));
  auto* devices = admin->add_subcommand("devices", "enrolled devices");
  devices->require_subcommand(1);
  auto* list = devices->add_subcommand("list", "list devices");
  list->add_flag("--json", o.json, "JSON output");
  auto* block = devices->add_subcommand("block", "refuse a device from now on");
  block->add_option("id", o.device_id, "device ID")->required();
  auto* assign = devices->add_subcommand(
      "assign", "direct a device to install an image-repository target at its next check-in");
  assign->add_option("id", o.device_id, "device ID")->required();
  assign->add_option("--target", o.target, "target path in the image repository")->required();
  assign->add_option("--length", o.length, "the target's length in bytes")->required();
  assign->add_option("--sha256", o.sha256, "the target's SHA-256 (hex)")->required();
  auto* unassign = devices->add_subcommand("unassign", "remove a device's assignment");
  unassign->add_option("id", o.device_id, "device ID")->required();
  unassign->add_option("--target", o.target, "target path in the image repository")->required();
  AddRolloutCommands(*admin, *devices, rollout);
  AddDirectorCommands(app, rotate);
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err) == 0 ? kExitOk : kExitUsage;
  }
  log::Init(o.log_level.c_str(), o.log_format == "json" ? log::Format::kJson : log::Format::kText);

  if (init->parsed()) return Init(o, out, err);
  // Runs offline, without the server's configuration.
  if (auto code = RunDirectorCommands(app, rotate, SystemClock::Process(), out, err)) return *code;
  auto config = LoadServerConfig(o.config);
  if (!config) return Fail(err, config.error(), kExitUsage);
  if (o.dump_config) {
    out << DumpServerConfig(*config);
    return kExitOk;
  }
  if (app.get_subcommand("serve")->parsed()) return Serve(*config, err);
  if (admin->parsed()) return Admin(o, rollout, *admin, *config, out, err);
  err << app.help();
  return kExitUsage;
}

}  // namespace upkeep::server
