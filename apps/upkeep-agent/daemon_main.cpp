#include "daemon_main.hpp"

#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <charconv>
#include <ostream>
#include <random>
#include <thread>

#include "upkeep/agent/daemon.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/common/utf8.hpp"
#include "upkeep/localapi/credential_store.hpp"
#include "upkeep/localapi/dbus.hpp"
#include "upkeep/localapi/server.hpp"
#include "upkeep/metadata/json_text.hpp"

namespace upkeep::agent {

namespace {

constexpr std::uint64_t kMaxPem = 64 * 1024;

std::uint64_t Seed() {
  std::random_device rd;
  return (std::uint64_t{rd()} << 32) ^ rd();
}

int Fail(std::ostream& err, const std::string& what, const Error& e, int code) {
  err << "upkeep-agent: " << what << ": " << PrintableText(e.ToString()) << "\n";
  return code;
}

}  // namespace

int RunDaemon(const AgentConfig& config, std::ostream& out, std::ostream& err) {
  // Termination signals are taken by this thread alone (sigwait below): blocked before any other
  // thread starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  LocalFilesystem fs;
  SystemClock clock;
  SeededRandom random(Seed());
  // D-Bus signals follow the daemon's events (set once the service runs).
  std::atomic<localapi::DbusService*> bus{nullptr};
  Daemon* self = nullptr;
  DaemonOptions options;
  options.on_event = [&bus, &self](const localapi::Event& e) {
    localapi::DbusService* service = bus.load();
    if (service == nullptr || self == nullptr) return;
    const localapi::Peer daemon_itself{};
    if (e.type == "state") {
      if (auto st = self->GetStatus(daemon_itself)) (void)service->EmitStatus(*st);
    } else if (e.type == "notice") {
      if (auto notices = self->Notices(daemon_itself)) {
        for (const auto& n : *notices) (void)service->EmitNotice(n);
      }
    }
  };
  auto daemon = Daemon::Create(config, fs, clock, random, options);
  if (!daemon) return Fail(err, "start", daemon.error(), kDaemonExitConfig);

  localapi::LocalApiOptions api;
  api.socket_path = config.local_api.socket;
  api.mode = static_cast<mode_t>(config.local_api.mode);
  if (!config.local_api.group.empty()) {
    struct group* g = ::getgrnam(config.local_api.group.c_str());
    if (g == nullptr) {
      return Fail(err, "local_api.group",
                  Error(Errc::InvalidConfig, "no group " + config.local_api.group),
                  kDaemonExitConfig);
    }
    api.group = g->gr_gid;
  }
  if (auto made = fs.CreateDirectories(config.local_api.socket.parent_path()); !made) {
    return Fail(err, "local API", made.error(), kDaemonExitRuntime);
  }
  std::optional<localapi::CredentialStore> credentials;
  if (!config.local_api.lan_listen.empty()) {
    auto store =
        localapi::CredentialStore::Open(config.device.data_dir / "lan-credential.json", clock);
    if (!store) return Fail(err, "LAN credential", store.error(), kDaemonExitRuntime);
    credentials.emplace(std::move(*store));
    if (!credentials->has_credential()) {
      // Generated on the device, never a default: shown once through a file only root reads, for
      // the device's set-up screen or label printer.
      auto secret = credentials->GenerateOnce();
      if (!secret) return Fail(err, "LAN credential", secret.error(), kDaemonExitRuntime);
      const mode_t previous = ::umask(0077);
      auto w = fs.WriteFileAtomic(config.device.data_dir / "lan-credential.txt", *secret + "\n");
      ::umask(previous);
      if (!w) return Fail(err, "LAN credential", w.error(), kDaemonExitRuntime);
    }
    localapi::LanOptions lan;
    const auto colon = config.local_api.lan_listen.rfind(':');
    lan.address = config.local_api.lan_listen.substr(0, colon);
    std::uint32_t port = 0;  // checked by the configuration parser: 1..65535
    const std::string digits = config.local_api.lan_listen.substr(colon + 1);
    std::from_chars(digits.data(), digits.data() + digits.size(), port);
    lan.port = static_cast<std::uint16_t>(port);
    auto cert = fs.ReadFile(config.local_api.lan_certificate, kMaxPem);
    if (!cert) return Fail(err, "local_api.lan_certificate", cert.error(), kDaemonExitConfig);
    auto key = fs.ReadFile(config.local_api.lan_key, kMaxPem);
    if (!key) return Fail(err, "local_api.lan_key", key.error(), kDaemonExitConfig);
    lan.certificate_pem = std::move(*cert);
    lan.private_key_pem = std::move(*key);
    lan.credentials = &*credentials;
    api.lan = std::move(lan);
  }
  self = daemon->get();
  auto server = localapi::LocalApiServer::Start(api, **daemon);
  if (!server) return Fail(err, "local API", server.error(), kDaemonExitRuntime);
  std::unique_ptr<localapi::DbusService> dbus;
  if (config.local_api.dbus) {
    auto started = localapi::DbusService::Start({}, **daemon);
    if (!started) return Fail(err, "D-Bus", started.error(), kDaemonExitRuntime);
    dbus = std::move(*started);
    bus.store(dbus.get());
  }

  log::info("upkeep-agent running; local API on {}", config.local_api.socket.string());
  if (api.lan) {
    log::info("LAN API on {}:{}", api.lan->address, (*server)->lan_port());
  }
  std::thread worker([&] { (*daemon)->Run(); });
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  log::info("signal {}: stopping", signal_number);
  (*daemon)->Stop();
  worker.join();
  bus.store(nullptr);
  if (dbus) dbus->Stop();
  (*server)->Stop(std::chrono::seconds(2));
  out << std::flush;
  return 0;
}

namespace {

metadata::Json PolicySettingsJson(const PolicyState& p) {
  return metadata::Json{{"auto_install", p.auto_install},
                        {"notifications", p.notifications},
                        {"security_auto_install", p.security_auto_install},
                        {"reboot_later", p.reboot_later}};
}

std::string OnOff(bool b) { return b ? "on" : "off"; }

}  // namespace

int RunStandaloneCheck(const AgentConfig& config, bool json, std::ostream& out, std::ostream& err) {
  LocalFilesystem fs;
  SystemClock clock;
  SeededRandom random(Seed());
  auto daemon = Daemon::Create(config, fs, clock, random);
  if (!daemon) return Fail(err, "check", daemon.error(), kDaemonExitConfig);
  auto r = (*daemon)->CheckAndDeliver();
  if (!r) return Fail(err, "check", r.error(), kDaemonExitRuntime);
  if (json) {
    out << metadata::DumpJson(metadata::Json{{"not_modified", r->not_modified},
                                             {"offered", r->offered},
                                             {"installed", r->installed},
                                             {"rejected", r->rejected},
                                             {"waiting", r->waiting}})
        << "\n";
  } else {
    out << (r->not_modified ? "nothing new" : std::to_string(r->offered.size()) + " offered")
        << ", " << r->installed.size() << " installed, " << r->rejected.size() << " rejected, "
        << r->waiting.size() << " waiting\n";
  }
  return r->rejected.empty() ? 0 : 2;
}

int RunStandalonePolicy(const AgentConfig& config, const std::string& key, const std::string& value,
                        bool confirm, bool json, std::ostream& out, std::ostream& err) {
  LocalFilesystem fs;
  if (auto made = fs.CreateDirectories(config.device.data_dir); !made) {
    return Fail(err, "policy", made.error(), kDaemonExitRuntime);
  }
  auto policy = Policy::Load(fs, config.device.data_dir / "policy.json", config.policy);
  if (!policy) return Fail(err, "policy", policy.error(), kDaemonExitRuntime);
  if (!key.empty()) {
    const bool on = value == "on";
    Result<void> r = Ok();
    if (key == "auto-install") {
      r = policy->SetAutoInstall(on);
    } else if (key == "notifications") {
      r = policy->SetNotifications(on);
    } else if (key == "security-auto-install") {
      r = policy->SetSecurityAutoInstall(on, confirm);
    } else {
      r = policy->SetRebootLater(on);
    }
    if (!r)
      return Fail(err, "policy", r.error(), r.error().code() == Errc::ConfirmationRequired ? 1 : 7);
  }
  const PolicyState& p = policy->state();
  if (json) {
    out << metadata::DumpJson(PolicySettingsJson(p)) << "\n";
  } else {
    out << "auto-install: " << OnOff(p.auto_install)
        << "\nnotifications: " << OnOff(p.notifications)
        << "\nsecurity-auto-install: " << OnOff(p.security_auto_install)
        << "\nreboot-later: " << OnOff(p.reboot_later) << "\n";
  }
  return 0;
}

}  // namespace upkeep::agent
