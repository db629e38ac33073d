#include "config.hpp"

#include <toml++/toml.h>

#include <set>
#include <sstream>

#include "upkeep/common/filesystem.hpp"

namespace upkeep::server {

namespace {

Error Bad(const std::string& key, const std::string& what) {
  return Error(Errc::InvalidConfig, key + ": " + what);
}

// Reads one table's keys, remembering which were read, so that leftovers are rejected.
class Section {
 public:
  Section(const toml::table* table, std::string name) : table_(table), name_(std::move(name)) {}

  [[nodiscard]] std::string Key(std::string_view key) const {
    return name_ + "." + std::string(key);
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
    if (out.empty()) return Bad(Key(key), "must not be empty");
    return Ok();
  }
  template <typename T>
  Result<void> Uint(std::string_view key, T& out, std::int64_t min, std::int64_t max) {
    const auto* n = Get(key);
    if (n == nullptr) return Ok();
    if (!n->is_integer()) return Bad(Key(key), "must be an integer");
    const std::int64_t v = n->as_integer()->get();
    if (v < min || v > max) {
      return Bad(Key(key),
                 "must be between " + std::to_string(min) + " and " + std::to_string(max));
    }
    out = static_cast<T>(v);
    return Ok();
  }
  Result<void> Strings(std::string_view key, std::vector<std::string>& out, bool required) {
    const auto* n = Get(key);
    if (n == nullptr) return required ? Bad(Key(key), "required") : Ok();
    const auto* a = n->as_array();
    if (a == nullptr || a->empty()) return Bad(Key(key), "must be a non-empty array of strings");
    out.clear();
    for (const auto& e : *a) {
      if (!e.is_string() || e.as_string()->get().empty()) {
        return Bad(Key(key), "must be a non-empty array of strings");
      }
      out.push_back(e.as_string()->get());
    }
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

bool IsDate(const std::string& s) {
  if (s.size() != 10 || s[4] != '-' || s[7] != '-') return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) return false;
  }
  return true;
}

}  // namespace

Result<ServerConfig> ParseServerConfig(std::string_view text) {
  toml::table root;
  try {
    root = toml::parse(text);
  } catch (const toml::parse_error& e) {
    std::ostringstream where;
    where << e.source().begin;
    return Error(Errc::InvalidConfig, std::string(e.description()) + " at " + where.str());
  }
  const std::set<std::string> sections = {"server",   "database",  "devices",  "enrolment",
                                          "models",   "director",  "incidents", "metrics",
                                          "repository"};
  for (const auto& [k, v] : root) {
    if (!sections.contains(std::string(k.str())))
      return Bad(std::string(k.str()), "unknown section");
    if (!v.is_table()) return Bad(std::string(k.str()), "must be a table");
  }
  auto table = [&](const char* name) { return root.get_as<toml::table>(name); };
  ServerConfig c;

  Section server(table("server"), "server");
  UPKEEP_TRY(server.String("address", c.server.address));
  UPKEEP_TRY(server.Uint("port", c.server.port, 0, 65535));
  UPKEEP_TRY(server.String("certificate", c.server.certificate));
  UPKEEP_TRY(server.String("private_key", c.server.private_key));
  UPKEEP_TRY(server.Uint("threads", c.server.threads, 1, 256));
  UPKEEP_TRY(server.Uint("shutdown_grace_seconds", c.server.shutdown_grace_seconds, 0, 3600));
  UPKEEP_TRY(server.NoUnknownKeys());

  Section database(table("database"), "database");
  UPKEEP_TRY(database.String("url", c.database.url));
  UPKEEP_TRY(database.NoUnknownKeys());

  Section devices(table("devices"), "devices");
  UPKEEP_TRY(devices.String("ca_certificate", c.devices.ca_certificate));
  UPKEEP_TRY(devices.String("ca_private_key", c.devices.ca_private_key));
  UPKEEP_TRY(
      devices.Uint("certificate_validity_days", c.devices.certificate_validity_days, 1, 36500));
  UPKEEP_TRY(devices.Uint("next_checkin_seconds", c.devices.next_checkin_seconds, 60, 2592000));
  UPKEEP_TRY(devices.NoUnknownKeys());

  Section enrolment(table("enrolment"), "enrolment");
  UPKEEP_TRY(enrolment.Uint("burst", c.enrolment.burst, 1, 1000000));
  UPKEEP_TRY(enrolment.Uint("refill_seconds", c.enrolment.refill_seconds, 1, 86400));
  UPKEEP_TRY(enrolment.String("manufacturer_ca", c.enrolment.manufacturer_ca));
  UPKEEP_TRY(enrolment.String("manufacturer_group", c.enrolment.manufacturer_group));
  UPKEEP_TRY(enrolment.NoUnknownKeys());

  if (const auto* director_table = table("director")) {
    Section director(director_table, "director");
    c.director.configured = true;
    UPKEEP_TRY(director.Strings("roots", c.director.roots, true));
    UPKEEP_TRY(director.String("targets_key", c.director.targets_key, true));
    UPKEEP_TRY(director.String("snapshot_key", c.director.snapshot_key, true));
    UPKEEP_TRY(director.String("timestamp_key", c.director.timestamp_key, true));
    UPKEEP_TRY(director.Uint("targets_expiry_days", c.director.targets_expiry_days, 1, 3650));
    UPKEEP_TRY(director.Uint("snapshot_expiry_days", c.director.snapshot_expiry_days, 1, 3650));
    UPKEEP_TRY(
        director.Uint("timestamp_expiry_hours", c.director.timestamp_expiry_hours, 1, 24 * 365));
    UPKEEP_TRY(director.NoUnknownKeys());
  }

  if (const auto* incidents_table = table("incidents")) {
    Section in(incidents_table, "incidents");
    IncidentsConfig& i = c.incidents;
    i.configured = true;
    UPKEEP_TRY(in.String("webhook_url", i.webhook_url, true));
    if (!i.webhook_url.starts_with("https://")) {
      return Bad("incidents.webhook_url", "must be an https:// URL");
    }
    UPKEEP_TRY(in.String("secret_file", i.secret_file, true));
    UPKEEP_TRY(in.String("ca_file", i.ca_file));
    UPKEEP_TRY(in.Uint("connect_timeout_seconds", i.connect_timeout_seconds, 1, 600));
    UPKEEP_TRY(in.Uint("timeout_seconds", i.timeout_seconds, 1, 600));
    UPKEEP_TRY(in.Uint("retry_base_seconds", i.retry_base_seconds, 1, 86400));
    UPKEEP_TRY(in.Uint("retry_max_seconds", i.retry_max_seconds, 1, 7 * 86400));
    UPKEEP_TRY(in.Uint("claim_lease_seconds", i.claim_lease_seconds, 2, 86400));
    UPKEEP_TRY(in.Uint("poll_interval_seconds", i.poll_interval_seconds, 1, 3600));
    UPKEEP_TRY(in.Uint("batch_size", i.batch_size, 1, 10000));
    UPKEEP_TRY(in.NoUnknownKeys());
    if (i.retry_max_seconds < i.retry_base_seconds) {
      return Bad("incidents.retry_max_seconds", "must be at least retry_base_seconds");
    }
    if (i.claim_lease_seconds < 2 * i.timeout_seconds) {
      return Bad("incidents.claim_lease_seconds", "must be at least twice timeout_seconds");
    }
  }
  if (const auto* metrics_table = table("metrics")) {
    Section metrics(metrics_table, "metrics");
    c.metrics.configured = true;
    UPKEEP_TRY(metrics.String("token_file", c.metrics.token_file, true));
    UPKEEP_TRY(metrics.NoUnknownKeys());
  }
  if (const auto* repository_table = table("repository")) {
    Section repository(repository_table, "repository");
    c.repository.configured = true;
    UPKEEP_TRY(repository.String("directory", c.repository.directory, true));
    UPKEEP_TRY(repository.NoUnknownKeys());
  }

  if (const auto* models = table("models")) {
    for (const auto& [name, node] : *models) {
      const std::string key = "models." + std::string(name.str());
      if (!node.is_table()) return Bad(key, "must be a table");
      Section m(node.as_table(), key);
      ModelSupport support;
      UPKEEP_TRY(m.String("security_updates_until", support.security_updates_until, true));
      if (!IsDate(support.security_updates_until)) {
        return Bad(key + ".security_updates_until", "must be a date YYYY-MM-DD");
      }
      UPKEEP_TRY(m.String("url", support.url, true));
      if (!support.url.starts_with("https://") && !support.url.starts_with("http://")) {
        return Bad(key + ".url", "must be an http:// or https:// URL");
      }
      UPKEEP_TRY(m.NoUnknownKeys());
      c.models.emplace(std::string(name.str()), std::move(support));
    }
  }
  return c;
}

Result<ServerConfig> LoadServerConfig(const std::string& path) {
  const LocalFilesystem fs;
  auto text = fs.ReadFile(path, 1 << 20);
  if (!text) return Error(Errc::InvalidConfig, text.error().ToString());
  auto config = ParseServerConfig(*text);
  if (!config) return std::move(config).error().WithContext(path);
  return config;
}

std::string DumpServerConfig(const ServerConfig& c) {
  auto i = [](auto v) { return static_cast<std::int64_t>(v); };
  toml::table models;
  for (const auto& [name, m] : c.models) {
    models.insert(
        name, toml::table{{"security_updates_until", m.security_updates_until}, {"url", m.url}});
  }
  toml::table root{
      {"server", toml::table{{"address", c.server.address},
                             {"port", i(c.server.port)},
                             {"certificate", c.server.certificate},
                             {"private_key", c.server.private_key},
                             {"threads", i(c.server.threads)},
                             {"shutdown_grace_seconds", i(c.server.shutdown_grace_seconds)}}},
      {"database", toml::table{{"url", storage::RedactUrl(c.database.url)}}},
      {"devices", toml::table{{"ca_certificate", c.devices.ca_certificate},
                              {"ca_private_key", c.devices.ca_private_key},
                              {"certificate_validity_days", i(c.devices.certificate_validity_days)},
                              {"next_checkin_seconds", i(c.devices.next_checkin_seconds)}}},
      {"enrolment", toml::table{{"burst", i(c.enrolment.burst)},
                                {"refill_seconds", i(c.enrolment.refill_seconds)}}},
      {"models", std::move(models)},
  };
  if (!c.enrolment.manufacturer_ca.empty()) {
    root["enrolment"].as_table()->insert("manufacturer_ca", c.enrolment.manufacturer_ca);
  }
  if (!c.enrolment.manufacturer_group.empty()) {
    root["enrolment"].as_table()->insert("manufacturer_group", c.enrolment.manufacturer_group);
  }
  if (c.director.configured) {
    toml::array roots;
    for (const auto& r : c.director.roots) roots.push_back(r);
    root.insert("director",
                toml::table{{"roots", std::move(roots)},
                            {"targets_key", c.director.targets_key},
                            {"snapshot_key", c.director.snapshot_key},
                            {"timestamp_key", c.director.timestamp_key},
                            {"targets_expiry_days", i(c.director.targets_expiry_days)},
                            {"snapshot_expiry_days", i(c.director.snapshot_expiry_days)},
                            {"timestamp_expiry_hours", i(c.director.timestamp_expiry_hours)}});
  }
  if (const IncidentsConfig& in = c.incidents; in.configured) {
    toml::table t{{"webhook_url", in.webhook_url},
                  {"secret_file", in.secret_file},
                  {"connect_timeout_seconds", i(in.connect_timeout_seconds)},
                  {"timeout_seconds", i(in.timeout_seconds)},
                  {"retry_base_seconds", i(in.retry_base_seconds)},
                  {"retry_max_seconds", i(in.retry_max_seconds)},
                  {"claim_lease_seconds", i(in.claim_lease_seconds)},
                  {"poll_interval_seconds", i(in.poll_interval_seconds)},
                  {"batch_size", i(in.batch_size)}};
    if (!in.ca_file.empty()) t.insert("ca_file", in.ca_file);
    root.insert("incidents", std::move(t));
  }
  if (c.metrics.configured) {
    root.insert("metrics", toml::table{{"token_file", c.metrics.token_file}});
  }
  if (c.repository.configured) {
    root.insert("repository", toml::table{{"directory", c.repository.directory}});
  }
  std::ostringstream out;
  out << root << "\n";
  return out.str();
}

}  // namespace upkeep::server
