#pragma once

// The agent's persisted state: what is installed, the anti-rollback floors, and the update in
// progress with the step it reached. One JSON file (data_dir/state.json, docs/formats/journal.md)
// replaced atomically and durably at every step (docs/adr/0005-journal-atomic-files.md): after a
// power cut or SIGKILL it holds either the previous step or the next, never a mix.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>

#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/result.hpp"

namespace upkeep::agent {

// Steps of an update, in order. The transitions between them, and the handler that acts in each
// step, are the table in flow.cpp.
enum class UpdateState {
  Idle,  // nothing in progress
  // The root filesystem, through the A/B slots.
  Writing,    // streaming the image into the inactive slot (durable_chunks says how far)
  Written,    // image complete, synced and verified in the inactive slot
  Switched,   // bootloader set to try the new slot; reboot requested
  Trial,      // running the new slot on trial; health checks decide
  Reverting,  // bootloader set back to the old slot; reboot requested
  // A module component (docs/formats/update-module.md).
  ModuleInstalling,  // the verified artifact is in the work directory; Download and Install run
  ModuleCommitting,  // Install succeeded: the module's Commit (then Cleanup) runs
};
[[nodiscard]] const char* ToString(UpdateState s);
[[nodiscard]] std::optional<UpdateState> UpdateStateFromString(std::string_view s);
// Every state, Idle first.
[[nodiscard]] std::span<const UpdateState> AllUpdateStates();
// True for the states of a module component's install.
[[nodiscard]] bool IsModuleState(UpdateState s);

struct InstalledComponent {
  std::string version;
  std::string target;        // TUF target path it came from
  std::string image_sha256;  // rootfs: of the slot image
  std::uint64_t image_size = 0;
  std::uint64_t security_version = 0;
  std::string slot;  // rootfs: the slot holding it
};

struct SecurityFloor {
  std::uint64_t security_version = 0;   // lowest security_version still accepted
  std::uint64_t rollback_sequence = 0;  // highest authorised-rollback sequence used
};

// The update in progress. A module component's uses component, target, version, the security
// fields and image_sha256/image_size (of the artifact); the slot and boot fields stay empty.
struct PendingUpdate {
  UpdateState state = UpdateState::Idle;
  std::string id;  // random; also written to the boot environment at the switch
  std::string component = "rootfs";
  std::string target;
  std::string version;
  std::uint64_t security_version = 0;
  std::optional<std::uint64_t> rollback_sequence;
  std::string from_slot;
  std::string to_slot;
  std::string image_sha256;
  std::uint64_t image_size = 0;
  std::uint64_t durable_chunks = 0;
  std::string boot_id;  // the boot during which the bootloader was switched
};

struct LastResult {
  std::string outcome;  // "committed", "rolled_back", "failed", "cancelled"
  std::string target;
  std::string version;
  std::string detail;
};

struct DeviceState {
  std::map<std::string, InstalledComponent> components;
  std::map<std::string, SecurityFloor> security;
  std::optional<PendingUpdate> update;
  std::optional<LastResult> last;
};

// The journal's text form (docs/formats/journal.md). Parse errors are Errc::JournalCorrupt.
[[nodiscard]] Result<DeviceState> ParseDeviceState(std::string_view text);
[[nodiscard]] std::string SerializeDeviceState(const DeviceState& state);

class StateStore {
 public:
  StateStore(std::filesystem::path data_dir, Filesystem& fs);
  // A device without a state file has an empty state. Errc::JournalCorrupt when the file does
  // not parse or holds impossible values (it is never guessed at or overwritten silently).
  [[nodiscard]] Result<DeviceState> Load() const;
  // Atomic and durable. Errc::JournalWriteFailed.
  [[nodiscard]] Result<void> Save(const DeviceState& state);
  [[nodiscard]] std::filesystem::path path() const { return data_dir_ / "state.json"; }

  // Called after each durable save with the count so far (crash tests stop the process there).
  void SetAfterSaveHookForTest(std::function<void(unsigned)> hook) {
    after_save_ = std::move(hook);
  }

 private:
  std::filesystem::path data_dir_;
  Filesystem& fs_;
  unsigned saves_ = 0;
  std::function<void(unsigned)> after_save_;
};

}  // namespace upkeep::agent
