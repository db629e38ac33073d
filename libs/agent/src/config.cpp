#include "upkeep/agent/config.hpp"

#include <toml++/toml.h>

#include <charconv>
#include <cstdio>
#include <set>
#include <sstream>

#include "upkeep/common/errc.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/json_text.hpp"

namespace upkeep::agent {

namespace {

const char* ErrcName(int value) {
  switch (static_cast<Errc>(value)) {
    case Errc::InvalidConfig:
      return "InvalidConfig";
    case Errc::WrongHardware:
      return "WrongHardware";
    case Errc::SecurityVersionRollback:
      return "SecurityVersionRollback";
    case Errc::UnsupportedPayload:
      return "UnsupportedPayload";
    case Errc::UpdatePending:
      return "UpdatePending";
    case Errc::NothingToCommit:
      return "NothingToCommit";
    case Errc::NothingToRollBack:
      return "NothingToRollBack";
    case Errc::NotRebooted:
      return "NotRebooted";
    case Errc::HealthCheckFailed:
      return "HealthCheckFailed";
    case Errc::JournalCorrupt:
      return "JournalCorrupt";
    case Errc::JournalWriteFailed:
      return "JournalWriteFailed";
    case Errc::NoInstallableTarget:
      return "NoInstallableTarget";
    case Errc::UnknownComponent:
      return "UnknownComponent";
    case Errc::ModuleFailed:
      return "ModuleFailed";
    case Errc::AlreadyInstalled:
      return "AlreadyInstalled";
    case Errc::TargetOutsideNamespace:
      return "TargetOutsideNamespace";
    case Errc::FlowStuck:
      return "FlowStuck";
    case Errc::PolicyCorrupt:
      return "PolicyCorrupt";
    case Errc::PolicyWriteFailed:
      return "PolicyWriteFailed";
    case Errc::ConfirmationRequired:
      return "ConfirmationRequired";
    case Errc::InvalidPolicyValue:
      return "InvalidPolicyValue";
    case Errc::UnknownUpdate:
      return "UnknownUpdate";
    case Errc::SecurityUpdateNotRefusable:
      return "SecurityUpdateNotRefusable";
    case Errc::ScheduleCorrupt:
      return "ScheduleCorrupt";
    case Errc::NotifierFailed:
      return "NotifierFailed";
  }
  return "Unknown";
}

Error Bad(const std::string& key, const std::string& what) {
  return Error(Errc::InvalidConfig, key + ": " + what);
}

// A namespace is a target path prefix of whole segments: "rootfs/", "apps/cam/".
Result<void> CheckNamespace(const std::string& key, const std::string& ns) {
  if (ns.empty() || ns.back() != '/' || ns.front() == '/') {
    return Bad(key, "must be a relative target path prefix ending in '/'");
  }
  std::string_view rest(ns);
  while (!rest.empty()) {
    const auto slash = rest.find('/');
    const std::string_view segment = rest.substr(0, slash);
    if (segment.empty() || segment == "." || segment == "..") {
      return Bad(key, "must not hold empty, '.' or '..' segments");
    }
    for (const char ch : segment) {
      const auto u = static_cast<unsigned char>(ch);
      if (u < 0x20 || u == 0x7f || ch == '*' || ch == '?' || ch == '[' || ch == '%' || ch == '#') {
        return Bad(key, "holds a character not allowed in a namespace");
      }
    }
    rest.remove_prefix(slash + 1);
  }
  return Ok();
}

// Reads one table's keys, remembering which were read, so that leftovers are rejected.
class Section {
 public:
  Section(const toml::table* table, std::string name) : table_(table), name_(std::move(name)) {}

  [[nodiscard]] std::string Key(std::string_view key) const {
    return name_.empty() ? std::string(key) : name_ + "." + std::string(key);
  }
  const toml::node* Get(std::string_view key) {
    seen_.insert(std::string(key));
    return table_ == nullptr ? nullptr : table_->get(key);
  }
  Result<void> String(std::string_view key, std::string& out, bool required = false) {
    const auto* n = Get(key);
    if (n == nullptr) return required ? Bad(Key(key), "required") : Ok();
    if (!n->is_string()) return Bad(Key(key), "must be a string");
    out = n->as_string()->get();
    if (required && out.empty()) return Bad(Key(key), "must not be empty");
    return Ok();
  }
  Result<void> Path(std::string_view key, std::filesystem::path& out, bool required = false) {
    std::string s = out.string();
    UPKEEP_TRY(String(key, s, required));
    out = s;
    return Ok();
  }
  Result<void> Uint(std::string_view key, std::uint64_t& out, std::uint64_t min,
                    std::uint64_t max) {
    const auto* n = Get(key);
    if (n == nullptr) return Ok();
    if (!n->is_integer()) return Bad(Key(key), "must be an integer");
    const std::int64_t v = n->as_integer()->get();
    if (v < 0 || static_cast<std::uint64_t>(v) < min || static_cast<std::uint64_t>(v) > max) {
      return Bad(Key(key),
                 "must be between " + std::to_string(min) + " and " + std::to_string(max));
    }
    out = static_cast<std::uint64_t>(v);
    return Ok();
  }
  Result<void> Bool(std::string_view key, bool& out) {
    const auto* n = Get(key);
    if (n == nullptr) return Ok();
    if (!n->is_boolean()) return Bad(Key(key), "must be true or false");
    out = n->as_boolean()->get();
    return Ok();
  }
  Result<void> Argv(std::string_view key, std::vector<std::string>& out, const toml::node* n) {
    if (!n->is_array()) return Bad(Key(key), "must be an array of strings");
    std::vector<std::string> argv;
    for (const auto& e : *n->as_array()) {
      if (!e.is_string() || e.as_string()->get().empty()) {
        return Bad(Key(key), "must be an array of non-empty strings");
      }
      argv.push_back(e.as_string()->get());
    }
    out = std::move(argv);
    return Ok();
  }
  Result<void> Command(std::string_view key, std::vector<std::string>& out, bool required = false) {
    const auto* n = Get(key);
    if (n == nullptr) return required ? Bad(Key(key), "required") : Ok();
    UPKEEP_TRY(Argv(key, out, n));
    if (required && out.empty()) return Bad(Key(key), "must name a program");
    return Ok();
  }
  Result<void> NoUnknownKeys() const {
    if (table_ == nullptr) return Ok();
    for (const auto& [k, v] : *table_) {
      if (!seen_.contains(std::string(k.str()))) return Bad(Key(k.str()), "unknown key");
    }
    return Ok();
  }

 private:
  const toml::table* table_;
  std::string name_;
  std::set<std::string> seen_;
};

metadata::Json ToJson(const toml::node& n) {
  if (n.is_table()) {
    metadata::Json o = metadata::Json::object();
    for (const auto& [k, v] : *n.as_table()) o[std::string(k.str())] = ToJson(v);
    return o;
  }
  if (n.is_array()) {
    metadata::Json a = metadata::Json::array();
    for (const auto& e : *n.as_array()) a.push_back(ToJson(e));
    return a;
  }
  if (n.is_string()) return n.as_string()->get();
  if (n.is_integer()) return n.as_integer()->get();
  if (n.is_boolean()) return n.as_boolean()->get();
  if (n.is_floating_point()) return n.as_floating_point()->get();
  std::ostringstream out;  // dates and times as TOML writes them
  n.visit([&](const auto& v) {
    if constexpr (toml::is_date<decltype(v)> || toml::is_time<decltype(v)> ||
                  toml::is_date_time<decltype(v)>) {
      out << v;
    }
  });
  return out.str();
}

// JSON from ToJson back to TOML, for --dump-config.
void InsertJson(toml::table& t, const std::string& key, const metadata::Json& j);
void AppendJson(toml::array& a, const metadata::Json& j) {
  if (j.is_object()) {
    toml::table t;
    for (const auto& [k, v] : j.items()) InsertJson(t, k, v);
    a.push_back(std::move(t));
  } else if (j.is_array()) {
    toml::array inner;
    for (const auto& e : j) AppendJson(inner, e);
    a.push_back(std::move(inner));
  } else if (j.is_string()) {
    a.push_back(j.get<std::string>());
  } else if (j.is_boolean()) {
    a.push_back(j.get<bool>());
  } else if (j.is_number_integer()) {
    a.push_back(j.get<std::int64_t>());
  } else if (j.is_number()) {
    a.push_back(j.get<double>());
  }
}
void InsertJson(toml::table& t, const std::string& key, const metadata::Json& j) {
  if (j.is_object()) {
    toml::table sub;
    for (const auto& [k, v] : j.items()) InsertJson(sub, k, v);
    t.insert(key, std::move(sub));
  } else if (j.is_array()) {
    toml::array a;
    for (const auto& e : j) AppendJson(a, e);
    t.insert(key, std::move(a));
  } else if (j.is_string()) {
    t.insert(key, j.get<std::string>());
  } else if (j.is_boolean()) {
    t.insert(key, j.get<bool>());
  } else if (j.is_number_integer()) {
    t.insert(key, j.get<std::int64_t>());
  } else if (j.is_number()) {
    t.insert(key, j.get<double>());
  }
}

}  // namespace

const std::error_category& ErrcCategory() noexcept {
  static const NamedErrorCategory category("agent", &ErrcName);
  return category;
}

namespace {

Result<toml::table> ParseToml(std::string_view text) {
  try {
    return toml::parse(text);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << e.source().begin;
    return Error(Errc::InvalidConfig, std::string(e.description()) + " at " + where.str());
  }
}

// Lays `over` onto `base`: tables merge key by key, any other value replaces.
void Merge(toml::table& base, const toml::table& over) {
  for (const auto& [key, value] : over) {
    toml::node* existing = base.get(key);
    if (existing != nullptr && existing->is_table() && value.is_table()) {
      Merge(*existing->as_table(), *value.as_table());
    } else {
      base.insert_or_assign(key, value);
    }
  }
}

Result<AgentConfig> ParseConfigTable(const toml::table& root);

}  // namespace

Result<AgentConfig> ParseConfig(std::string_view text) {
  UPKEEP_ASSIGN_OR_RETURN(toml::table root, ParseToml(text));
  return ParseConfigTable(root);
}

Result<AgentConfig> ParseConfigLayers(const std::vector<ConfigLayer>& layers) {
  toml::table root;
  for (const ConfigLayer& layer : layers) {
    auto table = ParseToml(layer.text);
    if (!table) return std::move(table).error().WithContext(layer.name);
    Merge(root, *table);
  }
  return ParseConfigTable(root);
}

namespace {

bool IsDate(std::string_view s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  for (std::size_t i : {0UL, 1UL, 2UL, 3UL, 5UL, 6UL, 8UL, 9UL}) {
    if (s[i] < '0' || s[i] > '9') return false;
  }
  const int month = (s[5] - '0') * 10 + (s[6] - '0');
  const int day = (s[8] - '0') * 10 + (s[9] - '0');
  return month >= 1 && month <= 12 && day >= 1 && day <= 31;
}

Result<void> Seconds(Section& s, std::string_view key, std::chrono::seconds& out, std::uint64_t min,
                     std::uint64_t max) {
  std::uint64_t v = static_cast<std::uint64_t>(out.count());
  UPKEEP_TRY(s.Uint(key, v, min, max));
  out = std::chrono::seconds(static_cast<std::int64_t>(v));
  return Ok();
}

// "HH:MM-HH:MM" (local time; the end may be past midnight) as a DailyWindow.
Result<DailyWindow> ParseWindow(const std::string& text) {
  auto hm = [](std::string_view t) -> std::optional<int> {
    if (t.size() != 5 || t[2] != ':') return std::nullopt;
    for (std::size_t i : {0UL, 1UL, 3UL, 4UL}) {
      if (t[i] < '0' || t[i] > '9') return std::nullopt;
    }
    const int h = (t[0] - '0') * 10 + (t[1] - '0');
    const int m = (t[3] - '0') * 10 + (t[4] - '0');
    if (h > 23 || m > 59) return std::nullopt;
    return h * 60 + m;
  };
  const auto dash = text.find('-');
  if (dash == std::string::npos) return Bad("policy.maintenance_window", "must be HH:MM-HH:MM");
  const auto start = hm(std::string_view(text).substr(0, dash));
  const auto end = hm(std::string_view(text).substr(dash + 1));
  if (!start || !end || *start == *end) {
    return Bad("policy.maintenance_window", "must be HH:MM-HH:MM with distinct times");
  }
  DailyWindow w;
  w.start = std::chrono::minutes(*start);
  w.length = std::chrono::minutes((*end - *start + 24 * 60) % (24 * 60));
  return w;
}

constexpr std::uint64_t kYearSeconds = 366ULL * 24 * 3600;

template <typename TableOf>
Result<void> ParseDaemonSections(AgentConfig& c, TableOf table) {
  Section server(table("server"), "server");
  UPKEEP_TRY(server.String("url", c.server.url));
  UPKEEP_TRY(server.Path("ca_file", c.server.ca_file));
  UPKEEP_TRY(server.Path("token_file", c.server.token_file));
  UPKEEP_TRY(server.Path("manufacturer_certificate", c.server.manufacturer_certificate));
  UPKEEP_TRY(server.Path("manufacturer_key", c.server.manufacturer_key));
  UPKEEP_TRY(server.NoUnknownKeys());
  if (!c.server.url.empty()) {
    if (!c.server.url.starts_with("https://")) return Bad("server.url", "must be an https:// URL");
    if (c.server.ca_file.empty()) return Bad("server.ca_file", "required with server.url");
    if (c.repository.url.empty()) {
      return Bad("repository.url",
                 "required with server.url: the director's choices are verified against the "
                 "image repository");
    }
    if (c.server.manufacturer_certificate.empty() != c.server.manufacturer_key.empty()) {
      return Bad("server.manufacturer_key", "the certificate and its key go together");
    }
  }

  Section sched(table("schedule"), "schedule");
  ScheduleOptions& o = c.schedule;
  UPKEEP_TRY(Seconds(sched, "boot_delay_min_seconds", o.boot_delay_min, 0, 86'400));
  UPKEEP_TRY(Seconds(sched, "boot_delay_max_seconds", o.boot_delay_max, 0, 86'400));
  UPKEEP_TRY(Seconds(sched, "period_seconds", o.period, 60, kYearSeconds));
  UPKEEP_TRY(Seconds(sched, "window_start_seconds", o.window_start, 0, kYearSeconds));
  // The window covers the whole period unless set.
  o.window_length = o.period;
  UPKEEP_TRY(Seconds(sched, "window_length_seconds", o.window_length, 1, kYearSeconds));
  UPKEEP_TRY(Seconds(sched, "backoff_base_seconds", o.backoff_base, 1, 86'400));
  UPKEEP_TRY(Seconds(sched, "backoff_cap_seconds", o.backoff_cap, 1, kYearSeconds));
  UPKEEP_TRY(sched.NoUnknownKeys());
  if (auto valid = ValidateScheduleOptions(o); !valid) {
    return Error(Errc::InvalidConfig, "schedule: " + valid.error().message());
  }

  Section policy(table("policy"), "policy");
  PolicyOptions& p = c.policy;
  std::uint64_t cap_hours = static_cast<std::uint64_t>(p.security_postpone_cap.count() / 3600);
  UPKEEP_TRY(policy.Uint("security_postpone_cap_hours", cap_hours, 1, 24 * 30));
  p.security_postpone_cap = std::chrono::hours(cap_hours);
  std::uint64_t deadline_hours = static_cast<std::uint64_t>(p.reboot_deadline.count() / 3600);
  UPKEEP_TRY(policy.Uint("reboot_deadline_hours", deadline_hours, 1, 24 * 30));
  p.reboot_deadline = std::chrono::hours(deadline_hours);
  std::string window;
  UPKEEP_TRY(policy.String("maintenance_window", window));
  if (!window.empty()) {
    UPKEEP_ASSIGN_OR_RETURN(DailyWindow w, ParseWindow(window));
    p.maintenance_window = w;
  }
  if (const auto* offset = policy.Get("utc_offset_minutes")) {
    if (!offset->is_integer()) return Bad("policy.utc_offset_minutes", "must be an integer");
    const std::int64_t minutes = offset->as_integer()->get();
    if (minutes < -18 * 60 || minutes > 18 * 60) {
      return Bad("policy.utc_offset_minutes", "must be between -1080 and 1080");
    }
    if (!p.maintenance_window) return Bad("policy.utc_offset_minutes", "needs maintenance_window");
    p.maintenance_window->utc_offset = std::chrono::minutes(minutes);
  }
  UPKEEP_TRY(policy.NoUnknownKeys());
  if (auto valid = ValidatePolicyOptions(p); !valid) {
    return Error(Errc::InvalidConfig, "policy: " + valid.error().message());
  }

  Section notices(table("notices"), "notices");
  UPKEEP_TRY(notices.Command("command", c.notices.command));
  std::uint64_t notifier_ms = static_cast<std::uint64_t>(c.notices.timeout.count());
  std::uint64_t notifier_s = notifier_ms / 1000;
  UPKEEP_TRY(notices.Uint("timeout_seconds", notifier_s, 1, 600));
  c.notices.timeout = std::chrono::seconds(notifier_s);
  UPKEEP_TRY(notices.NoUnknownKeys());

  Section api(table("local_api"), "local_api");
  UPKEEP_TRY(api.Path("socket", c.local_api.socket));
  if (!c.local_api.socket.is_absolute()) return Bad("local_api.socket", "must be absolute");
  std::string mode;
  UPKEEP_TRY(api.String("mode", mode));
  if (!mode.empty()) {
    if (mode.size() != 4 || mode[0] != '0' ||
        mode.find_first_not_of("01234567") != std::string::npos) {
      return Bad("local_api.mode", "must be an octal mode like \"0660\"");
    }
    c.local_api.mode = 0;
    for (const char ch : mode)
      c.local_api.mode = c.local_api.mode * 8 + static_cast<std::uint32_t>(ch - '0');
    if ((c.local_api.mode & 0007) != 0) {
      return Bad("local_api.mode", "must not give other users access");
    }
  }
  UPKEEP_TRY(api.String("group", c.local_api.group));
  UPKEEP_TRY(api.Bool("dbus", c.local_api.dbus));
  UPKEEP_TRY(api.String("lan_listen", c.local_api.lan_listen));
  UPKEEP_TRY(api.Path("lan_certificate", c.local_api.lan_certificate));
  UPKEEP_TRY(api.Path("lan_key", c.local_api.lan_key));
  UPKEEP_TRY(api.NoUnknownKeys());
  if (!c.local_api.lan_listen.empty()) {
    const auto colon = c.local_api.lan_listen.rfind(':');
    bool valid = false;
    if (colon != std::string::npos && colon > 0) {
      // Port 0: a free port, logged at start (for tests and set-up tools).
      std::uint32_t port = 0;
      const std::string_view digits = std::string_view(c.local_api.lan_listen).substr(colon + 1);
      const auto parsed = std::from_chars(digits.data(), digits.data() + digits.size(), port);
      valid = !digits.empty() && parsed.ec == std::errc() &&
              parsed.ptr == digits.data() + digits.size() && port <= 65535;
    }
    if (!valid) return Bad("local_api.lan_listen", "must be ADDRESS:PORT (port 0-65535)");
    if (c.local_api.lan_certificate.empty() || c.local_api.lan_key.empty()) {
      return Bad("local_api.lan_certificate", "lan_listen needs lan_certificate and lan_key");
    }
  }

  Section daemon(table("daemon"), "daemon");
  UPKEEP_TRY(daemon.Bool("low_priority", c.daemon.low_priority));
  UPKEEP_TRY(daemon.NoUnknownKeys());
  return Ok();
}

Result<AgentConfig> ParseConfigTable(const toml::table& root) {
  AgentConfig c;
  const std::set<std::string> sections = {"device", "trust",   "repository", "slots",  "bootloader",
                                          "health", "install", "components", "server", "schedule",
                                          "policy", "notices", "local_api",  "daemon"};
  for (const auto& [k, v] : root) {
    if (!sections.contains(std::string(k.str())))
      return Bad(std::string(k.str()), "unknown section");
    if (!v.is_table()) return Bad(std::string(k.str()), "must be a table");
  }
  auto table = [&](const char* name) { return root.get_as<toml::table>(name); };

  Section device(table("device"), "device");
  UPKEEP_TRY(device.String("hardware", c.device.hardware, true));
  UPKEEP_TRY(device.Path("data_dir", c.device.data_dir));
  UPKEEP_TRY(device.String("model", c.device.model));
  UPKEEP_TRY(device.String("serial", c.device.serial));
  UPKEEP_TRY(device.String("support_until", c.device.support_until));
  if (!c.device.support_until.empty() && !IsDate(c.device.support_until)) {
    return Bad("device.support_until", "must be a date YYYY-MM-DD");
  }
  UPKEEP_TRY(device.NoUnknownKeys());

  Section trust(table("trust"), "trust");
  UPKEEP_TRY(trust.Path("root", c.trust.root));
  UPKEEP_TRY(trust.NoUnknownKeys());

  Section repo(table("repository"), "repository");
  UPKEEP_TRY(repo.String("url", c.repository.url));
  UPKEEP_TRY(repo.Path("ca_file", c.repository.ca_file));
  UPKEEP_TRY(repo.NoUnknownKeys());
  if (!c.repository.url.empty() && !c.repository.url.starts_with("http://") &&
      !c.repository.url.starts_with("https://") && !c.repository.url.starts_with("/")) {
    return Bad("repository.url",
               "must be an http:// or https:// URL, or the absolute path of a local mirror");
  }

  Section slots(table("slots"), "slots");
  UPKEEP_TRY(slots.Path("a", c.slots.a, true));
  UPKEEP_TRY(slots.Path("b", c.slots.b, true));
  UPKEEP_TRY(slots.Uint("file_size", c.slots.file_size, 0, UINT64_MAX >> 1));
  UPKEEP_TRY(slots.Bool("read_back", c.slots.read_back));
  UPKEEP_TRY(slots.String("namespace", c.slots.target_namespace));
  UPKEEP_TRY(CheckNamespace("slots.namespace", c.slots.target_namespace));
  UPKEEP_TRY(slots.NoUnknownKeys());
  if (c.slots.a == c.slots.b) return Bad("slots.b", "must differ from slots.a");

  Section boot(table("bootloader"), "bootloader");
  UPKEEP_TRY(boot.String("type", c.bootloader.type));
  if (c.bootloader.type != "file" && c.bootloader.type != "uboot" && c.bootloader.type != "grub") {
    return Bad("bootloader.type", "must be file, uboot or grub");
  }
  UPKEEP_TRY(boot.Path("env", c.bootloader.env, true));
  UPKEEP_TRY(boot.String("slot_variable", c.bootloader.slot_variable));
  std::uint64_t limit = c.bootloader.boot_limit;
  UPKEEP_TRY(boot.Uint("boot_limit", limit, 1, 100));
  c.bootloader.boot_limit = static_cast<unsigned>(limit);
  UPKEEP_TRY(boot.Path("cmdline", c.bootloader.cmdline));
  UPKEEP_TRY(boot.Path("boot_id", c.bootloader.boot_id));
  UPKEEP_TRY(boot.Command("reboot_command", c.bootloader.reboot_command));
  UPKEEP_TRY(boot.NoUnknownKeys());

  Section health(table("health"), "health");
  if (const auto* cmds = health.Get("commands")) {
    if (!cmds->is_array()) return Bad("health.commands", "must be an array of commands");
    for (const auto& cmd : *cmds->as_array()) {
      std::vector<std::string> argv;
      UPKEEP_TRY(health.Argv("commands", argv, &cmd));
      if (argv.empty()) return Bad("health.commands", "a command must name a program");
      c.health.commands.push_back(std::move(argv));
    }
  }
  UPKEEP_TRY(health.Command("systemd_units", c.health.systemd_units));
  std::uint64_t timeout = static_cast<std::uint64_t>(c.health.timeout.count());
  UPKEEP_TRY(health.Uint("timeout_seconds", timeout, 1, 3600));
  c.health.timeout = std::chrono::seconds(timeout);
  UPKEEP_TRY(health.NoUnknownKeys());

  Section install(table("install"), "install");
  UPKEEP_TRY(install.Uint("checkpoint_mib", c.install.checkpoint_mib, 1, 4096));
  std::uint64_t resumes = c.install.max_resumes;
  UPKEEP_TRY(install.Uint("max_resumes", resumes, 0, 1000));
  c.install.max_resumes = static_cast<unsigned>(resumes);
  std::uint64_t delay = static_cast<std::uint64_t>(c.install.resume_delay.count());
  UPKEEP_TRY(install.Uint("resume_delay_ms", delay, 0, 600'000));
  c.install.resume_delay = std::chrono::milliseconds(delay);
  UPKEEP_TRY(install.Bool("reuse_chunks", c.install.reuse_chunks));
  UPKEEP_TRY(install.NoUnknownKeys());

  if (const auto* components = table("components")) {
    for (const auto& [name, node] : *components) {
      const std::string key = "components." + std::string(name.str());
      if (!node.is_table()) return Bad(key, "must be a table");
      if (name.str() == "rootfs") return Bad(key, "rootfs is installed into the slots");
      Section m(node.as_table(), key);
      ModuleConfig module;
      UPKEEP_TRY(m.Command("module", module.command, true));
      std::uint64_t t = static_cast<std::uint64_t>(module.timeout.count());
      UPKEEP_TRY(m.Uint("timeout_seconds", t, 1, 86'400));
      module.timeout = std::chrono::seconds(t);
      if (const auto* args = m.Get("args")) {
        if (!args->is_table()) return Bad(key + ".args", "must be a table");
        module.args_json = metadata::DumpJson(ToJson(*args));
      }
      module.target_namespace = std::string(name.str()) + "/";
      UPKEEP_TRY(m.String("namespace", module.target_namespace));
      UPKEEP_TRY(CheckNamespace(key + ".namespace", module.target_namespace));
      UPKEEP_TRY(m.NoUnknownKeys());
      c.components.emplace(std::string(name.str()), std::move(module));
    }
  }
  UPKEEP_TRY(ParseDaemonSections(c, table));

  // Each target path belongs to at most one component: no namespace may contain another.
  std::vector<std::pair<std::string, std::string>> spaces = {
      {"slots.namespace", c.slots.target_namespace}};
  for (const auto& [name, m] : c.components) {
    spaces.emplace_back("components." + name + ".namespace", m.target_namespace);
  }
  for (std::size_t i = 0; i < spaces.size(); ++i) {
    for (std::size_t j = 0; j < spaces.size(); ++j) {
      if (i != j && spaces[j].second.starts_with(spaces[i].second)) {
        return Bad(spaces[j].first, "overlaps " + spaces[i].first + " (\"" + spaces[i].second +
                                        "\"): a target must belong to one component");
      }
    }
  }
  return c;
}

}  // namespace

Result<AgentConfig> LoadConfig(const std::filesystem::path& file) {
  const LocalFilesystem fs;
  return LoadConfig(file, fs);
}

Result<AgentConfig> LoadConfig(const std::filesystem::path& file, const Filesystem& fs) {
  auto text = fs.ReadFile(file, 1 << 20);
  if (!text) return Error(Errc::InvalidConfig, text.error().ToString());
  std::vector<ConfigLayer> layers{{file.string(), std::move(*text)}};
  // Drop-ins: FILE's stem + ".conf.d/*.toml" beside it, in name order, each over the ones before.
  const std::filesystem::path dropins = file.parent_path() / (file.stem().string() + ".conf.d");
  auto names = fs.ListDirectory(dropins);
  if (!names && names.error().code() != common::Errc::FileNotFound) {
    return Error(Errc::InvalidConfig, names.error().ToString());
  }
  if (names) {
    if (names->size() > 256) return Bad(dropins.string(), "more than 256 drop-in files");
    for (const std::string& name : *names) {
      if (!name.ends_with(".toml") || name.starts_with(".")) continue;
      auto layer = fs.ReadFile(dropins / name, 1 << 20);
      if (!layer) return Error(Errc::InvalidConfig, layer.error().ToString());
      layers.push_back({(dropins / name).string(), std::move(*layer)});
    }
  }
  if (layers.size() == 1) {
    auto config = ParseConfig(layers[0].text);
    if (!config) return std::move(config).error().WithContext(file.string());
    return config;
  }
  auto config = ParseConfigLayers(layers);
  if (!config) {
    return std::move(config).error().WithContext(file.string() + " with " +
                                                 std::to_string(layers.size() - 1) +
                                                 " drop-in(s) from " + dropins.string());
  }
  return config;
}

std::string DumpConfig(const AgentConfig& c) {
  auto argv = [](const std::vector<std::string>& v) {
    toml::array a;
    for (const auto& s : v) a.push_back(s);
    return a;
  };
  auto secs = [](std::chrono::seconds v) { return static_cast<std::int64_t>(v.count()); };
  toml::table policy{{"security_postpone_cap_hours",
                      static_cast<std::int64_t>(c.policy.security_postpone_cap.count() / 3600)},
                     {"reboot_deadline_hours",
                      static_cast<std::int64_t>(c.policy.reboot_deadline.count() / 3600)}};
  if (c.policy.maintenance_window) {
    const auto& w = *c.policy.maintenance_window;
    const auto end = (w.start + w.length).count() % (24 * 60);
    char text[16];
    std::snprintf(text, sizeof text, "%02d:%02d-%02d:%02d", static_cast<int>(w.start.count() / 60),
                  static_cast<int>(w.start.count() % 60), static_cast<int>(end / 60),
                  static_cast<int>(end % 60));
    policy.insert("maintenance_window", std::string(text));
    policy.insert("utc_offset_minutes",
                  static_cast<std::int64_t>(
                      std::chrono::duration_cast<std::chrono::minutes>(w.utc_offset).count()));
  }
  char mode[8];
  std::snprintf(mode, sizeof mode, "0%03o", static_cast<unsigned>(c.local_api.mode & 0777));
  toml::table health{{"timeout_seconds", static_cast<std::int64_t>(c.health.timeout.count())}};
  toml::array commands;
  for (const auto& cmd : c.health.commands) commands.push_back(argv(cmd));
  health.insert("commands", std::move(commands));
  health.insert("systemd_units", argv(c.health.systemd_units));
  toml::table components;
  for (const auto& [name, m] : c.components) {
    toml::table t{{"module", argv(m.command)},
                  {"timeout_seconds", static_cast<std::int64_t>(m.timeout.count())},
                  {"namespace", m.target_namespace.empty() ? name + "/" : m.target_namespace}};
    // args_json was written by ParseConfig; parse without exceptions all the same.
    InsertJson(t, "args", metadata::Json::parse(m.args_json, nullptr, false));
    components.insert(name, std::move(t));
  }
  toml::table root{
      {"device",
       toml::table{{"hardware", c.device.hardware}, {"data_dir", c.device.data_dir.string()}}},
      {"trust", toml::table{{"root", c.trust.root.string()}}},
      {"repository",
       toml::table{{"url", c.repository.url}, {"ca_file", c.repository.ca_file.string()}}},
      {"slots", toml::table{{"a", c.slots.a.string()},
                            {"b", c.slots.b.string()},
                            {"file_size", static_cast<std::int64_t>(c.slots.file_size)},
                            {"read_back", c.slots.read_back},
                            {"namespace", c.slots.target_namespace}}},
      {"bootloader", toml::table{{"type", c.bootloader.type},
                                 {"env", c.bootloader.env.string()},
                                 {"slot_variable", c.bootloader.slot_variable},
                                 {"boot_limit", static_cast<std::int64_t>(c.bootloader.boot_limit)},
                                 {"cmdline", c.bootloader.cmdline.string()},
                                 {"boot_id", c.bootloader.boot_id.string()},
                                 {"reboot_command", argv(c.bootloader.reboot_command)}}},
      {"health", std::move(health)},
      {"install",
       toml::table{{"checkpoint_mib", static_cast<std::int64_t>(c.install.checkpoint_mib)},
                   {"max_resumes", static_cast<std::int64_t>(c.install.max_resumes)},
                   {"resume_delay_ms", static_cast<std::int64_t>(c.install.resume_delay.count())},
                   {"reuse_chunks", c.install.reuse_chunks}}},
      {"components", std::move(components)},
      {"server",
       toml::table{{"url", c.server.url},
                   {"ca_file", c.server.ca_file.string()},
                   {"token_file", c.server.token_file.string()},
                   {"manufacturer_certificate", c.server.manufacturer_certificate.string()},
                   {"manufacturer_key", c.server.manufacturer_key.string()}}},
      {"schedule", toml::table{{"boot_delay_min_seconds", secs(c.schedule.boot_delay_min)},
                               {"boot_delay_max_seconds", secs(c.schedule.boot_delay_max)},
                               {"period_seconds", secs(c.schedule.period)},
                               {"window_start_seconds", secs(c.schedule.window_start)},
                               {"window_length_seconds", secs(c.schedule.window_length)},
                               {"backoff_base_seconds", secs(c.schedule.backoff_base)},
                               {"backoff_cap_seconds", secs(c.schedule.backoff_cap)}}},
      {"policy", std::move(policy)},
      {"notices",
       toml::table{
           {"command", argv(c.notices.command)},
           {"timeout_seconds",
            static_cast<std::int64_t>(
                std::chrono::duration_cast<std::chrono::seconds>(c.notices.timeout).count())}}},
      {"local_api", toml::table{{"socket", c.local_api.socket.string()},
                                {"mode", mode},
                                {"group", c.local_api.group},
                                {"dbus", c.local_api.dbus},
                                {"lan_listen", c.local_api.lan_listen},
                                {"lan_certificate", c.local_api.lan_certificate.string()},
                                {"lan_key", c.local_api.lan_key.string()}}},
      {"daemon", toml::table{{"low_priority", c.daemon.low_priority}}},
  };
  std::ostringstream out;
  out << root << "\n";
  return out.str();
}

}  // namespace upkeep::agent
