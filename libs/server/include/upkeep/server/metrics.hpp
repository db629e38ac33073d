#pragma once

// Prometheus metrics for the fleet server (docs/server.md, "Metrics"): a small thread-safe
// registry of counters, gauges and histograms, written in the Prometheus text exposition format
// 0.0.4, and the pieces that feed it:
//
// - InstrumentHandler wraps a Handler and counts requests by route and status code, with a
//   latency histogram per route. Routes and codes come from fixed lists (an unknown path is
//   "other"), so no client can create label values: every series exists from the start.
// - Collectors are functions called at scrape time that return samples. FleetCollector reads the
//   database (devices and incidents), so several server processes sharing one database report
//   the same fleet numbers; HttpsStatsCollector reports one process's HttpsServer counters.
//   A new collector is one function returning MetricFamily values.
// - MetricsEndpoint answers GET /metrics to whoever presents the configured bearer token.
//
// Recording a value is lock-free (atomics); the registry's lock is taken only to register a
// metric and to write the exposition.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/result.hpp"
#include "upkeep/server/https_server.hpp"
#include "upkeep/storage/database.hpp"

namespace upkeep::server {

// Label names and values in order, e.g. {{"route", "checkin"}, {"code", "200"}}.
using Labels = std::vector<std::pair<std::string, std::string>>;

enum class MetricType { kCounter, kGauge, kHistogram };

// A monotonic count.
class Counter {
 public:
  void Inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t Value() const noexcept {
    return value_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<std::uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void Add(double v) noexcept;
  [[nodiscard]] double Value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into buckets with fixed upper bounds (seconds, bytes, ...).
class Histogram {
 public:
  // `upper_bounds` strictly increasing and finite; the +Inf bucket is implicit.
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double v) noexcept;

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<std::uint64_t> cumulative;  // per bound, then +Inf (== count)
    double sum = 0;
    std::uint64_t count = 0;
  };
  [[nodiscard]] Snapshot Read() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1, not cumulative
  std::atomic<double> sum_{0};
};

// Latency buckets for requests, 0.5 ms to 5 s (seconds).
[[nodiscard]] std::vector<double> LatencyBuckets();

// What a collector returns: one family (name, help, type) and its samples. Collectors report
// counters and gauges; a sample's labels must use the family's fixed label names.
struct MetricSample {
  Labels labels;
  double value = 0;
};
struct MetricFamily {
  std::string name;
  std::string help;
  MetricType type = MetricType::kGauge;
  std::vector<MetricSample> samples;
};
// Called at each scrape, outside the registry's lock; may block (a database query). A failure
// drops that collector's families from this scrape and sets
// upkeep_metrics_collector_up{collector="NAME"} to 0.
using Collector = std::function<Result<std::vector<MetricFamily>>()>;

class Metrics {
 public:
  Metrics();
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Registers one series. A family is created by its first series; later series of the family
  // must have the same type, help and label names. The returned object lives as long as the
  // registry. Errc::InvalidArgument for a malformed name, a label name that is malformed or
  // reserved ("le", "__*"), a mismatch with the family, or a series registered twice.
  [[nodiscard]] Result<Counter*> AddCounter(std::string_view name, std::string_view help,
                                            Labels labels = {});
  [[nodiscard]] Result<Gauge*> AddGauge(std::string_view name, std::string_view help,
                                        Labels labels = {});
  [[nodiscard]] Result<Histogram*> AddHistogram(std::string_view name, std::string_view help,
                                                std::vector<double> upper_bounds,
                                                Labels labels = {});
  // `name` ([a-z0-9_]+) labels the collector's up gauge. Errc::InvalidArgument when malformed or
  // taken.
  [[nodiscard]] Result<void> AddCollector(std::string name, Collector collector);

  // The text exposition format 0.0.4: registered families in registration order, then each
  // collector's, then upkeep_metrics_collector_up. A collector family whose name is malformed or
  // already used is dropped (and counts as the collector failing).
  [[nodiscard]] std::string Expose() const;

 private:
  struct Series;
  struct Family;
  Result<Series*> Add(std::string_view name, std::string_view help, MetricType type, Labels labels,
                      std::vector<double> bounds);

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Family>> families_;              // guarded by mutex_
  std::vector<std::pair<std::string, Collector>> collectors_;  // guarded by mutex_
};

// The exposition's content type.
inline constexpr const char* kPrometheusContentType = "text/plain; version=0.0.4; charset=utf-8";

// Prometheus's escaping of a label value (\\, \", \n) and of HELP text (\\, \n).
[[nodiscard]] std::string EscapeLabelValue(std::string_view value);
[[nodiscard]] std::string EscapeHelp(std::string_view help);
// A sample value: whole numbers below 1e15 in full, others in the shortest round-trip form
// (%g style: "0.0005", "1e+21"), "+Inf", "-Inf", "NaN".
[[nodiscard]] std::string FormatMetricValue(double v);

// The route label for a request path: "enrol", "checkin", "reports", "incidents", "support",
// "metrics", "repository" (under /repository/) or "other".
[[nodiscard]] std::string_view RouteOf(std::string_view path);

// Wraps `inner`: upkeep_http_requests_total{route,code} and
// upkeep_http_request_duration_seconds{route} (time until the handler returns; a streamed file's
// transfer is not included). Codes outside the fixed list are counted as code="other". Fails
// only when the families are registered already.
[[nodiscard]] Result<Handler> InstrumentHandler(Metrics& metrics, Handler inner);

// Devices (enrolled, blocked, checked in during the last 24 h) and incidents (stored,
// undelivered) from the database, at scrape time. `db` and `clock` must outlive the collector.
[[nodiscard]] Collector FleetCollector(storage::Database& db, const Clock& clock);
// The HttpsServer's counters (connections, handshakes, resumed sessions, requests, rejected
// requests) for this process. `server` must outlive the collector's use.
[[nodiscard]] Collector HttpsStatsCollector(const HttpsServer& server);

// GET /metrics behind a bearer token.
class MetricsEndpoint {
 public:
  // `token_file_text`: the token (surrounding whitespace ignored, at least 16 characters), or
  // "sha256:" and the token's SHA-256 in hex, so the server need not hold the token itself.
  // Errc::InvalidConfig otherwise.
  [[nodiscard]] static Result<std::unique_ptr<MetricsEndpoint>> Create(
      const Metrics& metrics, std::string_view token_file_text);

  // 200 with the exposition when `Authorization: Bearer TOKEN` carries the token (its SHA-256
  // compared in constant time), 401 unauthenticated otherwise, 405 for methods but GET and HEAD.
  [[nodiscard]] Response Handle(const Request& request) const;
  // The endpoint must outlive the handler.
  [[nodiscard]] Handler AsHandler() const;

 private:
  MetricsEndpoint(const Metrics& metrics, std::vector<std::uint8_t> digest)
      : metrics_(metrics), token_sha256_(std::move(digest)) {}
  const Metrics& metrics_;
  std::vector<std::uint8_t> token_sha256_;
};

}  // namespace upkeep::server
