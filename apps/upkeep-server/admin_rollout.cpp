// upkeep-server admin releases | groups | campaigns, and admin devices set-group (docs/server.md).

#include "admin_rollout.hpp"

#include <charconv>
#include <ostream>

#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/common/utf8.hpp"
#include "upkeep/metadata/errc.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/server/https_server.hpp"

namespace upkeep::server {

namespace {

using metadata::Json;

int ExitFor(const Error& e) {
  if (e.code() == Errc::InvalidArgument) return kExitUsage;
  if (e.code() == Errc::NotFound || e.code() == Errc::DeviceNotFound) return kExitNotFound;
  if (e.code() == Errc::Conflict) return kExitConflict;
  if (e.code().category() == metadata::ErrcCategory()) return kExitRejected;
  return kExitFailure;
}

int Fail(std::ostream& err, const Error& e) {
  err << "upkeep-server: " << PrintableText(e.ToString()) << "\n";
  return ExitFor(e);
}

// "HH:MM" -> minutes after midnight.
Result<std::uint32_t> ParseClock(const std::string& text) {
  std::uint32_t h = 0;
  std::uint32_t m = 0;
  const char* p = text.data();
  const char* end = p + text.size();
  auto [after_h, e1] = std::from_chars(p, end, h);
  if (e1 != std::errc() || after_h == end || *after_h != ':') {
    return Error(Errc::InvalidArgument, "--start: expected HH:MM (UTC)");
  }
  auto [after_m, e2] = std::from_chars(after_h + 1, end, m);
  if (e2 != std::errc() || after_m != end || h > 23 || m > 59 || after_m - after_h != 3) {
    return Error(Errc::InvalidArgument, "--start: expected HH:MM (UTC)");
  }
  return h * 60 + m;
}

std::string ClockText(std::uint32_t minutes) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%02u:%02u", minutes / 60 % 24, minutes % 60);
  return buf;
}

Json CampaignJson(const CampaignStatus& c) {
  return Json{{"id", c.id},
              {"release", c.release},
              {"group", c.group},
              {"security", c.security},
              {"state", CampaignStateName(c.state)},
              {"reason", c.reason},
              {"phases", c.phases},
              {"open_phases", c.open_phases},
              {"phase_opened_at", c.phase_opened_at},
              {"soak_seconds", c.soak_seconds},
              {"failure_threshold_percent", c.failure_threshold_percent},
              {"created_at", c.created_at},
              {"offered", c.offered},
              {"committed", c.committed},
              {"failed", c.failed},
              {"rolled_back", c.rolled_back}};
}

void PrintCampaign(std::ostream& out, const CampaignStatus& c) {
  out << c.id << "  " << c.release << (c.security ? " (security)" : "") << "  group "
      << PrintableText(c.group) << "  " << CampaignStateName(c.state) << "  phase "
      << c.open_phases << "/" << c.phases.size() << " ("
      << (c.phases.empty() ? 0 : c.phases[c.open_phases - 1]) << "%)  offered " << c.offered
      << ", committed " << c.committed << ", failed " << c.failed << ", rolled back "
      << c.rolled_back;
  if (!c.reason.empty()) out << "  [" << PrintableText(c.reason) << "]";
  out << "\n";
}

}  // namespace

void AddRolloutCommands(CLI::App& admin, CLI::App& devices, RolloutOptions& o) {
  auto* set_group = devices.add_subcommand("set-group", "move a device to a group");
  set_group->add_option("id", o.device_id, "device ID")->required();
  set_group->add_option("group", o.group, "group name (\"\" for none)")->required();

  auto* releases = admin.add_subcommand("releases", "releases imported from the image repository");
  releases->require_subcommand(1);
  auto* import = releases->add_subcommand(
      "import", "verify a published image repository and store a release of some of its targets");
  import->add_option("name", o.name, "release name")->required();
  import->add_option("--repository", o.repository, "directory or https:// URL of the repository")
      ->required();
  import->add_option("--root", o.root_file, "the image repository's root.json the devices trust")
      ->required();
  import->add_option("--target", o.targets, "target path (repeatable)")->required();
  import->add_option("--ca", o.ca_file, "CA certificates for an https:// repository (PEM)");
  auto* rlist = releases->add_subcommand("list", "list releases");
  rlist->add_flag("--json", o.json, "JSON output");

  auto* groups = admin.add_subcommand("groups", "device groups and maintenance windows");
  groups->require_subcommand(1);
  auto* glist = groups->add_subcommand("list", "list groups");
  glist->add_flag("--json", o.json, "JSON output");
  auto* window = groups->add_subcommand("set-window", "set a group's daily maintenance window");
  window->add_option("group", o.group, "group name")->required();
  window->add_option("--start", o.window_start, "start, HH:MM UTC")->required();
  window->add_option("--minutes", o.window_minutes, "length in minutes")
      ->required()
      ->check(CLI::Range(1u, 1440u));
  auto* clear = groups->add_subcommand("clear-window", "remove a group's maintenance window");
  clear->add_option("group", o.group, "group name")->required();

  auto* campaigns = admin.add_subcommand("campaigns", "phased rollouts of a release to a group");
  campaigns->require_subcommand(1);
  auto* create = campaigns->add_subcommand("create", "start a campaign");
  create->add_option("id", o.name, "campaign name")->required();
  create->add_option("--release", o.release, "release name")->required();
  create->add_option("--group", o.group, "device group, or '*' for every device")->required();
  create->add_option("--phases", o.phases, "cumulative percentages")->capture_default_str();
  create->add_option("--soak-hours", o.soak_hours, "hours each phase runs before the next")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 8760.0));
  create->add_option("--failure-threshold", o.failure_threshold,
                     "pause when more than this percentage of offered devices fail")
      ->capture_default_str()
      ->check(CLI::Range(0u, 100u));
  auto* clist = campaigns->add_subcommand("list", "list campaigns with their progress");
  clist->add_flag("--json", o.json, "JSON output");
  for (const char* name : {"pause", "resume", "cancel"}) {
    auto* c = campaigns->add_subcommand(name, std::string(name) + " a campaign");
    c->add_option("id", o.name, "campaign name")->required();
    if (std::string_view(name) != "resume") c->add_option("--reason", o.reason, "why");
  }
}

std::optional<int> RunRolloutCommands(const CLI::App& admin, const RolloutOptions& o,
                                      storage::Database& db, const Clock& clock,
                                      std::ostream& out, std::ostream& err) {
  const CLI::App* devices = admin.get_subcommand("devices");
  if (devices->parsed() && devices->get_subcommand("set-group")->parsed()) {
    if (auto r = SetDeviceGroup(db, o.device_id, o.group); !r) return Fail(err, r.error());
    log::info("upkeep-server: device {} moved to group {}", o.device_id, o.group);
    out << o.device_id << " is in group " << (o.group.empty() ? "-" : o.group) << "\n";
    return kExitOk;
  }

  const CLI::App* releases = admin.get_subcommand("releases");
  if (releases->parsed()) {
    if (releases->get_subcommand("import")->parsed()) {
      const LocalFilesystem fs;
      auto root = fs.ReadFile(o.root_file, 1 << 20);
      if (!root) return Fail(err, root.error());
      ImportOptions io{o.name, o.repository, *root, o.targets, ""};
      if (!o.ca_file.empty()) {
        auto ca = fs.ReadFile(o.ca_file, 1 << 20);
        if (!ca) return Fail(err, ca.error());
        io.ca_pem = *ca;
      }
      auto release = ImportRelease(db, clock, io);
      if (!release) return Fail(err, release.error());
      out << "imported " << release->id << (release->security ? " (security)" : " (feature)")
          << ": " << release->targets.size() << " (target, model) pairs\n";
      return kExitOk;
    }
    auto list = ListReleases(db);
    if (!list) return Fail(err, list.error());
    Json all = Json::array();
    for (const Release& r : *list) {
      Json targets = Json::array();
      for (const ReleaseTarget& t : r.targets) {
        targets.push_back(Json{{"hardware", t.hardware},
                               {"path", t.path},
                               {"length", t.length},
                               {"sha256", t.sha256},
                               {"version", t.version},
                               {"security", t.security}});
        if (!o.json) {
          out << r.id << "  " << t.hardware << "  " << PrintableText(t.path) << "  "
              << PrintableText(t.version) << (t.security ? "  security" : "") << "\n";
        }
      }
      all.push_back(Json{{"id", r.id},
                         {"security", r.security},
                         {"source", r.source},
                         {"created_at", r.created_at},
                         {"targets", std::move(targets)}});
    }
    if (o.json) out << metadata::DumpJson(all) << "\n";
    return kExitOk;
  }

  const CLI::App* groups = admin.get_subcommand("groups");
  if (groups->parsed()) {
    if (groups->get_subcommand("set-window")->parsed()) {
      auto start = ParseClock(o.window_start);
      if (!start) return Fail(err, start.error());
      if (auto r = SetMaintenanceWindow(db, o.group, MaintenanceWindow{*start, o.window_minutes});
          !r) {
        return Fail(err, r.error());
      }
      out << "group " << o.group << ": window " << ClockText(*start) << " UTC, " << o.window_minutes
          << " minutes\n";
      return kExitOk;
    }
    if (groups->get_subcommand("clear-window")->parsed()) {
      if (auto r = SetMaintenanceWindow(db, o.group, std::nullopt); !r) return Fail(err, r.error());
      out << "group " << o.group << ": no window\n";
      return kExitOk;
    }
    auto list = ListGroups(db);
    if (!list) return Fail(err, list.error());
    Json all = Json::array();
    for (const GroupInfo& g : *list) {
      Json w;
      if (g.window) {
        w = Json{{"start", ClockText(g.window->start_minute)}, {"minutes", g.window->minutes}};
      }
      all.push_back(Json{{"name", g.name}, {"devices", g.devices}, {"window", w}});
      if (!o.json) {
        out << (g.name.empty() ? "-" : g.name) << "  " << g.devices << " devices";
        if (g.window) {
          out << "  window " << ClockText(g.window->start_minute) << " UTC +"
              << g.window->minutes << " min";
        }
        out << "\n";
      }
    }
    if (o.json) out << metadata::DumpJson(all) << "\n";
    return kExitOk;
  }

  const CLI::App* campaigns = admin.get_subcommand("campaigns");
  if (campaigns->parsed()) {
    Result<CampaignStatus> changed = Error(Errc::InvalidArgument, "no campaign command");
    if (campaigns->get_subcommand("create")->parsed()) {
      auto phases = ParsePhases(o.phases);
      if (!phases) return Fail(err, phases.error());
      CampaignSpec spec;
      spec.id = o.name;
      spec.release = o.release;
      spec.group = o.group;
      spec.phases = *phases;
      spec.soak = std::chrono::seconds(static_cast<std::int64_t>(o.soak_hours * 3600));
      spec.failure_threshold_percent = o.failure_threshold;
      changed = CreateCampaign(db, clock, spec);
    } else if (campaigns->get_subcommand("pause")->parsed()) {
      changed = PauseCampaign(db, clock, o.name, o.reason);
    } else if (campaigns->get_subcommand("resume")->parsed()) {
      changed = ResumeCampaign(db, clock, o.name);
    } else if (campaigns->get_subcommand("cancel")->parsed()) {
      changed = CancelCampaign(db, clock, o.name, o.reason);
    } else {
      auto list = ListCampaigns(db, clock);
      if (!list) return Fail(err, list.error());
      Json all = Json::array();
      for (const CampaignStatus& c : *list) {
        if (o.json) {
          all.push_back(CampaignJson(c));
        } else {
          PrintCampaign(out, c);
        }
      }
      if (o.json) out << metadata::DumpJson(all) << "\n";
      return kExitOk;
    }
    if (!changed) return Fail(err, changed.error());
    log::info("upkeep-server: campaign {} is {}", changed->id, CampaignStateName(changed->state));
    if (o.json) {
      out << metadata::DumpJson(CampaignJson(*changed)) << "\n";
    } else {
      PrintCampaign(out, *changed);
    }
    return kExitOk;
  }
  return std::nullopt;
}

}  // namespace upkeep::server
