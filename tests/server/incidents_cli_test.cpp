// upkeep-server's [incidents] section and `admin incidents list` (docs/server.md "Incident
// delivery").

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "cli.hpp"
#include "cli_run.hpp"
#include "config.hpp"
#include "server_process.hpp"
#include "temp_dir.hpp"
#include "test_pki.hpp"
#include "upkeep/server/https_server.hpp"
#include "upkeep/common/encoding.hpp"
#include "upkeep/crypto/crypto.hpp"
#include "upkeep/metadata/canonical_json.hpp"
#include "upkeep/storage/database.hpp"

namespace upkeep::server {
namespace {

const std::string kIncidents =
    "[incidents]\nwebhook_url = \"https://hooks.example.com/upkeep\"\n"
    "secret_file = \"/etc/upkeep-server/webhook.secret\"\n";

// Every key of [incidents] is checked: unknown keys, plain http, a missing secret file and a
// lease shorter than two request timeouts are errors naming the key.
TEST(IncidentsConfigTest, ChecksEveryKey) {
  auto ok = ParseServerConfig(kIncidents + "timeout_seconds = 20\nretry_base_seconds = 5\n");
  ASSERT_TRUE(ok) << ok.error().ToString();
  EXPECT_TRUE(ok->incidents.configured);
  EXPECT_EQ(ok->incidents.timeout_seconds, 20u);
  EXPECT_EQ(ok->incidents.retry_base_seconds, 5u);
  EXPECT_EQ(ok->incidents.retry_max_seconds, 3600u);
  EXPECT_TRUE(ok->incidents.ca_file.empty());
  EXPECT_FALSE(ParseServerConfig("")->incidents.configured);

  auto unknown = ParseServerConfig(kIncidents + "secret = \"inline\"\n");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), Errc::InvalidConfig);
  EXPECT_NE(unknown.error().message().find("incidents.secret"), std::string::npos);
  EXPECT_EQ(ParseServerConfig("[incidents]\nwebhook_url = \"http://hooks.example.com/\"\n"
                              "secret_file = \"/s\"\n")
                .error()
                .code(),
            Errc::InvalidConfig);
  EXPECT_EQ(ParseServerConfig("[incidents]\nwebhook_url = \"https://hooks.example.com/\"\n")
                .error()
                .code(),
            Errc::InvalidConfig);
  EXPECT_EQ(ParseServerConfig(kIncidents + "timeout_seconds = 200\n").error().code(),
            Errc::InvalidConfig);
  EXPECT_EQ(ParseServerConfig(kIncidents + "retry_max_seconds = 10\n").error().code(),
            Errc::InvalidConfig);
}

// --dump-config prints the section (the secret's path, never a secret) and reads back the same.
TEST(IncidentsConfigTest, DumpsSectionThatParsesBack) {
  auto c = ParseServerConfig(kIncidents + "ca_file = \"/etc/upkeep-server/hooks-ca.pem\"\n");
  ASSERT_TRUE(c) << c.error().ToString();
  const std::string dump = DumpServerConfig(*c);
  EXPECT_NE(dump.find("[incidents]"), std::string::npos) << dump;
  EXPECT_NE(dump.find("webhook.secret"), std::string::npos) << dump;
  auto again = ParseServerConfig(dump);
  ASSERT_TRUE(again) << again.error().ToString() << "\n" << dump;
  EXPECT_EQ(again->incidents.webhook_url, c->incidents.webhook_url);
  EXPECT_EQ(again->incidents.ca_file, c->incidents.ca_file);
  EXPECT_EQ(again->incidents.claim_lease_seconds, c->incidents.claim_lease_seconds);
}

// serve refuses a secret shorter than 32 bytes before it listens; admin incidents list shows the
// delivery state, as text and JSON.
TEST(IncidentsCliTest, RefusesShortSecretAndListsIncidents) {
  testing::TempDir dir;
  const std::string d = (dir.path() / "srv").string();
  ASSERT_EQ(Cli({"init", d, "--ip", "127.0.0.1"}).code, kExitOk);
  const std::string config = d + "/server.toml";
  std::ofstream(d + "/webhook.secret") << "too short\n";
  std::ofstream(config, std::ios::app)
      << "\n[incidents]\nwebhook_url = \"https://127.0.0.1:9/hook\"\nsecret_file = \"" << d
      << "/webhook.secret\"\n";
  CliRun r = Cli({"-c", config, "serve"});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_NE(r.err.find("server.InvalidConfig"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("too short"), std::string::npos) << r.err;

  auto db = storage::OpenDatabase("sqlite:" + d + "/fleet.db");
  ASSERT_TRUE(db) << db.error().ToString();
  ASSERT_TRUE((*db)->Exec(
      "INSERT INTO incidents (incident_id, device_id, kind, body, received_at, next_attempt_at, "
      "attempts, last_error) VALUES ('i-1', 'd-1', 'rollback', '{}', 1764400000, 1764400060, 1, "
      "'the receiver answered HTTP 500')"));
  ASSERT_TRUE((*db)->Exec(
      "INSERT INTO incidents (incident_id, device_id, kind, body, received_at, next_attempt_at, "
      "attempts, delivered_at, delivered_by) VALUES ('i-2', 'd-1', 'verification_failed', '{}', "
      "1764400001, 1764400001, 1, 1764400002, 'host:1')"));
  r = Cli({"-c", config, "admin", "incidents", "list"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("i-1  d-1  rollback  2025-11-29T07:06:40Z  pending (attempts 1, next "
                       "2025-11-29T07:07:40Z): the receiver answered HTTP 500"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("i-2  d-1  verification_failed"), std::string::npos) << r.out;
  r = Cli({"-c", config, "admin", "incidents", "list", "--json", "--undelivered"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  auto json = metadata::ParseJson(r.out);
  ASSERT_TRUE(json) << r.out;
  ASSERT_EQ(json->size(), 1u);
  EXPECT_EQ((*json)[0]["incident_id"], "i-1");
  EXPECT_EQ((*json)[0]["attempts"], 1);
  EXPECT_EQ((*json)[0]["next_attempt_at"], 1764400060);
  EXPECT_TRUE((*json)[0]["delivered_at"].is_null());
}

// `serve` as its own process with [incidents]: an incident stored before it started reaches the
// receiver with a valid signature; SIGTERM then stops delivery and the server (exit 0).
TEST(IncidentsCliTest, ServeDeliversIncidentsAndStopsOnSigterm) {
  using namespace std::chrono_literals;
  testing::TempDir dir;
  testing::TestPki pki;
  const std::string secret(40, 's');
  std::atomic<int> good{0};
  std::atomic<int> bad{0};
  HttpsOptions ho;
  ho.certificate_pem = pki.server.certificate_pem;
  ho.private_key_pem = pki.server.key_pem;
  auto receiver = HttpsServer::Start(ho, [&](const Request& r) {
    const std::string ts = r.Header("x-upkeep-timestamp");
    const auto mac = crypto::HmacSha256(secret, ts + "." + r.body);
    const bool ok = mac && r.Header("x-upkeep-signature") == "sha256=" + HexEncode(*mac) &&
                    r.Header("x-upkeep-delivery") == "i-serve";
    ++(ok ? good : bad);
    return Response{ok ? 200u : 401u, "text/plain", "", {}};
  });
  ASSERT_TRUE(receiver) << receiver.error().ToString();

  const std::string d = (dir.path() / "srv").string();
  ASSERT_FALSE(InitLoopbackServer(d).empty());
  const std::string config = d + "/server.toml";
  std::ofstream(d + "/webhook.secret") << secret << "\n";
  std::ofstream(d + "/hooks-ca.pem") << pki.server_ca.certificate_pem;
  std::ofstream(config, std::ios::app)
      << "\n[incidents]\nwebhook_url = \"https://127.0.0.1:" << (*receiver)->port()
      << "/hook\"\nsecret_file = \"" << d << "/webhook.secret\"\nca_file = \"" << d
      << "/hooks-ca.pem\"\npoll_interval_seconds = 1\n";
  // The schema exists once `admin` has run; then an incident waits in the queue.
  ASSERT_EQ(Cli({"-c", config, "admin", "incidents", "list"}).code, kExitOk);
  {
    auto db = storage::OpenDatabase("sqlite:" + d + "/fleet.db");
    ASSERT_TRUE(db) << db.error().ToString();
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    ASSERT_TRUE((*db)->Exec(
        "INSERT INTO incidents (incident_id, device_id, kind, body, received_at, "
        "next_attempt_at) VALUES ('i-serve', 'd-1', 'rollback', '{}', $1, $1)",
        {static_cast<std::int64_t>(now)}));
  }

  testing::ServerProcess server(UPKEEP_SERVER_BINARY, config);
  EXPECT_TRUE(server.WaitFor("delivered i-serve")) << server.log();
  const int status = server.Stop();
  EXPECT_TRUE(server.WaitFor("stopped", 1s)) << server.log();
  const std::string log = server.log();
  (*receiver)->Stop(1s);
  EXPECT_EQ(good.load(), 1) << log;
  EXPECT_EQ(bad.load(), 0) << log;
  EXPECT_EQ(status, 0) << log;
  const CliRun list = Cli({"-c", config, "admin", "incidents", "list", "--undelivered"});
  EXPECT_EQ(list.out, "");
}

}  // namespace
}  // namespace upkeep::server
