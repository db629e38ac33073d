// upkeep-server's command line in-process: configuration checks, init, enrolment tokens and the
// device list.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "cli.hpp"
#include "cli_run.hpp"
#include "config.hpp"
#include "server_process.hpp"
#include "temp_dir.hpp"
#include "upkeep/metadata/canonical_json.hpp"

namespace upkeep::server {
namespace {

// A configuration key nobody knows is an error naming the key, never ignored.
TEST(ServerConfigTest, RejectsUnknownKeysAndSections) {
  auto r = ParseServerConfig("[server]\nprot = 1\n");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::InvalidConfig);
  EXPECT_NE(r.error().message().find("server.prot"), std::string::npos);
  EXPECT_EQ(ParseServerConfig("[director]\n").error().code(), Errc::InvalidConfig);
  EXPECT_EQ(ParseServerConfig("[models.cam]\nurl = \"https://x\"\n").error().code(),
            Errc::InvalidConfig);
  EXPECT_EQ(ParseServerConfig("[models.cam]\nsecurity_updates_until = \"2031\"\n"
                              "url = \"https://x\"\n")
                .error()
                .code(),
            Errc::InvalidConfig);
  EXPECT_EQ(ParseServerConfig("[server]\nport = 70000\n").error().code(), Errc::InvalidConfig);
  auto ok = ParseServerConfig(
      "[models.cam]\nsecurity_updates_until = \"2031-12-31\"\nurl = \"https://x/cam\"\n");
  ASSERT_TRUE(ok) << ok.error().ToString();
  EXPECT_EQ(ok->models.at("cam").security_updates_until, "2031-12-31");
}

// A typo in [director] is an error, not a silent default; its key files are required.
TEST(ServerConfigTest, RejectsUnknownDirectorKeysAndMissingKeyFiles) {
  const std::string base =
      "[director]\nroots = [\"/d/1.root.json\"]\ntargets_key = \"/d/t.key\"\n"
      "snapshot_key = \"/d/s.key\"\ntimestamp_key = \"/d/ts.key\"\n";
  ASSERT_TRUE(ParseServerConfig(base));
  EXPECT_EQ(ParseServerConfig(base + "timestamp_expiry_hour = 2\n").error().code(),
            Errc::InvalidConfig);
  EXPECT_EQ(ParseServerConfig("[director]\nroots = [\"/d/1.root.json\"]\n").error().code(),
            Errc::InvalidConfig);
  EXPECT_EQ(ParseServerConfig(base + "roots2 = []\n").error().code(), Errc::InvalidConfig);
}

// The password in a database URL never appears in --dump-config.
TEST(ServerConfigTest, DumpRedactsDatabasePassword) {
  auto c = ParseServerConfig("[database]\nurl = \"postgresql://fleet:s3cret@db/fleet\"\n");
  ASSERT_TRUE(c);
  EXPECT_EQ(DumpServerConfig(*c).find("s3cret"), std::string::npos);
}

// init makes private keys 0600 and a configuration that loads; tokens and devices work on it.
TEST(ServerCliTest, InitThenAdministers) {
  testing::TempDir dir;
  const std::string d = (dir.path() / "srv").string();
  CliRun r = Cli({"init", d, "--ip", "127.0.0.1", "--dns", "updates.example.com"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  struct stat st {};
  ASSERT_EQ(::stat((d + "/device-ca.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((d + "/server.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // The director's offline root key and its online keys are private too.
  for (const char* key : {"/director-root.key", "/director/targets.key", "/director/snapshot.key",
                          "/director/timestamp.key"}) {
    ASSERT_EQ(::stat((d + key).c_str(), &st), 0) << key;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << key;
  }
  // A second init refuses to overwrite the keys.
  EXPECT_NE(Cli({"init", d}).code, kExitOk);
  const std::string config = d + "/server.toml";
  r = Cli({"-c", config, "--dump-config"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_NE(r.out.find("device-ca.pem"), std::string::npos);
  EXPECT_NE(r.out.find("[director]"), std::string::npos);
  EXPECT_NE(r.out.find("1.root.json"), std::string::npos);
  EXPECT_EQ(r.out.find("director-root.key"), std::string::npos);
  r = Cli({"-c", config, "admin", "token", "create", "--model", "acme-cam-v2"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_TRUE(r.out.starts_with("ut-"));
  EXPECT_EQ(Cli({"-c", config, "admin", "token", "create", "--model", "bad model"}).code,
            kExitUsage);
  r = Cli({"-c", config, "admin", "devices", "list", "--json"});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(metadata::ParseJson(r.out).value(), metadata::Json::array());
  EXPECT_EQ(Cli({"-c", config, "admin", "devices", "block", "d-0123456789abcdef"}).code,
            kExitNotFound);
  const std::string sha(64, 'a');
  EXPECT_EQ(Cli({"-c", config, "admin", "devices", "assign", "d-0123456789abcdef", "--target",
                 "rootfs/2.5.0.payload", "--length", "10", "--sha256", sha})
                .code,
            kExitNotFound);
  EXPECT_EQ(Cli({"-c", config, "admin", "devices", "unassign", "d-0123456789abcdef", "--target",
                 "rootfs/2.5.0.payload"})
                .code,
            kExitNotFound);
}

// `serve` as its own process: on SIGTERM it stops and exits 0 (graceful shutdown).
TEST(ServerCliTest, ServeStopsOnSigterm) {
  testing::TempDir dir;
  const std::string d = (dir.path() / "srv").string();
  ASSERT_FALSE(InitLoopbackServer(d).empty());
  const std::string config = d + "/server.toml";
  testing::ServerProcess server(UPKEEP_SERVER_BINARY, config);
  EXPECT_TRUE(server.ok()) << server.log();
  EXPECT_EQ(server.Stop(), 0) << server.log();
  EXPECT_NE(server.log().find("stopped"), std::string::npos) << server.log();
}

}  // namespace
}  // namespace upkeep::server
