#pragma once

// The fleet server's device API (docs/formats/device-api.md, ADR 0007) over one storage::Database:
// enrolment with one-time tokens, check-ins (inventory and replay-proof counters), reports and
// incidents (idempotent by id, stored before they are acknowledged) and the support period of a
// device's model. It is the Handler of an HttpsServer whose client CA is the device CA.
//
// A device's identity comes only from its verified client certificate (device CA, serial known
// and not blocked), never from a request body, so a device reads and writes only its own rows.
// Requests are parsed strictly: unknown fields, wrong types and invalid UTF-8 are 400.
//
// With a director configured (FleetOptions::director), enrolment answers the director's root and
// every check-in answers the director's metadata for that device (metadata::
// BuildDirectorRepository), signed in the same transaction that records the check-in's counter:
// the targets name what an administrator assigned to that device (AssignTarget), with the
// device's ID and hardware and the check-in's counter. Without one, check-in answers carry an
// empty "director" object and enrolment answers no "director_root".

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/result.hpp"
#include "upkeep/crypto/x509.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/metadata/director.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/server/https_server.hpp"
#include "upkeep/storage/database.hpp"

namespace upkeep::server {

// The schema of the fleet database (migration 1: devices, enrolment_tokens, reports, incidents;
// migration 2: director_state and director_assignments; 3: incident delivery columns; 4:
// releases, groups, campaigns and check-in ETags).
[[nodiscard]] Result<void> MigrateFleetSchema(storage::Database& db);

// Support period of one model, answered by GET /api/v1/support.
struct ModelSupport {
  // "YYYY-MM-DD": last day security updates are published.
  std::string security_updates_until;
  // Where people read about it.
  std::string url;
};

// The director repository (ADR 0007, docs/formats/director.md): its roots and online keys.
struct DirectorOptions {
  // Every director root as signed (1.root.json, 2.root.json, ...), oldest first; the last one is
  // the current root, whose online keys are `keys`.
  std::vector<std::string> roots;
  metadata::DirectorOnlineKeys keys;
  std::chrono::seconds targets_validity = std::chrono::days(7);
  std::chrono::seconds snapshot_validity = std::chrono::days(7);
  std::chrono::seconds timestamp_validity = std::chrono::days(1);
};

struct FleetOptions {
  // The device CA (PEM): issues client certificates at enrolment, checks them at every request.
  std::string device_ca_pem;
  std::string device_ca_key_pem;
  // Validity of issued client certificates.
  std::chrono::days certificate_validity{3650};
  // What a check-in answer tells a device about its next check-in.
  std::uint32_t next_checkin_seconds = 86400;
  // Largest request body a handler accepts (413 too_large beyond; the HTTPS front end's own
  // limit must be at least this).
  std::size_t max_body_bytes = 64 * 1024;
  // Enrolment attempts per remote address: a token bucket of `enrol_burst` attempts refilled
  // with one attempt every `enrol_refill_seconds`.
  std::uint32_t enrol_burst = 10;
  std::uint32_t enrol_refill_seconds = 60;
  // Enrolment with a manufacturer-issued device certificate instead of a token (PEM of the
  // manufacturer CA; empty: tokens only). The HTTPS front end's client CA must include it. Such
  // devices join `manufacturer_group`; the certificate's device name must equal the request's
  // serial, and enrolling again with the same certificate re-keys the same device.
  std::string manufacturer_ca_pem;
  std::string manufacturer_group;
  // Support periods by model.
  std::map<std::string, ModelSupport> models;
  // The director; without it check-ins answer an empty "director" object.
  std::optional<DirectorOptions> director;
};

// ---- request bodies (exposed for the fuzzer and tests) ----

struct EnrolRequest {
  std::string token;  // empty when the request has none
  std::string model;
  std::string serial;
  std::string csr;
};

struct CheckinRequest {
  std::int64_t counter = 0;
  std::string model;
  std::string hardware;
  std::string components_json;              // canonical JSON of "components"
  std::string policy_json;                  // canonical JSON of "policy" ("{}" when absent)
  std::string update_json;                  // canonical JSON of "update" ("{}" when absent)
  std::uint64_t director_root_version = 0;  // "director"."root_version" (0 when absent)
  std::vector<std::string> installed_targets;  // each component's "target", when not null
};

struct ReportRequest {
  std::string report_id;
  std::string update_id;
  std::string target;
  std::string outcome;
  std::string body_json;  // canonical JSON of the whole request
};

struct IncidentRequest {
  std::string incident_id;
  std::string kind;
  std::string body_json;  // canonical JSON of the whole request
};

// Each fails with metadata::Errc::MalformedJson (not JSON, invalid UTF-8, duplicate key) or
// metadata::Errc::InvalidMetadata (unknown field, missing field, wrong type or value).
[[nodiscard]] Result<EnrolRequest> ParseEnrolRequest(std::string_view body);
[[nodiscard]] Result<CheckinRequest> ParseCheckinRequest(std::string_view body);
[[nodiscard]] Result<ReportRequest> ParseReportRequest(std::string_view body);
[[nodiscard]] Result<IncidentRequest> ParseIncidentRequest(std::string_view body);

// ---- administration (upkeep-server admin ...) ----

struct DeviceRecord {
  std::string id;
  std::string model;
  std::string serial;
  std::string hardware;
  std::string group;
  std::string certificate_serial;
  bool blocked = false;
  std::int64_t enrolled_at = 0;
  std::optional<std::int64_t> last_checkin_at;
  std::int64_t checkin_counter = -1;  // -1: never checked in
};

// A fresh one-time enrolment token for `model` (and `group`), valid until now + `valid_for`.
// Only its SHA-256 is stored: the returned token cannot be shown again.
[[nodiscard]] Result<std::string> CreateEnrolmentToken(storage::Database& db, const Clock& clock,
                                                       const std::string& model,
                                                       const std::string& group,
                                                       std::chrono::seconds valid_for);
[[nodiscard]] Result<std::vector<DeviceRecord>> ListDevices(storage::Database& db);
// Errc::DeviceNotFound when no device has that ID.
[[nodiscard]] Result<void> BlockDevice(storage::Database& db, const std::string& device_id);

// What the director tells one device to install (until campaigns exist): an image-repository
// target by path, length and SHA-256 (64 lowercase hex digits). Assigning a path again replaces
// its length and hash. Errors: DeviceNotFound, InvalidArgument (a path longer than 1024 bytes or
// one metadata::ValidateTargetPath refuses; length 0; malformed hash), database errors.
[[nodiscard]] Result<void> AssignTarget(storage::Database& db, const std::string& device_id,
                                        const std::string& target_path, std::uint64_t length,
                                        const std::string& sha256_hex);
// Removes an assignment. Errors: DeviceNotFound (no such device or no such assignment).
[[nodiscard]] Result<void> UnassignTarget(storage::Database& db, const std::string& device_id,
                                          const std::string& target_path);

// "d-" followed by 16 random lowercase hex digits.
[[nodiscard]] Result<std::string> NewDeviceId();

class Fleet {
 public:
  // Fails (Errc::InvalidDeviceCa) unless the CA certificate and key parse and belong together.
  // `db` and `clock` must outlive the Fleet.
  [[nodiscard]] static Result<std::unique_ptr<Fleet>> Create(storage::Database& db,
                                                             const Clock& clock,
                                                             FleetOptions options);

  // Answers one request; safe to call from several threads.
  [[nodiscard]] Response Handle(const Request& request);
  // Handle as an HttpsServer handler; the Fleet must outlive the server.
  [[nodiscard]] Handler AsHandler();

 private:
  struct Device {
    std::string id;
    std::string model;
  };
  Fleet(storage::Database& db, const Clock& clock, FleetOptions options,
        crypto::x509::TlsKey ca_key, Clock::TimePoint ca_not_after,
        std::optional<metadata::Root> director_root);

  Response Enrol(const Request& request);
  Response EnrolWithManufacturerCertificate(const Request& request, const EnrolRequest& req);
  Response EnrolAnswer(const std::string& device_id, const std::string& certificate_pem);
  Response Checkin(const Request& request, const Device& device);
  struct DirectorAnswer {
    bool not_modified = false;  // the device's copy (If-None-Match) is current: answer 304
    metadata::Json body;        // the answer's "director" object
    std::string etag;
    std::optional<metadata::Json> install_window;
  };
  // The director's answer for one check-in (inside its transaction); stores the new state.
  Result<DirectorAnswer> SignDirector(storage::Tx& tx, const Device& device,
                                      const CheckinRequest& checkin, Clock::TimePoint now,
                                      const std::string& if_none_match);
  Response Report(const Request& request, const Device& device);
  Response Incident(const Request& request, const Device& device);
  Response Support(const Device& device);
  // The device the verified client certificate names, or the error answer.
  Result<Device> Authenticate(const Request& request, Response& refusal);
  // Takes one enrolment attempt from the address's bucket; seconds to wait when empty.
  std::optional<std::int64_t> TakeEnrolAttempt(const std::string& address);

  storage::Database& db_;
  const Clock& clock_;
  FleetOptions options_;
  crypto::x509::TlsKey ca_key_;
  std::optional<metadata::Root> director_root_;  // the current director root, when configured
  std::vector<std::pair<std::uint64_t, std::string>> director_roots_;  // (version, bytes)
  Clock::TimePoint ca_not_after_;

  // Client certificates the device CA is known to have issued (by SHA-256 of the DER): the
  // signature check is done once per certificate, validity at every request.
  struct VerifiedCertificate {
    std::string device_id;
    std::string serial_hex;
    Clock::TimePoint not_before;
    Clock::TimePoint not_after;  // the earlier of the certificate's and the CA's
  };
  std::mutex certificates_mutex_;
  std::unordered_map<std::string, VerifiedCertificate> certificates_;  // guarded by the mutex

  struct Bucket {
    double tokens = 0;
    std::int64_t updated_at = 0;
  };
  std::mutex buckets_mutex_;
  std::unordered_map<std::string, Bucket> buckets_;  // guarded by buckets_mutex_
};

}  // namespace upkeep::server
