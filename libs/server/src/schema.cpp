// The fleet database's schema, in the portable SQL subset of ADR 0006 (runs unchanged on SQLite
// and PostgreSQL). Times are BIGINT Unix seconds; booleans BIGINT 0/1; JSON is canonical TEXT.

#include <array>

#include "upkeep/server/fleet.hpp"

namespace upkeep::server {

namespace {

// Migration 1: devices, enrolment tokens, reports and incidents.
constexpr std::string_view kSchema1 = R"sql(
CREATE TABLE IF NOT EXISTS devices (
  id TEXT PRIMARY KEY,
  model TEXT NOT NULL,
  serial TEXT NOT NULL,
  hardware TEXT NOT NULL DEFAULT '',
  device_group TEXT NOT NULL DEFAULT '',
  certificate_serial TEXT NOT NULL UNIQUE,
  blocked BIGINT NOT NULL DEFAULT 0,
  enrolled_at BIGINT NOT NULL,
  last_checkin_at BIGINT,
  checkin_counter BIGINT NOT NULL DEFAULT -1,
  components TEXT NOT NULL DEFAULT '{}',
  policy TEXT NOT NULL DEFAULT '{}',
  update_state TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS devices_group ON devices (device_group);
CREATE TABLE IF NOT EXISTS enrolment_tokens (
  token_sha256 TEXT PRIMARY KEY,
  model TEXT NOT NULL,
  device_group TEXT NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  used_by TEXT,
  used_at BIGINT
);
CREATE TABLE IF NOT EXISTS reports (
  report_id TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  update_id TEXT NOT NULL,
  target TEXT NOT NULL,
  outcome TEXT NOT NULL,
  body TEXT NOT NULL,
  received_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_device ON reports (device_id, received_at);
CREATE TABLE IF NOT EXISTS incidents (
  incident_id TEXT PRIMARY KEY,
  device_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  body TEXT NOT NULL,
  received_at BIGINT NOT NULL,
  delivered_at BIGINT,
  attempts BIGINT NOT NULL DEFAULT 0,
  next_attempt_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_undelivered ON incidents (delivered_at, next_attempt_at);
)sql";

// Migration 3: incident delivery (incident_delivery.hpp). A delivering process claims a row by
// setting claimed_until (a lease) and claimed_by (its claim's random token) in one conditional
// UPDATE, so two processes never send the same incident at once; the outcome of each attempt is
// recorded in last_error and last_attempt_at, the process that delivered it in delivered_by.
constexpr std::string_view kSchema3 = R"sql(
ALTER TABLE incidents ADD COLUMN claimed_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN claimed_by TEXT NOT NULL DEFAULT '';
ALTER TABLE incidents ADD COLUMN last_attempt_at BIGINT;
ALTER TABLE incidents ADD COLUMN last_error TEXT NOT NULL DEFAULT '';
ALTER TABLE incidents ADD COLUMN delivered_by TEXT NOT NULL DEFAULT '';
)sql";

// Migration 2: the director's state per device (versions and the last targets and snapshot, so
// an unchanged assignment keeps its files) and the targets assigned to each device.
constexpr std::string_view kSchema2 = R"sql(
CREATE TABLE IF NOT EXISTS director_state (
  device_id TEXT PRIMARY KEY,
  targets_version BIGINT NOT NULL,
  snapshot_version BIGINT NOT NULL,
  timestamp_version BIGINT NOT NULL,
  targets TEXT NOT NULL,
  snapshot TEXT NOT NULL,
  updated_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS director_assignments (
  device_id TEXT NOT NULL,
  target_path TEXT NOT NULL,
  length BIGINT NOT NULL,
  sha256 TEXT NOT NULL,
  assigned_at BIGINT NOT NULL,
  PRIMARY KEY (device_id, target_path)
);
)sql";

// Migration 4: releases (targets per hardware model), device groups with maintenance windows,
// campaigns and the devices each one was offered to with their outcomes; the director's answer
// digest and ETag per device (304 answers); the manufacturer certificate a device enrolled with.
constexpr std::string_view kSchema4 = R"sql(
CREATE TABLE IF NOT EXISTS releases (
  id TEXT PRIMARY KEY,
  seq BIGINT NOT NULL UNIQUE,
  security BIGINT NOT NULL,
  source TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS release_targets (
  release_id TEXT NOT NULL,
  hardware TEXT NOT NULL,
  target_path TEXT NOT NULL,
  length BIGINT NOT NULL,
  sha256 TEXT NOT NULL,
  version TEXT NOT NULL,
  security BIGINT NOT NULL,
  PRIMARY KEY (release_id, hardware, target_path)
);
CREATE TABLE IF NOT EXISTS device_groups (
  name TEXT PRIMARY KEY,
  window_start_minute BIGINT NOT NULL,
  window_minutes BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS campaigns (
  id TEXT PRIMARY KEY,
  release_id TEXT NOT NULL,
  device_group TEXT NOT NULL,
  phases TEXT NOT NULL,
  soak_seconds BIGINT NOT NULL,
  failure_threshold_percent BIGINT NOT NULL,
  security BIGINT NOT NULL,
  state TEXT NOT NULL,
  state_reason TEXT NOT NULL DEFAULT '',
  open_phases BIGINT NOT NULL,
  phase_opened_at BIGINT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS campaigns_state ON campaigns (state, device_group);
CREATE TABLE IF NOT EXISTS campaign_devices (
  campaign_id TEXT NOT NULL,
  device_id TEXT NOT NULL,
  target_path TEXT NOT NULL,
  phase BIGINT NOT NULL,
  offered_at BIGINT NOT NULL,
  outcome TEXT NOT NULL DEFAULT 'offered',
  outcome_at BIGINT,
  PRIMARY KEY (campaign_id, device_id, target_path)
);
CREATE INDEX IF NOT EXISTS campaign_devices_device ON campaign_devices (device_id, target_path);
ALTER TABLE director_state ADD COLUMN answer_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE director_state ADD COLUMN etag TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN manufacturer_certificate TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS devices_manufacturer_certificate
  ON devices (manufacturer_certificate);
)sql";

constexpr std::array kMigrations = {
    storage::Migration{1, "fleet devices, enrolment tokens, reports, incidents", kSchema1},
    storage::Migration{2, "director state and assignments per device", kSchema2},
    storage::Migration{3, "incident delivery: claims, last error, delivered by", kSchema3},
    storage::Migration{4, "releases, groups, campaigns, check-in ETags, manufacturer certificates",
                       kSchema4},
};

}  // namespace

Result<void> MigrateFleetSchema(storage::Database& db) { return storage::Migrate(db, kMigrations); }

}  // namespace upkeep::server
