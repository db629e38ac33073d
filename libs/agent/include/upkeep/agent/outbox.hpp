#pragma once

// The device's durable outbox for what it tells the fleet server: update reports and incidents
// (EN 303 645 5.3-9: failures reach the manufacturer, not whoever started the update). An entry is
// on disk (fsynced) before Enqueue returns, so a power cut loses nothing; Deliver sends entries
// oldest first and removes each only after the server acknowledged it. The server deduplicates by
// report or incident ID, so an entry sent twice (acknowledged, then a crash before its removal)
// does no harm.
//
// Layout: `dir/<sequence>-<kind>-<id>.json`, one file per entry (kind "report" or "incident"), and
// `dir/rejected/` for entries the server refused for good (kept for diagnosis, never resent).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/filesystem.hpp"
#include "upkeep/common/result.hpp"

namespace upkeep::agent {

enum class OutboxKind { kReport, kIncident };

// Sends one entry's JSON body to the server (deviceapi::DeviceClient::Report or Incident).
class OutboxSender {
 public:
  virtual ~OutboxSender() = default;
  [[nodiscard]] virtual Result<void> Send(OutboxKind kind, std::string_view body) = 0;
  // Whether a failed Send may succeed later (network, timeout, server unavailable, rate limited,
  // authentication). Otherwise the server refused the entry itself and it moves to rejected/.
  [[nodiscard]] virtual bool Retryable(const Error& error) const = 0;
};

struct OutboxOptions {
  // Entries kept at most; when full, the oldest report goes first, then the oldest incident.
  std::size_t max_entries = 1000;
  std::size_t max_entry_bytes = 64 * 1024;
  // After a failed round, the next one waits base * 2^(failures-1), capped.
  std::chrono::seconds retry_base{60};
  std::chrono::seconds retry_max{std::chrono::hours(6)};
};

struct OutboxRound {
  std::size_t delivered = 0;
  std::size_t rejected = 0;
  std::size_t pending = 0;                   // entries still queued
  std::optional<Clock::TimePoint> retry_at;  // set when the round stopped on a retryable error
};

class Outbox {
 public:
  Outbox(std::filesystem::path dir, Filesystem& filesystem, const Clock& clock,
         OutboxOptions options = {});

  // Stores one entry durably. `id` is the report or incident ID ([A-Za-z0-9._-]{1,128}); an ID
  // already queued is not queued again. Errors: common::Errc::InvalidArgument (bad ID, a body
  // over max_entry_bytes), filesystem errors.
  [[nodiscard]] Result<void> Enqueue(OutboxKind kind, std::string_view id, std::string_view body);

  // One delivery round, oldest entry first, unless the backoff of an earlier failed round has not
  // run out (then nothing is sent and retry_at says when). A retryable failure ends the round
  // and keeps the entry; any other failure moves the entry to rejected/ and the round goes on.
  [[nodiscard]] Result<OutboxRound> Deliver(OutboxSender& sender);

  // Entries waiting, oldest first (file names).
  [[nodiscard]] Result<std::vector<std::string>> Pending() const;

 private:
  [[nodiscard]] Result<void> DropOldestIfFull(std::vector<std::string>& names);

  std::filesystem::path dir_;
  Filesystem& fs_;
  const Clock& clock_;
  OutboxOptions options_;
  unsigned failures_ = 0;
  std::optional<Clock::TimePoint> retry_at_;
};

}  // namespace upkeep::agent
