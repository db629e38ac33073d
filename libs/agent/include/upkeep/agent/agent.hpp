#pragma once

// The device agent's operations: install a release into the inactive slot and switch to it (or
// through a component's update module), report status, commit or roll back after the reboot.
// Each operation runs the update flow (flow.hpp): the journal moves along the transition table
// before the handler of the new step acts, so each operation can be repeated after a crash and
// picks up where the journal says. `upkeep-agent` calls these; the daemon will too.

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "upkeep/agent/config.hpp"
#include "upkeep/agent/flow.hpp"
#include "upkeep/agent/state.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/fetcher.hpp"
#include "upkeep/install/bootloader.hpp"
#include "upkeep/install/bundle.hpp"
#include "upkeep/install/events.hpp"
#include "upkeep/install/image_installer.hpp"
#include "upkeep/metadata/update_metadata.hpp"
#include "upkeep/metadata/updater.hpp"

namespace upkeep::agent {

struct InstallOutcome {
  std::string target;
  std::string version;
  std::string component;
  std::string to_slot;                 // rootfs only
  bool reboot_required = false;        // rootfs: reboot into to_slot, then commit
  install::ImageInstallReport report;  // rootfs only
};

struct StatusReport {
  AgentConfig config;
  DeviceState state;
  std::optional<install::BootStatus> boot;  // nullopt when the environment cannot be read
  std::string boot_error;
  std::string booted_slot;  // "" when unknown
};

// Where releases come from: an offline bundle, an image repository in a local directory, or an
// http(s) image repository. Each is read through the same TUF updater over the device's trusted
// metadata, so a bundle is verified exactly like a network update.
struct ReleaseSource {
  std::unique_ptr<install::Bundle> bundle;  // heap: the fetcher refers to it
  std::unique_ptr<Fetcher> fetcher;
  std::string metadata_url;
  std::string targets_url;
  std::unique_ptr<metadata::Updater> updater;
};

class Agent : private FlowHandlers {
 public:
  Agent(AgentConfig config, Filesystem& fs, const Clock& clock);
  Agent(Agent&&) noexcept;
  ~Agent() override;

  // Lifecycle events (also appended to data_dir/events.jsonl).
  void SetEventSink(install::EventSink sink) { extra_sink_ = std::move(sink); }
  void SetProgress(std::function<void(const install::ImageProgress&)> p) {
    progress_ = std::move(p);
  }

  // Installs `target` from `source`: an offline bundle file, or an http(s) repository base URL
  // (empty: the configured repository). With a bundle, `target` may be omitted: the bundle's
  // release for this device is chosen. Errors: metadata::Errc (TUF), install::Errc (payload,
  // slot), agent::Errc (WrongHardware, SecurityVersionRollback, UnsupportedPayload,
  // UpdatePending, NoInstallableTarget, UnknownComponent, ModuleFailed, Journal*).
  [[nodiscard]] Result<InstallOutcome> Install(const std::string& source,
                                               const std::optional<std::string>& target);

  // The steps of Install, for callers that choose the release themselves (the daemon: the
  // director's answer, or the newest release in the image repository).
  // Source selection: `where` is a bundle file, an image repository directory, or an http(s)
  // base URL (empty: repository.url). The trusted metadata is refreshed (TUF 5.3) before it
  // returns. install::Errc::DownloadFailed for an unreadable medium.
  [[nodiscard]] Result<ReleaseSource> OpenSource(const std::string& where);
  // Release choice for a bundle: its one release for this device (NoInstallableTarget when it
  // holds none or several).
  [[nodiscard]] Result<std::string> ChooseBundleTarget(ReleaseSource& source) const;
  // Policy and install of one verified target of `source` (the image repository's TargetFile):
  // component by path, security floor, hardware, then the root filesystem into the inactive
  // slot or a module install.
  [[nodiscard]] Result<InstallOutcome> InstallTarget(ReleaseSource& source,
                                                     const metadata::TargetFile& target);
  // The post-boot step: on the trial slot, run the health checks and commit, or revert
  // (HealthCheckFailed; reboot to finish). NotRebooted before the reboot, NothingToCommit when
  // nothing is on trial.
  [[nodiscard]] Result<DeviceState> Commit();
  // Abandons or reverts the update in progress. NothingToRollBack when there is none.
  [[nodiscard]] Result<DeviceState> Rollback();
  // Applies what the current boot tells about a pending update (trial started, firmware fell
  // back, revert finished) and finishes an interrupted module install (Commit again once Install
  // had succeeded, otherwise the module's Rollback). Install, Commit and Rollback call it first.
  [[nodiscard]] Result<DeviceState> Reconcile();
  // The state after Reconcile (when the booted slot and boot ID can be read).
  [[nodiscard]] Result<StatusReport> Status();
  // Simulated devices (bootloader type "file"): what the firmware does at power-on, then the
  // kernel command line and a new boot ID. Returns the slot booted.
  [[nodiscard]] Result<std::string> SimulateBoot();

  [[nodiscard]] StateStore& store() { return store_; }
  [[nodiscard]] install::Bootloader& bootloader() { return *bootloader_; }
  [[nodiscard]] std::filesystem::path SlotPath(const std::string& slot) const;

 private:
  struct RootfsInstall;  // what the Writing and Written handlers install from (agent.cpp)

  // The flow's handlers (flow.cpp names which state each serves).
  [[nodiscard]] Result<Step> OnWriting(DeviceState& state, Command command) override;
  [[nodiscard]] Result<Step> OnWritten(DeviceState& state, Command command) override;
  [[nodiscard]] Result<Step> OnSwitched(DeviceState& state, Command command) override;
  [[nodiscard]] Result<Step> OnTrial(DeviceState& state, Command command) override;
  [[nodiscard]] Result<Step> OnReverting(DeviceState& state, Command command) override;
  [[nodiscard]] Result<Step> OnModuleInstalling(DeviceState& state, Command command) override;
  [[nodiscard]] Result<Step> OnModuleCommitting(DeviceState& state, Command command) override;
  // Moves the journal along `row`, saves it, and emits the row's event (with the step's detail
  // and extra fields in its data).
  [[nodiscard]] Result<void> Persist(DeviceState& state, const Transition& row,
                                     const Step& step) override;
  // A module stage failed (or the install was interrupted): Rollback, Cleanup, and the move.
  [[nodiscard]] Step RollBackModule(const PendingUpdate& u, const std::string& why);
  void Emit(const char* id, std::string message, metadata::Json data);
  [[nodiscard]] Result<std::string> BootedSlot() const;
  [[nodiscard]] Result<std::string> BootId() const;
  [[nodiscard]] Result<DeviceState> ReconcileForInstall();
  [[nodiscard]] Result<void> CheckPolicy(const DeviceState& state,
                                         const metadata::UpdateMetadata& m,
                                         const std::string& component) const;
  [[nodiscard]] Result<InstallOutcome> InstallRootfs(DeviceState& state, ReleaseSource& source,
                                                     const metadata::TargetFile& target,
                                                     const metadata::UpdateMetadata& m);
  [[nodiscard]] Result<InstallOutcome> InstallModule(DeviceState& state, ReleaseSource& source,
                                                     const metadata::TargetFile& target,
                                                     const metadata::UpdateMetadata& m,
                                                     const std::string& component);
  [[nodiscard]] Result<void> RunHealthChecks();
  [[nodiscard]] std::filesystem::path ModuleWorkDir(const std::string& component) const;
  void RaiseFloor(DeviceState& state, const std::string& component, std::uint64_t security_version,
                  std::optional<std::uint64_t> rollback_sequence);

  AgentConfig config_;
  Filesystem& fs_;
  const Clock& clock_;
  StateStore store_;
  std::unique_ptr<install::Bootloader> bootloader_;
  install::EventSink extra_sink_;
  std::function<void(const install::ImageProgress&)> progress_;
  // Set while Install runs the flow: the root filesystem release being written, and the module
  // update this process began (an update without it in a module state was interrupted).
  RootfsInstall* rootfs_install_ = nullptr;
  std::string module_update_id_;
};

// The component a release installs, decided by the target's path: the root filesystem's
// namespace (slots.namespace, default "rootfs/") or a module component's
// (components.NAME.namespace, default "NAME/"). The update metadata must agree (component "rootfs"
// exactly in the root filesystem's namespace). TargetOutsideNamespace otherwise: whatever a role
// signs, it can only reach the components whose paths the repository delegated to it.
[[nodiscard]] Result<std::string> ComponentFor(const AgentConfig& config,
                                               const metadata::TargetFile& target,
                                               const metadata::UpdateMetadata& m);

}  // namespace upkeep::agent
