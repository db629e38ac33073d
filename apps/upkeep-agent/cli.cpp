#include "cli.hpp"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <ostream>

#include "client_cli.hpp"
#include "daemon_main.hpp"
#include "upkeep/agent/agent.hpp"
#include "upkeep/common/errc.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/common/utf8.hpp"
#include "upkeep/install/payload.hpp"
#include "upkeep/metadata/errc.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/modules/module.hpp"

namespace upkeep::agent {

namespace {

using metadata::DumpJson;
using metadata::Json;

struct Options {
  std::string config = "/etc/upkeep/agent.toml";
  bool json = false;
  bool dump_config = false;
  std::string log_level = "warn";
  std::string source;
  std::string target;
  bool reboot = false;
};

// Output for people (a progress bar on a terminal, one line per event) or for programs (--json:
// one JSON object per line on stdout: events, progress, then a result or an error).
class Reporter {
 public:
  Reporter(std::ostream& out, std::ostream& err, bool json)
      : out_(out), err_(err), json_(json), bar_(!json && ::isatty(STDERR_FILENO) == 1) {}

  void Event(const install::Event& e) {
    EndBar();
    if (json_) {
      out_ << DumpJson(
                  Json{{"type", "event"}, {"id", e.id}, {"message", e.message}, {"data", e.data}})
           << "\n"
           << std::flush;
    } else {
      err_ << e.id << ": " << PrintableText(e.message) << "\n";
    }
  }

  void Progress(const install::ImageProgress& p) {
    if (p.image_size == 0) return;
    const auto percent = static_cast<unsigned>(p.image_bytes * 100 / p.image_size);
    if (percent == last_percent_) return;
    last_percent_ = percent;
    if (json_) {
      out_ << DumpJson(Json{{"type", "progress"},
                            {"image_bytes", p.image_bytes},
                            {"image_size", p.image_size},
                            {"downloaded_bytes", p.downloaded_bytes},
                            {"reused_bytes", p.reused_bytes}})
           << "\n"
           << std::flush;
    } else if (bar_) {
      constexpr unsigned kWidth = 30;
      const unsigned filled = percent * kWidth / 100;
      err_ << "\r" << std::string(filled, '#') << std::string(kWidth - filled, '.') << " "
           << percent << "% " << (p.image_bytes >> 20) << "/" << (p.image_size >> 20)
           << " MiB, downloaded " << (p.downloaded_bytes >> 20) << " MiB, reused "
           << (p.reused_bytes >> 20) << " MiB" << std::flush;
      bar_open_ = true;
    }
  }

  int Fail(const Error& e) {
    EndBar();
    const int code = ExitCodeFor(e);
    if (json_) {
      out_ << DumpJson(
                  Json{{"type", "error"},
                       {"code", std::string(e.code().category().name()) + "." + e.code().message()},
                       {"message", e.message()},
                       {"exit_code", code}})
           << "\n";
    } else {
      err_ << "upkeep-agent: " << PrintableText(e.ToString()) << "\n";
    }
    return code;
  }

  void Result(const Json& result, const std::string& text) {
    EndBar();
    if (json_) {
      out_ << DumpJson(Json{{"type", "result"}, {"result", result}}) << "\n";
    } else {
      out_ << PrintableText(text);
    }
  }

 private:
  void EndBar() {
    if (bar_open_) err_ << "\n";
    bar_open_ = false;
  }
  std::ostream& out_;
  std::ostream& err_;
  bool json_;
  bool bar_;
  bool bar_open_ = false;
  unsigned last_percent_ = 101;
};

int Run(const Options& o, Reporter& reporter, std::ostream& out, std::ostream& err,
        const CLI::App& app, const AgentHookForTest& hook);

Json StateJson(const DeviceState& s) {
  Json components = Json::object();
  for (const auto& [name, c] : s.components) {
    components[name] = {{"version", c.version},
                        {"target", c.target},
                        {"security_version", c.security_version},
                        {"slot", c.slot},
                        {"image_sha256", c.image_sha256}};
  }
  Json floors = Json::object();
  for (const auto& [name, f] : s.security) {
    floors[name] = {{"security_version", f.security_version},
                    {"rollback_sequence", f.rollback_sequence}};
  }
  Json j = {
      {"components", components}, {"security", floors}, {"update", nullptr}, {"last", nullptr}};
  if (s.update) {
    j["update"] = {
        {"state", ToString(s.update->state)}, {"target", s.update->target},
        {"version", s.update->version},       {"from_slot", s.update->from_slot},
        {"to_slot", s.update->to_slot},       {"durable_chunks", s.update->durable_chunks}};
  }
  if (s.last) {
    j["last"] = {{"outcome", s.last->outcome},
                 {"target", s.last->target},
                 {"version", s.last->version},
                 {"detail", s.last->detail}};
  }
  return j;
}

std::string StateText(const DeviceState& s) {
  std::string t;
  for (const auto& [name, c] : s.components) {
    t += "component " + name + ": " + c.version + " (security version " +
         std::to_string(c.security_version) + (c.slot.empty() ? "" : ", slot " + c.slot) + ")\n";
  }
  for (const auto& [name, f] : s.security) {
    t += "security floor " + name + ": " + std::to_string(f.security_version) + "\n";
  }
  if (s.update) {
    t += "update: " + s.update->version + " " + ToString(s.update->state) +
         (s.update->to_slot.empty()
              ? " (component " + s.update->component + ")\n"
              : " (slot " + s.update->from_slot + " -> " + s.update->to_slot + ")\n");
  } else {
    t += "update: none\n";
  }
  if (s.last) t += "last: " + s.last->outcome + " " + s.last->version + " " + s.last->detail + "\n";
  return t;
}

}  // namespace

int ExitCodeFor(const Error& e) {
  const auto& cat = e.code().category();
  if (cat == metadata::ErrcCategory()) {
    return e.code() == metadata::Errc::FetchFailed ? kExitDownload : kExitRejected;
  }
  if (cat == install::ErrcCategory()) {
    switch (static_cast<install::Errc>(e.code().value())) {
      case install::Errc::InvalidChunkIndex:
      case install::Errc::ChunkDigestMismatch:
      case install::Errc::DecompressFailed:
      case install::Errc::ChunkSizeMismatch:
      case install::Errc::ImageDigestMismatch:
      case install::Errc::TrailingData:
      case install::Errc::BundleMalformed:
      case install::Errc::ImageSizeMismatch:
        return kExitRejected;
      case install::Errc::PayloadTruncated:
      case install::Errc::DownloadFailed:
        return kExitDownload;
      default:
        return kExitDevice;
    }
  }
  if (cat == agent::ErrcCategory()) {
    switch (static_cast<Errc>(e.code().value())) {
      case Errc::InvalidConfig:
        return kExitUsage;
      case Errc::WrongHardware:
      case Errc::SecurityVersionRollback:
      case Errc::UnsupportedPayload:
      case Errc::NoInstallableTarget:
      case Errc::UnknownComponent:
        return kExitRefused;
      case Errc::UpdatePending:
      case Errc::NothingToCommit:
      case Errc::NothingToRollBack:
      case Errc::NotRebooted:
      case Errc::AlreadyInstalled:
        return kExitState;
      case Errc::HealthCheckFailed:
        return kExitHealth;
      default:
        return kExitDevice;
    }
  }
  if (cat == common::ErrcCategory()) {
    switch (static_cast<common::Errc>(e.code().value())) {
      case common::Errc::NetworkError:
      case common::Errc::Timeout:
      case common::Errc::HttpStatus:
      case common::Errc::RemoteNotFound:
        return kExitDownload;
      default:
        return kExitDevice;
    }
  }
  return kExitDevice;
}

namespace {
// install and status go through a running daemon, which owns the journal while it runs: an
// install of a bundle file (not a repository URL, no explicit target or reboot flag), and status.
bool DaemonCanServe(const Options& o, bool install, bool status) {
  if (status) return true;
  if (!install) return false;
  return !o.source.starts_with("http://") && !o.source.starts_with("https://") &&
         o.target.empty() && !o.reboot;
}
}  // namespace

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  return MainWithHookForTest(argc, argv, out, err, nullptr);
}

int MainWithHookForTest(int argc, const char* const* argv, std::ostream& out, std::ostream& err,
                        const AgentHookForTest& hook) {
  CLI::App app{"upkeep-agent: installs verified updates on this device"};
  Options o;
  app.add_option("-c,--config", o.config, "Configuration file (TOML)");
  app.add_flag("--json", o.json, "Machine-readable output: one JSON object per line");
  app.add_flag("--dump-config", o.dump_config, "Print the effective configuration and exit");
  app.add_option("--log-level", o.log_level, "debug, info, warn, error or off")
      ->check(CLI::IsMember({"debug", "info", "warn", "error", "off"}));
  auto* install = app.add_subcommand("install", "Install a release from a bundle or repository");
  install->add_option("SOURCE", o.source, "Offline bundle file, or repository base URL")
      ->required();
  install->add_option("TARGET", o.target, "Target path (optional with a bundle)");
  install->add_flag("--reboot", o.reboot, "Run bootloader.reboot_command after switching");
  auto* status = app.add_subcommand("status", "Slots, installed versions, journal state");
  auto* commit =
      app.add_subcommand("commit", "After rebooting into the new slot: check and commit");
  auto* rollback = app.add_subcommand("rollback", "Abandon or revert the update in progress");
  auto* boot =
      app.add_subcommand("simulate-boot", "Simulated devices: power on (firmware boot counting)");
  auto* run = app.add_subcommand(
      "run", "The daemon: check, install and report on schedule; serve the local API");
  // The commands that talk to a running daemon over its local API; install and status go to
  // the daemon when one runs and act on the device directly otherwise.
  ClientOptions client_options;
  auto client = AddClientCommands(app, client_options);
  AddClientOptions(*install, client_options);
  AddClientOptions(*status, client_options);
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      const CLI::App* shown = &app;
      for (const CLI::App* sub : {install, status, commit, rollback, boot, run}) {
        if (sub->parsed()) shown = sub;
      }
      out << shown->help();
      return kExitOk;
    }
    err << "upkeep-agent: " << e.what() << "\n";
    return kExitUsage;
  }
  log::Init(o.log_level.c_str());
  Reporter reporter(out, err, o.json);
  // Libraries return errors as values; should anything still throw, the caller gets an error in
  // the output format it asked for and an exit code, never an abort.
  try {
    client_options.json = client_options.json || o.json;
    if (client_options.socket.empty()) {
      // The socket the configured daemon serves, when the configuration can be read.
      if (auto c = LoadConfig(o.config)) client_options.socket = c->local_api.socket.string();
    }
    if (client->parsed()) {
      // check and policy also work without a daemon, on the device directly.
      const bool alone = (client->check != nullptr && client->check->parsed()) ||
                         (client->policy != nullptr && client->policy->parsed());
      client_options.silent_if_not_running = alone;
      const int code = RunClientCommand(*client, out, err);
      if (!alone || code != kExitDaemonNotRunning) return code;
      auto config = LoadConfig(o.config);
      if (!config) return reporter.Fail(config.error());
      if (client->check->parsed())
        return RunStandaloneCheck(*config, o.json || client_options.json, out, err);
      return RunStandalonePolicy(*config, client->policy_key, client->policy_value, client->confirm,
                                 o.json || client_options.json, out, err);
    }
    if (!hook && !o.dump_config && DaemonCanServe(o, install->parsed(), status->parsed())) {
      client_options.silent_if_not_running = true;
      std::error_code ec;
      const auto bundle = std::filesystem::absolute(o.source, ec);
      const int code =
          install->parsed()
              ? RunClientInstall(client_options, ec ? o.source : bundle.string(), out, err)
              : RunClientStatus(client_options, out, err);
      if (code != kExitDaemonNotRunning) return code;
    }
    return Run(o, reporter, out, err, app, hook);
  } catch (const std::exception& e) {
    return reporter.Fail(Error(common::Errc::Internal, e.what()));
  }
}

namespace {

int Run(const Options& o, Reporter& reporter, std::ostream& out, std::ostream& err,
        const CLI::App& app, const AgentHookForTest& hook) {
  const auto parsed = [&app](const char* name) { return app.get_subcommand(name)->parsed(); };
  auto config = LoadConfig(o.config);
  if (!config) return reporter.Fail(config.error());
  if (o.dump_config) {
    out << DumpConfig(*config);
    return kExitOk;
  }
  if (app.get_subcommands().empty()) {
    err << app.help();
    return kExitUsage;
  }

  if (parsed("run")) return RunDaemon(*config, out, err);

  LocalFilesystem fs;
  SystemClock clock;
  Agent agent(*config, fs, clock);
  agent.SetEventSink([&](const install::Event& e) { reporter.Event(e); });
  std::function<void(const install::ImageProgress&)> progress =
      [&](const install::ImageProgress& p) { reporter.Progress(p); };
  if (hook) hook(agent, progress);
  agent.SetProgress(progress);

  if (parsed("install")) {
    auto r = agent.Install(o.source,
                           o.target.empty() ? std::nullopt : std::optional<std::string>(o.target));
    if (!r) return reporter.Fail(r.error());
    Json j = {{"target", r->target},
              {"version", r->version},
              {"component", r->component},
              {"reboot_required", r->reboot_required}};
    std::string text = "installed " + r->target + " (" + r->version + ")";
    if (r->component == "rootfs") {
      j["slot"] = r->to_slot;
      j["bytes_written"] = r->report.bytes_written;
      j["downloaded_bytes"] = r->report.downloaded_bytes;
      j["reused_bytes"] = r->report.reused_bytes;
      j["resumed_from_chunk"] = r->report.resumed_from_chunk;
      text += " into slot " + r->to_slot + "; downloaded " +
              std::to_string(r->report.downloaded_bytes) + " bytes, reused " +
              std::to_string(r->report.reused_bytes) +
              " bytes\nreboot to start the new system, then run: upkeep-agent commit\n";
    } else {
      text += "\n";
    }
    reporter.Result(j, text);
    if (o.reboot && r->reboot_required && !config->bootloader.reboot_command.empty()) {
      modules::ProcessOptions p;
      p.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
      p.timeout = std::chrono::seconds(60);
      auto rebooted = modules::RunProcess(config->bootloader.reboot_command, p);
      if (!rebooted || !rebooted->Succeeded()) {
        err << "upkeep-agent: the reboot command failed; reboot to continue\n";
        return kExitDevice;
      }
    }
    return kExitOk;
  }
  if (parsed("status")) {
    auto r = agent.Status();
    if (!r) return reporter.Fail(r.error());
    Json j = StateJson(r->state);
    j["hardware"] = r->config.device.hardware;
    j["slots"] = {{"a", r->config.slots.a.string()}, {"b", r->config.slots.b.string()}};
    j["booted_slot"] = r->booted_slot;
    std::string text = "hardware: " + r->config.device.hardware +
                       "\nbooted slot: " + (r->booted_slot.empty() ? "unknown" : r->booted_slot) +
                       "\n";
    if (r->boot) {
      j["boot"] = {{"slot", r->boot->slot},
                   {"trial", r->boot->trial},
                   {"boot_count", r->boot->boot_count},
                   {"boot_limit", r->boot->boot_limit}};
      text += "next boot: slot " + r->boot->slot +
              (r->boot->trial ? " (trial " + std::to_string(r->boot->boot_count) + "/" +
                                    std::to_string(r->boot->boot_limit) + ")"
                              : "") +
              "\n";
    } else {
      j["boot"] = {{"error", r->boot_error}};
      text += "boot environment: " + r->boot_error + "\n";
    }
    reporter.Result(j, text + StateText(r->state));
    return kExitOk;
  }
  if (parsed("commit") || parsed("rollback")) {
    auto r = parsed("commit") ? agent.Commit() : agent.Rollback();
    if (!r) return reporter.Fail(r.error());
    reporter.Result(StateJson(*r), StateText(*r));
    return kExitOk;
  }
  auto slot = agent.SimulateBoot();
  if (!slot) return reporter.Fail(slot.error());
  reporter.Result(Json{{"booted_slot", *slot}}, "booted slot " + *slot + "\n");
  return kExitOk;
}

}  // namespace

}  // namespace upkeep::agent
