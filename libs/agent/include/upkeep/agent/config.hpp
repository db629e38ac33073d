#pragma once

// The device agent's configuration (TOML, docs/agent.md). One struct per section with defaults in
// the class; parsing rejects unknown sections and keys and validates every value, so a typo never
// silently falls back to a default. `upkeep-agent --dump-config` prints the effective result.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "upkeep/agent/notice.hpp"
#include "upkeep/agent/policy.hpp"
#include "upkeep/agent/schedule.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/result.hpp"

namespace upkeep::agent {

enum class Errc {
  InvalidConfig = 1,             // the configuration file is missing, malformed or has bad values
  WrongHardware = 10,            // the release is not built for this device's model
  SecurityVersionRollback = 11,  // the release's security_version is below the installed floor
  UnsupportedPayload = 12,       // the release's payload cannot go into a slot (not chunked)
  UpdatePending = 13,            // an installed update waits for reboot, commit or rollback
  NothingToCommit = 14,          // no update is on trial
  NothingToRollBack = 15,        // no update is in progress
  NotRebooted = 16,              // commit asked before the device booted the new slot
  HealthCheckFailed = 17,        // the trial system failed its health checks; rolling back
  JournalCorrupt = 20,           // the state journal cannot be parsed
  JournalWriteFailed = 21,       // the state journal cannot be written
  NoInstallableTarget = 22,      // a bundle holds no release for this device
  UnknownComponent = 23,         // the release's component has no slot or module configured
  ModuleFailed = 24,             // an update module failed; the component was rolled back
  AlreadyInstalled = 25,         // the release is what the device already runs
  TargetOutsideNamespace = 26,   // the target's path lies in no component's namespace, or its
                                 // update metadata claims another component than its path
  FlowStuck = 30,                // the update flow kept moving past its step bound (a defect)
  // Update policy and check schedule (policy.hpp, schedule.hpp; docs/policy.md)
  PolicyCorrupt = 40,         // the policy file does not parse or holds impossible values
  PolicyWriteFailed = 41,     // the policy file cannot be written
  ConfirmationRequired = 42,  // turning off automatic security updates without confirmation
  InvalidPolicyValue = 43,    // a policy change with an impossible value (time in the past, ...)
  UnknownUpdate = 44,         // a policy change names an update that was never offered
  SecurityUpdateNotRefusable = 45,  // a security update can be postponed, not refused
  ScheduleCorrupt = 46,       // the schedule file does not parse or holds impossible values
  NotifierFailed = 47,           // the notifier command could not run, failed or timed out
};

}  // namespace upkeep::agent

UPKEEP_DECLARE_ERRC(upkeep::agent);

namespace upkeep::agent {

struct DeviceConfig {
  // Model identifier, matched against a release's "hardware" list.
  std::string hardware;
  // Model designation shown to users and sent at enrolment; empty: the hardware identifier.
  std::string model;
  // Serial number sent at enrolment; empty: the machine ID (/etc/machine-id).
  std::string serial;
  // The end of the model's security-update support period ("YYYY-MM-DD"), as published by the
  // manufacturer; empty: not announced. The fleet server's answer takes precedence.
  std::string support_until;
  // Agent state: journal, trusted metadata, event log, work files.
  std::filesystem::path data_dir = "/var/lib/upkeep";
};

struct TrustConfig {
  // Initial trusted root metadata (provisioned at manufacture); copied into data_dir on first use.
  std::filesystem::path root = "/etc/upkeep/root.json";
};

struct RepositoryConfig {
  // Base URL of the image repository (metadata/ and targets/ below it), or the absolute path of
  // a local mirror (a published repository directory); empty: offline bundles only.
  std::string url;
  // CA bundle (PEM) for an https repository; empty: the system's.
  std::filesystem::path ca_file;
};

// The fleet server (docs/formats/device-api.md). Without one, the daemon reads the image
// repository alone and takes the newest release for this device (release_choice.hpp).
struct ServerConfig {
  std::string url;                     // base URL, https://...; empty: no fleet server
  std::filesystem::path ca_file;       // CA the server's certificate must chain to (required)
  std::filesystem::path token_file;    // one-time enrolment token, or:
  std::filesystem::path manufacturer_certificate;  // a manufacturer-issued device certificate
  std::filesystem::path manufacturer_key;          // and its key (PEM)
};

// The local API (docs/local-api.md).
struct LocalApiConfig {
  std::filesystem::path socket = "/run/upkeep/agent.sock";
  std::uint32_t mode = 0660;
  std::string group;  // the socket's group (name); empty: the daemon's
  bool dbus = false;  // also serve org.upkeep.Agent1 on the system bus
  // Optional HTTPS on the LAN for a companion app: "ADDRESS:PORT"; empty: off.
  std::string lan_listen;
  std::filesystem::path lan_certificate;  // PEM, required with lan_listen
  std::filesystem::path lan_key;
};

struct DaemonConfig {
  // Download and install at idle CPU and I/O priority, so the device keeps doing its job.
  bool low_priority = true;
};

struct SlotsConfig {
  // The two root filesystem slots: block devices, partitions, or files (simulated devices).
  std::filesystem::path a;
  std::filesystem::path b;
  // File slots only: capacity in bytes (0: unlimited).
  std::uint64_t file_size = 0;
  // Read the written image back from the medium and check its digest before switching.
  bool read_back = false;
  // Target paths the root filesystem may come from (and its chunk index). The image repository's
  // delegations decide who may sign paths here, so only they can replace the root filesystem.
  std::string target_namespace = "rootfs/";
};

struct BootloaderConfig {
  // "file" (simulated devices), "uboot" (libubootenv) or "grub" (grubenv).
  std::string type = "file";
  // file: the environment file; uboot: the fw_env.config file; grub: the grubenv file.
  std::filesystem::path env;
  // Boot variable naming the slot to boot.
  std::string slot_variable = "upkeep_slot";
  // Trial boots before the firmware falls back.
  unsigned boot_limit = 3;
  // Where the booted slot is read from (`upkeep.slot=` word).
  std::filesystem::path cmdline = "/proc/cmdline";
  // Changes on every boot; tells the agent whether a reboot happened.
  std::filesystem::path boot_id = "/proc/sys/kernel/random/boot_id";
  // Run after switching when `install --reboot` is given; empty: the user reboots.
  std::vector<std::string> reboot_command;
};

struct HealthConfig {
  // Commands that must all exit 0 on the trial system before it is committed.
  std::vector<std::vector<std::string>> commands;
  // systemd units (services, targets) that must be active: `systemctl is-active --quiet UNIT`.
  std::vector<std::string> systemd_units;
  // For each command.
  std::chrono::seconds timeout{120};
};

struct InstallConfig {
  // Sync the slot and checkpoint the journal about every this many MiB.
  std::uint64_t checkpoint_mib = 64;
  // Resumes of a dropped download before giving up, and the pause before each.
  unsigned max_resumes = 5;
  std::chrono::milliseconds resume_delay{1000};
  // Copy chunks the active slot already holds instead of downloading them.
  bool reuse_chunks = true;
};

struct ModuleConfig {
  // Executable and leading arguments; the agent appends STAGE WORKDIR
  // (docs/formats/update-module.md).
  std::vector<std::string> command;
  std::chrono::seconds timeout{300};
  // Free-form arguments handed to the module in header.json ("module_args"), as JSON text.
  std::string args_json = "{}";
  // Target paths this component may come from (a prefix ending in '/'); empty: "<name>/".
  std::string target_namespace;
};

struct AgentConfig {
  DeviceConfig device;
  TrustConfig trust;
  RepositoryConfig repository;
  SlotsConfig slots;
  BootloaderConfig bootloader;
  HealthConfig health;
  InstallConfig install;
  // Components other than the root filesystem, by name ("app", "config", ...).
  std::map<std::string, ModuleConfig> components;
  ServerConfig server;
  ScheduleOptions schedule;
  PolicyOptions policy;
  NotifierOptions notices;
  LocalApiConfig local_api;
  DaemonConfig daemon;
};

// Errc::InvalidConfig with the offending key in the message.
[[nodiscard]] Result<AgentConfig> ParseConfig(std::string_view toml_text);
// One configuration file's name (for messages) and text.
struct ConfigLayer {
  std::string name;
  std::string text;
};
// The layers merged in order (tables key by key, a later value replaces an earlier one), then
// checked as one configuration: unknown keys are errors in any layer. A layer's TOML syntax error
// names that layer.
[[nodiscard]] Result<AgentConfig> ParseConfigLayers(const std::vector<ConfigLayer>& layers);
// `file`, then its drop-ins: the `*.toml` files of `<stem>.conf.d/` beside it (e.g.
// /etc/upkeep/agent.conf.d/ for /etc/upkeep/agent.toml), in name order, merged as
// ParseConfigLayers does. A missing drop-in directory is no error.
[[nodiscard]] Result<AgentConfig> LoadConfig(const std::filesystem::path& file,
                                             const Filesystem& fs);
[[nodiscard]] Result<AgentConfig> LoadConfig(const std::filesystem::path& file);
// The effective configuration as TOML.
[[nodiscard]] std::string DumpConfig(const AgentConfig& config);

}  // namespace upkeep::agent
