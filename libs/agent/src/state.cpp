#include "upkeep/agent/state.hpp"

#include <array>
#include <new>
#include <utility>

#include "upkeep/agent/config.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/json_reader.hpp"
#include "upkeep/metadata/json_text.hpp"

namespace upkeep::agent {

namespace {

using metadata::Json;

// Format 2 adds the module states; it is written only while a module install is in progress, so
// that an agent knowing format 1 only (an older root filesystem the firmware fell back to) still
// reads every journal a root filesystem update leaves.
constexpr std::uint64_t kStateFormat = 1;
constexpr std::uint64_t kModuleStateFormat = 2;
constexpr std::uint64_t kMaxStateBytes = 4 << 20;

constexpr std::array<std::pair<UpdateState, const char*>, 8> kStateNames = {{
    {UpdateState::Idle, "idle"},
    {UpdateState::Writing, "writing"},
    {UpdateState::Written, "written"},
    {UpdateState::Switched, "switched"},
    {UpdateState::Trial, "trial"},
    {UpdateState::Reverting, "reverting"},
    {UpdateState::ModuleInstalling, "module_installing"},
    {UpdateState::ModuleCommitting, "module_committing"},
}};
constexpr std::array<UpdateState, kStateNames.size()> kAllStates = {
    UpdateState::Idle,
    UpdateState::Writing,
    UpdateState::Written,
    UpdateState::Switched,
    UpdateState::Trial,
    UpdateState::Reverting,
    UpdateState::ModuleInstalling,
    UpdateState::ModuleCommitting,
};

Error Corrupt(const std::string& what) {
  return Error(Errc::JournalCorrupt, "state.json: " + what);
}

// The journal is read with the one typed JSON reader (metadata/json_reader.hpp): every member of
// the kind the format says, no member the format does not name. Any mismatch is JournalCorrupt.
using metadata::JsonReader;
constexpr metadata::StringRules kAnyString{.allow_empty = true};

Result<DeviceState> Read(const Json& doc) {
  UPKEEP_ASSIGN_OR_RETURN(JsonReader r, JsonReader::Of(doc, metadata::Errc::InvalidMetadata, ""));
  UPKEEP_ASSIGN_OR_RETURN(const std::uint64_t format, r.Uint("format"));
  if (format != kStateFormat && format != kModuleStateFormat) {
    return r.Fail("format", "unknown format " + std::to_string(format));
  }
  DeviceState s;
  UPKEEP_ASSIGN_OR_RETURN(JsonReader components, r.Object("components"));
  for (const auto& [name, value] : components.json().items()) {
    UPKEEP_ASSIGN_OR_RETURN(JsonReader c, components.Object(name));
    InstalledComponent ic;
    UPKEEP_ASSIGN_OR_RETURN(ic.version, c.String("version", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(ic.target, c.String("target", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(ic.image_sha256, c.String("image_sha256", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(ic.image_size, c.Uint("image_size"));
    UPKEEP_ASSIGN_OR_RETURN(ic.security_version, c.Uint("security_version"));
    UPKEEP_ASSIGN_OR_RETURN(ic.slot, c.String("slot", kAnyString));
    UPKEEP_TRY(c.NoUnknownKeys());
    s.components.emplace(name, std::move(ic));
  }
  UPKEEP_ASSIGN_OR_RETURN(JsonReader security, r.Object("security"));
  for (const auto& [name, value] : security.json().items()) {
    UPKEEP_ASSIGN_OR_RETURN(JsonReader f, security.Object(name));
    SecurityFloor floor;
    UPKEEP_ASSIGN_OR_RETURN(floor.security_version, f.Uint("security_version"));
    UPKEEP_ASSIGN_OR_RETURN(floor.rollback_sequence, f.Uint("rollback_sequence"));
    UPKEEP_TRY(f.NoUnknownKeys());
    s.security.emplace(name, floor);
  }
  if (const Json* update = r.Optional("update"); update != nullptr && !update->is_null()) {
    UPKEEP_ASSIGN_OR_RETURN(JsonReader u, r.Object("update"));
    PendingUpdate p;
    UPKEEP_ASSIGN_OR_RETURN(const std::string state, u.String("state"));
    const auto parsed = UpdateStateFromString(state);
    if (!parsed || *parsed == UpdateState::Idle ||
        (IsModuleState(*parsed) && format < kModuleStateFormat)) {
      return u.Fail("state", "unknown update state " + state);
    }
    p.state = *parsed;
    UPKEEP_ASSIGN_OR_RETURN(p.id, u.String("id", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(p.component, u.String("component", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(p.target, u.String("target", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(p.version, u.String("version", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(p.security_version, u.Uint("security_version"));
    UPKEEP_ASSIGN_OR_RETURN(p.rollback_sequence, u.OptionalUint("rollback_sequence"));
    UPKEEP_ASSIGN_OR_RETURN(p.from_slot, u.String("from_slot", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(p.to_slot, u.String("to_slot", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(p.image_sha256, u.String("image_sha256", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(p.image_size, u.Uint("image_size"));
    UPKEEP_ASSIGN_OR_RETURN(p.durable_chunks, u.Uint("durable_chunks"));
    UPKEEP_ASSIGN_OR_RETURN(p.boot_id, u.String("boot_id", kAnyString));
    UPKEEP_TRY(u.NoUnknownKeys());
    s.update = std::move(p);
  } else {
    r.MarkRead("update");
  }
  if (const Json* last = r.Optional("last"); last != nullptr && !last->is_null()) {
    UPKEEP_ASSIGN_OR_RETURN(JsonReader l, r.Object("last"));
    LastResult result;
    UPKEEP_ASSIGN_OR_RETURN(result.outcome, l.String("outcome"));
    UPKEEP_ASSIGN_OR_RETURN(result.target, l.String("target", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(result.version, l.String("version", kAnyString));
    UPKEEP_ASSIGN_OR_RETURN(result.detail, l.String("detail", kAnyString));
    UPKEEP_TRY(l.NoUnknownKeys());
    s.last = std::move(result);
  } else {
    r.MarkRead("last");
  }
  UPKEEP_TRY(r.NoUnknownKeys());
  return s;
}

Result<DeviceState> FromJson(const Json& doc) {
  auto state = Read(doc);
  if (!state) return Corrupt(state.error().message());
  return state;
}

Json ToJson(const DeviceState& s) {
  Json components = Json::object();
  for (const auto& [name, c] : s.components) {
    components[name] = {{"version", c.version},
                        {"target", c.target},
                        {"image_sha256", c.image_sha256},
                        {"image_size", c.image_size},
                        {"security_version", c.security_version},
                        {"slot", c.slot}};
  }
  Json security = Json::object();
  for (const auto& [name, f] : s.security) {
    security[name] = {{"security_version", f.security_version},
                      {"rollback_sequence", f.rollback_sequence}};
  }
  const bool module_update = s.update && IsModuleState(s.update->state);
  Json doc = {{"format", module_update ? kModuleStateFormat : kStateFormat},
              {"components", components},
              {"security", security},
              {"update", nullptr},
              {"last", nullptr}};
  if (s.update) {
    const auto& p = *s.update;
    doc["update"] = {{"state", ToString(p.state)},
                     {"id", p.id},
                     {"component", p.component},
                     {"target", p.target},
                     {"version", p.version},
                     {"security_version", p.security_version},
                     {"from_slot", p.from_slot},
                     {"to_slot", p.to_slot},
                     {"image_sha256", p.image_sha256},
                     {"image_size", p.image_size},
                     {"durable_chunks", p.durable_chunks},
                     {"boot_id", p.boot_id}};
    if (p.rollback_sequence) doc["update"]["rollback_sequence"] = *p.rollback_sequence;
  }
  if (s.last) {
    doc["last"] = {{"outcome", s.last->outcome},
                   {"target", s.last->target},
                   {"version", s.last->version},
                   {"detail", s.last->detail}};
  }
  return doc;
}

}  // namespace

const char* ToString(UpdateState s) {
  for (const auto& [state, name] : kStateNames) {
    if (state == s) return name;
  }
  return "unknown";
}

std::span<const UpdateState> AllUpdateStates() { return kAllStates; }

bool IsModuleState(UpdateState s) {
  return s == UpdateState::ModuleInstalling || s == UpdateState::ModuleCommitting;
}

std::optional<UpdateState> UpdateStateFromString(std::string_view s) {
  for (const auto& [state, name] : kStateNames) {
    if (s == name) return state;
  }
  return std::nullopt;
}

StateStore::StateStore(std::filesystem::path data_dir, Filesystem& fs)
    : data_dir_(std::move(data_dir)), fs_(fs) {}

Result<DeviceState> StateStore::Load() const {
  UPKEEP_ASSIGN_OR_RETURN(const bool exists, fs_.Exists(path()));
  if (!exists) return DeviceState{};
  auto text = fs_.ReadFile(path(), kMaxStateBytes);
  if (!text) return Error(Errc::JournalCorrupt, text.error().ToString());
  return ParseDeviceState(*text);
}

Result<DeviceState> ParseDeviceState(std::string_view text) {
  auto doc = metadata::ParseJson(text);
  if (!doc) return Corrupt(doc.error().message());
  return FromJson(*doc);
}

// Text in the journal may come from untrusted sources (error details): invalid UTF-8 is recorded
// as U+FFFD instead of making the write throw.
std::string SerializeDeviceState(const DeviceState& state) {
  return metadata::DumpJson(ToJson(state), 1) + "\n";
}

Result<void> StateStore::Save(const DeviceState& state) {
  std::string text;
  try {
    text = SerializeDeviceState(state);
  } catch (const std::bad_alloc&) {
    return Error(Errc::JournalWriteFailed, "out of memory serialising the journal");
  }
  auto r = fs_.WriteFileAtomic(path(), text);
  if (!r) return Error(Errc::JournalWriteFailed, r.error().ToString());
  ++saves_;
  if (after_save_) after_save_(saves_);
  return Ok();
}

}  // namespace upkeep::agent
