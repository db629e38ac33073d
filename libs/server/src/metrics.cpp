// Prometheus metrics: the registry, the text exposition format 0.0.4, request instrumentation,
// the scrape-time collectors and the bearer-token endpoint (docs/server.md, "Metrics").

#include "upkeep/server/metrics.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <set>

#include "upkeep/common/encoding.hpp"
#include "upkeep/common/log.hpp"
#include "upkeep/crypto/crypto.hpp"

namespace upkeep::server {

namespace {

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool IsMetricName(std::string_view s) {
  if (s.empty() || IsDigit(s[0])) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return IsAlpha(c) || IsDigit(c) || c == '_' || c == ':'; });
}

// [a-zA-Z_][a-zA-Z0-9_]*, not reserved ("__" prefix, "le" of histogram buckets).
bool IsLabelName(std::string_view s) {
  if (s.empty() || IsDigit(s[0]) || s.starts_with("__") || s == "le") return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return IsAlpha(c) || IsDigit(c) || c == '_'; });
}

bool ValidLabels(const Labels& labels) {
  std::set<std::string_view> seen;
  for (const auto& [name, value] : labels) {
    if (!IsLabelName(name) || !seen.insert(name).second) return false;
  }
  return true;
}

std::vector<std::string> LabelNames(const Labels& labels) {
  std::vector<std::string> names;
  names.reserve(labels.size());
  for (const auto& kv : labels) names.push_back(kv.first);
  return names;
}

const char* TypeName(MetricType t) {
  switch (t) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// {a="x",b="y"} with `extra` appended (the histogram's le); nothing when there are no labels.
void AppendLabels(std::string& out, const Labels& labels, std::string_view extra_name = {},
                  std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return;
  out += '{';
  bool first = true;
  auto one = [&](std::string_view name, std::string_view value) {
    if (!first) out += ',';
    first = false;
    out += name;
    out += "=\"";
    out += EscapeLabelValue(value);
    out += '"';
  };
  for (const auto& [name, value] : labels) one(name, value);
  if (!extra_name.empty()) one(extra_name, extra_value);
  out += '}';
}

void AppendHeader(std::string& out, std::string_view name, std::string_view help, MetricType t) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += EscapeHelp(help);
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += TypeName(t);
  out += '\n';
}

void AppendSample(std::string& out, std::string_view name, const Labels& labels,
                  const std::string& value, std::string_view extra_name = {},
                  std::string_view extra_value = {}) {
  out += name;
  AppendLabels(out, labels, extra_name, extra_value);
  out += ' ';
  out += value;
  out += '\n';
}

}  // namespace

// ---- values ----

void Gauge::Add(double v) noexcept { value_.fetch_add(v, std::memory_order_relaxed); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::Observe(double v) noexcept {
  // The first bound not below v (le: less than or equal); NaN lands in +Inf.
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  const auto i = std::isnan(v) ? bounds_.size() : static_cast<std::size_t>(it - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  s.count = running;  // so that the +Inf bucket and _count always agree
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
}

// ---- text format ----

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatMetricValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Whole numbers (device counts) in full: "1234567", not "1.234567e+06".
  if (std::fabs(v) < 1e15 && v == std::trunc(v)) {
    return std::to_string(static_cast<std::int64_t>(v));
  }
  std::array<char, 64> buf{};
  // Shortest round trip, fixed or scientific as printf's %g would choose: "0.0005", "1e+21".
  const auto [end, ec] =
      std::to_chars(buf.data(), buf.data() + buf.size(), v, std::chars_format::general);
  if (ec != std::errc()) return "NaN";
  return std::string(buf.data(), end);
}

// ---- registry ----

struct Metrics::Series {
  Labels labels;
  std::unique_ptr<Counter> counter;
  std::unique_ptr<Gauge> gauge;
  std::unique_ptr<Histogram> histogram;
};

struct Metrics::Family {
  std::string name;
  std::string help;
  MetricType type = MetricType::kCounter;
  std::vector<std::string> label_names;
  std::vector<double> bounds;
  std::vector<std::unique_ptr<Series>> series;
};

Metrics::Metrics() = default;
Metrics::~Metrics() = default;

Result<Metrics::Series*> Metrics::Add(std::string_view name, std::string_view help, MetricType type,
                                      Labels labels, std::vector<double> bounds) {
  if (!IsMetricName(name)) {
    return Error(Errc::InvalidArgument, "metric name " + std::string(name) + " is malformed");
  }
  if (!ValidLabels(labels)) {
    return Error(Errc::InvalidArgument, "metric " + std::string(name) + ": bad label names");
  }
  if (type == MetricType::kHistogram) {
    for (std::size_t i = 0; i < bounds.size(); ++i) {
      if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
        return Error(Errc::InvalidArgument,
                     "histogram " + std::string(name) + ": bounds must increase and be finite");
      }
    }
  }
  std::lock_guard lock(mutex_);
  Family* family = nullptr;
  for (auto& f : families_) {
    if (f->name == name) family = f.get();
  }
  if (family == nullptr) {
    auto f = std::make_unique<Family>();
    f->name = std::string(name);
    f->help = std::string(help);
    f->type = type;
    f->label_names = LabelNames(labels);
    f->bounds = bounds;
    families_.push_back(std::move(f));
    family = families_.back().get();
  } else if (family->type != type || family->help != help ||
             family->label_names != LabelNames(labels) || family->bounds != bounds) {
    return Error(Errc::InvalidArgument,
                 "metric " + std::string(name) + " is registered with another type or labels");
  }
  for (const auto& s : family->series) {
    if (s->labels == labels) {
      return Error(Errc::InvalidArgument,
                   "metric " + std::string(name) + ": this series is registered already");
    }
  }
  auto series = std::make_unique<Series>();
  series->labels = std::move(labels);
  switch (type) {
    case MetricType::kCounter:
      series->counter = std::make_unique<Counter>();
      break;
    case MetricType::kGauge:
      series->gauge = std::make_unique<Gauge>();
      break;
    case MetricType::kHistogram:
      series->histogram = std::make_unique<Histogram>(std::move(bounds));
      break;
  }
  family->series.push_back(std::move(series));
  return family->series.back().get();
}

Result<Counter*> Metrics::AddCounter(std::string_view name, std::string_view help, Labels labels) {
  UPKEEP_ASSIGN_OR_RETURN(Series * s, Add(name, help, MetricType::kCounter, std::move(labels), {}));
  return s->counter.get();
}

Result<Gauge*> Metrics::AddGauge(std::string_view name, std::string_view help, Labels labels) {
  UPKEEP_ASSIGN_OR_RETURN(Series * s, Add(name, help, MetricType::kGauge, std::move(labels), {}));
  return s->gauge.get();
}

Result<Histogram*> Metrics::AddHistogram(std::string_view name, std::string_view help,
                                         std::vector<double> upper_bounds, Labels labels) {
  UPKEEP_ASSIGN_OR_RETURN(Series * s, Add(name, help, MetricType::kHistogram, std::move(labels),
                                          std::move(upper_bounds)));
  return s->histogram.get();
}

Result<void> Metrics::AddCollector(std::string name, Collector collector) {
  const bool ok = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || IsDigit(c) || c == '_';
  });
  if (!ok || !collector) return Error(Errc::InvalidArgument, "collector name " + name);
  std::lock_guard lock(mutex_);
  for (const auto& [n, c] : collectors_) {
    if (n == name) return Error(Errc::InvalidArgument, "collector " + name + " exists already");
  }
  collectors_.emplace_back(std::move(name), std::move(collector));
  return Ok();
}

namespace {

constexpr std::string_view kCollectorUp = "upkeep_metrics_collector_up";

// A collector's families, checked: names well-formed and not taken, counters and gauges only,
// label names well-formed.
bool AcceptableFamilies(const std::vector<MetricFamily>& families, std::set<std::string>& taken) {
  std::set<std::string> mine;
  for (const MetricFamily& f : families) {
    if (!IsMetricName(f.name) || taken.contains(f.name) || !mine.insert(f.name).second) {
      return false;
    }
    if (f.type == MetricType::kHistogram) return false;
    for (const MetricSample& s : f.samples) {
      if (!ValidLabels(s.labels)) return false;
    }
  }
  taken.insert(mine.begin(), mine.end());
  return true;
}

}  // namespace

std::string Metrics::Expose() const {
  std::string out;
  std::set<std::string> taken{std::string(kCollectorUp)};
  std::vector<std::pair<std::string, Collector>> collectors;
  {
    std::lock_guard lock(mutex_);
    for (const auto& f : families_) {
      taken.insert(f->name);
      if (f->series.empty()) continue;
      AppendHeader(out, f->name, f->help, f->type);
      for (const auto& s : f->series) {
        switch (f->type) {
          case MetricType::kCounter:
            AppendSample(out, f->name, s->labels, std::to_string(s->counter->Value()));
            break;
          case MetricType::kGauge:
            AppendSample(out, f->name, s->labels, FormatMetricValue(s->gauge->Value()));
            break;
          case MetricType::kHistogram: {
            const Histogram::Snapshot h = s->histogram->Read();
            const std::string bucket = f->name + "_bucket";
            for (std::size_t i = 0; i < h.upper_bounds.size(); ++i) {
              AppendSample(out, bucket, s->labels, std::to_string(h.cumulative[i]), "le",
                           FormatMetricValue(h.upper_bounds[i]));
            }
            AppendSample(out, bucket, s->labels, std::to_string(h.count), "le", "+Inf");
            AppendSample(out, f->name + "_sum", s->labels, FormatMetricValue(h.sum));
            AppendSample(out, f->name + "_count", s->labels, std::to_string(h.count));
            break;
          }
        }
      }
    }
    collectors = collectors_;
  }
  // Collectors may block (database queries): they run without the lock.
  std::vector<std::pair<std::string, bool>> up;
  for (const auto& [name, collect] : collectors) {
    Result<std::vector<MetricFamily>> families = collect();
    if (!families) {
      log::warn("metrics: collector {} failed: {}", name, families.error().ToString());
      up.emplace_back(name, false);
      continue;
    }
    if (!AcceptableFamilies(*families, taken)) {
      log::warn("metrics: collector {} returned a malformed or duplicate family", name);
      up.emplace_back(name, false);
      continue;
    }
    up.emplace_back(name, true);
    for (const MetricFamily& f : *families) {
      if (f.samples.empty()) continue;
      AppendHeader(out, f.name, f.help, f.type);
      for (const MetricSample& s : f.samples) {
        AppendSample(out, f.name, s.labels, FormatMetricValue(s.value));
      }
    }
  }
  if (!up.empty()) {
    AppendHeader(out, kCollectorUp,
                 "Whether the collector answered at this scrape (1) or failed (0).",
                 MetricType::kGauge);
    for (const auto& [name, ok] : up) {
      AppendSample(out, kCollectorUp, {{"collector", name}}, ok ? "1" : "0");
    }
  }
  return out;
}

// ---- request instrumentation ----

namespace {

constexpr std::array<std::string_view, 8> kRoutes = {
    "enrol", "checkin", "reports", "incidents", "support", "metrics", "repository", "other"};
constexpr std::array<unsigned, 15> kCodes = {200, 202, 206, 304, 400, 401, 403, 404,
                                             405, 409, 413, 416, 429, 500, 503};
constexpr std::size_t kOtherRoute = kRoutes.size() - 1;
constexpr std::size_t kOtherCode = kCodes.size();

std::size_t RouteIndex(std::string_view path) {
  const std::string_view route = RouteOf(path);
  for (std::size_t i = 0; i < kRoutes.size(); ++i) {
    if (kRoutes[i] == route) return i;
  }
  return kOtherRoute;
}

std::size_t CodeIndex(unsigned code) {
  for (std::size_t i = 0; i < kCodes.size(); ++i) {
    if (kCodes[i] == code) return i;
  }
  return kOtherCode;
}

struct Instruments {
  std::array<std::array<Counter*, kCodes.size() + 1>, kRoutes.size()> requests{};
  std::array<Histogram*, kRoutes.size()> latency{};

  void Record(std::size_t route, unsigned code, std::chrono::steady_clock::time_point start) const {
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    requests[route][CodeIndex(code)]->Inc();
    latency[route]->Observe(took.count());
  }
};

}  // namespace

std::string_view RouteOf(std::string_view path) {
  if (path.starts_with("/api/v1/")) {
    const std::string_view rest = path.substr(8);
    for (std::string_view r : {"enrol", "checkin", "reports", "incidents", "support"}) {
      if (rest == r) return r;
    }
    return "other";
  }
  if (path == "/metrics") return "metrics";
  if (path.starts_with("/repository/")) return "repository";
  return "other";
}

Result<Handler> InstrumentHandler(Metrics& metrics, Handler inner) {
  auto in = std::make_shared<Instruments>();
  for (std::size_t r = 0; r < kRoutes.size(); ++r) {
    for (std::size_t c = 0; c <= kCodes.size(); ++c) {
      const std::string code = c == kOtherCode ? "other" : std::to_string(kCodes[c]);
      UPKEEP_ASSIGN_OR_RETURN(
          in->requests[r][c],
          metrics.AddCounter("upkeep_http_requests_total",
                             "HTTP requests answered, by route and status code.",
                             {{"route", std::string(kRoutes[r])}, {"code", code}}));
    }
  }
  for (std::size_t r = 0; r < kRoutes.size(); ++r) {
    UPKEEP_ASSIGN_OR_RETURN(
        in->latency[r],
        metrics.AddHistogram("upkeep_http_request_duration_seconds",
                             "Time to answer a request (until its body starts), by route.",
                             LatencyBuckets(), {{"route", std::string(kRoutes[r])}}));
  }
  return Handler([in, inner = std::move(inner)](const Request& request) {
    const std::size_t route = RouteIndex(request.path);
    const auto start = std::chrono::steady_clock::now();
    // A handler that throws is answered 500 by the front end: count it so.
    struct OnThrow {
      const Instruments& in;
      std::size_t route;
      std::chrono::steady_clock::time_point start;
      bool answered = false;
      ~OnThrow() {
        if (!answered) in.Record(route, 500, start);
      }
    } guard{*in, route, start};
    Response response = inner(request);
    guard.answered = true;
    in->Record(route, response.status, start);
    return response;
  });
}

// ---- collectors ----

Collector FleetCollector(storage::Database& db, const Clock& clock) {
  return [&db, &clock]() -> Result<std::vector<MetricFamily>> {
    const std::int64_t day_ago = (clock.Now() - std::chrono::hours(24)).time_since_epoch().count();
    UPKEEP_ASSIGN_OR_RETURN(storage::Rows rows,
                            db.Query("SELECT (SELECT COUNT(*) FROM devices), "
                                     "(SELECT COUNT(*) FROM devices WHERE blocked <> 0), "
                                     "(SELECT COUNT(*) FROM devices WHERE last_checkin_at >= $1), "
                                     "(SELECT COUNT(*) FROM incidents), "
                                     "(SELECT COUNT(*) FROM incidents WHERE delivered_at IS NULL)",
                                     {day_ago}));
    if (rows.size() != 1) return Error(Errc::InvalidArgument, "fleet counts: no row");
    std::array<double, 5> v{};
    for (std::size_t i = 0; i < v.size(); ++i) {
      UPKEEP_ASSIGN_OR_RETURN(std::int64_t n, rows[0].Get<std::int64_t>(i));
      v[i] = static_cast<double>(n);
    }
    auto gauge = [](const char* name, const char* help, double value) {
      return MetricFamily{name, help, MetricType::kGauge, {{{}, value}}};
    };
    return std::vector<MetricFamily>{
        gauge("upkeep_devices", "Enrolled devices.", v[0]),
        gauge("upkeep_devices_blocked", "Blocked devices.", v[1]),
        gauge("upkeep_devices_checked_in_24h", "Devices that checked in during the last 24 hours.",
              v[2]),
        gauge("upkeep_incidents", "Incidents stored.", v[3]),
        gauge("upkeep_incidents_undelivered", "Incidents not yet delivered to administrators.",
              v[4]),
    };
  };
}

Collector HttpsStatsCollector(const HttpsServer& server) {
  return [&server]() -> Result<std::vector<MetricFamily>> {
    const ServerStats s = server.stats();
    auto counter = [](const char* name, const char* help, std::uint64_t value) {
      return MetricFamily{name, help, MetricType::kCounter, {{{}, static_cast<double>(value)}}};
    };
    return std::vector<MetricFamily>{
        counter("upkeep_https_connections_total", "TCP connections accepted by this process.",
                s.connections),
        counter("upkeep_https_handshakes_total", "TLS handshakes completed by this process.",
                s.handshakes),
        counter("upkeep_https_resumed_sessions_total",
                "TLS handshakes that resumed an earlier session.", s.resumed_sessions),
        counter("upkeep_https_requests_total", "HTTP requests read by this process.", s.requests),
        counter("upkeep_https_rejected_requests_total",
                "Requests refused as malformed or over a limit before reaching a handler.",
                s.rejected_requests),
    };
  };
}

// ---- GET /metrics ----

namespace {

constexpr std::size_t kMinTokenLength = 16;

std::string_view Trim(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

Response Refuse(unsigned status, const char* code, const char* message) {
  Response r;
  r.status = status;
  r.body = std::string("{\"error\":\"") + code + "\",\"message\":\"" + message + "\"}";
  return r;
}

}  // namespace

Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Create(const Metrics& metrics,
                                                                 std::string_view token_file_text) {
  const std::string_view text = Trim(token_file_text);
  std::vector<std::uint8_t> digest;
  if (text.starts_with("sha256:")) {
    auto bytes = HexDecode(text.substr(7));
    if (!bytes || bytes->size() != 32) {
      return Error(Errc::InvalidConfig, "metrics token: sha256: needs 64 hex digits");
    }
    digest = std::move(*bytes);
  } else {
    if (text.size() < kMinTokenLength) {
      return Error(Errc::InvalidConfig, "metrics token: must have at least 16 characters");
    }
    for (char c : text) {
      if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
        return Error(Errc::InvalidConfig, "metrics token: printable ASCII without spaces only");
      }
    }
    digest = crypto::Sha256(text);
  }
  return std::unique_ptr<MetricsEndpoint>(new MetricsEndpoint(metrics, std::move(digest)));
}

Response MetricsEndpoint::Handle(const Request& request) const {
  if (request.method != "GET" && request.method != "HEAD") {
    Response r = Refuse(405, "method_not_allowed", "use GET");
    r.headers.emplace_back("Allow", "GET, HEAD");
    return r;
  }
  const std::string authorization = request.Header("authorization");
  constexpr std::string_view kScheme = "bearer ";
  bool bearer = authorization.size() > kScheme.size();
  for (std::size_t i = 0; bearer && i < kScheme.size(); ++i) {
    const char c = authorization[i];
    bearer = (c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) == kScheme[i];
  }
  const std::vector<std::uint8_t> presented = crypto::Sha256(
      bearer ? Trim(std::string_view(authorization).substr(kScheme.size())) : std::string_view());
  // Comparing digests of equal length: the time says nothing about the token.
  if (!bearer || !crypto::ConstantTimeEqual(presented, token_sha256_)) {
    Response r = Refuse(401, "unauthenticated", "a valid bearer token is required");
    r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"upkeep-metrics\"");
    return r;
  }
  Response r;
  r.content_type = kPrometheusContentType;
  r.body = metrics_.Expose();
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

Handler MetricsEndpoint::AsHandler() const {
  return [this](const Request& r) { return Handle(r); };
}

}  // namespace upkeep::server
