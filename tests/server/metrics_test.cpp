// Prometheus metrics (docs/server.md, "Metrics"): the text exposition format 0.0.4 byte for byte,
// label escaping, histogram buckets, collectors, the request instrumentation, the fleet numbers
// read from the database, and GET /metrics behind its bearer token on a real HttpsServer
// (127.0.0.1 port 0, libcurl).

#include "upkeep/server/metrics.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <limits>
#include <stdexcept>

#include "test_util.hpp"
#include "https_client.hpp"
#include "postgresql_env.hpp"
#include "temp_dir.hpp"
#include "test_pki.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/server/fleet.hpp"
#include "upkeep/server/router.hpp"

namespace upkeep::server {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

TEST(MetricsTest, WritesTheTextFormatExactly) {
  Metrics m;
  Counter* jobs = m.AddCounter("jobs_total", "Jobs done.", {{"kind", "a"}}).value();
  Counter* jobs_b = m.AddCounter("jobs_total", "Jobs done.", {{"kind", "b"}}).value();
  Gauge* temperature = m.AddGauge("temperature", "Line one\nback\\slash \"quoted\"").value();
  Histogram* latency = m.AddHistogram("latency_seconds", "Latency.", {0.5, 1}).value();
  jobs->Inc(3);
  jobs_b->Inc();
  temperature->Set(-1.5);
  latency->Observe(0.25);
  latency->Observe(0.5);  // le: a value on the bound counts in that bucket
  latency->Observe(3);
  EXPECT_EQ(m.Expose(),
            "# HELP jobs_total Jobs done.\n"
            "# TYPE jobs_total counter\n"
            "jobs_total{kind=\"a\"} 3\n"
            "jobs_total{kind=\"b\"} 1\n"
            "# HELP temperature Line one\\nback\\\\slash \"quoted\"\n"
            "# TYPE temperature gauge\n"
            "temperature -1.5\n"
            "# HELP latency_seconds Latency.\n"
            "# TYPE latency_seconds histogram\n"
            "latency_seconds_bucket{le=\"0.5\"} 2\n"
            "latency_seconds_bucket{le=\"1\"} 2\n"
            "latency_seconds_bucket{le=\"+Inf\"} 3\n"
            "latency_seconds_sum 3.75\n"
            "latency_seconds_count 3\n");
}

TEST(MetricsTest, EscapesLabelValues) {
  EXPECT_EQ(EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  EXPECT_EQ(EscapeHelp("a\"b\\c\nd"), "a\"b\\\\c\\nd");
  Metrics m;
  Gauge* g = m.AddGauge("g", "G.", {{"path", "x\"}\n# TYPE evil counter"}}).value();
  g->Set(1);
  EXPECT_EQ(m.Expose(),
            "# HELP g G.\n# TYPE g gauge\ng{path=\"x\\\"}\\n# TYPE evil counter\"} 1\n");
}

TEST(MetricsTest, HistogramBucketsAreCumulativeWithLabelsAndLe) {
  Metrics m;
  Histogram* h =
      m.AddHistogram("request_seconds", "R.", LatencyBuckets(), {{"route", "checkin"}}).value();
  h->Observe(0.0001);  // first bucket
  h->Observe(0.003);   // le 0.005
  h->Observe(0.003);
  h->Observe(4.9);  // le 5
  h->Observe(60);   // +Inf only
  const Histogram::Snapshot s = h->Read();
  ASSERT_EQ(s.upper_bounds, LatencyBuckets());
  EXPECT_EQ(s.upper_bounds.front(), 0.0005);
  EXPECT_EQ(s.upper_bounds.back(), 5);
  ASSERT_EQ(s.cumulative.size(), s.upper_bounds.size() + 1);
  EXPECT_EQ(s.cumulative[0], 1u);                          // le 0.0005
  EXPECT_EQ(s.cumulative[2], 1u);                          // le 0.0025
  EXPECT_EQ(s.cumulative[3], 3u);                          // le 0.005
  EXPECT_EQ(s.cumulative[s.upper_bounds.size() - 1], 4u);  // le 5
  EXPECT_EQ(s.cumulative.back(), 5u);
  EXPECT_EQ(s.count, 5u);
  const std::string text = m.Expose();
  EXPECT_NE(text.find("request_seconds_bucket{route=\"checkin\",le=\"0.0005\"} 1\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("request_seconds_bucket{route=\"checkin\",le=\"0.005\"} 3\n"),
            std::string::npos);
  EXPECT_NE(text.find("request_seconds_bucket{route=\"checkin\",le=\"+Inf\"} 5\n"),
            std::string::npos);
  EXPECT_NE(text.find("request_seconds_count{route=\"checkin\"} 5\n"), std::string::npos);
  EXPECT_NE(text.find("request_seconds_sum{route=\"checkin\"} "), std::string::npos);
}

TEST(MetricsTest, FormatsValuesAsPrometheusDoes) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(2.5), "2.5");
  EXPECT_EQ(FormatMetricValue(1e21), "1e+21");
  EXPECT_EQ(FormatMetricValue(0.0005), "0.0005");
  EXPECT_EQ(FormatMetricValue(1234567), "1234567");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
}

TEST(MetricsTest, RefusesMalformedOrConflictingRegistrations) {
  Metrics m;
  EXPECT_ERRC(m.AddCounter("bad name", "x"), Errc::InvalidArgument);
  EXPECT_ERRC(m.AddCounter("1st", "x"), Errc::InvalidArgument);
  EXPECT_ERRC(m.AddCounter("ok_total", "x", {{"le", "1"}}), Errc::InvalidArgument);
  EXPECT_ERRC(m.AddCounter("ok_total", "x", {{"__name", "1"}}), Errc::InvalidArgument);
  EXPECT_ERRC(m.AddCounter("ok_total", "x", {{"a", "1"}, {"a", "2"}}), Errc::InvalidArgument);
  ASSERT_TRUE(m.AddCounter("ok_total", "x", {{"a", "1"}}));
  EXPECT_ERRC(m.AddCounter("ok_total", "x", {{"a", "1"}}), Errc::InvalidArgument);  // twice
  EXPECT_ERRC(m.AddGauge("ok_total", "x", {{"a", "2"}}), Errc::InvalidArgument);    // type
  EXPECT_ERRC(m.AddCounter("ok_total", "x", {{"b", "2"}}), Errc::InvalidArgument);  // labels
  EXPECT_ERRC(m.AddHistogram("h", "x", {1, 1}), Errc::InvalidArgument);
  EXPECT_ERRC(m.AddCollector("Bad-Name", [] { return Result<std::vector<MetricFamily>>(); }),
              Errc::InvalidArgument);
  ASSERT_TRUE(m.AddCollector("c", [] { return Result<std::vector<MetricFamily>>(); }));
  EXPECT_ERRC(m.AddCollector("c", [] { return Result<std::vector<MetricFamily>>(); }),
              Errc::InvalidArgument);
}

// A failing or misbehaving collector loses its families for that scrape and shows as down; the
// others are still written.
TEST(MetricsTest, CollectorsRunAtScrapeTimeAndReportWhetherTheyAnswered) {
  Metrics m;
  ASSERT_TRUE(m.AddCounter("own_total", "Own."));
  int calls = 0;
  ASSERT_TRUE(m.AddCollector("good", [&]() -> Result<std::vector<MetricFamily>> {
    ++calls;
    return std::vector<MetricFamily>{{"campaign_devices",
                                      "Devices per phase.",
                                      MetricType::kGauge,
                                      {{{{"phase", "1"}}, 10}, {{{"phase", "2"}}, 90}}}};
  }));
  ASSERT_TRUE(m.AddCollector("failing", []() -> Result<std::vector<MetricFamily>> {
    return Error(storage::Errc::Unavailable, "database down");
  }));
  ASSERT_TRUE(m.AddCollector("duplicate", []() -> Result<std::vector<MetricFamily>> {
    return std::vector<MetricFamily>{{"own_total", "Clash.", MetricType::kCounter, {{{}, 1}}}};
  }));
  const std::string text = m.Expose();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(text,
            "# HELP own_total Own.\n"
            "# TYPE own_total counter\n"
            "own_total 0\n"
            "# HELP campaign_devices Devices per phase.\n"
            "# TYPE campaign_devices gauge\n"
            "campaign_devices{phase=\"1\"} 10\n"
            "campaign_devices{phase=\"2\"} 90\n"
            "# HELP upkeep_metrics_collector_up Whether the collector answered at this scrape (1) "
            "or failed (0).\n"
            "# TYPE upkeep_metrics_collector_up gauge\n"
            "upkeep_metrics_collector_up{collector=\"good\"} 1\n"
            "upkeep_metrics_collector_up{collector=\"failing\"} 0\n"
            "upkeep_metrics_collector_up{collector=\"duplicate\"} 0\n");
  (void)m.Expose();
  EXPECT_EQ(calls, 2);
}

TEST(MetricsTest, RoutesComeFromAFixedList) {
  EXPECT_EQ(RouteOf("/api/v1/checkin"), "checkin");
  EXPECT_EQ(RouteOf("/api/v1/enrol"), "enrol");
  EXPECT_EQ(RouteOf("/api/v1/reports"), "reports");
  EXPECT_EQ(RouteOf("/api/v1/incidents"), "incidents");
  EXPECT_EQ(RouteOf("/api/v1/support"), "support");
  EXPECT_EQ(RouteOf("/metrics"), "metrics");
  EXPECT_EQ(RouteOf("/repository/metadata/timestamp.json"), "repository");
  EXPECT_EQ(RouteOf("/api/v1/checkin/x"), "other");
  EXPECT_EQ(RouteOf("/api/v1/"), "other");
  EXPECT_EQ(RouteOf("/repository"), "other");
  EXPECT_EQ(RouteOf("/anything-a-client-invents"), "other");
}

// Requests count by route and code; a handler that throws counts as 500.
TEST(MetricsTest, InstrumentHandlerCountsRequestsAndLatency) {
  Metrics m;
  auto handler = InstrumentHandler(m, [](const Request& r) -> Response {
    if (r.path == "/api/v1/reports") throw std::runtime_error("boom");
    Response res;
    res.status = r.path == "/api/v1/checkin" ? 200 : 418;
    return res;
  });
  ASSERT_TRUE(handler) << handler.error().ToString();
  Request req;
  req.method = "POST";
  req.path = "/api/v1/checkin";
  for (int i = 0; i < 3; ++i) EXPECT_EQ((*handler)(req).status, 200u);
  req.path = "/invented/path\"label";
  EXPECT_EQ((*handler)(req).status, 418u);
  req.path = "/api/v1/reports";
  EXPECT_THROW((void)(*handler)(req), std::runtime_error);
  const std::string text = m.Expose();
  EXPECT_NE(text.find("upkeep_http_requests_total{route=\"checkin\",code=\"200\"} 3\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("upkeep_http_requests_total{route=\"other\",code=\"other\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("upkeep_http_requests_total{route=\"reports\",code=\"500\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("upkeep_http_request_duration_seconds_count{route=\"checkin\"} 3\n"),
            std::string::npos);
  EXPECT_EQ(text.find("invented"), std::string::npos);  // no label value from the client
  // Registering twice on one registry fails rather than mixing two handlers' counts.
  EXPECT_ERRC(InstrumentHandler(m, [](const Request&) { return Response{}; }),
              Errc::InvalidArgument);
}

// Devices and incidents are read from the database at each scrape.
void CheckFleetCollector(storage::Database& db) {
  ASSERT_TRUE(MigrateFleetSchema(db));
  FakeClock clock(Clock::TimePoint(std::chrono::seconds(1'800'000'000)));
  const std::int64_t now = 1'800'000'000;
  auto device = [&](const char* id, std::int64_t blocked, std::optional<std::int64_t> checkin) {
    storage::Value last = checkin ? storage::Value(*checkin) : storage::Value(nullptr);
    ASSERT_TRUE(
        db.Exec("INSERT INTO devices (id, model, serial, certificate_serial, blocked, enrolled_at, "
                "last_checkin_at) VALUES ($1, 'm', 's', $1, $2, 0, $3)",
                {std::string(id), blocked, last}));
  };
  device("d-1", 0, now - 60);
  device("d-2", 1, now - 3 * 86400);
  device("d-3", 0, std::nullopt);
  device("d-4", 0, now - 86400 + 1);
  for (const char* id : {"i-1", "i-2", "i-3"}) {
    ASSERT_TRUE(
        db.Exec("INSERT INTO incidents (incident_id, device_id, kind, body, received_at, "
                "next_attempt_at) VALUES ($1, 'd-1', 'k', '{}', 0, 0)",
                {std::string(id)}));
  }
  ASSERT_TRUE(db.Exec("UPDATE incidents SET delivered_at = 5 WHERE incident_id = 'i-1'"));
  Metrics m;
  ASSERT_TRUE(m.AddCollector("fleet", FleetCollector(db, clock)));
  const std::string text = m.Expose();
  EXPECT_NE(text.find("\nupkeep_devices 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nupkeep_devices_blocked 1\n"), std::string::npos);
  EXPECT_NE(text.find("\nupkeep_devices_checked_in_24h 2\n"), std::string::npos);
  EXPECT_NE(text.find("\nupkeep_incidents 3\n"), std::string::npos);
  EXPECT_NE(text.find("\nupkeep_incidents_undelivered 2\n"), std::string::npos);
  EXPECT_NE(text.find("upkeep_metrics_collector_up{collector=\"fleet\"} 1\n"), std::string::npos);
  clock.Advance(std::chrono::hours(24));
  EXPECT_NE(m.Expose().find("\nupkeep_devices_checked_in_24h 0\n"), std::string::npos);
}

TEST(MetricsTest, FleetCollectorReadsDevicesAndIncidentsFromTheDatabase) {
  testing::TempDir dir;
  auto db = storage::OpenDatabase("sqlite:" + (dir.path() / "fleet.db").string());
  ASSERT_TRUE(db) << db.error().ToString();
  CheckFleetCollector(**db);
}

// The same against PostgreSQL (ctest MetricsPostgresql runs it under pg_virtualenv), in a
// schema of its own.
TEST(MetricsPostgresqlTest, FleetCollectorReadsDevicesAndIncidentsFromTheDatabase) {
  const auto base = upkeep::testing::PostgresqlBaseUrl();
  if (!base) GTEST_SKIP() << "no PostgreSQL server: run under pg_virtualenv";
  const std::string schema = "metrics_test_" + std::to_string(::getpid());
  auto admin = storage::OpenDatabase(*base);
  ASSERT_TRUE(admin) << admin.error().ToString();
  ASSERT_TRUE((*admin)->Exec("CREATE SCHEMA " + schema));
  {
    auto db = storage::OpenDatabase(*base + (base->find('?') == std::string::npos ? "?" : "&") +
                                    "options=-csearch_path%3D" + schema);
    ASSERT_TRUE(db) << db.error().ToString();
    CheckFleetCollector(**db);
  }
  EXPECT_TRUE((*admin)->Exec("DROP SCHEMA " + schema + " CASCADE"));
}

TEST(MetricsTest, TokenFileMustHoldAUsableToken) {
  Metrics m;
  EXPECT_ERRC(MetricsEndpoint::Create(m, ""), Errc::InvalidConfig);
  EXPECT_ERRC(MetricsEndpoint::Create(m, "short\n"), Errc::InvalidConfig);
  EXPECT_ERRC(MetricsEndpoint::Create(m, "has a space inside it"), Errc::InvalidConfig);
  EXPECT_ERRC(MetricsEndpoint::Create(m, "sha256:abcd"), Errc::InvalidConfig);
  EXPECT_TRUE(MetricsEndpoint::Create(m, "0123456789abcdef0123\n"));
  EXPECT_TRUE(MetricsEndpoint::Create(
      m, "sha256:" + HexEncode(crypto::Sha256("0123456789abcdef0123")) + "\n"));
}

// /metrics over HTTPS: the bearer token is required, and the numbers reflect the requests the
// same server answered.
class MetricsEndpointTest : public ::testing::Test {
 protected:
  static constexpr const char* kToken = "s3cret-scrape-token-0123456789";

  void Start(std::string_view token_file_text) {
    std::ofstream(dir_.path() / "ca.pem") << pki_.server_ca.certificate_pem;
    auto endpoint = MetricsEndpoint::Create(metrics_, token_file_text);
    ASSERT_TRUE(endpoint) << endpoint.error().ToString();
    endpoint_ = std::move(*endpoint);
    Routes routes;
    routes.metrics = endpoint_->AsHandler();
    routes.fallback = [](const Request& r) {
      Response res;
      res.status = r.path == "/api/v1/support" ? 200 : 404;
      return res;
    };
    auto handler = InstrumentHandler(metrics_, Route(std::move(routes)));
    ASSERT_TRUE(handler);
    HttpsOptions o;
    o.certificate_pem = pki_.server.certificate_pem;
    o.private_key_pem = pki_.server.key_pem;
    o.client_ca_pem = pki_.device_ca.certificate_pem;
    auto s = HttpsServer::Start(o, std::move(*handler));
    ASSERT_TRUE(s) << s.error().ToString();
    server_ = std::move(*s);
    ASSERT_TRUE(metrics_.AddCollector("https", HttpsStatsCollector(*server_)));
  }
  void TearDown() override {
    if (server_) server_->Stop(1s);
  }

  upkeep::testing::HttpsReply Get(const std::string& path, std::vector<std::string> headers = {}) {
    upkeep::testing::HttpsCall call;
    call.path = path;
    call.headers = std::move(headers);
    return upkeep::testing::CallHttps(server_->port(), (dir_.path() / "ca.pem").string(), call);
  }

  upkeep::testing::TestPki pki_;
  testing::TempDir dir_;
  Metrics metrics_;
  std::unique_ptr<MetricsEndpoint> endpoint_;
  std::unique_ptr<HttpsServer> server_;
};

// Without the token, or with another one, /metrics is 401 and shows nothing.
TEST_F(MetricsEndpointTest, RequiresTheBearerToken) {
  Start(std::string(kToken) + "\n");
  auto r = Get("/metrics");
  ASSERT_EQ(r.code, CURLE_OK) << curl_easy_strerror(r.code);
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.Header("www-authenticate"), "Bearer realm=\"upkeep-metrics\"");
  EXPECT_EQ(r.body.find("upkeep_"), std::string::npos);
  r = Get("/metrics", {"Authorization: Bearer wrong-token-0123456789abcdef"});
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.body.find("upkeep_"), std::string::npos);
  r = Get("/metrics", {std::string("Authorization: Basic ") + kToken});
  EXPECT_EQ(r.status, 401);
  r = Get("/metrics", {std::string("Authorization: Bearer ") + kToken + "x"});
  EXPECT_EQ(r.status, 401);
  r = Get("/metrics", {std::string("Authorization: Bearer ") + kToken});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("content-type"), kPrometheusContentType);
  EXPECT_NE(r.body.find("# TYPE upkeep_http_requests_total counter\n"), std::string::npos);
  // The scheme is case-insensitive (RFC 9110 11.1).
  EXPECT_EQ(Get("/metrics", {std::string("Authorization: bearer ") + kToken}).status, 200);
}

TEST_F(MetricsEndpointTest, AcceptsATokenFileHoldingOnlyTheDigest) {
  Start("sha256:" + HexEncode(crypto::Sha256(kToken)));
  EXPECT_EQ(Get("/metrics", {std::string("Authorization: Bearer ") + kToken}).status, 200);
  EXPECT_EQ(
      Get("/metrics", {"Authorization: Bearer sha256:" + HexEncode(crypto::Sha256(kToken))}).status,
      401);
}

TEST_F(MetricsEndpointTest, ReflectsRequestsMadeThroughTheServer) {
  Start(kToken);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Get("/api/v1/support").status, 200);
  ASSERT_EQ(Get("/no/such/path").status, 404);
  ASSERT_EQ(Get("/metrics").status, 401);
  const auto r = Get("/metrics", {std::string("Authorization: Bearer ") + kToken});
  ASSERT_EQ(r.status, 200);
  const std::string& text = r.body;
  EXPECT_NE(text.find("upkeep_http_requests_total{route=\"support\",code=\"200\"} 3\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("upkeep_http_requests_total{route=\"other\",code=\"404\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("upkeep_http_requests_total{route=\"metrics\",code=\"401\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("upkeep_http_request_duration_seconds_count{route=\"support\"} 3\n"),
            std::string::npos);
  EXPECT_NE(text.find("upkeep_http_request_duration_seconds_bucket{route=\"support\",le=\"+Inf\"} "
                      "3\n"),
            std::string::npos);
  // Each call above used its own connection: 5 before this scrape's own.
  EXPECT_NE(text.find("upkeep_https_connections_total 6\n"), std::string::npos);
  EXPECT_NE(text.find("upkeep_https_handshakes_total 6\n"), std::string::npos);
  EXPECT_NE(text.find("upkeep_https_rejected_requests_total 0\n"), std::string::npos);
  EXPECT_NE(text.find("upkeep_metrics_collector_up{collector=\"https\"} 1\n"), std::string::npos);
}

// Without a metrics endpoint the router leaves /metrics to the device API: 404.
TEST(MetricsRouteTest, AbsentEndpointLeavesMetricsTo404) {
  Routes routes;
  routes.fallback = [](const Request&) {
    Response r;
    r.status = 404;
    return r;
  };
  Handler h = Route(std::move(routes));
  Request req;
  req.method = "GET";
  req.path = "/metrics";
  EXPECT_EQ(h(req).status, 404u);
}

}  // namespace
}  // namespace upkeep::server
