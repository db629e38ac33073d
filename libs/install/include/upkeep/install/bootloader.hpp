#pragma once

// Boot switching. Every supported boot firmware keeps a small key/value environment that upkeep
// and the firmware's boot script share (docs/bootloaders.md):
//
//   upkeep_slot        slot the firmware boots ("a" or "b"; variable name configurable)
//   upgrade_available  "1" while the slot is on trial, "0" once committed
//   bootcount          boots of the trial slot so far (the firmware increments it)
//   bootlimit          trial boots allowed before the firmware falls back
//   upkeep_update      ID of the update whose trial was last started (written by upkeep only)
//
// The firmware's script, at each power-on: if upgrade_available is 1, increment bootcount; if
// bootcount then exceeds bootlimit, switch upkeep_slot to the other slot and clear
// upgrade_available (fall back); boot upkeep_slot with `upkeep.slot=<slot>` on the kernel command
// line. SimulateFirmwareBoot performs exactly these steps for simulated devices and tests.
//
// Adapters differ only in where the environment lives: a plain file (simulated devices), the
// U-Boot environment (libubootenv, redundant copies as fw_env.config describes), or GRUB's
// grubenv block.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/result.hpp"

namespace upkeep::install {

using BootVars = std::map<std::string, std::string>;

class BootEnv {
 public:
  virtual ~BootEnv() = default;
  // All variables. Errc::BootloaderFailed when the environment cannot be read.
  [[nodiscard]] virtual Result<BootVars> Read() = 0;
  // Applies all changes in one store (a value of nullopt removes the variable). Each adapter
  // writes so that a power cut leaves either the old or the new environment.
  [[nodiscard]] virtual Result<void> Write(
      const std::map<std::string, std::optional<std::string>>& changes) = 0;
};

// "name=value" lines in a file replaced atomically (write, fsync, rename, fsync directory),
// through `filesystem` (which must outlive the environment) or the process-wide local one.
[[nodiscard]] std::unique_ptr<BootEnv> MakeFileBootEnv(std::filesystem::path file);
[[nodiscard]] std::unique_ptr<BootEnv> MakeFileBootEnv(std::filesystem::path file,
                                                       Filesystem& filesystem);
// U-Boot's environment through libubootenv; `config` is an fw_env.config file (device, offset,
// size, and optionally a redundant copy).
[[nodiscard]] std::unique_ptr<BootEnv> MakeUBootEnv(std::filesystem::path config);
// GRUB's environment block (grub-editenv's format: 1024 bytes, "# GRUB Environment Block\n",
// name=value lines, '#' padding), replaced atomically.
[[nodiscard]] std::unique_ptr<BootEnv> MakeGrubEnv(std::filesystem::path file);
[[nodiscard]] std::unique_ptr<BootEnv> MakeGrubEnv(std::filesystem::path file,
                                                   Filesystem& filesystem);

struct BootloaderOptions {
  std::string slot_variable = "upkeep_slot";
  std::string slot_a = "a";
  std::string slot_b = "b";
  // Trial boots before the firmware falls back to the other slot.
  unsigned boot_limit = 3;
};

struct BootStatus {
  std::string slot;    // slot the firmware boots next
  bool trial = false;  // upgrade_available
  unsigned boot_count = 0;
  unsigned boot_limit = 0;
};

class Bootloader {
 public:
  Bootloader(std::unique_ptr<BootEnv> env, BootloaderOptions options);

  [[nodiscard]] Result<BootStatus> Status();
  // Boot `slot` next, on trial: the firmware falls back after boot_limit failed boots. The
  // same write records `update_id` as upkeep_update, so that after a fallback the agent can tell
  // "the trial happened and failed" from "the switch never reached the environment".
  [[nodiscard]] Result<void> StartTrial(const std::string& slot, const std::string& update_id);
  // upkeep_update as last written by StartTrial ("" when none).
  [[nodiscard]] Result<std::string> TrialUpdateId();
  // The running trial slot becomes the default.
  [[nodiscard]] Result<void> Commit();
  // Boot `slot` next, not on trial (back to the previous system).
  [[nodiscard]] Result<void> Revert(const std::string& slot);

  [[nodiscard]] const BootloaderOptions& options() const { return options_; }
  [[nodiscard]] std::string OtherSlot(const std::string& slot) const;
  [[nodiscard]] BootEnv& env() { return *env_; }

 private:
  std::unique_ptr<BootEnv> env_;
  BootloaderOptions options_;
};

// What the firmware's boot script does at power-on (see above), applied to `env`; returns the slot
// it boots. Errc::BootEnvInvalid when the environment names no valid slot.
[[nodiscard]] Result<std::string> SimulateFirmwareBoot(BootEnv& env,
                                                       const BootloaderOptions& options);

// The slot the running system was booted from: the `upkeep.slot=` word of a kernel command line
// (/proc/cmdline, or the file a simulated device's firmware writes). Errc::BootEnvInvalid when
// there is none.
[[nodiscard]] Result<std::string> BootedSlotFromCmdline(const std::string& cmdline);

}  // namespace upkeep::install
