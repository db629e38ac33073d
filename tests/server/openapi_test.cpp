// docs/formats/device-api.openapi.json against the server: it is an OpenAPI 3.0 document with the
// device API's paths, every operation it lists is answered by a real upkeep server (device API,
// /metrics, /repository/) and what it does not list is 404, its request schemas agree with the
// parsers (ParseEnrolRequest, ...) on required fields, unknown fields and string limits, and the
// server's error bodies fit its Error schema. Tests run in the source tree (WORKING_DIRECTORY).

#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <set>

#include "https_client.hpp"
#include "temp_dir.hpp"
#include "test_pki.hpp"
#include "upkeep/metadata/json_text.hpp"
#include "upkeep/server/fleet.hpp"
#include "upkeep/server/metrics.hpp"
#include "upkeep/server/router.hpp"
#include "upkeep/server/static_files.hpp"

namespace upkeep::server {
namespace {

namespace fs = std::filesystem;
using metadata::Json;
using namespace std::chrono_literals;

constexpr const char* kDocument = "docs/formats/device-api.openapi.json";
constexpr const char* kToken = "openapi-test-token-0123456789";

Json LoadDocument() {
  std::ifstream in(kDocument, std::ios::binary);
  EXPECT_TRUE(in) << kDocument << " not found from " << fs::current_path();
  const std::string text(std::istreambuf_iterator<char>(in), {});
  return Json::parse(text, nullptr, false);
}

// Every {"$ref": "#/a/b"} names something in the document.
void CheckRefs(const Json& doc, const Json& node) {
  if (node.is_object()) {
    for (const auto& [key, value] : node.items()) {
      if (key == "$ref") {
        ASSERT_TRUE(value.is_string());
        const std::string ref = value.get<std::string>();
        ASSERT_TRUE(ref.starts_with("#/")) << ref;
        EXPECT_TRUE(doc.contains(Json::json_pointer(ref.substr(1)))) << ref;
      } else {
        CheckRefs(doc, value);
      }
    }
  } else if (node.is_array()) {
    for (const auto& v : node) CheckRefs(doc, v);
  }
}

TEST(OpenApiTest, IsAnOpenApi30DocumentOfTheDeviceApi) {
  const Json doc = LoadDocument();
  ASSERT_TRUE(doc.is_object()) << "not JSON";
  ASSERT_TRUE(doc["openapi"].is_string());
  EXPECT_TRUE(doc["openapi"].get<std::string>().starts_with("3.0.")) << doc["openapi"];
  EXPECT_EQ(doc["info"]["version"], "1");
  std::set<std::string> paths;
  for (const auto& [path, item] : doc["paths"].items()) {
    paths.insert(path);
    for (const auto& [method, op] : item.items()) {
      EXPECT_TRUE(op.contains("responses")) << path << " " << method;
      EXPECT_TRUE(op.contains("operationId")) << path << " " << method;
    }
  }
  EXPECT_EQ(paths, (std::set<std::string>{"/api/v1/enrol", "/api/v1/checkin", "/api/v1/reports",
                                          "/api/v1/incidents", "/api/v1/support", "/metrics",
                                          "/repository/{path}"}));
  // The check-in's conditional answer is part of the protocol.
  const Json& checkin = doc["paths"]["/api/v1/checkin"]["post"];
  EXPECT_TRUE(checkin["responses"].contains("304"));
  EXPECT_TRUE(checkin["responses"]["200"]["headers"].contains("ETag"));
  EXPECT_EQ(checkin["parameters"][0]["name"], "If-None-Match");
  CheckRefs(doc, doc);
}

// Each request schema agrees with its parser: the example parses; an unknown field, a missing
// required field or a string one byte over its maxLength is refused; dropping an optional field
// is fine.
TEST(OpenApiTest, RequestSchemasMatchTheParsers) {
  const Json doc = LoadDocument();
  ASSERT_TRUE(doc.is_object());
  const std::vector<std::pair<std::string, std::function<bool(const std::string&)>>> parsers = {
      {"EnrolRequest", [](const std::string& b) { return ParseEnrolRequest(b).has_value(); }},
      {"CheckinRequest", [](const std::string& b) { return ParseCheckinRequest(b).has_value(); }},
      {"ReportRequest", [](const std::string& b) { return ParseReportRequest(b).has_value(); }},
      {"IncidentRequest", [](const std::string& b) { return ParseIncidentRequest(b).has_value(); }},
  };
  for (const auto& [name, parses] : parsers) {
    SCOPED_TRACE(name);
    const Json& schema = doc["components"]["schemas"][name];
    ASSERT_TRUE(schema.is_object());
    EXPECT_EQ(schema["additionalProperties"], false);
    const Json example = schema["example"];
    ASSERT_TRUE(example.is_object());
    EXPECT_TRUE(parses(example.dump()));
    Json unknown = example;
    unknown["unexpected"] = 1;
    EXPECT_FALSE(parses(unknown.dump()));
    const Json required = schema["required"];
    for (const auto& [field, property] : schema["properties"].items()) {
      SCOPED_TRACE(field);
      Json without = example;
      without.erase(field);
      const bool is_required =
          std::find(required.begin(), required.end(), Json(field)) != required.end();
      EXPECT_EQ(parses(without.dump()), !is_required);
      if (property.value("type", "") == "string" && property.contains("maxLength")) {
        const auto max = property["maxLength"].get<std::size_t>();
        Json longest = example;
        longest[field] = std::string(max, 'a');
        EXPECT_TRUE(parses(longest.dump()));
        longest[field] = std::string(max + 1, 'a');
        EXPECT_FALSE(parses(longest.dump()));
      }
    }
  }
}

// The server behind the document: Fleet over SQLite, /metrics and /repository/ configured.
class OpenApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(dir_.path() / "ca.pem") << pki_.server_ca.certificate_pem;
    fs::create_directories(dir_.path() / "repo" / "metadata");
    std::ofstream(dir_.path() / "repo" / "metadata" / "timestamp.json") << "{}";
    auto db = storage::OpenDatabase("sqlite:" + (dir_.path() / "fleet.db").string());
    ASSERT_TRUE(db) << db.error().ToString();
    db_ = std::move(*db);
    ASSERT_TRUE(MigrateFleetSchema(*db_));
    FleetOptions fo;
    fo.device_ca_pem = pki_.device_ca.certificate_pem;
    fo.device_ca_key_pem = pki_.device_ca.key_pem;
    auto fleet = Fleet::Create(*db_, SystemClock::Process(), fo);
    ASSERT_TRUE(fleet) << fleet.error().ToString();
    fleet_ = std::move(*fleet);
    auto files = StaticFiles::Create((dir_.path() / "repo").string());
    ASSERT_TRUE(files);
    files_ = std::move(*files);
    auto endpoint = MetricsEndpoint::Create(metrics_, kToken);
    ASSERT_TRUE(endpoint);
    endpoint_ = std::move(*endpoint);
    Routes routes;
    routes.fallback = fleet_->AsHandler();
    routes.repository = files_->AsHandler();
    routes.metrics = endpoint_->AsHandler();
    auto handler = InstrumentHandler(metrics_, Route(std::move(routes)));
    ASSERT_TRUE(handler);
    HttpsOptions o;
    o.certificate_pem = pki_.server.certificate_pem;
    o.private_key_pem = pki_.server.key_pem;
    o.client_ca_pem = pki_.device_ca.certificate_pem;
    auto s = HttpsServer::Start(o, std::move(*handler));
    ASSERT_TRUE(s) << s.error().ToString();
    server_ = std::move(*s);
  }
  void TearDown() override {
    if (server_) server_->Stop(1s);
  }

  upkeep::testing::HttpsReply Call(const std::string& method, const std::string& path) {
    upkeep::testing::HttpsCall call;
    call.method = method;
    call.path = path;
    if (method == "POST") {
      call.body = "{}";
      call.headers = {"Content-Type: application/json"};
    }
    return upkeep::testing::CallHttps(server_->port(), (dir_.path() / "ca.pem").string(), call);
  }

  upkeep::testing::TestPki pki_;
  testing::TempDir dir_;
  std::unique_ptr<storage::Database> db_;
  std::unique_ptr<Fleet> fleet_;
  std::unique_ptr<StaticFiles> files_;
  Metrics metrics_;
  std::unique_ptr<MetricsEndpoint> endpoint_;
  std::unique_ptr<HttpsServer> server_;
};

std::string Upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

TEST_F(OpenApiServerTest, EveryListedOperationIsAnsweredAndNothingElse) {
  const Json doc = LoadDocument();
  ASSERT_TRUE(doc.is_object());
  std::set<std::string> codes;
  for (const auto& c : doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"]) {
    codes.insert(c.get<std::string>());
  }
  int operations = 0;
  for (const auto& [path, item] : doc["paths"].items()) {
    std::string concrete = path;
    if (const auto p = concrete.find("{path}"); p != std::string::npos) {
      concrete.replace(p, 6, "metadata/timestamp.json");
    }
    for (const auto& [method, op] : item.items()) {
      ++operations;
      const auto r = Call(Upper(method), concrete);
      ASSERT_EQ(r.code, CURLE_OK) << method << " " << concrete;
      EXPECT_NE(r.status, 404) << method << " " << concrete << ": " << r.body;
      EXPECT_NE(r.status, 405) << method << " " << concrete;
      EXPECT_TRUE(op["responses"].contains(std::to_string(r.status)))
          << method << " " << concrete << " answered " << r.status << ", not documented";
      if (r.status >= 400 && Upper(method) != "HEAD") {
        // The error body fits the Error schema.
        const Json body = Json::parse(r.body, nullptr, false);
        ASSERT_TRUE(body.is_object()) << r.body;
        EXPECT_EQ(body.size(), 2u) << r.body;
        EXPECT_TRUE(body["message"].is_string());
        EXPECT_TRUE(body["error"].is_string() && codes.contains(body["error"].get<std::string>()))
            << r.body;
      }
    }
  }
  EXPECT_EQ(operations, 8);
  for (const char* path :
       {"/", "/api/v1/", "/api/v1/unknown", "/api/v2/checkin", "/api/v1/checkin/extra",
        "/metrics/extra", "/repository", "/repository/metadata/none.json", "/openapi.json"}) {
    const auto r = Call("GET", path);
    ASSERT_EQ(r.code, CURLE_OK) << path;
    EXPECT_EQ(r.status, 404) << path;
  }
  // Listed paths with methods the document does not list.
  EXPECT_EQ(Call("GET", "/api/v1/checkin").status, 404);
  EXPECT_EQ(Call("POST", "/api/v1/support").status, 404);
}

}  // namespace
}  // namespace upkeep::server
