#include "upkeep/install/bootloader.hpp"

#include <libuboot.h>

#include <charconv>
#include <sstream>

#include "process_defaults.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/install/payload.hpp"

namespace upkeep::install {

namespace {

constexpr std::uint64_t kMaxEnvFile = 1 << 20;
constexpr const char* kUpgradeAvailable = "upgrade_available";
constexpr const char* kBootCount = "bootcount";
constexpr const char* kBootLimit = "bootlimit";
constexpr const char* kUpdateId = "upkeep_update";

bool ValidName(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    if (c == '=' || c == '\n' || c == '\0' || c == '#' || c == ' ') return false;
  }
  return true;
}

bool ValidValue(std::string_view value) {
  return value.find_first_of(std::string_view("\n\\\0", 3)) == std::string_view::npos;
}

Result<void> CheckChanges(const std::map<std::string, std::optional<std::string>>& changes) {
  for (const auto& [name, value] : changes) {
    if (!ValidName(name) || (value && !ValidValue(*value))) {
      return Error(Errc::BootEnvInvalid, "unsupported boot variable or value: " + name);
    }
  }
  return Ok();
}

void Apply(BootVars& vars, const std::map<std::string, std::optional<std::string>>& changes) {
  for (const auto& [name, value] : changes) {
    if (value) {
      vars[name] = *value;
    } else {
      vars.erase(name);
    }
  }
}

// name=value lines; blank lines and '#' comments ignored.
BootVars ParseLines(std::string_view text) {
  BootVars vars;
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto eq = line.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    vars[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return vars;
}

// An environment kept in a file replaced atomically: read, change, render, replace. The two
// formats differ only in how the variables are laid out.
class TextEnvFile : public BootEnv {
 public:
  TextEnvFile(std::filesystem::path file, Filesystem& fs) : file_(std::move(file)), fs_(fs) {}
  Result<BootVars> Read() override {
    auto text = fs_.ReadFile(file_, kMaxEnvFile);
    if (!text) return Error(Errc::BootloaderFailed, text.error().ToString());
    return Parse(*text);
  }
  Result<void> Write(const std::map<std::string, std::optional<std::string>>& changes) override {
    UPKEEP_TRY(CheckChanges(changes));
    BootVars vars;
    if (auto exists = fs_.Exists(file_); exists && *exists) {
      UPKEEP_ASSIGN_OR_RETURN(vars, Read());
    }
    Apply(vars, changes);
    UPKEEP_ASSIGN_OR_RETURN(const std::string text, Render(vars));
    auto r = fs_.WriteFileAtomic(file_, text);
    if (!r) return Error(Errc::BootloaderFailed, r.error().ToString());
    return Ok();
  }

 protected:
  [[nodiscard]] virtual Result<BootVars> Parse(std::string_view text) const = 0;
  [[nodiscard]] virtual Result<std::string> Render(const BootVars& vars) const = 0;
  [[nodiscard]] const std::filesystem::path& file() const { return file_; }

 private:
  std::filesystem::path file_;
  Filesystem& fs_;
};

std::string Lines(const BootVars& vars) {
  std::string text;
  for (const auto& [k, v] : vars) text += k + "=" + v + "\n";
  return text;
}

// name=value lines.
class FileBootEnv final : public TextEnvFile {
 public:
  using TextEnvFile::TextEnvFile;

 private:
  Result<BootVars> Parse(std::string_view text) const override { return ParseLines(text); }
  Result<std::string> Render(const BootVars& vars) const override { return Lines(vars); }
};

constexpr std::string_view kGrubHeader = "# GRUB Environment Block\n";
constexpr std::size_t kGrubEnvSize = 1024;

// grub-editenv's block; grub-editenv also writes a new file and renames it over the old one.
class GrubEnv final : public TextEnvFile {
 public:
  using TextEnvFile::TextEnvFile;

 private:
  Result<BootVars> Parse(std::string_view text) const override {
    if (text.size() != kGrubEnvSize || !text.starts_with(kGrubHeader)) {
      return Error(Errc::BootEnvInvalid, file().string() + " is not a GRUB environment block");
    }
    return ParseLines(text.substr(kGrubHeader.size()));
  }
  Result<std::string> Render(const BootVars& vars) const override {
    std::string block = std::string(kGrubHeader) + Lines(vars);
    if (block.size() > kGrubEnvSize) {
      return Error(Errc::BootEnvInvalid, "variables exceed the 1024-byte GRUB environment block");
    }
    block.resize(kGrubEnvSize, '#');
    return block;
  }
};

class UBootEnv final : public BootEnv {
 public:
  explicit UBootEnv(std::filesystem::path config) : config_(std::move(config)) {}
  Result<BootVars> Read() override {
    UPKEEP_ASSIGN_OR_RETURN(auto ctx, Open());
    BootVars vars;
    for (void* e = libuboot_iterator(ctx.get(), nullptr); e != nullptr;
         e = libuboot_iterator(ctx.get(), e)) {
      const char* name = libuboot_getname(e);
      const char* value = libuboot_getvalue(e);
      if (name != nullptr) vars[name] = value != nullptr ? value : "";
    }
    return vars;
  }
  Result<void> Write(const std::map<std::string, std::optional<std::string>>& changes) override {
    UPKEEP_TRY(CheckChanges(changes));
    UPKEEP_ASSIGN_OR_RETURN(auto ctx, Open());
    for (const auto& [name, value] : changes) {
      if (libuboot_set_env(ctx.get(), name.c_str(), value ? value->c_str() : nullptr) != 0) {
        return Error(Errc::BootloaderFailed, "libubootenv cannot set " + name);
      }
    }
    // With a redundant environment libubootenv writes the inactive copy and flips the flag, so a
    // power cut leaves one valid copy.
    if (libuboot_env_store(ctx.get()) != 0) {
      return Error(Errc::BootloaderFailed, "libubootenv cannot store the environment");
    }
    return Ok();
  }

 private:
  struct Closer {
    void operator()(uboot_ctx* ctx) const {
      libuboot_close(ctx);
      libuboot_exit(ctx);
    }
  };
  using CtxPtr = std::unique_ptr<uboot_ctx, Closer>;

  Result<CtxPtr> Open() {
    uboot_ctx* raw = nullptr;
    if (libuboot_initialize(&raw, nullptr) < 0 || raw == nullptr) {
      return Error(Errc::BootloaderFailed, "libubootenv cannot initialise");
    }
    CtxPtr ctx(raw);
    if (libuboot_read_config(raw, config_.c_str()) < 0) {
      return Error(Errc::BootloaderFailed,
                   "cannot read U-Boot env configuration " + config_.string());
    }
    // A missing or corrupt environment opens with U-Boot's defaults (none here): an error.
    if (libuboot_open(raw) < 0) {
      return Error(Errc::BootloaderFailed, "no valid U-Boot environment at " + config_.string());
    }
    return ctx;
  }

  std::filesystem::path config_;
};

unsigned ParseCount(const BootVars& vars, const char* name, unsigned fallback) {
  auto it = vars.find(name);
  if (it == vars.end()) return fallback;
  unsigned value = 0;
  const auto& s = it->second;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  return ec == std::errc() && end == s.data() + s.size() ? value : fallback;
}

}  // namespace

std::unique_ptr<BootEnv> MakeFileBootEnv(std::filesystem::path file) {
  return MakeFileBootEnv(std::move(file), ProcessFilesystem());
}
std::unique_ptr<BootEnv> MakeFileBootEnv(std::filesystem::path file, Filesystem& filesystem) {
  return std::make_unique<FileBootEnv>(std::move(file), filesystem);
}
std::unique_ptr<BootEnv> MakeUBootEnv(std::filesystem::path config) {
  return std::make_unique<UBootEnv>(std::move(config));
}
std::unique_ptr<BootEnv> MakeGrubEnv(std::filesystem::path file) {
  return MakeGrubEnv(std::move(file), ProcessFilesystem());
}
std::unique_ptr<BootEnv> MakeGrubEnv(std::filesystem::path file, Filesystem& filesystem) {
  return std::make_unique<GrubEnv>(std::move(file), filesystem);
}

Bootloader::Bootloader(std::unique_ptr<BootEnv> env, BootloaderOptions options)
    : env_(std::move(env)), options_(std::move(options)) {}

std::string Bootloader::OtherSlot(const std::string& slot) const {
  return slot == options_.slot_a ? options_.slot_b : options_.slot_a;
}

Result<BootStatus> Bootloader::Status() {
  UPKEEP_ASSIGN_OR_RETURN(const BootVars vars, env_->Read());
  BootStatus s;
  auto it = vars.find(options_.slot_variable);
  if (it == vars.end() || (it->second != options_.slot_a && it->second != options_.slot_b)) {
    return Error(Errc::BootEnvInvalid, options_.slot_variable + " does not name a slot");
  }
  s.slot = it->second;
  s.trial = ParseCount(vars, kUpgradeAvailable, 0) == 1;
  s.boot_count = ParseCount(vars, kBootCount, 0);
  s.boot_limit = ParseCount(vars, kBootLimit, options_.boot_limit);
  return s;
}

Result<void> Bootloader::StartTrial(const std::string& slot, const std::string& update_id) {
  if (slot != options_.slot_a && slot != options_.slot_b) {
    return Error(Errc::BootEnvInvalid, "unknown slot " + slot);
  }
  return env_->Write({{options_.slot_variable, slot},
                      {kUpgradeAvailable, "1"},
                      {kBootCount, "0"},
                      {kBootLimit, std::to_string(options_.boot_limit)},
                      {kUpdateId, update_id}});
}

Result<std::string> Bootloader::TrialUpdateId() {
  UPKEEP_ASSIGN_OR_RETURN(const BootVars vars, env_->Read());
  auto it = vars.find(kUpdateId);
  return it == vars.end() ? std::string() : it->second;
}

Result<void> Bootloader::Commit() {
  return env_->Write({{kUpgradeAvailable, "0"}, {kBootCount, "0"}});
}

Result<void> Bootloader::Revert(const std::string& slot) {
  if (slot != options_.slot_a && slot != options_.slot_b) {
    return Error(Errc::BootEnvInvalid, "unknown slot " + slot);
  }
  return env_->Write({{options_.slot_variable, slot}, {kUpgradeAvailable, "0"}, {kBootCount, "0"}});
}

Result<std::string> SimulateFirmwareBoot(BootEnv& env, const BootloaderOptions& options) {
  UPKEEP_ASSIGN_OR_RETURN(const BootVars vars, env.Read());
  auto it = vars.find(options.slot_variable);
  if (it == vars.end() || (it->second != options.slot_a && it->second != options.slot_b)) {
    return Error(Errc::BootEnvInvalid, options.slot_variable + " does not name a slot");
  }
  std::string slot = it->second;
  if (ParseCount(vars, kUpgradeAvailable, 0) == 1) {
    const unsigned count = ParseCount(vars, kBootCount, 0) + 1;
    const unsigned limit = ParseCount(vars, kBootLimit, options.boot_limit);
    if (count > limit) {
      slot = slot == options.slot_a ? options.slot_b : options.slot_a;
      UPKEEP_TRY(
          env.Write({{options.slot_variable, slot}, {kUpgradeAvailable, "0"}, {kBootCount, "0"}}));
    } else {
      UPKEEP_TRY(env.Write({{kBootCount, std::to_string(count)}}));
    }
  }
  return slot;
}

Result<std::string> BootedSlotFromCmdline(const std::string& cmdline) {
  std::istringstream in(cmdline);
  for (std::string word; in >> word;) {
    if (word.starts_with("upkeep.slot=") && word.size() > 12) return word.substr(12);
  }
  return Error(Errc::BootEnvInvalid, "the kernel command line has no upkeep.slot=");
}

}  // namespace upkeep::install
