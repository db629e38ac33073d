#include "upkeep/agent/state.hpp"

#include <array>
#include <new>
#include <utility>

#include "upkeep/agent/config.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/json_text.hpp"

namespace upkeep::agent {

namespace {

using metadata::Json;

constexpr std::uint64_t kStateFormat = 1;
constexpr std::uint64_t kMaxStateBytes = 4 << 20;

constexpr std::array<std::pair<UpdateState, const char*>, 6> kStateNames = {{
    {UpdateState::Idle, "idle"},
    {UpdateState::Writing, "writing"},
    {UpdateState::Written, "written"},
    {UpdateState::Switched, "switched"},
    {UpdateState::Trial, "trial"},
    {UpdateState::Reverting, "reverting"},
}};

Error Corrupt(const std::string& what) {
  return Error(Errc::JournalCorrupt, "state.json: " + what);
}

// Typed reads that turn any mismatch into JournalCorrupt.
Result<std::string> Str(const Json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_string()) return Corrupt(std::string(key) + " must be a string");
  return it->get<std::string>();
}
Result<std::uint64_t> Num(const Json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_number_unsigned()) {
    return Corrupt(std::string(key) + " must be a non-negative integer");
  }
  return it->get<std::uint64_t>();
}
Result<const Json*> Obj(const Json& o, const char* key) {
  auto it = o.find(key);
  if (it == o.end() || !it->is_object()) return Corrupt(std::string(key) + " must be an object");
  return &*it;
}

Result<DeviceState> FromJson(const Json& doc) {
  if (!doc.is_object()) return Corrupt("not an object");
  UPKEEP_ASSIGN_OR_RETURN(const std::uint64_t format, Num(doc, "format"));
  if (format != kStateFormat) return Corrupt("unknown format " + std::to_string(format));
  DeviceState s;
  UPKEEP_ASSIGN_OR_RETURN(const Json* components, Obj(doc, "components"));
  for (const auto& [name, c] : components->items()) {
    if (!c.is_object()) return Corrupt("component " + name);
    InstalledComponent ic;
    UPKEEP_ASSIGN_OR_RETURN(ic.version, Str(c, "version"));
    UPKEEP_ASSIGN_OR_RETURN(ic.target, Str(c, "target"));
    UPKEEP_ASSIGN_OR_RETURN(ic.image_sha256, Str(c, "image_sha256"));
    UPKEEP_ASSIGN_OR_RETURN(ic.image_size, Num(c, "image_size"));
    UPKEEP_ASSIGN_OR_RETURN(ic.security_version, Num(c, "security_version"));
    UPKEEP_ASSIGN_OR_RETURN(ic.slot, Str(c, "slot"));
    s.components.emplace(name, std::move(ic));
  }
  UPKEEP_ASSIGN_OR_RETURN(const Json* security, Obj(doc, "security"));
  for (const auto& [name, f] : security->items()) {
    if (!f.is_object()) return Corrupt("security " + name);
    SecurityFloor floor;
    UPKEEP_ASSIGN_OR_RETURN(floor.security_version, Num(f, "security_version"));
    UPKEEP_ASSIGN_OR_RETURN(floor.rollback_sequence, Num(f, "rollback_sequence"));
    s.security.emplace(name, floor);
  }
  if (auto it = doc.find("update"); it != doc.end() && !it->is_null()) {
    const Json& u = *it;
    if (!u.is_object()) return Corrupt("update must be an object");
    PendingUpdate p;
    UPKEEP_ASSIGN_OR_RETURN(const std::string state, Str(u, "state"));
    const auto parsed = UpdateStateFromString(state);
    if (!parsed || *parsed == UpdateState::Idle) return Corrupt("unknown update state " + state);
    p.state = *parsed;
    UPKEEP_ASSIGN_OR_RETURN(p.id, Str(u, "id"));
    UPKEEP_ASSIGN_OR_RETURN(p.component, Str(u, "component"));
    UPKEEP_ASSIGN_OR_RETURN(p.target, Str(u, "target"));
    UPKEEP_ASSIGN_OR_RETURN(p.version, Str(u, "version"));
    UPKEEP_ASSIGN_OR_RETURN(p.security_version, Num(u, "security_version"));
    if (u.contains("rollback_sequence")) {
      UPKEEP_ASSIGN_OR_RETURN(p.rollback_sequence, Num(u, "rollback_sequence"));
    }
    UPKEEP_ASSIGN_OR_RETURN(p.from_slot, Str(u, "from_slot"));
    UPKEEP_ASSIGN_OR_RETURN(p.to_slot, Str(u, "to_slot"));
    UPKEEP_ASSIGN_OR_RETURN(p.image_sha256, Str(u, "image_sha256"));
    UPKEEP_ASSIGN_OR_RETURN(p.image_size, Num(u, "image_size"));
    UPKEEP_ASSIGN_OR_RETURN(p.durable_chunks, Num(u, "durable_chunks"));
    UPKEEP_ASSIGN_OR_RETURN(p.boot_id, Str(u, "boot_id"));
    s.update = std::move(p);
  }
  if (auto it = doc.find("last"); it != doc.end() && !it->is_null()) {
    if (!it->is_object()) return Corrupt("last must be an object");
    LastResult l;
    UPKEEP_ASSIGN_OR_RETURN(l.outcome, Str(*it, "outcome"));
    UPKEEP_ASSIGN_OR_RETURN(l.target, Str(*it, "target"));
    UPKEEP_ASSIGN_OR_RETURN(l.version, Str(*it, "version"));
    UPKEEP_ASSIGN_OR_RETURN(l.detail, Str(*it, "detail"));
    s.last = std::move(l);
  }
  return s;
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
  Json doc = {{"format", kStateFormat},
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
