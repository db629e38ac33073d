#pragma once

// upkeep-server's configuration (TOML, docs/server.md). One struct per section with defaults in
// the class; parsing rejects unknown sections and keys and checks every value, so a typo never
// falls back to a default silently. `upkeep-server --dump-config` prints the effective result.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/result.hpp"
#include "upkeep/server/fleet.hpp"

namespace upkeep::server {

struct ListenConfig {
  // Address and port of the device API (HTTPS with client certificates).
  std::string address = "0.0.0.0";
  std::uint16_t port = 8443;
  // The server's TLS certificate and private key (PEM files).
  std::string certificate = "/etc/upkeep-server/server.pem";
  std::string private_key = "/etc/upkeep-server/server.key";
  // Threads running the network and the handlers.
  unsigned threads = 4;
  // Seconds requests in flight may take to finish on SIGTERM or SIGINT.
  unsigned shutdown_grace_seconds = 10;
};

struct DatabaseConfig {
  // sqlite:PATH or postgresql://... (docs/adr/0006-storage.md). Never logged with its password.
  std::string url = "sqlite:/var/lib/upkeep-server/fleet.db";
};

struct DevicesConfig {
  // The device CA: issues client certificates at enrolment, checks them at every request.
  std::string ca_certificate = "/etc/upkeep-server/device-ca.pem";
  std::string ca_private_key = "/etc/upkeep-server/device-ca.key";
  // Validity of device certificates.
  std::uint32_t certificate_validity_days = 3650;
  // What check-in answers tell devices about their next check-in.
  std::uint32_t next_checkin_seconds = 86400;
};

struct EnrolmentConfig {
  // Enrolment attempts per remote address: `burst` at once, one more every `refill_seconds`.
  std::uint32_t burst = 10;
  std::uint32_t refill_seconds = 60;
  // PEM file of the manufacturer CA whose device certificates may enrol without a token
  // (empty: tokens only), and the group such devices join.
  std::string manufacturer_ca;
  std::string manufacturer_group;
};

// [director]: the director repository (docs/server.md). Absent: check-ins carry no director
// metadata.
struct DirectorConfig {
  bool configured = false;  // the section is present
  // The director's root files, oldest first (1.root.json, ...); the last is current.
  std::vector<std::string> roots;
  // The online keys (PKCS#8 PEM files, 0600). The root key is not here: it belongs offline.
  std::string targets_key;
  std::string snapshot_key;
  std::string timestamp_key;
  // Validity of what the director signs.
  std::uint32_t targets_expiry_days = 7;
  std::uint32_t snapshot_expiry_days = 7;
  std::uint32_t timestamp_expiry_hours = 24;
};

// [incidents]: delivery of incidents to administrators by a signed webhook (docs/server.md
// "Incident delivery", docs/formats/incident-webhook.md). Absent: incidents are stored, not sent.
struct IncidentsConfig {
  bool configured = false;  // the section is present
  std::string webhook_url;  // https:// only
  std::string secret_file;  // the HMAC-SHA256 key (>= 32 bytes); the path is printed, never the key
  std::string ca_file;      // CAs for the receiver's certificate; empty: the system's
  std::uint32_t connect_timeout_seconds = 10;
  std::uint32_t timeout_seconds = 30;
  std::uint32_t retry_base_seconds = 30;    // first retry delay, doubled per failure
  std::uint32_t retry_max_seconds = 3600;   // ... up to this
  std::uint32_t claim_lease_seconds = 300;  // >= 2 * timeout_seconds
  std::uint32_t poll_interval_seconds = 10;
  std::uint32_t batch_size = 100;
};

// [metrics]: GET /metrics for Prometheus (docs/server.md, "Metrics"). Absent: /metrics is 404.
struct MetricsConfig {
  bool configured = false;  // the section is present
  // The bearer token scrapers present (or "sha256:" and the token's SHA-256 in hex).
  std::string token_file;
};

// [repository]: the image repository served under /repository/ (docs/server.md). Absent: not
// served (a web server or CDN serves it instead).
struct RepositoryConfig {
  bool configured = false;  // the section is present
  std::string directory;    // what `upkeep repo publish` writes
};

struct ServerConfig {
  ListenConfig server;
  DatabaseConfig database;
  DevicesConfig devices;
  EnrolmentConfig enrolment;
  DirectorConfig director;
  IncidentsConfig incidents;
  MetricsConfig metrics;
  RepositoryConfig repository;
  // [models.NAME]: support period per device model.
  std::map<std::string, ModelSupport> models;
};

// Errc::InvalidConfig with the offending key in the message.
[[nodiscard]] Result<ServerConfig> ParseServerConfig(std::string_view toml_text);
[[nodiscard]] Result<ServerConfig> LoadServerConfig(const std::string& path);
[[nodiscard]] std::string DumpServerConfig(const ServerConfig& config);

}  // namespace upkeep::server
